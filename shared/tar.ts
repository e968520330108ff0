// Streaming tar reader (and a small writer) for OCI layers.
//
// OCI layers are tar archives. cfsboot needs two things from them at once:
// the entries (path, type, stat, xattrs, link targets, devices) to build the
// filesystem tree, and the exact bytes of every region of the archive, because
// a composefs splitstream keeps tar headers inline and file payloads > 64
// bytes as object references, and concatenating the stream must reproduce the
// layer byte for byte (sha256 of it = diff_id; repository.md §7.3).
//
// So the reader is an event stream in which every input byte appears exactly
// once, in order:
//
//   entry    all header bytes of one entry (PAX/GNU extension headers with
//            their data and padding, then the main 512-byte header) + the
//            parsed entry
//   data     a piece of the entry's payload (for files: the file content)
//   padding  the zero fill after the payload up to the next 512-byte boundary
//   global   a PAX global header ('g') with its data; its records are ignored,
//            as composefs-rs does (oci.md §3.1)
//   end      the end-of-archive zero blocks and everything after them (GNU tar
//            pads to a 10 KiB record); may come in several pieces
//
// Parsing rules follow composefs-rs (crates/composefs-oci/src/tar.rs on top of
// the tar-core crate) wherever they influence the tree, so images get the same
// digests; where upstream silently accepts nonsense (stray zero blocks,
// negative numbers, uid ≥ 2^32 truncated, '..' components) this reader fails
// with a CfsError naming the archive offset.
//
// Why not node-tar's Header/Pax classes: they decode
// names, link targets and PAX values as UTF-8 strings, which is lossy for
// non-UTF-8 file names and destroys binary SCHILY.xattr values; they also do
// not report byte ranges. Both are essential here, so the codecs are written
// out below (about the size of the glue node-tar would have needed).
//
// The API is sans-IO and constant-memory: `push()` chunks in, `next()` events
// out (null = feed more input), `end()` at EOF. Payload bytes are handed out
// as views of the pushed chunks without copying; only headers and extension
// data (bounded by `maxMetadataSize`) are buffered.

import { bstr, type BStr } from "./bytes.ts";
import { CfsError } from "./errors.ts";

export const BLOCK = 512;

export type TarEntryType = "regular" | "hardlink" | "symlink" | "chr" | "blk" | "dir" | "fifo";

export interface TarEntry {
  /** Archive offset of the first header byte of this entry (its first extension header, if any). */
  offset: number;
  /** Bytes of headers for this entry: extension headers + their data + the main header. */
  headerSize: number;
  /** The raw type flag character ("0", "\0", "5", …). */
  typeflag: string;
  type: TarEntryType;
  /** Normalised absolute path ("/usr/bin/sh"; "/" for the root). */
  path: BStr;
  /** The path as the archive spells it (after GNU long name / PAX path). */
  rawPath: BStr;
  /** Raw link target (symlink target bytes, hardlink target as stored); "" if none. */
  linkName: BStr;
  /** Hardlinks: the normalised absolute target path; null otherwise. */
  linkPath: BStr | null;
  /** Payload size in bytes (PAX `size` overrides the header). */
  size: number;
  /** Permission bits (0..0o7777); type bits in the mode field are dropped. */
  mode: number;
  uid: number;
  gid: number;
  mtimeSec: number;
  /** From the fraction of a PAX `mtime` (right-padded / truncated to 9 digits), else 0. */
  mtimeNsec: number;
  /** SCHILY.xattr.* (and LIBARCHIVE.xattr.*) records: name → raw value. */
  xattrs: Map<BStr, Uint8Array>;
  devMajor: number;
  devMinor: number;
  /** glibc makedev(devMajor, devMinor) for chr/blk entries, 0 otherwise. */
  rdev: number;
  /** User and group names (informational; composefs ignores them). */
  uname: BStr;
  gname: BStr;
}

export type TarEvent =
  | { kind: "entry"; offset: number; bytes: Uint8Array; entry: TarEntry }
  | { kind: "data"; offset: number; bytes: Uint8Array }
  | { kind: "padding"; offset: number; bytes: Uint8Array }
  | { kind: "global"; offset: number; bytes: Uint8Array }
  | { kind: "end"; offset: number; bytes: Uint8Array };

export interface TarReaderOptions {
  /** Name used in error messages (e.g. the layer digest). */
  name?: string;
  /** Largest accepted payload size; default Number.MAX_SAFE_INTEGER. */
  maxEntrySize?: number;
  /** Aggregate PAX/GNU extension data for one entry; default 1 MiB (as tar-core). */
  maxMetadataSize?: number;
  /** Extension headers in a row before an entry; default 16 (as tar-core). */
  maxPendingHeaders?: number;
  /** Accept LIBARCHIVE.xattr.* records (SCHILY.xattr.* wins for the same name). Default true. */
  libarchiveXattrs?: boolean;
}

// ---- numeric fields ------------------------------------------------------------------

function isTarSpace(b: number): boolean {
  return b === 0x20 || (b >= 0x09 && b <= 0x0d);
}

/**
 * Octal (optionally space/NUL padded) or GNU base-256 numeric field. Returns a
 * bigint; negative base-256 values and garbage throw (the message names `field`).
 */
