// Snapshots of an /etc for the three-way merge planner (shared/etcmerge.ts):
// from an image tree (pristine and new: read through the EROFS reader, no
// mount) and from a live directory (current). Paths are relative to /etc,
// byte strings, without a leading "/". Nothing follows a symlink: the live
// walk goes through directory fds (openat2 RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS, statx AT_SYMLINK_NOFOLLOW, readlinkat). Regular files are
// compared by the SHA-256 of their bytes, whatever their fs-verity state
// (bootc-composefs.md §11 #6).

import { createHash } from "node:crypto";
import { readSync, readdirSync } from "node:fs";

import type { BStr } from "../shared/bytes.ts";
import { CfsError } from "../shared/errors.ts";
import type { EtcNode, EtcTree, SpecialFile } from "../shared/etcmerge.ts";
import * as sys from "../shared/sys.ts";
import type { Dir } from "../shared/tree.ts";
import { fsErr } from "./fsops.ts";
import { type ContentSource, leafBytes } from "./materialize.ts";

export interface EtcSnapshot {
  tree: EtcTree;
  specials: SpecialFile[];
}

const sha256 = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

/** The snapshot of an image's /etc directory node. `label` names the image in errors. */
export function etcFromImage(etc: Dir | null, src: ContentSource, label: string): EtcSnapshot {
  const tree: EtcTree = new Map();
  const specials: SpecialFile[] = [];
  if (etc === null) return { tree, specials };
  const walk = (d: Dir, prefix: BStr): void => {
    for (const [name, node] of d.entries) {
      const p = prefix === "" ? name : `${prefix}/${name}`;
      const base = { mode: node.stat.mode & 0o7777, uid: node.stat.uid, gid: node.stat.gid, xattrs: new Map(node.stat.xattrs), mtime: { sec: node.stat.mtimeSec, nsec: node.stat.mtimeNsec } };
      if (node.kind === "dir") {
        tree.set(p, { ...base, kind: "dir" });
        walk(node, p);
        continue;
      }
      const c = node.content;
      if (c.type === "regular") tree.set(p, { ...base, kind: "file", sha256: sha256(leafBytes(src, node, `${label}: /etc/${p}`)) });
      else if (c.type === "symlink") tree.set(p, { ...base, kind: "link", target: c.target });
      else specials.push({ path: p, type: c.type });
    }
  };
  walk(etc, "");
  return { tree, specials };
}

/** Open flags and resolution of every walk step: never through or onto a symlink, never out of the walked tree. */
const RESOLVE = sys.RESOLVE_BENEATH | sys.RESOLVE_NO_SYMLINKS;
const S_IFMT = 0o170000;

/** Names in the directory open as `fd` (byte strings, sorted). */
export function listDirFd(fd: number, label: BStr): BStr[] {
  try {
    // /proc/self/fd/N is the directory this fd holds, whatever happened to its path.
    return (readdirSync(`/proc/self/fd/${fd}`, { encoding: "buffer" }) as Buffer[]).map((b) => b.toString("latin1")).sort();
  } catch (e) {
    throw fsErr(label, "readdir", e);
  }
}

const hashBuf = new Uint8Array(1 << 20);

/** SHA-256 of an open file's bytes (from its current offset). */
function fdSha256(fd: number, label: BStr): string {
  const h = createHash("sha256");
  try {
    for (;;) {
      const n = readSync(fd, hashBuf, 0, hashBuf.byteLength, null);
      if (n === 0) break;
      h.update(hashBuf.subarray(0, n));
    }
  } catch (e) {
    throw fsErr(label, "read", e);
  }
  return h.digest("hex");
}

/** Open `name` in `dirfd` for reading, refusing symlinks anywhere; checks it is still the inode `ino` of type `type`. */
function openChecked(dirfd: number, name: BStr, flags: number, ino: bigint, type: number, label: BStr): number {
  const fd = sys.openat2(dirfd, name, flags | sys.O_RDONLY | sys.O_NOFOLLOW, { resolve: RESOLVE });
  const st = sys.statx("", sys.AT_EMPTY_PATH, sys.STATX_BASIC_STATS, fd);
  if (st.ino !== ino || (st.mode & S_IFMT) !== type) {
    sys.close(fd);
    throw new CfsError(label, "changed while it was being read (replaced by another file)");
  }
  return fd;
}

/**
 * The snapshot of a live /etc directory (absent → empty). Walked through
 * directory fds only: each entry is looked at with statx(AT_SYMLINK_NOFOLLOW)
 * relative to its parent's fd, directories and files are opened with
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, O_NOFOLLOW) and checked to
 * be the inode that was looked at, symlinks are read with readlinkat and
 * their own xattrs; nothing is ever resolved through a symlink, so a link
 * pointing out of /etc (or a directory swapped for one during the walk)
 * cannot make the walk read outside it. Fifos, sockets and devices are
 * never opened; they are returned as `specials`.
 */
export function etcFromDisk(root: BStr): EtcSnapshot {
  const tree: EtcTree = new Map();
  const specials: SpecialFile[] = [];
  let rootFd: number;
  try {
    rootFd = sys.open(root, sys.O_RDONLY | sys.O_DIRECTORY | sys.O_NOFOLLOW);
  } catch (e) {
    if (sys.isErrno(e, "ENOENT")) return { tree, specials };
    if (sys.isErrno(e, "ENOTDIR", "ELOOP")) throw new CfsError(root, "not a directory");
    throw e;
  }
  const walk = (dirFd: number, rel: BStr): void => {
    for (const name of listDirFd(dirFd, rel === "" ? root : `${root}/${rel}`)) {
      const p = rel === "" ? name : `${rel}/${name}`;
      const abs = `${root}/${p}`;
      let st: sys.Statx;
      try {
        st = sys.statx(name, sys.AT_SYMLINK_NOFOLLOW, sys.STATX_BASIC_STATS, dirFd);
      } catch (e) {
        if (sys.isErrno(e, "ENOENT")) continue; // removed while walking
        throw e;
      }
      const type = st.mode & S_IFMT;
      const meta = { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: { sec: st.mtimeSec, nsec: st.mtimeNsec } };
      if (type === 0o040000) {
        const fd = openChecked(dirFd, name, sys.O_DIRECTORY, st.ino, type, abs);
        try {
          tree.set(p, { ...meta, xattrs: sys.readXattrsFd(fd, abs), kind: "dir" });
          walk(fd, p);
        } finally {
          sys.close(fd);
        }
      } else if (type === 0o100000) {
        const fd = openChecked(dirFd, name, sys.O_NONBLOCK, st.ino, type, abs);
        try {
          tree.set(p, { ...meta, xattrs: sys.readXattrsFd(fd, abs), kind: "file", sha256: fdSha256(fd, abs) });
        } finally {
          sys.close(fd);
        }
      } else if (type === 0o120000) {
        const target = sys.readlinkat(dirFd, name);
        // l*xattr on the link itself, reached through the parent's fd
        tree.set(p, { ...meta, xattrs: sys.readXattrs(`/proc/self/fd/${dirFd}/${name}`), kind: "link", target });
      } else {
        specials.push({ path: p, type: type === 0o010000 ? "fifo" : type === 0o140000 ? "socket" : type === 0o020000 ? "chr" : "blk" });
      }
    }
  };
  try {
    walk(rootFd, "");
  } finally {
    sys.close(rootFd);
  }
  return { tree, specials };
}
