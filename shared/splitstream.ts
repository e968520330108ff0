// composefs-rs splitstreams (repository.md §7), pure: bytes in, bytes out.
//
// A splitstream stores a byte stream as inline chunks (zstd-compressed) and
// references to objects (file contents, JSON blobs), plus named references to
// other splitstreams (the OCI GC chain). Layout as composefs-rs writes it:
//
//   [0]   header (32)   magic "SplitStream", version 0, flags, algorithm, lg_blocksize 12, info range
//   [32]  info (80)     ranges of stream_refs / object_refs / stream / named_refs, content type, stream size
//   [112] stream_refs   raw digests
//         object_refs   raw digests (order of first use in the stream)
//         named_refs    zstd frame of "<idx>:<name>\0" records, sorted by name
//         stream        zstd frame of chunks: i64 LE -n + n inline bytes, or k ≥ 0 = object_refs[k]
//
// Readers honour the ranges (any order) and the legacy pre-repr(C) header.
//
// Compression uses node:zlib's streaming zstd (Bun), driven synchronously
// (shared/zsync.ts): one frame, no checksum, no content size, like the zstd
// crate's streaming encoder. Only the compressed stream is kept in memory;
// inline data is compressed as it is written.
//
// Chunking: composefs-rs coalesces all adjacent inline data into one chunk.
// This writer does the same, except that a caller may mark `boundary()`
// positions (tar entry boundaries) where a long inline run may be cut (at
// `inlineChunkLimit`, 4 MiB by default) so memory stays bounded on layers
// made of millions of tiny files. Upstream readers accept any chunking at
// entry boundaries (their tar reader only requires that a header block or a
// small file's stored bytes do not straddle two chunks).

import * as zlib from "node:zlib";
import { bstr } from "./bytes.ts";
import { CfsError } from "./errors.ts";
import { SyncCodec } from "./zsync.ts";

export type VerityAlgorithm = "sha256" | "sha512";

export const DIGEST_SIZE: Record<VerityAlgorithm, number> = { sha256: 32, sha512: 64 };
const ALG_ID: Record<VerityAlgorithm, number> = { sha256: 1, sha512: 2 };

const MAGIC = "SplitStream";
const LG_BLOCKSIZE = 12;
export const HEADER_SIZE = 32;
export const INFO_SIZE = 80;

/** The u64 LE of an 8-byte ASCII tag. */
function tag(s: string): bigint {
  let v = 0n;
  for (let i = 7; i >= 0; i--) v = (v << 8n) | BigInt(s.charCodeAt(i));
  return v;
}

export const CONTENT_TYPE = {
  ociLayer: tag("ocilayer"),
  ociConfig: tag("ociconfg"),
  ociManifest: tag("ocimanif"),
  ociBlob: tag("oci_blob"),
} as const;

/** "ocilayer" etc. for a content type value (for messages). */
export function contentTypeName(v: bigint): string {
  let s = "";
  for (let i = 0; i < 8; i++) s += String.fromCharCode(Number((v >> BigInt(8 * i)) & 0xffn));
  return /^[\x20-\x7e]{8}$/.test(s) ? s : `0x${v.toString(16)}`;
}

// ---- zstd helpers ---------------------------------------------------------------------

/** Bytes collected before one call into the compressor (many splitstream records are tiny). */
const STAGE_SIZE = 128 << 10;

/**
 * Incremental zstd compressor producing exactly one frame (the same bytes
 * node:zlib's zstd stream produces for the same input: shared/zsync.ts
 * drives its handle synchronously, writes staged into 128 KiB pieces).
 */
class FrameCompressor {
  private c = new SyncCodec("zstd-compress", 64 << 10);
  private out: Uint8Array[] = [];
  private size = 0;
  private readonly stage = new Uint8Array(STAGE_SIZE);
  private staged = 0;

  private compress(b: Uint8Array, end = false): void {
    for (const piece of this.c.run(b, end)) {
      this.out.push(piece.slice());
      this.size += piece.byteLength;
    }
  }

