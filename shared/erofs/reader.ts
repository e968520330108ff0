// Reading composefs EROFS images (V0, V1, V2) back: erofs.md §13.
//
// Pure: bytes in, values out. Three layers:
//
// - `ErofsImage`: bounds-checked access to the on-disk structures (header,
//   superblock, inodes, xattrs, directory entries, file data). Every offset
//   and size taken from the image is checked against the image length
//   before it is used, so a truncated, garbled or hostile image gives a
//   `CfsError("<image>: offset N", what)` and nothing else.
// - `readImage`: the image as a `shared/tree.ts` tree (stubs skipped, escaped
//   whiteouts and overlay xattrs undone, hardlinks by nid), with optional
//   strict validation (composefs-rs `restrict_to_composefs` plus fsck-like
//   structural checks).
// - `loadImageC`: the image as C libcomposefs' `lcfs_load_node_from_image`
//   sees it (the model `composefs-info` prints), quirks included.
//
// Traversals use explicit stacks (no recursion), visit every directory at
// most once (a directory reachable twice, e.g. a cycle, is an error) and
// bound the nesting depth, so no image can make them loop or blow the stack.

import { bstr, type BStr, fromHex, toHex } from "../bytes.ts";
import { CfsError } from "../errors.ts";
import {
  BLOCK_BITS,
  BLOCK_SIZE,
  COMPACT_INODE_SIZE,
  COMPOSEFS_HEADER_VERSION,
  COMPOSEFS_MAGIC,
  type ComposefsHeader,
  DataLayout,
  DIRENT_SIZE,
  EROFS_SUPER_MAGIC_V1,
  EROFS_SUPER_OFFSET,
  EXTENDED_INODE_SIZE,
  FEATURE_COMPAT_SUPPORTED,
  FEATURE_INCOMPAT_SUPPORTED,
  fileTypeOfMode,
  readComposefsHeader,
  readSuperblock,
  type Superblock,
  XATTR_ENTRY_HEADER_SIZE,
  XATTR_ESCAPED_OPAQUE,
  XATTR_ESCAPED_WHITEOUT,
  XATTR_ESCAPED_WHITEOUTS,
  XATTR_IBODY_HEADER_SIZE,
  XATTR_OVERLAY_ESCAPED_PREFIX,
  XATTR_OVERLAY_METACOPY,
  XATTR_OVERLAY_PREFIX,
  XATTR_OVERLAY_REDIRECT,
  XATTR_PREFIXES,
  XATTR_USERXATTR_OPAQUE,
  XATTR_USERXATTR_WHITEOUT,
  XATTR_USERXATTR_WHITEOUTS,
  xattrBlockSize,
} from "./format.ts";
import {
  type Dir,
  type Leaf,
  type LeafContent,
  type Node,
  type Regular,
  type Stat,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
} from "../tree.ts";

// ---- constants ------------------------------------------------------------------------

const LAYOUT_FLAT_PLAIN = DataLayout.FLAT_PLAIN;
const LAYOUT_FLAT_INLINE = DataLayout.FLAT_INLINE;
const LAYOUT_CHUNK_BASED = DataLayout.CHUNK_BASED;

export { XATTR_PREFIXES };

/** Maximum directory nesting (composefs-rs MAX_DIRECTORY_DEPTH: PATH_MAX / 2). */
export const MAX_DEPTH = 2048;
/** composefs-rs limits for V2 images in strict mode. */
const V2_MAX_INLINE = 512;
const V2_MAX_SYMLINK = 1024;
/** C `lcfs_load_node_from_image`: inline content limit, symlinks below PATH_MAX. */
const C_INLINE_CONTENT_MAX = 5000;
const PATH_MAX = 4096;

const XATTR_METACOPY = XATTR_OVERLAY_METACOPY;
const XATTR_REDIRECT = XATTR_OVERLAY_REDIRECT;
const XATTR_ESCAPE_PREFIX = XATTR_OVERLAY_ESCAPED_PREFIX;
const XATTR_ESC_WHITEOUT = XATTR_ESCAPED_WHITEOUT;
const XATTR_ESC_WHITEOUTS = XATTR_ESCAPED_WHITEOUTS;
const XATTR_ESC_OPAQUE = XATTR_ESCAPED_OPAQUE;
const XATTR_USER_WHITEOUT = XATTR_USERXATTR_WHITEOUT;
const XATTR_USER_WHITEOUTS = XATTR_USERXATTR_WHITEOUTS;
const XATTR_USER_OPAQUE = XATTR_USERXATTR_OPAQUE;
const XATTR_HEADER_SIZE = XATTR_IBODY_HEADER_SIZE;
const XATTR_ENTRY_SIZE = XATTR_ENTRY_HEADER_SIZE;
const SUPERBLOCK_OFFSET = EROFS_SUPER_OFFSET;
const EROFS_MAGIC = EROFS_SUPER_MAGIC_V1;

const TYPE_NAMES: Record<number, string> = {
  [S_IFDIR]: "directory",
  [S_IFREG]: "regular file",
  [S_IFLNK]: "symlink",
  [S_IFCHR]: "character device",
  [S_IFBLK]: "block device",
  [S_IFIFO]: "fifo",
  [S_IFSOCK]: "socket",
};

// ---- low level ---------------------------------------------------------------------

export type { ComposefsHeader, Superblock };

/** One inode header, decoded (§8). Offsets are absolute byte offsets into the image. */
export interface RawInode {
  nid: number;
  offset: number;
  extended: boolean;
  /** `i_format` as stored. */
  format: number;
  /** 0 FLAT_PLAIN, 2 FLAT_INLINE, 4 CHUNK_BASED. */
  layout: number;
  /** Full st_mode (type bits | permissions). */
  mode: number;
  nlink: number;
  size: bigint;
  /** `i_u`: blkaddr, rdev or chunk format depending on type and layout. */
  u: number;
  ino: number;
  uid: number;
  gid: number;
  /** Seconds, the stored u64 read as signed (pre-1970 times); build_time for compact inodes. */
  mtimeSec: bigint;
  mtimeNsec: number;
  xattrIcount: number;
  /** Offset of the xattr block (right after the header). */
  xattrStart: number;
  /** Size of the xattr block in bytes (0 when icount is 0). */
  xattrSize: number;
  /** Offset of the inline data (after the xattr block). */
  inlineStart: number;
}

export interface RawXattr {
  /** Prefix index (0..6). */
  index: number;
  /** Full name: prefix string + suffix. */
  name: BStr;
  value: Uint8Array;
  /** Offset of the entry header. */
  offset: number;
  shared: boolean;
}

export interface RawDirent {
  name: BStr;
  nid: number;
  /** EROFS file_type (1 reg … 7 symlink). */
  type: number;
  /** Offset of the 12-byte dirent header. */
  offset: number;
}

function u64ToNumber(v: bigint): number | null {
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : null;
}

