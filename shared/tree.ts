// The in-memory composefs filesystem tree.
//
// Every source (dumpfile, directory scan, OCI layers, an EROFS image) becomes
// this tree, and every sink (EROFS writer, dumpfile writer, /etc snapshots)
// consumes it. The model follows erofs.md §2:
//
// - A `Dir` has a stat and a map name → child. Directories are never
//   hardlinked.
// - A `Leaf` has a stat and content. Hardlinks are several directory entries
//   referring to the *same* Leaf object (JS identity); their nlink is the
//   number of references, unless `nlink` was given explicitly (C
//   mkcomposefs keeps a dumpfile's NLINK field; see dumpfile.md §6).
// - Names and xattr names are byte strings (see bytes.ts); they never contain
//   "/" or NUL, and are neither "." nor "..".
//
// Regular-file content (`Regular`), after C mkcomposefs' model, which
// contains composefs-rs' as a special case:
//   inline set                 → content stored in the image (size = inline.length)
//   size 0, nothing else       → an empty file
//   otherwise (chunk-based)    → metadata-only file whose bytes live outside:
//     digest set               → fs-verity digest of the content (metacopy xattr)
//     payload set              → object path the overlay redirect points at
//                                ("ab/cdef…", written as "/ab/cdef…"); for files
//                                from tar/scan this is objectPath(digest)
//     neither                  → sparse file (no backing object)

import type { BStr } from "./bytes.ts";
import { toHex } from "./bytes.ts";

export interface Stat {
  /** Permission bits only, 0..0o7777; the type comes from the node kind. */
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch (a safe integer; may be negative). */
  mtimeSec: number;
  /** 0..999_999_999 */
  mtimeNsec: number;
  /** Full xattr name → value. Iteration order is not significant. */
  xattrs: Map<BStr, Uint8Array>;
}

export interface Regular {
  type: "regular";
  size: bigint;
  inline: Uint8Array | null;
  digest: Uint8Array | null;
  payload: BStr | null;
}
export interface Symlink {
  type: "symlink";
  target: Uint8Array;
}
export interface Device {
  type: "chr" | "blk";
  /** Raw dev_t in glibc makedev() encoding; images keep the low 32 bits. */
  rdev: number;
}
export interface Special {
  type: "fifo" | "socket";
}
export type LeafContent = Regular | Symlink | Device | Special;
export type LeafType = LeafContent["type"];

export interface Leaf {
  kind: "leaf";
  stat: Stat;
  content: LeafContent;
  /** Explicit nlink (C-compatible dumpfile input); undefined = count references. */
  nlink?: number;
  /**
   * C-compatible dumpfile input only: the path of the entry that was the
   * hardlink *target* (the line with the full metadata) when that is not the
   * leaf's first occurrence in depth-first order. C keeps target and links
   * apart and V0/V1 EROFS writers number the inode at the target's place;
   * undefined = the first depth-first occurrence.
   */
  primaryPath?: BStr;
}

export interface Dir {
  kind: "dir";
  stat: Stat;
  entries: Map<BStr, Node>;
}

export type Node = Dir | Leaf;

// ---- constructors -----------------------------------------------------------

export function makeStat(partial: Partial<Stat> = {}): Stat {
  return {
    mode: partial.mode ?? 0,
    uid: partial.uid ?? 0,
    gid: partial.gid ?? 0,
    mtimeSec: partial.mtimeSec ?? 0,
    mtimeNsec: partial.mtimeNsec ?? 0,
    xattrs: partial.xattrs ?? new Map(),
  };
}

export function makeDir(stat: Partial<Stat> = {}): Dir {
  return { kind: "dir", stat: makeStat(stat), entries: new Map() };
}

export function makeLeaf(content: LeafContent, stat: Partial<Stat> = {}): Leaf {
  return { kind: "leaf", stat: makeStat(stat), content };
}

export function inlineFile(data: Uint8Array): Regular {
  return { type: "regular", size: BigInt(data.byteLength), inline: data, digest: null, payload: null };
}

/** A file whose content is the object named by its fs-verity digest. */
export function externalFile(digest: Uint8Array, size: bigint): Regular {
  return { type: "regular", size, inline: null, digest, payload: objectPath(digest) };
}

export function sparseFile(size: bigint): Regular {
  return { type: "regular", size, inline: null, digest: null, payload: null };
}

/** `XX/<rest>` for a digest: the object's path inside a store. */
export function objectPath(digest: Uint8Array): BStr {
  const hex = toHex(digest);
  return `${hex.slice(0, 2)}/${hex.slice(2)}`;
}

export function isWhiteout(node: Node): boolean {
  return node.kind === "leaf" && node.content.type === "chr" && node.content.rdev === 0;
}

// ---- file type bits -----------------------------------------------------------

export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