  /**
   * Append bytes (copied). The compressor is called on whole 128 KiB pieces
   * of the stream, so the frame depends only on the bytes written, not on
   * how they were split into writes (e.g. by network chunk boundaries).
   */
  write(b: Uint8Array): void {
    let off = 0;
    while (off < b.length) {
      const n = Math.min(STAGE_SIZE - this.staged, b.length - off);
      this.stage.set(n === b.length ? b : b.subarray(off, off + n), this.staged);
      this.staged += n;
      off += n;
      if (this.staged === STAGE_SIZE) {
        this.compress(this.stage);
        this.staged = 0;
      }
    }
  }

  /** Compression is synchronous: nothing to wait for (kept for callers that pace themselves). */
  async drain(): Promise<void> {}

  /** End the frame and return it. */
  async finish(): Promise<Uint8Array[]> {
    try {
      this.compress(this.stage.subarray(0, this.staged), true);
      this.staged = 0;
    } finally {
      this.c.close();
    }
    return this.out;
  }

  get compressedSize(): number {
    return this.size;
  }
}

function u64le(v: bigint | number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(v), true);
  return b;
}

/** A chunk header in a scratch buffer (FrameCompressor.write copies it at once). */
const headerScratch = new Uint8Array(8);
const headerView = new DataView(headerScratch.buffer);
function chunkHeader(v: number): Uint8Array {
  headerView.setBigInt64(0, BigInt(v), true);
  return headerScratch;
}

function hexKey(d: Uint8Array): string {
  return Buffer.from(d.buffer, d.byteOffset, d.byteLength).toString("hex");
}

// ---- writer ---------------------------------------------------------------------------

export interface SplitStreamWriterOptions {
  algorithm: VerityAlgorithm;
  contentType: bigint;
  /** Cut long inline runs at boundary() marks beyond this many bytes (default 4 MiB). */
  inlineChunkLimit?: number;
  /** Write the legacy (bootc ≤ 1.15) header layout; only for compatibility tests. */
  legacyHeader?: boolean;
}

export interface SplitStreamStats {
  inlineBytes: number;
  externalBytes: number;
  externalChunks: number;
}

export class SplitStreamWriter {
  private readonly alg: VerityAlgorithm;
  private readonly contentType: bigint;
  private readonly limit: number;
  private readonly legacy: boolean;
  private z = new FrameCompressor();
  private inline: Uint8Array[] = [];
  private inlineLen = 0;
  private objectRefs: Uint8Array[] = [];
  private objectIndex = new Map<string, number>();
  private streamRefs: Uint8Array[] = [];
  private streamIndex = new Map<string, number>();
  private named = new Map<string, number>();
  private total = 0n;
  private finished = false;
  readonly stats: SplitStreamStats = { inlineBytes: 0, externalBytes: 0, externalChunks: 0 };

  constructor(opts: SplitStreamWriterOptions) {
    this.alg = opts.algorithm;
    this.contentType = opts.contentType;
    this.limit = opts.inlineChunkLimit ?? 4 << 20;
    this.legacy = opts.legacyHeader ?? false;
  }

  private checkId(id: Uint8Array, what: string): void {
    if (id.length !== DIGEST_SIZE[this.alg]) {
      throw new Error(`${what}: expected a ${DIGEST_SIZE[this.alg]}-byte ${this.alg} digest, got ${id.length} bytes`);
    }
  }

  /** Append inline bytes (copied if they must be buffered). */
  writeInline(bytes: Uint8Array): void {
    if (this.finished) throw new Error("SplitStreamWriter used after finish()");
    if (bytes.length === 0) return;
    this.inline.push(bytes.slice());
    this.inlineLen += bytes.length;
    this.total += BigInt(bytes.length);
    this.stats.inlineBytes += bytes.length;
  }

  /** Append a reference to an object holding `size` bytes of the stream. */
  writeExternal(id: Uint8Array, size: number | bigint): void {
    if (this.finished) throw new Error("SplitStreamWriter used after finish()");
    this.checkId(id, "object reference");
    this.flushInline();
    const key = hexKey(id);
    let idx = this.objectIndex.get(key);
    if (idx === undefined) {
      idx = this.objectRefs.length;
      this.objectRefs.push(id.slice());
      this.objectIndex.set(key, idx);
    }
    this.z.write(chunkHeader(idx));
    this.total += BigInt(size);
    this.stats.externalBytes += Number(size);
    this.stats.externalChunks++;
  }

