// On-disk structures of composefs EROFS images (erofs.md §3–§9).
//
// Pure definitions shared by the writer (writer.ts) and the reader
// (reader.ts): constants, layout enums, the xattr prefix table and small
// codecs that read/write one struct at a byte offset of a DataView. All
// integers are little-endian. Codecs never allocate more than the returned
// object and never validate semantics — that is the reader's job; they only
// move fields in and out of bytes.
//
// Region map of an image (offsets in bytes):
//   0      composefs header (32 B), zero padding up to 1024
//   1024   EROFS superblock (128 B)
//   1152   inode table (inodes on 32-byte slots; nid = offset / 32)
//   …      shared xattr table, zero padding to 4096
//   …      data blocks (4096 B each); file length is a multiple of 4096

import type { BStr } from "../bytes.ts";

// ---- sizes ---------------------------------------------------------------------

export const BLOCK_BITS = 12;
export const BLOCK_SIZE = 4096;

/** Inodes start on 32-byte slots; a nid is the byte offset / 32 (meta_blkaddr is 0). */
export const INODE_SLOT_BITS = 5;
export const INODE_SLOT_SIZE = 32;

export const COMPACT_INODE_SIZE = 32;
export const EXTENDED_INODE_SIZE = 64;

/** Longest file name EROFS (and composefs) accepts, in bytes. */
export const EROFS_NAME_LEN = 255;

// ---- composefs header (offset 0) ----------------------------------------------------

export const COMPOSEFS_MAGIC = 0xd078629a;
/** `version` field of the composefs header (LCFS_EROFS_VERSION); always 1. */
export const COMPOSEFS_HEADER_VERSION = 1;
export const COMPOSEFS_HEADER_SIZE = 32;
/** Header flag: some inode carries a POSIX ACL xattr (Epoch1 only). Without it C mounts with `noacl`. */
export const COMPOSEFS_FLAG_HAS_ACL = 0x1;

/** composefs format versions (the header's `composefs_version`). */
export type FormatVersion = 0 | 1 | 2;
/** Layout family: Epoch1 = V0/V1 (C mkcomposefs), Epoch2 = V2 (legacy composefs-rs). */
export type FormatEpoch = 1 | 2;

export function epochOf(version: FormatVersion): FormatEpoch {
  return version === 2 ? 2 : 1;
}

export interface ComposefsHeader {
  magic: number;
  version: number;
  flags: number;
  composefsVersion: number;
}

export function writeComposefsHeader(dv: DataView, off: number, h: ComposefsHeader): void {
  dv.setUint32(off + 0, h.magic, true);
  dv.setUint32(off + 4, h.version, true);
  dv.setUint32(off + 8, h.flags, true);
  dv.setUint32(off + 12, h.composefsVersion, true);
  // 16..31: unused, zero
  for (let i = 16; i < COMPOSEFS_HEADER_SIZE; i += 4) dv.setUint32(off + i, 0, true);
}

export function readComposefsHeader(dv: DataView, off: number): ComposefsHeader {
  return {
    magic: dv.getUint32(off + 0, true),
    version: dv.getUint32(off + 4, true),
    flags: dv.getUint32(off + 8, true),
    composefsVersion: dv.getUint32(off + 12, true),
  };
}

// ---- superblock (offset 1024) --------------------------------------------------------

export const EROFS_SUPER_OFFSET = 1024;
export const EROFS_SUPER_MAGIC_V1 = 0xe0f5e1e2;
export const EROFS_SUPERBLOCK_SIZE = 128;
/** First byte after the superblock: where the root inode normally sits (nid 36). */
export const EROFS_INODES_START = EROFS_SUPER_OFFSET + EROFS_SUPERBLOCK_SIZE;

