// OCI image layouts: `oci:DIR[:REF]` directories and `oci-archive:FILE[:REF]`
// tarballs of them (oci.md §1, §2.2).
//
//   const src = await openLayout(parseImageRef("oci:/srv/img:latest"));
//   const img = await src.resolve(platformForArch(process.arch));
//   img.manifestDigest, img.manifest (parsed), img.manifestBytes
//   for await (const piece of src.openBlob(img.manifest.layers[0])) …   // digest + size verified
//
// An oci-archive is read in place: one pass over its tar headers (payloads
// are skipped with positioned reads, not read) records where each member's
// bytes are, then blobs are streamed from those byte ranges. Nothing is
// extracted, so no temporary space is needed and no member path can escape.
// Only regular files (and hardlinks to them) are used; `..` paths, sparse or
// unknown entries make the archive invalid (shared/tar.ts).
//
// Selection: with REF, the index.json entries whose
// `org.opencontainers.image.ref.name` equals REF; without, all entries. A
// nested index is resolved for the host platform; entries without a platform
// are matched by their config's os/architecture. The manifest digest
// reported is the selected platform manifest's.

import { createHash } from "node:crypto";
import { closeSync, existsSync, fstatSync, openSync, readSync, statSync } from "node:fs";
import { join } from "node:path";

import { CfsError } from "../shared/errors.ts";
import { fromNodeError } from "../shared/sys.ts";
import {
  MEDIA_TYPE,
  formatPlatform,
  parseDigest,
  parseImageConfig,
  parseManifestDocument,
  platformMatch,
  selectManifest,
  type Descriptor,
  type ImageIndex,
  type ImageManifest,
  type LayoutRef,
  type Platform,
} from "../shared/oci.ts";
import { TarReader } from "../shared/tar.ts";

export const REF_NAME = "org.opencontainers.image.ref.name";

export interface ResolvedImage {
  manifestDescriptor: Descriptor;
  manifestDigest: string;
  manifestBytes: Uint8Array;
  manifest: ImageManifest;
}

type Blobish = Pick<Descriptor, "digest"> & { size?: number };

/** Common logic; subclasses provide raw member access. */
export abstract class LayoutSource {
  /** "oci:/path" or "oci-archive:/path" (the input named in errors). */
  readonly name: string;
  readonly ref: string | null;
  index!: ImageIndex;

  protected constructor(name: string, ref: string | null) {
    this.name = name;
    this.ref = ref;
  }

  /** Raw bytes of a member ("index.json", "blobs/sha256/…"), or null if absent. */
  protected abstract member(path: string): { size: number; stream: (reuse?: boolean) => AsyncIterable<Uint8Array> } | null;

  protected async readMember(path: string, limit: number): Promise<Uint8Array | null> {
    const m = this.member(path);
    if (m === null) return null;
    if (m.size > limit) throw new CfsError(`${this.name}: ${path}`, `${m.size} bytes exceed the limit of ${limit}`);
    const parts: Uint8Array[] = [];
    for await (const c of m.stream()) parts.push(c);
    return new Uint8Array(Buffer.concat(parts));
  }

  protected async init(): Promise<void> {
    const layoutFile = await this.readMember("oci-layout", 1 << 16);
    if (layoutFile === null) throw new CfsError(this.name, "not an OCI image layout (no oci-layout file)");
    let v: unknown;
    try {
      v = JSON.parse(Buffer.from(layoutFile).toString("utf8"));
    } catch {
      throw new CfsError(`${this.name}: oci-layout`, "invalid JSON");
    }
    const ver = (v as { imageLayoutVersion?: unknown }).imageLayoutVersion;
    if (typeof ver !== "string" || !/^1\./.test(ver)) {
      throw new CfsError(`${this.name}: oci-layout`, `unsupported imageLayoutVersion ${JSON.stringify(ver)}`);
    }
    const idx = await this.readMember("index.json", 16 << 20);
    if (idx === null) throw new CfsError(this.name, "no index.json");
    const doc = parseManifestDocument(idx, `${this.name}: index.json`, MEDIA_TYPE.ociIndex);
    if (doc.kind !== "index") throw new CfsError(`${this.name}: index.json`, "is not an image index");
    this.index = doc;
  }

  /** Where a blob lives in the layout. */
  static blobMember(digest: string): string {
    const d = parseDigest(digest);
    return `blobs/${d.algorithm}/${d.hex}`;
  }

