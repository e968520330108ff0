// The composefs dumpfile format (composefs-dump(5)): text ⇄ tree.
//
// One line per filesystem entry:
//
//   PATH SIZE MODE NLINK UID GID RDEV MTIME PAYLOAD CONTENT DIGEST [XATTR...]
//
// See shared/reference/dumpfile.md for the format. This module is pure.
//
// Parsing — `parseDumpfile(bytes, { mode })` → a shared/tree.ts `Dir`:
//
//   "c"        C `mkcomposefs --from-file` with CFS_PARSE_STRICT unset:
//              inline ≤ 5000 bytes, symlink ≤ 4095, any payload, leaf NLINK
//              kept (as `leaf.nlink` when it differs from the number of
//              references), hardlink lines may precede their target (resolved
//              at the end; `leaf.primaryPath` = the full line's path when it
//              is not the first depth-first occurrence), only `@` and PAYLOAD
//              read on hardlink lines, missing trailing CONTENT/DIGEST fields
//              read as empty (as C's field splitter does), rdev
//              stored as its low 32 bits, content wins over payload, a
//              regular file of SIZE 0 without content is a plain empty file
//              (payload/digest dropped, as C writes no metacopy for it), junk
//              mode bits above 0o177777 dropped, one trailing space tolerated,
//              missing final newline accepted, nonzero RDEV on a non-device
//              ignored, symlink SIZE ignored.
//   "c-strict" the same plus C's CFS_PARSE_STRICT checks: missing final
//              newline, symlink SIZE ≠ target length, nonzero RDEV on a
//              non-device.
//   "strict"   (the default) what both composefs-rs and C accept with the same
//              meaning: composefs-rs limits (inline ≤ 512, symlink ≤ 1024,
//              payload exactly `xx/<hex>` of a sha256/sha512 digest and equal
//              to the digest's object path when DIGEST is given, hardlink
//              target on an earlier line, rdev < 2^32, NLINK ignored) plus the
//              C strict checks, and no construct the two parsers read
//              differently (payload + content, payload on an empty file,
//              digest without payload, duplicate xattr keys, payload on a
//              directory/device, mode bits above 0o177777).
//
//   All modes reject: blank lines, a first line that is not the root
//   directory, a second root, duplicate paths, non-canonical paths (relative,
//   `.`, `..`, `//`, trailing `/`), a missing parent, names > 255 bytes,
//   paths > 4096 bytes,
//   NUL bytes in a line or in a path/name/target/xattr key, empty fields
//   (two spaces), bad escapes, MTIME nanoseconds ≥ 1e9, CONTENT length ≠
//   SIZE, CONTENT or DIGEST on a non-regular file, hardlinks to a directory /
//   to themselves / to a missing path / in a loop, hardlinked whiteouts
//   (chr 0:0 with NLINK > 1 or referenced twice), regular files larger than
//   2^53 bytes (C: 1024 chunks of 2^43 bytes), xattrs beyond C's per-inode
//   budget (32767 bytes of EROFS xattr entries), keys > 255 bytes, values >
//   65535 bytes.
//
//   (C does not special-case blank lines or "\r\n" either; a "\r" is a byte
//   of the last field, which usually makes DIGEST invalid.)
//
//   Errors are CfsError with input `line N` and what = `field NAME: …` (or a
//   sentence for whole-line problems). Callers prefix the file with
//   `err.within(file)`.
//
// Writing — `writeDumpfile(root)` (or `writeDumpfileChunks(root)`, the same
// bytes as a list of chunks for files and pipes), composefs-rs style (dumpfile.md §7):
// depth-first in byte order, directory SIZE 0, directory NLINK 2 + subdirs,
// leaf NLINK = `leaf.nlink` if set else the number of references, later
// occurrences of a hardlinked leaf as `PATH 0 @120000 - - - - 0.0 TARGET - -`,
// xattrs in byte order of their keys, every line ends with "\n". A negative
// mtime prints as `-S.N` (sec −S, nsec N), which only the C modes read back.
//
// Low-level pieces for other printers (e.g. the EROFS reader printing
// C `composefs-info dump` lines with directory sizes from the image, xattrs in
// image order and C-style `@` hardlink lines):
//   escapeField(value, kind)     one field, escaped
//   formatDumpLine(fields)       one full line (without "\n")
//   formatRustHardlinkLine(p, t) the composefs-rs hardlink line
//   nodeDumpFields(node, path, nlink)  the fields writeDumpfile uses for a node
//   joinDumpLines(lines)         lines → bytes, each followed by "\n"

import type { BStr } from "./bytes.ts";
import { bstr, displayBstr, toHex } from "./bytes.ts";
import { CfsError } from "./errors.ts";
import type { Dir, Leaf, LeafContent, Node, Regular } from "./tree.ts";
import { countLinks, fullMode, S_IFMT, typeFromMode, walk } from "./tree.ts";

// ---- limits ------------------------------------------------------------------------

export type DumpfileMode = "c" | "c-strict" | "strict";

export interface ParseOptions {
  /** Parser flavour; default "strict". */
  mode?: DumpfileMode;
}

/** C `LCFS_INLINE_CONTENT_MAX`. */
export const C_INLINE_MAX = 5000;
/** composefs-rs `MAX_INLINE_CONTENT`. */
export const RS_INLINE_MAX = 512;
/** C: PATH_MAX − 1. */
export const C_SYMLINK_MAX = 4095;
/** composefs-rs `SYMLINK_MAX`. */
export const RS_SYMLINK_MAX = 1024;
/** C: payloads (redirect targets) are below PATH_MAX. */
export const C_PAYLOAD_MAX = 4095;
export const PATH_MAX = 4096;
export const NAME_MAX = 255;
export const XATTR_NAME_MAX = 255;
export const XATTR_VALUE_MAX = 65535;
/** C caps the raw (escaped) xattr part of a line. */
export const XATTR_LINE_MAX = 65535;
/** C `LCFS_INODE_EXTERNAL_XATTR_MAX`: budget of EROFS xattr entry bytes per inode. */
export const C_XATTR_INODE_MAX = 32767;
/** Largest regular file: C allows 1024 chunks of 2^43 bytes. */
export const MAX_FILE_SIZE = 1n << 53n;

const U32_MAX = 0xffff_ffff;
const U64_MAX = (1n << 64n) - 1n;

interface Limits {
  inlineMax: number;
  symlinkMax: number;
  /** CFS_PARSE_STRICT checks. */
  cStrict: boolean;
  /** composefs-rs rules and "both parsers agree" rules. */
  rs: boolean;
}

