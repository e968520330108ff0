// A real directory → the in-memory tree (shared/tree.ts), as C mkcomposefs
// reads one (libcomposefs lcfs_build), plus hardlinks.
//
// Per entry: statx without following symlinks (type, permission bits,
// uid/gid, nanosecond mtime, rdev, size, dev/ino), xattrs through
// llistxattr/lgetxattr, symlink targets through readlink. Regular files of
// 1..64 bytes are stored inline; larger ones become external files named by
// their fs-verity digest, computed in parallel by the worker pool
// (host/digest.ts) after the walk. Hardlinks are found by (dev, ino) and become
// one shared Leaf (C mkcomposefs instead makes every link a separate file;
// `hardlinks: false` reproduces that).
//
// `fillDigestStore` then copies every external file into a C-compatible
// flat store `DIR/XX/<rest>` (repository.md §4.4): an unnamed O_TMPFILE in
// DIR/XX, reflink or in-kernel copy, fs-verity where the filesystem has it,
// then linkat into place, so no partial object is ever visible. Nothing is
// written to the store before the whole tree was read and digested: an
// unreadable entry fails the scan first. One syncfs at the end makes the
// objects durable before the caller writes an image referring to them.

import { closeSync, constants as fsConstants, fchmodSync, lstatSync, mkdirSync, openSync, readSync, readdirSync, readlinkSync } from "node:fs";

import { constants as osConstants } from "node:os";

import { type BStr, displayBstr, toHex } from "../shared/bytes.ts";
import { CfsError } from "../shared/errors.ts";
import type { HashAlg } from "../shared/fsverity.ts";
import * as sys from "../shared/sys.ts";
import { type Dir, type Leaf, type LeafContent, type Regular, type Stat, objectPath } from "../shared/tree.ts";
import { type DigestPool, digestFdSync, fsError } from "./digest.ts";
import { type CopyMethods, copyFileData } from "./objects.ts";

/** Files of at most this many bytes are stored in the image (C: LCFS_RECOMMENDED_INLINE_CONTENT_MAX). */
export const INLINE_MAX = 64;

export interface ScanOptions {
  /** All mtimes 0 (C --use-epoch). */
  useEpoch?: boolean;
  /** Leave out character and block devices (C --skip-devices). */
  skipDevices?: boolean;
  /** Store no xattrs (C --skip-xattrs). */
  skipXattrs?: boolean;
  /** Store only user.* xattrs (C --user-xattrs). */
  userXattrs?: boolean;
  /** Keep hardlinks as shared leaves (default true); false = C mkcomposefs' behaviour. */
  hardlinks?: boolean;
  /** Digest algorithm of external files (default sha256, the only one C supports). */
  algorithm?: HashAlg;
  /** Worker pool that digests external files; without one they are digested on this thread. */
  pool?: DigestPool;
  /** Called now and then with running totals. */
  onProgress?: (p: ScanProgress) => void;
}

export interface ScanProgress {
  phase: "walk" | "digest";
  entries: number;
  /** External files found / digested so far. */
  files: number;
  filesDone: number;
  bytes: number;
  bytesDone: number;
}

/** A file whose content lives outside the image: where to read it. */
export interface ExternalSource {
  path: BStr;
  size: number;
  leaf: Leaf;
}

export interface ScanResult {
  root: Dir;
  /** Every external (> 64 bytes) regular file, once per distinct Leaf. */
  external: ExternalSource[];
  entries: number;
  /** Sum of the sizes of `external`. */
  externalBytes: number;
}

const S_IFMT = 0o170000;

const { STX } = sys;
/** Placeholder until the real xattr map is read (never stored in a tree). */
const EMPTY: Map<BStr, Uint8Array> = new Map();

/** The Stat of a `struct statx` view (sys.statxRaw). */
function statOf(st: DataView, useEpoch: boolean, xattrs: Map<BStr, Uint8Array>): Stat {
  return {
    mode: st.getUint16(STX.mode, true) & 0o7777,
    uid: st.getUint32(STX.uid, true),
    gid: st.getUint32(STX.gid, true),
    mtimeSec: useEpoch ? 0 : Number(st.getBigInt64(STX.mtimeSec, true)),
    mtimeNsec: useEpoch ? 0 : st.getUint32(STX.mtimeNsec, true),
    xattrs,
  };
}

