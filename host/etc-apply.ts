// Apply an /etc merge plan (shared/etcmerge.ts) on disk: into a fresh copy of
// the new image's /etc (bind mode), or as an overlay upper directory holding
// only the differences from it (overlay mode), per etc-merge.md §7 and §9.
//
// Every write is relative to a directory fd of the tree being built: parents
// are opened with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), the final
// component is created with O_CREAT|O_EXCL|O_NOFOLLOW / mkdirat / symlinkat /
// mknodat and changed through its own fd (fchown, fchmod, fsetxattr,
// futimens) or with AT_SYMLINK_NOFOLLOW. A symlink in the new image's /etc —
// even one pointing at / or out of the deployment — is only ever removed or
// replaced as a link, never passed through, so nothing outside the tree is
// written. Removal is fd-relative unlinkat, never `rm -rf` on a path.
//
// Local nodes (C) are copied from the live /etc the same way (openat2 from
// its root fd); a file's bytes are hashed while copied and must match the
// snapshot the plan was made from, so the result is exactly the planned tree
// or an error. Durability is the caller's: one syncfs of the filesystem
// before the tree is exchanged in (thousands of fsyncs cost far more). Per created node (§7.3): files are created 0600, then chown,
// chmod (after chown, which clears set-id bits), the node's exact xattr set
// (after chown, which drops security.capability; inherited default ACLs
// removed), times last; directories get their times after all their
// children (post-order). Hardlinks are not preserved (row 36).

import { createHash } from "node:crypto";
import { fchmodSync, fchownSync, readSync, writeSync } from "node:fs";

import { type BStr, bytesEqual, displayBstr } from "../shared/bytes.ts";
import { CfsError } from "../shared/errors.ts";
import { type EtcNode, type EtcTree, type Plan, comparePaths } from "../shared/etcmerge.ts";
import * as sys from "../shared/sys.ts";
import { listDirFd } from "./etcsnap.ts";
import { fsErr } from "./fsops.ts";

const RESOLVE = sys.RESOLVE_BENEATH | sys.RESOLVE_NO_SYMLINKS;
const S_IFMT = 0o170000;
const SELINUX = "security.selinux";
/** xattrs that would change what an overlay upper means; never copied into one. */
const isOverlayXattr = (n: BStr): boolean => n.startsWith("trusted.overlay.") || n.startsWith("user.overlay.");

const show = (p: BStr): string => `/etc/${displayBstr(p)}`;
const parentOf = (p: BStr): BStr => (p.includes("/") ? p.slice(0, p.lastIndexOf("/")) : "");
const baseOf = (p: BStr): BStr => (p.includes("/") ? p.slice(p.lastIndexOf("/") + 1) : p);

export interface ApplyStats {
  /** Nodes written (files, links, directories, whiteouts). */
  written: number;
  /** Subtrees removed. */
  removed: number;
  /** Bytes of local files copied. */
  bytes: number;
}

/** A tree being written: its root fd and a label for messages. */
class Target {
  readonly fd: number;
  constructor(
    readonly root: BStr,
    readonly label: string,
  ) {
    try {
      this.fd = sys.open(root, sys.O_RDONLY | sys.O_DIRECTORY | sys.O_NOFOLLOW);
    } catch (e) {
      throw new CfsError(root, `cannot open the ${label}: ${(e as Error).message}`);
    }
  }

  /** An fd of the directory `rel` ("" = the root), resolved without symlinks and beneath the root. */
  openDir(rel: BStr, forPath: BStr): number {
    if (rel === "") return sys.openat(this.fd, ".", sys.O_RDONLY | sys.O_DIRECTORY);
    try {
      return sys.openat2(this.fd, rel, sys.O_RDONLY | sys.O_DIRECTORY | sys.O_NOFOLLOW, { resolve: RESOLVE });
    } catch (e) {
      if (sys.isErrno(e, "ELOOP", "EXDEV")) throw new CfsError(show(forPath), `refusing to write below ${show(rel)}: it is a symlink in the ${this.label}`);
      if (sys.isErrno(e, "ENOTDIR")) throw new CfsError(show(forPath), `refusing to write below ${show(rel)}: it is not a directory in the ${this.label}`);
      throw e;
    }
  }

