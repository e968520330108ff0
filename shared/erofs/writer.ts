// Tree → composefs EROFS image (erofs.md).
//
// One code path for all three format versions:
//   V0/V1 ("Epoch1") — byte-identical to C `mkcomposefs` (lcfs-writer-erofs.c);
//   V2    ("Epoch2") — byte-identical to composefs-rs's legacy V2 writer.
//
// The writer never touches the caller's tree: the Epoch1 root stubs and the
// whiteout escaping live only in the flat inode array built here.
//
// Pipeline (each step a loop over a flat array, no recursion):
//   1. validate   — one walk: names, stats, contents, hardlink counts (§2)
//   2. collect    — inode order (BFS for Epoch1 incl. stubs, DFS for V2),
//                   directory entry lists, per-inode xattr lists (§6)
//   3. xattrs     — intern (name, value), share the repeated ones (§7)
//   4. layout     — every size, padding and offset (§8–§11); decisions only
//                   depend on sizes, never on offset *values* being known
//   5. emit       — one preallocated buffer, every struct at its offset
//
// C quirks reproduced on purpose are marked "C:".

import type { BStr } from "../bytes.ts";
import { displayBstr } from "../bytes.ts";
import { CfsError } from "../errors.ts";
import type { Dir, Leaf, Node, Regular, Stat } from "../tree.ts";
import { objectPath, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFREG, S_IFSOCK, walk } from "../tree.ts";
import {
  BLOCK_SIZE,
  CHUNK_FORMAT_BLKBITS_MASK,
  COMPACT_INODE_SIZE,
  COMPOSEFS_FEATURE_COMPAT,
  COMPOSEFS_FLAG_HAS_ACL,
  COMPOSEFS_HEADER_VERSION,
  COMPOSEFS_MAGIC,
  DataLayout,
  DIRENT_SIZE,
  EROFS_INODES_START,
  EROFS_NAME_LEN,
  EROFS_SUPER_OFFSET,
  EXTENDED_INODE_SIZE,
  type FormatEpoch,
  type FormatVersion,
  INODE_SLOT_SIZE,
  InodeLayout,
  MAX_NONINLINE_CHUNKS,
  METACOPY_HEADER_SIZE,
  FSVERITY_HASH_ALG_SHA256,
  FSVERITY_HASH_ALG_SHA512,
  V2_CHUNK_FORMAT,
  XATTR_ENTRY_HEADER_SIZE,
  XATTR_ESCAPED_OPAQUE,
  XATTR_ESCAPED_WHITEOUT,
  XATTR_ESCAPED_WHITEOUTS,
  XATTR_FILTER_SEED,
  XATTR_IBODY_HEADER_SIZE,
  XATTR_LONG_PREFIX,
  XATTR_OVERLAY_ESCAPED_PREFIX,
  XATTR_OVERLAY_METACOPY,
  XATTR_OVERLAY_OPAQUE,
  XATTR_OVERLAY_PREFIX,
  XATTR_OVERLAY_REDIRECT,
  XATTR_POSIX_ACL_ACCESS,
  XATTR_POSIX_ACL_DEFAULT,
  XATTR_SECURITY_SELINUX,
  XATTR_USERXATTR_OPAQUE,
  XATTR_USERXATTR_WHITEOUT,
  XATTR_USERXATTR_WHITEOUTS,
  XATTR_VALUE_MAX,
  emptySuperblock,
  encodeMetacopy,
  epochOf,
  iFormat,
  splitXattrName,
  writeComposefsHeader,
  writeCompactInode,
  writeDirent,
  writeExtendedInode,
  writeSuperblock,
  writeXattrEntryHeader,
  writeXattrIbodyHeader,
  xattrEntrySize,
  xattrIcount,
} from "./format.ts";
import { xxh32 } from "../xxhash.ts";

export interface WriteErofsOptions {
  /** composefs format version: 0/1 = C mkcomposefs compatible, 2 = legacy composefs-rs. */
  version: FormatVersion;
  /** Called after each step of the pipeline (for profiling: CFSBOOT_TIMING). */
  onPhase?: (phase: string) => void;
}

/** Longest symlink target accepted (PATH_MAX − 1, the C limit). */
export const SYMLINK_MAX = 4095;

// ---- version choice (erofs.md §12) -------------------------------------------------------------

/**
 * The format version C `mkcomposefs` would write for this tree.
 * `min`/`max` are `--min-version`/`--max-version` (undefined = not given):
 * neither given → 0..1; one given → the other is 0; max is raised to min;
 * values above 1 are refused. The result is min, bumped to 1 when
 * min < 1 ≤ max and the tree contains a whiteout (chr 0:0).
 */
export function chooseVersion(root: Dir, min?: number, max?: number): 0 | 1 {
  let lo: number;
  let hi: number;
  if (min === undefined && max === undefined) {
    lo = 0;
    hi = 1;
  } else {
    lo = min ?? 0;
    hi = max ?? 0;
  }
  for (const [flag, v] of [["--min-version", lo], ["--max-version", hi]] as const) {
    if (!Number.isInteger(v) || v < 0 || v > 1) {
      throw new CfsError(flag, `unsupported format version ${v} (C mkcomposefs writes 0 or 1)`);
    }
  }
  if (hi < lo) hi = lo;
  if (lo < 1 && hi >= 1 && containsWhiteout(root)) return 1;
  return lo as 0 | 1;
}

function containsWhiteout(root: Dir): boolean {
  const stack: Dir[] = [root];
  while (stack.length > 0) {
    const dir = stack.pop()!;
    for (const child of dir.entries.values()) {
      if (child.kind === "dir") stack.push(child);
      else if (child.content.type === "chr" && child.content.rdev === 0) return true;
    }
  }
  return false;
}

// ---- internal model ------------------------------------------------------------------------------

// Inode kinds (after whiteout escaping). Index into TYPE_BITS / FILE_TYPES.
const K_DIR = 0;
const K_REG = 1;
const K_LNK = 2;
const K_CHR = 3;
const K_BLK = 4;
const K_FIFO = 5;
const K_SOCK = 6;
const TYPE_BITS = [S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK];
const FILE_TYPES = [2, 1, 7, 3, 4, 5, 6];

function kindOf(node: Node): number {
  if (node.kind === "dir") return K_DIR;
  switch (node.content.type) {
    case "regular": return K_REG;
    case "symlink": return K_LNK;
    case "chr": return K_CHR;
    case "blk": return K_BLK;
    case "fifo": return K_FIFO;
    case "socket": return K_SOCK;
  }
}

/** An xattr value: bytes, or a byte string for values the writer builds itself (redirects). */
type XValue = Uint8Array | BStr;

function valueLength(v: XValue): number {
  return typeof v === "string" ? v.length : v.byteLength;
}

