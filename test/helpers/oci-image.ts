// Build test OCI images from declarative layer specs, as OCI image layout
// directories, and push them into a test registry with skopeo.
//
//   const img = buildImage(dir, {
//     layers: [
//       { compression: "gzip", entries: [
//         { type: "dir", path: "usr", mode: 0o755 },
//         { type: "file", path: "usr/hello", content: "hi\n", mode: 0o644, mtime: { sec: 1700000000, nsec: 5 } },
//         { type: "file", path: "usr/big", size: 1 << 20 },               // deterministic pseudo-random bytes
//         { type: "symlink", path: "usr/link", target: "hello" },
//         { type: "hardlink", path: "usr/hl", target: "usr/hello" },
//         { type: "chr", path: "usr/null", major: 1, minor: 3 },
//         { type: "fifo", path: "usr/fifo" },
//         { type: "file", path: "usr/cap", content: "x", xattrs: { "security.capability": bytes } },
//       ] },
//       { compression: "zstd", entries: [
//         { type: "whiteout", path: "usr/hello" },   // writes usr/.wh.hello
//         { type: "opaque", path: "usr" },           // writes usr/.wh..wh..opq
//       ] },
//     ],
//     labels: { "containers.bootc": "1" },
//     annotations: { "org.opencontainers.image.version": "42" },
//   }, { tag: "latest" });
//   await pushImage(img, "latest", reg, "test/img", "v1");
//
// The layer tars are written by shared/tar.ts's writer (pax by default; "gnu"
// and "ustar" selectable per layer) and are checked by GNU tar and umoci in
// test/oci-fixtures.test.ts, so other tests can rely on them. Multi-platform
// indexes: buildIndex().