/** Bounds-checked view of an EROFS image. */
export class ErofsImage {
  readonly bytes: Uint8Array;
  readonly name: string;
  readonly header: ComposefsHeader;
  readonly sb: Superblock;
  private readonly view: DataView;
  private readonly buf: Buffer;
  private readonly metaBase: number;
  private readonly xattrBase: number;
  /** Shared xattr entries by offset: one object per entry however often it is referenced. */
  private readonly sharedCache = new Map<number, RawXattr>();
  private readonly buildTimeSigned: bigint;

  constructor(bytes: Uint8Array, name = "image") {
    this.bytes = bytes;
    this.name = name;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (bytes.byteLength < BLOCK_SIZE) {
      this.fail(0, `image is ${bytes.byteLength} bytes, smaller than one 4096-byte block`);
    }
    this.header = readComposefsHeader(this.view, 0);
    if (this.header.magic !== COMPOSEFS_MAGIC) {
      this.fail(0, `bad composefs magic 0x${hex32(this.header.magic)} (expected 0x${hex32(COMPOSEFS_MAGIC)})`);
    }
    if (this.header.version !== COMPOSEFS_HEADER_VERSION) {
      this.fail(4, `unsupported composefs header version ${this.header.version} (expected 1)`);
    }
    const s = SUPERBLOCK_OFFSET;
    this.sb = readSuperblock(this.view, s);
    if (this.sb.magic !== EROFS_MAGIC) {
      this.fail(s, `bad EROFS superblock magic 0x${hex32(this.sb.magic)} (expected 0x${hex32(EROFS_MAGIC)})`);
    }
    this.buildTimeSigned = BigInt.asIntN(64, this.sb.buildTime);
    this.metaBase = this.sb.metaBlkaddr * BLOCK_SIZE;
    this.xattrBase = this.sb.xattrBlkaddr * BLOCK_SIZE;
    if (this.metaBase >= bytes.byteLength) {
      this.fail(s + 40, `meta_blkaddr ${this.sb.metaBlkaddr} is past the end of the image`);
    }
    if (this.xattrBase >= bytes.byteLength) {
      this.fail(s + 44, `xattr_blkaddr ${this.sb.xattrBlkaddr} is past the end of the image`);
    }
  }

  get length(): number {
    return this.bytes.byteLength;
  }

  /** Composefs format version from the header (0, 1 or 2 for valid images). */
  get version(): number {
    return this.header.composefsVersion;
  }

  /** Epoch1 (V0/V1: stubs, escaped whiteouts) vs Epoch2 (V2). */
  get epoch1(): boolean {
    return this.header.composefsVersion < 2;
  }

  fail(offset: number, what: string): never {
    throw new CfsError(`${this.name}: offset ${offset}`, what);
  }

  /** Checks `[offset, offset + len)` lies inside the image. */
  need(offset: number, len: number, what: string, at = offset): void {
    if (!(offset >= 0 && len >= 0 && offset + len <= this.bytes.byteLength)) {
      this.fail(at, `${what} (${len} bytes at offset ${offset}) runs past the end of the ${this.bytes.byteLength}-byte image`);
    }
  }

  /** Superblock checks of composefs-rs `restrict_to_composefs` (§13). */
  validateSuperblock(): void {
    const s = SUPERBLOCK_OFFSET;
    const sb = this.sb;
    const cv = this.header.composefsVersion;
    if (cv > 2) this.fail(12, `unknown composefs_version ${cv} (expected 0, 1 or 2)`);
    if (sb.blkszbits !== BLOCK_BITS) this.fail(s + 12, `blkszbits ${sb.blkszbits} (composefs requires 12)`);
    if ((sb.featureCompat & ~FEATURE_COMPAT_SUPPORTED) !== 0) {
      this.fail(s + 8, `unsupported feature_compat flags 0x${hex32(sb.featureCompat & ~FEATURE_COMPAT_SUPPORTED)}`);
    }
    if ((sb.featureIncompat & ~FEATURE_INCOMPAT_SUPPORTED) !== 0) {
      this.fail(s + 80, `unsupported feature_incompat flags 0x${hex32(sb.featureIncompat & ~FEATURE_INCOMPAT_SUPPORTED)}`);
    }
    if (sb.availableComprAlgs !== 0) this.fail(s + 84, `compression algorithms ${sb.availableComprAlgs} (composefs images are uncompressed)`);
    if (sb.extraDevices !== 0) this.fail(s + 86, `extra_devices ${sb.extraDevices} (composefs images have one device)`);
    if (sb.sbExtslots !== 0) this.fail(s + 13, `sb_extslots ${sb.sbExtslots} (expected 0)`);
    if (sb.metaBlkaddr !== 0) this.fail(s + 40, `meta_blkaddr ${sb.metaBlkaddr} (composefs requires 0)`);
    if (sb.packedNid !== 0n) this.fail(s + 96, `packed_nid ${sb.packedNid} (expected 0)`);
    if (sb.xattrPrefixCount !== 0) this.fail(s + 91, `xattr_prefix_count ${sb.xattrPrefixCount} (expected 0)`);
  }

  /** Decodes the inode at `nid`, checking that its header and xattr block lie inside the image. */
  inode(nid: number, at: number): RawInode {
    const offset = this.metaBase + nid * 32;
    if (!Number.isSafeInteger(offset) || offset + COMPACT_INODE_SIZE > this.bytes.byteLength) {
      this.fail(at, `inode nid ${nid} (offset ${offset}) is past the end of the image`);
    }
    const v = this.view;
    const format = v.getUint16(offset, true);
    const extended = (format & 1) !== 0;
    const layout = (format >> 1) & 7;
    if (layout !== LAYOUT_FLAT_PLAIN && layout !== LAYOUT_FLAT_INLINE && layout !== LAYOUT_CHUNK_BASED) {
      this.fail(offset, `inode nid ${nid} has unsupported data layout ${layout} (i_format 0x${format.toString(16)})`);
    }
    let mode: number, nlink: number, size: bigint, u: number, ino: number, uid: number, gid: number;
    let mtimeSec: bigint, mtimeNsec: number;
    const xattrIcount = v.getUint16(offset + 2, true);
    let headerSize: number;
    if (extended) {
      if (offset + EXTENDED_INODE_SIZE > this.bytes.byteLength) {
        this.fail(offset, `extended inode nid ${nid} (64 bytes) runs past the end of the image`);
      }
      mode = v.getUint16(offset + 4, true);
      size = v.getBigUint64(offset + 8, true);
      u = v.getUint32(offset + 16, true);
      ino = v.getUint32(offset + 20, true);
      uid = v.getUint32(offset + 24, true);
      gid = v.getUint32(offset + 28, true);
      mtimeSec = v.getBigInt64(offset + 32, true);
      mtimeNsec = v.getUint32(offset + 40, true);
      nlink = v.getUint32(offset + 44, true);
      headerSize = EXTENDED_INODE_SIZE;
    } else {
      mode = v.getUint16(offset + 4, true);
      nlink = v.getUint16(offset + 6, true);
      size = BigInt(v.getUint32(offset + 8, true));
      u = v.getUint32(offset + 16, true);
      ino = v.getUint32(offset + 20, true);
      uid = v.getUint16(offset + 24, true);
      gid = v.getUint16(offset + 26, true);
      mtimeSec = this.buildTimeSigned;
      mtimeNsec = this.sb.buildTimeNsec;
      headerSize = COMPACT_INODE_SIZE;
    }
    const xattrSize = xattrBlockSize(xattrIcount);
    const xattrStart = offset + headerSize;
    if (xattrStart + xattrSize > this.bytes.byteLength) {
      this.fail(offset + 2, `inode nid ${nid}: xattr block of ${xattrSize} bytes runs past the end of the image`);
    }
    return {
      nid, offset, extended, format, layout, mode, nlink, size, u, ino, uid, gid, mtimeSec, mtimeNsec,
      xattrIcount, xattrStart, xattrSize, inlineStart: xattrStart + xattrSize,
    };
  }