function valueEquals(a: XValue, b: XValue): boolean {
  const n = valueLength(a);
  if (n !== valueLength(b)) return false;
  if (typeof a === "string") {
    if (typeof b === "string") return a === b;
    for (let i = 0; i < n; i++) if (b[i] !== a.charCodeAt(i)) return false;
    return true;
  }
  if (typeof b === "string") return valueEquals(b, a);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return false;
  return true;
}

function valueBytes(v: XValue): Uint8Array {
  return typeof v === "string" ? new Uint8Array(Buffer.from(v, "latin1")) : v;
}

/** Name facts shared by every xattr with that full name. */
interface XName {
  id: number;
  name: BStr;
  index: number;
  suffix: BStr;
  filterBit: number;
}

// How an XEnt holds its value. The values the writer derives for every
// metadata-only file are kept as the tree's own digest / payload and encoded
// only when written (no per-file copies).
/** `value` is the value (bytes or a byte string). */
const V_PLAIN = 0;
/** `value` is an fs-verity digest; the value is the ovl_metacopy header + digest (encodeMetacopy). */
const V_METACOPY = 1;
/** `value` is an object path (byte string); the value is "/" + it. */
const V_REDIRECT = 2;

function encodedLength(kind: number, v: XValue): number {
  const n = valueLength(v);
  return kind === V_PLAIN ? n : kind === V_METACOPY ? METACOPY_HEADER_SIZE + n : 1 + n;
}

/** One distinct (full name, value) pair of the whole image. */
class XEnt {
  count = 0;
  /** Byte offset inside the shared table, or -1 when not shared. */
  sharedOff = -1;
  /** Next entry in the same hash bucket. */
  next: XEnt | null = null;
  readonly entrySize: number;
  constructor(
    readonly xn: XName,
    public value: XValue,
    /** V_PLAIN, V_METACOPY or V_REDIRECT. */
    public kind: number,
  ) {
    this.entrySize = xattrEntrySize(xn.suffix.length, encodedLength(kind, value));
  }

  /** The value as stored: bytes or a byte string. */
  encoded(): XValue {
    if (this.kind === V_METACOPY) return encodeMetacopy(this.value as Uint8Array);
    if (this.kind === V_REDIRECT) return "/" + (this.value as BStr);
    return this.value;
  }
}

/**
 * Every distinct (name, value) of the image, interned as inodes are
 * collected; `shared` lists those used more than once (in first-reuse order).
 */
class XattrTable {
  private readonly xnames = new Map<BStr, XName>();
  /** Plain values by hash (hashValue of the name id and value), chained through XEnt.next. */
  private readonly buckets = new Map<number, XEnt>();
  /** Metacopy values by a hash of the digest. */
  private readonly metacopies = new Map<number, XEnt>();
  /** Redirects by object path. */
  private readonly redirects = new Map<BStr, XEnt>();
  readonly shared: XEnt[] = [];
  hasAcl = false;
  readonly metacopyName: XName;
  readonly redirectName: XName;

  constructor(readonly epoch: FormatEpoch) {
    this.metacopyName = this.xname(XATTR_OVERLAY_METACOPY);
    this.redirectName = this.xname(XATTR_OVERLAY_REDIRECT);
  }

  xname(name: BStr): XName {
    let xn = this.xnames.get(name);
    if (xn === undefined) {
      const { index, suffix } = splitXattrName(name, this.epoch);
      const filterBit = xxh32(Buffer.from(suffix, "latin1"), XATTR_FILTER_SEED + index) & 31;
      xn = { id: this.xnames.size, name, index, suffix, filterBit };
      this.xnames.set(name, xn);
      if (name === XATTR_POSIX_ACL_ACCESS || name === XATTR_POSIX_ACL_DEFAULT) this.hasAcl = true;
    }
    return xn;
  }

  /** Counts one more use of `x`. */
  use(x: XEnt): XEnt {
    if (++x.count === 2) this.shared.push(x);
    return x;
  }

  plain(xn: XName, value: XValue): XEnt {
    const h = hashValue(Math.imul(0x811c9dc5 ^ xn.id, 16777619), value);
    const head = this.buckets.get(h) ?? null;
    let x = head;
    while (x !== null && !(x.xn === xn && valueEquals(x.value, value))) x = x.next;
    if (x === null) {
      x = new XEnt(xn, value, V_PLAIN);
      x.next = head;
      this.buckets.set(h, x);
    }
    return this.use(x);
  }

  metacopy(digest: Uint8Array): XEnt {
    const h = hashValue(0x811c9dc5, digest);
    const head = this.metacopies.get(h) ?? null;
    let x = head;
    while (x !== null && !valueEquals(x.value, digest)) x = x.next;
    if (x === null) {
      x = new XEnt(this.metacopyName, digest, V_METACOPY);
      x.next = head;
      this.metacopies.set(h, x);
    }
    return this.use(x);
  }

  redirect(path: BStr): XEnt {
    let x = this.redirects.get(path);
    if (x === undefined) {
      x = new XEnt(this.redirectName, path, V_REDIRECT);
      this.redirects.set(path, x);
    }
    return this.use(x);
  }
}

class Inode {
  /** Full xattr names/values while collecting (finalised into `xattrs`). */
  xnames: BStr[] | null = null;
  xvalues: XValue[] | null = null;
  xattrs: XEnt[] = NO_XATTRS;
  /** Directories: entry names (sorted, incl. "." and "..") and their inode indexes (-1 = resolve later). */
  names: BStr[] | null = null;
  targets: number[] | null = null;
  /** Directories: index of the first entry of each full block, then the first tail entry. */
  blockStarts: number[] | null = null;

  // -- layout results --
  size: number | bigint = 0;
  dataLayout: number = DataLayout.FLAT_PLAIN;
  /** Bytes stored inline after the xattr block. */
  tail = 0;
  /** Data blocks owned by this inode. */
  nBlocks = 0;
  /** i_u apart from the block address (rdev, chunk format). */
  iu = 0;
  compact = false;
  hdrSize = EXTENDED_INODE_SIZE;
  xattrSize = 0;
  nShared = 0;
  filter = 0;
  offset = 0;
  blockOffset = 0;

  constructor(
    readonly node: Node,
    /** After escaping (an escaped whiteout is K_REG). */
    public kind: number,
    readonly stat: Stat,
    public nlink: number,
  ) {}
}

const NO_XATTRS: XEnt[] = [];

// ---- validation (erofs.md §2) -------------------------------------------------------------------

interface Validated {
  /** Leaves referred to by more than one directory entry, with their reference count. */
  hardlinks: Map<Leaf, number>;
}

function pathOf(prefix: BStr, name: BStr): string {
  return displayBstr(prefix + name);
}