export const FEATURE_COMPAT_SB_CHKSUM = 0x1;
export const FEATURE_COMPAT_MTIME = 0x2;
export const FEATURE_COMPAT_XATTR_FILTER = 0x4;
/** What composefs writers set: MTIME | XATTR_FILTER. */
export const COMPOSEFS_FEATURE_COMPAT = FEATURE_COMPAT_MTIME | FEATURE_COMPAT_XATTR_FILTER;
/** What a composefs reader accepts in feature_compat. */
export const FEATURE_COMPAT_SUPPORTED =
  FEATURE_COMPAT_SB_CHKSUM | FEATURE_COMPAT_MTIME | FEATURE_COMPAT_XATTR_FILTER;

export const FEATURE_INCOMPAT_CHUNKED_FILE = 0x4;
/** What a composefs reader accepts in feature_incompat (writers leave it 0). */
export const FEATURE_INCOMPAT_SUPPORTED = FEATURE_INCOMPAT_CHUNKED_FILE;

export interface Superblock {
  magic: number;
  checksum: number;
  featureCompat: number;
  blkszbits: number;
  sbExtslots: number;
  rootNid: number;
  /** u64 */
  inos: bigint;
  /** u64 (seconds, two's complement for negative times) */
  buildTime: bigint;
  buildTimeNsec: number;
  blocks: number;
  metaBlkaddr: number;
  xattrBlkaddr: number;
  uuid: Uint8Array; // 16 bytes
  volumeName: Uint8Array; // 16 bytes
  featureIncompat: number;
  availableComprAlgs: number;
  extraDevices: number;
  devtSlotoff: number;
  dirblkbits: number;
  xattrPrefixCount: number;
  xattrPrefixStart: number;
  /** u64 */
  packedNid: bigint;
  xattrFilterReserved: number;
}

/** A superblock with every field zero except magic and blkszbits. */
export function emptySuperblock(): Superblock {
  return {
    magic: EROFS_SUPER_MAGIC_V1,
    checksum: 0,
    featureCompat: 0,
    blkszbits: BLOCK_BITS,
    sbExtslots: 0,
    rootNid: 0,
    inos: 0n,
    buildTime: 0n,
    buildTimeNsec: 0,
    blocks: 0,
    metaBlkaddr: 0,
    xattrBlkaddr: 0,
    uuid: new Uint8Array(16),
    volumeName: new Uint8Array(16),
    featureIncompat: 0,
    availableComprAlgs: 0,
    extraDevices: 0,
    devtSlotoff: 0,
    dirblkbits: 0,
    xattrPrefixCount: 0,
    xattrPrefixStart: 0,
    packedNid: 0n,
    xattrFilterReserved: 0,
  };
}

/** Writes the 128-byte superblock at `off` (normally EROFS_SUPER_OFFSET). */
export function writeSuperblock(dv: DataView, off: number, s: Superblock): void {
  dv.setUint32(off + 0, s.magic, true);
  dv.setUint32(off + 4, s.checksum, true);
  dv.setUint32(off + 8, s.featureCompat, true);
  dv.setUint8(off + 12, s.blkszbits);
  dv.setUint8(off + 13, s.sbExtslots);
  dv.setUint16(off + 14, s.rootNid, true);
  dv.setBigUint64(off + 16, BigInt.asUintN(64, s.inos), true);
  dv.setBigUint64(off + 24, BigInt.asUintN(64, s.buildTime), true);
  dv.setUint32(off + 32, s.buildTimeNsec, true);
  dv.setUint32(off + 36, s.blocks, true);
  dv.setUint32(off + 40, s.metaBlkaddr, true);
  dv.setUint32(off + 44, s.xattrBlkaddr, true);
  for (let i = 0; i < 16; i++) {
    dv.setUint8(off + 48 + i, s.uuid[i] ?? 0);
    dv.setUint8(off + 64 + i, s.volumeName[i] ?? 0);
  }
  dv.setUint32(off + 80, s.featureIncompat, true);
  dv.setUint16(off + 84, s.availableComprAlgs, true);
  dv.setUint16(off + 86, s.extraDevices, true);
  dv.setUint16(off + 88, s.devtSlotoff, true);
  dv.setUint8(off + 90, s.dirblkbits);
  dv.setUint8(off + 91, s.xattrPrefixCount);
  dv.setUint32(off + 92, s.xattrPrefixStart, true);
  dv.setBigUint64(off + 96, BigInt.asUintN(64, s.packedNid), true);
  dv.setUint8(off + 104, s.xattrFilterReserved);
  for (let i = 105; i < EROFS_SUPERBLOCK_SIZE; i++) dv.setUint8(off + i, 0);
}

