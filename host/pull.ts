// Pulling OCI images into a composefs repository (repository.md §8–§9, oci.md).
//
//   const r = await pullImage(repo, "docker://quay.io/x/os:latest", { bootable: true, authFile, certDir });
//   r.manifestDigest, r.configDigest, r.manifestVerity, r.imageIds.{v1,v2,bootV1,bootV2}, r.stats
//
// Sources: `docker://` (host/registry.ts: auth.json / --authfile /
// REGISTRY_AUTH_FILE, --creds, certs.d / --cert-dir, --tls-verify=false),
// `oci:DIR[:REF]` and `oci-archive:FILE[:REF]` (host/oci-layout.ts, read in
// place), `containers-storage:[SPEC]NAME` (copied by skopeo into a temporary
// OCI layout under /var/tmp, then read as `oci:`; removed afterwards).
//
// Order of effects (what makes interrupted pulls resumable and keeps tags
// honest):
//   1. manifest fetched (index → the host platform's manifest), its digest checked;
//   2. config: from the repository when `streams/oci-config-<digest>` exists
//      (nothing is downloaded), else fetched and checked;
//   3. every layer without a `streams/oci-layer-<diff_id>` stream: streamed
//      through decompression into a splitstream (tar headers and files ≤ 64
//      bytes inline, larger files as objects written as they arrive and
//      hashed by the digest pool's workers while the next entries are read),
//      its blob digest AND diff_id verified, syncfs, then linked;
//   4. the tree is built from the stored layers (shared/layers.ts), OCI
//      transform, one EROFS per configured format (boot variants with
//      `bootable`), stored under images/;
//   5. config stream written (the config JSON object, named refs: layers in
//      diff_ids order, then the composefs.image* keys sorted), then the
//      manifest stream (config:<digest>, then the layers in diff_ids order) —
//      each only when it changes, so a second pull rewrites nothing;
//   6. the tag, last.
// A kill -9 at any point leaves only whole objects and whole streams, none
// tagged; the next pull skips every layer already linked and finishes. The
// config stream is written only once its images exist, so its presence
// means "this image is complete" (the EROFS refs are checked anyway).
//
// Also: inspect/dump/compute-id/mount helpers over stored images, and
// fetchManifestAndConfig for update checks.

import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { MultiBar, Presets } from "cli-progress";
import { barSize } from "./progress.ts";
import { phaseTimer } from "./timing.ts";

import { toHex } from "../shared/bytes.ts";
import { writeErofs } from "../shared/erofs/writer.ts";
import { CfsError, describeError } from "../shared/errors.ts";
import { LayerApplier, readLayerStream, INLINE_MAX, DEFAULT_MAX_FILE_SIZE, type LayerItem } from "../shared/layers.ts";
import {
  MEDIA_TYPE,
  checkImageLayers,
  formatPullOutput,
  isImageConfigMediaType,
  parseImageConfig,
  parseImageRef,
  parseManifestDocument,
  platformForArch,
  selectManifest,
  type Compression,
  type Descriptor,
  type ImageConfig,
  type ImageIndex,
  type ImageManifest,
  type ImageRef,
  type ImportStats,
  type Platform,
  type RegistryRef,
} from "../shared/oci.ts";
import type { ErofsVersion } from "../shared/repometa.ts";
import type { UnifiedStorage } from "./unified-storage.ts";
import { CONTENT_TYPE, SplitStreamWriter } from "../shared/splitstream.ts";
import { SyncCodec } from "../shared/zsync.ts";
import { TarReader } from "../shared/tar.ts";
import { cloneTree, type Dir, type Leaf } from "../shared/tree.ts";
import {
  bootType,
  findBootResources,
  transformForBoot,
  transformForOci,
  type BootResource,
  type XattrFiltering,
} from "../shared/transform.ts";
import type { ReadFile } from "../shared/selabel.ts";
import { openLayout, type LayoutSource } from "./oci-layout.ts";
import { RegistryClient, type Credentials, type RegistryClientOptions } from "./registry.ts";
import { StorePool, type StoreFile } from "./store-pool.ts";
import { removeOnInterrupt } from "./interrupt.ts";
import {
  configStreamId,
  imageRefKey,
  layerStreamId,
  manifestStreamId,
  sha256Digest,
  validateTagName,
  type ObjectResult,
  type ObjectWriter,
  type Repository,
  type StoredOciImage,
} from "./repo.ts";

// ---- options and results ----------------------------------------------------------------

export interface SourceOptions {
  /** --authfile (default $REGISTRY_AUTH_FILE, then the containers lookup order). */
  authFile?: string;
  /** --cert-dir */
  certDir?: string;
  /** --tls-verify (default true) */
  tlsVerify?: boolean;
  /** --creds user:password */
  credentials?: Credentials;
  /** Platform to select from indexes (default: this machine's). */
  platform?: Platform;
  /** Environment for auth lookups (default process.env). */
  env?: Record<string, string | undefined>;
  /**
   * Unified storage (bootc PR 2044): registry images are pulled with podman
   * into containers-storage and imported from there (host/unified-storage.ts);
   * `true` = `<repository>/bootc/storage`. Only pulls use it, not update checks.
   */
  unifiedStorage?: boolean | UnifiedStorage;
}

export interface PullOptions extends SourceOptions {
  /** Tag name (default: the image reference as given). */
  tag?: string;
  /** Also generate the boot EROFS images (composefs.image.boot[.v1]). */
  bootable?: boolean;
  /** Show progress bars (default: when stderr is a terminal). */
  progress?: boolean;
  /** Layers imported at the same time (default 2). */
  parallelLayers?: number;
  /** Workers storing file contents (default: a pool for this pull, closed at its end). */
  store?: StorePool;
}