function validateStat(stat: Stat, prefix: BStr, name: BStr): void {
  const { mode, uid, gid, mtimeSec, mtimeNsec } = stat;
  if (!(mode >= 0 && mode <= 0o7777 && Number.isInteger(mode))) throw new CfsError(pathOf(prefix, name), `invalid permission bits ${mode}`);
  if (!(uid >= 0 && uid <= 0xffffffff && Number.isInteger(uid))) throw new CfsError(pathOf(prefix, name), `uid ${uid} out of range`);
  if (!(gid >= 0 && gid <= 0xffffffff && Number.isInteger(gid))) throw new CfsError(pathOf(prefix, name), `gid ${gid} out of range`);
  if (!Number.isSafeInteger(mtimeSec)) throw new CfsError(pathOf(prefix, name), `mtime seconds ${mtimeSec} out of range`);
  if (!(mtimeNsec >= 0 && mtimeNsec <= 999_999_999 && Number.isInteger(mtimeNsec))) {
    throw new CfsError(pathOf(prefix, name), `mtime nanoseconds ${mtimeNsec} out of range`);
  }
  if (stat.xattrs.size === 0) return;
  for (const key of stat.xattrs.keys()) {
    if (key.length === 0) throw new CfsError(pathOf(prefix, name), "empty xattr name");
    if (key.length > EROFS_NAME_LEN) throw new CfsError(pathOf(prefix, name), `xattr name longer than ${EROFS_NAME_LEN} bytes`);
    if (stat.xattrs.get(key)!.byteLength > XATTR_VALUE_MAX) {
      throw new CfsError(pathOf(prefix, name), `xattr ${displayBstr(key)}: value longer than ${XATTR_VALUE_MAX} bytes`);
    }
  }
}

function validateTree(root: Dir, epoch: FormatEpoch): Validated {
  const seenLeaves = new Set<Leaf>();
  const seenDirs = new Set<Dir>([root]);
  const hardlinks = new Map<Leaf, number>();
  validateStat(root.stat, "/", "");
  const stack: Dir[] = [root];
  const prefixes: BStr[] = ["/"];
  while (stack.length > 0) {
    const dir = stack.pop()!;
    const prefix = prefixes.pop()!;
    for (const [name, child] of dir.entries) {
      if (name.length === 0) throw new CfsError(displayBstr(prefix), "empty file name");
      if (name.length > EROFS_NAME_LEN) throw new CfsError(pathOf(prefix, name), `file name longer than ${EROFS_NAME_LEN} bytes`);
      if (name === "." || name === ".." || name.includes("/") || name.includes("\0")) {
        throw new CfsError(pathOf(prefix, name), "invalid file name");
      }
      if (child.kind === "dir") {
        if (seenDirs.has(child)) throw new CfsError(pathOf(prefix, name), "directory linked more than once");
        seenDirs.add(child);
        validateStat(child.stat, prefix, name);
        stack.push(child);
        prefixes.push(prefix + name + "/");
        continue;
      }
      if (seenLeaves.has(child)) {
        hardlinks.set(child, (hardlinks.get(child) ?? 1) + 1);
        if (child.content.type === "chr" && child.content.rdev === 0) {
          throw new CfsError(pathOf(prefix, name), "a whiteout (chr 0:0) cannot be hardlinked");
        }
        continue;
      }
      seenLeaves.add(child);
      validateStat(child.stat, prefix, name);
      if (child.nlink !== undefined && !(child.nlink >= 0 && child.nlink <= 0xffffffff && Number.isInteger(child.nlink))) {
        throw new CfsError(pathOf(prefix, name), `nlink ${child.nlink} out of range`);
      }
      const c = child.content;
      switch (c.type) {
        case "symlink":
          if (c.target.byteLength === 0) throw new CfsError(pathOf(prefix, name), "empty symlink target");
          if (c.target.byteLength > SYMLINK_MAX) throw new CfsError(pathOf(prefix, name), `symlink target longer than ${SYMLINK_MAX} bytes`);
          break;
        case "chr":
        case "blk":
          if (!(c.rdev >= 0 && Number.isInteger(c.rdev))) throw new CfsError(pathOf(prefix, name), `invalid device number ${c.rdev}`);
          break;
        case "regular":
          validateRegular(c, epoch, prefix, name);
          break;
        default:
          break;
      }
    }
  }
  return { hardlinks };
}

function validateRegular(c: Regular, epoch: FormatEpoch, prefix: BStr, name: BStr): void {
  if (c.inline !== null) {
    // V2 stores the whole content inline (one FLAT_INLINE tail): it must fit a block.
    if (epoch === 2 && c.inline.byteLength >= BLOCK_SIZE) {
      throw new CfsError(pathOf(prefix, name), `inline content of ${c.inline.byteLength} bytes does not fit a V2 image (at most ${BLOCK_SIZE - 1})`);
    }
    return;
  }
  if (c.size < 0n || c.size > 0xffffffffffffffffn) throw new CfsError(pathOf(prefix, name), `file size ${c.size} out of range`);
  if (c.digest !== null && c.digest.byteLength !== 32 && c.digest.byteLength !== 64) {
    throw new CfsError(pathOf(prefix, name), `fs-verity digest of ${c.digest.byteLength} bytes (expected 32 or 64)`);
  }
  if (epoch === 1 && c.size > BigInt(MAX_NONINLINE_CHUNKS) << 43n) {
    // C: lcfs_node_validate → EFBIG ("File too large"): more than 1024 chunks of 2^43.
    throw new CfsError(pathOf(prefix, name), `file too large (${c.size} bytes; at most 2^53 in a V0/V1 image)`);
  }
}

// ---- chunk-based files (erofs.md §9.3) ---------------------------------------------------------------

/** Number of significant bits of a non-negative integer below 2^53. */
function bitLength(n: number): number {
  if (n < 0x100000000) return 32 - Math.clz32(n);
  return 64 - Math.clz32(Math.floor(n / 0x100000000));
}

/** chunkbits = max(12, bitlen(size − 1)), at most 12 + 31. */
function chunkBits(size: number): number {
  let bits = size > 1 ? bitLength(size - 1) : 1;
  if (bits < 12) bits = 12;
  if (bits - 12 > CHUNK_FORMAT_BLKBITS_MASK) bits = 12 + CHUNK_FORMAT_BLKBITS_MASK;
  return bits;
}

function chunkCount(size: number): number {
  return Math.ceil(size / 2 ** chunkBits(size));
}

// ---- collection (erofs.md §6) ---------------------------------------------------------------------------

const HEX = "0123456789abcdef";

/** Insert "." and ".." into a sorted name list, keeping byte order. */
function withDots(names: BStr[], targets: number[], self: number, parent: number): void {
  let i = 0;
  while (i < names.length && names[i]! < ".") i++;
  names.splice(i, 0, ".");
  targets.splice(i, 0, self);
  i++;
  while (i < names.length && names[i]! < "..") i++;
  names.splice(i, 0, "..");
  targets.splice(i, 0, parent);
}