export function readSuperblock(dv: DataView, off: number): Superblock {
  const bytes = (at: number) => new Uint8Array(dv.buffer.slice(dv.byteOffset + off + at, dv.byteOffset + off + at + 16));
  return {
    magic: dv.getUint32(off + 0, true),
    checksum: dv.getUint32(off + 4, true),
    featureCompat: dv.getUint32(off + 8, true),
    blkszbits: dv.getUint8(off + 12),
    sbExtslots: dv.getUint8(off + 13),
    rootNid: dv.getUint16(off + 14, true),
    inos: dv.getBigUint64(off + 16, true),
    buildTime: dv.getBigUint64(off + 24, true),
    buildTimeNsec: dv.getUint32(off + 32, true),
    blocks: dv.getUint32(off + 36, true),
    metaBlkaddr: dv.getUint32(off + 40, true),
    xattrBlkaddr: dv.getUint32(off + 44, true),
    uuid: bytes(48),
    volumeName: bytes(64),
    featureIncompat: dv.getUint32(off + 80, true),
    availableComprAlgs: dv.getUint16(off + 84, true),
    extraDevices: dv.getUint16(off + 86, true),
    devtSlotoff: dv.getUint16(off + 88, true),
    dirblkbits: dv.getUint8(off + 90),
    xattrPrefixCount: dv.getUint8(off + 91),
    xattrPrefixStart: dv.getUint32(off + 92, true),
    packedNid: dv.getBigUint64(off + 96, true),
    xattrFilterReserved: dv.getUint8(off + 104),
  };
}

// ---- inodes -----------------------------------------------------------------------------

/** Bit 0 of i_format. */
export const InodeLayout = { COMPACT: 0, EXTENDED: 1 } as const;
export type InodeLayout = (typeof InodeLayout)[keyof typeof InodeLayout];

/** Bits 1..3 of i_format. composefs uses FLAT_PLAIN, FLAT_INLINE and CHUNK_BASED only. */
export const DataLayout = {
  FLAT_PLAIN: 0,
  COMPRESSED_FULL: 1,
  FLAT_INLINE: 2,
  COMPRESSED_COMPACT: 3,
  CHUNK_BASED: 4,
} as const;
export type DataLayout = (typeof DataLayout)[keyof typeof DataLayout];

export const I_VERSION_MASK = 0x1;
export const I_DATALAYOUT_BIT = 1;
export const I_DATALAYOUT_MASK = 0x7;

/** i_format = (datalayout << 1) | layout. Raw values: 0/4/8 compact, 1/5/9 extended. */
export function iFormat(layout: InodeLayout, dataLayout: DataLayout): number {
  return (dataLayout << I_DATALAYOUT_BIT) | layout;
}
export function iFormatLayout(format: number): InodeLayout {
  return (format & I_VERSION_MASK) as InodeLayout;
}
export function iFormatDataLayout(format: number): number {
  return (format >> I_DATALAYOUT_BIT) & I_DATALAYOUT_MASK;
}

/** i_u of a CHUNK_BASED inode: bits 0..4 = chunkbits − 12. */
export const CHUNK_FORMAT_BLKBITS_MASK = 0x1f;
/** i_u bit 5: 8-byte chunk index entries. composefs never sets it (4-byte block addresses). */
export const CHUNK_FORMAT_INDEXES = 0x20;
/** Block address meaning "hole" in a chunk address array. */
export const EROFS_NULL_ADDR = 0xffffffff;
/** C's cap on chunk entries of a metadata-only file (files above 2^53 bytes are refused). */
export const MAX_NONINLINE_CHUNKS = 1024;
/** i_u that composefs-rs V2 writes for every chunk-based file. */
export const V2_CHUNK_FORMAT = 31;