export interface ImageIds {
  v1?: string;
  v2?: string;
  bootV1?: string;
  bootV2?: string;
}

export interface PullResult {
  manifestDigest: string;
  configDigest: string;
  /** Object id (hex) of the manifest splitstream: cfsctl's `verity` line. */
  manifestVerity: string;
  tag: string;
  /** EROFS image ids by format (those the repository's meta.json asks for). */
  imageIds: ImageIds;
  /** The default format's image id (and boot image id with `bootable`). */
  imageId: string;
  bootImageId?: string;
  stats: ImportStats & { layers: number; layersAlreadyPresent: number; bytesDownloaded: number };
}

// ---- sources --------------------------------------------------------------------------------

/** A resolved image manifest from some source. */
export interface FetchedImage {
  manifestDigest: string;
  manifestBytes: Uint8Array;
  manifest: ImageManifest;
}

export interface ImageSource {
  /** The reference, for messages. */
  readonly name: string;
  resolve(platform: Platform): Promise<FetchedImage>;
  /** Stream a blob; the digest (and size) are checked at the end, which throws on a mismatch. */
  openBlob(desc: Descriptor): AsyncIterable<Uint8Array>;
  /** openBlob for a layer import, whose chunks may all be views of one reused buffer (each valid until the next is requested). */
  openLayer?(desc: Descriptor): AsyncIterable<Uint8Array>;
  readBlob(desc: Descriptor, maxSize: number): Promise<Uint8Array>;
  /** How a layer blob comes from this source, when not as the manifest's media type says. */
  layerCompression?(desc: Descriptor): Compression;
  close(): Promise<void>;
}

class RegistrySource implements ImageSource {
  constructor(readonly name: string, private readonly client: RegistryClient) {}

  static async open(ref: RegistryRef, name: string, opts: SourceOptions): Promise<RegistrySource> {
    const ro: RegistryClientOptions = {};
    if (opts.authFile !== undefined) ro.authFile = opts.authFile;
    if (opts.certDir !== undefined) ro.certDir = opts.certDir;
    if (opts.tlsVerify !== undefined) ro.tlsVerify = opts.tlsVerify;
    if (opts.credentials !== undefined) ro.credentials = opts.credentials;
    if (opts.env !== undefined) ro.env = opts.env;
    return new RegistrySource(name, await RegistryClient.open(ref, ro));
  }

  private async platformOf(d: Descriptor): Promise<Platform | undefined> {
    if (d.mediaType !== MEDIA_TYPE.ociManifest && d.mediaType !== MEDIA_TYPE.dockerManifest) return undefined;
    const m = await this.client.getManifest(d.digest);
    if (m.document.kind !== "manifest" || !isImageConfigMediaType(m.document.config.mediaType)) return undefined;
    const c = parseImageConfig(await this.client.readBlob(m.document.config, 16 << 20), `${this.name}@${m.document.config.digest}`);
    return { os: c.os, architecture: c.architecture, ...(c.variant ? { variant: c.variant } : {}) };
  }

  async resolve(platform: Platform): Promise<FetchedImage> {
    let m = await this.client.getManifest();
    for (let depth = 0; m.document.kind === "index"; depth++) {
      if (depth >= 4) throw new CfsError(this.name, "image indexes nested too deeply");
      const index: ImageIndex = m.document;
      const known = new Map<string, Platform | undefined>();
      for (const d of index.manifests) if (d.platform === undefined) known.set(d.digest, await this.platformOf(d));
      const sel = selectManifest(index, platform, `${this.name}@${m.digest}`, (d) => known.get(d.digest));
      m = await this.client.getManifest(sel.digest);
    }
    return { manifestDigest: m.digest, manifestBytes: m.bytes, manifest: m.document };
  }

  openBlob(desc: Descriptor): AsyncIterable<Uint8Array> {
    return this.client.fetchBlob(desc);
  }

  readBlob(desc: Descriptor, maxSize: number): Promise<Uint8Array> {
    return this.client.readBlob(desc, maxSize);
  }

  async close(): Promise<void> {}
}

class LayoutImageSource implements ImageSource {
  constructor(readonly name: string, private readonly layout: LayoutSource, private readonly cleanup: (() => void) | null = null) {}

  async resolve(platform: Platform): Promise<FetchedImage> {
    const r = await this.layout.resolve(platform);
    return { manifestDigest: r.manifestDigest, manifestBytes: r.manifestBytes, manifest: r.manifest };
  }

  openBlob(desc: Descriptor): AsyncIterable<Uint8Array> {
    return this.layout.openBlob(desc);
  }

  openLayer(desc: Descriptor): AsyncIterable<Uint8Array> {
    return this.layout.openBlob(desc, { reuseBuffer: true });
  }

  readBlob(desc: Descriptor, maxSize: number): Promise<Uint8Array> {
    return this.layout.readBlob(desc, maxSize);
  }

  async close(): Promise<void> {
    this.cleanup?.();
  }
}

/** Where containers-storage images are copied to on their way in. */
export function storageTmpRoot(): string {
  return process.env.CFSBOOT_TMPDIR ?? "/var/tmp";
}