  /**
   * Stream a blob, verifying size and digest; throws at the end on mismatch.
   * With `reuseBuffer` every chunk is a view of one buffer, valid until the
   * next chunk is requested (no fresh memory per chunk: for consumers that
   * copy what they keep, like a layer import).
   */
  async *openBlob(desc: Blobish, opts: { reuseBuffer?: boolean } = {}): AsyncGenerator<Uint8Array> {
    const input = `${this.name}@${desc.digest}`;
    const d = parseDigest(desc.digest, input);
    const m = this.member(LayoutSource.blobMember(desc.digest));
    if (m === null) throw new CfsError(input, "blob missing from the layout");
    if (desc.size !== undefined && m.size !== desc.size) {
      throw new CfsError(input, `blob has ${m.size} bytes, its descriptor says ${desc.size}`);
    }
    const h = createHash(d.algorithm);
    for await (const c of m.stream(opts.reuseBuffer ?? false)) {
      h.update(c);
      yield c;
    }
    const got = `${d.algorithm}:${h.digest("hex")}`;
    if (got !== desc.digest) throw new CfsError(input, `blob digest mismatch: got ${got}`);
  }

  async readBlob(desc: Blobish, maxSize = 64 << 20): Promise<Uint8Array> {
    const m = this.member(LayoutSource.blobMember(desc.digest));
    if (m !== null && m.size > maxSize) throw new CfsError(`${this.name}@${desc.digest}`, `blob of ${m.size} bytes exceeds the limit of ${maxSize}`);
    const parts: Uint8Array[] = [];
    for await (const c of this.openBlob(desc)) parts.push(c);
    return new Uint8Array(Buffer.concat(parts));
  }

  /** Platform of an index entry without `platform`: read from its manifest's config. */
  private async platformFromConfig(d: Descriptor): Promise<Platform | undefined> {
    if (d.mediaType !== MEDIA_TYPE.ociManifest && d.mediaType !== MEDIA_TYPE.dockerManifest) return undefined;
    const bytes = await this.readBlob(d, 4 << 20);
    const m = parseManifestDocument(bytes, `${this.name}@${d.digest}`, d.mediaType);
    if (m.kind !== "manifest" || (m.config.mediaType !== MEDIA_TYPE.ociConfig && m.config.mediaType !== MEDIA_TYPE.dockerConfig)) return undefined;
    const c = parseImageConfig(await this.readBlob(m.config, 16 << 20), `${this.name}@${m.config.digest}`);
    return { os: c.os, architecture: c.architecture, ...(c.variant ? { variant: c.variant } : {}) };
  }

  private async pick(index: ImageIndex, want: Platform, where: string): Promise<Descriptor> {
    const known = new Map<string, Platform | undefined>();
    for (const d of index.manifests) if (d.platform === undefined) known.set(d.digest, await this.platformFromConfig(d));
    return selectManifest(index, want, where, (d) => known.get(d.digest));
  }

  /** Select the image manifest for `want` (and the layout REF), following nested indexes. */
  async resolve(want: Platform): Promise<ResolvedImage> {
    const where = this.ref !== null ? `${this.name}:${this.ref}` : this.name;
    let candidates = this.index.manifests;
    if (this.ref !== null) {
      candidates = candidates.filter((d) => d.annotations?.[REF_NAME] === this.ref);
      if (candidates.length === 0) {
        const names = this.index.manifests.map((d) => d.annotations?.[REF_NAME]).filter((n): n is string => n !== undefined);
        throw new CfsError(where, `no image named "${this.ref}" in the layout${names.length ? ` (it has: ${[...new Set(names)].join(", ")})` : ""}`);
      }
    }
    if (candidates.length === 0) throw new CfsError(where, "the layout's index.json lists no images");
    let desc: Descriptor;
    if (candidates.length === 1) {
      desc = candidates[0]!;
    } else {
      const idx: ImageIndex = { ...this.index, manifests: candidates };
      desc = await this.pick(idx, want, where);
      if (this.ref === null) {
        // Several images for this platform and no REF: ambiguous.
        const plat = async (d: Descriptor) => d.platform ?? (await this.platformFromConfig(d));
        let same = 0;
        for (const d of candidates) {
          const p = await plat(d);
          if (p !== undefined && platformMatch(want, p) > 0) same++;
        }
        if (same > 1) {
          const names = candidates.map((d) => d.annotations?.[REF_NAME]).filter((n): n is string => n !== undefined);
          throw new CfsError(where, `the layout holds several images for ${formatPlatform(want)}; name one with :REF${names.length ? ` (${names.join(", ")})` : ""}`);
        }
      }
    }
    for (let depth = 0; depth < 8; depth++) {
      const bytes = await this.readBlob(desc, 4 << 20);
      const doc = parseManifestDocument(bytes, `${this.name}@${desc.digest}`, desc.mediaType);
      if (doc.kind === "manifest") {
        return { manifestDescriptor: desc, manifestDigest: desc.digest, manifestBytes: bytes, manifest: doc };
      }
      desc = await this.pick(doc, want, `${this.name}@${desc.digest}`);
    }
    throw new CfsError(where, "image indexes nested too deeply");
  }
}