  /** Type bits of an inode, or an error for an unknown file type. */
  fileType(ino: RawInode): number {
    const t = ino.mode & S_IFMT;
    if (TYPE_NAMES[t] === undefined) {
      this.fail(ino.offset + 4, `inode nid ${ino.nid} has unknown file type in mode 0${ino.mode.toString(8)}`);
    }
    return t;
  }

  /**
   * Size of a flat (non chunk-based) inode's data, checked against the image
   * length: such data lives inside the image, so it cannot be larger.
   */
  flatSize(ino: RawInode): number {
    const n = u64ToNumber(ino.size);
    if (n === null || n > this.bytes.byteLength) {
      this.fail(ino.offset + 8, `inode nid ${ino.nid} has size ${ino.size}, larger than the ${this.bytes.byteLength}-byte image`);
    }
    return n;
  }

  /**
   * The byte ranges holding a flat inode's data: out-of-line blocks first,
   * then the inline tail (§9). Each range is bounds-checked.
   */
  dataRanges(ino: RawInode): { blocksStart: number; blocksLen: number; tailStart: number; tailLen: number } {
    const size = this.flatSize(ino);
    if (ino.layout === LAYOUT_CHUNK_BASED) {
      this.fail(ino.offset, `inode nid ${ino.nid} is chunk-based; its data is not in the image`);
    }
    let blocksLen: number, tailLen: number;
    if (ino.layout === LAYOUT_FLAT_INLINE) {
      tailLen = size % BLOCK_SIZE;
      blocksLen = size - tailLen;
      if (tailLen === 0 && size > 0) {
        this.fail(ino.offset, `inode nid ${ino.nid} is FLAT_INLINE with a block-aligned size ${size}`);
      }
    } else {
      tailLen = 0;
      blocksLen = size;
    }
    const blocksStart = ino.u * BLOCK_SIZE;
    if (blocksLen > 0) this.need(blocksStart, blocksLen, `data blocks of inode nid ${ino.nid}`, ino.offset + 16);
    if (tailLen > 0) this.need(ino.inlineStart, tailLen, `inline data of inode nid ${ino.nid}`, ino.offset);
    return { blocksStart, blocksLen, tailStart: ino.inlineStart, tailLen };
  }

  /** A flat inode's data (blocks then inline tail); a view into the image when contiguous. */
  data(ino: RawInode): Uint8Array {
    const r = this.dataRanges(ino);
    if (r.blocksLen === 0) return this.bytes.subarray(r.tailStart, r.tailStart + r.tailLen);
    if (r.tailLen === 0) return this.bytes.subarray(r.blocksStart, r.blocksStart + r.blocksLen);
    const out = new Uint8Array(r.blocksLen + r.tailLen);
    out.set(this.bytes.subarray(r.blocksStart, r.blocksStart + r.blocksLen), 0);
    out.set(this.bytes.subarray(r.tailStart, r.tailStart + r.tailLen), r.blocksLen);
    return out;
  }

  latin1(start: number, end: number): BStr {
    return (this.buf as LatinBuffer).latin1Slice(start, end);
  }

  /** One xattr entry at `off`, which must end at or before `limit`. */
  private xattrEntry(off: number, limit: number, shared: boolean, what: string): RawXattr {
    if (off + XATTR_ENTRY_SIZE > limit) this.fail(off, `${what}: truncated xattr entry header`);
    const v = this.view;
    const nameLen = v.getUint8(off);
    const index = v.getUint8(off + 1);
    const valueSize = v.getUint16(off + 2, true);
    const prefix = XATTR_PREFIXES[index];
    if (prefix === undefined) this.fail(off + 1, `${what}: unknown xattr name index ${index}`);
    const nameStart = off + XATTR_ENTRY_SIZE;
    const valueStart = nameStart + nameLen;
    const end = valueStart + valueSize;
    if (end > limit) {
      this.fail(off, `${what}: xattr entry of ${XATTR_ENTRY_SIZE + nameLen + valueSize} bytes runs past the end of its ${shared ? "table" : "xattr block"}`);
    }
    return {
      index,
      name: prefix + this.latin1(nameStart, valueStart),
      value: this.bytes.subarray(valueStart, end),
      offset: off,
      shared,
    };
  }

  /**
   * An inode's xattrs in on-disk order: the inline (local) entries, then the
   * shared ones in reference order — the order the C reader produces.
   *
   * `cQuirk` reproduces C's loop condition, which stops before an entry whose
   * 4-byte header ends exactly at the end of the xattr block.
   */
  xattrs(ino: RawInode, cQuirk = false): RawXattr[] {
    if (ino.xattrIcount === 0) return [];
    const what = `inode nid ${ino.nid}`;
    const start = ino.xattrStart;
    const end = start + ino.xattrSize;
    const sharedCount = this.view.getUint8(start + 4);
    let pos = start + XATTR_HEADER_SIZE + 4 * sharedCount;
    if (pos > end) {
      this.fail(start + 4, `${what}: ${sharedCount} shared xattr references do not fit in the ${ino.xattrSize}-byte xattr block`);
    }
    const out: RawXattr[] = [];
    while (cQuirk ? pos + XATTR_ENTRY_SIZE < end : pos < end) {
      const x = this.xattrEntry(pos, end, false, what);
      out.push(x);
      pos = x.offset + roundUp4(XATTR_ENTRY_SIZE + (x.name.length - XATTR_PREFIXES[x.index]!.length) + x.value.byteLength);
    }
    for (let i = 0; i < sharedCount; i++) {
      const refAt = start + XATTR_HEADER_SIZE + 4 * i;
      const ref = this.view.getUint32(refAt, true);
      const off = this.xattrBase + ref * 4;
      if (off + XATTR_ENTRY_SIZE > this.bytes.byteLength) {
        this.fail(refAt, `${what}: shared xattr reference ${ref} (offset ${off}) is past the end of the image`);
      }
      let x = this.sharedCache.get(off);
      if (x === undefined) {
        x = this.xattrEntry(off, this.bytes.byteLength, true, `${what}: shared xattr ${ref}`);
        this.sharedCache.set(off, x);
      }
      out.push(x);
    }
    return out;
  }