function sortedKeys(map: Map<BStr, unknown>): BStr[] {
  const keys = [...map.keys()];
  if (keys.length > 1) keys.sort();
  return keys;
}

class Collector {
  readonly inodes: Inode[] = [];
  /** Inode index of every hardlinked leaf, once numbered. */
  readonly linked = new Map<Leaf, number>();
  readonly renamed = new Map<BStr, BStr>();

  readonly table: XattrTable;

  constructor(
    readonly epoch: FormatEpoch,
    readonly version: FormatVersion,
    readonly hardlinks: Map<Leaf, number>,
  ) {
    this.table = new XattrTable(epoch);
  }

  /** `trusted.overlay.X` → `trusted.overlay.overlay.X` (cached per name). */
  escapeName(name: BStr): BStr {
    let r = this.renamed.get(name);
    if (r === undefined) {
      r = name.startsWith(XATTR_OVERLAY_PREFIX) ? XATTR_OVERLAY_ESCAPED_PREFIX + name.slice(XATTR_OVERLAY_PREFIX.length) : name;
      this.renamed.set(name, r);
    }
    return r;
  }

  push(node: Node, nlink: number): Inode {
    const ino = new Inode(node, kindOf(node), node.stat, nlink);
    const idx = this.inodes.length;
    this.inodes.push(ino);
    if (node.kind === "leaf") {
      if (node.content.type === "regular" && node.content.inline === null) this.contentXattrs(ino, node.content);
      if (this.hardlinks.size > 0 && this.hardlinks.has(node)) this.linked.set(node, idx);
    }
    if (node.stat.xattrs.size > 0) this.userXattrs(ino, node.stat);
    return ino;
  }

  /** Leaf nlink: explicit (C dumpfiles) or the number of references. */
  leafNlink(leaf: Leaf): number {
    return leaf.nlink ?? this.hardlinks.get(leaf) ?? 1;
  }

  /**
   * metacopy / redirect for metadata-only regular files (§6.5 step 1),
   * interned right away: they are the inode's first xattrs (the others are
   * merged in by finishXattrs).
   */
  contentXattrs(ino: Inode, c: Regular): void {
    const t = this.table;
    if (this.epoch === 1) {
      // C: every regular file with size > 0 and no inline content.
      if (c.size <= 0n) return;
      const meta = c.digest !== null ? t.metacopy(c.digest) : t.plain(t.metacopyName, EMPTY);
      ino.xattrs = c.payload !== null && c.payload.length > 0 ? [meta, t.redirect(c.payload)] : [meta];
      return;
    }
    // composefs-rs: External (digest), ExternalNoVerity (object path), Sparse.
    if (c.digest !== null) {
      ino.xattrs = [t.metacopy(c.digest), t.redirect(objectPath(c.digest))];
    } else if (c.payload !== null && c.payload.length > 0) {
      ino.xattrs = [t.plain(t.metacopyName, EMPTY), t.redirect(c.payload)];
    } else if (c.size > 0n) {
      ino.xattrs = [t.plain(t.metacopyName, EMPTY)];
    }
  }

  /** The node's own xattrs with `trusted.overlay.*` escaped (V2: in order of the original names). */
  userXattrs(ino: Inode, stat: Stat): void {
    if (this.epoch === 1) {
      // Order does not matter here: Epoch1 lists are sorted by final name later.
      for (const [name, value] of stat.xattrs) setXattr(ino, this.escapeName(name), value);
      return;
    }
    for (const name of sortedKeys(stat.xattrs)) addXattr(ino, this.escapeName(name), stat.xattrs.get(name)!);
  }

  /** Epoch1: breadth-first order, stubs, whiteout escaping (§6.1, §6.4). */
  collectBfs(root: Dir): void {
    // Canonical occurrence of every hardlinked leaf: its first one in depth-first order.
    const canonical = this.hardlinks.size > 0 ? this.canonicalOccurrences(root) : null;

    // Root stubs 00..ff (synthetic; never part of the caller's tree).
    const stubs = new Set<Leaf>();
    const rootChildren = new Map<BStr, Node>(root.entries);
    const selinux = root.stat.xattrs.get(XATTR_SECURITY_SELINUX);
    for (let i = 0; i < 256; i++) {
      const name = HEX[i >> 4]! + HEX[i & 15]!;
      if (rootChildren.has(name)) continue;
      const xattrs = new Map<BStr, Uint8Array>();
      if (selinux !== undefined) xattrs.set(XATTR_SECURITY_SELINUX, selinux);
      const stub: Leaf = {
        kind: "leaf",
        stat: { mode: 0o644, uid: root.stat.uid, gid: root.stat.gid, mtimeSec: root.stat.mtimeSec, mtimeNsec: root.stat.mtimeNsec, xattrs },
        content: { type: "chr", rdev: 0 },
      };
      stubs.add(stub);
      rootChildren.set(name, stub);
    }

    this.push(root, 0);
    const dirs: Dir[] = [root];
    const parents: number[] = [0];
    const selves: number[] = [0];
    let deferred = false;
    for (let q = 0; q < dirs.length; q++) {
      const dir = dirs[q]!;
      const meIdx = selves[q]!;
      const me = this.inodes[meIdx]!;
      const children = q === 0 ? rootChildren : dir.entries;
      const names = sortedKeys(children);
      const targets: number[] = new Array(names.length);
      let subdirs = 0;
      let hasWhiteout = false;
      for (let i = 0; i < names.length; i++) {
        const name = names[i]!;
        const child = children.get(name)!;
        if (child.kind === "dir") {
          subdirs++;
          targets[i] = this.inodes.length;
          dirs.push(child);
          parents.push(meIdx);
          selves.push(this.inodes.length);
          this.push(child, 0);
          continue;
        }
        if (canonical !== null && this.hardlinks.has(child)) {
          const at = canonical.get(child)!;
          if (at.dir !== dir || at.name !== name) {
            // Not the canonical occurrence: point at the inode numbered there (maybe later).
            const idx = this.linked.get(child);
            if (idx === undefined) deferred = true;
            targets[i] = idx ?? -1;
            continue;
          }
        }
        targets[i] = this.inodes.length;
        if (q === 0 && stubs.has(child)) {
          this.push(child, 1);
          continue;
        }
        const ino = this.push(child, this.leafNlink(child));
        if (child.content.type === "chr" && child.content.rdev === 0) {
          // Escape the user's whiteout into a regular file (C: add_overlayfs_xattrs).
          ino.kind = K_REG;
          setXattr(ino, XATTR_ESCAPED_WHITEOUT, EMPTY);
          setXattr(ino, XATTR_USERXATTR_WHITEOUT, EMPTY);
          hasWhiteout = true;
        }
      }
      me.nlink = 2 + subdirs;
      if (hasWhiteout) {
        setXattr(me, XATTR_ESCAPED_WHITEOUTS, EMPTY);
        setXattr(me, XATTR_USERXATTR_WHITEOUTS, EMPTY);
        if (this.version >= 1) {
          setXattr(me, XATTR_ESCAPED_OPAQUE, OPAQUE_X);
          setXattr(me, XATTR_USERXATTR_OPAQUE, OPAQUE_X);
        }
      }
      withDots(names, targets, meIdx, parents[q]!);
      me.names = names;
      me.targets = targets;
    }
    setXattr(this.inodes[0]!, XATTR_OVERLAY_OPAQUE, OPAQUE_Y);

    if (deferred) {
      // Links met before their canonical occurrence (which sits deeper in the tree).
      for (const ino of this.inodes) {
        const t = ino.targets;
        if (t === null) continue;
        const dir = ino.node as Dir;
        for (let i = 0; i < t.length; i++) {
          if (t[i]! < 0) t[i] = this.linked.get(dir.entries.get(ino.names![i]!) as Leaf)!;
        }
      }
    }
  }