  /** Mark a position where an inline chunk may end (e.g. between tar entries). */
  boundary(): void {
    if (this.inlineLen >= this.limit) this.flushInline();
  }

  /** Wait for the compressor to catch up (call now and then while streaming). */
  async drain(): Promise<void> {
    await this.z.drain();
  }

  /** Add (or replace) a named reference to another splitstream; last call for a name wins. */
  addNamedStreamRef(name: string, id: Uint8Array): void {
    this.checkId(id, `named reference ${name}`);
    if (name.includes("\0")) throw new Error("named reference names cannot contain NUL");
    const key = hexKey(id);
    let idx = this.streamIndex.get(key);
    if (idx === undefined) {
      idx = this.streamRefs.length;
      this.streamRefs.push(id.slice());
      this.streamIndex.set(key, idx);
    }
    this.named.set(name, idx);
  }

  private flushInline(): void {
    if (this.inlineLen === 0) return;
    this.z.write(chunkHeader(-this.inlineLen));
    for (const b of this.inline) this.z.write(b);
    this.inline = [];
    this.inlineLen = 0;
  }

  /** Total reassembled size so far. */
  get streamSize(): bigint {
    return this.total;
  }

  /** Finish: the splitstream file as parts (concatenate or write them in order). */
  async finish(): Promise<Uint8Array[]> {
    if (this.finished) throw new Error("SplitStreamWriter.finish() called twice");
    this.flushInline();
    this.finished = true;
    const stream = await this.z.finish();
    const streamLen = stream.reduce((n, b) => n + b.length, 0);

    // Named refs, sorted by name in byte order (names are UTF-8 text; compare bytes).
    const names = [...this.named.keys()].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    const text = names.map((n) => `${this.named.get(n)}:${n}\0`).join("");
    const namedRefs = new Uint8Array(await zstdCompressFrame(Buffer.from(text, "utf8")));

    const ds = DIGEST_SIZE[this.alg];
    const infoStart = HEADER_SIZE;
    const infoEnd = infoStart + INFO_SIZE;
    const srStart = infoEnd;
    const srEnd = srStart + this.streamRefs.length * ds;
    const orStart = srEnd;
    const orEnd = orStart + this.objectRefs.length * ds;
    const nrStart = orEnd;
    const nrEnd = nrStart + namedRefs.length;
    const stStart = nrEnd;
    const stEnd = stStart + streamLen;

    const header = new Uint8Array(HEADER_SIZE);
    const range = (s: number, e: number) => new Uint8Array(Buffer.concat([u64le(s), u64le(e)]));
    if (this.legacy) {
      header.set(range(infoStart, infoEnd), 0);
      // flags (16..18) = 0
      header.set(Buffer.from(MAGIC, "latin1"), 18);
      header[29] = 0;
      header[30] = ALG_ID[this.alg];
      header[31] = LG_BLOCKSIZE;
    } else {
      header.set(Buffer.from(MAGIC, "latin1"), 0);
      header[11] = 0;
      header[14] = ALG_ID[this.alg];
      header[15] = LG_BLOCKSIZE;
      header.set(range(infoStart, infoEnd), 16);
    }
    const info = new Uint8Array(
      Buffer.concat([
        range(srStart, srEnd),
        range(orStart, orEnd),
        range(stStart, stEnd),
        range(nrStart, nrEnd),
        u64le(this.contentType),
        u64le(this.total),
      ]),
    );
    return [header, info, ...this.streamRefs, ...this.objectRefs, namedRefs, ...stream];
  }
}

/** One-shot zstd of a small buffer as a streaming frame (used for named refs). */
async function zstdCompressFrame(data: Uint8Array): Promise<Uint8Array> {
  const c = new FrameCompressor();
  c.write(data);
  const parts = await c.finish();
  return new Uint8Array(Buffer.concat(parts));
}

