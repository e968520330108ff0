// Write a subtree of an image (shared/tree.ts) to a real directory: the
// deployment's /etc copy and the initial /var (bootc-composefs.md §5.1 step 8).
//
// Per node (etc-merge.md §7.3): files are created O_EXCL with mode 0600,
// written, then chown, chmod (after chown, which clears set-id bits), xattrs
// (after chown, which drops security.capability), times last; symlinks with
// lchown, their security.*/trusted.* xattrs and their own times; directories
// get their metadata after their children (post-order, so the mtime sticks);
// devices and fifos with mknod; sockets are skipped (they cannot be
// recreated meaningfully). Hardlinks inside the subtree stay hardlinks.
// Every file is fsynced; directories are fsynced by the caller (fsyncTree) or
// here when `fsync` is set. Nothing follows a symlink.

import { chmodSync, closeSync, copyFileSync, readFileSync, constants as fsConstants, fchmodSync, fchownSync, fsyncSync, linkSync, lchownSync, mkdirSync, openSync, symlinkSync, writeSync } from "node:fs";

import { type BStr, displayBstr } from "../shared/bytes.ts";
import { CfsError } from "../shared/errors.ts";
import * as sys from "../shared/sys.ts";
import type { Dir, Leaf, Node } from "../shared/tree.ts";
import { bp, exists, fsErr } from "./fsops.ts";
import type { Repository } from "./repo.ts";

/** Where a regular leaf's bytes come from: inline data or a repository object. */
export interface ContentSource {
  /** Inline bytes, or null when the content is an object (then `objectPath` names it). */
  inline(leaf: Leaf): Uint8Array | null;
  objectPath(leaf: Leaf): string | null;
}

/** Content of image leaves from the repository the image belongs to. */
export function repoContent(repo: Repository): ContentSource {
  return {
    inline: (leaf) => {
      const c = leaf.content;
      if (c.type !== "regular") return null;
      if (c.inline !== null) return c.inline;
      if (c.size === 0n) return new Uint8Array(0);
      return null;
    },
    objectPath: (leaf) => {
      const c = leaf.content;
      if (c.type !== "regular" || c.digest === null) return null;
      return repo.objectPath(c.digest);
    },
  };
}

/** All bytes of a regular leaf (inline or object). */
export function leafBytes(src: ContentSource, leaf: Leaf, name: string): Uint8Array {
  const inl = src.inline(leaf);
  if (inl !== null) return inl;
  const obj = src.objectPath(leaf);
  if (obj === null) throw new CfsError(name, "file content is not available (sparse file without an object)");
  try {
    return new Uint8Array(readFileSync(obj));
  } catch (e) {
    throw new CfsError(name, `cannot read its object ${obj}: ${fsErr(obj, "read", e).what}`);
  }
}

export interface WriteTreeOptions {
  /** Leave paths that already exist alone (the /var copy at install). */
  skipExisting?: boolean;
  /** Top-level names to leave out (e.g. `.updated` of /etc). */
  skipTop?: ReadonlySet<BStr>;
  /** Do not fsync each file: the caller makes the whole tree durable at once (syncfs) before publishing it. */
  noFsync?: boolean;
}

const myUid = process.geteuid?.() ?? 0;
const myGid = process.getegid?.() ?? 0;

function setXattrs(path: BStr, node: Node, isLink: boolean): void {
  for (const [name, value] of node.stat.xattrs) {
    if (isLink && !name.startsWith("security.") && !name.startsWith("trusted.")) continue;
    try {
      sys.lsetxattr(path, name, value);
    } catch (e) {
      // A kernel without an SELinux policy may refuse labels it cannot map; everything else is an error.
      if (name === "security.selinux" && sys.isErrno(e, "EOPNOTSUPP", "EINVAL", "EPERM")) continue;
      throw e;
    }
  }
}

function setTimes(path: BStr, node: Node): void {
  sys.utimensat(path, [node.stat.mtimeSec, node.stat.mtimeNsec], [node.stat.mtimeSec, node.stat.mtimeNsec]);
}

function needChown(node: Node): boolean {
  return node.stat.uid !== myUid || node.stat.gid !== myGid;
}