/**
 * The fields of either inode header. For compact inodes `size` < 2^32,
 * nlink/uid/gid < 2^16 and mtime is the superblock's build time (the codec
 * reports mtime 0 / nsec 0 and `extended: false`).
 */
export interface InodeHeader {
  extended: boolean;
  /** Raw i_format. */
  format: number;
  xattrIcount: number;
  /** i_mode: type bits | permission bits. */
  mode: number;
  nlink: number;
  /** u64 */
  size: bigint;
  /** i_u: raw block address, rdev, or chunk format depending on layout. */
  u: number;
  ino: number;
  uid: number;
  gid: number;
  /** u64 seconds (extended only). */
  mtime: bigint;
  mtimeNsec: number;
}

/** Header size in bytes from the first u16 (i_format) of an inode. */
export function inodeHeaderSize(format: number): number {
  return (format & I_VERSION_MASK) === InodeLayout.EXTENDED ? EXTENDED_INODE_SIZE : COMPACT_INODE_SIZE;
}

export function readInodeHeader(dv: DataView, off: number): InodeHeader {
  const format = dv.getUint16(off, true);
  if ((format & I_VERSION_MASK) === InodeLayout.COMPACT) {
    return {
      extended: false,
      format,
      xattrIcount: dv.getUint16(off + 2, true),
      mode: dv.getUint16(off + 4, true),
      nlink: dv.getUint16(off + 6, true),
      size: BigInt(dv.getUint32(off + 8, true)),
      u: dv.getUint32(off + 16, true),
      ino: dv.getUint32(off + 20, true),
      uid: dv.getUint16(off + 24, true),
      gid: dv.getUint16(off + 26, true),
      mtime: 0n,
      mtimeNsec: 0,
    };
  }
  return {
    extended: true,
    format,
    xattrIcount: dv.getUint16(off + 2, true),
    mode: dv.getUint16(off + 4, true),
    size: dv.getBigUint64(off + 8, true),
    u: dv.getUint32(off + 16, true),
    ino: dv.getUint32(off + 20, true),
    uid: dv.getUint32(off + 24, true),
    gid: dv.getUint32(off + 28, true),
    mtime: dv.getBigUint64(off + 32, true),
    mtimeNsec: dv.getUint32(off + 40, true),
    nlink: dv.getUint32(off + 44, true),
  };
}

/**
 * Writes a 32-byte compact inode header. The caller guarantees the ranges
 * (size < 2^32, nlink/uid/gid < 2^16). Reserved bytes are written as zero.
 */
export function writeCompactInode(
  dv: DataView,
  off: number,
  format: number,
  xattrIcount: number,
  mode: number,
  nlink: number,
  size: number,
  u: number,
  ino: number,
  uid: number,
  gid: number,
): void {
  dv.setUint16(off + 0, format, true);
  dv.setUint16(off + 2, xattrIcount, true);
  dv.setUint16(off + 4, mode, true);
  dv.setUint16(off + 6, nlink, true);
  dv.setUint32(off + 8, size, true);
  dv.setUint32(off + 12, 0, true);
  dv.setUint32(off + 16, u >>> 0, true);
  dv.setUint32(off + 20, ino >>> 0, true);
  dv.setUint16(off + 24, uid, true);
  dv.setUint16(off + 26, gid, true);
  dv.setUint32(off + 28, 0, true);
}

/**
 * Writes a 64-byte extended inode header. `size` and `mtime` are u64 given
 * as numbers when safe or bigints; a negative mtime is stored as two's
 * complement. Reserved bytes are written as zero.
 */