  close(): void {
    sys.close(this.fd);
  }
}

/** lstat of `name` in `dirfd`, or null. */
function lookAt(dirfd: number, name: BStr): sys.Statx | null {
  try {
    return sys.statx(name, sys.AT_SYMLINK_NOFOLLOW, sys.STATX_BASIC_STATS, dirfd);
  } catch (e) {
    if (sys.isErrno(e, "ENOENT")) return null;
    throw e;
  }
}

/** Remove `name` in `dirfd` and everything below it, never following a symlink. Returns whether something was there. */
export function removeAt(dirfd: number, name: BStr, label: BStr): boolean {
  const st = lookAt(dirfd, name);
  if (st === null) return false;
  if ((st.mode & S_IFMT) === 0o040000) {
    const fd = sys.openat2(dirfd, name, sys.O_RDONLY | sys.O_DIRECTORY | sys.O_NOFOLLOW, { resolve: RESOLVE });
    try {
      for (const child of listDirFd(fd, label)) removeAt(fd, child, `${label}/${child}`);
    } finally {
      sys.close(fd);
    }
    sys.unlinkat(dirfd, name, sys.AT_REMOVEDIR);
  } else {
    sys.unlinkat(dirfd, name, 0);
  }
  return true;
}

function tolerable(name: BStr, e: unknown): boolean {
  // A kernel without the policy may refuse labels it cannot map.
  return name === SELINUX && sys.isErrno(e, "EOPNOTSUPP", "EINVAL", "EPERM", "EACCES");
}

/** Give the open node exactly `want`'s xattrs (extras, e.g. an inherited default ACL, are removed). */
function setXattrsFd(fd: number, want: Map<BStr, Uint8Array>, label: string, skip: (n: BStr) => boolean): void {
  const have = sys.readXattrsFd(fd, label);
  for (const [k] of have) {
    if (skip(k) || want.has(k)) continue;
    try {
      sys.fremovexattr(fd, k, label);
    } catch (e) {
      if (!tolerable(k, e)) throw e;
    }
  }
  for (const [k, v] of want) {
    if (skip(k)) continue;
    const cur = have.get(k);
    if (cur !== undefined && bytesEqual(cur, v)) continue;
    try {
      sys.fsetxattr(fd, k, v, 0, label);
    } catch (e) {
      if (!tolerable(k, e)) throw e;
    }
  }
}

/** A symlink's own xattrs (the kernel allows only security.* and trusted.* on links). */
function setLinkXattrs(dirfd: number, name: BStr, want: Map<BStr, Uint8Array>, label: string, skip: (n: BStr) => boolean): void {
  const path = `/proc/self/fd/${dirfd}/${name}`; // l*xattr: the link itself, reached through its parent's fd
  for (const [k, v] of want) {
    if (skip(k)) continue;
    try {
      sys.lsetxattr(path, k, v);
    } catch (e) {
      if (!tolerable(k, e)) throw new CfsError(label, (e as Error).message);
    }
  }
}

const myUid = process.geteuid?.() ?? 0;
const myGid = process.getegid?.() ?? 0;

function times(n: EtcNode): [number, number] | null {
  return n.mtime === undefined ? null : [n.mtime.sec, n.mtime.nsec];
}

/** Where the bytes of current (C) files are read from. */
export class CurrentSource {
  private readonly t: Target;
  constructor(root: BStr) {
    this.t = new Target(root, "current /etc");
  }