/** Run a command; resolves with stdout, rejects with a CfsError carrying its last stderr line. */
function run(cmd: string, args: string[], input: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let child;
    try {
      child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    } catch (e) {
      return reject(new CfsError(input, `cannot run ${cmd}: ${describeError(e)}`));
    }
    let out = "";
    let err = "";
    child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
    child.on("error", (e: NodeJS.ErrnoException) => {
      reject(new CfsError(input, e.code === "ENOENT" ? `${cmd} is not installed (needed for the containers-storage transport)` : `cannot run ${cmd}: ${e.message}`));
    });
    child.on("close", (code) => {
      if (code === 0) return resolve(out);
      const lines = err.trim().split("\n").filter((l) => l.trim() !== "");
      const last = (lines[lines.length - 1] ?? `exit status ${code}`).replace(/^time="[^"]*" level=\w+ msg="?/, "").replace(/"$/, "");
      reject(new CfsError(input, `${cmd} failed: ${last}`));
    });
  });
}

/** containers-storage: copy with skopeo into a temporary OCI layout (image ids go to skopeo without "sha256:", skopeo issue 2750). */
async function openStorageSource(ref: Extract<ImageRef, { transport: "containers-storage" }>, name: string): Promise<ImageSource> {
  const tmp = mkdtempSync(join(storageTmpRoot(), "cfsboot-cstor-"));
  const unregister = removeOnInterrupt(tmp);
  const cleanup = () => {
    unregister();
    rmSync(tmp, { recursive: true, force: true });
  };
  try {
    const id = ref.name.replace(/^sha256:/, "");
    const src = `containers-storage:${ref.storageSpec !== null ? `[${ref.storageSpec}]` : ""}${id}`;
    await run("skopeo", ["--insecure-policy", "copy", "--quiet", src, `oci:${tmp}/layout:image`], name);
    const layout = await openLayout({ transport: "oci", path: `${tmp}/layout`, ref: "image" });
    return new LayoutImageSource(name, layout, cleanup);
  } catch (e) {
    cleanup();
    throw e;
  }
}

/** Open the source an image reference names. */
export async function openImageSource(imgref: string, opts: SourceOptions = {}): Promise<ImageSource> {
  const ref = parseImageRef(imgref);
  switch (ref.transport) {
    case "registry":
      return RegistrySource.open(ref, imgref, opts);
    case "oci":
    case "oci-archive":
      return new LayoutImageSource(imgref, await openLayout(ref));
    case "containers-storage":
      return openStorageSource(ref, imgref);
  }
}

// ---- decompression ------------------------------------------------------------------------

/** Bytes of decompressed output per chunk (one buffer, reused). */
const DECOMPRESS_CHUNK = 256 << 10;

/**
 * Decompress a stream of chunks; errors from the source (digest mismatches)
 * pass through unchanged, and the source is no longer read once the
 * consumer stops. Each decompressed chunk is a view of ONE reused buffer,
 * valid until the consumer asks for the next one (copy what must be kept).
 *
 * node:zlib's decompressor driven synchronously into that buffer
 * (shared/zsync.ts): the stream API allocates a fresh output buffer per
 * chunk, and page-faulting fresh memory cost more than the decompression
 * itself here (gzip layer of 74 MB: CPU 826 → about 560 ms).
 */
export async function* decompress(src: AsyncIterable<Uint8Array>, comp: Compression, name: string): AsyncGenerator<Uint8Array> {
  if (comp === "none") {
    yield* src;
    return;
  }
  const codec = new SyncCodec(comp === "gzip" ? "gunzip" : "zstd-decompress", DECOMPRESS_CHUNK);
  // Errors of the decompressor (not of the source) become a CfsError naming the layer.
  function* run(input: Uint8Array, end: boolean): Generator<Uint8Array> {
    const it = codec.run(input, end);
    for (;;) {
      let r: IteratorResult<Uint8Array>;
      try {
        r = it.next();
      } catch (e) {
        throw new CfsError(name, `cannot decompress the ${comp} layer: ${(e as Error).message}`);
      }
      if (r.done) return;
      yield r.value;
    }
  }
  try {
    for await (const c of src) yield* run(c, false);
    yield* run(new Uint8Array(0), true);
  } finally {
    codec.close();
  }
}

// ---- layer import ------------------------------------------------------------------------

/** Layers to download of fewer compressed bytes than this are stored without a worker thread. */
const LOCAL_STORE_MAX = 4 << 20;
/** Objects queued for the splitstream at most (each waits for its digest from a store worker). */
const MAX_PENDING_OBJECTS = 4096;
/** Bytes of queued inline data (copied tar headers, small files, padding) at most. */
const MAX_PENDING_INLINE = 16 << 20;

type Queued =
  | { kind: "inline"; bytes: Uint8Array }
  | { kind: "boundary" }
  | { kind: "object"; f: StoreFile; complete: boolean; settled: boolean; item: LayerItem | null };

export interface LayerImportStats {
  objectsCopied: number;
  objectsAlreadyPresent: number;
  bytesCopied: number;
  bytesInlined: number;
}

/**
 * Split an uncompressed tar stream into a layer splitstream: headers and
 * small files inline, files > 64 bytes as objects. Returns the splitstream
 * file, the tar's sha256 and the stats. Nothing is linked here except
 * objects (content-addressed, harmless if the caller gives up).
 *
 * This thread hashes the tar (diff_id), parses it and writes the
 * splitstream; file contents go to the store pool's workers (host/store-pool.ts),
 * which compute each object's fs-verity digest from the bytes they write.
 * Memory is bounded by the pool's buffers in flight and the queue limits,
 * whatever the layer size.
 */