export function writeExtendedInode(
  dv: DataView,
  off: number,
  format: number,
  xattrIcount: number,
  mode: number,
  size: number | bigint,
  u: number,
  ino: number,
  uid: number,
  gid: number,
  mtime: number | bigint,
  mtimeNsec: number,
  nlink: number,
): void {
  dv.setUint16(off + 0, format, true);
  dv.setUint16(off + 2, xattrIcount, true);
  dv.setUint16(off + 4, mode, true);
  dv.setUint16(off + 6, 0, true);
  setU64(dv, off + 8, size);
  dv.setUint32(off + 16, u >>> 0, true);
  dv.setUint32(off + 20, ino >>> 0, true);
  dv.setUint32(off + 24, uid >>> 0, true);
  dv.setUint32(off + 28, gid >>> 0, true);
  setU64(dv, off + 32, mtime);
  dv.setUint32(off + 40, mtimeNsec >>> 0, true);
  dv.setUint32(off + 44, nlink >>> 0, true);
  for (let i = 48; i < EXTENDED_INODE_SIZE; i += 4) dv.setUint32(off + i, 0, true);
}

/** u64 store of a number (integer, may be negative → two's complement) or bigint. */
function setU64(dv: DataView, off: number, v: number | bigint): void {
  if (typeof v === "bigint") {
    dv.setBigUint64(off, BigInt.asUintN(64, v), true);
  } else if (v >= 0 && v <= 0xffffffff) {
    dv.setUint32(off, v, true);
    dv.setUint32(off + 4, 0, true);
  } else {
    dv.setBigUint64(off, BigInt.asUintN(64, BigInt(v)), true);
  }
}

// ---- extended attributes -------------------------------------------------------------------

/** `struct erofs_xattr_ibody_header`: name_filter u32, shared_count u8, reserved[7]. */
export const XATTR_IBODY_HEADER_SIZE = 12;
/** `struct erofs_xattr_entry` header: name_len u8, name_index u8, value_size u16. */
export const XATTR_ENTRY_HEADER_SIZE = 4;
/** Shared xattr references and entries are aligned to / counted in 4-byte words. */
export const XATTR_WORD_SIZE = 4;
/** xxh32 seed of the name filter is XATTR_FILTER_SEED + name_index. */
export const XATTR_FILTER_SEED = 0x25bbe08f;
export const XATTR_FILTER_BITS = 32;
/** name_index bit marking a long (superblock-table) prefix; composefs never uses one. C also caps shared refs per inode below this. */
export const XATTR_LONG_PREFIX = 0x80;
/** Largest xattr value EROFS can store (value_size is u16). */
export const XATTR_VALUE_MAX = 0xffff;

/** Prefix indexes (name_index). */
export const XattrIndex = {
  NONE: 0,
  USER: 1,
  POSIX_ACL_ACCESS: 2,
  POSIX_ACL_DEFAULT: 3,
  TRUSTED: 4,
  LUSTRE: 5,
  SECURITY: 6,
} as const;

/** Prefix string of each name_index (index 5 `lustre.` is used by V2 writers only). */
export const XATTR_PREFIXES: readonly BStr[] = [
  "",
  "user.",
  "system.posix_acl_access",
  "system.posix_acl_default",
  "trusted.",
  "lustre.",
  "security.",
];

/**
 * Splits a full xattr name into (name_index, suffix) the way writers do:
 * try indexes 6..1 (Epoch1 skips 5, `lustre.`), fall back to 0 = whole name.
 */
export function splitXattrName(name: BStr, epoch: FormatEpoch): { index: number; suffix: BStr } {
  for (let i = XATTR_PREFIXES.length - 1; i > 0; i--) {
    if (i === XattrIndex.LUSTRE && epoch === 1) continue;
    const p = XATTR_PREFIXES[i]!;
    if (name.startsWith(p)) return { index: i, suffix: name.slice(p.length) };
  }
  return { index: 0, suffix: name };
}