  /** Copy C's file `p` into the new file `out`, checking the bytes against the snapshot's hash. */
  copyFile(p: BStr, node: EtcNode & { kind: "file" }, out: number, buf: Uint8Array): number {
    let fd: number;
    try {
      fd = sys.openat2(this.t.fd, p, sys.O_RDONLY | sys.O_NOFOLLOW | sys.O_NONBLOCK, { resolve: RESOLVE });
    } catch (e) {
      throw new CfsError(show(p), `cannot open the local file: ${(e as Error).message}`);
    }
    const h = createHash("sha256");
    let total = 0;
    try {
      const st = sys.statx("", sys.AT_EMPTY_PATH, sys.STATX_BASIC_STATS, fd);
      if ((st.mode & S_IFMT) !== 0o100000) throw new CfsError(show(p), "is no longer a regular file in the current /etc");
      for (;;) {
        const n = readSync(fd, buf, 0, buf.byteLength, null);
        if (n === 0) break;
        h.update(buf.subarray(0, n));
        let off = 0;
        while (off < n) off += writeSync(out, buf, off, n - off);
        total += n;
      }
    } catch (e) {
      if (e instanceof CfsError) throw e;
      throw fsErr(`${this.t.root}/${p}`, "copy", e);
    } finally {
      sys.close(fd);
    }
    if (h.digest("hex") !== node.sha256) throw new CfsError(show(p), "changed in the current /etc while the merge was being applied (run finalize again)");
    return total;
  }

  close(): void {
    this.t.close();
  }
}

interface Writer {
  t: Target;
  cur: CurrentSource;
  buf: Uint8Array;
  stats: ApplyStats;
  skipXattr: (n: BStr) => boolean;
  /** Directories whose times must be set at the end (rel → node). */
  dirTimes: Map<BStr, EtcNode>;
}

/** Create C's node `node` at `p` (nothing may exist there). Directories get metadata now, times later. */
function createNode(w: Writer, p: BStr, node: EtcNode): void {
  const dfd = w.t.openDir(parentOf(p), p);
  const name = baseOf(p);
  const label = `${w.t.root}/${p}`;
  try {
    if (node.kind === "file") {
      const fd = sys.openat(dfd, name, sys.O_CREAT | sys.O_EXCL | sys.O_WRONLY | sys.O_NOFOLLOW, 0o600);
      try {
        w.stats.bytes += w.cur.copyFile(p, node, fd, w.buf);
        if (node.uid !== myUid || node.gid !== myGid) fchownSync(fd, node.uid, node.gid);
        fchmodSync(fd, node.mode & 0o7777);
        setXattrsFd(fd, node.xattrs, label, w.skipXattr);
        const t = times(node);
        if (t !== null) sys.futimens(fd, t, t, label);
      } finally {
        sys.close(fd);
      }
    } else if (node.kind === "link") {
      sys.symlinkat(node.target, dfd, name);
      if (node.uid !== myUid || node.gid !== myGid) sys.fchownat(dfd, name, node.uid, node.gid);
      setLinkXattrs(dfd, name, node.xattrs, label, w.skipXattr);
      const t = times(node);
      if (t !== null) sys.utimensat(name, t, t, sys.AT_SYMLINK_NOFOLLOW, dfd);
    } else {
      sys.mkdirat(dfd, name, 0o700);
      applyDirMeta(w, dfd, name, node, label);
      w.dirTimes.set(p, node);
    }
    w.stats.written++;
  } catch (e) {
    if (e instanceof CfsError) throw e;
    throw fsErr(label, "write", e);
  } finally {
    sys.close(dfd);
  }
}

/** Owner, mode and exact xattrs of the directory `name` in `dfd`. */
function applyDirMeta(w: Writer, dfd: number, name: BStr, node: EtcNode, label: string): void {
  const fd = sys.openat2(dfd, name, sys.O_RDONLY | sys.O_DIRECTORY | sys.O_NOFOLLOW, { resolve: RESOLVE });
  try {
    if (node.uid !== myUid || node.gid !== myGid) fchownSync(fd, node.uid, node.gid);
    fchmodSync(fd, node.mode & 0o7777);
    setXattrsFd(fd, node.xattrs, label, w.skipXattr);
  } finally {
    sys.close(fd);
  }
}

/** Set directory times deepest first (after every child was written). */
function finishDirs(w: Writer, extra: Iterable<[BStr, EtcNode]>): void {
  for (const [p, n] of extra) if (!w.dirTimes.has(p)) w.dirTimes.set(p, n);
  const order = [...w.dirTimes.keys()].sort((a, b) => comparePaths(b, a));
  for (const p of order) {
    const n = w.dirTimes.get(p)!;
    const fd = p === "" ? sys.openat(w.t.fd, ".", sys.O_RDONLY | sys.O_DIRECTORY) : sys.openat2(w.t.fd, p, sys.O_RDONLY | sys.O_DIRECTORY | sys.O_NOFOLLOW, { resolve: RESOLVE });
    try {
      const t = times(n);
      if (t !== null) sys.futimens(fd, t, t, `${w.t.root}/${p}`);
    } finally {
      sys.close(fd);
    }
  }
}