export async function splitLayer(
  repo: Repository,
  tar: AsyncIterable<Uint8Array>,
  opts: { name: string; store?: StorePool; maxFileSize?: number; items?: LayerItem[] },
): Promise<{ file: Uint8Array[]; diffId: string; stats: LayerImportStats; size: number }> {
  const ownStore = opts.store === undefined;
  const store = opts.store ?? new StorePool(repo);
  const name = opts.name;
  const out = new SplitStreamWriter({ algorithm: repo.alg, contentType: CONTENT_TYPE.ociLayer });
  const reader = new TarReader({ name, maxEntrySize: opts.maxFileSize ?? DEFAULT_MAX_FILE_SIZE });
  const hash = createHash("sha256");
  const stats: LayerImportStats = { objectsCopied: 0, objectsAlreadyPresent: 0, bytesCopied: 0, bytesInlined: 0 };
  // Splitstream items in stream order; an object's item is queued at its header, so
  // inline data after it waits for its digest.
  const queue: Queued[] = [];
  let head = 0;
  let pendingObjects = 0;
  let pendingInline = 0;
  let cur: { item: Queued & { kind: "object" }; left: number } | null = null;
  let total = 0;
  // opts.items: the entries as readLayerStream would give them back (a small file's bytes copied).
  const items = opts.items ?? null;
  let small: { item: LayerItem; parts: Uint8Array[]; left: number } | null = null;

  // Move finished items from the queue head into the splitstream, waiting when too much is pending.
  const pump = async (all: boolean): Promise<void> => {
    while (head < queue.length) {
      const h = queue[head]!;
      if (h.kind === "inline") {
        out.writeInline(h.bytes);
        pendingInline -= h.bytes.length;
      } else if (h.kind === "boundary") {
        out.boundary();
      } else {
        if (!h.complete) return; // the file being read: its bytes are still to come
        if (!h.settled && !all && pendingObjects < MAX_PENDING_OBJECTS && pendingInline < MAX_PENDING_INLINE) return;
        if (!h.settled) store.flush();
        const r = await h.f.result;
        out.writeExternal(r.digest, r.size);
        if (h.item !== null) h.item.source = { digest: r.digest, size: r.size };
        if (r.existed) stats.objectsAlreadyPresent++;
        else {
          stats.objectsCopied++;
          stats.bytesCopied += r.size;
        }
        pendingObjects--;
      }
      queue[head++] = { kind: "boundary" }; // drop the reference
      if (head >= 1024 && head * 2 >= queue.length) {
        queue.splice(0, head);
        head = 0;
      }
    }
  };

  const inline = (bytes: Uint8Array) => {
    if (bytes.length === 0) return;
    if (head === queue.length) out.writeInline(bytes);
    else {
      // A copy: a view would keep the whole decompressed chunk alive while queued.
      queue.push({ kind: "inline", bytes: bytes.slice() });
      pendingInline += bytes.length;
    }
  };

  const handle = () => {
    for (let ev = reader.next(); ev !== null; ev = reader.next()) {
      switch (ev.kind) {
        case "entry": {
          if (head === queue.length) out.boundary();
          else queue.push({ kind: "boundary" });
          inline(ev.bytes);
          const e = ev.entry;
          const layerItem: LayerItem | null = items === null ? null : { entry: e };
          if (layerItem !== null) {
            items!.push(layerItem);
            if (e.type === "regular" && e.size <= INLINE_MAX) {
              if (e.size === 0) layerItem.source = { inline: new Uint8Array(0) };
              else small = { item: layerItem, parts: [], left: e.size };
            }
          }
          if (e.type === "regular" && e.size > INLINE_MAX) {
            const item: Queued & { kind: "object" } = { kind: "object", f: store.begin(e.size), complete: false, settled: false, item: layerItem };
            item.f.result.then(
              () => (item.settled = true),
              () => (item.settled = true),
            );
            queue.push(item);
            pendingObjects++;
            cur = { item, left: e.size };
          }
          break;
        }
        case "data":
          if (cur !== null) {
            store.write(cur.item.f, ev.bytes);
            cur.left -= ev.bytes.length;
            if (cur.left === 0) {
              cur.item.complete = true;
              cur = null;
            }
          } else {
            if (small !== null) {
              small.parts.push(ev.bytes.slice());
              small.left -= ev.bytes.length;
              if (small.left === 0) {
                small.item.source = { inline: small.parts.length === 1 ? small.parts[0]! : new Uint8Array(Buffer.concat(small.parts)) };
                small = null;
              }
            }
            inline(ev.bytes);
          }
          break;
        default:
          inline(ev.bytes);
      }
    }
  };

  try {
    for await (const chunk of tar) {
      hash.update(chunk);
      total += chunk.length;
      reader.push(chunk);
      handle();
      // The chunk's buffer is reused for the next one (decompress): the reader keeps copies.
      reader.copyPending();
      store.flush();
      await store.ready();
      await pump(false);
      await out.drain();
    }
    reader.end();
    handle();
    if (!reader.done) throw new CfsError(name, "truncated tar archive");
    store.flush();
    await pump(true);
    const file = await out.finish();
    stats.bytesInlined = out.stats.inlineBytes;
    return { file, diffId: `sha256:${hash.digest("hex")}`, stats, size: total };
  } finally {
    // A shared pool is closed by its owner (which drops what a failed layer left in the workers).
    if (ownStore) await store.close();
  }
}

/**
 * Import one layer blob: decompress, split, verify the blob digest (by the
 * source) and the diff_id, then link `streams/oci-layer-<diff_id>`.
 */