/** Full name of an xattr entry, or null for an index outside the table. */
export function joinXattrName(index: number, suffix: BStr): BStr | null {
  const p = XATTR_PREFIXES[index];
  return p === undefined ? null : p + suffix;
}

/** On-disk size of one xattr entry: roundup(4 + name_len + value_size, 4). */
export function xattrEntrySize(suffixLen: number, valueLen: number): number {
  return (XATTR_ENTRY_HEADER_SIZE + suffixLen + valueLen + 3) & ~3;
}

/** i_xattr_icount for an inode xattr block of `size` bytes (0 = no block). */
export function xattrIcount(size: number): number {
  return size === 0 ? 0 : 1 + (size - XATTR_IBODY_HEADER_SIZE) / XATTR_WORD_SIZE;
}

/** Size in bytes of the inode xattr block described by i_xattr_icount. */
export function xattrBlockSize(icount: number): number {
  return icount === 0 ? 0 : XATTR_IBODY_HEADER_SIZE + (icount - 1) * XATTR_WORD_SIZE;
}

export interface XattrIbodyHeader {
  /** As stored: the bitwise NOT of the set of name bits. */
  nameFilter: number;
  sharedCount: number;
}

export function writeXattrIbodyHeader(dv: DataView, off: number, nameFilter: number, sharedCount: number): void {
  dv.setUint32(off, nameFilter >>> 0, true);
  dv.setUint8(off + 4, sharedCount);
  for (let i = 5; i < XATTR_IBODY_HEADER_SIZE; i++) dv.setUint8(off + i, 0);
}

export function readXattrIbodyHeader(dv: DataView, off: number): XattrIbodyHeader {
  return { nameFilter: dv.getUint32(off, true), sharedCount: dv.getUint8(off + 4) };
}

export interface XattrEntryHeader {
  nameLen: number;
  nameIndex: number;
  valueSize: number;
}

export function writeXattrEntryHeader(dv: DataView, off: number, nameLen: number, nameIndex: number, valueSize: number): void {
  dv.setUint8(off, nameLen);
  dv.setUint8(off + 1, nameIndex);
  dv.setUint16(off + 2, valueSize, true);
}

export function readXattrEntryHeader(dv: DataView, off: number): XattrEntryHeader {
  return { nameLen: dv.getUint8(off), nameIndex: dv.getUint8(off + 1), valueSize: dv.getUint16(off + 2, true) };
}

// ---- overlayfs xattr names used by composefs (erofs.md §6) --------------------------------------

export const XATTR_OVERLAY_PREFIX: BStr = "trusted.overlay.";
/** `trusted.overlay.X` from the user is stored as `trusted.overlay.overlay.X`. */
export const XATTR_OVERLAY_ESCAPED_PREFIX: BStr = "trusted.overlay.overlay.";
export const XATTR_USER_OVERLAY_PREFIX: BStr = "user.overlay.";
export const XATTR_OVERLAY_METACOPY: BStr = "trusted.overlay.metacopy";
export const XATTR_OVERLAY_REDIRECT: BStr = "trusted.overlay.redirect";
/** Root marker of Epoch1 images (value "y"). */
export const XATTR_OVERLAY_OPAQUE: BStr = "trusted.overlay.opaque";
/** Escaped-whiteout markers (Epoch1). */
export const XATTR_ESCAPED_WHITEOUT: BStr = "trusted.overlay.overlay.whiteout";
export const XATTR_ESCAPED_WHITEOUTS: BStr = "trusted.overlay.overlay.whiteouts";
export const XATTR_ESCAPED_OPAQUE: BStr = "trusted.overlay.overlay.opaque";
export const XATTR_USERXATTR_WHITEOUT: BStr = "user.overlay.whiteout";
export const XATTR_USERXATTR_WHITEOUTS: BStr = "user.overlay.whiteouts";
export const XATTR_USERXATTR_OPAQUE: BStr = "user.overlay.opaque";
export const XATTR_SECURITY_SELINUX: BStr = "security.selinux";
export const XATTR_POSIX_ACL_ACCESS: BStr = "system.posix_acl_access";
export const XATTR_POSIX_ACL_DEFAULT: BStr = "system.posix_acl_default";