  /**
   * The directory entries of a directory inode, in on-disk order ("." and
   * ".." included). Every block is parsed with bounds checks on the entry
   * headers and names.
   */
  dirents(ino: RawInode): RawDirent[] {
    if (ino.layout === LAYOUT_CHUNK_BASED) {
      this.fail(ino.offset, `directory nid ${ino.nid} is chunk-based`);
    }
    const r = this.dataRanges(ino);
    const out: RawDirent[] = [];
    for (let b = 0; b < r.blocksLen; b += BLOCK_SIZE) {
      const len = Math.min(BLOCK_SIZE, r.blocksLen - b);
      this.direntBlock(ino, r.blocksStart + b, len, out);
    }
    if (r.tailLen > 0) this.direntBlock(ino, r.tailStart, r.tailLen, out);
    return out;
  }

  private direntBlock(ino: RawInode, start: number, len: number, out: RawDirent[]): void {
    const what = `directory nid ${ino.nid}`;
    if (len < DIRENT_SIZE) this.fail(start, `${what}: directory block of ${len} bytes is too small for an entry`);
    const v = this.view;
    const first = v.getUint16(start + 8, true);
    if (first % DIRENT_SIZE !== 0 || first < DIRENT_SIZE || first > len) {
      this.fail(start + 8, `${what}: bad first name offset ${first} in a ${len}-byte directory block`);
    }
    const n = first / DIRENT_SIZE;
    for (let i = 0; i < n; i++) {
      const at = start + i * DIRENT_SIZE;
      const nidLo = v.getUint32(at, true);
      const nidHi = v.getUint32(at + 4, true);
      const nameOff = v.getUint16(at + 8, true);
      const type = v.getUint8(at + 10);
      let nameEnd: number;
      if (i + 1 < n) {
        nameEnd = v.getUint16(at + DIRENT_SIZE + 8, true);
        if (nameEnd > len) this.fail(at + DIRENT_SIZE + 8, `${what}: name offset ${nameEnd} is past the end of the ${len}-byte block`);
      } else {
        // The last name runs to the first NUL or the end of the block.
        const nul = nameOff < len ? this.bytes.subarray(start + nameOff, start + len).indexOf(0) : -1;
        nameEnd = nul === -1 ? len : nameOff + nul;
      }
      if (nameOff < first || nameOff > len || nameEnd <= nameOff) {
        this.fail(at + 8, `${what}: entry ${i} has a bad name range ${nameOff}..${nameEnd} in a ${len}-byte block`);
      }
      if (nidHi !== 0) this.fail(at, `${what}: entry ${i} has nid ${BigInt(nidHi) * 2n ** 32n + BigInt(nidLo)}, past the end of the image`);
      out.push({ name: this.latin1(start + nameOff, start + nameEnd), nid: nidLo, type, offset: at });
    }
  }
}

/** Buffer's latin1Slice (Node and Bun; several times faster than toString("latin1", …)). */
type LatinBuffer = Buffer & { latin1Slice(start: number, end: number): string };

function hex32(n: number): string {
  return (n >>> 0).toString(16).padStart(8, "0");
}

function roundUp4(n: number): number {
  return (n + 3) & ~3;
}

/**
 * Work limits of one traversal, so that no image makes a reader do much more
 * work than its size: in a valid image no two inodes share data bytes, so
 * the flat data read (directories, inline files, symlinks) adds up to at
 * most the image length; xattr bytes (shared entries are referenced many
 * times) and path bytes get generous multiples of it.
 */
export class ImageBudget {
  private data: number;
  private xattr: number;
  private path: number;
  constructor(private readonly img: ErofsImage) {
    this.data = img.length;
    this.xattr = 64 * img.length + (1 << 20);
    this.path = 256 * img.length + (16 << 20);
  }
  chargeData(n: number, at: number): void {
    this.data -= n;
    if (this.data < 0) this.img.fail(at, "inodes share data bytes (the data read exceeds the image size)");
  }
  chargeXattrs(list: readonly RawXattr[], at: number): void {
    for (const x of list) this.xattr -= x.name.length + x.value.byteLength;
    if (this.xattr < 0) this.img.fail(at, "xattrs referenced by the inodes exceed 64 times the image size");
  }
  chargePath(n: number, at: number): void {
    this.path -= n;
    if (this.path < 0) this.img.fail(at, "paths add up to more than 256 times the image size");
  }
}

function isHex2(name: BStr): boolean {
  return name.length === 2 && /^[0-9a-f]{2}$/.test(name);
}

const MIN_SAFE = BigInt(Number.MIN_SAFE_INTEGER);
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** Signed seconds as a safe integer, or null. */
function signedSeconds(s: bigint): number | null {
  return s >= MIN_SAFE && s <= MAX_SAFE ? Number(s) : null;
}

// ---- image → tree ------------------------------------------------------------------

export interface ReadOptions {
  /** Name of the image in error messages (default "image"). */
  name?: string;
  /**
   * Validate like composefs-rs `restrict_to_composefs` + fsck (§13): superblock
   * features, "." and "..", dirent types, sorted unique names, nlink values,
   * epoch invariants for whiteouts, V2 inline/symlink limits, metacopy
   * format. Without it the reader accepts what C libcomposefs accepts (as
   * far as the tree can represent it) and keeps on-disk leaf nlink values
   * that differ from the link count in `Leaf.nlink`.
   */
  strict?: boolean;
  /** When set, metacopy digests of another algorithm are errors (strict) or ignored. */
  algorithm?: "sha256" | "sha512";
  /** Also return per-node facts from the image (`ImageTree.info`). */
  info?: boolean;
}

/** Facts about a node that the tree does not keep. */
export interface NodeInfo {
  nid: number;
  /** i_size as stored (the EROFS directory size for directories). */
  size: bigint;
  /** i_nlink as stored. */
  nlink: number;
  /** i_ino as stored. */
  ino: number;
  /**
   * The inode's xattrs exactly as stored, in on-disk order (inline entries,
   * then shared ones): full names before any unescaping, internal overlay
   * xattrs included.
   */
  rawXattrs: RawXattr[];
}

export interface ImageTree {
  root: Dir;
  /** composefs_version from the header. */
  version: number;
  /** Present when `ReadOptions.info` was set. Hardlinked leaves have one entry. */
  info?: Map<Node, NodeInfo>;
}

interface PendingDir {
  dir: Dir;
  ino: RawInode;
  parentNid: number;
  depth: number;
}

const METACOPY_ALGS: Record<number, { name: "sha256" | "sha512"; len: number }> = {
  1: { name: "sha256", len: 32 },
  2: { name: "sha512", len: 64 },
};

/** Reads an image into a tree (erofs.md §13). Throws CfsError for anything invalid. */
export function readImage(bytes: Uint8Array, options: ReadOptions = {}): ImageTree {
  const img: ErofsImage = new ErofsImage(bytes, options.name);
  return new TreeReader(img, options).read();
}