export function parseNumeric(bytes: Uint8Array, field: string): bigint {
  if (bytes.length === 0) return 0n;
  const first = bytes[0]!;
  if (first & 0x80) {
    if (first & 0x40) throw new Error(`negative value in ${field} field`);
    let v = BigInt(first & 0x3f);
    for (let i = 1; i < bytes.length; i++) v = (v << 8n) | BigInt(bytes[i]!);
    return v;
  }
  let end = bytes.indexOf(0);
  if (end < 0) end = bytes.length;
  let s = 0;
  while (s < end && isTarSpace(bytes[s]!)) s++;
  let e = end;
  while (e > s && isTarSpace(bytes[e - 1]!)) e--;
  // Octal fields are at most 12 bytes: 8^12 = 2^36 fits a double exactly.
  let v = 0;
  for (let i = s; i < e; i++) {
    const c = bytes[i]!;
    if (c < 0x30 || c > 0x37) throw new Error(`invalid octal number in ${field} field`);
    v = v * 8 + (c - 0x30);
  }
  return BigInt(v);
}

function cstr(bytes: Uint8Array): Uint8Array {
  const z = bytes.indexOf(0);
  return z < 0 ? bytes : bytes.subarray(0, z);
}

/** glibc makedev() as a JS number (exact below 2^53). */
export function makedev(major: number, minor: number): number {
  const M = BigInt(major);
  const m = BigInt(minor);
  const dev = ((M & 0xfffff000n) << 32n) | ((M & 0xfffn) << 8n) | ((m & 0xffffff00n) << 12n) | (m & 0xffn);
  return Number(dev);
}

/** Inverse of makedev(). */
export function splitDev(rdev: number): { major: number; minor: number } {
  const d = BigInt(rdev);
  const major = Number(((d >> 32n) & 0xfffff000n) | ((d >> 8n) & 0xfffn));
  const minor = Number(((d >> 12n) & 0xffffff00n) | (d & 0xffn));
  return { major, minor };
}

// ---- paths ---------------------------------------------------------------------------

/**
 * oci.md §3.1: strip one leading "/", make absolute, drop trailing "/" and "."
 * components (and empty ones); ".." is refused. Returns null for "..".
 */
export function normalizeTarPath(raw: BStr): BStr | null {
  const parts: string[] = [];
  for (const c of raw.split("/")) {
    if (c === "" || c === ".") continue;
    if (c === "..") return null;
    parts.push(c);
  }
  return "/" + parts.join("/");
}

// ---- PAX records ------------------------------------------------------------------------

export interface PaxRecord {
  key: BStr;
  value: Uint8Array;
}

/** Parse the data of a PAX 'x'/'g' header. Throws Error(message) on malformed records. */
export function parsePaxRecords(data: Uint8Array): PaxRecord[] {
  const out: PaxRecord[] = [];
  let pos = 0;
  while (pos < data.length) {
    // Some writers NUL-pad the extended header data; tolerate trailing NULs only.
    if (data[pos] === 0) {
      for (let i = pos; i < data.length; i++) {
        if (data[i] !== 0) throw new Error(`malformed PAX record at byte ${pos}`);
      }
      break;
    }
    let i = pos;
    let len = 0;
    while (i < data.length && data[i]! >= 0x30 && data[i]! <= 0x39 && i - pos < 12) {
      len = len * 10 + (data[i]! - 0x30);
      i++;
    }
    if (i === pos || i >= data.length || data[i] !== 0x20) throw new Error(`malformed PAX record at byte ${pos}`);
    const recEnd = pos + len;
    if (len <= i - pos + 1 || recEnd > data.length || data[recEnd - 1] !== 0x0a) {
      throw new Error(`malformed PAX record at byte ${pos}`);
    }
    const kv = data.subarray(i + 1, recEnd - 1);
    const eq = kv.indexOf(0x3d);
    if (eq <= 0) throw new Error(`malformed PAX record at byte ${pos}`);
    out.push({ key: bstr(kv.subarray(0, eq)), value: kv.subarray(eq + 1) });
    pos = recEnd;
  }
  return out;
}

const DECIMAL = /^[0-9]{1,20}$/;

function paxDecimal(key: string, value: Uint8Array): bigint {
  const s = bstr(value);
  if (!DECIMAL.test(s)) throw new Error(`invalid PAX ${key} value "${s.slice(0, 40)}"`);
  return BigInt(s);
}

/** PAX mtime "SEC[.FRAC]" → [sec, nsec]. Negative times are refused (as composefs-rs does). */
export function parsePaxMtime(value: Uint8Array): [bigint, number] {
  const s = bstr(value);
  const m = /^([0-9]{1,20})(?:\.([0-9]*))?$/.exec(s);
  if (m === null) throw new Error(`invalid PAX mtime value "${s.slice(0, 40)}"`);
  const frac = (m[2] ?? "").slice(0, 9).padEnd(9, "0");
  return [BigInt(m[1]!), Number(frac)];
}