const LIMITS: Record<DumpfileMode, Limits> = {
  c: { inlineMax: C_INLINE_MAX, symlinkMax: C_SYMLINK_MAX, cStrict: false, rs: false },
  "c-strict": { inlineMax: C_INLINE_MAX, symlinkMax: C_SYMLINK_MAX, cStrict: true, rs: false },
  strict: { inlineMax: RS_INLINE_MAX, symlinkMax: RS_SYMLINK_MAX, cStrict: true, rs: true },
};

// ---- field names ---------------------------------------------------------------------

export const FIELD_NAMES = [
  "PATH", "SIZE", "MODE", "NLINK", "UID", "GID", "RDEV", "MTIME", "PAYLOAD", "CONTENT", "DIGEST",
] as const;
const F_PATH = 0, F_SIZE = 1, F_MODE = 2, F_NLINK = 3, F_UID = 4, F_GID = 5, F_RDEV = 6,
  F_MTIME = 7, F_PAYLOAD = 8, F_CONTENT = 9, F_DIGEST = 10, N_FIXED = 11;

// ---- escaping ------------------------------------------------------------------------

/**
 * How a field is escaped:
 * - "optional": PATH, PAYLOAD, CONTENT (and DIGEST): null or empty → `-`,
 *   a value that is exactly `-` → `\x2d`.
 * - "xattr": an xattr key or value: `=` is also escaped (`\x3d`); no
 *   sentinel, so an empty value prints as nothing and `-` as `-`.
 * Both escape `\\`, `\n`, `\r`, `\t` by name and every other byte outside
 * 0x21..0x7e as lowercase `\xHH` (identical in C and composefs-rs).
 */
export type EscapeKind = "optional" | "xattr";

const HEXDIGITS = "0123456789abcdef";
const C_BACKSLASH = 0x5c, C_EQ = 0x3d, C_DASH = 0x2d, C_SPACE = 0x20, C_NL = 0x0a;

/**
 * The byte buffer the writer appends to (all output is ASCII). Output is
 * collected in chunks and joined once at the end: growing one buffer by
 * doubling copies (and page-faults) far more memory for big trees.
 */
class Sink {
  buf: Uint8Array;
  len = 0;
  private chunks: Uint8Array[] = [];
  private total = 0;
  private readonly chunkSize: number;

  constructor(chunkSize = 256) {
    this.chunkSize = chunkSize;
    this.buf = new Uint8Array(chunkSize);
  }

  ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    if (this.len > 0) {
      this.chunks.push(this.buf.subarray(0, this.len));
      this.total += this.len;
    }
    this.buf = new Uint8Array(Math.max(this.chunkSize, n));
    this.len = 0;
  }

  byte(c: number): void {
    this.ensure(1);
    this.buf[this.len++] = c;
  }

  /** An ASCII string verbatim. */
  ascii(s: string): void {
    this.ensure(s.length);
    const buf = this.buf;
    let len = this.len;
    for (let i = 0; i < s.length; i++) buf[len++] = s.charCodeAt(i);
    this.len = len;
  }

  /** Escaped bytes or byte string (see EscapeKind). */
  escaped(v: Uint8Array | BStr | null, kind: EscapeKind): void {
    const isStr = typeof v === "string";
    const n = v === null ? 0 : isStr ? v.length : v.byteLength;
    const escapeEq = kind === "xattr";
    if (!escapeEq) {
      if (n === 0) return this.byte(C_DASH);
      if (n === 1 && (isStr ? v.charCodeAt(0) : v![0]) === C_DASH) return this.ascii("\\x2d");
    }
    this.ensure(4 * n);
    const buf = this.buf;
    let len = this.len;
    for (let i = 0; i < n; i++) {
      const c = isStr ? v.charCodeAt(i) : v![i]!;
      if (c >= 0x21 && c <= 0x7e && c !== C_BACKSLASH && !(escapeEq && c === C_EQ)) {
        buf[len++] = c;
        continue;
      }
      buf[len++] = C_BACKSLASH;
      switch (c) {
        case C_BACKSLASH: buf[len++] = C_BACKSLASH; break;
        case 0x0a: buf[len++] = 0x6e; break; // n
        case 0x0d: buf[len++] = 0x72; break; // r
        case 0x09: buf[len++] = 0x74; break; // t
        default:
          buf[len++] = 0x78; // x
          buf[len++] = HEXDIGITS.charCodeAt(c >> 4);
          buf[len++] = HEXDIGITS.charCodeAt(c & 15);
      }
    }
    this.len = len;
  }

  /** A number in decimal (or another radix); integers only. */
  num(v: number | bigint, radix = 10): void {
    if (typeof v === "bigint" && v >= 0n && v <= 0x1f_ffff_ffff_ffffn) v = Number(v);
    if (typeof v === "bigint" || !Number.isSafeInteger(v) || v < 0 || radix !== 10) {
      this.ascii(v.toString(radix));
      return;
    }
    if (v < 10) return this.byte(0x30 + v);
    let digits = 1;
    for (let t = v; t >= 10; t = Math.floor(t / 10)) digits++;
    this.ensure(digits);
    const buf = this.buf;
    let i = this.len + digits;
    this.len = i;
    for (let t = v; i > this.len - digits; t = Math.floor(t / 10)) buf[--i] = 0x30 + (t % 10);
  }

  hex(bytes: Uint8Array): void {
    this.ensure(2 * bytes.byteLength);
    const buf = this.buf;
    let len = this.len;
    for (let i = 0; i < bytes.length; i++) {
      const b = bytes[i]!;
      buf[len++] = HEXDIGITS.charCodeAt(b >> 4);
      buf[len++] = HEXDIGITS.charCodeAt(b & 15);
    }
    this.len = len;
  }

  bytes(): Uint8Array {
    if (this.chunks.length === 0) return this.buf.slice(0, this.len);
    const out = new Uint8Array(this.total + this.len);
    let off = 0;
    for (const c of this.chunks) {
      out.set(c, off);
      off += c.byteLength;
    }
    out.set(this.buf.subarray(0, this.len), off);
    return out;
  }

  chunkList(): Uint8Array[] {
    const list = [...this.chunks];
    if (this.len > 0) list.push(this.buf.subarray(0, this.len));
    return list;
  }

  text(): BStr {
    const b = this.bytes();
    return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("latin1");
  }
}