const TYPE_BITS: Record<LeafType | "dir", number> = {
  dir: S_IFDIR,
  regular: S_IFREG,
  symlink: S_IFLNK,
  chr: S_IFCHR,
  blk: S_IFBLK,
  fifo: S_IFIFO,
  socket: S_IFSOCK,
};

export function nodeType(node: Node): LeafType | "dir" {
  return node.kind === "dir" ? "dir" : node.content.type;
}

/** st_mode of a node: type bits | permission bits. */
export function fullMode(node: Node): number {
  return TYPE_BITS[nodeType(node)] | (node.stat.mode & 0o7777);
}

export function typeFromMode(mode: number): LeafType | "dir" | null {
  switch (mode & S_IFMT) {
    case S_IFDIR: return "dir";
    case S_IFREG: return "regular";
    case S_IFLNK: return "symlink";
    case S_IFCHR: return "chr";
    case S_IFBLK: return "blk";
    case S_IFIFO: return "fifo";
    case S_IFSOCK: return "socket";
    default: return null;
  }
}

// ---- traversal ------------------------------------------------------------------

/** Child names in byte order. */
export function sortedNames(dir: Dir): BStr[] {
  return [...dir.entries.keys()].sort();
}

export interface WalkEntry {
  /** Absolute path as a byte string ("/" for the root). */
  path: BStr;
  node: Node;
  parent: Dir | null;
  name: BStr;
  /** For leaves: the path at which this leaf was first met (== path when first). */
  firstPath: BStr;
}

/**
 * Depth-first walk in byte order, directory before its children: the order of
 * a dumpfile. Hardlinked leaves report the path of their first occurrence.
 */
export function* walk(root: Dir): Generator<WalkEntry> {
  const seen = new Map<Leaf, BStr>();
  yield { path: "/", node: root, parent: null, name: "", firstPath: "/" };
  // Explicit stack: trees can be thousands of levels deep.
  const stack: { dir: Dir; prefix: BStr; names: BStr[]; i: number }[] = [
    { dir: root, prefix: "/", names: sortedNames(root), i: 0 },
  ];
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    if (top.i >= top.names.length) {
      stack.pop();
      continue;
    }
    const name = top.names[top.i++]!;
    const node = top.dir.entries.get(name)!;
    const path = top.prefix + name;
    if (node.kind === "dir") {
      yield { path, node, parent: top.dir, name, firstPath: path };
      stack.push({ dir: node, prefix: path + "/", names: sortedNames(node), i: 0 });
    } else {
      let firstPath = seen.get(node);
      if (firstPath === undefined) {
        firstPath = path;
        seen.set(node, path);
      }
      yield { path, node, parent: top.dir, name, firstPath };
    }
  }
}

/** Number of directory entries referring to each leaf. */
export function countLinks(root: Dir): Map<Leaf, number> {
  const counts = new Map<Leaf, number>();
  const stack: Dir[] = [root];
  while (stack.length > 0) {
    const dir = stack.pop()!;
    for (const child of dir.entries.values()) {
      if (child.kind === "dir") stack.push(child);
      else counts.set(child, (counts.get(child) ?? 0) + 1);
    }
  }
  return counts;
}

/** Split an absolute byte-string path into components ("/" → []). */
export function splitPath(path: BStr): BStr[] {
  return path === "/" ? [] : path.slice(1).split("/");
}

export function lookup(root: Dir, path: BStr): Node | undefined {
  let node: Node = root;
  for (const part of splitPath(path)) {
    if (node.kind !== "dir") return undefined;
    const next: Node | undefined = node.entries.get(part);
    if (next === undefined) return undefined;
    node = next;
  }
  return node;
}

// ---- copying and comparing -------------------------------------------------------------

function cloneStat(s: Stat): Stat {
  return { ...s, xattrs: new Map(s.xattrs) };
}

/**
 * Deep copy of a tree. Hardlinks stay hardlinks (one new Leaf per old Leaf);
 * byte arrays are shared, as they are never mutated in place.
 */
export function cloneTree(root: Dir): Dir {
  const leaves = new Map<Leaf, Leaf>();
  const copy = (dir: Dir): Dir => {
    const out: Dir = { kind: "dir", stat: cloneStat(dir.stat), entries: new Map() };
    for (const [name, child] of dir.entries) {
      if (child.kind === "dir") {
        out.entries.set(name, copy(child));
      } else {
        let leaf = leaves.get(child);
        if (leaf === undefined) {
          leaf = { kind: "leaf", stat: cloneStat(child.stat), content: { ...child.content } };
          if (child.nlink !== undefined) leaf.nlink = child.nlink;
          if (child.primaryPath !== undefined) leaf.primaryPath = child.primaryPath;
          leaves.set(child, leaf);
        }
        out.entries.set(name, leaf);
      }
    }
    return out;
  };
  // Recursion depth equals tree depth; composefs trees are bounded (readers
  // reject depth > 2048), well within the JS stack.
  return copy(root);
}