function decodePercent(s: string): string | null {
  // LIBARCHIVE.xattr names are URL-encoded (RFC 3986 %XX); result is a byte string.
  let out = "";
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c !== "%") {
      out += c;
      continue;
    }
    const h = s.slice(i + 1, i + 3);
    if (!/^[0-9a-fA-F]{2}$/.test(h)) return null;
    out += String.fromCharCode(parseInt(h, 16));
    i += 2;
  }
  return out;
}

function decodeBase64(value: Uint8Array): Uint8Array | null {
  const s = bstr(value);
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s)) return null;
  return new Uint8Array(Buffer.from(s, "base64"));
}

// ---- header block ----------------------------------------------------------------------

const USTAR_MAGIC = "ustar\x0000";
const GNU_MAGIC = "ustar  \x00";

function headerChecksumOk(h: Uint8Array): boolean {
  let expected: bigint;
  try {
    expected = parseNumeric(h.subarray(148, 156), "checksum");
  } catch {
    return false;
  }
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : h[i]!;
    unsigned += b;
    signed += b >= 0x80 ? b - 256 : b;
  }
  return expected === BigInt(unsigned) || expected === BigInt(signed);
}

function isZeroBlock(h: Uint8Array): boolean {
  for (let i = 0; i < h.length; i++) if (h[i] !== 0) return false;
  return true;
}

// ---- byte queue -------------------------------------------------------------------------

class ByteQueue {
  private chunks: Uint8Array[] = [];
  private head = 0; // offset into chunks[0]
  length = 0;

  push(c: Uint8Array): void {
    if (c.length === 0) return;
    this.chunks.push(c);
    this.length += c.length;
  }

  /** A contiguous copy (or view) of the first n bytes, without consuming them. */
  peek(n: number): Uint8Array {
    const first = this.chunks[0]!;
    if (first.length - this.head >= n) return first.subarray(this.head, this.head + n);
    const out = new Uint8Array(n);
    let filled = 0;
    let idx = 0;
    let off = this.head;
    while (filled < n) {
      const c = this.chunks[idx]!;
      const take = Math.min(n - filled, c.length - off);
      out.set(c.subarray(off, off + take), filled);
      filled += take;
      idx++;
      off = 0;
    }
    return out;
  }

  /** Replace the queued chunks by one copy of the unconsumed bytes (the caller may then reuse its buffers). */
  own(): void {
    if (this.length === 0) {
      this.chunks = [];
      this.head = 0;
      return;
    }
    const first = this.chunks[0]!;
    // peek() returns a view when the first chunk holds everything: slice that one.
    const copy = first.length - this.head >= this.length ? first.slice(this.head, this.head + this.length) : this.peek(this.length);
    this.chunks = [copy];
    this.head = 0;
  }

  /** Consume up to n bytes from the first chunk only (zero-copy view). */
  takeSome(n: number): Uint8Array {
    const first = this.chunks[0]!;
    const take = Math.min(n, first.length - this.head);
    const out = first.subarray(this.head, this.head + take);
    this.skip(take);
    return out;
  }

  /** Consume exactly n bytes as one array. */
  take(n: number): Uint8Array {
    const out = this.peek(n);
    this.skip(n);
    return out;
  }

  skip(n: number): void {
    this.length -= n;
    while (n > 0) {
      const first = this.chunks[0]!;
      const avail = first.length - this.head;
      if (n < avail) {
        this.head += n;
        return;
      }
      n -= avail;
      this.chunks.shift();
      this.head = 0;
    }
  }
}

// ---- the reader ---------------------------------------------------------------------------

interface Pending {
  start: number;
  parts: Uint8Array[];
  count: number;
  metaSize: number;
  longName: Uint8Array | null;
  longLink: Uint8Array | null;
  pax: PaxRecord[] | null;
}

type State = "header" | "data" | "padding" | "end" | "done";

export class TarReader {
  private q = new ByteQueue();
  private pos = 0; // archive offset of the first queued byte
  private state: State = "header";
  private remaining = 0; // data or padding bytes left in the current region
  private padAfter = 0;
  private ended = false;
  private pending: Pending | null = null;
  private discardRemaining = false;
  private readonly name: string;
  private readonly maxEntrySize: number;
  private readonly maxMeta: number;
  private readonly maxPending: number;
  private readonly libarchive: boolean;

  constructor(opts: TarReaderOptions = {}) {
    this.name = opts.name ?? "tar archive";
    this.maxEntrySize = opts.maxEntrySize ?? Number.MAX_SAFE_INTEGER;
    this.maxMeta = opts.maxMetadataSize ?? 1 << 20;
    this.maxPending = opts.maxPendingHeaders ?? 16;
    this.libarchive = opts.libarchiveXattrs ?? true;
  }

  /** Feed more archive bytes. The reader keeps views of `chunk`: do not modify it afterwards. */
  push(chunk: Uint8Array): void {
    if (this.ended) throw new Error("TarReader.push() after end()");
    this.q.push(chunk);
  }