// Bytes that print as themselves: 0x21..0x7e except backslash (and "=" for xattrs).
const PLAIN = /^[\x21-\x5b\x5d-\x7e]*$/;
const PLAIN_XATTR = /^[\x21-\x3c\x3e-\x5b\x5d-\x7e]*$/;

function escapeString(s: BStr, escapeEq: boolean): string {
  if ((escapeEq ? PLAIN_XATTR : PLAIN).test(s)) return s;
  let out = "";
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x21 && c <= 0x7e && c !== C_BACKSLASH && !(escapeEq && c === C_EQ)) continue;
    if (i > start) out += s.slice(start, i);
    start = i + 1;
    switch (c) {
      case C_BACKSLASH: out += "\\\\"; break;
      case 0x0a: out += "\\n"; break;
      case 0x0d: out += "\\r"; break;
      case 0x09: out += "\\t"; break;
      default: out += "\\x" + HEXDIGITS[c >> 4]! + HEXDIGITS[c & 15]!;
    }
  }
  if (start < s.length) out += s.slice(start);
  return out;
}

/** Escape one field value (bytes or a byte string) for a dumpfile line. */
export function escapeField(value: Uint8Array | BStr | null, kind: EscapeKind): string {
  const s = value === null ? "" : typeof value === "string" ? value : bstr(value);
  if (kind === "optional") {
    if (s.length === 0) return "-";
    if (s === "-") return "\\x2d";
  }
  return escapeString(s, kind === "xattr");
}

// ---- line formatting ----------------------------------------------------------------

/** The fields of one dumpfile line, unescaped. */
export interface DumpLineFields {
  /** Absolute path ("/" for the root). */
  path: BStr;
  size: bigint | number;
  /** Full st_mode: type bits | permission bits. */
  mode: number;
  /** Print MODE with a leading `@` (a C-style hardlink line; PAYLOAD = target path). */
  hardlink?: boolean;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number | bigint;
  mtimeSec: number;
  mtimeNsec: number;
  /** Object path, symlink target, hardlink target; null → `-`. */
  payload: BStr | Uint8Array | null;
  /** Inline content; null (or empty) → `-`. */
  content: Uint8Array | null;
  /** Printed as lowercase hex; null → `-`. */
  digest: Uint8Array | null;
  /** Printed in the given order (writeDumpfile sorts them by key first). */
  xattrs: Iterable<readonly [BStr, Uint8Array]>;
}

function emitLine(sink: Sink, f: DumpLineFields): void {
  sink.escaped(f.path, "optional");
  sink.byte(C_SPACE);
  sink.num(f.size);
  sink.byte(C_SPACE);
  if (f.hardlink === true) sink.byte(0x40);
  sink.num(f.mode, 8);
  sink.byte(C_SPACE);
  sink.num(f.nlink);
  sink.byte(C_SPACE);
  sink.num(f.uid);
  sink.byte(C_SPACE);
  sink.num(f.gid);
  sink.byte(C_SPACE);
  sink.num(f.rdev);
  sink.byte(C_SPACE);
  sink.num(f.mtimeSec);
  sink.byte(0x2e);
  sink.num(f.mtimeNsec);
  sink.byte(C_SPACE);
  sink.escaped(f.payload, "optional");
  sink.byte(C_SPACE);
  sink.escaped(f.content, "optional");
  sink.byte(C_SPACE);
  if (f.digest === null) sink.byte(C_DASH);
  else sink.hex(f.digest);
  const x = f.xattrs;
  if (Array.isArray(x)) {
    for (let i = 0; i < x.length; i++) emitXattr(sink, (x as readonly (readonly [BStr, Uint8Array])[])[i]!);
  } else {
    for (const e of x) emitXattr(sink, e);
  }
}

function emitXattr(sink: Sink, e: readonly [BStr, Uint8Array]): void {
  sink.byte(C_SPACE);
  sink.escaped(e[0], "xattr");
  sink.byte(C_EQ);
  sink.escaped(e[1], "xattr");
}

function emitRustHardlink(sink: Sink, path: BStr, target: BStr): void {
  sink.escaped(path, "optional");
  sink.ascii(" 0 @120000 - - - - 0.0 ");
  sink.escaped(target, "optional");
  sink.ascii(" - -");
}

/** Format one dumpfile line, without the trailing "\n". Returns a byte string (ASCII). */
export function formatDumpLine(f: DumpLineFields): BStr {
  const sink = new Sink();
  emitLine(sink, f);
  return sink.text();
}

/** composefs-rs's hardlink line: `PATH 0 @120000 - - - - 0.0 TARGET - -` (no "\n"). */
export function formatRustHardlinkLine(path: BStr, target: BStr): BStr {
  const sink = new Sink();
  emitRustHardlink(sink, path, target);
  return sink.text();
}

/** Lines → dumpfile bytes; every line (including the last) gets a "\n". */
export function joinDumpLines(lines: readonly BStr[]): Uint8Array {
  const sink = new Sink();
  for (const line of lines) {
    sink.ensure(line.length + 1);
    for (let i = 0; i < line.length; i++) sink.buf[sink.len++] = line.charCodeAt(i) & 0xff;
    sink.buf[sink.len++] = C_NL;
  }
  return sink.bytes();
}

const NO_XATTRS: readonly [BStr, Uint8Array][] = [];

function sortedXattrs(xattrs: Map<BStr, Uint8Array>): Iterable<readonly [BStr, Uint8Array]> {
  if (xattrs.size === 0) return NO_XATTRS;
  if (xattrs.size === 1) return xattrs;
  const list = Array.from(xattrs);
  if (list.length > 1) list.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return list;
}

/**
 * The fields writeDumpfile prints for a node (composefs-rs conventions):
 * directory SIZE 0, RDEV only for devices, xattrs sorted by key. `nlink` is
 * what to print in NLINK. Other printers can override fields (e.g. `size` of
 * a directory, the xattr order, or `{hardlink: true, payload: targetPath}`).
 */
export function nodeDumpFields(node: Node, path: BStr, nlink: number): DumpLineFields {
  const st = node.stat;
  const f: DumpLineFields = {
    path,
    size: 0,
    mode: fullMode(node),
    nlink,
    uid: st.uid,
    gid: st.gid,
    rdev: 0,
    mtimeSec: st.mtimeSec,
    mtimeNsec: st.mtimeNsec,
    payload: null,
    content: null,
    digest: null,
    xattrs: sortedXattrs(st.xattrs),
  };
  if (node.kind === "dir") return f;
  const c = node.content;
  switch (c.type) {
    case "regular":
      if (c.inline !== null) {
        f.size = c.inline.byteLength;
        f.content = c.inline;
      } else {
        f.size = c.size;
        f.payload = c.payload;
        f.digest = c.digest;
      }
      break;
    case "symlink":
      f.size = c.target.byteLength;
      f.payload = c.target;
      break;
    case "chr":
    case "blk":
      f.rdev = c.rdev;
      break;
    case "fifo":
    case "socket":
      break;
  }
  return f;
}