  /**
   * Canonical occurrence of each hardlinked leaf: the entry at `leaf.primaryPath`
   * when given (C: the hardlink target line), else the first one in depth-first
   * (dumpfile) order.
   */
  canonicalOccurrences(root: Dir): Map<Leaf, { dir: Dir; name: BStr }> {
    const out = new Map<Leaf, { dir: Dir; name: BStr }>();
    const firsts = new Map<Leaf, { dir: Dir; name: BStr }>();
    for (const { path, node, parent, name } of walk(root)) {
      if (node.kind === "dir" || !this.hardlinks.has(node)) continue;
      const at = { dir: parent!, name };
      if (!firsts.has(node)) firsts.set(node, at);
      if (node.primaryPath !== undefined && node.primaryPath === path) out.set(node, at);
    }
    for (const [leaf, at] of firsts) if (!out.has(leaf)) out.set(leaf, at);
    return out;
  }

  /** V2: depth-first order, directory before its children (§6.3). */
  collectDfs(root: Dir): void {
    interface Frame { dir: Dir; me: Inode; meIdx: number; parentIdx: number; names: BStr[]; targets: number[]; i: number; subdirs: number }
    const open = (dir: Dir, parentIdx: number): Frame => {
      const meIdx = this.inodes.length;
      const me = this.push(dir, 0);
      const names = sortedKeys(dir.entries);
      return { dir, me, meIdx, parentIdx: parentIdx < 0 ? meIdx : parentIdx, names, targets: new Array(names.length), i: 0, subdirs: 0 };
    };
    const stack: Frame[] = [open(root, -1)];
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      if (top.i >= top.names.length) {
        top.me.nlink = 2 + top.subdirs;
        withDots(top.names, top.targets, top.meIdx, top.parentIdx);
        top.me.names = top.names;
        top.me.targets = top.targets;
        stack.pop();
        continue;
      }
      const i = top.i++;
      const child = top.dir.entries.get(top.names[i]!)!;
      if (child.kind === "dir") {
        top.subdirs++;
        top.targets[i] = this.inodes.length;
        stack.push(open(child, top.meIdx));
        continue;
      }
      const idx = this.hardlinks.size > 0 ? this.linked.get(child) : undefined;
      if (idx !== undefined) {
        top.targets[i] = idx;
      } else {
        top.targets[i] = this.inodes.length;
        this.push(child, this.leafNlink(child));
      }
    }
  }
}

const EMPTY = new Uint8Array(0);
const OPAQUE_X = new Uint8Array([0x78]);
const OPAQUE_Y = new Uint8Array([0x79]);

/** Append an xattr (V2 push order; names are known to be distinct). */
function addXattr(ino: Inode, name: BStr, value: XValue): void {
  if (ino.xnames === null) {
    ino.xnames = [name];
    ino.xvalues = [value];
  } else {
    ino.xnames.push(name);
    ino.xvalues!.push(value);
  }
}

/** C lcfs_node_set_xattr: replace the value of an existing name, else append. */
function setXattr(ino: Inode, name: BStr, value: XValue): void {
  const i = ino.xnames === null ? -1 : ino.xnames.indexOf(name);
  if (i >= 0) ino.xvalues![i] = value;
  else addXattr(ino, name, value);
}

// ---- xattr interning and sharing (erofs.md §7) ---------------------------------------------------------

interface SharedTable {
  entries: XEnt[];
  size: number;
  hasAcl: boolean;
}

/**
 * FNV-1a over a value's length and at most its first 8 and last 16 bytes
 * (values that differ are digests, object paths, labels: their ends differ),
 * continuing from `h`. Equal hashes are confirmed byte by byte.
 */
function hashValue(h: number, v: XValue): number {
  const n = valueLength(v);
  h = Math.imul(h ^ n, 16777619);
  const headEnd = n < 8 ? n : 8;
  const tailStart = n - 16 > headEnd ? n - 16 : headEnd;
  if (typeof v === "string") {
    for (let i = 0; i < headEnd; i++) h = Math.imul(h ^ (v.charCodeAt(i) & 0xff), 16777619);
    for (let i = tailStart; i < n; i++) h = Math.imul(h ^ (v.charCodeAt(i) & 0xff), 16777619);
  } else {
    for (let i = 0; i < headEnd; i++) h = Math.imul(h ^ v[i]!, 16777619);
    for (let i = tailStart; i < n; i++) h = Math.imul(h ^ v[i]!, 16777619);
  }
  return h;
}

/** Byte order of two values (byte strings compare as bytes too). */
function compareValues(a: XValue, b: XValue): number {
  if (typeof a === "string" && typeof b === "string") return a < b ? -1 : a > b ? 1 : 0;
  return Buffer.compare(valueBytes(a), valueBytes(b));
}

/** Epoch1 full-key order: name bytes, then value length, then value bytes (C xattrs_ht_sort). */
function cmpFullKey(a: XEnt, b: XEnt): number {
  if (a.xn !== b.xn) return a.xn.name < b.xn.name ? -1 : 1;
  const la = valueLength(a.value);
  const lb = valueLength(b.value);
  if (la !== lb) return la - lb;
  return compareValues(a.value, b.value);
}

/** V2 order: (prefix index, suffix bytes, value bytes). */
function cmpV2(a: XEnt, b: XEnt): number {
  if (a.xn.index !== b.xn.index) return a.xn.index - b.xn.index;
  if (a.xn.suffix !== b.xn.suffix) return a.xn.suffix < b.xn.suffix ? -1 : 1;
  return compareValues(a.value, b.value);
}