/** Build a whole splitstream in memory from a list of chunks (tests, JSON blobs). */
export async function encodeSplitStream(opts: {
  algorithm: VerityAlgorithm;
  contentType: bigint;
  chunks: readonly ({ inline: Uint8Array } | { external: Uint8Array; size: number | bigint })[];
  namedRefs?: ReadonlyMap<string, Uint8Array> | readonly [string, Uint8Array][];
  legacyHeader?: boolean;
}): Promise<Uint8Array> {
  const w = new SplitStreamWriter({ algorithm: opts.algorithm, contentType: opts.contentType, legacyHeader: opts.legacyHeader ?? false });
  for (const [name, id] of opts.namedRefs ?? []) w.addNamedStreamRef(name, id);
  for (const c of opts.chunks) {
    if ("inline" in c) w.writeInline(c.inline);
    else w.writeExternal(c.external, c.size);
  }
  return new Uint8Array(Buffer.concat(await w.finish()));
}

// ---- reader ---------------------------------------------------------------------------

export interface SplitStreamInfo {
  algorithm: VerityAlgorithm;
  /** True when the file uses the legacy (pre-repr(C)) header layout. */
  legacyHeader: boolean;
  contentType: bigint;
  /** Total reassembled size. */
  streamSize: bigint;
  streamRefs: Uint8Array[];
  objectRefs: Uint8Array[];
  /** name → target splitstream/object id. */
  namedRefs: Map<string, Uint8Array>;
  /** The compressed stream section. */
  stream: Uint8Array;
}

export interface ParseOptions {
  /** Name for error messages (the object path). */
  name?: string;
  /** Required algorithm (the repository's). */
  algorithm?: VerityAlgorithm;
  /** Required content type. */
  contentType?: bigint;
  /** Largest decompressed named-refs section accepted (default 16 MiB). */
  maxNamedRefsSize?: number;
}

/** Parse a splitstream file (everything except the stream section, which stays compressed). */
export function parseSplitStream(file: Uint8Array, opts: ParseOptions = {}): SplitStreamInfo {
  const name = opts.name ?? "splitstream";
  const fail = (off: number, what: string): never => {
    throw new CfsError(`${name}: offset ${off}`, what);
  };
  if (file.length < HEADER_SIZE) fail(0, "too short for a splitstream header");
  const dv = new DataView(file.buffer, file.byteOffset, file.byteLength);
  let legacy = false;
  let version: number, algId: number, lg: number, infoOff: number;
  if (bstr(file.subarray(0, 11)) === MAGIC) {
    version = file[11]!;
    algId = file[14]!;
    lg = file[15]!;
    infoOff = 16;
  } else if (bstr(file.subarray(18, 29)) === MAGIC) {
    legacy = true;
    version = file[29]!;
    algId = file[30]!;
    lg = file[31]!;
    infoOff = 0;
  } else {
    return fail(0, "not a splitstream (bad magic)");
  }
  if (version !== 0) fail(legacy ? 29 : 11, `unsupported splitstream version ${version}`);
  const algorithm = algId === 1 ? "sha256" : algId === 2 ? "sha512" : fail(legacy ? 30 : 14, `unknown fs-verity algorithm ${algId}`);
  if (opts.algorithm !== undefined && algorithm !== opts.algorithm) {
    fail(legacy ? 30 : 14, `splitstream uses ${algorithm}, repository uses ${opts.algorithm}`);
  }
  if (lg !== LG_BLOCKSIZE) fail(legacy ? 31 : 15, `unsupported fs-verity block size 2^${lg}`);

  const range = (off: number, what: string): [number, number] => {
    const s = dv.getBigUint64(off, true);
    const e = dv.getBigUint64(off + 8, true);
    if (e < s) fail(off, `negative-sized ${what} range`);
    if (e > BigInt(file.length)) fail(off, `${what} range ${s}..${e} beyond the end of the file (${file.length} bytes)`);
    return [Number(s), Number(e)];
  };
  const [is, ie] = range(infoOff, "info");
  if (ie - is < INFO_SIZE) fail(infoOff, `info section of ${ie - is} bytes is too short`);
  const idv = new DataView(file.buffer, file.byteOffset + is, ie - is);
  const irange = (off: number, what: string) => {
    // Ranges inside info are absolute file offsets.
    const s = idv.getBigUint64(off, true);
    const e = idv.getBigUint64(off + 8, true);
    if (e < s) fail(is + off, `negative-sized ${what} range`);
    if (e > BigInt(file.length)) fail(is + off, `${what} range ${s}..${e} beyond the end of the file (${file.length} bytes)`);
    return [Number(s), Number(e)] as const;
  };
  const sr = irange(0, "stream_refs");
  const or = irange(16, "object_refs");
  const st = irange(32, "stream");
  const nr = irange(48, "named_refs");
  const contentType = idv.getBigUint64(64, true);
  const streamSize = idv.getBigUint64(72, true);
  if (opts.contentType !== undefined && contentType !== opts.contentType) {
    fail(is + 64, `content type ${contentTypeName(contentType)}, expected ${contentTypeName(opts.contentType)}`);
  }
  const ds = DIGEST_SIZE[algorithm];
  const digests = (r: readonly [number, number], what: string): Uint8Array[] => {
    const len = r[1] - r[0];
    if (len % ds !== 0) fail(r[0], `${what} section of ${len} bytes is not a multiple of ${ds}`);
    const out: Uint8Array[] = [];
    for (let o = r[0]; o < r[1]; o += ds) out.push(file.slice(o, o + ds));
    return out;
  };
  const streamRefs = digests(sr, "stream_refs");
  const objectRefs = digests(or, "object_refs");

  const namedRefs = new Map<string, Uint8Array>();
  let text: Buffer;
  try {
    text = zlib.zstdDecompressSync(file.subarray(nr[0], nr[1]), { maxOutputLength: opts.maxNamedRefsSize ?? 16 << 20 });
  } catch (e) {
    return fail(nr[0], `cannot decompress named references: ${(e as Error).message}`);
  }
  let p = 0;
  while (p < text.length) {
    const z = text.indexOf(0, p);
    if (z < 0) fail(nr[0], "trailing junk in named references section");
    const rec = text.subarray(p, z).toString("utf8");
    const colon = rec.indexOf(":");
    if (colon < 0) fail(nr[0], `named reference without a colon: ${JSON.stringify(rec.slice(0, 80))}`);
    const idxStr = rec.slice(0, colon);
    if (!/^[0-9]+$/.test(idxStr)) fail(nr[0], `named reference with a non-integer index: ${JSON.stringify(rec.slice(0, 80))}`);
    const target = streamRefs[Number(idxStr)];
    if (target === undefined) fail(nr[0], `named reference index ${idxStr} out of range (${streamRefs.length} stream refs)`);
    namedRefs.set(rec.slice(colon + 1), target!);
    p = z + 1;
  }

  return {
    algorithm,
    legacyHeader: legacy,
    contentType,
    streamSize,
    streamRefs,
    objectRefs,
    namedRefs,
    stream: file.subarray(st[0], st[1]),
  };
}