class TreeReader {
  private readonly img: ErofsImage;
  private readonly strict: boolean;
  private readonly opts: ReadOptions;
  private readonly leaves = new Map<number, { leaf: Leaf; ino: RawInode; refs: number }>();
  private readonly dirNids = new Set<number>();
  private readonly info: Map<Node, NodeInfo> | undefined;
  private readonly budget: ImageBudget;
  /** The xattrs read last (by leaf() / dirXattrs()), for NodeInfo. */
  private lastRaw: RawXattr[] = [];

  constructor(img: ErofsImage, opts: ReadOptions) {
    this.img = img;
    this.budget = new ImageBudget(img);
    this.opts = opts;
    this.strict = opts.strict === true;
    this.info = opts.info === true ? new Map() : undefined;
  }

  read(): ImageTree {
    const img: ErofsImage = this.img;
    if (this.strict) img.validateSuperblock();
    else if (img.sb.blkszbits !== BLOCK_BITS) img.fail(SUPERBLOCK_OFFSET + 12, `blkszbits ${img.sb.blkszbits} (composefs requires 12)`);
    const rootNid = img.sb.rootNid;
    const rootIno = img.inode(rootNid, SUPERBLOCK_OFFSET + 14);
    if ((rootIno.mode & S_IFMT) !== S_IFDIR) {
      img.fail(rootIno.offset + 4, `root inode nid ${rootNid} is not a directory (mode 0${rootIno.mode.toString(8)})`);
    }
    const root: Dir = { kind: "dir", stat: this.stat(rootIno), entries: new Map() };
    this.dirNids.add(rootNid);
    this.record(root, rootIno);
    const stack: PendingDir[] = [{ dir: root, ino: rootIno, parentNid: rootNid, depth: 0 }];
    while (stack.length > 0) {
      const p = stack.pop()!;
      this.readDir(p, stack);
    }
    this.checkLeafLinks();
    const out: ImageTree = { root, version: img.version };
    if (this.info) out.info = this.info;
    return out;
  }

  /** NodeInfo of a node; a directory's rawXattrs are filled in when it is read. */
  private record(node: Node, ino: RawInode, rawXattrs: RawXattr[] = []): void {
    this.info?.set(node, { nid: ino.nid, size: ino.size, nlink: ino.nlink, ino: ino.ino, rawXattrs });
  }

  private readDir(p: PendingDir, stack: PendingDir[]): void {
    const img: ErofsImage = this.img;
    const { dir, ino } = p;
    const isRoot = p.depth === 0;
    this.budget.chargeData(img.flatSize(ino), ino.offset);
    const ents = img.dirents(ino);
    let sawDot = false;
    let sawDotDot = false;
    let subdirs = 0;
    let escapedWhiteouts = false;
    let prev: BStr | null = null;
    for (const e of ents) {
      if (this.strict) {
        if (prev !== null && !(prev < e.name)) {
          img.fail(e.offset, `directory nid ${ino.nid}: entry ${JSON.stringify(e.name)} is ${prev === e.name ? "a duplicate" : "out of order"}`);
        }
        prev = e.name;
      }
      if (e.name === "." || e.name === "..") {
        if (this.strict) {
          const want = e.name === "." ? ino.nid : p.parentNid;
          if (e.nid !== want) img.fail(e.offset, `directory nid ${ino.nid}: "${e.name}" points to nid ${e.nid}, expected ${want}`);
          if (e.type !== 2) img.fail(e.offset + 10, `directory nid ${ino.nid}: "${e.name}" has file type ${e.type}, expected 2`);
        }
        if (e.name === ".") sawDot = true;
        else sawDotDot = true;
        continue;
      }
      this.checkName(ino, e);
      const child = img.inode(e.nid, e.offset);
      const type = img.fileType(child);
      if (this.strict && fileTypeOfMode(type) !== e.type) {
        // Escaped whiteouts are regular files in both the inode and the dirent.
        img.fail(e.offset + 10, `entry ${JSON.stringify(e.name)}: dirent file type ${e.type} does not match the inode's ${TYPE_NAMES[type]}`);
      }
      if (dir.entries.has(e.name)) img.fail(e.offset, `directory nid ${ino.nid}: duplicate entry ${JSON.stringify(e.name)}`);
      if (type === S_IFDIR) {
        if (this.dirNids.has(e.nid)) {
          img.fail(e.offset, `entry ${JSON.stringify(e.name)}: directory nid ${e.nid} is reachable twice (a directory cycle or hardlink)`);
        }
        if (p.depth + 1 > MAX_DEPTH) img.fail(e.offset, `directories nested deeper than ${MAX_DEPTH} levels`);
        this.dirNids.add(e.nid);
        const sub: Dir = { kind: "dir", stat: this.stat(child), entries: new Map() };
        this.record(sub, child);
        dir.entries.set(e.name, sub);
        subdirs++;
        stack.push({ dir: sub, ino: child, parentNid: ino.nid, depth: p.depth + 1 });
        continue;
      }
      const known = this.leaves.get(e.nid);
      if (known !== undefined) {
        known.refs++;
        if (known.leaf.content.type === "chr" && known.leaf.content.rdev === 0) img.fail(e.offset, `entry ${JSON.stringify(e.name)}: whiteout nid ${e.nid} is hardlinked`);
        dir.entries.set(e.name, known.leaf);
        continue;
      }
      // Epoch1 root stubs 00..ff: native chr 0:0 under two-hex-digit names.
      if (isWhiteoutIno(child)) {
        if (child.nlink > 1) img.fail(child.offset + 6, `whiteout ${JSON.stringify(e.name)} (nid ${e.nid}) has nlink ${child.nlink}`);
        if (img.epoch1) {
          if (isRoot && isHex2(e.name)) continue;
          if (this.strict) img.fail(e.offset, `entry ${JSON.stringify(e.name)}: native whiteout outside the root stubs in a V${img.version} image`);
        }
      }
      const leaf = this.leaf(child, type, e);
      if (type === S_IFREG && leaf.content.type === "chr") escapedWhiteouts = true;
      this.leaves.set(e.nid, { leaf, ino: child, refs: 1 });
      this.record(leaf, child, this.lastRaw);
      dir.entries.set(e.name, leaf);
    }
    dir.stat.xattrs = this.dirXattrs(ino, escapedWhiteouts);
    const inf = this.info?.get(dir);
    if (inf !== undefined) inf.rawXattrs = this.lastRaw;
    if (this.strict) {
      if (!sawDot) img.fail(ino.offset, `directory nid ${ino.nid} has no "." entry`);
      if (!sawDotDot) img.fail(ino.offset, `directory nid ${ino.nid} has no ".." entry`);
      if (ino.nlink !== 2 + subdirs) {
        img.fail(ino.offset + (ino.extended ? 44 : 6), `directory nid ${ino.nid} has nlink ${ino.nlink}, expected ${2 + subdirs} (2 + ${subdirs} subdirectories)`);
      }
    }
  }

  private checkName(dirIno: RawInode, e: RawDirent): void {
    if (e.name.includes("/") || e.name.includes("\0")) {
      this.img.fail(e.offset + 8, `directory nid ${dirIno.nid}: entry name ${JSON.stringify(e.name)} contains "/" or NUL`);
    }
    if (this.strict && e.name.length > 255) {
      this.img.fail(e.offset + 8, `directory nid ${dirIno.nid}: entry name of ${e.name.length} bytes (max 255)`);
    }
  }