/** Serialise a tree as a dumpfile, composefs-rs style (see the module comment). */
export function writeDumpfile(root: Dir): Uint8Array {
  return writeDumpfileTo(root).bytes();
}

/**
 * The same bytes as writeDumpfile, as a list of chunks (in order): saves one
 * copy of the whole output when it only goes to a file or a pipe.
 */
export function writeDumpfileChunks(root: Dir): Uint8Array[] {
  return writeDumpfileTo(root).chunkList();
}

function writeDumpfileTo(root: Dir): Sink {
  const links = countLinks(root);
  const sink = new Sink(1 << 20);
  // walk: depth-first, children in byte order, directory line before its children
  for (const { path, node, firstPath } of walk(root)) {
    if (node.kind === "dir") {
      let nlink = 2;
      for (const child of node.entries.values()) if (child.kind === "dir") nlink++;
      emitLine(sink, nodeDumpFields(node, path, nlink));
    } else if (firstPath !== path) {
      emitRustHardlink(sink, path, firstPath);
    } else {
      emitLine(sink, nodeDumpFields(node, path, node.nlink ?? links.get(node) ?? 1));
    }
    sink.byte(C_NL);
  }
  return sink;
}

// ---- parsing ------------------------------------------------------------------------

const EMPTY = new Uint8Array(0);

function fail(lineNo: number, what: string): never {
  throw new CfsError(`line ${lineNo}`, what);
}

/** A byte string for a message; long ones are shortened in the middle. */
function show(s: BStr): string {
  return displayBstr(s.length > 160 ? s.slice(0, 100) : s) + (s.length > 160 ? "…" + displayBstr(s.slice(-40)) : "");
}

/** Unescape a field into a byte string. `field` names it in errors. */
function unescape(s: BStr, lineNo: number, field: string): BStr {
  let i = s.indexOf("\\");
  if (i < 0) return s;
  let out = s.slice(0, i);
  let start = i;
  while (i < s.length) {
    if (s.charCodeAt(i) !== 0x5c) {
      i++;
      continue;
    }
    if (i > start) out += s.slice(start, i);
    if (i + 1 >= s.length) fail(lineNo, `field ${field}: escape "\\" at the end of the field`);
    const e = s[i + 1]!;
    switch (e) {
      case "\\": out += "\\"; i += 2; break;
      case "n": out += "\n"; i += 2; break;
      case "r": out += "\r"; i += 2; break;
      case "t": out += "\t"; i += 2; break;
      case "x": {
        const hex = s.slice(i + 2, i + 4);
        if (hex.length < 2) fail(lineNo, `field ${field}: incomplete hex escape "\\x${show(hex)}"`);
        const h = hexVal(hex.charCodeAt(0));
        const l = hexVal(hex.charCodeAt(1));
        if (h < 0 || l < 0) fail(lineNo, `field ${field}: invalid hex escape "\\x${show(hex)}"`);
        out += String.fromCharCode((h << 4) | l);
        i += 4;
        break;
      }
      default:
        fail(lineNo, `field ${field}: unsupported escape "\\${show(e)}"`);
    }
    start = i;
  }
  if (start < s.length) out += s.slice(start);
  return out;
}

function hexVal(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}

function toBytes(s: BStr): Uint8Array {
  const n = s.length;
  if (n === 0) return EMPTY;
  if (n > 256) {
    const b = Buffer.from(s, "latin1");
    return new Uint8Array(b.buffer.slice(b.byteOffset, b.byteOffset + n));
  }
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = s.charCodeAt(i);
  return out;
}

/**
 * Validate a canonical absolute path: starts with "/", no empty, "." or ".."
 * components, names ≤ 255 bytes, total ≤ 4096 bytes, no NUL.
 */
function checkPath(p: BStr, lineNo: number, field: string, what: string): void {
  if (p.length === 0) fail(lineNo, `field ${field}: ${what} is empty`);
  if (p.length > PATH_MAX) fail(lineNo, `field ${field}: ${what} is ${p.length} bytes long (maximum ${PATH_MAX})`);
  if (p.charCodeAt(0) !== 0x2f) fail(lineNo, `field ${field}: ${what} "${show(p)}" is not absolute`);
  if (p.indexOf("\0") >= 0) fail(lineNo, `field ${field}: ${what} "${show(p)}" contains a NUL byte`);
  if (p.length === 1) return;
  let start = 1;
  for (;;) {
    let end = p.indexOf("/", start);
    if (end < 0) end = p.length;
    const len = end - start;
    if (len === 0) {
      fail(lineNo, `field ${field}: ${what} "${show(p)}" has an empty component (// or a trailing /)`);
    }
    if (len <= 2 && p.charCodeAt(start) === 0x2e && (len === 1 || p.charCodeAt(start + 1) === 0x2e)) {
      fail(lineNo, `field ${field}: ${what} "${show(p)}" has a "${len === 1 ? "." : ".."}" component`);
    }
    if (len > NAME_MAX) {
      fail(lineNo, `field ${field}: ${what} "${show(p)}" has a name of ${len} bytes (maximum ${NAME_MAX})`);
    }
    if (end === p.length) return;
    start = end + 1;
  }
}

const OBJECT_PATH = /^[0-9a-f]{2}\/(?:[0-9a-f]{62}|[0-9a-f]{126})$/;

/** A hardlink line waiting for its target (C mode resolves them at the end). */
interface Fixup {
  lineNo: number;
  dir: Dir;
  name: BStr;
  path: BStr;
  target: BStr;
  placeholder: Leaf;
}


/**
 * Parse a dumpfile into a tree. Throws CfsError(`line N`, …) on the first
 * problem. See the module comment for the modes.
 */