export async function importLayer(
  repo: Repository,
  blob: AsyncIterable<Uint8Array>,
  comp: Compression,
  diffId: string,
  opts: { name: string; store?: StorePool; items?: LayerItem[] },
): Promise<{ streamId: Uint8Array; stats: LayerImportStats }> {
  const r = await splitLayer(repo, decompress(blob, comp, opts.name), opts);
  if (r.diffId !== diffId) throw new CfsError(opts.name, `uncompressed layer has digest ${r.diffId}, the config's diff_id is ${diffId}`);
  const streamId = await repo.writeStream(layerStreamId(diffId), r.file);
  return { streamId, stats: r.stats };
}

// ---- progress -----------------------------------------------------------------------------

interface LayerBar {
  update(done: number): void;
  finish(label: string): void;
}

class PullProgress {
  private multi: MultiBar | null = null;
  constructor(enabled: boolean) {
    if (enabled) {
      this.multi = new MultiBar(
        {
          format: " {label} [{bar}] {percentage}% {done}/{size} {rate}/s ETA {eta_formatted}",
          // room for " <12-hex> done [] 100% 123.4 MiB/123.4 MiB 123.4 MiB/s ETA 1h23m"
          barsize: barSize(64),
          stream: process.stderr,
          hideCursor: true,
          clearOnComplete: false,
          autopadding: true,
          fps: 10,
        },
        Presets.shades_grey,
      );
    }
  }

  bar(label: string, size: number): LayerBar {
    if (this.multi === null) return { update() {}, finish() {} };
    const human = (n: number) => (n >= 1 << 20 ? `${(n / 1048576).toFixed(1)} MiB` : `${(n / 1024).toFixed(0)} KiB`);
    const b = this.multi.create(Math.max(size, 1), 0, { label, done: human(0), size: human(size), rate: human(0) });
    const start = Date.now();
    return {
      update(done) {
        const secs = Math.max((Date.now() - start) / 1000, 0.001);
        b.update(done, { done: human(done), rate: human(done / secs) });
      },
      finish(l) {
        b.update(Math.max(size, 1), { label: l, done: human(size) });
      },
    };
  }

  stop(): void {
    this.multi?.stop();
  }
}

async function* counted(src: AsyncIterable<Uint8Array>, onBytes: (n: number) => void): AsyncGenerator<Uint8Array> {
  let n = 0;
  for await (const c of src) {
    n += c.length;
    onBytes(n);
    yield c;
  }
}

// ---- trees from the repository ------------------------------------------------------------

/** Reads a regular leaf's bytes: inline data, or its object in the repository. */
export function repoFileReader(repo: Repository): ReadFile {
  return (leaf: Leaf) => {
    const c = leaf.content;
    if (c.type !== "regular") return null;
    if (c.inline !== null) return c.inline;
    if (c.size === 0n) return new Uint8Array(0);
    if (c.digest === null) return null;
    try {
      return new Uint8Array(readFileSync(repo.objectPath(c.digest)));
    } catch (e) {
      throw new CfsError(repo.objectRelPath(c.digest), `cannot read object: ${describeError(e)}`);
    }
  };
}

/** The merged tree of stored layers (before any transform). */
export async function layersTree(
  repo: Repository,
  layers: readonly { diffId: string; streamId: Uint8Array }[],
  /** Entries of layers just imported (what readLayerStream would give back), by diff_id: not read again. */
  imported?: ReadonlyMap<string, readonly LayerItem[]>,
): Promise<Dir> {
  const ap = new LayerApplier();
  for (const l of layers) {
    const name = `layer ${l.diffId}`;
    ap.startLayer(name);
    const known = imported?.get(l.diffId);
    if (known !== undefined) {
      for (const item of known) ap.apply(item.entry, item.source);
    } else {
      const info = repo.openStream(layerStreamId(l.diffId), CONTENT_TYPE.ociLayer, { id: l.streamId });
      for await (const item of readLayerStream(info, name)) ap.apply(item.entry, item.source);
    }
    ap.finishLayer();
  }
  return ap.root;
}

function layerList(diffIds: readonly string[], refs: ReadonlyMap<string, Uint8Array>, where: string): { diffId: string; streamId: Uint8Array }[] {
  return diffIds.map((diffId) => {
    const id = refs.get(diffId);
    if (id === undefined) throw new CfsError(where, `no reference to layer ${diffId}`);
    return { diffId, streamId: id };
  });
}

/** A stored image: tag, `@sha256:…` or `sha256:…`. */
export async function openStoredImage(repo: Repository, img: string): Promise<StoredOciImage & { parsedConfig: ImageConfig }> {
  const s = await repo.openOciImage(img);
  if (s.config === null) throw new CfsError(img, "image has no config");
  const m = parseManifestDocument(s.manifest, `@${s.manifestDigest}`);
  if (m.kind !== "manifest" || !isImageConfigMediaType(m.config.mediaType)) throw new CfsError(img, "not a container image");
  return { ...s, parsedConfig: parseImageConfig(s.config, `${img}: config`) };
}

export interface ImageTreeOptions {
  bootable?: boolean;
  xattrs?: XattrFiltering;
}

/**
 * The filesystem tree of a stored image: layers merged and the OCI
 * transform applied; with `bootable` also the boot transform (then
 * `resources` are the boot resources found before /boot was emptied).
 */