/**
 * A chunk of the stream. A long inline chunk may arrive as several pieces;
 * `first` marks the piece that starts a chunk.
 */
export type SplitChunk = { kind: "inline"; bytes: Uint8Array; first: boolean } | { kind: "external"; index: number; id: Uint8Array };

/** Parses decompressed stream bytes into chunks, incrementally. */
export class ChunkDecoder {
  private buf: Uint8Array = new Uint8Array(0);
  private inlineLeft = 0n;
  private first = false;
  private readonly refs: Uint8Array[];
  private readonly name: string;
  /** Stream offset of the first byte of `buf`. */
  private base = 0;

  constructor(objectRefs: Uint8Array[], name = "splitstream") {
    this.refs = objectRefs;
    this.name = name;
  }

  push(bytes: Uint8Array): SplitChunk[] {
    const out: SplitChunk[] = [];
    const data = this.buf.length > 0 ? new Uint8Array(Buffer.concat([this.buf, bytes])) : bytes;
    let p = 0;
    while (p < data.length) {
      if (this.inlineLeft > 0n) {
        const take = Number(this.inlineLeft < BigInt(data.length - p) ? this.inlineLeft : BigInt(data.length - p));
        out.push({ kind: "inline", bytes: data.subarray(p, p + take), first: this.first });
        this.first = false;
        p += take;
        this.inlineLeft -= BigInt(take);
        continue;
      }
      if (data.length - p < 8) break;
      const v = new DataView(data.buffer, data.byteOffset + p, 8).getBigInt64(0, true);
      const at = this.base + p;
      p += 8;
      if (v < 0n) {
        this.inlineLeft = -v;
        this.first = true;
      } else {
        const id = v < BigInt(this.refs.length) ? this.refs[Number(v)] : undefined;
        if (id === undefined) {
          throw new CfsError(`${this.name}: stream byte ${at}`, `external reference ${v} out of range (${this.refs.length} object refs)`);
        }
        out.push({ kind: "external", index: Number(v), id });
      }
    }
    this.base += p;
    this.buf = data.slice(p);
    return out;
  }