/**
 * Interns every inode's remaining xattrs (its own, escaped, and the whiteout
 * and opaque markers), merges them with the content xattrs already interned
 * (Epoch1: sorted by full name, as C's qsort does; V2: content first, then
 * the others in push order), and lays out the shared table.
 */
function finishXattrs(inodes: Inode[], table: XattrTable, epoch: FormatEpoch): SharedTable {
  for (const ino of inodes) {
    const names = ino.xnames;
    if (names === null) continue;
    const values = ino.xvalues!;
    const content = ino.xattrs;
    const list: XEnt[] = content.slice();
    for (let k = 0; k < names.length; k++) list.push(table.plain(table.xname(names[k]!), values[k]!));
    if (epoch === 1) {
      // Names are unique within an inode. Lists are short: insertion sort.
      for (let i = 1; i < list.length; i++) {
        const x = list[i]!;
        const kn = x.xn.name;
        let j = i - 1;
        while (j >= 0 && list[j]!.xn.name > kn) {
          list[j + 1] = list[j]!;
          j--;
        }
        list[j + 1] = x;
      }
    }
    ino.xattrs = list;
    ino.xnames = null;
    ino.xvalues = null;
  }
  const shared = table.shared;
  // Derived values are compared as bytes when sorting: encode the shared ones.
  for (const x of shared) {
    if (x.kind !== V_PLAIN) {
      x.value = x.encoded();
      x.kind = V_PLAIN;
    }
  }
  if (epoch === 1) shared.sort((a, b) => cmpFullKey(b, a)); // descending
  else shared.sort(cmpV2);
  let off = 0;
  for (const x of shared) {
    x.sharedOff = off;
    off += x.entrySize;
  }
  return { entries: shared, size: off, hasAcl: epoch === 1 && table.hasAcl };
}

// ---- layout (erofs.md §8–§11) ------------------------------------------------------------------------------

interface Layout {
  inodesEnd: number;
  sharedStart: number;
  dataStart: number;
  end: number;
  minSec: number;
  minNsec: number;
}

/** Directory packing (§9.1): block starts and tail; size = 4096 × blocks + tail bytes. */
function packDirectory(ino: Inode): void {
  const names = ino.names!;
  const starts: number[] = [];
  let used = 0;
  let first = 0;
  for (let i = 0; i < names.length; i++) {
    const len = DIRENT_SIZE + names[i]!.length;
    if (used + len > BLOCK_SIZE) {
      starts.push(first);
      first = i;
      used = 0;
    }
    used += len;
  }
  // Never inline more than half a block.
  if (used > BLOCK_SIZE / 2) {
    starts.push(first);
    first = names.length;
    used = 0;
  }
  starts.push(first); // start of the inline tail (== names.length when none)
  ino.blockStarts = starts;
  ino.nBlocks = starts.length - 1;
  ino.tail = used;
  ino.size = ino.nBlocks * BLOCK_SIZE + used;
}

/** Size, layout and tail of one inode before placement (independent of position). */
function shapeInode(ino: Inode, epoch: FormatEpoch): void {
  switch (ino.kind) {
    case K_DIR:
      packDirectory(ino);
      ino.dataLayout = ino.tail > 0 ? DataLayout.FLAT_INLINE : DataLayout.FLAT_PLAIN;
      return;
    case K_LNK: {
      const len = (ino.node as Leaf & { content: { type: "symlink" } }).content.target.byteLength;
      ino.size = len;
      ino.tail = len;
      ino.dataLayout = DataLayout.FLAT_INLINE;
      return;
    }
    case K_CHR:
    case K_BLK: {
      const c = (ino.node as Leaf).content as { rdev: number };
      ino.iu = c.rdev >>> 0; // the image keeps the low 32 bits of dev_t
      return;
    }
    case K_REG:
      break;
    default:
      return; // fifo, socket: FLAT_PLAIN, size 0
  }
  const leaf = ino.node as Leaf;
  if (leaf.content.type !== "regular") return; // escaped whiteout: empty regular file
  const c = leaf.content;
  if (c.inline !== null) {
    const len = c.inline.byteLength;
    ino.size = len;
    if (len === 0) return;
    if (epoch === 2) {
      ino.tail = len;
      ino.dataLayout = DataLayout.FLAT_INLINE;
      return;
    }
    let nb = Math.floor(len / BLOCK_SIZE);
    let tail = len % BLOCK_SIZE;
    if (tail > BLOCK_SIZE / 2) {
      nb++;
      tail = 0;
    }
    ino.nBlocks = nb;
    ino.tail = tail;
    ino.dataLayout = tail > 0 ? DataLayout.FLAT_INLINE : DataLayout.FLAT_PLAIN;
    return;
  }
  if (epoch === 1) {
    if (c.size === 0n) return; // C: an empty file, whatever payload/digest say
    const size = Number(c.size);
    ino.size = size;
    ino.dataLayout = DataLayout.CHUNK_BASED;
    ino.iu = chunkBits(size) - 12;
    ino.tail = 4 * chunkCount(size);
    return;
  }
  // V2: External → one null chunk index; ExternalNoVerity / Sparse → none.
  // (composefs-rs: chunk format 31 whatever the size; above 2^43 bytes the
  // kernel would look for more index entries than are written.)
  if (c.digest === null && (c.payload === null || c.payload.length === 0) && c.size === 0n) return;
  ino.size = c.size <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(c.size) : c.size;
  ino.dataLayout = DataLayout.CHUNK_BASED;
  ino.iu = V2_CHUNK_FORMAT;
  ino.tail = c.digest !== null ? 4 : 0;
}

function mtimeLess(aSec: number, aNsec: number, bSec: number, bNsec: number): boolean {
  return aSec < bSec || (aSec === bSec && aNsec < bNsec);
}