  /**
   * Copy the bytes pushed but not consumed yet (at most a partial header or
   * extension data), so the caller may overwrite the chunks it pushed.
   * Events already returned by next() are views of those chunks: consume
   * them first.
   */
  copyPending(): void {
    this.q.own();
    // Extension headers already consumed (a PAX 'x' header whose entry header
    // is in the next chunk) are kept as views too: their bytes, records and
    // GNU long names.
    const p = this.pending;
    if (p !== null) {
      p.parts = p.parts.map((b) => b.slice());
      if (p.pax !== null) p.pax = p.pax.map((r) => ({ key: r.key, value: r.value.slice() }));
      if (p.longName !== null) p.longName = p.longName.slice();
      if (p.longLink !== null) p.longLink = p.longLink.slice();
    }
  }

  /** No more input. */
  end(): void {
    this.ended = true;
  }

  /** Archive offset of the next byte the reader will consume. */
  get offset(): number {
    return this.pos;
  }

  /** True once the whole archive (including the trailer) was consumed. */
  get done(): boolean {
    return this.state === "done";
  }

  /**
   * Drop the rest of the current entry's payload and padding without events.
   * Returns how many of those bytes have not been pushed yet; a caller reading
   * from a seekable file may jump over them and call `skipped(n)` instead of
   * pushing them (used to index oci-archive files without reading blobs).
   */
  discardPayload(): number {
    if (this.state !== "data" && this.state !== "padding") return 0;
    const total = (this.state === "data" ? this.remaining + this.padAfter : this.remaining);
    const now = Math.min(total, this.q.length);
    this.q.skip(now);
    this.pos += now;
    const left = total - now;
    if (left === 0) {
      this.state = "header";
      this.remaining = 0;
      this.padAfter = 0;
    } else {
      this.discardRemaining = true;
      this.state = "padding";
      this.remaining = left;
      this.padAfter = 0;
    }
    return left;
  }

  /** The caller skipped `n` input bytes instead of pushing them (see discardPayload). */
  skipped(n: number): void {
    if (!this.discardRemaining || n > this.remaining || this.q.length !== 0) {
      throw new Error("TarReader.skipped() without a matching discardPayload()");
    }
    this.pos += n;
    this.remaining -= n;
    if (this.remaining === 0) {
      this.discardRemaining = false;
      this.state = "header";
    }
  }

  private fail(at: number, what: string): never {
    throw new CfsError(`${this.name}: offset ${at}`, what);
  }

  /** The next event, or null when more input is needed (or the archive is finished). */
  next(): TarEvent | null {
    for (;;) {
      switch (this.state) {
        case "done":
          return null;
        case "end": {
          if (this.q.length > 0) {
            const at = this.pos;
            const bytes = this.q.takeSome(this.q.length);
            this.pos += bytes.length;
            return { kind: "end", offset: at, bytes };
          }
          if (this.ended) this.state = "done";
          return null;
        }
        case "data": {
          if (this.remaining === 0) {
            this.state = "padding";
            this.remaining = this.padAfter;
            this.padAfter = 0;
            continue;
          }
          if (this.q.length === 0) {
            if (this.ended) this.fail(this.pos, "truncated archive (end of input inside file data)");
            return null;
          }
          const at = this.pos;
          const bytes = this.q.takeSome(this.remaining);
          this.pos += bytes.length;
          this.remaining -= bytes.length;
          return { kind: "data", offset: at, bytes };
        }
        case "padding": {
          if (this.remaining === 0) {
            this.state = "header";
            this.discardRemaining = false;
            continue;
          }
          if (this.q.length === 0) {
            if (this.ended) this.fail(this.pos, "truncated archive (end of input inside padding)");
            return null;
          }
          const at = this.pos;
          const bytes = this.q.takeSome(this.remaining);
          this.pos += bytes.length;
          this.remaining -= bytes.length;
          if (this.discardRemaining) continue;
          return { kind: "padding", offset: at, bytes };
        }
        case "header": {
          const ev = this.readHeader();
          if (ev === "wait") return null;
          if (ev === "again") continue;
          return ev;
        }
      }
    }
  }