  private checkLeafLinks(): void {
    for (const { leaf, ino, refs } of this.leaves.values()) {
      if (ino.nlink === refs) continue;
      if (this.strict) {
        this.img.fail(ino.offset + (ino.extended ? 44 : 6), `inode nid ${ino.nid} has nlink ${ino.nlink} but ${refs} directory entries`);
      }
      leaf.nlink = ino.nlink;
    }
  }

  private stat(ino: RawInode): Stat {
    const img: ErofsImage = this.img;
    const sec = signedSeconds(ino.mtimeSec);
    const at = ino.extended ? ino.offset + 32 : SUPERBLOCK_OFFSET + 24;
    if (sec === null) img.fail(at, `inode nid ${ino.nid}: mtime ${ino.mtimeSec} is out of range`);
    if (ino.mtimeNsec > 999_999_999) img.fail(at + 8, `inode nid ${ino.nid}: mtime nanoseconds ${ino.mtimeNsec} out of range`);
    return {
      mode: ino.mode & 0o7777,
      uid: ino.uid,
      gid: ino.gid,
      mtimeSec: sec,
      mtimeNsec: ino.mtimeNsec,
      xattrs: new Map(),
    };
  }

  /**
   * Directory xattrs: undo escaping; in a directory that holds escaped
   * whiteouts, drop the markers the Epoch1 writer added (`whiteouts`, and
   * the V1 `opaque=x` pair).
   */
  private dirXattrs(ino: RawInode, holdsEscapedWhiteouts: boolean): Map<BStr, Uint8Array> {
    const raw = this.img.xattrs(ino);
    this.budget.chargeXattrs(raw, ino.offset);
    this.lastRaw = raw;
    const out = new Map<BStr, Uint8Array>();
    if (raw.length === 0) return out;
    const marked = holdsEscapedWhiteouts && raw.some((x) => x.name === XATTR_ESC_WHITEOUTS);
    for (const x of raw) {
      if (marked) {
        if (x.name === XATTR_ESC_WHITEOUTS || x.name === XATTR_USER_WHITEOUTS) continue;
        // V1 (not V0) also marks such directories opaque=x.
        if (this.img.version >= 1 && (x.name === XATTR_ESC_OPAQUE || x.name === XATTR_USER_OPAQUE) && x.value.byteLength === 1 && x.value[0] === 0x78) continue;
      }
      this.keepXattr(out, x, ino);
    }
    return out;
  }

  /** Adds a user-visible xattr (unescaping trusted.overlay.overlay.X; dropping other trusted.overlay.*). */
  private keepXattr(out: Map<BStr, Uint8Array>, x: RawXattr, ino: RawInode): void {
    let name = x.name;
    if (name.startsWith(XATTR_OVERLAY_PREFIX)) {
      if (!name.startsWith(XATTR_ESCAPE_PREFIX)) return;
      name = XATTR_OVERLAY_PREFIX + name.slice(XATTR_ESCAPE_PREFIX.length);
    }
    if (this.strict && out.has(name)) this.img.fail(x.offset, `inode nid ${ino.nid}: duplicate xattr ${JSON.stringify(name)}`);
    out.set(name, x.value);
  }

  private leaf(ino: RawInode, type: number, e: RawDirent): Leaf {
    const img: ErofsImage = this.img;
    const stat = this.stat(ino);
    const raw = img.xattrs(ino);
    this.budget.chargeXattrs(raw, ino.offset);
    this.lastRaw = raw;
    let content: LeafContent;
    switch (type) {
      case S_IFREG: {
        const escapedWhiteout = img.epoch1 && raw.some((x) => x.name === XATTR_ESC_WHITEOUT);
        if (escapedWhiteout) {
          if (ino.nlink > 1) img.fail(ino.offset, `escaped whiteout ${JSON.stringify(e.name)} (nid ${ino.nid}) has nlink ${ino.nlink}`);
          for (const x of raw) {
            if (x.name === XATTR_ESC_WHITEOUT || x.name === XATTR_USER_WHITEOUT) continue;
            this.keepXattr(stat.xattrs, x, ino);
          }
          return { kind: "leaf", stat, content: { type: "chr", rdev: 0 } };
        }
        if (this.strict && !img.epoch1 && raw.some((x) => x.name === XATTR_ESC_WHITEOUT)) {
          img.fail(ino.offset, `entry ${JSON.stringify(e.name)}: escaped whiteout in a V2 image`);
        }
        content = this.regular(ino, raw, e);
        for (const x of raw) {
          if (x.name === XATTR_METACOPY || x.name === XATTR_REDIRECT) continue;
          this.keepXattr(stat.xattrs, x, ino);
        }
        return { kind: "leaf", stat, content };
      }
      case S_IFLNK: {
        if (ino.layout === LAYOUT_CHUNK_BASED) img.fail(ino.offset, `symlink nid ${ino.nid} is chunk-based`);
        this.budget.chargeData(img.flatSize(ino), ino.offset);
        const target = img.data(ino);
        if (target.byteLength >= PATH_MAX) img.fail(ino.offset + 8, `symlink nid ${ino.nid} has a ${target.byteLength}-byte target (max 4095)`);
        if (this.strict) {
          if (target.byteLength === 0) img.fail(ino.offset + 8, `symlink nid ${ino.nid} has an empty target`);
          if (!img.epoch1 && target.byteLength > V2_MAX_SYMLINK) {
            img.fail(ino.offset + 8, `symlink nid ${ino.nid} has a ${target.byteLength}-byte target (V2 max ${V2_MAX_SYMLINK})`);
          }
        }
        content = { type: "symlink", target: copy(target) };
        break;
      }
      case S_IFCHR:
      case S_IFBLK:
        content = { type: type === S_IFCHR ? "chr" : "blk", rdev: ino.u };
        break;
      case S_IFIFO:
        content = { type: "fifo" };
        break;
      default:
        content = { type: "socket" };
        break;
    }
    if (this.strict && type !== S_IFLNK && ino.size !== 0n) {
      img.fail(ino.offset + 8, `${TYPE_NAMES[type]} nid ${ino.nid} has size ${ino.size}`);
    }
    for (const x of raw) this.keepXattr(stat.xattrs, x, ino);
    return { kind: "leaf", stat, content };
  }