function newWriter(dest: BStr, label: string, currentRoot: BStr, skipXattr: (n: BStr) => boolean): Writer {
  const t = new Target(dest, label);
  let cur: CurrentSource;
  try {
    cur = new CurrentSource(currentRoot);
  } catch (e) {
    t.close();
    throw e;
  }
  return { t, cur, buf: new Uint8Array(1 << 20), stats: { written: 0, removed: 0, bytes: 0 }, skipXattr, dirTimes: new Map() };
}

function closeWriter(w: Writer): void {
  w.cur.close();
  w.t.close();
}

/**
 * Bind mode: apply `plan` to `dest`, a fresh copy of N (written by the
 * caller), reading local nodes from `currentRoot` (C on disk, snapshot `C`).
 * `result` is the planned tree (applyPlan), used for directory times: every
 * directory whose content changed gets the time of its planned node back.
 * Nothing is fsynced here: the caller makes the whole tree durable at once
 * (syncfs) before it publishes it.
 */
export function applyPlanToCopy(dest: BStr, plan: Plan, C: EtcTree, currentRoot: BStr, result: EtcTree): ApplyStats {
  const w = newWriter(dest, "merged /etc", currentRoot, () => false);
  const touched = new Map<BStr, EtcNode>();
  const touch = (p: BStr): void => {
    const parent = parentOf(p);
    const n = parent === "" ? null : result.get(parent);
    if (parent === "" || n !== undefined) touched.set(parent, n ?? ROOT_TIMELESS);
  };
  try {
    for (const a of plan.actions) {
      if (a.op === "keep-new") continue;
      const c = a.op === "remove" ? undefined : C.get(a.path);
      if (a.op !== "remove" && c === undefined) throw new CfsError(show(a.path), "the plan names a local node the current snapshot lacks");
      const dfd = w.t.openDir(parentOf(a.path), a.path);
      const name = baseOf(a.path);
      try {
        if (c === undefined) {
          if (removeAt(dfd, name, `${dest}/${a.path}`)) w.stats.removed++;
          touch(a.path);
          continue;
        }
        const st = lookAt(dfd, name);
        const isDir = st !== null && (st.mode & S_IFMT) === 0o040000;
        if (a.op === "meta-local" || (c.kind === "dir" && isDir)) {
          applyDirMeta(w, dfd, name, c, `${dest}/${a.path}`);
          w.dirTimes.set(a.path, c);
          continue;
        }
        if (st !== null && removeAt(dfd, name, `${dest}/${a.path}`)) w.stats.removed++;
      } finally {
        sys.close(dfd);
      }
      createNode(w, a.path, c!);
      touch(a.path);
    }
    finishDirs(w, touched);
    return w.stats;
  } finally {
    closeWriter(w);
  }
}

/** Placeholder for the root directory: its times are left as the copy of N set them. */
const ROOT_TIMELESS: EtcNode = { kind: "dir", mode: 0o755, uid: 0, gid: 0, xattrs: new Map() };

/**
 * Overlay mode: write into `upper` (an empty directory) exactly what an
 * overlay with the new image's /etc (`N`) as its lower layer needs so that
 * it shows `result`: changed or added nodes (copied from C), whiteouts
 * (character device 0:0) for removed paths, and the directories on the way
 * with their planned metadata. trusted.overlay.* / user.overlay.* xattrs are
 * never copied (they would change how the kernel reads the upper).
 */