  private readHeader(): TarEvent | "wait" | "again" {
    const q = this.q;
    if (q.length < BLOCK) {
      if (!this.ended) return "wait";
      if (q.length === 0 && this.pending === null) {
        // Clean EOF at a header boundary without end-of-archive blocks: accepted, as upstream.
        this.state = "done";
        return "wait";
      }
      this.fail(this.pos, "truncated archive (end of input inside a header)");
    }
    const h = q.peek(BLOCK);
    if (isZeroBlock(h)) {
      if (q.length < 2 * BLOCK) {
        if (!this.ended) return "wait";
        this.fail(this.pos + BLOCK, "truncated archive (a single zero block at the end)");
      }
      if (!isZeroBlock(q.peek(2 * BLOCK).subarray(BLOCK))) {
        this.fail(this.pos, "stray zero block inside the archive");
      }
      if (this.pending !== null) this.fail(this.pos, "extension headers without a following entry");
      this.state = "end";
      return "again";
    }
    if (!headerChecksumOk(h)) this.fail(this.pos, "bad tar header checksum");
    const magic = bstr(h.subarray(257, 265));
    const isUstar = magic === USTAR_MAGIC;
    const isGnu = magic === GNU_MAGIC;
    const ext = isUstar || isGnu;
    const typeflag = String.fromCharCode(h[156]!);
    let size: number;
    try {
      const big = parseNumeric(h.subarray(124, 136), "size");
      if (big > BigInt(this.maxEntrySize)) this.fail(this.pos, `entry size ${big} exceeds the limit of ${this.maxEntrySize} bytes`);
      size = Number(big);
    } catch (e) {
      if (e instanceof CfsError) throw e;
      this.fail(this.pos, (e as Error).message);
    }
    const padded = Math.ceil(size / BLOCK) * BLOCK;

    const isExtension = typeflag === "g" || (ext && (typeflag === "x" || typeflag === "L" || typeflag === "K"));
    if (isExtension) {
      if (typeflag === "g" && this.pending !== null) {
        this.fail(this.pos, "PAX global header between an entry's extension headers");
      }
      const pending = this.pending;
      const metaSize = (pending?.metaSize ?? 0) + size;
      if (metaSize > this.maxMeta) this.fail(this.pos, `extended header data of ${metaSize} bytes exceeds the limit of ${this.maxMeta} bytes`);
      if ((pending?.count ?? 0) + 1 > this.maxPending) this.fail(this.pos, "too many extension headers in a row");
      const total = BLOCK + padded;
      if (q.length < total) {
        if (!this.ended) return "wait";
        this.fail(this.pos, "truncated archive (end of input inside an extended header)");
      }
      const at = this.pos;
      const bytes = q.take(total);
      this.pos += total;
      const data = bytes.subarray(BLOCK, BLOCK + size);
      if (typeflag === "g") {
        try {
          parsePaxRecords(data);
        } catch (e) {
          this.fail(at, (e as Error).message);
        }
        return { kind: "global", offset: at, bytes };
      }
      const p: Pending = pending ?? { start: at, parts: [], count: 0, metaSize: 0, longName: null, longLink: null, pax: null };
      p.parts.push(bytes);
      p.count++;
      p.metaSize = metaSize;
      if (typeflag === "x") {
        if (p.pax !== null) this.fail(at, "duplicate PAX extended header");
        try {
          p.pax = parsePaxRecords(data);
        } catch (e) {
          this.fail(at, (e as Error).message);
        }
      } else {
        let v = data;
        if (v.length > 0 && v[v.length - 1] === 0) v = v.subarray(0, v.length - 1);
        if (typeflag === "L") {
          if (p.longName !== null) this.fail(at, "duplicate GNU long name header");
          p.longName = cstr(v);
        } else {
          if (p.longLink !== null) this.fail(at, "duplicate GNU long link header");
          p.longLink = cstr(v);
        }
      }
      this.pending = p;
      return "again";
    }

    // An actual entry.
    const pending = this.pending;
    this.pending = null;
    const start = pending?.start ?? this.pos;
    const headerAt = this.pos;
    const block = q.take(BLOCK);
    this.pos += BLOCK;
    const entry = this.buildEntry(block, typeflag, isUstar, ext, size, pending, start, headerAt);
    const parts = pending?.parts ?? [];
    parts.push(block);
    const bytes = parts.length === 1 ? parts[0]! : new Uint8Array(Buffer.concat(parts));
    entry.headerSize = bytes.length;
    this.state = "data";
    this.remaining = entry.size;
    this.padAfter = Math.ceil(entry.size / BLOCK) * BLOCK - entry.size;
    return { kind: "entry", offset: start, bytes, entry };
  }