  /** Call at the end of the stream: throws if it stopped inside a chunk. */
  end(): void {
    if (this.inlineLeft > 0n) throw new CfsError(this.name, `stream ends inside an inline chunk (${this.inlineLeft} bytes missing)`);
    if (this.buf.length > 0) throw new CfsError(this.name, "stream ends inside a chunk header");
  }
}

/** Decompress the stream section incrementally and yield its chunks (constant memory). */
export async function* readChunks(info: SplitStreamInfo, name = "splitstream"): AsyncGenerator<SplitChunk> {
  const dec = new ChunkDecoder(info.objectRefs, name);
  const c = new SyncCodec("zstd-decompress");
  const input = info.stream;
  // Fed in slices so the decompressor never holds the whole output; each
  // output piece is copied (the codec reuses its buffer, chunks are views).
  const step = 1 << 16;
  try {
    for (let o = 0; o <= input.length; o += step) {
      const end = o + step >= input.length;
      let pieces: Uint8Array[];
      try {
        pieces = c.all(input.subarray(o, Math.min(input.length, o + step)), end);
      } catch (e) {
        throw new CfsError(name, `cannot decompress stream: ${(e as Error).message}`);
      }
      for (const piece of pieces) for (const ch of dec.push(piece)) yield ch;
      if (end) break;
    }
  } finally {
    c.close();
  }
  dec.end();
}

/** All chunks, each inline chunk in one piece (small streams: JSON, tests). */
export async function collectChunks(info: SplitStreamInfo, name = "splitstream"): Promise<SplitChunk[]> {
  const out: SplitChunk[] = [];
  let pending: Uint8Array[] = [];
  const flush = () => {
    if (pending.length > 0) out.push({ kind: "inline", bytes: new Uint8Array(Buffer.concat(pending)), first: true });
    pending = [];
  };
  for await (const c of readChunks(info, name)) {
    if (c.kind === "inline") {
      if (c.first) flush();
      pending.push(c.bytes);
    } else {
      flush();
      out.push(c);
    }
  }
  flush();
  return out;
}

/**
 * Reassemble the stream: inline bytes as they are, external chunks through
 * `loadObject(id)` (which may return an async iterable of pieces). Checks the
 * total against the info's stream size.
 */
export async function* reassemble(
  info: SplitStreamInfo,
  loadObject: (id: Uint8Array, index: number) => Promise<Uint8Array | AsyncIterable<Uint8Array>> | Uint8Array | AsyncIterable<Uint8Array>,
  name = "splitstream",
): AsyncGenerator<Uint8Array> {
  let total = 0n;
  for await (const c of readChunks(info, name)) {
    if (c.kind === "inline") {
      total += BigInt(c.bytes.length);
      yield c.bytes;
    } else {
      const obj = await loadObject(c.id, c.index);
      if (obj instanceof Uint8Array) {
        total += BigInt(obj.length);
        yield obj;
      } else {
        for await (const piece of obj) {
          total += BigInt(piece.length);
          yield piece;
        }
      }
    }
  }
  if (total !== info.streamSize) {
    throw new CfsError(name, `reassembled ${total} bytes, the header says ${info.streamSize}`);
  }
}

/**
 * repository.md §7.4: JSON blobs (manifests, configs, artifact blobs) are
 * stored as exactly one external chunk. Returns that object id.
 */
export async function externalBlobRef(info: SplitStreamInfo, name = "splitstream"): Promise<Uint8Array> {
  const chunks = await collectChunks(info, name);
  const only = chunks[0];
  if (chunks.length !== 1 || only === undefined || only.kind !== "external") {
    throw new CfsError(name, "expected a splitstream holding exactly one external object");
  }
  return only.id;
}