/** `oci:DIR` */
export class OciLayoutDir extends LayoutSource {
  readonly path: string;

  private constructor(path: string, ref: string | null) {
    super(`oci:${path}`, ref);
    this.path = path;
  }

  static async open(path: string, ref: string | null = null): Promise<OciLayoutDir> {
    if (!existsSync(path)) throw new CfsError(`oci:${path}`, "no such directory");
    const l = new OciLayoutDir(path, ref);
    await l.init();
    return l;
  }

  protected member(path: string): { size: number; stream: (reuse?: boolean) => AsyncIterable<Uint8Array> } | null {
    const p = join(this.path, path);
    let st;
    try {
      st = statSync(p);
    } catch {
      return null;
    }
    if (!st.isFile()) return null;
    return { size: st.size, stream: (reuse) => fileRange(p, 0, st.size, reuse) };
  }
}

/** Bytes per chunk of a reused buffer (fileRange with `reuse`). */
const REUSED_CHUNK = 256 << 10;

async function* fileRange(path: string, start: number, size: number, reuse = false): AsyncGenerator<Uint8Array> {
  const fd = openSync(path, "r");
  try {
    let off = 0;
    const shared = reuse ? new Uint8Array(Math.min(REUSED_CHUNK, size)) : null;
    while (off < size) {
      // A fresh buffer per chunk unless asked to reuse one: consumers may keep the views they get.
      const buf = shared !== null ? shared.subarray(0, Math.min(shared.byteLength, size - off)) : new Uint8Array(Math.min(1 << 20, size - off));
      const n = readSync(fd, buf, 0, buf.length, start + off);
      if (n === 0) throw new CfsError(path, `unexpected end of file at offset ${start + off}`);
      yield n === buf.length ? buf : buf.subarray(0, n);
      off += n;
      // Let other work run between chunks.
      if ((off & ((8 << 20) - 1)) === 0) await Promise.resolve();
    }
  } finally {
    closeSync(fd);
  }
}

/** `oci-archive:FILE` read in place. */
export class OciArchive extends LayoutSource {
  readonly file: string;
  private members = new Map<string, { offset: number; size: number }>();

  private constructor(file: string, ref: string | null) {
    super(`oci-archive:${file}`, ref);
    this.file = file;
  }

  static async open(file: string, ref: string | null = null): Promise<OciArchive> {
    const a = new OciArchive(file, ref);
    a.scan();
    await a.init();
    return a;
  }

  private scan(): void {
    let fd: number;
    try {
      fd = openSync(this.file, "r");
    } catch (e) {
      throw new CfsError(this.name, `cannot open: ${fromNodeError(this.file, "open", e).what}`);
    }
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw new CfsError(this.name, "not a regular file");
      const r = new TarReader({ name: this.name });
      const buf = Buffer.allocUnsafe(1 << 16);
      let pushedEnd = 0;
      for (;;) {
        for (let ev = r.next(); ev !== null; ev = r.next()) {
          if (ev.kind !== "entry") continue;
          const e = ev.entry;
          const key = e.path.slice(1); // "/blobs/sha256/…" → "blobs/sha256/…"
          if (e.type === "regular") {
            this.members.set(key, { offset: e.offset + e.headerSize, size: e.size });
            const left = r.discardPayload();
            if (pushedEnd + left > st.size) {
              throw new CfsError(`${this.name}: offset ${st.size}`, `truncated archive (end of file inside ${key})`);
            }
            if (left > 0) {
              r.skipped(left);
              pushedEnd += left;
            }
          } else if (e.type === "hardlink") {
            const target = this.members.get(e.linkPath!.slice(1));
            if (target !== undefined) this.members.set(key, target);
          }
        }
        if (r.done) break;
        const n = readSync(fd, buf, 0, buf.length, pushedEnd);
        if (n === 0) {
          r.end();
          for (let ev = r.next(); ev !== null; ev = r.next()) {
            // trailing events only
          }
          break;
        }
        r.push(new Uint8Array(buf.subarray(0, n)).slice());
        pushedEnd += n;
      }
    } finally {
      closeSync(fd);
    }
  }

  protected member(path: string): { size: number; stream: (reuse?: boolean) => AsyncIterable<Uint8Array> } | null {
    const m = this.members.get(path);
    if (m === undefined) return null;
    return { size: m.size, stream: (reuse) => fileRange(this.file, m.offset, m.size, reuse) };
  }
}

/** Open the source of an `oci:` or `oci-archive:` reference. */
export async function openLayout(ref: LayoutRef): Promise<LayoutSource> {
  return ref.transport === "oci" ? OciLayoutDir.open(ref.path, ref.ref) : OciArchive.open(ref.path, ref.ref);
}