function writeRegular(path: BStr, leaf: Leaf, src: ContentSource, name: string, fsync: boolean): void {
  const inl = src.inline(leaf);
  let fd: number;
  if (inl === null) {
    const obj = src.objectPath(leaf);
    if (obj === null) throw new CfsError(name, "file content is not available (sparse file without an object)");
    try {
      copyFileSync(obj, bp(path), fsConstants.COPYFILE_EXCL | fsConstants.COPYFILE_FICLONE);
      chmodSync(bp(path), 0o600);
      fd = openSync(bp(path), "r+");
    } catch (e) {
      throw fsErr(path, "copy", e);
    }
  } else {
    try {
      fd = openSync(bp(path), "wx", 0o600);
      let off = 0;
      while (off < inl.byteLength) off += writeSync(fd, inl, off, inl.byteLength - off);
    } catch (e) {
      throw fsErr(path, "write", e);
    }
  }
  try {
    if (needChown(leaf)) fchownSync(fd, leaf.stat.uid, leaf.stat.gid);
    fchmodSync(fd, leaf.stat.mode & 0o7777);
    setXattrs(path, leaf, false);
    setTimes(path, leaf);
    if (fsync) fsyncSync(fd);
  } catch (e) {
    throw e instanceof CfsError ? e : fsErr(path, "write", e);
  } finally {
    closeSync(fd);
  }
}

function writeLeaf(path: BStr, leaf: Leaf, src: ContentSource, name: string, fsync: boolean): void {
  const c = leaf.content;
  switch (c.type) {
    case "regular":
      writeRegular(path, leaf, src, name, fsync);
      return;
    case "symlink":
      try {
        symlinkSync(Buffer.from(c.target), bp(path));
        if (needChown(leaf)) lchownSync(bp(path), leaf.stat.uid, leaf.stat.gid);
      } catch (e) {
        throw fsErr(path, "symlink", e);
      }
      setXattrs(path, leaf, true);
      setTimes(path, leaf);
      return;
    case "chr":
    case "blk":
    case "fifo": {
      const type = c.type === "chr" ? sys.S_IFCHR : c.type === "blk" ? sys.S_IFBLK : sys.S_IFIFO;
      const rdev = c.type === "chr" || c.type === "blk" ? c.rdev : 0;
      sys.mknod(path, type | (leaf.stat.mode & 0o7777), rdev);
      try {
        if (needChown(leaf)) lchownSync(bp(path), leaf.stat.uid, leaf.stat.gid);
        chmodSync(bp(path), leaf.stat.mode & 0o7777);
      } catch (e) {
        throw fsErr(path, "chmod", e);
      }
      setXattrs(path, leaf, false);
      setTimes(path, leaf);
      return;
    }
    case "socket":
      return;
  }
}

/**
 * Write `dir`'s children into the existing directory `dest` (its own
 * metadata is applied too unless `skipExisting` keeps an existing one).
 * `label` names the source in errors (e.g. "image …: /etc").
 */
export function writeTree(dir: Dir, dest: BStr, src: ContentSource, label: string, opts: WriteTreeOptions = {}): void {
  const links = new Map<Leaf, BStr>();
  const walk = (d: Dir, path: BStr, rel: string, top: boolean): void => {
    for (const [name, node] of [...d.entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      if (top && opts.skipTop?.has(name)) continue;
      const p = `${path}/${name}`;
      const r = `${rel}/${displayBstr(name)}`;
      const existed = opts.skipExisting === true && exists(p);
      if (node.kind === "dir") {
        if (!existed) {
          try {
            mkdirSync(bp(p), { mode: 0o700 });
          } catch (e) {
            throw fsErr(p, "mkdir", e);
          }
        }
        walk(node, p, r, false);
        if (!existed) applyDirMeta(p, node);
        continue;
      }
      if (existed) continue;
      const first = links.get(node);
      if (first !== undefined) {
        try {
          linkSync(bp(first), bp(p));
        } catch (e) {
          throw fsErr(p, "link", e);
        }
        continue;
      }
      writeLeaf(p, node, src, `${label}${r}`, !opts.noFsync);
      links.set(node, p);
    }
  };
  walk(dir, dest, "", true);
  if (!opts.skipExisting) applyDirMeta(dest, dir);
}

function applyDirMeta(path: BStr, d: Dir): void {
  try {
    if (needChown(d)) lchownSync(bp(path), d.stat.uid, d.stat.gid);
    chmodSync(bp(path), d.stat.mode & 0o7777);
  } catch (e) {
    throw fsErr(path, "chmod", e);
  }
  setXattrs(path, d, false);
  setTimes(path, d);
}