import { createHash } from "node:crypto";
import { mkdirSync, writeFileSync, existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import * as zlib from "node:zlib";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { encodeTarEntry, tarEndMarker, type TarFormat, type TarWriteEntry } from "../../shared/tar.ts";
import { MEDIA_TYPE, type Platform } from "../../shared/oci.ts";
import type { TestRegistry } from "./registry.ts";

const execFileP = promisify(execFile);

export type MTime = number | { sec: number; nsec: number };

interface Common {
  path: string;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: MTime;
  xattrs?: Record<string, string | Uint8Array>;
}

export type LayerEntry =
  | (Common & { type: "file"; content?: string | Uint8Array; size?: number; seed?: number })
  | (Common & { type: "dir" })
  | (Common & { type: "symlink"; target: string })
  | (Common & { type: "hardlink"; target: string })
  | (Common & { type: "chr" | "blk"; major: number; minor: number })
  | (Common & { type: "fifo" })
  | { type: "whiteout"; path: string }
  | { type: "opaque"; path: string };

export interface LayerSpec {
  entries: LayerEntry[];
  compression?: "none" | "gzip" | "zstd";
  format?: TarFormat;
  /** Append GNU-style record padding (zeros up to a multiple of 10240 bytes). */
  recordPadding?: boolean;
}

export interface ImageSpec {
  layers: LayerSpec[];
  architecture?: string;
  os?: string;
  variant?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  created?: string;
  /** Extra fields for the config's "config" object (Env, Cmd, …). */
  config?: Record<string, unknown>;
}

export interface BuiltLayer {
  mediaType: string;
  digest: string;
  size: number;
  diffId: string;
  /** The uncompressed tar. */
  tar: Uint8Array;
  /** The blob as stored (compressed). */
  blob: Uint8Array;
}

export interface BuiltImage {
  /** The OCI layout directory. */
  dir: string;
  manifest: Uint8Array;
  manifestDigest: string;
  config: Uint8Array;
  configDigest: string;
  layers: BuiltLayer[];
}

export const DEFAULT_MTIME = 1_700_000_000;

export function sha256(b: Uint8Array | string): string {
  return "sha256:" + createHash("sha256").update(b).digest("hex");
}

/** Deterministic pseudo-random bytes (xorshift32), for "large file" contents. */
export function pseudoRandom(size: number, seed = 1): Uint8Array {
  const out = new Uint8Array(size);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

const bytes = (v: string | Uint8Array) => (typeof v === "string" ? new Uint8Array(Buffer.from(v, "utf8")) : v);
// Paths in specs are UTF-8 text; tar paths are byte strings.
const bpath = (s: string) => Buffer.from(s, "utf8").toString("latin1");

export function entryContent(e: Extract<LayerEntry, { type: "file" }>): Uint8Array {
  if (e.content !== undefined) return bytes(e.content);
  return pseudoRandom(e.size ?? 0, e.seed ?? e.path.length);
}

function mtimeOf(m: MTime | undefined): { sec: number; nsec: number } {
  if (m === undefined) return { sec: DEFAULT_MTIME, nsec: 0 };
  return typeof m === "number" ? { sec: m, nsec: 0 } : m;
}

function parentAndName(path: string): [string, string] {
  const p = path.replace(/\/+$/, "");
  const i = p.lastIndexOf("/");
  return i < 0 ? ["", p] : [p.slice(0, i + 1), p.slice(i + 1)];
}

/** The tar entries a layer spec expands to. */
export function layerTarEntries(spec: LayerSpec): TarWriteEntry[] {
  return spec.entries.map((e): TarWriteEntry => {
    if (e.type === "whiteout" || e.type === "opaque") {
      const [dir, name] = e.type === "whiteout" ? parentAndName(e.path) : [e.path.replace(/\/*$/, "/"), ""];
      const wname = e.type === "whiteout" ? `.wh.${name}` : ".wh..wh..opq";
      return { path: bpath(dir + wname), type: "regular", mode: 0o644, mtimeSec: DEFAULT_MTIME };
    }
    const t = mtimeOf(e.mtime);
    const xattrs = new Map<string, Uint8Array>();
    for (const [k, v] of Object.entries(e.xattrs ?? {})) xattrs.set(bpath(k), bytes(v));
    const base: TarWriteEntry = {
      path: bpath(e.type === "dir" ? e.path.replace(/\/*$/, "/") : e.path),
      type: "regular",
      mode: e.mode ?? (e.type === "dir" ? 0o755 : e.type === "symlink" ? 0o777 : 0o644),
      uid: e.uid ?? 0,
      gid: e.gid ?? 0,
      mtimeSec: t.sec,
      mtimeNsec: t.nsec,
      xattrs,
    };
    switch (e.type) {
      case "file":
        return { ...base, type: "regular", data: entryContent(e) };
      case "dir":
        return { ...base, type: "dir" };
      case "symlink":
        return { ...base, type: "symlink", linkName: bpath(e.target) };
      case "hardlink":
        return { ...base, type: "hardlink", linkName: bpath(e.target) };
      case "chr":
      case "blk":
        return { ...base, type: e.type, devMajor: e.major, devMinor: e.minor };
      case "fifo":
        return { ...base, type: "fifo" };
    }
  });
}

export function buildLayerTar(spec: LayerSpec): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const e of layerTarEntries(spec)) parts.push(...encodeTarEntry(e, spec.format ?? "pax"));
  parts.push(tarEndMarker());
  let tar = new Uint8Array(Buffer.concat(parts));
  if (spec.recordPadding) {
    const padded = Math.ceil(tar.length / 10240) * 10240;
    const t = new Uint8Array(padded);
    t.set(tar);
    tar = t;
  }
  return tar;
}

function compress(tar: Uint8Array, c: LayerSpec["compression"]): [Uint8Array, string] {
  switch (c ?? "gzip") {
    case "none":
      return [tar, MEDIA_TYPE.ociLayer];
    case "gzip":
      return [new Uint8Array(zlib.gzipSync(tar, { level: 1 })), MEDIA_TYPE.ociLayerGzip];
    case "zstd":
      return [new Uint8Array(zlib.zstdCompressSync(tar)), MEDIA_TYPE.ociLayerZstd];
  }
}

function writeBlob(dir: string, data: Uint8Array): string {
  const d = sha256(data);
  const p = join(dir, "blobs", "sha256", d.slice(7));
  mkdirSync(join(dir, "blobs", "sha256"), { recursive: true });
  if (!existsSync(p)) writeFileSync(p, data);
  return d;
}

function initLayout(dir: string): void {
  mkdirSync(join(dir, "blobs", "sha256"), { recursive: true });
  writeFileSync(join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
}

interface IndexEntry {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: Platform;
}

function readIndex(dir: string): { schemaVersion: 2; mediaType: string; manifests: IndexEntry[] } {
  const p = join(dir, "index.json");
  if (existsSync(p)) return JSON.parse(readFileSync(p, "utf8"));
  return { schemaVersion: 2, mediaType: MEDIA_TYPE.ociIndex, manifests: [] };
}

function addToIndex(dir: string, entry: IndexEntry, tag: string | undefined): void {
  const index = readIndex(dir);
  if (tag !== undefined) {
    index.manifests = index.manifests.filter((m) => m.annotations?.["org.opencontainers.image.ref.name"] !== tag);
    entry.annotations = { ...(entry.annotations ?? {}), "org.opencontainers.image.ref.name": tag };
  }
  index.manifests.push(entry);
  writeFileSync(join(dir, "index.json"), JSON.stringify(index));
}

/** Write the image's blobs into the layout `dir` without touching index.json. */
export function writeImageBlobs(dir: string, spec: ImageSpec): BuiltImage {
  initLayout(dir);
  const layers: BuiltLayer[] = spec.layers.map((l) => {
    const tar = buildLayerTar(l);
    const [blob, mediaType] = compress(tar, l.compression);
    const digest = writeBlob(dir, blob);
    return { mediaType, digest, size: blob.length, diffId: sha256(tar), tar, blob };
  });
  const configJson = {
    created: spec.created ?? "2023-11-14T22:13:20Z",
    architecture: spec.architecture ?? "amd64",
    os: spec.os ?? "linux",
    ...(spec.variant !== undefined ? { variant: spec.variant } : {}),
    config: { ...(spec.config ?? {}), ...(spec.labels ? { Labels: spec.labels } : {}) },
    rootfs: { type: "layers", diff_ids: layers.map((l) => l.diffId) },
    history: layers.map(() => ({ created: spec.created ?? "2023-11-14T22:13:20Z", created_by: "cfsboot test fixture" })),
  };
  const config = new Uint8Array(Buffer.from(JSON.stringify(configJson)));
  const configDigest = writeBlob(dir, config);
  const manifestJson = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPE.ociManifest,
    config: { mediaType: MEDIA_TYPE.ociConfig, digest: configDigest, size: config.length },
    layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
    ...(spec.annotations ? { annotations: spec.annotations } : {}),
  };
  const manifest = new Uint8Array(Buffer.from(JSON.stringify(manifestJson)));
  const manifestDigest = writeBlob(dir, manifest);
  return { dir, manifest, manifestDigest, config, configDigest, layers };
}

/** Build one image into the OCI layout `dir` (created or extended), tagged `opts.tag` if given. */
export function buildImage(dir: string, spec: ImageSpec, opts: { tag?: string; platformInIndex?: boolean } = {}): BuiltImage {
  const img = writeImageBlobs(dir, spec);
  const entry: IndexEntry = { mediaType: MEDIA_TYPE.ociManifest, digest: img.manifestDigest, size: img.manifest.length };
  if (opts.platformInIndex) {
    entry.platform = { architecture: spec.architecture ?? "amd64", os: spec.os ?? "linux", ...(spec.variant ? { variant: spec.variant } : {}) };
  }
  addToIndex(dir, entry, opts.tag);
  return img;
}

export interface BuiltIndex {
  dir: string;
  index: Uint8Array;
  indexDigest: string;
  images: BuiltImage[];
}

/**
 * A multi-platform image: one manifest per spec (platform from the spec's
 * architecture/os/variant), an image index blob listing them, referenced from
 * index.json under `tag`. `omitPlatform` drops the platform field of those entries.
 */
export function buildIndex(dir: string, specs: ImageSpec[], opts: { tag?: string; omitPlatform?: boolean } = {}): BuiltIndex {
  const images = specs.map((s) => writeImageBlobs(dir, s));
  const indexJson = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPE.ociIndex,
    manifests: images.map((img, i) => {
      const s = specs[i]!;
      return {
        mediaType: MEDIA_TYPE.ociManifest,
        digest: img.manifestDigest,
        size: img.manifest.length,
        ...(opts.omitPlatform
          ? {}
          : { platform: { architecture: s.architecture ?? "amd64", os: s.os ?? "linux", ...(s.variant ? { variant: s.variant } : {}) } }),
      };
    }),
  };
  const index = new Uint8Array(Buffer.from(JSON.stringify(indexJson)));
  const indexDigest = writeBlob(dir, index);
  addToIndex(dir, { mediaType: MEDIA_TYPE.ociIndex, digest: indexDigest, size: index.length }, opts.tag);
  return { dir, index, indexDigest, images };
}

/** A policy.json accepting everything (skopeo needs one). */
export function insecurePolicy(dir: string): string {
  const p = join(dir, "policy.json");
  if (!existsSync(p)) writeFileSync(p, JSON.stringify({ default: [{ type: "insecureAcceptAnything" }] }));
  return p;
}

/** Run skopeo; rejects with its stderr. */
export async function skopeo(args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileP("skopeo", args, { maxBuffer: 64 << 20 });
    return stdout;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`skopeo ${args.join(" ")} failed: ${err.stderr ?? err.message}`);
  }
}

/**
 * Push `oci:<layout>:<tag>` to `docker://<reg>/<name>:<destTag>` with
 * `--preserve-digests` (so manifest and blob digests stay those of the
 * layout). Async: the bearer token server is a separate process, but keep
 * the event loop free anyway.
 */
export async function pushImage(layoutDir: string, tag: string, reg: TestRegistry, name: string, destTag = tag, extra: string[] = []): Promise<string> {
  const args = ["--policy", insecurePolicy(reg.dir), "copy", "--quiet", "--preserve-digests", "--dest-cert-dir", reg.caDir];
  if (reg.auth === "none") args.push("--dest-no-creds");
  else args.push("--dest-creds", reg.creds);
  args.push(...extra, `oci:${layoutDir}:${tag}`, reg.ref(name, destTag));
  await skopeo(args);
  return reg.ref(name, destTag);
}