export async function imageTree(repo: Repository, img: string, opts: ImageTreeOptions = {}): Promise<{ tree: Dir; resources: BootResource[] | null }> {
  const s = await openStoredImage(repo, img);
  const tree = await layersTree(repo, layerList(s.parsedConfig.diffIds, s.configRefs, `streams/${configStreamId(s.configDigest)}`));
  transformForOci(tree, { xattrs: opts.xattrs ?? "allowlist-only" });
  if (!opts.bootable) return { tree, resources: null };
  const { resources } = transformForBoot(tree, repoFileReader(repo));
  return { tree, resources };
}

/** Boot resources of a stored image (oci.md §6) and the boot type bootc would choose. */
export async function imageBootResources(repo: Repository, img: string): Promise<{ resources: BootResource[]; bootType: "uki" | "bls" }> {
  const { tree } = await imageTree(repo, img);
  const resources = findBootResources(tree, repoFileReader(repo));
  return { resources, bootType: bootType(resources, img) };
}

/** The image id a stored image has (or would have) in the repository's default format. */
export async function computeImageId(repo: Repository, img: string, opts: ImageTreeOptions = {}): Promise<string> {
  const { tree } = await imageTree(repo, img, opts);
  const { fsverityDigest } = await import("../shared/fsverity.ts");
  return toHex(fsverityDigest(writeErofs(tree, { version: repo.formats.default }), repo.alg));
}

// ---- EROFS images and the config/manifest streams ------------------------------------------------

function imageKeys(repo: Repository, bootable: boolean): { key: string; version: ErofsVersion; boot: boolean }[] {
  const out: { key: string; version: ErofsVersion; boot: boolean }[] = [];
  for (const v of repo.versions) out.push({ key: imageRefKey(v, false), version: v, boot: false });
  if (bootable) for (const v of repo.versions) out.push({ key: imageRefKey(v, true), version: v, boot: true });
  return out;
}

async function writeJsonStream(
  repo: Repository,
  contentId: string,
  contentType: bigint,
  json: Uint8Array,
  refs: readonly [string, Uint8Array][],
): Promise<Uint8Array> {
  const obj = repo.ensureObjectSync(json);
  const w = new SplitStreamWriter({ algorithm: repo.alg, contentType });
  for (const [name, id] of refs) w.addNamedStreamRef(name, id);
  w.writeExternal(obj.digest, json.length);
  return repo.writeStream(contentId, await w.finish());
}

function sameRefs(a: ReadonlyMap<string, Uint8Array>, b: readonly [string, Uint8Array][]): boolean {
  if (a.size !== b.length) return false;
  for (const [k, v] of b) {
    const x = a.get(k);
    if (x === undefined || toHex(x) !== toHex(v)) return false;
  }
  return true;
}

/**
 * Make sure the EROFS images the repository asks for exist for an image
 * whose layers are stored, and that the config and manifest streams name
 * them (written only when something changed). Returns the ids and stream ids.
 */
export async function ensureImages(
  repo: Repository,
  img: {
    manifestDigest: string;
    manifestBytes: Uint8Array;
    configDigest: string;
    configBytes: Uint8Array;
    config: ImageConfig;
    layers: { diffId: string; streamId: Uint8Array }[];
    /** Named refs of an existing config stream (kept: other modes' boot images). */
    existingConfigRefs: ReadonlyMap<string, Uint8Array> | null;
    /** Entries of the layers this pull imported (saves reading their streams back). */
    imported?: ReadonlyMap<string, readonly LayerItem[]>;
  },
  opts: { bootable?: boolean } = {},
): Promise<{ refs: Map<string, Uint8Array>; configStream: Uint8Array; manifestStream: Uint8Array }> {
  const refs = new Map<string, Uint8Array>();
  for (const [k, v] of img.existingConfigRefs ?? []) if (k.startsWith("composefs.")) refs.set(k, v);
  const wanted = imageKeys(repo, opts.bootable ?? false);
  const missing = wanted.filter(({ key }) => {
    const id = refs.get(key);
    return id === undefined || !repo.hasObject(id);
  });
  if (missing.length > 0) {
    const tree = await layersTree(repo, img.layers, img.imported);
    transformForOci(tree);
    let boot: Dir | null = null;
    for (const m of missing) {
      let t = tree;
      if (m.boot) {
        if (boot === null) {
          boot = cloneTree(tree);
          transformForBoot(boot, repoFileReader(repo));
        }
        t = boot;
      }
      refs.set(m.key, await repo.writeImage(writeErofs(t, { version: m.version })));
    }
  }
  // Named refs in a fixed order: layers as rootfs.diff_ids lists them, then the image keys sorted.
  const configRefs: [string, Uint8Array][] = [];
  const seen = new Set<string>();
  for (const l of img.layers) {
    if (seen.has(l.diffId)) continue;
    seen.add(l.diffId);
    configRefs.push([l.diffId, l.streamId]);
  }
  for (const k of [...refs.keys()].sort()) configRefs.push([k, refs.get(k)!]);
  const cid = configStreamId(img.configDigest);
  let configStream = repo.hasStream(cid);
  if (configStream === null || img.existingConfigRefs === null || !sameRefs(img.existingConfigRefs, configRefs)) {
    configStream = await writeJsonStream(repo, cid, CONTENT_TYPE.ociConfig, img.configBytes, configRefs);
  }
  const manifestRefs: [string, Uint8Array][] = [[`config:${img.configDigest}`, configStream], ...configRefs.filter(([k]) => !k.startsWith("composefs."))];
  const mid = manifestStreamId(img.manifestDigest);
  let manifestStream = repo.hasStream(mid);
  let current: ReadonlyMap<string, Uint8Array> | null = null;
  if (manifestStream !== null) {
    try {
      current = repo.openStream(mid, CONTENT_TYPE.ociManifest, { id: manifestStream }).namedRefs;
    } catch {
      current = null;
    }
  }
  if (manifestStream === null || current === null || !sameRefs(current, manifestRefs)) {
    manifestStream = await writeJsonStream(repo, mid, CONTENT_TYPE.ociManifest, img.manifestBytes, manifestRefs);
  }
  const out = new Map<string, Uint8Array>();
  for (const { key } of wanted) out.set(key, refs.get(key)!);
  return { refs: out, configStream, manifestStream };
}