function layout(root: Dir, inodes: Inode[], shared: SharedTable, epoch: FormatEpoch): Layout {
  let minSec = 0;
  let minNsec = 0;
  if (epoch === 1) {
    minSec = inodes[0]!.stat.mtimeSec;
    minNsec = inodes[0]!.stat.mtimeNsec;
    for (const ino of inodes) {
      if (mtimeLess(ino.stat.mtimeSec, ino.stat.mtimeNsec, minSec, minNsec)) {
        minSec = ino.stat.mtimeSec;
        minNsec = ino.stat.mtimeNsec;
      }
    }
  }

  let pos = EROFS_INODES_START;
  for (const ino of inodes) {
    shapeInode(ino, epoch);

    // Xattr block: shared references (Epoch1: at most 128, C's cap) then locals.
    let nShared = 0;
    let localSize = 0;
    let names = 0;
    for (const x of ino.xattrs) {
      names |= 1 << x.xn.filterBit;
      if (x.sharedOff >= 0 && (epoch === 2 || nShared < XATTR_LONG_PREFIX)) nShared++;
      else localSize += x.entrySize;
    }
    ino.nShared = nShared;
    ino.filter = ~names >>> 0;
    ino.xattrSize = ino.xattrs.length > 0 ? XATTR_IBODY_HEADER_SIZE + 4 * nShared + localSize : 0;
    if (xattrIcount(ino.xattrSize) > 0xffff) {
      throw new CfsError(pathOfNode(root, ino.node), `xattrs too large for one inode (${ino.xattrSize} bytes)`);
    }
    if (nShared > 255) throw new CfsError(pathOfNode(root, ino.node), "more than 255 shared xattrs on one inode");

    const stat = ino.stat;
    ino.compact =
      epoch === 1 &&
      stat.mtimeSec === minSec &&
      stat.mtimeNsec === minNsec &&
      ino.nlink <= 0xffff &&
      stat.uid <= 0xffff &&
      stat.gid <= 0xffff &&
      typeof ino.size === "number" &&
      ino.size <= 0xffffffff;
    const H = ino.compact ? COMPACT_INODE_SIZE : EXTENDED_INODE_SIZE;
    ino.hdrSize = H;
    const X = ino.xattrSize;

    pos = roundUp32(pos);
    if (epoch === 1) {
      if (ino.kind === K_LNK) {
        // C: a symlink whose inode + xattrs + target reach a block moves its target
        // to a data block; either way the inode must not straddle a block boundary
        // (measured with the original, unpromoted size — old kernels need it).
        const total = H + X + ino.tail;
        if (total >= BLOCK_SIZE) {
          ino.nBlocks = 1;
          ino.tail = 0;
          ino.dataLayout = DataLayout.FLAT_PLAIN;
        }
        if (Math.floor(pos / BLOCK_SIZE) !== Math.floor((pos + total - 1) / BLOCK_SIZE)) pos = roundUpBlock(pos);
      } else if (ino.tail > 0) {
        // The inline tail must not cross a block boundary.
        const r = BLOCK_SIZE - ((pos + H + X) % BLOCK_SIZE);
        if (r < ino.tail) {
          const extra = roundUp32(r);
          const r2 = BLOCK_SIZE - ((pos + H + X + extra) % BLOCK_SIZE);
          if (ino.tail <= r2) {
            pos += extra;
          } else {
            // C: does not fit even after padding — move it to a data block
            // (only chunk index arrays are ever this large).
            ino.nBlocks++;
            ino.tail = 0;
            pos = roundUpBlock(pos);
          }
        }
      }
    } else if (ino.dataLayout === DataLayout.FLAT_INLINE) {
      // composefs-rs V2: metadata end and inline end must share a block.
      const e = pos + H + X - 1;
      const i = pos + H + X + (Number(ino.size) % BLOCK_SIZE);
      if (Math.floor(e / BLOCK_SIZE) !== Math.floor(i / BLOCK_SIZE)) {
        pos += BLOCK_SIZE - (e % BLOCK_SIZE);
        pos = roundUp32(pos);
        // composefs-rs would write inline data that crosses a block boundary
        // (only possible for tails above 4064 bytes); refuse instead.
        const start = pos + H + X;
        if (Math.floor(start / BLOCK_SIZE) !== Math.floor((start + ino.tail - 1) / BLOCK_SIZE)) {
          throw new CfsError(pathOfNode(root, ino.node), `${ino.tail} bytes of inline data do not fit one block of a V2 image`);
        }
      }
    }
    ino.offset = pos;
    pos += H + X + ino.tail;
  }
  const inodesEnd = roundUp32(pos);
  const dataStart = roundUpBlock(inodesEnd + shared.size);
  let cur = dataStart;
  for (const ino of inodes) {
    ino.blockOffset = cur;
    cur += ino.nBlocks * BLOCK_SIZE;
  }
  return { inodesEnd, sharedStart: inodesEnd, dataStart, end: cur, minSec, minNsec };
}

function roundUp32(n: number): number {
  const r = n % INODE_SLOT_SIZE;
  return r === 0 ? n : n + INODE_SLOT_SIZE - r;
}

function roundUpBlock(n: number): number {
  return Math.ceil(n / BLOCK_SIZE) * BLOCK_SIZE;
}

/** Path of a node, for error messages (a search: only used when failing). */
function pathOfNode(root: Dir, node: Node): string {
  if (node === root) return "/";
  const stack: { dir: Dir; prefix: BStr }[] = [{ dir: root, prefix: "/" }];
  while (stack.length > 0) {
    const { dir, prefix } = stack.pop()!;
    for (const [name, child] of dir.entries) {
      if (child === node) return displayBstr(prefix + name);
      if (child.kind === "dir") stack.push({ dir: child, prefix: prefix + name + "/" });
    }
  }
  return node.kind === "dir" ? "directory" : `${node.content.type} inode`;
}

// ---- emit ------------------------------------------------------------------------------------------------------