  private buildEntry(
    h: Uint8Array,
    typeflag: string,
    isUstar: boolean,
    ext: boolean,
    headerSize: number,
    pending: Pending | null,
    start: number,
    at: number,
  ): TarEntry {
    const num = (off: number, len: number, field: string): bigint => {
      try {
        return parseNumeric(h.subarray(off, off + len), field);
      } catch (e) {
        this.fail(at, (e as Error).message);
      }
    };
    let name = cstr(h.subarray(0, 100));
    let rawPath = bstr(name);
    if (isUstar) {
      const prefix = cstr(h.subarray(345, 500));
      if (prefix.length > 0) rawPath = bstr(prefix) + "/" + rawPath;
    }
    if (pending?.longName) rawPath = bstr(pending.longName);
    let linkName = pending?.longLink ? bstr(pending.longLink) : bstr(cstr(h.subarray(157, 257)));
    let uid = num(108, 8, "uid");
    let gid = num(116, 8, "gid");
    let mtime = num(136, 12, "mtime");
    let nsec = 0;
    let size = BigInt(headerSize);
    const mode = Number(num(100, 8, "mode") & 0o7777n);
    let uname = ext ? bstr(cstr(h.subarray(265, 297))) : "";
    let gname = ext ? bstr(cstr(h.subarray(297, 329))) : "";
    const xattrs = new Map<BStr, Uint8Array>();
    const libXattrs = new Map<BStr, Uint8Array>();

    for (const rec of pending?.pax ?? []) {
      const key = rec.key;
      try {
        switch (key) {
          case "path":
            rawPath = bstr(rec.value);
            break;
          case "linkpath":
            linkName = bstr(rec.value);
            break;
          case "size":
            size = paxDecimal(key, rec.value);
            break;
          case "uid":
            uid = paxDecimal(key, rec.value);
            break;
          case "gid":
            gid = paxDecimal(key, rec.value);
            break;
          case "mtime":
            [mtime, nsec] = parsePaxMtime(rec.value);
            break;
          case "uname":
            uname = bstr(rec.value);
            break;
          case "gname":
            gname = bstr(rec.value);
            break;
          default:
            if (key.startsWith("GNU.sparse.")) this.fail(start, "sparse tar entries are not supported");
            if (key.startsWith("SCHILY.xattr.")) {
              const xname = key.slice("SCHILY.xattr.".length);
              if (xname === "") this.fail(start, "PAX xattr record without a name");
              xattrs.set(xname, new Uint8Array(rec.value));
            } else if (this.libarchive && key.startsWith("LIBARCHIVE.xattr.")) {
              const xname = decodePercent(key.slice("LIBARCHIVE.xattr.".length));
              const value = decodeBase64(rec.value);
              if (xname === null || xname === "" || value === null) this.fail(start, `malformed PAX record ${key.slice(0, 60)}`);
              libXattrs.set(xname, value);
            }
        }
      } catch (e) {
        if (e instanceof CfsError) throw e;
        this.fail(start, (e as Error).message);
      }
    }
    for (const [k, v] of libXattrs) if (!xattrs.has(k)) xattrs.set(k, v);

    if (typeflag === "S") this.fail(start, "sparse tar entries are not supported");
    let type: TarEntryType;
    switch (typeflag) {
      case "0":
      case "\0":
      case "7":
        type = "regular";
        break;
      case "1":
        type = "hardlink";
        break;
      case "2":
        type = "symlink";
        break;
      case "3":
        type = "chr";
        break;
      case "4":
        type = "blk";
        break;
      case "5":
        type = "dir";
        break;
      case "6":
        type = "fifo";
        break;
      default: {
        const shown = /^[\x21-\x7e]$/.test(typeflag) ? `'${typeflag}'` : `0x${typeflag.charCodeAt(0).toString(16)}`;
        this.fail(start, `unsupported tar entry type ${shown}`);
      }
    }

    if (size > BigInt(this.maxEntrySize)) this.fail(start, `entry size ${size} exceeds the limit of ${this.maxEntrySize} bytes`);
    if (type !== "regular" && size !== 0n) this.fail(start, `non-zero size ${size} for a ${type} entry`);
    if (uid > 0xffffffffn) this.fail(start, `uid ${uid} out of range`);
    if (gid > 0xffffffffn) this.fail(start, `gid ${gid} out of range`);
    if (mtime > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(start, `mtime ${mtime} out of range`);

    if (rawPath === "") this.fail(start, "entry with an empty path");
    if (rawPath.includes("\0")) this.fail(start, "entry path contains a NUL byte");
    const path = normalizeTarPath(rawPath);
    if (path === null) this.fail(start, `path with a '..' component: ${JSON.stringify(rawPath).slice(0, 200)}`);

    let linkPath: BStr | null = null;
    if (type === "hardlink" || type === "symlink") {
      if (linkName === "") this.fail(start, `${type} without a target`);
      if (linkName.includes("\0")) this.fail(start, "link target contains a NUL byte");
    }
    if (type === "hardlink") {
      linkPath = normalizeTarPath(linkName);
      if (linkPath === null) this.fail(start, `hardlink target with a '..' component: ${JSON.stringify(linkName).slice(0, 200)}`);
      if (linkPath === "/") this.fail(start, "hardlink to the root directory");
    }

    let devMajor = 0;
    let devMinor = 0;
    let rdev = 0;
    if (type === "chr" || type === "blk") {
      if (!ext) this.fail(start, "device entry without device numbers (pre-POSIX header)");
      const M = num(329, 8, "devmajor");
      const m = num(337, 8, "devminor");
      if (M > 0xffffffffn || m > 0xffffffffn) this.fail(start, `device number ${M}:${m} out of range`);
      devMajor = Number(M);
      devMinor = Number(m);
      rdev = makedev(devMajor, devMinor);
    }

    return {
      offset: start,
      headerSize: 0,
      typeflag,
      type,
      path,
      rawPath,
      linkName,
      linkPath,
      size: Number(size),
      mode,
      uid: Number(uid),
      gid: Number(gid),
      mtimeSec: Number(mtime),
      mtimeNsec: nsec,
      xattrs,
      devMajor,
      devMinor,
      rdev,
      uname,
      gname,
    };
  }
}

/** Convenience: run a TarReader over an async source of chunks. */
export async function* readTar(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  opts: TarReaderOptions = {},
): AsyncGenerator<TarEvent> {
  const r = new TarReader(opts);
  for await (const chunk of source) {
    r.push(chunk);
    for (let ev = r.next(); ev !== null; ev = r.next()) yield ev;
  }
  r.end();
  for (let ev = r.next(); ev !== null; ev = r.next()) yield ev;
}

// ---- writer ---------------------------------------------------------------------------------
//
// A small tar writer, used to build test images and archives. It writes
// POSIX pax (default), GNU or plain ustar headers. The output is ordinary tar
// accepted by GNU tar, umoci and Go's archive/tar.

export interface TarWriteEntry {
  /** Path inside the archive, e.g. "usr/bin/sh" or "usr/" (written as given). */
  path: BStr;
  type: TarEntryType;
  mode?: number;
  uid?: number;
  gid?: number;
  mtimeSec?: number;
  /** Written as a PAX mtime fraction when non-zero (pax format only). */
  mtimeNsec?: number;
  /** Regular files: the content. */
  data?: Uint8Array;
  /** Symlink target / hardlink target (as stored). */
  linkName?: BStr;
  devMajor?: number;
  devMinor?: number;
  /** Written as SCHILY.xattr.* PAX records (pax format only). */
  xattrs?: Map<BStr, Uint8Array>;
  uname?: BStr;
  gname?: BStr;
  /** Extra raw PAX records (pax format only), e.g. to write hostile archives in tests. */
  extraPax?: PaxRecord[];
}

export type TarFormat = "pax" | "gnu" | "ustar";

const TYPEFLAG: Record<TarEntryType, string> = {
  regular: "0",
  hardlink: "1",
  symlink: "2",
  chr: "3",
  blk: "4",
  dir: "5",
  fifo: "6",
};

function putStr(h: Uint8Array, off: number, len: number, s: BStr): boolean {
  if (s.length > len) return false;
  for (let i = 0; i < s.length; i++) h[off + i] = s.charCodeAt(i) & 0xff;
  return true;
}

/** Octal with NUL terminator if it fits in len-1 digits; base-256 when allowed; else false. */
function putNum(h: Uint8Array, off: number, len: number, v: bigint, base256: boolean): boolean {
  const oct = v.toString(8);
  if (oct.length <= len - 1) {
    putStr(h, off, len, oct.padStart(len - 1, "0") + "\0");
    return true;
  }
  if (!base256 || v >= 1n << BigInt((len - 1) * 8)) return false;
  h.fill(0, off, off + len);
  h[off] = 0x80;
  for (let i = len - 1; i >= 1; i--) {
    h[off + i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return true;
}

function finishHeader(h: Uint8Array): void {
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  putStr(h, 148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
}

function paxRecord(key: BStr, value: Uint8Array): Uint8Array {
  const body = key.length + 1 + value.length + 1; // "key=" value "\n"
  let len = body + 2;
  while (String(len).length + 1 + body !== len) len = String(len).length + 1 + body;
  const head = Buffer.from(`${len} ${key}=`, "latin1");
  return new Uint8Array(Buffer.concat([head, value, Buffer.from("\n")]));
}

function rawHeader(
  name: BStr,
  typeflag: string,
  size: bigint,
  e: TarWriteEntry,
  format: TarFormat,
  fields: { uid: bigint; gid: bigint; mtime: bigint; linkName: BStr; prefix: BStr },
): Uint8Array | null {
  const h = new Uint8Array(BLOCK);
  const b256 = format === "gnu";
  if (!putStr(h, 0, 100, name)) return null;
  if (!putNum(h, 100, 8, BigInt((e.mode ?? 0) & 0o7777), false)) return null;
  if (!putNum(h, 108, 8, fields.uid, b256)) return null;
  if (!putNum(h, 116, 8, fields.gid, b256)) return null;
  if (!putNum(h, 124, 12, size, b256)) return null;
  if (!putNum(h, 136, 12, fields.mtime, b256)) return null;
  h[156] = typeflag.charCodeAt(0);
  if (!putStr(h, 157, 100, fields.linkName)) return null;
  putStr(h, 257, 8, format === "gnu" ? GNU_MAGIC : USTAR_MAGIC);
  putStr(h, 265, 32, (e.uname ?? "").slice(0, 31));
  putStr(h, 297, 32, (e.gname ?? "").slice(0, 31));
  if (e.type === "chr" || e.type === "blk") {
    if (!putNum(h, 329, 8, BigInt(e.devMajor ?? 0), b256)) return null;
    if (!putNum(h, 337, 8, BigInt(e.devMinor ?? 0), b256)) return null;
  }
  if (fields.prefix !== "" && !putStr(h, 345, 155, fields.prefix)) return null;
  finishHeader(h);
  return h;
}

function padTo(n: number): Uint8Array {
  const p = (BLOCK - (n % BLOCK)) % BLOCK;
  return new Uint8Array(p);
}

/** ustar name/prefix split: prefix ≤ 155, name ≤ 100, split at a "/". */
function splitUstar(path: BStr): [BStr, BStr] | null {
  if (path.length <= 100) return [path, ""];
  for (let i = path.length - 1; i > 0; i--) {
    if (path[i] !== "/") continue;
    const prefix = path.slice(0, i);
    const name = path.slice(i + 1);
    if (prefix.length <= 155 && name.length <= 100 && name.length > 0) return [name, prefix];
  }
  return null;
}

/**
 * Encode one entry (extension headers, header, data, padding). Throws Error when
 * the entry cannot be represented in `format` (e.g. xattrs in GNU format).
 */
export function encodeTarEntry(e: TarWriteEntry, format: TarFormat = "pax"): Uint8Array[] {
  const data = e.data ?? new Uint8Array(0);
  if (e.type !== "regular" && data.length > 0) throw new Error(`${e.path}: only regular files carry data`);
  const size = BigInt(data.length);
  const uid = BigInt(e.uid ?? 0);
  const gid = BigInt(e.gid ?? 0);
  const mtime = BigInt(e.mtimeSec ?? 0);
  const nsec = e.mtimeNsec ?? 0;
  const linkName = e.linkName ?? "";
  const typeflag = TYPEFLAG[e.type];
  const out: Uint8Array[] = [];
  const trailer = [data, padTo(data.length)].filter((b) => b.length > 0);

  if (format === "pax") {
    const recs: Uint8Array[] = [];
    let name = e.path;
    let prefix = "";
    const split = splitUstar(e.path);
    if (split === null || /[^\x00-\x7f]/.test(e.path)) {
      recs.push(paxRecord("path", Buffer.from(e.path, "latin1")));
      name = e.path.slice(0, 100);
    } else {
      [name, prefix] = split;
    }
    let ln = linkName;
    if (linkName.length > 100 || /[^\x00-\x7f]/.test(linkName)) {
      recs.push(paxRecord("linkpath", Buffer.from(linkName, "latin1")));
      ln = linkName.slice(0, 100);
    }
    const fits = (v: bigint, len: number) => v.toString(8).length <= len - 1;
    let hu = uid;
    let hg = gid;
    let hm = mtime;
    if (!fits(uid, 8)) (recs.push(paxRecord("uid", Buffer.from(String(uid)))), (hu = 0n));
    if (!fits(gid, 8)) (recs.push(paxRecord("gid", Buffer.from(String(gid)))), (hg = 0n));
    if (nsec !== 0 || !fits(mtime, 12)) {
      const frac = nsec !== 0 ? "." + String(nsec).padStart(9, "0") : "";
      recs.push(paxRecord("mtime", Buffer.from(`${mtime}${frac}`)));
      if (!fits(mtime, 12)) hm = 0n;
    }
    let hs = size;
    if (!fits(size, 12)) (recs.push(paxRecord("size", Buffer.from(String(size)))), (hs = 0n));
    for (const [k, v] of [...(e.xattrs ?? new Map<BStr, Uint8Array>())].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
      recs.push(paxRecord(`SCHILY.xattr.${k}`, v));
    }
    for (const r of e.extraPax ?? []) recs.push(paxRecord(r.key, r.value));
    if (recs.length > 0) {
      const body = new Uint8Array(Buffer.concat(recs));
      const base = e.path.replace(/\/+$/, "").split("/").pop() ?? "x";
      const xname = `PaxHeaders.0/${base}`.slice(0, 100);
      const xh = rawHeader(xname, "x", BigInt(body.length), { ...e, type: "regular", mode: 0o644 }, "pax", {
        uid: 0n, gid: 0n, mtime: hm, linkName: "", prefix: "",
      });
      out.push(xh!, body, padTo(body.length));
    }
    const h = rawHeader(name, typeflag, hs, e, "pax", { uid: hu, gid: hg, mtime: hm, linkName: ln, prefix });
    if (h === null) throw new Error(`${e.path}: cannot encode header`);
    out.push(h, ...trailer);
    return out.filter((b) => b.length > 0);
  }

  if ((e.xattrs?.size ?? 0) > 0 || nsec !== 0 || (e.extraPax?.length ?? 0) > 0) {
    throw new Error(`${e.path}: xattrs, nanosecond mtimes and PAX records need the pax format`);
  }
  if (format === "gnu") {
    const longRec = (flag: string, value: BStr) => {
      const body = new Uint8Array(Buffer.from(value + "\0", "latin1"));
      const lh = rawHeader("././@LongLink", flag, BigInt(body.length), { ...e, type: "regular", mode: 0o644 }, "gnu", {
        uid: 0n, gid: 0n, mtime: 0n, linkName: "", prefix: "",
      });
      out.push(lh!, body, padTo(body.length));
    };
    if (linkName.length > 100) longRec("K", linkName);
    if (e.path.length > 100) longRec("L", e.path);
    const h = rawHeader(e.path.slice(0, 100), typeflag, size, e, "gnu", {
      uid, gid, mtime, linkName: linkName.slice(0, 100), prefix: "",
    });
    if (h === null) throw new Error(`${e.path}: value out of range for the GNU format`);
    out.push(h, ...trailer);
    return out.filter((b) => b.length > 0);
  }
  const split = splitUstar(e.path);
  if (split === null) throw new Error(`${e.path}: path too long for ustar`);
  const h = rawHeader(split[0], typeflag, size, e, "ustar", { uid, gid, mtime, linkName, prefix: split[1] });
  if (h === null) throw new Error(`${e.path}: value out of range for ustar`);
  out.push(h, ...trailer);
  return out.filter((b) => b.length > 0);
}

/** The end-of-archive marker: two zero blocks. */
export function tarEndMarker(): Uint8Array {
  return new Uint8Array(2 * BLOCK);
}

/** A whole archive in memory (tests and small fixtures). */
export function encodeTar(entries: readonly TarWriteEntry[], format: TarFormat = "pax"): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const e of entries) parts.push(...encodeTarEntry(e, format));
  parts.push(tarEndMarker());
  return new Uint8Array(Buffer.concat(parts));
}
