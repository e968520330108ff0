// Repository fixtures built directly through host/repo.ts (no pull): an
// OCI-like image stored the way a pull stores it (repository.md §8) —
//
//   layer splitstreams   oci-layer-<diff_id>   inline "tar" headers + file objects
//   config splitstream   oci-config-<digest>   the config JSON object; <diff_id> → layer,
//                                              composefs.image.v1 / composefs.image → EROFS
//   manifest splitstream oci-manifest-<digest> the manifest JSON object; config:<digest> → config,
//                                              <diff_id> → layer
//   EROFS images         images/<hex>          one per repository format, no named ref
//   tag                  streams/refs/oci/<enc(tag)>
//
// Every object written is recorded, so tests know exactly which objects an
// image owns without walking the repository (the independent side of the
// GC checks).

import { createHash } from "node:crypto";

import { toHex } from "../../shared/bytes.ts";
import { CONTENT_TYPE, encodeSplitStream } from "../../shared/splitstream.ts";
import { type Dir, externalFile, inlineFile, makeDir, makeLeaf } from "../../shared/tree.ts";
import { type Repository, configStreamId, imageRefKey, layerStreamId, manifestStreamId } from "../../host/repo.ts";

export interface FixtureFile {
  path: string;
  content: Uint8Array;
}

export interface FixtureImage {
  manifestDigest: string;
  configDigest: string;
  diffIds: string[];
  /** Every object (hex) this image's chain consists of: files, JSON, streams, EROFS images. */
  objects: Set<string>;
  /** File content objects only. */
  fileObjects: Set<string>;
  /** EROFS image ids by format version. */
  images: Map<number, string>;
  /** The tree the EROFS images were made from. */
  tree: Dir;
}

const sha256 = (b: Uint8Array) => `sha256:${createHash("sha256").update(b).digest("hex")}`;
const enc = (s: string) => new TextEncoder().encode(s);

/** Deterministic bytes for tests. */
export function bytesOf(seed: string, size: number): Uint8Array {
  const out = new Uint8Array(size);
  let off = 0;
  for (const piece of bytesPieces(seed, size, 1 << 20)) {
    out.set(piece, off);
    off += piece.length;
  }
  return out;
}

/** The same bytes as bytesOf, generated in pieces of about `piece` bytes (varying, ≥ 32). */
export function* bytesPieces(seed: string, size: number, piece: number): Generator<Uint8Array> {
  let off = 0;
  let block = 0;
  for (let k = 0; off < size; k++) {
    const want = Math.min(size - off, Math.max(32, piece - ((k * 7919) % Math.max(1, piece >> 1))));
    const out = new Uint8Array(Math.ceil(want / 32) * 32);
    for (let o = 0; o < out.length; o += 32) out.set(createHash("sha256").update(`${seed}/${block++}`).digest(), o);
    const n = Math.min(out.length, size - off);
    yield out.subarray(0, n);
    off += n;
  }
}

/**
 * Store an image whose layers each hold the given files (all in the root
 * directory, plus /usr), tag it when `tag` is given.
 */
export async function storeImage(repo: Repository, opts: { layers: FixtureFile[][]; tag?: string; label?: string }): Promise<FixtureImage> {
  const objects = new Set<string>();
  const fileObjects = new Set<string>();
  const add = (d: Uint8Array) => objects.add(toHex(d));
  const diffIds: string[] = [];
  const layerIds: Uint8Array[] = [];
  const tree = makeDir({ mode: 0o755 });
  tree.entries.set("usr", makeDir({ mode: 0o755 }));
  for (const [li, files] of opts.layers.entries()) {
    const chunks: ({ inline: Uint8Array } | { external: Uint8Array; size: number })[] = [];
    const tar: Uint8Array[] = [];
    for (const f of files) {
      const header = enc(`header ${f.path} ${f.content.length}\n`.padEnd(512, "\0"));
      chunks.push({ inline: header });
      tar.push(header);
      if (f.content.length > 64) {
        const id = await repo.ensureObject(f.content);
        add(id);
        fileObjects.add(toHex(id));
        chunks.push({ external: id, size: f.content.length });
        tree.entries.set(f.path, makeLeaf(externalFile(id, BigInt(f.content.length)), { mode: 0o644 }));
      } else {
        chunks.push({ inline: f.content });
        tree.entries.set(f.path, makeLeaf(inlineFile(f.content), { mode: 0o644 }));
      }
      tar.push(f.content);
    }
    const end = new Uint8Array(1024);
    chunks.push({ inline: end });
    tar.push(end);
    const diffId = sha256(new Uint8Array(Buffer.concat(tar)));
    const stream = await encodeSplitStream({ algorithm: repo.alg, contentType: CONTENT_TYPE.ociLayer, chunks });
    const sid = await repo.writeStream(layerStreamId(diffId), stream);
    add(sid);
    diffIds.push(diffId);
    layerIds.push(sid);
    void li;
  }

  const images = new Map<number, string>();
  const imageRefs: [string, Uint8Array][] = [];
  const ids = await repo.commitImages(tree);
  for (const [v, id] of ids.byVersion) {
    images.set(v, toHex(id));
    add(id);
    imageRefs.push([imageRefKey(v, false), id]);
  }

  const config = enc(
    JSON.stringify({
      architecture: "amd64",
      os: "linux",
      created: "2024-01-02T03:04:05Z",
      config: { Labels: { fixture: opts.label ?? "x" } },
      rootfs: { type: "layers", diff_ids: diffIds },
    }),
  );
  const configDigest = sha256(config);
  const configObj = await repo.ensureObject(config);
  add(configObj);
  const configStream = await encodeSplitStream({
    algorithm: repo.alg,
    contentType: CONTENT_TYPE.ociConfig,
    chunks: [{ external: configObj, size: config.length }],
    namedRefs: [...diffIds.map((d, i) => [d, layerIds[i]!] as [string, Uint8Array]), ...imageRefs],
  });
  const configSid = await repo.writeStream(configStreamId(configDigest), configStream);
  add(configSid);

  const manifest = enc(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: configDigest, size: config.length },
      layers: diffIds.map((d) => ({ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: d, size: 1 })),
    }),
  );
  const manifestDigest = sha256(manifest);
  const manifestObj = await repo.ensureObject(manifest);
  add(manifestObj);
  const manifestStream = await encodeSplitStream({
    algorithm: repo.alg,
    contentType: CONTENT_TYPE.ociManifest,
    chunks: [{ external: manifestObj, size: manifest.length }],
    namedRefs: [[`config:${configDigest}`, configSid], ...diffIds.map((d, i) => [d, layerIds[i]!] as [string, Uint8Array])],
  });
  add(await repo.writeStream(manifestStreamId(manifestDigest), manifestStream));
  if (opts.tag !== undefined) repo.tag(opts.tag, manifestDigest);
  return { manifestDigest, configDigest, diffIds, objects, fileObjects, images, tree };
}

/** Every object in the repository, as hex ids. */
export async function listObjects(repo: Repository): Promise<Set<string>> {
  const { readdirSync } = await import("node:fs");
  const out = new Set<string>();
  let dirs: string[] = [];
  try {
    dirs = readdirSync(`${repo.path}/objects`).filter((d) => /^[0-9a-f]{2}$/.test(d));
  } catch {}
  for (const d of dirs) for (const n of readdirSync(`${repo.path}/objects/${d}`)) out.add(d + n);
  return out;
}