function emit(inodes: Inode[], shared: SharedTable, lay: Layout, version: FormatVersion): Uint8Array {
  const epoch = epochOf(version);
  const out = new Uint8Array(lay.end);
  const dv = new DataView(out.buffer);

  writeComposefsHeader(dv, 0, {
    magic: COMPOSEFS_MAGIC,
    version: COMPOSEFS_HEADER_VERSION,
    flags: shared.hasAcl ? COMPOSEFS_FLAG_HAS_ACL : 0,
    composefsVersion: version,
  });
  const sb = emptySuperblock();
  sb.featureCompat = COMPOSEFS_FEATURE_COMPAT;
  sb.rootNid = inodes[0]!.offset / INODE_SLOT_SIZE;
  sb.inos = BigInt(inodes.length);
  sb.blocks = lay.end / BLOCK_SIZE;
  if (epoch === 1) {
    sb.buildTime = BigInt(lay.minSec);
    sb.buildTimeNsec = lay.minNsec;
    sb.xattrBlkaddr = Math.floor(lay.inodesEnd / BLOCK_SIZE);
  }
  writeSuperblock(dv, EROFS_SUPER_OFFSET, sb);

  // Shared xattr references: Epoch1 relative to xattr_blkaddr, V2 absolute.
  const refBase = epoch === 1 ? lay.inodesEnd % BLOCK_SIZE : lay.sharedStart;

  for (let idx = 0; idx < inodes.length; idx++) {
    const ino = inodes[idx]!;
    const stat = ino.stat;
    let p = ino.offset;
    const mode = TYPE_BITS[ino.kind]! | (stat.mode & 0o7777);
    const blkaddr = ino.blockOffset / BLOCK_SIZE;
    let u = ino.iu;
    if (ino.dataLayout === DataLayout.CHUNK_BASED) {
      if (ino.nBlocks > 0) u = ((blkaddr & 0xffff0000) | ino.iu) >>> 0; // C quirk: i_u.c.format overwrites the low half
    } else if (ino.nBlocks > 0) {
      u = blkaddr;
    }
    const icount = xattrIcount(ino.xattrSize);
    if (ino.compact) {
      writeCompactInode(dv, p, iFormat(InodeLayout.COMPACT, ino.dataLayout as DataLayout), icount, mode, ino.nlink,
        ino.size as number, u, idx, stat.uid, stat.gid);
    } else {
      writeExtendedInode(dv, p, iFormat(InodeLayout.EXTENDED, ino.dataLayout as DataLayout), icount, mode, ino.size,
        u, epoch === 1 ? idx : p / INODE_SLOT_SIZE, stat.uid, stat.gid, stat.mtimeSec,
        epoch === 1 ? stat.mtimeNsec : 0, ino.nlink);
    }
    p += ino.hdrSize;

    if (ino.xattrSize > 0) {
      writeXattrIbodyHeader(dv, p, ino.filter, ino.nShared);
      p += XATTR_IBODY_HEADER_SIZE;
      let refs = 0;
      for (const x of ino.xattrs) {
        if (x.sharedOff >= 0 && refs < ino.nShared) {
          dv.setUint32(p, (refBase + x.sharedOff) / 4, true);
          p += 4;
          refs++;
        }
      }
      refs = 0;
      for (const x of ino.xattrs) {
        if (x.sharedOff >= 0 && refs < ino.nShared) {
          refs++;
          continue;
        }
        p = writeXattrEntry(dv, out, p, x);
      }
    }

    // Inline tail.
    if (ino.tail > 0) {
      if (ino.kind === K_DIR) {
        const s = ino.blockStarts!;
        writeDirBlock(dv, out, inodes, ino, s[s.length - 1]!, ino.names!.length, p);
      } else if (ino.kind === K_LNK) {
        out.set((ino.node as Leaf & { content: { type: "symlink"; target: Uint8Array } }).content.target, p);
      } else if (ino.dataLayout === DataLayout.CHUNK_BASED) {
        out.fill(0xff, p, p + ino.tail);
      } else {
        const data = ((ino.node as Leaf).content as Regular).inline!;
        out.set(data.subarray(data.byteLength - ino.tail), p);
      }
    }

    // Data blocks.
    if (ino.nBlocks > 0) {
      const b = ino.blockOffset;
      if (ino.kind === K_DIR) {
        const s = ino.blockStarts!;
        for (let k = 0; k < ino.nBlocks; k++) writeDirBlock(dv, out, inodes, ino, s[k]!, s[k + 1]!, b + k * BLOCK_SIZE);
      } else if (ino.kind === K_LNK) {
        out.set((ino.node as Leaf & { content: { type: "symlink"; target: Uint8Array } }).content.target, b);
      } else if (ino.dataLayout === DataLayout.CHUNK_BASED) {
        out.fill(0xff, b, b + BLOCK_SIZE); // 1024 null chunk addresses
      } else {
        const data = ((ino.node as Leaf).content as Regular).inline!;
        out.set(data.subarray(0, data.byteLength - ino.tail), b);
      }
    }
  }

  let p = lay.sharedStart;
  for (const x of shared.entries) p = writeXattrEntry(dv, out, p, x);
  return out;
}

function writeXattrEntry(dv: DataView, out: Uint8Array, p: number, x: XEnt): number {
  const v = x.value;
  const kind = x.kind;
  writeXattrEntryHeader(dv, p, x.xn.suffix.length, x.xn.index, encodedLength(kind, v));
  let q = putStr(out, p + XATTR_ENTRY_HEADER_SIZE, x.xn.suffix);
  if (kind === V_METACOPY) {
    // struct ovl_metacopy: version 0, len, flags 0, digest algorithm (as encodeMetacopy).
    const d = v as Uint8Array;
    out[q] = 0;
    out[q + 1] = METACOPY_HEADER_SIZE + d.byteLength;
    out[q + 2] = 0;
    out[q + 3] = d.byteLength === 64 ? FSVERITY_HASH_ALG_SHA512 : FSVERITY_HASH_ALG_SHA256;
    out.set(d, q + METACOPY_HEADER_SIZE);
  } else {
    if (kind === V_REDIRECT) out[q++] = 0x2f; // "/"
    if (typeof v === "string") putStr(out, q, v);
    else out.set(v, q);
  }
  return p + x.entrySize;
}

/** Writes a byte string at `p`; returns the position after it. */
function putStr(out: Uint8Array, p: number, s: BStr): number {
  const n = s.length;
  for (let i = 0; i < n; i++) out[p + i] = s.charCodeAt(i);
  return p + n;
}

/** Entries [from, to) of a directory as one block (headers, then names) at `p`. */
function writeDirBlock(dv: DataView, out: Uint8Array, inodes: Inode[], dir: Inode, from: number, to: number, p: number): void {
  const names = dir.names!;
  const idx = dir.targets!;
  let nameoff = DIRENT_SIZE * (to - from);
  let h = p;
  for (let i = from; i < to; i++) {
    const target = inodes[idx[i]!]!;
    writeDirent(dv, h, target.offset / INODE_SLOT_SIZE, nameoff, FILE_TYPES[target.kind]!);
    h += DIRENT_SIZE;
    nameoff += names[i]!.length;
  }
  for (let i = from; i < to; i++) h = putStr(out, h, names[i]!);
}

// ---- entry point -------------------------------------------------------------------------------------------------

/**
 * Writes `root` as a composefs EROFS image of the given format version.
 * Throws CfsError (naming the offending path) for trees that cannot be
 * written. The tree is not modified.
 *
 * Leaf nlink is `leaf.nlink` when set (C dumpfiles keep their NLINK field),
 * else the number of directory entries referring to the leaf; directories
 * get 2 + subdirectories. For V0/V1 a hardlinked leaf is numbered at
 * `leaf.primaryPath` when that names one of its entries (C's hardlink
 * target), else at its first depth-first entry.
 */
export function writeErofs(root: Dir, opts: WriteErofsOptions): Uint8Array {
  const version = opts.version;
  if (version !== 0 && version !== 1 && version !== 2) throw new CfsError("version", `unknown composefs format version ${String(version)}`);
  const epoch = epochOf(version);
  const lap = opts.onPhase ?? (() => {});
  const { hardlinks } = validateTree(root, epoch);
  lap("validate");

  const col = new Collector(epoch, version, hardlinks);
  if (epoch === 1) col.collectBfs(root);
  else col.collectDfs(root);
  const inodes = col.inodes;
  lap("collect");

  const shared = finishXattrs(inodes, col.table, epoch);
  lap("intern");
  const lay = layout(root, inodes, shared, epoch);
  lap("layout");
  const out = emit(inodes, shared, lay, version);
  lap("emit");
  return out;
}