  private regular(ino: RawInode, raw: RawXattr[], e: RawDirent): Regular {
    const img: ErofsImage = this.img;
    let digest: Uint8Array | null = null;
    let payload: BStr | null = null;
    let sawMeta = false;
    for (const x of raw) {
      if (x.name === XATTR_METACOPY) {
        sawMeta = true;
        digest = this.metacopy(x, ino);
      } else if (x.name === XATTR_REDIRECT) {
        const v = bstr(x.value);
        payload = v.startsWith("/") ? v.slice(1) : v;
        if (payload === "") payload = null;
      }
    }
    if (ino.layout === LAYOUT_CHUNK_BASED) {
      return { type: "regular", size: ino.size, inline: null, digest, payload };
    }
    this.budget.chargeData(img.flatSize(ino), ino.offset);
    const data = img.data(ino);
    if (this.strict && !img.epoch1 && data.byteLength > V2_MAX_INLINE) {
      img.fail(ino.offset + 8, `inline file ${JSON.stringify(e.name)} has ${data.byteLength} bytes (V2 max ${V2_MAX_INLINE})`);
    }
    if (data.byteLength === 0) {
      // composefs-rs External(…, 0) is a metacopy on an empty file; keep it.
      return { type: "regular", size: 0n, inline: digest || payload ? null : new Uint8Array(0), digest, payload };
    }
    if (this.strict && (sawMeta || payload !== null)) {
      img.fail(ino.offset, `inline file ${JSON.stringify(e.name)} carries overlay metacopy/redirect xattrs`);
    }
    return { type: "regular", size: BigInt(data.byteLength), inline: copy(data), digest: null, payload: null };
  }

  /** The digest of a valid metacopy xattr; null for an empty one. */
  private metacopy(x: RawXattr, ino: RawInode): Uint8Array | null {
    const v = x.value;
    if (v.byteLength === 0) return null;
    const alg = v.byteLength >= 4 ? METACOPY_ALGS[v[3]!] : undefined;
    const ok = alg !== undefined && v[0] === 0 && v[1] === v.byteLength && v[2] === 0 && v.byteLength === 4 + alg.len;
    if (!ok) {
      if (this.strict) this.img.fail(x.offset, `inode nid ${ino.nid}: malformed trusted.overlay.metacopy (${v.byteLength} bytes: ${toHex(v.subarray(0, 4))}…)`);
      return null;
    }
    if (this.opts.algorithm !== undefined && alg.name !== this.opts.algorithm) {
      if (this.strict) this.img.fail(x.offset, `inode nid ${ino.nid}: ${alg.name} metacopy digest in a ${this.opts.algorithm} repository`);
      return null;
    }
    return copy(v.subarray(4));
  }
}

function isWhiteoutIno(ino: RawInode): boolean {
  return (ino.mode & S_IFMT) === S_IFCHR && ino.u === 0;
}

function copy(b: Uint8Array): Uint8Array {
  return new Uint8Array(b);
}

// ---- object references -------------------------------------------------------------

export interface ImageObjects {
  /**
   * Object ids (lower-case hex) the image refers to: the digest of each valid
   * metacopy, or the id named by a well-formed `/XX/<hex>` redirect for
   * files without one. Sorted, unique.
   */
  ids: string[];
  /** Every redirect target without its leading "/" (what C `composefs-info objects` lists). Sorted, unique. */
  payloads: BStr[];
}

/** The objects an image references (for GC and fsck). */
export function imageObjects(bytes: Uint8Array, options: ReadOptions = {}): ImageObjects {
  const { root } = readImage(bytes, { ...options, info: false });
  const ids = new Set<string>();
  const payloads = new Set<BStr>();
  const seen = new Set<Leaf>();
  const stack: Dir[] = [root];
  while (stack.length > 0) {
    const d = stack.pop()!;
    for (const child of d.entries.values()) {
      if (child.kind === "dir") {
        stack.push(child);
        continue;
      }
      if (seen.has(child)) continue;
      seen.add(child);
      const c = child.content;
      if (c.type !== "regular") continue;
      if (c.payload !== null) payloads.add(c.payload);
      if (c.digest !== null) ids.add(toHex(c.digest));
      else if (c.payload !== null) {
        const id = objectIdFromPath(c.payload);
        if (id !== null) ids.add(id);
      }
    }
  }
  return { ids: [...ids].sort(), payloads: [...payloads].sort() };
}

/** `XX/<rest>` (sha256 or sha512 length) → hex id, else null. */
export function objectIdFromPath(path: BStr): string | null {
  const m = /^([0-9a-f]{2})\/([0-9a-f]+)$/.exec(path);
  if (m === null) return null;
  const hex = m[1]! + m[2]!;
  return (hex.length === 64 || hex.length === 128) && fromHex(hex) !== null ? hex : null;
}

// ---- the C libcomposefs view ---------------------------------------------------------

/**
 * A node as C `lcfs_load_node_from_image` builds it; what `composefs-info`
 * prints. Strings are C strings (cut at the first NUL).
 */
export interface CNode {
  name: BStr;
  /** Full st_mode as stored (an escaped whiteout reads as chr). */
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  size: bigint;
  /** Seconds as a signed 64-bit value. */
  mtimeSec: bigint;
  mtimeNsec: number;
  /** Symlink target, or the redirect of a regular file (without its leading "/"). */
  payload: BStr | null;
  /** Inline content of a flat regular file with a nonzero size. */
  content: Uint8Array | null;
  /** 32-byte digest from a 36-byte metacopy value. */
  digest: Uint8Array | null;
  /** In the order C ends up with (local then shared, after unescaping). */
  xattrs: [BStr, Uint8Array][];
  /** Sorted by name. */
  children: CNode[];
  /** Set for second and later references to an inode: the first (depth-first) node. */
  linkTo: CNode | null;
  parent: CNode | null;
}

export interface CLoadOptions {
  name?: string;
  /** Only these names of the root directory are loaded (`composefs-info --filter`). */
  filter?: ReadonlySet<BStr>;
}

const C_XATTR_LIMIT = 0xffff;