export function parseDumpfile(text: Uint8Array, opts: ParseOptions = {}): Dir {
  const mode = opts.mode ?? "strict";
  const lim = LIMITS[mode];
  // One byte string for the whole file; names, paths and payloads are
  // substrings of it (no copies), numbers are read in place.
  const s = Buffer.from(text.buffer, text.byteOffset, text.byteLength).toString("latin1");

  let root: Dir | null = null;
  const dirs = new Map<BStr, Dir>();
  // C mode: leaves whose NLINK field is not 1, and the extra references hardlink lines add.
  const nlinkFields = new Map<Leaf, number>();
  const extraRefs = new Map<Leaf, number>();
  const linkPaths = new Map<Leaf, BStr[]>();
  /** Path of the full (non-@) line of each hardlinked leaf. */
  const fullPaths = new Map<Leaf, BStr>();
  const fixups: Fixup[] = [];
  const placeholders = new Map<Leaf, Fixup>();
  // Identical xattr values (SELinux labels…) share one array.
  const valueCache = new Map<BStr, Uint8Array>();

  // Fields of the current line: [fs[i], fe[i]) in `s`.
  let fs = new Int32Array(64);
  let fe = new Int32Array(64);
  let nf = 0;
  // The parent directory of the previous line (lines come grouped by directory).
  let lastParentPath: BStr | null = null;
  let lastParent: Dir | null = null;
  /** The last component of the path parentOf() was given. */
  let childName: BStr = "";

  const nulPos = s.indexOf("\0");
  let lineNo = 0;
  let pos = 0;
  while (pos < s.length) {
    lineNo++;
    let end = s.indexOf("\n", pos);
    if (end < 0) {
      if (lim.cStrict) fail(lineNo, "missing newline at the end of the file");
      end = s.length;
    }
    if (nulPos >= pos && nulPos < end) {
      fail(lineNo, `NUL byte at column ${nulPos - pos + 1}`);
    }
    const start = pos;
    pos = end + 1;
    // C splits off each field at a space, so one trailing space is harmless there.
    if (!lim.rs && end > start && s.charCodeAt(end - 1) === 0x20) end--;
    parseLine(start, end, lineNo);
  }
  if (root === null) fail(Math.max(lineNo, 1), "the dumpfile is empty: it must start with the root directory /");

  resolveFixups();
  finishLinks();
  return root;

  // -- fields ------------------------------------------------------------------------------

  /** Splits [start, end) at every space (as String.split(" ") would). */
  function splitFields(start: number, end: number): void {
    nf = 0;
    let a = start;
    for (;;) {
      let sp = s.indexOf(" ", a);
      if (sp < 0 || sp > end) sp = end;
      if (nf === fs.length) {
        const gs = new Int32Array(nf * 2);
        gs.set(fs);
        fs = gs;
        const ge = new Int32Array(nf * 2);
        ge.set(fe);
        fe = ge;
      }
      fs[nf] = a;
      fe[nf] = sp;
      nf++;
      if (sp === end) return;
      a = sp + 1;
    }
  }

  function field(i: number): string {
    return s.slice(fs[i]!, fe[i]!);
  }

  /** Field `i` is exactly "-". */
  function isDash(i: number): boolean {
    return fe[i]! - fs[i]! === 1 && s.charCodeAt(fs[i]!) === C_DASH;
  }

  /** Fixed field `i` of a line: present and not empty. */
  function need(i: number, n: number): void {
    if (i >= nf) fail(n, `field ${FIELD_NAMES[i]} is missing (the line has ${nf} of ${N_FIXED} fields)`);
    if (fe[i] === fs[i]) fail(n, `field ${FIELD_NAMES[i]} is empty (two spaces in a row?)`);
  }

  /** Decimal digits only, at least one. */
  function digitsAt(a: number, b: number): boolean {
    if (a >= b) return false;
    for (let i = a; i < b; i++) {
      const c = s.charCodeAt(i);
      if (c < 0x30 || c > 0x39) return false;
    }
    return true;
  }

  /** Value of [a, b), all digits and at most 15 of them. */
  function smallUint(a: number, b: number): number {
    let v = 0;
    for (let i = a; i < b; i++) v = v * 10 + (s.charCodeAt(i) - 0x30);
    return v;
  }

  /** Decimal unsigned integer ≤ max (a safe integer) at field `i`. */
  function uintField(i: number, max: number, n: number): number {
    return uintAt(fs[i]!, fe[i]!, max, n, FIELD_NAMES[i]!);
  }

  function uintAt(a: number, b: number, max: number, n: number, name: string): number {
    if (!digitsAt(a, b)) fail(n, `field ${name}: "${show(s.slice(a, b))}" is not a decimal number`);
    const v = b - a <= 15 ? smallUint(a, b) : BigInt(s.slice(a, b)) > BigInt(max) ? max + 1 : Number(s.slice(a, b));
    if (v > max) fail(n, `field ${name}: ${show(s.slice(a, b))} is out of range (maximum ${max})`);
    return v;
  }

  /** Decimal unsigned 64-bit integer at field `i`: a number when it is a safe integer, else a bigint. */
  function u64Field(i: number, n: number): number | bigint {
    const a = fs[i]!;
    const b = fe[i]!;
    const name = FIELD_NAMES[i]!;
    if (!digitsAt(a, b)) fail(n, `field ${name}: "${show(s.slice(a, b))}" is not a decimal number`);
    if (b - a <= 15) return smallUint(a, b);
    const v = BigInt(s.slice(a, b));
    if (v > U64_MAX) fail(n, `field ${name}: ${show(s.slice(a, b))} does not fit in 64 bits`);
    return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }

  function octalField(i: number, a: number, n: number): number {
    const b = fe[i]!;
    const name = FIELD_NAMES[i]!;
    if (a === b) fail(n, `field ${name}: missing octal mode`);
    let v = 0;
    for (let k = a; k < b; k++) {
      const c = s.charCodeAt(k);
      if (c < 0x30 || c > 0x37) fail(n, `field ${name}: "${show(s.slice(a, b))}" is not an octal number`);
      v = v * 8 + (c - 0x30);
    }
    if (!(v <= U32_MAX)) fail(n, `field ${name}: ${show(s.slice(a, b))} does not fit in 32 bits`);
    return v;
  }

  // -- one line --------------------------------------------------------------------------

  function parseLine(start: number, end: number, n: number): void {
    if (end === start) fail(n, "empty line");
    splitFields(start, end);
    // Only the fields a line type reads are checked (C ignores the rest of a hardlink line).
    need(F_PATH, n);
    const path = unescape(field(F_PATH), n, "PATH");
    checkPath(path, n, "PATH", "path");

    need(F_MODE, n);
    const isHardlink = s.charCodeAt(fs[F_MODE]!) === 0x40; /* @ */
    let modeVal = octalField(F_MODE, fs[F_MODE]! + (isHardlink ? 1 : 0), n);
    if (!isHardlink && modeVal > 0o177777) {
      if (lim.rs) fail(n, `field MODE: ${field(F_MODE)} has bits above the 16-bit st_mode`);
      modeVal &= 0o177777; // EROFS keeps a 16-bit i_mode
    }
    const type = typeFromMode(modeVal);
    if (type === null) {
      const modeStr = s.slice(fs[F_MODE]! + (isHardlink ? 1 : 0), fe[F_MODE]!);
      fail(n, `field MODE: ${modeStr} has no valid file type (type bits ${((modeVal & S_IFMT) >>> 0).toString(8).padStart(6, "0")})`);
    }

    if (isHardlink) {
      if (type === "dir") fail(n, "field MODE: a directory cannot be a hardlink");
      if (path === "/") fail(n, "field PATH: the root cannot be a hardlink");
      need(F_PAYLOAD, n);
      if (isDash(F_PAYLOAD)) fail(n, "field PAYLOAD: a hardlink needs its target path here");
      const target = unescape(field(F_PAYLOAD), n, "PAYLOAD");
      checkPath(target, n, "PAYLOAD", "hardlink target");
      if (target === path) fail(n, `field PAYLOAD: hardlink ${show(path)} refers to itself`);
      addHardlink(path, target, n);
      return;
    }

    // C reads missing trailing fields as empty strings: a missing CONTENT is
    // empty content (fine when SIZE is 0), a missing DIGEST is harmless
    // unless the file needs one. composefs-rs requires all 11 fields.
    const present = !lim.rs && nf > F_PAYLOAD && nf < N_FIXED ? nf : N_FIXED;
    for (let i = F_SIZE; i < present; i++) need(i, n);
    const sizeV = u64Field(F_SIZE, n);
    const nlinkField = uintField(F_NLINK, U32_MAX, n);
    const uid = uintField(F_UID, U32_MAX, n);
    const gid = uintField(F_GID, U32_MAX, n);
    const rdevRaw = u64Field(F_RDEV, n);
    const [mtimeSec, mtimeNsec] = parseMtime(n);

    const payload = isDash(F_PAYLOAD) ? null : unescape(field(F_PAYLOAD), n, "PAYLOAD");
    const content = F_CONTENT >= nf || isDash(F_CONTENT) ? null : unescape(field(F_CONTENT), n, "CONTENT");
    const digest = F_DIGEST >= nf || isDash(F_DIGEST) ? null : parseDigest(n);
    const sizeZero = sizeV === 0;
    if (present <= F_CONTENT && !sizeZero) {
      fail(n, `field CONTENT is missing (read as empty content, which does not match SIZE ${sizeV})`);
    }
    if (present <= F_DIGEST && type === "regular" && content === null && !sizeZero) {
      fail(n, "field DIGEST is missing");
    }

    if (content !== null && type !== "regular") fail(n, `field CONTENT: a ${typeName(type)} cannot have inline content`);
    if (digest !== null && type !== "regular") fail(n, `field DIGEST: a ${typeName(type)} cannot have a digest`);
    const isDevice = type === "chr" || type === "blk";
    if (!isDevice && rdevRaw !== 0 && lim.cStrict) {
      fail(n, `field RDEV: a ${typeName(type)} cannot have a device number (${rdevRaw})`);
    }
    if (payload !== null && lim.rs && type !== "regular" && type !== "symlink") {
      fail(n, `field PAYLOAD: a ${typeName(type)} cannot have a payload`);
    }

    const xattrs = parseXattrs(n);
    const stat = { mode: modeVal & 0o7777, uid, gid, mtimeSec, mtimeNsec, xattrs };

    if (type === "dir") {
      const dir: Dir = { kind: "dir", stat, entries: new Map() };
      if (path === "/") {
        if (root !== null) fail(n, "field PATH: a second root directory / (duplicate path)");
        root = dir;
      } else {
        insert(path, dir, n);
      }
      dirs.set(path, dir);
      return;
    }
    if (path === "/") fail(n, `field MODE: the root / must be a directory, not a ${typeName(type)}`);

    let leafContent: LeafContent;
    switch (type) {
      case "regular":
        leafContent = regularContent(typeof sizeV === "bigint" ? sizeV : BigInt(sizeV), payload, content, digest, n);
        break;
      case "symlink": {
        if (payload === null) fail(n, "field PAYLOAD: a symlink needs its target here");
        if (payload.indexOf("\0") >= 0) fail(n, "field PAYLOAD: symlink target contains a NUL byte");
        if (payload.length > lim.symlinkMax) {
          fail(n, `field PAYLOAD: symlink target of ${payload.length} bytes exceeds the maximum of ${lim.symlinkMax}`);
        }
        if (lim.cStrict && sizeV !== payload.length) {
          fail(n, `field SIZE: ${sizeV} does not match the symlink target length ${payload.length}`);
        }
        leafContent = { type: "symlink", target: toBytes(payload) };
        break;
      }
      case "chr":
      case "blk": {
        if (lim.rs && rdevRaw > 0xffff_ffff) {
          fail(n, `field RDEV: ${rdevRaw} does not fit in 32 bits`);
        }
        const rdev = typeof rdevRaw === "bigint" ? Number(rdevRaw & 0xffff_ffffn) : rdevRaw >>> 0;
        if (type === "chr" && rdev === 0 && nlinkField > 1) {
          fail(n, `field NLINK: a whiteout (character device 0:0) cannot have ${nlinkField} links`);
        }
        leafContent = { type, rdev };
        break;
      }
      default:
        leafContent = { type };
    }
    const leaf: Leaf = { kind: "leaf", stat, content: leafContent };
    insert(path, leaf, n);
    if (!lim.rs && nlinkField !== 1) nlinkFields.set(leaf, nlinkField);
  }

  function typeName(t: LeafContent["type"] | "dir"): string {
    switch (t) {
      case "dir": return "directory";
      case "regular": return "regular file";
      case "chr": return "character device";
      case "blk": return "block device";
      default: return t;
    }
  }

  function parseMtime(n: number): [number, number] {
    const a = fs[F_MTIME]!;
    const b = fe[F_MTIME]!;
    let dot = s.indexOf(".", a);
    if (dot < 0 || dot >= b) fail(n, `field MTIME: "${show(s.slice(a, b))}" is not SECONDS.NANOSECONDS`);
    let secStart = a;
    let negative = false;
    // C reads seconds with strtoull, so "-5" wraps to the time_t -5.
    if (!lim.rs && s.charCodeAt(a) === 0x2d) {
      negative = true;
      secStart++;
    }
    if (!digitsAt(secStart, dot) || !digitsAt(dot + 1, b)) fail(n, `field MTIME: "${show(s.slice(a, b))}" is not SECONDS.NANOSECONDS`);
    const sec = uintAt(secStart, dot, Number.MAX_SAFE_INTEGER, n, "MTIME");
    const nsec = b - (dot + 1) <= 15 ? smallUint(dot + 1, b) : Infinity;
    if (!(nsec < 1_000_000_000)) fail(n, `field MTIME: nanoseconds must be < 1000000000 (got ${show(s.slice(dot + 1, b))})`);
    return [negative && sec !== 0 ? -sec : sec, nsec];
  }

  function parseDigest(n: number): Uint8Array {
    const a = fs[F_DIGEST]!;
    const b = fe[F_DIGEST]!;
    const len = b - a;
    let ok = len === 64 || (lim.rs && len === 128);
    const out = ok ? new Uint8Array(len >> 1) : EMPTY;
    for (let i = 0; ok && i < out.length; i++) {
      const h = hexVal(s.charCodeAt(a + 2 * i));
      const l = hexVal(s.charCodeAt(a + 2 * i + 1));
      if (h < 0 || l < 0) ok = false;
      else out[i] = (h << 4) | l;
    }
    if (!ok) {
      const f = s.slice(a, b);
      const want = lim.rs ? "64 or 128 hex digits (sha256/sha512)" : "64 hex digits (sha256)";
      const crlf = f.endsWith("\r") ? " (CRLF line endings?)" : "";
      fail(n, `field DIGEST: "${show(f)}" is not ${want}${crlf}`);
    }
    return out;
  }

  function regularContent(size: bigint, payload: BStr | null, content: BStr | null, digest: Uint8Array | null, n: number): Regular {
    if (content !== null) {
      if (BigInt(content.length) !== size) {
        fail(n, `field CONTENT: length ${content.length} does not match SIZE ${size}`);
      }
      if (content.length > lim.inlineMax) {
        fail(n, `field CONTENT: inline content of ${content.length} bytes exceeds the maximum of ${lim.inlineMax}`);
      }
      if (digest !== null) fail(n, "field DIGEST: a file with inline content cannot have a digest");
      if (payload !== null && lim.rs) fail(n, "field PAYLOAD: a file cannot have both a payload and inline content");
      return { type: "regular", size, inline: toBytes(content), digest: null, payload: null };
    }
    if (size === 0n) {
      if (lim.rs) {
        if (payload !== null) fail(n, "field PAYLOAD: an empty file cannot have a payload");
        if (digest !== null) fail(n, "field DIGEST: an empty file cannot have a digest");
      }
      // C writes no metacopy/redirect for an empty file: payload and digest are dropped.
      return { type: "regular", size: 0n, inline: EMPTY, digest: null, payload: null };
    }
    if (size > MAX_FILE_SIZE) fail(n, `field SIZE: ${size} exceeds the maximum file size ${MAX_FILE_SIZE}`);
    if (payload !== null) {
      if (payload.indexOf("\0") >= 0) fail(n, "field PAYLOAD: contains a NUL byte");
      if (payload.length > C_PAYLOAD_MAX) {
        fail(n, `field PAYLOAD: ${payload.length} bytes exceeds the maximum of ${C_PAYLOAD_MAX}`);
      }
    }
    if (lim.rs) {
      if (payload === null && digest !== null) fail(n, "field DIGEST: a file without a payload cannot have a digest");
      if (payload !== null) {
        if (!OBJECT_PATH.test(payload)) {
          fail(n, `field PAYLOAD: "${show(payload)}" is not an object path (xx/ + the rest of a lowercase hex digest)`);
        }
        const digestHex = digest === null ? "" : field(F_DIGEST).toLowerCase();
        if (digest !== null && (payload.length !== digestHex.length + 1 || !payload.startsWith(digestHex.slice(0, 2)) || !payload.endsWith(digestHex.slice(2)))) {
          fail(n, `field PAYLOAD: "${show(payload)}" is not the object path of DIGEST ${digestHex}`);
        }
      }
    }
    return { type: "regular", size, inline: null, digest, payload };
  }

  function parseXattrs(n: number): Map<BStr, Uint8Array> {
    const xattrs = new Map<BStr, Uint8Array>();
    if (nf <= N_FIXED) return xattrs;
    const rawLen = fe[nf - 1]! - fs[N_FIXED]!; // the fields and their separating spaces
    if (rawLen > XATTR_LINE_MAX) fail(n, `field XATTR: ${rawLen} bytes of xattrs on one line exceed the maximum of ${XATTR_LINE_MAX}`);
    // C's per-inode budget: 12-byte header + for each xattr 7 + key + value bytes.
    let budget = 12;
    for (let i = N_FIXED; i < nf; i++) {
      const f = field(i);
      const label = `XATTR ${i - N_FIXED + 1}`;
      if (f.length === 0) fail(n, `field ${label} is empty (two spaces in a row?)`);
      const eq = f.indexOf("=");
      if (eq < 0) fail(n, `field ${label}: missing "=" between key and value`);
      const key = unescape(f.slice(0, eq), n, label);
      if (key.length === 0) fail(n, `field ${label}: empty xattr key`);
      if (key.length > XATTR_NAME_MAX) fail(n, `field ${label}: xattr key of ${key.length} bytes exceeds the maximum of ${XATTR_NAME_MAX}`);
      if (key.indexOf("\0") >= 0) fail(n, `field ${label}: xattr key contains a NUL byte`);
      // Values repeat (SELinux labels): cache them by their escaped spelling.
      const rawValue = f.slice(eq + 1);
      let v = valueCache.get(rawValue);
      if (v === undefined) {
        const value = unescape(rawValue, n, label);
        if (value.length > XATTR_VALUE_MAX) {
          fail(n, `field ${label}: xattr value of ${value.length} bytes exceeds the maximum of ${XATTR_VALUE_MAX}`);
        }
        v = toBytes(value);
        if (valueCache.size < 100_000 && rawValue.length <= 1024) valueCache.set(rawValue, v);
      }
      const old = xattrs.get(key);
      if (old !== undefined) {
        if (lim.rs) fail(n, `field ${label}: duplicate xattr key "${show(key)}"`);
        budget -= 7 + key.length + old.byteLength; // C: a repeated key replaces the earlier value
      }
      budget += 7 + key.length + v.byteLength;
      if (budget > C_XATTR_INODE_MAX) {
        fail(n, `field ${label}: xattrs exceed the per-inode maximum of ${C_XATTR_INODE_MAX} bytes`);
      }
      xattrs.set(key, v);
    }
    return xattrs;
  }

  // -- tree building ------------------------------------------------------------------------

  /** The directory that holds `path`; its last component is left in `childName`. */
  function parentOf(path: BStr, n: number): Dir {
    if (root === null) fail(n, `field PATH: ${show(path)} comes before the root directory / (the first line must be /)`);
    const slash = path.lastIndexOf("/");
    const parentPath = slash === 0 ? "/" : path.slice(0, slash);
    childName = path.slice(slash + 1);
    if (parentPath === lastParentPath) return lastParent!;
    const parent = dirs.get(parentPath);
    if (parent === undefined) {
      if (lookupAny(parentPath) !== undefined) fail(n, `field PATH: parent ${show(parentPath)} is not a directory`);
      fail(n, `field PATH: parent directory ${show(parentPath)} does not exist (it must appear on an earlier line)`);
    }
    lastParentPath = parentPath;
    lastParent = parent;
    return parent;
  }

  function lookupAny(path: BStr): Node | undefined {
    const dir = dirs.get(path);
    if (dir !== undefined) return dir;
    const slash = path.lastIndexOf("/");
    const parent = dirs.get(slash === 0 ? "/" : path.slice(0, slash));
    return parent?.entries.get(path.slice(slash + 1));
  }

  /** Adds `node` at `path`; returns its parent (the name is left in `childName`). */
  function insert(path: BStr, node: Node, n: number): Dir {
    const parent = parentOf(path, n);
    const entries = parent.entries;
    const before = entries.size;
    entries.set(childName, node);
    // (A duplicate replaced the first entry, but the parse fails anyway.)
    if (entries.size === before) fail(n, `field PATH: duplicate path ${show(path)}`);
    return parent;
  }

  function addHardlink(path: BStr, target: BStr, n: number): void {
    if (lim.rs) {
      // composefs-rs: the target must already be known.
      const parent = parentOf(path, n);
      const name = childName;
      if (parent.entries.has(name)) fail(n, `field PATH: duplicate path ${show(path)}`);
      const t = lookupAny(target);
      if (t === undefined) {
        fail(n, `field PAYLOAD: hardlink target ${show(target)} does not exist (it must appear on an earlier line)`);
      }
      if (t.kind === "dir") fail(n, `field PAYLOAD: hardlink target ${show(target)} is a directory`);
      if (isWhiteoutLeaf(t)) fail(n, `field PAYLOAD: hardlink target ${show(target)} is a whiteout (character device 0:0), which cannot be hardlinked`);
      parent.entries.set(name, t);
      return;
    }
    // C: insert a placeholder now (so duplicates and "parent is not a
    // directory" are found), resolve once the whole file is read.
    const placeholder: Leaf = { kind: "leaf", stat: { mode: 0, uid: 0, gid: 0, mtimeSec: 0, mtimeNsec: 0, xattrs: new Map() }, content: { type: "fifo" } };
    const dir = insert(path, placeholder, n);
    const fx: Fixup = { lineNo: n, dir, name: childName, path, target, placeholder };
    fixups.push(fx);
    placeholders.set(placeholder, fx);
  }

  function resolveFixups(): void {
    const resolved = new Map<Fixup, Leaf>();
    const resolve = (fx: Fixup): Leaf => {
      const done = resolved.get(fx);
      if (done !== undefined) return done;
      const chain = new Set<Fixup>();
      let cur = fx;
      let leaf: Leaf | undefined;
      for (;;) {
        chain.add(cur);
        const t = lookupAny(cur.target);
        if (t === undefined) fail(cur.lineNo, `field PAYLOAD: hardlink target ${show(cur.target)} does not exist`);
        if (t.kind === "dir") fail(cur.lineNo, `field PAYLOAD: hardlink target ${show(cur.target)} is a directory`);
        const next = placeholders.get(t);
        if (next === undefined) {
          leaf = t;
          // The first time a leaf is found it is still only at its full line's path
          // (resolved links are placed below, after this).
          if (!fullPaths.has(t)) fullPaths.set(t, cur.target);
          break;
        }
        const r = resolved.get(next);
        if (r !== undefined) {
          leaf = r;
          break;
        }
        if (chain.has(next)) fail(fx.lineNo, `field PAYLOAD: hardlinks form a loop through ${show(next.path)}`);
        cur = next;
      }
      for (const c of chain) resolved.set(c, leaf);
      return leaf;
    };
    for (const fx of fixups) {
      const leaf = resolve(fx);
      if (isWhiteoutLeaf(leaf)) {
        fail(fx.lineNo, `field PAYLOAD: hardlink target ${show(fx.target)} is a whiteout (character device 0:0), which cannot be hardlinked`);
      }
      fx.dir.entries.set(fx.name, leaf);
      extraRefs.set(leaf, (extraRefs.get(leaf) ?? 0) + 1);
      const paths = linkPaths.get(leaf);
      if (paths === undefined) linkPaths.set(leaf, [fx.path]);
      else paths.push(fx.path);
    }
  }

  function finishLinks(): void {
    // C keeps each leaf's NLINK field; record it where it differs from the tree
    // (1 + the hardlink lines naming the leaf).
    for (const [leaf, field] of nlinkFields) if (!extraRefs.has(leaf)) leaf.nlink = field;
    for (const [leaf, extra] of extraRefs) {
      const field = nlinkFields.get(leaf) ?? 1;
      if (field !== 1 + extra) leaf.nlink = field;
      // C numbers a hardlinked inode where its full line is (Leaf.primaryPath)
      // when that is not the first depth-first occurrence.
      const path = fullPaths.get(leaf)!;
      if (linkPaths.get(leaf)!.some((l) => compareDfs(l, path) < 0)) leaf.primaryPath = path;
    }
  }
}

/** Order of two absolute paths in a depth-first walk with children in byte order. */
function compareDfs(a: BStr, b: BStr): number {
  const pa = a.split("/"), pb = b.split("/");
  for (let i = 0; i < pa.length && i < pb.length; i++) {
    if (pa[i] !== pb[i]) return pa[i]! < pb[i]! ? -1 : 1;
  }
  return pa.length - pb.length;
}

function isWhiteoutLeaf(n: Node): boolean {
  return n.kind === "leaf" && n.content.type === "chr" && n.content.rdev === 0;
}