// ---- pulling ------------------------------------------------------------------------------

function idsOf(repo: Repository, refs: ReadonlyMap<string, Uint8Array>): ImageIds {
  const ids: ImageIds = {};
  for (const v of repo.versions) {
    const a = refs.get(imageRefKey(v, false));
    const b = refs.get(imageRefKey(v, true));
    if (v === 2) {
      if (a) ids.v2 = toHex(a);
      if (b) ids.bootV2 = toHex(b);
    } else {
      if (a) ids.v1 = toHex(a);
      if (b) ids.bootV1 = toHex(b);
    }
  }
  return ids;
}

async function fetchConfig(source: ImageSource, manifest: ImageManifest): Promise<Uint8Array> {
  const bytes = await source.readBlob(manifest.config, 16 << 20);
  return bytes;
}

function checkContainerImage(name: string, manifest: ImageManifest): void {
  if (!isImageConfigMediaType(manifest.config.mediaType)) {
    throw new CfsError(name, `not a container image (config media type "${manifest.config.mediaType}"); OCI artifacts are not supported`);
  }
}

/** The source a pull reads: unified storage for registry images when asked, else the reference's own. */
async function openPullSource(repo: Repository, imgref: string, opts: PullOptions): Promise<ImageSource> {
  if (opts.unifiedStorage && parseImageRef(imgref).transport === "registry") {
    const { openUnifiedSource, storageOfRepo } = await import("./unified-storage.ts");
    return openUnifiedSource(imgref, opts.unifiedStorage === true ? storageOfRepo(repo.path) : opts.unifiedStorage, opts);
  }
  return openImageSource(imgref, opts);
}

/** Pull an image into the repository (see the module comment for the order of effects). */
export async function pullImage(repo: Repository, imgref: string, opts: PullOptions = {}): Promise<PullResult> {
  repo.requireWritable();
  const tick = phaseTimer();
  const tag = opts.tag ?? imgref;
  const source = await openPullSource(repo, imgref, opts);
  tick("open source");
  const progress = new PullProgress(opts.progress ?? (process.stderr.isTTY === true && !process.env.CFSBOOT_NO_PROGRESS));
  try {
    const fetched = await source.resolve(opts.platform ?? platformForArch(process.arch));
    const { manifest, manifestDigest, manifestBytes } = fetched;
    tick("manifest");
    checkContainerImage(`${imgref}@${manifestDigest}`, manifest);
    const configDigest = manifest.config.digest;
    const cid = configStreamId(configDigest);
    let existingConfigRefs: Map<string, Uint8Array> | null = null;
    let configBytes: Uint8Array | null = null;
    if (repo.hasStream(cid) !== null) {
      try {
        const info = repo.openStream(cid, CONTENT_TYPE.ociConfig);
        const bytes = await repo.readJsonStream(info, `streams/${cid}`);
        if (sha256Digest(bytes) === configDigest) {
          configBytes = bytes;
          existingConfigRefs = info.namedRefs;
        }
      } catch {
        // A damaged config stream is replaced below.
      }
    }
    let bytesDownloaded = 0;
    if (configBytes === null) {
      configBytes = await fetchConfig(source, manifest);
      bytesDownloaded += configBytes.length;
    }
    const config = parseImageConfig(configBytes, `${imgref}: config ${configDigest}`);
    const comps = checkImageLayers(manifest, config, `${imgref}@${manifestDigest}`);
    tick("config");

    const stats: PullResult["stats"] = {
      objectsCopied: 0,
      objectsAlreadyPresent: 0,
      bytesCopied: 0,
      bytesInlined: 0,
      layers: manifest.layers.length,
      layersAlreadyPresent: 0,
      bytesDownloaded: 0,
    };
    // Layers: skip those stored; import the others (each diff_id once).
    const layerIds = new Map<string, Uint8Array>();
    const imported = new Map<string, LayerItem[]>();
    const todo: number[] = [];
    config.diffIds.forEach((d, i) => {
      if (layerIds.has(d) || todo.some((j) => config.diffIds[j] === d)) return;
      const have = repo.hasStream(layerStreamId(d));
      if (have !== null) {
        layerIds.set(d, have);
        stats.layersAlreadyPresent++;
      } else todo.push(i);
    });
    // Small downloads are stored on this thread: starting a worker costs more than it saves.
    const toImport = todo.reduce((n, i) => n + manifest.layers[i]!.size, 0);
    const store = opts.store ?? new StorePool(repo, toImport < LOCAL_STORE_MAX ? { workers: 0 } : {});
    let next = 0;
    let failed: unknown = null;
    const worker = async () => {
      while (next < todo.length && failed === null) {
        const i = todo[next++]!;
        const desc = manifest.layers[i]!;
        const diffId = config.diffIds[i]!;
        const bar = progress.bar(`${desc.digest.slice(7, 19)}`, desc.size);
        try {
          const blob = counted(source.openLayer?.(desc) ?? source.openBlob(desc), (n) => {
            bar.update(n);
          });
          const items: LayerItem[] = [];
          const r = await importLayer(repo, blob, source.layerCompression?.(desc) ?? comps[i]!, diffId, { name: `${imgref}: layer ${desc.digest}`, store, items });
          layerIds.set(diffId, r.streamId);
          imported.set(diffId, items);
          stats.objectsCopied += r.stats.objectsCopied;
          stats.objectsAlreadyPresent += r.stats.objectsAlreadyPresent;
          stats.bytesCopied += r.stats.bytesCopied;
          stats.bytesInlined += r.stats.bytesInlined;
          bytesDownloaded += desc.size;
          bar.finish(`${desc.digest.slice(7, 19)} done`);
        } catch (e) {
          failed ??= e;
        }
      }
    };
    const n = Math.max(1, Math.min(opts.parallelLayers ?? 2, todo.length));
    try {
      await Promise.all(Array.from({ length: n }, worker));
    } finally {
      if (opts.store === undefined) await store.close();
    }
    if (failed !== null) throw failed;
    stats.bytesDownloaded = bytesDownloaded;
    tick("layers");

    const layers = config.diffIds.map((d) => ({ diffId: d, streamId: layerIds.get(d)! }));
    const { refs, manifestStream } = await ensureImages(
      repo,
      { manifestDigest, manifestBytes, configDigest, configBytes, config, layers, existingConfigRefs, imported },
      { bootable: opts.bootable ?? false },
    );
    tick("images and streams");
    repo.tag(tag, manifestDigest);
    const imageIds = idsOf(repo, refs);
    const result: PullResult = {
      manifestDigest,
      configDigest,
      manifestVerity: toHex(manifestStream),
      tag,
      imageIds,
      imageId: toHex(refs.get(imageRefKey(repo.formats.default, false))!),
      stats,
    };
    if (opts.bootable) result.bootImageId = toHex(refs.get(imageRefKey(repo.formats.default, true))!);
    return result;
  } finally {
    progress.stop();
    await source.close();
  }
}