/** Loads an image the way C libcomposefs does (for `composefs-info`). */
export function loadImageC(bytes: Uint8Array, options: CLoadOptions = {}): CNode {
  const img: ErofsImage = new ErofsImage(bytes, options.name);
  // Every inode is built once (later references link to it), which is also
  // what stops directory cycles.
  const byNid = new Map<number, CNode>();
  const budget = new ImageBudget(img);
  const dirents = (ino: RawInode): RawDirent[] => {
    budget.chargeData(img.flatSize(ino), ino.offset);
    return img.dirents(ino);
  };

  const build = (nid: number, at: number, name: BStr, parent: CNode | null): CNode | "skip" => {
    const ino = img.inode(nid, at);
    const existing = byNid.get(nid);
    if (existing !== undefined) {
      // C: a second reference becomes a fresh node (mode 0, nlink 1) linking to the first.
      return {
        name, mode: 0, nlink: 1, uid: 0, gid: 0, rdev: 0, size: 0n, mtimeSec: 0n, mtimeNsec: 0,
        payload: null, content: null, digest: null, xattrs: [], children: [], linkTo: existing, parent,
      };
    }
    const type = img.fileType(ino);
    const sec = ino.mtimeSec;
    const node: CNode = {
      name, mode: ino.mode, nlink: ino.nlink, uid: ino.uid, gid: ino.gid,
      rdev: type === S_IFCHR || type === S_IFBLK ? ino.u : 0,
      size: ino.size, mtimeSec: sec, mtimeNsec: ino.mtimeNsec,
      payload: null, content: null, digest: null, xattrs: [], children: [], linkTo: null, parent,
    };
    if (type === S_IFCHR && node.rdev === 0) {
      // Native whiteouts (the root stubs 00..ff, V2 whiteouts) are skipped.
      if (ino.nlink > 1) img.fail(ino.offset + 6, `whiteout nid ${nid} has nlink ${ino.nlink}`);
      return "skip";
    }
    byNid.set(nid, node);
    if (type === S_IFLNK) {
      if (ino.size >= BigInt(PATH_MAX)) img.fail(ino.offset + 8, `symlink nid ${nid} has a ${ino.size}-byte target (max 4095)`);
      if (ino.layout === LAYOUT_CHUNK_BASED) img.fail(ino.offset, `symlink nid ${nid} is chunk-based`);
      budget.chargeData(img.flatSize(ino), ino.offset);
      node.payload = cString(bstr(img.data(ino)));
    } else if (type === S_IFREG && ino.size !== 0n) {
      if (ino.layout === LAYOUT_CHUNK_BASED) {
        // external or sparse: nothing in the image
      } else {
        if (ino.size > BigInt(Math.min(C_INLINE_CONTENT_MAX, img.length))) {
          img.fail(ino.offset + 8, `inline file nid ${nid} has size ${ino.size} (max ${C_INLINE_CONTENT_MAX})`);
        }
        budget.chargeData(img.flatSize(ino), ino.offset);
        node.content = img.data(ino); // a view: the image outlives the nodes
      }
    }
    let xattrSize = 0;
    const rawXattrs = img.xattrs(ino, true);
    budget.chargeXattrs(rawXattrs, ino.offset);
    for (const x of rawXattrs) {
      let xname = cString(x.name);
      const isReg = (node.mode & S_IFMT) === S_IFREG;
      if (xname === XATTR_REDIRECT) {
        if (isReg) node.payload = cRedirect(img, x);
        continue;
      }
      if (xname === XATTR_METACOPY) {
        if (isReg && x.value.byteLength === 36) node.digest = copy(x.value.subarray(4));
        continue;
      }
      if (xname === XATTR_ESC_WHITEOUT && isReg) {
        node.mode = (node.mode & ~S_IFMT) | S_IFCHR;
        node.rdev = 0;
        node.size = 0n;
        continue;
      }
      if (xname === XATTR_ESC_WHITEOUTS || xname === XATTR_USER_WHITEOUT || xname === XATTR_USER_WHITEOUTS) continue;
      if (xname.startsWith(XATTR_OVERLAY_PREFIX)) {
        if (!xname.startsWith(XATTR_ESCAPE_PREFIX)) continue;
        xname = "trusted." + xname.slice(XATTR_OVERLAY_PREFIX.length);
      }
      // lcfs_node_set_xattr_internal: replace = swap-remove + append; size accounting.
      if (xname.length === 0 || xname.length > 255) img.fail(x.offset, `inode nid ${nid}: xattr name of ${xname.length} bytes`);
      const i = node.xattrs.findIndex(([k]) => k === xname);
      if (i >= 0) {
        const old = node.xattrs[i]!;
        const last = node.xattrs.pop()!;
        if (i < node.xattrs.length) node.xattrs[i] = last;
        xattrSize = node.xattrs.length > 0 ? xattrSize - (2 * XATTR_ENTRY_SIZE - 1 + xname.length + old[1].byteLength) : 0;
      }
      let entrySize = 2 * XATTR_ENTRY_SIZE - 1 + xname.length + x.value.byteLength;
      if (node.xattrs.length === 0) entrySize += XATTR_HEADER_SIZE;
      if (xattrSize + entrySize > C_XATTR_LIMIT) img.fail(x.offset, `inode nid ${nid}: xattrs exceed 65535 bytes`);
      xattrSize += entrySize;
      node.xattrs.push([xname, x.value]);
    }
    return node;
  };

  const rootIno = img.inode(img.sb.rootNid, SUPERBLOCK_OFFSET + 14);
  const root = build(img.sb.rootNid, SUPERBLOCK_OFFSET + 14, "", null);
  if (root === "skip" || (root.mode & S_IFMT) !== S_IFDIR) {
    img.fail(rootIno.offset + 4, `root inode nid ${img.sb.rootNid} is not a directory`);
  }
  // Depth-first in on-disk entry order, like C's recursion (which decides
  // which occurrence of a hardlinked inode is the "target").
  // Duplicate names: entries of valid images come sorted, so comparing with
  // the previous name suffices; a Set is built only for unsorted directories.
  interface Frame { node: CNode; ents: RawDirent[]; i: number; prev: BStr | null; names: Set<BStr> | null; depth: number; pathLen: number }
  const frames: Frame[] = [{ node: root, ents: dirents(rootIno), i: 0, prev: null, names: null, depth: 0, pathLen: 0 }];
  while (frames.length > 0) {
    const f = frames[frames.length - 1]!;
    if (f.i >= f.ents.length) {
      f.node.children.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      frames.pop();
      continue;
    }
    const e = f.ents[f.i++]!;
    if (e.name === "." || e.name === "..") continue;
    const name = cString(e.name);
    if (f.depth === 0 && options.filter !== undefined && !options.filter.has(name)) continue;
    if (name.length === 0) img.fail(e.offset + 8, `empty entry name`);
    if (name.length > 255) img.fail(e.offset + 8, `entry name of ${name.length} bytes (max 255)`);
    if (f.names === null && f.prev !== null && !(f.prev < name)) f.names = new Set(f.node.children.map((c) => c.name));
    if (f.names !== null && f.names.has(name)) img.fail(e.offset, `duplicate entry ${JSON.stringify(name)}`);
    const child = build(e.nid, e.offset, name, f.node);
    if (child === "skip") continue;
    const pathLen = f.pathLen + 1 + name.length;
    budget.chargePath(pathLen, e.offset);
    f.prev = name;
    f.names?.add(name);
    f.node.children.push(child);
    if (child.linkTo === null && (child.mode & S_IFMT) === S_IFDIR) {
      if (f.depth + 1 > MAX_DEPTH) img.fail(e.offset, `directories nested deeper than ${MAX_DEPTH} levels`);
      const ino = img.inode(e.nid, e.offset);
      frames.push({ node: child, ents: dirents(ino), i: 0, prev: null, names: null, depth: f.depth + 1, pathLen });
    }
  }
  return root;
}

function cString(s: BStr): BStr {
  const i = s.indexOf("\0");
  return i === -1 ? s : s.slice(0, i);
}

/**
 * The payload C derives from a redirect value. For a value "/…" C skips the
 * slash but then copies up to `len + 1` bytes (stopping at a NUL), so the
 * byte after the value is included when it is not zero.
 */
function cRedirect(img: ErofsImage, x: RawXattr): BStr {
  const v = x.value;
  if (v.byteLength > 1 && v[0] === 0x2f) {
    const start = v.byteOffset - img.bytes.byteOffset + 1;
    const end = Math.min(start + v.byteLength, img.length);
    return cString(img.latin1(start, end));
  }
  return cString(bstr(v));
}