export function writeOverlayUpper(upper: BStr, C: EtcTree, currentRoot: BStr, N: EtcTree, result: EtcTree): ApplyStats {
  const w = newWriter(upper, "overlay upper", currentRoot, isOverlayXattr);
  try {
    const need = new Set<BStr>(); // directories the upper must contain (parents of entries)
    const entries: { p: BStr; kind: "node" | "whiteout" }[] = [];
    const paths = [...new Set([...N.keys(), ...result.keys()])].sort(comparePaths);
    const removedTop = (p: BStr): boolean => {
      const parent = parentOf(p);
      return parent === "" || result.get(parent)?.kind === "dir";
    };
    for (const p of paths) {
      const n = N.get(p);
      const r = result.get(p);
      if (r === undefined) {
        // Whiteout only where the parent survives as a directory and the lower
        // would show something (below a replaced node the lower is hidden anyway).
        if (n !== undefined && removedTop(p) && lowerVisible(p, N, result)) entries.push({ p, kind: "whiteout" });
        continue;
      }
      if (r.kind === "dir" && n !== undefined && n.kind === "dir") {
        if (!sameDirMeta(r, n)) entries.push({ p, kind: "node" });
        continue;
      }
      if (n !== undefined && n.kind === r.kind && sameLeaf(r, n) && lowerVisible(p, N, result)) continue;
      entries.push({ p, kind: "node" });
    }
    for (const e of entries) for (let a = parentOf(e.p); a !== ""; a = parentOf(a)) need.add(a);
    const nodes = new Set(entries.filter((e) => e.kind === "node").map((e) => e.p));
    const all = [...new Set([...need, ...entries.map((e) => e.p)])].sort(comparePaths);
    for (const p of all) {
      const r = result.get(p);
      if (nodes.has(p) || need.has(p)) {
        if (r === undefined) throw new CfsError(show(p), "overlay upper: a needed directory is not in the planned tree");
        if (r.kind === "dir") {
          const dfd = w.t.openDir(parentOf(p), p);
          try {
            sys.mkdirat(dfd, baseOf(p), 0o700);
            applyDirMeta(w, dfd, baseOf(p), r, `${upper}/${p}`);
          } finally {
            sys.close(dfd);
          }
          w.dirTimes.set(p, r);
          w.stats.written++;
          continue;
        }
        const c = C.get(p);
        if (c === undefined || c.kind !== r.kind) throw new CfsError(show(p), "overlay upper: a changed node does not come from the current /etc");
        createNode(w, p, c);
        continue;
      }
      // a whiteout
      const dfd = w.t.openDir(parentOf(p), p);
      try {
        sys.mknod(baseOf(p), sys.S_IFCHR, 0, dfd);
      } finally {
        sys.close(dfd);
      }
      w.stats.written++;
    }
    finishDirs(w, []);
    return w.stats;
  } finally {
    closeWriter(w);
  }
}

/** True when every ancestor of `p` is a directory in the lower (N) and in the result, so the overlay merges N's node at `p` in. */
function lowerVisible(p: BStr, N: EtcTree, result: EtcTree): boolean {
  for (let a = parentOf(p); a !== ""; a = parentOf(a)) {
    if (N.get(a)?.kind !== "dir" || result.get(a)?.kind !== "dir") return false;
  }
  return true;
}

function sameXattrs(a: Map<BStr, Uint8Array>, b: Map<BStr, Uint8Array>): boolean {
  const ka = [...a.keys()].filter((k) => !isOverlayXattr(k));
  const kb = [...b.keys()].filter((k) => !isOverlayXattr(k));
  if (ka.length !== kb.length) return false;
  for (const k of ka) {
    const v = b.get(k);
    if (v === undefined || !bytesEqual(v, a.get(k)!)) return false;
  }
  return true;
}

/** Directory metadata equal for the overlay (the upper directory's own attributes win, labels included). */
function sameDirMeta(a: EtcNode, b: EtcNode): boolean {
  return (a.mode & 0o7777) === (b.mode & 0o7777) && a.uid === b.uid && a.gid === b.gid && sameXattrs(a.xattrs, b.xattrs);
}

function sameLeaf(a: EtcNode, b: EtcNode): boolean {
  if (!sameDirMeta(a, b)) return false;
  if (a.kind === "file" && b.kind === "file") return a.sha256 === b.sha256;
  if (a.kind === "link" && b.kind === "link") return bytesEqual(a.target, b.target);
  return false;
}