function nodeError(path: BStr, call: string, e: unknown): CfsError {
  return sys.fromNodeError(path, call, e);
}

/** Read exactly `size` bytes of a small file. */
function readSmall(path: BStr, size: number): Uint8Array {
  const buf = new Uint8Array(size);
  const fd = openContent(path);
  try {
    let got = 0;
    while (got < size) {
      const n = readSync(fd, buf, got, size - got, got);
      if (n === 0) throw new CfsError(displayBstr(path), "file shrank while it was being read");
      got += n;
    }
  } catch (e) {
    throw e instanceof CfsError ? e : nodeError(path, "read", e);
  } finally {
    closeSync(fd);
  }
  return buf;
}

/** Open a file found by the walk for reading its content. */
function openContent(path: BStr): number {
  try {
    return openSync(Buffer.from(path, "latin1"), fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
  } catch (e) {
    throw nodeError(path, "open", e);
  }
}

/** The walk yields to the event loop this often (ms) so digests proceed meanwhile. */
const WALK_SLICE_MS = 4;
/** Files opened here (non-UTF-8 paths) and waiting in the pool at most. */
const FD_WINDOW = 32;

function setDigest(f: ExternalSource, digest: Uint8Array): void {
  const c = f.leaf.content as Regular;
  c.digest = digest;
  c.payload = objectPath(digest);
}

const osErrno = osConstants.errno as Record<string, number>;

/** Errnos that come from opening a file rather than reading it. */
const OPEN_ERRNOS = new Set(["EACCES", "EPERM", "ENOENT", "ELOOP", "ENOTDIR", "ENXIO", "EISDIR", "ENAMETOOLONG", "EMFILE", "ENFILE"]);

/** A pool failure as this module's errors: the byte path shown, `open/read failed: … (ECODE)`. */
function poolError(path: BStr, e: unknown): unknown {
  if (!(e instanceof CfsError)) return e;
  const code = (e.cause as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code === "string" && code in osErrno) {
    return sys.fromNodeError(path, OPEN_ERRNOS.has(code) ? "open" : "read", e.cause);
  }
  return new CfsError(displayBstr(path), e.what);
}

/** `path` as a JS string that Node's fs encodes back to the same bytes, or null. */
function utf8Path(path: BStr): string | null {
  // ASCII needs no conversion (the common case).
  if (!/[^\x00-\x7f]/.test(path)) return path;
  const bytes = Buffer.from(path, "latin1");
  const text = bytes.toString("utf8");
  return Buffer.from(text, "utf8").equals(bytes) ? text : null;
}

/**
 * Digests submitted to the pool as the walk finds files. Workers open files
 * by path, so thousands can wait without holding fds (paths that are not
 * UTF-8 are opened here, at most FD_WINDOW at a time). The first failure is
 * kept; `drain()` settles once nothing is outstanding or something failed.
 */
class Digests {
  error: unknown = undefined;
  private outstanding = 0;
  private fds = 0;
  private viaFd: ExternalSource[] = [];
  private wake: (() => void) | null = null;
  constructor(
    private readonly pool: DigestPool,
    private readonly alg: HashAlg,
    private readonly onDone: (f: ExternalSource) => void,
  ) {}

  add(f: ExternalSource): void {
    const p = utf8Path(f.path);
    if (p === null) {
      this.viaFd.push(f);
      this.pumpFds();
      return;
    }
    this.track(this.pool.digestFile(p, this.alg), f, null);
  }

  private pumpFds(): void {
    while (this.fds < FD_WINDOW && this.viaFd.length > 0 && this.error === undefined) {
      const f = this.viaFd.shift()!;
      let fd: number;
      try {
        fd = openContent(f.path);
      } catch (e) {
        this.fail(e);
        return;
      }
      this.fds++;
      this.track(this.pool.digestFd(fd, this.alg, f.size, displayBstr(f.path)), f, fd);
    }
  }

  private track(p: Promise<{ digest: Uint8Array }>, f: ExternalSource, fd: number | null): void {
    this.outstanding++;
    p.then(
      (d) => {
        setDigest(f, d.digest);
        this.onDone(f);
      },
      (e) => this.fail(poolError(f.path, e)),
    ).finally(() => {
      this.outstanding--;
      if (fd !== null) {
        closeSync(fd);
        this.fds--;
        this.pumpFds();
      }
      this.check();
    });
  }

  private fail(e: unknown): void {
    this.error ??= e;
    this.check();
  }

  private check(): void {
    const w = this.wake;
    if (w && (this.error !== undefined || (this.outstanding === 0 && this.viaFd.length === 0))) {
      this.wake = null;
      w();
    }
  }

  /** Resolves when every digest is done, or at the first failure (`error` set). */
  drain(): Promise<void> {
    return new Promise((r) => {
      this.wake = r;
      this.check();
    });
  }
}

/**
 * Read the directory `source` (a byte string; a symlink to a directory is
 * followed at the top only) into a tree, digesting external files.
 */
export async function scanDirectory(source: BStr, opts: ScanOptions = {}): Promise<ScanResult> {
  if (opts.skipXattrs && opts.userXattrs) throw new CfsError("--user-xattrs", "conflicts with --skip-xattrs");
  const useEpoch = opts.useEpoch ?? false;
  const keepLinks = opts.hardlinks ?? true;
  const alg = opts.algorithm ?? "sha256";
  const xattrFilter = opts.userXattrs ? (n: BStr) => n.startsWith("user.") : undefined;
  const readX = (p: BStr): Map<BStr, Uint8Array> => (opts.skipXattrs ? new Map() : sys.readXattrs(p, xattrFilter));

  const rootSt = sys.statxRaw(source, 0);
  if ((rootSt.getUint16(STX.mode, true) & S_IFMT) !== 0o040000) throw new CfsError(displayBstr(source), "not a directory");
  const root: Dir = { kind: "dir", stat: statOf(rootSt, useEpoch, new Map()), entries: new Map() };
  root.stat.xattrs = readX(source);

  const external: ExternalSource[] = [];
  let externalBytes = 0;
  let entries = 1;
  const inodes = new Map<string, Leaf>();
  const progress = opts.onProgress;
  let filesDone = 0;
  let bytesDone = 0;
  let walking = true;
  const report = () =>
    progress?.({ phase: walking ? "walk" : "digest", entries, files: external.length, filesDone, bytes: externalBytes, bytesDone });

  // Digests run while the walk goes on (the walk yields every few ms).
  let lastReport = 0;
  const onDone = (f: ExternalSource) => {
    filesDone++;
    bytesDone += f.size;
    if (progress && filesDone - lastReport >= 256) {
      lastReport = filesDone;
      report();
    }
  };
  const digests = opts.pool ? new Digests(opts.pool, alg, onDone) : null;
  // On failure, digests still queued in the pool are abandoned: their results
  // are ignored, and files this module opened are closed as they settle
  // (at the latest when the caller closes the pool).
  await walkTree();
  walking = false;
  if (digests) {
    await digests.drain();
    if (digests.error !== undefined) throw digests.error;
  }
  if (!opts.pool) {
    // One at a time on this thread.
    for (const f of external) {
      const fd = openContent(f.path);
      try {
        setDigest(f, digestFdSync(fd, f.size, alg));
      } catch (e) {
        throw e instanceof CfsError ? e : fsError(displayBstr(f.path), e);
      } finally {
        closeSync(fd);
      }
      onDone(f);
    }
  }
  report();
  return { root, external, entries, externalBytes };

  async function walkTree(): Promise<void> {
    // Explicit stack: trees can be deep. Paths are byte strings.
    const stack: { dir: Dir; path: BStr }[] = [{ dir: root, path: source.endsWith("/") ? source.slice(0, -1) : source }];
    let slice = performance.now();
    while (stack.length > 0) {
      if (performance.now() - slice > WALK_SLICE_MS) {
        await new Promise<void>((r) => setImmediate(r));
        if (digests?.error !== undefined) throw digests.error;
        slice = performance.now();
      }
      const { dir, path: dirPath } = stack.pop()!;
      let names: BStr[];
      try {
        // latin1: one char per byte, i.e. the names as byte strings.
        names = readdirSync(Buffer.from(dirPath || "/", "latin1"), { encoding: "latin1" }) as string[];
      } catch (e) {
        throw nodeError(dirPath || "/", "readdir", e);
      }
      for (const name of names) {
        const path = `${dirPath}/${name}`;
        const st = sys.statxRaw(path);
        const type = st.getUint16(STX.mode, true) & S_IFMT;
        if (type === 0o040000) {
          const child: Dir = { kind: "dir", stat: statOf(st, useEpoch, EMPTY), entries: new Map() };
          child.stat.xattrs = readX(path);
          dir.entries.set(name, child);
          stack.push({ dir: child, path });
          entries++;
          continue;
        }
        if (opts.skipDevices && (type === 0o020000 || type === 0o060000)) continue;
        entries++;
        if (entries % GC_EVERY === 0) {
          report();
          Bun.gc(false);
        }

        // A second link to an inode already read: the same Leaf.
        const key =
          keepLinks && st.getUint32(STX.nlink, true) > 1
            ? `${st.getUint32(STX.devMajor, true)}:${st.getUint32(STX.devMinor, true)}:${st.getBigUint64(STX.ino, true)}`
            : null;
        if (key !== null) {
          const seen = inodes.get(key);
          if (seen !== undefined) {
            dir.entries.set(name, seen);
            continue;
          }
        }

        // Read everything needed from the statx view before any other syscall reuses it.
        const stat = statOf(st, useEpoch, EMPTY);
        const sizeBig = st.getBigUint64(STX.size, true);
        const rdev = type === 0o020000 || type === 0o060000 ? Number(sys.makedev(st.getUint32(STX.rdevMajor, true), st.getUint32(STX.rdevMinor, true))) : 0;
        let content: LeafContent;
        let pending: number | null = null;
        switch (type) {
          case 0o100000: {
            const size = Number(sizeBig);
            if (size === 0) content = { type: "regular", size: 0n, inline: null, digest: null, payload: null };
            else if (size <= INLINE_MAX) content = { type: "regular", size: sizeBig, inline: readSmall(path, size), digest: null, payload: null };
            else {
              content = { type: "regular", size: sizeBig, inline: null, digest: null, payload: null };
              pending = size;
            }
            break;
          }
          case 0o120000: {
            let target: Buffer;
            try {
              target = readlinkSync(Buffer.from(path, "latin1"), { encoding: "buffer" });
            } catch (e) {
              throw nodeError(path, "readlink", e);
            }
            content = { type: "symlink", target: new Uint8Array(target) };
            break;
          }
          case 0o020000:
          case 0o060000:
            content = { type: type === 0o020000 ? "chr" : "blk", rdev };
            break;
          case 0o010000:
            content = { type: "fifo" };
            break;
          case 0o140000:
            content = { type: "socket" };
            break;
          default:
            throw new CfsError(displayBstr(path), `unknown file type (mode ${type.toString(8)})`);
        }
        stat.xattrs = readX(path);
        const leaf: Leaf = { kind: "leaf", stat, content };
        dir.entries.set(name, leaf);
        if (key !== null) inodes.set(key, leaf);
        if (pending !== null) {
          externalBytes += pending;
          const f: ExternalSource = { path, size: pending, leaf };
          external.push(f);
          digests?.add(f);
        }
      }
    }
  }
}

// ---- the flat digest store ------------------------------------------------------------

export interface StoreOptions {
  /** Try to enable fs-verity on new objects (default true; skipped where unsupported). */
  verity?: boolean;
  algorithm?: HashAlg;
  onProgress?: (p: { files: number; filesDone: number; bytes: number; bytesDone: number }) => void;
}

export interface StoreResult {
  /** Objects written by this call. */
  written: number;
  /** Objects that were already present. */
  present: number;
  bytesWritten: number;
  /** Whether the store's filesystem supports fs-verity (null: never tried). */
  verity: boolean | null;
}

/**
 * Entries (walk) or objects (store) between requests for a garbage
 * collection. Both loops allocate little that lives but much that does not
 * (path buffers, statx views, fd wrappers); Bun's heuristics let that pile
 * up to several times the live heap (measured on /usr: peak RSS 247 → 159
 * MiB for /usr/share's store with this).
 */
const GC_EVERY = 4096;

/**
 * Copy every external file of `scan` into the flat store `storeDir`
 * (`XX/<rest>`), skipping objects already present. Each object appears
 * complete or not at all; a crash leaves no temporary files (O_TMPFILE).
 */
export function fillDigestStore(scan: ScanResult, storeDir: string, opts: StoreOptions = {}): StoreResult {
  const result: StoreResult = { written: 0, present: 0, bytesWritten: 0, verity: null };
  let tryVerity = opts.verity ?? true;
  try {
    mkdirSync(storeDir, { recursive: true, mode: 0o755 });
  } catch (e) {
    throw nodeError(storeDir, "mkdir", e);
  }
  const storeFd = sys.open(storeDir, sys.O_RDONLY | sys.O_DIRECTORY);
  const subdirs = new Map<string, number>();
  const done = new Set<string>();
  let bytesDone = 0;
  let filesDone = 0;
  const methods: CopyMethods = { reflink: true, range: true };
  let sinceGc = 0;
  try {
    for (const f of scan.external) {
      const c = f.leaf.content as Regular;
      if (c.digest === null) throw new Error("fillDigestStore: file without digest");
      const hex = toHex(c.digest);
      filesDone++;
      bytesDone += f.size;
      if (done.has(hex)) continue;
      done.add(hex);
      const xx = hex.slice(0, 2);
      const rest = hex.slice(2);
      let dirfd = subdirs.get(xx);
      if (dirfd === undefined) {
        try {
          mkdirSync(`${storeDir}/${xx}`, { mode: 0o755 });
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw nodeError(`${storeDir}/${xx}`, "mkdir", e);
        }
        dirfd = sys.openat(storeFd, xx, sys.O_RDONLY | sys.O_DIRECTORY);
        subdirs.set(xx, dirfd);
      }
      const objPath = `${storeDir}/${xx}/${rest}`;
      let present: unknown;
      try {
        present = lstatSync(objPath, { throwIfNoEntry: false });
      } catch (e) {
        throw nodeError(objPath, "lstat", e);
      }
      if (present !== undefined) {
        result.present++;
        continue;
      }
      const verity = writeObject(f, dirfd, rest, objPath, tryVerity, opts.algorithm ?? "sha256", c.digest, methods);
      // This loop never yields; without a nudge the garbage of each copy (small
      // buffers, fds' wrappers) piles up for the whole store.
      if (++sinceGc >= GC_EVERY) {
        sinceGc = 0;
        Bun.gc(false);
      }
      if (verity === false) tryVerity = false;
      if (verity !== null) result.verity = verity;
      result.written++;
      result.bytesWritten += f.size;
      opts.onProgress?.({ files: scan.external.length, filesDone, bytes: scan.externalBytes, bytesDone });
    }
    sys.syncfs(storeFd, storeDir);
  } finally {
    for (const fd of subdirs.values()) sys.close(fd);
    sys.close(storeFd);
  }
  opts.onProgress?.({ files: scan.external.length, filesDone, bytes: scan.externalBytes, bytesDone });
  return result;
}

/**
 * Write one object: O_TMPFILE in the object's directory, copy, enable
 * verity on a read-only reopen, link into place. Returns whether verity was
 * enabled (false: unsupported here; null: not tried).
 */
function writeObject(
  f: ExternalSource,
  dirfd: number,
  name: string,
  objPath: string,
  tryVerity: boolean,
  alg: HashAlg,
  digest: Uint8Array,
  methods: CopyMethods,
): boolean | null {
  let wfd: number;
  try {
    wfd = sys.openTmpfile(".", 0o644, dirfd);
  } catch (e) {
    if (sys.isErrno(e, "EOPNOTSUPP", "EISDIR")) return writeObjectNamed(f, dirfd, name, objPath, tryVerity, alg, digest, methods);
    throw new CfsError(objPath, (e as CfsError).what);
  }
  let srcfd = -1;
  let rofd = -1;
  let verity: boolean | null = null;
  try {
    try {
      srcfd = openSync(Buffer.from(f.path, "latin1"), "r");
    } catch (e) {
      throw nodeError(f.path, "open", e);
    }
    // Readable by everyone whatever the umask (as C mkcomposefs does).
    fchmodSync(wfd, 0o644);
    const copied = copyFileData(srcfd, wfd, f.size, displayBstr(f.path), methods);
    if (copied !== f.size) throw new CfsError(displayBstr(f.path), `changed while being copied (${copied} of ${f.size} bytes)`);
    let linkFd = wfd;
    if (tryVerity) {
      // Verity needs a read-only fd and no writable one left open.
      rofd = sys.open(`/proc/self/fd/${wfd}`, sys.O_RDONLY);
      sys.close(wfd);
      wfd = -1;
      linkFd = rofd;
      verity = enableVerityChecked(rofd, alg, digest, f.path, objPath);
    }
    try {
      sys.linkTmpfile(linkFd, dirfd, name);
    } catch (e) {
      if (!sys.isErrno(e, "EEXIST")) throw new CfsError(objPath, (e as CfsError).what);
    }
  } finally {
    if (srcfd >= 0) closeSync(srcfd);
    if (wfd >= 0) sys.close(wfd);
    if (rofd >= 0) sys.close(rofd);
  }
  return verity;
}

/** Enable verity and check the kernel's digest; false when unsupported. */
function enableVerityChecked(fd: number, alg: HashAlg, digest: Uint8Array, src: BStr, objPath: string): boolean {
  for (let attempt = 0; ; attempt++) {
    try {
      sys.enableVerity(fd, alg, objPath);
      break;
    } catch (e) {
      if (sys.isVerityUnsupported(e)) return false;
      if (sys.isErrno(e, "EEXIST")) break;
      if (sys.isErrno(e, "ETXTBSY") && attempt < 3) continue;
      throw e;
    }
  }
  const m = sys.measureVerity(fd, objPath);
  if (m === null || toHex(m.digest) !== toHex(digest)) {
    throw new CfsError(displayBstr(src), "changed while being copied (fs-verity digest differs)");
  }
  return true;
}

/** Fallback where O_TMPFILE is missing: a hidden named temp, renamed without replacing. */
function writeObjectNamed(
  f: ExternalSource,
  dirfd: number,
  name: string,
  objPath: string,
  tryVerity: boolean,
  alg: HashAlg,
  digest: Uint8Array,
  methods: CopyMethods,
): boolean | null {
  const tmpName = `.tmp-${name.slice(0, 8)}-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
  const srcfd = (() => {
    try {
      return openSync(Buffer.from(f.path, "latin1"), "r");
    } catch (e) {
      throw nodeError(f.path, "open", e);
    }
  })();
  let tmpfd = -1;
  let linked = false;
  let verity: boolean | null = null;
  try {
    tmpfd = sys.openat(dirfd, tmpName, sys.O_RDWR | sys.O_CREAT | sys.O_EXCL, 0o644);
    fchmodSync(tmpfd, 0o644);
    const copied = copyFileData(srcfd, tmpfd, f.size, displayBstr(f.path), methods);
    if (copied !== f.size) throw new CfsError(displayBstr(f.path), `changed while being copied (${copied} of ${f.size} bytes)`);
    sys.close(tmpfd);
    tmpfd = -1;
    if (tryVerity) {
      const ro = sys.openat(dirfd, tmpName, sys.O_RDONLY);
      try {
        verity = enableVerityChecked(ro, alg, digest, f.path, objPath);
      } finally {
        sys.close(ro);
      }
    }
    try {
      sys.renameat2(dirfd, tmpName, dirfd, name, sys.RENAME_NOREPLACE);
      linked = true;
    } catch (e) {
      if (!sys.isErrno(e, "EEXIST")) throw e;
    }
  } finally {
    closeSync(srcfd);
    if (tmpfd >= 0) sys.close(tmpfd);
    if (!linked) {
      try {
        sys.unlinkat(dirfd, tmpName);
      } catch {}
    }
  }
  return verity;
}