/** cfsctl's output lines for a pull. */
export function formatPullResult(r: PullResult): string {
  return formatPullOutput({
    manifestDigest: r.manifestDigest,
    configDigest: r.configDigest,
    manifestVerity: r.manifestVerity,
    tag: r.tag,
    stats: r.stats,
    ...(r.bootImageId !== undefined ? { bootImage: r.bootImageId } : {}),
  });
}

// ---- update checks --------------------------------------------------------------------------

export interface RemoteImageInfo {
  manifestDigest: string;
  manifestBytes: Uint8Array;
  manifest: ImageManifest;
  configDigest: string;
  configBytes: Uint8Array;
  config: ImageConfig;
  /** Compressed bytes of the layers the repository lacks (all layers without a repository). */
  downloadSize: number;
  /** Layers the repository lacks (diff_ids). */
  missingLayers: string[];
}

/**
 * Fetch an image's manifest and config without storing anything (for
 * `upgrade --check`): with a repository, also what a pull would download.
 */
export async function fetchManifestAndConfig(imgref: string, opts: SourceOptions & { repo?: Repository } = {}): Promise<RemoteImageInfo> {
  const source = await openImageSource(imgref, opts);
  try {
    const f = await source.resolve(opts.platform ?? platformForArch(process.arch));
    checkContainerImage(`${imgref}@${f.manifestDigest}`, f.manifest);
    const configBytes = await fetchConfig(source, f.manifest);
    const config = parseImageConfig(configBytes, `${imgref}: config ${f.manifest.config.digest}`);
    checkImageLayers(f.manifest, config, `${imgref}@${f.manifestDigest}`);
    let downloadSize = 0;
    const missing: string[] = [];
    config.diffIds.forEach((d, i) => {
      if (opts.repo !== undefined && opts.repo.hasStream(layerStreamId(d)) !== null) return;
      if (missing.includes(d)) return;
      missing.push(d);
      downloadSize += f.manifest.layers[i]!.size;
    });
    return { ...f, configDigest: f.manifest.config.digest, configBytes, config, downloadSize, missingLayers: missing };
  } finally {
    await source.close();
  }
}

// ---- inspect --------------------------------------------------------------------------------

/** `repo inspect IMG` without flags: cfsctl's JSON (manifest, config, referrers, image ids). */
export async function inspectImage(repo: Repository, img: string): Promise<string> {
  const s = await repo.openOciImage(img);
  const referrers: string[] = [];
  const enc = s.manifestDigest.replace(/%/g, "%25").replace(/\//g, "%2F");
  for (const { name } of repo.listRefs(`streams/refs/oci-referrers/${enc}`)) {
    referrers.push(name.replace(/%2F/g, "/").replace(/%25/g, "%"));
  }
  const key = imageRefKey(repo.formats.default, false);
  const bootKey = imageRefKey(repo.formats.default, true);
  const erofs = s.configRefs.get(key);
  const boot = s.configRefs.get(bootKey);
  const out = {
    manifest: Buffer.from(s.manifest).toString("utf8"),
    config: Buffer.from(s.config ?? new Uint8Array(0)).toString("utf8"),
    referrers,
    composefs_erofs: erofs ? toHex(erofs) : null,
    composefs_boot_erofs: boot ? toHex(boot) : null,
  };
  return JSON.stringify(out, null, 2) + "\n";
}