// ---- overlayfs metacopy value (struct ovl_metacopy) ----------------------------------------------

export const FSVERITY_HASH_ALG_SHA256 = 1;
export const FSVERITY_HASH_ALG_SHA512 = 2;
export const METACOPY_HEADER_SIZE = 4;

/** `trusted.overlay.metacopy` value carrying an fs-verity digest (32 → sha256, 64 → sha512). */
export function encodeMetacopy(digest: Uint8Array): Uint8Array {
  const alg = digest.byteLength === 64 ? FSVERITY_HASH_ALG_SHA512 : FSVERITY_HASH_ALG_SHA256;
  const out = new Uint8Array(METACOPY_HEADER_SIZE + digest.byteLength);
  out[0] = 0; // version
  out[1] = out.byteLength; // len
  out[2] = 0; // flags
  out[3] = alg;
  out.set(digest, METACOPY_HEADER_SIZE);
  return out;
}

export interface Metacopy {
  version: number;
  len: number;
  flags: number;
  digestAlgo: number;
  digest: Uint8Array;
}

/** Decodes a non-empty metacopy value; null when shorter than its header. */
export function decodeMetacopy(value: Uint8Array): Metacopy | null {
  if (value.byteLength < METACOPY_HEADER_SIZE) return null;
  return {
    version: value[0]!,
    len: value[1]!,
    flags: value[2]!,
    digestAlgo: value[3]!,
    digest: value.subarray(METACOPY_HEADER_SIZE),
  };
}

// ---- directories ------------------------------------------------------------------------------------

/** `struct erofs_dirent`: nid u64, nameoff u16, file_type u8, reserved u8. */
export const DIRENT_SIZE = 12;

/** Directory entry file types (EROFS_FT_*). */
export const FileType = {
  UNKNOWN: 0,
  REG_FILE: 1,
  DIR: 2,
  CHRDEV: 3,
  BLKDEV: 4,
  FIFO: 5,
  SOCK: 6,
  SYMLINK: 7,
} as const;
export type FileType = (typeof FileType)[keyof typeof FileType];

/** EROFS_FT_* of an st_mode (type bits). */
export function fileTypeOfMode(mode: number): FileType {
  switch (mode & 0o170000) {
    case 0o100000: return FileType.REG_FILE;
    case 0o040000: return FileType.DIR;
    case 0o020000: return FileType.CHRDEV;
    case 0o060000: return FileType.BLKDEV;
    case 0o010000: return FileType.FIFO;
    case 0o140000: return FileType.SOCK;
    case 0o120000: return FileType.SYMLINK;
    default: return FileType.UNKNOWN;
  }
}

export interface Dirent {
  /** u64 nid; composefs nids fit in a number. */
  nid: number;
  nameoff: number;
  fileType: number;
}

export function writeDirent(dv: DataView, off: number, nid: number, nameoff: number, fileType: number): void {
  dv.setUint32(off, nid >>> 0, true);
  dv.setUint32(off + 4, Math.floor(nid / 0x100000000), true);
  dv.setUint16(off + 8, nameoff, true);
  dv.setUint8(off + 10, fileType);
  dv.setUint8(off + 11, 0);
}

export function readDirent(dv: DataView, off: number): Dirent {
  const lo = dv.getUint32(off, true);
  const hi = dv.getUint32(off + 4, true);
  return { nid: hi * 0x100000000 + lo, nameoff: dv.getUint16(off + 8, true), fileType: dv.getUint8(off + 10) };
}

// ---- misc helpers ---------------------------------------------------------------------------------------

export function roundUp(n: number, align: number): number {
  return Math.ceil(n / align) * align;
}

/** Byte offset of inode `nid` (meta_blkaddr 0). */
export function nidToOffset(nid: number): number {
  return nid * INODE_SLOT_SIZE;
}
