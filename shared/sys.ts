// Every syscall cfsboot makes that Node/Bun's own APIs do not offer, through
// bun:ffi. This is the one module in shared/ that touches the system.
//
// Conventions:
// - Paths and xattr names are byte strings (`BStr`, see bytes.ts) or raw
//   bytes. A text path typed by a user must go through `bstrFromUtf8` first.
// - File descriptors are plain numbers; Node's fs functions (readSync,
//   writeSync, closeSync, fstatSync) accept them too.
// - A failed call throws `SysError` (a CfsError) whose input is the path (or
//   fd) and whose message names the call and the errno:
//     `/x/y: lgetxattr failed: Permission denied (EACCES)`.
//   `e.code` ("EACCES") and `e.errno` let callers tell cases apart.
// - Calls without a glibc wrapper on older distributions (the new mount API,
//   openat2) go through syscall(2) with the unified syscall numbers.
//
// Sections: errors · libc binding · files and fds · xattrs · fs-verity ·
// libcrypto (SHA-2) · the new mount API · classic mount · loop devices ·
// namespaces.

import { dlopen, ptr, read, type Pointer } from "bun:ffi";
import { constants as fsConstants } from "node:fs";

import { type BStr, bstr, displayBstr } from "./bytes.ts";
import { CfsError } from "./errors.ts";

// ---- errors ------------------------------------------------------------------

// node:os is loaded only when an errno name is needed: loading it costs
// milliseconds, and the initramfs agent's success path never needs it.
let osErrno: Record<string, number> | null = null;
function osErrnoTable(): Record<string, number> {
  return (osErrno ??= process.getBuiltinModule("node:os").constants.errno as Record<string, number>);
}

let errnoNames: Map<number, string> | null = null;
function errnoNameTable(): Map<number, string> {
  if (errnoNames !== null) return errnoNames;
  const names = new Map<number, string>();
  for (const [name, num] of Object.entries(osErrnoTable())) {
    // Prefer the names composefs and the kernel docs use for aliases.
    if (!names.has(num) || ["EOPNOTSUPP", "EAGAIN", "EDEADLK"].includes(name)) names.set(num, name);
  }
  // A few that Node's table lacks (Bun's also lacks ENOTBLK), and every one this module names.
  for (const [num, name] of [[61, "ENODATA"], [129, "EKEYREJECTED"], [126, "ENOKEY"], [117, "EUCLEAN"], [15, "ENOTBLK"], [65, "ENOPKG"]] as const) {
    if (!names.has(num)) names.set(num, name);
  }
  for (const [name, num] of Object.entries(errno)) if (!names.has(num)) names.set(num, name);
  return (errnoNames = names);
}

export const errno = {
  EPERM: 1, ENOENT: 2, EINTR: 4, EIO: 5, EBADF: 9, EAGAIN: 11, ENOMEM: 12, EACCES: 13, EBUSY: 16,
  EEXIST: 17, EXDEV: 18, ENODEV: 19, ENOTDIR: 20, EISDIR: 21, EINVAL: 22, ENFILE: 23, EMFILE: 24,
  ENOTTY: 25, ETXTBSY: 26, EFBIG: 27, ENOSPC: 28, EROFS: 30, EMLINK: 31, ERANGE: 34, ENAMETOOLONG: 36,
  ENOSYS: 38, ENOTEMPTY: 39, ELOOP: 40, ENODATA: 61, EOVERFLOW: 75, EOPNOTSUPP: 95, ENOTBLK: 15,
  EKEYREJECTED: 129,
} as const;

export function errnoName(n: number): string {
  return errnoNameTable().get(n) ?? `errno ${n}`;
}

/** A failed syscall. `input` is the path or fd it was about. */
export class SysError extends CfsError {
  readonly errno: number;
  /** Symbolic errno, e.g. "ENOENT". */
  readonly code: string;
  /** The syscall, e.g. "lgetxattr". */
  readonly call: string;

  constructor(input: string, call: string, err: number, detail?: string) {
    const text = `${call} failed: ${strerror(err)} (${errnoName(err)})${detail ? `: ${detail}` : ""}`;
    super(input, text);
    this.name = "SysError";
    this.errno = err;
    this.code = errnoName(err);
    this.call = call;
  }
}

/** True when `e` is a SysError with one of the given codes. */
export function isErrno(e: unknown, ...codes: string[]): e is SysError {
  return e instanceof SysError && codes.includes(e.code);
}

// ---- libc binding ----------------------------------------------------------------

const LIBC_CANDIDATES = ["libc.so.6", "libc.musl-x86_64.so.1", "libc.musl-aarch64.so.1", "libc.so"];

function openLibc() {
  const symbols = {
    __errno_location: { args: [], returns: "ptr" },
    strerror: { args: ["i32"], returns: "cstring" },
    syscall: { args: ["i64", "i64", "i64", "i64", "i64", "i64", "i64"], returns: "i64" },
    open: { args: ["ptr", "i32", "u32"], returns: "i32" },
    openat: { args: ["i32", "ptr", "i32", "u32"], returns: "i32" },
    close: { args: ["i32"], returns: "i32" },
    read: { args: ["i32", "ptr", "u64"], returns: "i64" },
    fsync: { args: ["i32"], returns: "i32" },
    fdatasync: { args: ["i32"], returns: "i32" },
    syncfs: { args: ["i32"], returns: "i32" },
    flock: { args: ["i32", "i32"], returns: "i32" },
    ioctl: { args: ["i32", "u64", "ptr"], returns: "i32" },
    linkat: { args: ["i32", "ptr", "i32", "ptr", "i32"], returns: "i32" },
    unlinkat: { args: ["i32", "ptr", "i32"], returns: "i32" },
    renameat2: { args: ["i32", "ptr", "i32", "ptr", "u32"], returns: "i32" },
    mknodat: { args: ["i32", "ptr", "u32", "u64"], returns: "i32" },
    statx: { args: ["i32", "ptr", "i32", "u32", "ptr"], returns: "i32" },
    utimensat: { args: ["i32", "ptr", "ptr", "i32"], returns: "i32" },
    copy_file_range: { args: ["i32", "ptr", "i32", "ptr", "u64", "u32"], returns: "i64" },
    lgetxattr: { args: ["ptr", "ptr", "ptr", "u64"], returns: "i64" },
    llistxattr: { args: ["ptr", "ptr", "u64"], returns: "i64" },
    lsetxattr: { args: ["ptr", "ptr", "ptr", "u64", "i32"], returns: "i32" },
    lremovexattr: { args: ["ptr", "ptr"], returns: "i32" },
    fgetxattr: { args: ["i32", "ptr", "ptr", "u64"], returns: "i64" },
    flistxattr: { args: ["i32", "ptr", "u64"], returns: "i64" },
    fsetxattr: { args: ["i32", "ptr", "ptr", "u64", "i32"], returns: "i32" },
    fremovexattr: { args: ["i32", "ptr"], returns: "i32" },
    mkdirat: { args: ["i32", "ptr", "u32"], returns: "i32" },
    symlinkat: { args: ["ptr", "i32", "ptr"], returns: "i32" },
    readlinkat: { args: ["i32", "ptr", "ptr", "u64"], returns: "i64" },
    fchownat: { args: ["i32", "ptr", "u32", "u32", "i32"], returns: "i32" },
    futimens: { args: ["i32", "ptr"], returns: "i32" },
    mount: { args: ["ptr", "ptr", "ptr", "u64", "ptr"], returns: "i32" },
    umount2: { args: ["ptr", "i32"], returns: "i32" },
    unshare: { args: ["i32"], returns: "i32" },
    isatty: { args: ["i32"], returns: "i32" },
  } as const;
  let last: unknown;
  for (const name of LIBC_CANDIDATES) {
    try {
      return dlopen(name, symbols).symbols;
    } catch (e) {
      last = e;
    }
  }
  throw new CfsError("libc", `cannot load the C library: ${String(last)}`);
}

let libcCache: ReturnType<typeof openLibc> | null = null;
function libc(): ReturnType<typeof openLibc> {
  return (libcCache ??= openLibc());
}

function lastErrno(): number {
  return read.i32(libc().__errno_location() as Pointer, 0);
}

function strerror(err: number): string {
  try {
    return String(libc().strerror(err));
  } catch {
    return `error ${err}`;
  }
}

/** NUL-terminated bytes of a path or name. */
function cstr(s: BStr | Uint8Array): Buffer {
  if (typeof s === "string") return Buffer.from(s + "\0", "latin1");
  const b = Buffer.alloc(s.byteLength + 1);
  b.set(s);
  return b;
}

function show(s: BStr | Uint8Array): string {
  return displayBstr(typeof s === "string" ? s : bstr(s));
}

/** Path argument type: a byte string or raw bytes. */
export type SysPath = BStr | Uint8Array;

/**
 * Run a call returning int/ssize_t; retry on EINTR; throw SysError on -1.
 * `input` names what the call was about; a function is only called on error
 * (showing a path costs more than most syscalls).
 */
function check(input: string | (() => string), call: string, f: () => number | bigint): number {
  for (;;) {
    const r = Number(f());
    if (r >= 0) return r;
    const e = lastErrno();
    if (e === errno.EINTR) continue;
    throw new SysError(typeof input === "string" ? input : input(), call, e);
  }
}

/** NUL-terminated bytes of `s` in a reusable scratch buffer (valid until the next call with the same scratch). */
function cstrInto(scratch: { buf: Buffer }, s: BStr): Buffer {
  if (s.length + 1 > scratch.buf.byteLength) scratch.buf = Buffer.alloc(Math.max(s.length + 1, scratch.buf.byteLength * 2));
  const n = scratch.buf.write(s, 0, "latin1");
  scratch.buf[n] = 0;
  return scratch.buf;
}
const pathScratch = { buf: Buffer.alloc(4096) };
const nameScratch = { buf: Buffer.alloc(512) };

// ---- architecture ---------------------------------------------------------------------

const ARCH: string = process.arch;
/** powerpc, mips and sparc use a different _IOC layout. */
const ALT_IOC = ARCH === "ppc64" || ARCH === "ppc" || ARCH === "mips" || ARCH === "mipsel";

const IOC_NONE = 0;
const IOC_WRITE = ALT_IOC ? 4 : 1;
const IOC_READ = 2;

/** The kernel's _IOC(dir, type, nr, size). */
export function ioc(dir: number, type: number, nr: number, size: number): number {
  const dirShift = ALT_IOC ? 29 : 30;
  return ((dir << dirShift) >>> 0) + ((size << 16) >>> 0) + (type << 8) + nr;
}
export const iow = (type: number, nr: number, size: number): number => ioc(IOC_WRITE, type, nr, size);
export const iowr = (type: number, nr: number, size: number): number => ioc(IOC_READ | IOC_WRITE, type, nr, size);
export const io = (type: number, nr: number): number => ioc(IOC_NONE, type, nr, 0);

/** Syscall numbers of calls added after the unified table (same on every arch). */
const SYS = {
  open_tree: 428,
  move_mount: 429,
  fsopen: 430,
  fsconfig: 431,
  fsmount: 432,
  openat2: 437,
  mount_setattr: 442,
} as const;

function sys(n: number, ...args: (number | bigint)[]): bigint {
  const a = [...args.map(BigInt), 0n, 0n, 0n, 0n, 0n, 0n];
  return libc().syscall(BigInt(n), a[0]!, a[1]!, a[2]!, a[3]!, a[4]!, a[5]!) as bigint;
}

/**
 * Raw address of a buffer for syscall(2)'s integer arguments (0 for null).
 * The caller keeps `b` referenced until the call returns.
 */
function addr(b: Uint8Array | null): bigint {
  return b === null ? 0n : BigInt(ptr(b));
}

// ---- files and fds -----------------------------------------------------------------------

export const AT_FDCWD = -100;
export const AT_SYMLINK_NOFOLLOW = 0x100;
export const AT_REMOVEDIR = 0x200;
export const AT_SYMLINK_FOLLOW = 0x400;
export const AT_NO_AUTOMOUNT = 0x800;
export const AT_EMPTY_PATH = 0x1000;
export const AT_RECURSIVE = 0x8000;

export const O_RDONLY = fsConstants.O_RDONLY;
export const O_WRONLY = fsConstants.O_WRONLY;
export const O_RDWR = fsConstants.O_RDWR;
export const O_CREAT = fsConstants.O_CREAT;
export const O_EXCL = fsConstants.O_EXCL;
export const O_TRUNC = fsConstants.O_TRUNC;
export const O_NOFOLLOW = fsConstants.O_NOFOLLOW;
export const O_DIRECTORY = fsConstants.O_DIRECTORY;
export const O_NONBLOCK = fsConstants.O_NONBLOCK;
export const O_CLOEXEC = 0o2000000;
export const O_PATH = 0o10000000;
/** O_TMPFILE includes O_DIRECTORY, as in the kernel headers. */
export const O_TMPFILE = 0o20000000 | fsConstants.O_DIRECTORY;

/** open(2). O_CLOEXEC is always added. */
export function open(path: SysPath, flags: number, mode = 0o644): number {
  return check(() => show(path), "open", () => libc().open(cstr(path), flags | O_CLOEXEC, mode));
}

/** openat(2). O_CLOEXEC is always added. */
export function openat(dirfd: number, path: SysPath, flags: number, mode = 0o644): number {
  return check(() => show(path), "openat", () => libc().openat(dirfd, cstr(path), flags | O_CLOEXEC, mode));
}

export function close(fd: number): void {
  // No retry on EINTR: on Linux the fd is gone either way.
  if (libc().close(fd) < 0) {
    const e = lastErrno();
    if (e !== errno.EINTR) throw new SysError(`fd ${fd}`, "close", e);
  }
}

/** read(2) into `buf`; returns the byte count (0 at end of file). */
export function readFd(fd: number, buf: Uint8Array, input = `fd ${fd}`): number {
  return check(input, "read", () => libc().read(fd, buf, BigInt(buf.byteLength)));
}

export function fsync(fd: number, input = `fd ${fd}`): void {
  check(input, "fsync", () => libc().fsync(fd));
}

export function fdatasync(fd: number, input = `fd ${fd}`): void {
  check(input, "fdatasync", () => libc().fdatasync(fd));
}

/** syncfs(2): flush the whole filesystem holding `fd`. */
export function syncfs(fd: number, input = `fd ${fd}`): void {
  check(input, "syncfs", () => libc().syncfs(fd));
}

/**
 * isatty(3): is `fd` a terminal? (node:tty's isatty costs ~20 ms of CPU to
 * load in Bun; this costs a libc call.)
 */
export function isatty(fd: number): boolean {
  return libc().isatty(fd) === 1;
}

/** fsync a directory (or any path) by opening it read-only. */
export function fsyncPath(path: SysPath): void {
  const fd = open(path, O_RDONLY);
  try {
    fsync(fd, show(path));
  } finally {
    close(fd);
  }
}

export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;

/** flock(2). With LOCK_NB a held lock throws SysError code EAGAIN (EWOULDBLOCK). */
export function flock(fd: number, op: number, input = `fd ${fd}`): void {
  check(input, "flock", () => libc().flock(fd, op));
}

export const RESOLVE_NO_XDEV = 0x01;
export const RESOLVE_NO_MAGICLINKS = 0x02;
export const RESOLVE_NO_SYMLINKS = 0x04;
export const RESOLVE_BENEATH = 0x08;
export const RESOLVE_IN_ROOT = 0x10;

/**
 * openat2(2) with `struct open_how {u64 flags, mode, resolve}`. Default
 * resolve is RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS: `path` may neither
 * escape `dirfd` (EXDEV) nor pass through a symlink (ELOOP).
 */
export function openat2(
  dirfd: number,
  path: SysPath,
  flags: number,
  opts: { mode?: number; resolve?: number } = {},
): number {
  const how = new Uint8Array(24);
  const dv = new DataView(how.buffer);
  dv.setBigUint64(0, BigInt(flags | O_CLOEXEC), true);
  // O_TMPFILE contains O_DIRECTORY: test all its bits, or O_PATH|O_DIRECTORY would pass a mode (EINVAL)
  const creates = (flags & O_CREAT) !== 0 || (flags & O_TMPFILE) === O_TMPFILE;
  dv.setBigUint64(8, BigInt(creates ? (opts.mode ?? 0o644) : 0), true);
  dv.setBigUint64(16, BigInt(opts.resolve ?? RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), true);
  const p = cstr(path);
  return check(() => show(path), "openat2", () => sys(SYS.openat2, dirfd, addr(p), addr(how), 24));
}

export const RENAME_NOREPLACE = 1;
export const RENAME_EXCHANGE = 2;
export const RENAME_WHITEOUT = 4;

/** renameat2(2); flags RENAME_NOREPLACE (EEXIST if taken) or RENAME_EXCHANGE (swap). */
export function renameat2(olddirfd: number, oldpath: SysPath, newdirfd: number, newpath: SysPath, flags = 0): void {
  check(() => show(newpath), "renameat2", () => libc().renameat2(olddirfd, cstr(oldpath), newdirfd, cstr(newpath), flags));
}

/** unlinkat(2); AT_REMOVEDIR removes an empty directory. */
export function unlinkat(dirfd: number, path: SysPath, flags = 0): void {
  check(() => show(path), "unlinkat", () => libc().unlinkat(dirfd, cstr(path), flags));
}

/** linkat(2). */
export function linkat(olddirfd: number, oldpath: SysPath, newdirfd: number, newpath: SysPath, flags = 0): void {
  check(() => show(newpath), "linkat", () => libc().linkat(olddirfd, cstr(oldpath), newdirfd, cstr(newpath), flags));
}

/**
 * An unnamed file in directory `dir` (O_TMPFILE, read-write): it becomes
 * visible only when `linkTmpfile` gives it a name, and vanishes if the
 * process dies first. Throws SysError EOPNOTSUPP/EISDIR where the
 * filesystem lacks O_TMPFILE.
 */
export function openTmpfile(dir: SysPath, mode = 0o644, dirfd = AT_FDCWD): number {
  return check(() => show(dir), "open(O_TMPFILE)", () =>
    libc().openat(dirfd, cstr(dir), O_TMPFILE | O_RDWR | O_CLOEXEC, mode),
  );
}

/**
 * Give an O_TMPFILE fd the name `dirfd`/`name` (EEXIST if taken). Uses the
 * /proc/self/fd link, which needs no CAP_DAC_READ_SEARCH (unlike AT_EMPTY_PATH).
 */
export function linkTmpfile(fd: number, dirfd: number, name: SysPath): void {
  linkat(AT_FDCWD, `/proc/self/fd/${fd}`, dirfd, name, AT_SYMLINK_FOLLOW);
}

export const S_IFIFO = 0o010000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;
export const S_IFREG = 0o100000;
export const S_IFSOCK = 0o140000;

/** glibc makedev() encoding of a device number. */
export function makedev(major: number, minor: number): bigint {
  const ma = BigInt(major >>> 0);
  const mi = BigInt(minor >>> 0);
  return ((ma & 0xfffff000n) << 32n) | ((ma & 0xfffn) << 8n) | ((mi & 0xffffff00n) << 12n) | (mi & 0xffn);
}
export function major(dev: bigint | number): number {
  const d = BigInt(dev);
  return Number(((d >> 32n) & 0xfffff000n) | ((d >> 8n) & 0xfffn));
}
export function minor(dev: bigint | number): number {
  const d = BigInt(dev);
  return Number(((d >> 12n) & 0xffffff00n) | (d & 0xffn));
}

/** mknod(2): `mode` includes the type bits (S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK, S_IFREG). */
export function mknod(path: SysPath, mode: number, rdev: bigint | number = 0, dirfd = AT_FDCWD): void {
  check(() => show(path), "mknod", () => libc().mknodat(dirfd, cstr(path), mode, BigInt(rdev)));
}

export function mkfifo(path: SysPath, perm = 0o644, dirfd = AT_FDCWD): void {
  mknod(path, S_IFIFO | (perm & 0o7777), 0, dirfd);
}

export const STATX_BASIC_STATS = 0x7ff;
export const STATX_ATTR_VERITY = 0x00100000;

export interface Statx {
  mask: number;
  attributes: bigint;
  attributesMask: bigint;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  ino: bigint;
  size: bigint;
  blocks: bigint;
  mtimeSec: number;
  mtimeNsec: number;
  rdevMajor: number;
  rdevMinor: number;
  devMajor: number;
  devMinor: number;
  /** STATX_ATTR_VERITY set: the file has fs-verity enabled. */
  verity: boolean;
}

/** statx(2); default flags AT_SYMLINK_NOFOLLOW (like lstat). */
const statxBuf = new Uint8Array(256);
const statxView = new DataView(statxBuf.buffer);

export function statx(path: SysPath, flags = AT_SYMLINK_NOFOLLOW, mask = STATX_BASIC_STATS, dirfd = AT_FDCWD): Statx {
  const buf = statxBuf;
  const p = typeof path === "string" ? cstrInto(pathScratch, path) : cstr(path);
  check(() => show(path), "statx", () => libc().statx(dirfd, p, flags, mask, buf));
  const dv = statxView;
  const attributes = dv.getBigUint64(8, true);
  return {
    mask: dv.getUint32(0, true),
    attributes,
    nlink: dv.getUint32(16, true),
    uid: dv.getUint32(20, true),
    gid: dv.getUint32(24, true),
    mode: dv.getUint16(28, true),
    ino: dv.getBigUint64(32, true),
    size: dv.getBigUint64(40, true),
    blocks: dv.getBigUint64(48, true),
    attributesMask: dv.getBigUint64(56, true),
    mtimeSec: Number(dv.getBigInt64(112, true)),
    mtimeNsec: dv.getUint32(120, true),
    rdevMajor: dv.getUint32(128, true),
    rdevMinor: dv.getUint32(132, true),
    devMajor: dv.getUint32(136, true),
    devMinor: dv.getUint32(140, true),
    verity: (attributes & BigInt(STATX_ATTR_VERITY)) !== 0n,
  };
}

/** Byte offsets of `struct statx` fields, for `statxRaw`. */
export const STX = {
  mask: 0, attributes: 8, nlink: 16, uid: 20, gid: 24, mode: 28, ino: 32, size: 40, blocks: 48,
  mtimeSec: 112, mtimeNsec: 120, rdevMajor: 128, rdevMinor: 132, devMajor: 136, devMinor: 140,
} as const;

/**
 * statx(2) without building an object: the returned view of `struct statx`
 * (fields at `STX` offsets, little-endian) is overwritten by the next
 * statx/statxRaw call. For hot loops such as directory scans.
 */
export function statxRaw(path: SysPath, flags = AT_SYMLINK_NOFOLLOW, mask = STATX_BASIC_STATS, dirfd = AT_FDCWD): DataView {
  const p = typeof path === "string" ? cstrInto(pathScratch, path) : cstr(path);
  check(() => show(path), "statx", () => libc().statx(dirfd, p, flags, mask, statxBuf));
  return statxView;
}

export const UTIME_OMIT = (1 << 30) - 2;

/**
 * utimensat(2) with nanosecond times: atime and mtime as [sec, nsec]
 * (UTIME_OMIT as nsec leaves one unchanged). Default flags
 * AT_SYMLINK_NOFOLLOW: a symlink's own times.
 */
export function utimensat(
  path: SysPath,
  atime: readonly [number, number] | null,
  mtime: readonly [number, number],
  flags = AT_SYMLINK_NOFOLLOW,
  dirfd = AT_FDCWD,
): void {
  const ts = new Uint8Array(32);
  const dv = new DataView(ts.buffer);
  dv.setBigInt64(0, BigInt(atime?.[0] ?? 0), true);
  dv.setBigInt64(8, BigInt(atime?.[1] ?? UTIME_OMIT), true);
  dv.setBigInt64(16, BigInt(mtime[0]), true);
  dv.setBigInt64(24, BigInt(mtime[1]), true);
  check(() => show(path), "utimensat", () => libc().utimensat(dirfd, cstr(path), ts, flags));
}

/**
 * copy_file_range(2) of up to `len` bytes from the current offsets; returns
 * the count copied (0 at end of input). Throws EXDEV/EINVAL/EOPNOTSUPP where
 * the kernel cannot do it (callers fall back to read/write).
 */
export function copyFileRange(infd: number, outfd: number, len: number, input = `fd ${infd}`): number {
  return check(input, "copy_file_range", () => libc().copy_file_range(infd, null as never, outfd, null as never, BigInt(len), 0));
}

export const FICLONE = iow(0x94, 9, 4);

/** Share `srcfd`'s blocks with `dstfd` (reflink). Throws EOPNOTSUPP/EXDEV/EINVAL where impossible. */
export function ficlone(dstfd: number, srcfd: number, input = `fd ${dstfd}`): void {
  check(input, "ioctl(FICLONE)", () => libc().ioctl(dstfd, BigInt(FICLONE), srcfd as unknown as Pointer));
}

// ---- xattrs ------------------------------------------------------------------------------
// The l* variants: a symlink's own xattrs, never its target's.

export const XATTR_CREATE = 1;
export const XATTR_REPLACE = 2;
/** XATTR_SIZE_MAX and XATTR_LIST_MAX. */
const XATTR_MAX = 65536;

const xattrBuf = new Uint8Array(XATTR_MAX);
const XATTR_MAX_BIG = BigInt(XATTR_MAX);

/** lgetxattr(2). A missing attribute throws SysError code ENODATA. */
export function lgetxattr(path: SysPath, name: SysPath): Uint8Array {
  const p = cstr(path);
  const n = cstr(name);
  const len = check(() => show(path), `lgetxattr ${show(name)}`, () => libc().lgetxattr(p, n, xattrBuf, BigInt(xattrBuf.byteLength)));
  return xattrBuf.slice(0, len);
}

/** llistxattr(2): the names of all xattrs, as byte strings, in the kernel's order. */
export function llistxattr(path: SysPath): BStr[] {
  const p = cstr(path);
  const len = check(() => show(path), "llistxattr", () => libc().llistxattr(p, xattrBuf, BigInt(xattrBuf.byteLength)));
  if (len === 0) return [];
  return bstr(xattrBuf.subarray(0, len - 1)).split("\0");
}

/** lsetxattr(2); flags XATTR_CREATE / XATTR_REPLACE. */
export function lsetxattr(path: SysPath, name: SysPath, value: Uint8Array, flags = 0): void {
  check(() => show(path), `lsetxattr ${show(name)}`, () =>
    libc().lsetxattr(cstr(path), cstr(name), value.byteLength ? value : new Uint8Array(1), BigInt(value.byteLength), flags),
  );
}

/** lremovexattr(2). */
export function lremovexattr(path: SysPath, name: SysPath): void {
  check(() => show(path), `lremovexattr ${show(name)}`, () => libc().lremovexattr(cstr(path), cstr(name)));
}

/**
 * All xattrs of `path` (not following a symlink), optionally only those whose
 * name passes `filter`. An attribute removed between list and get is skipped.
 */
export function readXattrs(path: SysPath, filter?: (name: BStr) => boolean): Map<BStr, Uint8Array> {
  const out = new Map<BStr, Uint8Array>();
  const p = typeof path === "string" ? cstrInto(pathScratch, path) : cstr(path);
  const len = check(() => show(path), "llistxattr", () => libc().llistxattr(p, xattrBuf, XATTR_MAX_BIG));
  if (len === 0) return out;
  const names = bstr(xattrBuf.subarray(0, len - 1)).split("\0");
  for (const name of names) {
    if (filter && !filter(name)) continue;
    const n = cstrInto(nameScratch, name);
    const r = Number(libc().lgetxattr(p, n, xattrBuf, XATTR_MAX_BIG));
    if (r < 0) {
      const e = lastErrno();
      if (e === errno.ENODATA) continue;
      throw new SysError(show(path), `lgetxattr ${show(name)}`, e);
    }
    out.set(name, xattrBuf.slice(0, r));
  }
  return out;
}

// ---- fd-relative calls -------------------------------------------------------------------
// For code that must never follow a symlink nor leave a directory it holds
// open (the /etc merge): the final component is always `name` in `dirfd`.

/** mkdirat(2). */
export function mkdirat(dirfd: number, name: SysPath, mode: number): void {
  check(() => show(name), "mkdirat", () => libc().mkdirat(dirfd, cstr(name), mode));
}

/** symlinkat(2): a symlink `name` in `dirfd` pointing at `target`. */
export function symlinkat(target: SysPath, dirfd: number, name: SysPath): void {
  check(() => show(name), "symlinkat", () => libc().symlinkat(cstr(target), dirfd, cstr(name)));
}

const linkBuf = new Uint8Array(4096);

/** readlinkat(2): the target bytes of the symlink `name` in `dirfd`. */
export function readlinkat(dirfd: number, name: SysPath): Uint8Array {
  const n = check(() => show(name), "readlinkat", () => libc().readlinkat(dirfd, cstr(name), linkBuf, BigInt(linkBuf.byteLength)));
  if (n >= linkBuf.byteLength) throw new SysError(show(name), "readlinkat", errno.ENAMETOOLONG);
  return linkBuf.slice(0, n);
}

/** fchownat(2); default flags AT_SYMLINK_NOFOLLOW (a symlink's own owner). `name` "" with AT_EMPTY_PATH: `dirfd` itself. */
export function fchownat(dirfd: number, name: SysPath, uid: number, gid: number, flags = AT_SYMLINK_NOFOLLOW): void {
  check(() => show(name), "fchownat", () => libc().fchownat(dirfd, cstr(name), uid >>> 0, gid >>> 0, flags));
}

/** futimens(2): atime and mtime of an open file as [sec, nsec]. */
export function futimens(fd: number, atime: readonly [number, number], mtime: readonly [number, number], input = `fd ${fd}`): void {
  const ts = new Uint8Array(32);
  const dv = new DataView(ts.buffer);
  dv.setBigInt64(0, BigInt(atime[0]), true);
  dv.setBigInt64(8, BigInt(atime[1]), true);
  dv.setBigInt64(16, BigInt(mtime[0]), true);
  dv.setBigInt64(24, BigInt(mtime[1]), true);
  check(input, "futimens", () => libc().futimens(fd, ts));
}

/** All xattrs of an open file or directory (fgetxattr/flistxattr). */
export function readXattrsFd(fd: number, input = `fd ${fd}`): Map<BStr, Uint8Array> {
  const out = new Map<BStr, Uint8Array>();
  const len = check(input, "flistxattr", () => libc().flistxattr(fd, xattrBuf, XATTR_MAX_BIG));
  if (len === 0) return out;
  for (const name of bstr(xattrBuf.subarray(0, len - 1)).split("\0")) {
    const n = cstrInto(nameScratch, name);
    const r = Number(libc().fgetxattr(fd, n, xattrBuf, XATTR_MAX_BIG));
    if (r < 0) {
      const e = lastErrno();
      if (e === errno.ENODATA) continue;
      throw new SysError(input, `fgetxattr ${show(name)}`, e);
    }
    out.set(name, xattrBuf.slice(0, r));
  }
  return out;
}

/** fsetxattr(2); flags XATTR_CREATE / XATTR_REPLACE. */
export function fsetxattr(fd: number, name: SysPath, value: Uint8Array, flags = 0, input = `fd ${fd}`): void {
  check(input, `fsetxattr ${show(name)}`, () => libc().fsetxattr(fd, cstr(name), value.byteLength ? value : new Uint8Array(1), BigInt(value.byteLength), flags));
}

/** fremovexattr(2). */
export function fremovexattr(fd: number, name: SysPath, input = `fd ${fd}`): void {
  check(input, `fremovexattr ${show(name)}`, () => libc().fremovexattr(fd, cstr(name)));
}

// ---- fs-verity (fsverity.md §6) --------------------------------------------------------------

export const FS_IOC_ENABLE_VERITY = iow(0x66, 133, 128);
export const FS_IOC_MEASURE_VERITY = iowr(0x66, 134, 4);

export type VerityAlgorithm = "sha256" | "sha512";
const VERITY_ALG_ID: Record<VerityAlgorithm, number> = { sha256: 1, sha512: 2 };

/** The errnos meaning "this filesystem (or kernel) has no fs-verity". */
export function isVerityUnsupported(e: unknown): boolean {
  return isErrno(e, "ENOTTY", "EOPNOTSUPP", "ENOSYS");
}

/**
 * FS_IOC_ENABLE_VERITY on a read-only fd (block size 4096, no salt, no
 * signature). Errors (SysError codes): ENOTTY/EOPNOTSUPP = unsupported here
 * (see isVerityUnsupported), EEXIST = already enabled, ETXTBSY = a writable
 * fd or mapping still exists, EFBIG = too large, EINVAL = bad arguments.
 */
export function enableVerity(fd: number, algorithm: VerityAlgorithm = "sha256", input = `fd ${fd}`): void {
  const arg = new Uint8Array(128);
  const dv = new DataView(arg.buffer);
  dv.setUint32(0, 1, true); // version
  dv.setUint32(4, VERITY_ALG_ID[algorithm], true);
  dv.setUint32(8, 4096, true); // block_size
  check(input, "ioctl(FS_IOC_ENABLE_VERITY)", () => libc().ioctl(fd, BigInt(FS_IOC_ENABLE_VERITY), arg));
}

export interface VerityMeasurement {
  algorithm: VerityAlgorithm | number;
  digest: Uint8Array;
}

/**
 * FS_IOC_MEASURE_VERITY. Returns null when the file has no fs-verity
 * (ENODATA); throws SysError when the filesystem lacks it (ENOTTY/EOPNOTSUPP,
 * see isVerityUnsupported).
 */
export function measureVerity(fd: number, input = `fd ${fd}`): VerityMeasurement | null {
  const arg = new Uint8Array(4 + 64);
  const dv = new DataView(arg.buffer);
  dv.setUint16(2, 64, true);
  const r = Number(libc().ioctl(fd, BigInt(FS_IOC_MEASURE_VERITY), arg));
  if (r < 0) {
    const e = lastErrno();
    if (e === errno.ENODATA) return null;
    throw new SysError(input, "ioctl(FS_IOC_MEASURE_VERITY)", e);
  }
  const algId = dv.getUint16(0, true);
  const size = dv.getUint16(2, true);
  const algorithm = algId === 1 ? "sha256" : algId === 2 ? "sha512" : algId;
  return { algorithm, digest: arg.slice(4, 4 + size) };
}

// ---- libcrypto: OpenSSL's SHA-2 --------------------------------------------------------------

// OpenSSL 3's libcrypto (Debian package libssl3), loaded only on request and
// never required: it is not a dependency of the executable (Bun carries
// BoringSSL), so an initramfs or a minimal system may lack it. Its SHA-512
// is ~40% faster per core than Bun's here (README "fs-verity").
//
// One EVP_MD (fetched once) and one reused EVP_MD_CTX per thread; per piece
// three calls (init, update, final) of ~10 ns each, no allocation. Pointers
// are computed once per batch from the buffers, which the caller keeps alive.

function openLibcrypto() {
  return dlopen("libcrypto.so.3", {
    EVP_MD_fetch: { args: ["ptr", "ptr", "ptr"], returns: "ptr" },
    EVP_MD_CTX_new: { args: [], returns: "ptr" },
    EVP_DigestInit_ex2: { args: ["ptr", "ptr", "ptr"], returns: "i32" },
    EVP_DigestUpdate: { args: ["ptr", "ptr", "u64"], returns: "i32" },
    EVP_DigestFinal_ex: { args: ["ptr", "ptr", "ptr"], returns: "i32" },
  }).symbols;
}

let libcryptoCache: ReturnType<typeof openLibcrypto> | null | undefined;

/** A byte to point at when a piece is empty (ptr() refuses empty buffers). */
const oneByte = new Uint8Array(1);

/**
 * libcrypto's `alg` ("sha256" or "sha512") as a batch hash function: hashes
 * `count` consecutive `len`-byte pieces of `src` from byte `srcOff` into
 * consecutive digests in `out` from byte `outOff` (the shape of
 * shared/fsverity.ts `HashPieces`). Null when libcrypto.so.3 cannot be
 * loaded or lacks the algorithm. Loading costs ~10 ms of CPU (dlopen ~6 ms,
 * provider set-up ~4 ms). A failing call (never seen) throws a CfsError.
 */
export function libcryptoHasher(alg: "sha256" | "sha512"): ((src: Uint8Array, srcOff: number, len: number, count: number, out: Uint8Array, outOff: number) => void) | null {
  if (libcryptoCache === undefined) {
    try {
      libcryptoCache = openLibcrypto();
    } catch {
      libcryptoCache = null;
    }
  }
  const lib = libcryptoCache;
  if (lib === null) return null;
  const md = lib.EVP_MD_fetch(null, cstr(alg.toUpperCase()), null);
  const ctx = md === null ? null : lib.EVP_MD_CTX_new();
  if (md === null || ctx === null) return null;
  const ds = alg === "sha256" ? 32 : 64;
  const { EVP_DigestInit_ex2: init, EVP_DigestUpdate: update, EVP_DigestFinal_ex: final } = lib;
  return (src, srcOff, len, count, out, outOff) => {
    if (!(Number.isInteger(srcOff) && Number.isInteger(len) && Number.isInteger(count) && Number.isInteger(outOff)) || srcOff < 0 || len < 0 || count < 0 || outOff < 0 ||
        srcOff + len * count > src.byteLength || outOff + ds * count > out.byteLength) {
      throw new RangeError(`${alg}: range outside the buffer`);
    }
    if (count === 0) return;
    const s = src.byteLength > 0 ? ptr(src) : ptr(oneByte);
    const o = ptr(out);
    for (let i = 0; i < count; i++) {
      const ok =
        init(ctx, md, null) &
        update(ctx, (len === 0 ? s : s + srcOff + i * len) as Pointer, len) &
        final(ctx, (o + outOff + i * ds) as Pointer, null);
      if (ok !== 1) throw new CfsError("libcrypto", `${alg} failed`);
    }
  };
}

// ---- the new mount API -------------------------------------------------------------------

export const FSOPEN_CLOEXEC = 1;
export const FSMOUNT_CLOEXEC = 1;
export const FSCONFIG_SET_FLAG = 0;
export const FSCONFIG_SET_STRING = 1;
export const FSCONFIG_SET_FD = 5;
export const FSCONFIG_CMD_CREATE = 6;

export const MOUNT_ATTR_RDONLY = 0x1;
export const MOUNT_ATTR_NOSUID = 0x2;
export const MOUNT_ATTR_NODEV = 0x4;
export const MOUNT_ATTR_NOEXEC = 0x8;
export const MOUNT_ATTR_IDMAP = 0x100000;

export const MOVE_MOUNT_F_SYMLINKS = 0x1;
export const MOVE_MOUNT_F_AUTOMOUNTS = 0x2;
export const MOVE_MOUNT_F_EMPTY_PATH = 0x4;
export const MOVE_MOUNT_T_SYMLINKS = 0x10;
export const MOVE_MOUNT_T_AUTOMOUNTS = 0x20;
export const MOVE_MOUNT_T_EMPTY_PATH = 0x40;

export const OPEN_TREE_CLONE = 1;
export const OPEN_TREE_CLOEXEC = O_CLOEXEC;

export const MS_PRIVATE = 1 << 18;
export const MS_REC = 16384;
export const MS_BIND = 4096;
export const MS_RDONLY = 1;
export const MS_REMOUNT = 32;
export const MS_SLAVE = 1 << 19;

/**
 * Messages the kernel queued on an fs-context fd ("e overlay: …" lines),
 * read until ENODATA. Empty when there are none.
 */
export function fsContextLog(fsfd: number): string[] {
  const out: string[] = [];
  const buf = new Uint8Array(4096);
  for (let i = 0; i < 64; i++) {
    const r = Number(libc().read(fsfd, buf, BigInt(buf.byteLength)));
    if (r <= 0) break;
    out.push(Buffer.from(buf.subarray(0, r)).toString("utf8").trimEnd());
  }
  return out;
}

/** fsopen(2): a filesystem context for `fsname` ("erofs", "overlay", "tmpfs"). */
export function fsopen(fsname: string, flags = FSOPEN_CLOEXEC): number {
  const n = cstr(fsname);
  return check(fsname, "fsopen", () => sys(SYS.fsopen, addr(n), flags));
}

function fsconfig(fsfd: number, cmd: number, key: string | null, value: Uint8Array | null, aux: number, what: string): void {
  const k = key === null ? null : cstr(key);
  for (;;) {
    const r = Number(sys(SYS.fsconfig, fsfd, cmd, addr(k), addr(value), aux));
    if (r >= 0) return;
    const e = lastErrno();
    if (e === errno.EINTR) continue;
    const log = fsContextLog(fsfd);
    throw new SysError(what, "fsconfig", e, log.length ? log.join("; ") : undefined);
  }
}

/** fsconfig(FSCONFIG_SET_FLAG, key), e.g. "ro". */
export function fsconfigSetFlag(fsfd: number, key: string): void {
  fsconfig(fsfd, FSCONFIG_SET_FLAG, key, null, 0, key);
}

/** fsconfig(FSCONFIG_SET_STRING, key, value), e.g. "source", "lowerdir". */
export function fsconfigSetString(fsfd: number, key: string, value: SysPath): void {
  fsconfig(fsfd, FSCONFIG_SET_STRING, key, cstr(value), 0, `${key}=${show(value)}`);
}

/** fsconfig(FSCONFIG_SET_FD, key, fd), e.g. "lowerdir+" with an O_PATH/mount fd. */
export function fsconfigSetFd(fsfd: number, key: string, fd: number): void {
  fsconfig(fsfd, FSCONFIG_SET_FD, key, null, fd, `${key}=fd ${fd}`);
}

/** fsconfig(FSCONFIG_CMD_CREATE): create the superblock. */
export function fsconfigCreate(fsfd: number, input = "fsconfig create"): void {
  fsconfig(fsfd, FSCONFIG_CMD_CREATE, null, null, 0, input);
}

/** fsmount(2): a detached mount fd for a created context; attrs are MOUNT_ATTR_*. */
export function fsmount(fsfd: number, attrs = 0, flags = FSMOUNT_CLOEXEC): number {
  return check(`fs context fd ${fsfd}`, "fsmount", () => sys(SYS.fsmount, fsfd, flags, attrs));
}

/** move_mount(2). For a detached mount fd use fromPath "" with MOVE_MOUNT_F_EMPTY_PATH. */
export function moveMount(fromDirfd: number, fromPath: SysPath, toDirfd: number, toPath: SysPath, flags = 0): void {
  const f = cstr(fromPath);
  const t = cstr(toPath);
  check(show(toPath) || `fd ${toDirfd}`, "move_mount", () => sys(SYS.move_mount, fromDirfd, addr(f), toDirfd, addr(t), flags));
}

/** Attach a detached mount fd at `target`. */
export function attachMount(mountFd: number, target: SysPath): void {
  moveMount(mountFd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH);
}

/** open_tree(2); OPEN_TREE_CLONE (| AT_RECURSIVE) gives a detached copy. */
export function openTree(dirfd: number, path: SysPath, flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC): number {
  const p = cstr(path);
  return check(show(path) || `fd ${dirfd}`, "open_tree", () => sys(SYS.open_tree, dirfd, addr(p), flags));
}

/** mount_setattr(2) with `struct mount_attr {u64 attr_set, attr_clr, propagation, userns_fd}`. */
export function mountSetattr(
  dirfd: number,
  path: SysPath,
  attr: { set?: number; clear?: number; propagation?: number; usernsFd?: number },
  flags = AT_EMPTY_PATH,
): void {
  const a = new Uint8Array(32);
  const dv = new DataView(a.buffer);
  dv.setBigUint64(0, BigInt(attr.set ?? 0), true);
  dv.setBigUint64(8, BigInt(attr.clear ?? 0), true);
  dv.setBigUint64(16, BigInt(attr.propagation ?? 0), true);
  dv.setBigUint64(24, BigInt(attr.usernsFd ?? 0), true);
  const p = cstr(path);
  check(show(path) || `fd ${dirfd}`, "mount_setattr", () => sys(SYS.mount_setattr, dirfd, addr(p), flags, addr(a), 32));
}

/** An fsconfig option for `mountFs`: a flag (true), a string, or an fd. */
export type FsOption = [key: string, value: true | SysPath | { fd: number }];

/**
 * fsopen + fsconfig… + CMD_CREATE + fsmount in one: a detached mount fd.
 * Errors carry the kernel's fs-context messages and name the failing option.
 */
export function mountFs(fstype: string, options: readonly FsOption[], attrs = 0): number {
  const fsfd = fsopen(fstype);
  try {
    for (const [key, value] of options) {
      if (value === true) fsconfigSetFlag(fsfd, key);
      else if (typeof value === "object" && "fd" in value) fsconfigSetFd(fsfd, key, value.fd);
      else fsconfigSetString(fsfd, key, value);
    }
    fsconfigCreate(fsfd, `${fstype} mount`);
    return fsmount(fsfd, attrs);
  } finally {
    close(fsfd);
  }
}

// ---- classic mount -----------------------------------------------------------------------

/** mount(2). */
export function mount(source: SysPath | null, target: SysPath, fstype: string | null, flags: number, data: string | null = null): void {
  check(() => show(target), "mount", () =>
    libc().mount(source === null ? null : cstr(source), cstr(target), fstype === null ? null : cstr(fstype), BigInt(flags), data === null ? null : cstr(data)),
  );
}

export const MNT_FORCE = 1;
export const MNT_DETACH = 2;
export const UMOUNT_NOFOLLOW = 8;

/** umount2(2); MNT_DETACH for a lazy unmount. */
export function umount2(target: SysPath, flags = 0): void {
  check(() => show(target), "umount2", () => libc().umount2(cstr(target), flags));
}

// ---- loop devices ------------------------------------------------------------------------

const LOOP_CLR_FD = 0x4c01;
const LOOP_CONFIGURE = 0x4c0a;
const LOOP_CTL_GET_FREE = 0x4c82;
export const LO_FLAGS_READ_ONLY = 1;
export const LO_FLAGS_AUTOCLEAR = 4;
export const LO_FLAGS_DIRECT_IO = 16;

export interface LoopDevice {
  /** "/dev/loopN" */
  path: string;
  /** An open fd on the device; with autoclear the device goes away when the last user closes. */
  fd: number;
}

/**
 * Attach the open file `fileFd` to a free loop device (LOOP_CTL_GET_FREE +
 * LOOP_CONFIGURE), read-only and autoclear by default, 4096-byte blocks;
 * `offset`/`sizeLimit` select a byte range of the file (a partition).
 * Retries when another process grabs the same free device.
 */
export function loopAttach(
  fileFd: number,
  opts: { readOnly?: boolean; autoclear?: boolean; directIo?: boolean; blockSize?: number; offset?: number | bigint; sizeLimit?: number | bigint } = {},
): LoopDevice {
  const flags =
    (opts.readOnly ?? true ? LO_FLAGS_READ_ONLY : 0) |
    (opts.autoclear ?? true ? LO_FLAGS_AUTOCLEAR : 0) |
    (opts.directIo ? LO_FLAGS_DIRECT_IO : 0);
  const ctl = open("/dev/loop-control", O_RDWR);
  try {
    for (let attempt = 0; ; attempt++) {
      const n = check("/dev/loop-control", "ioctl(LOOP_CTL_GET_FREE)", () => libc().ioctl(ctl, BigInt(LOOP_CTL_GET_FREE), null));
      const path = `/dev/loop${n}`;
      const dev = open(path, (opts.readOnly ?? true) ? O_RDONLY : O_RDWR);
      // struct loop_config { u32 fd; u32 block_size; struct loop_info64 info; u64 reserved[8]; }
      const cfg = new Uint8Array(304);
      const dv = new DataView(cfg.buffer);
      dv.setUint32(0, fileFd, true);
      dv.setUint32(4, opts.blockSize ?? 4096, true);
      dv.setBigUint64(8 + 24, BigInt(opts.offset ?? 0), true); // info.lo_offset
      dv.setBigUint64(8 + 32, BigInt(opts.sizeLimit ?? 0), true); // info.lo_sizelimit (0: to the end)
      dv.setUint32(8 + 52, flags, true); // info.lo_flags
      const r = Number(libc().ioctl(dev, BigInt(LOOP_CONFIGURE), cfg));
      if (r >= 0) return { path, fd: dev };
      const e = lastErrno();
      close(dev);
      if (e === errno.EBUSY && attempt < 16) continue;
      throw new SysError(path, "ioctl(LOOP_CONFIGURE)", e);
    }
  } finally {
    close(ctl);
  }
}

/** Detach a loop device (LOOP_CLR_FD) given an fd on it, and close the fd. */
export function loopDetach(dev: LoopDevice): void {
  try {
    check(dev.path, "ioctl(LOOP_CLR_FD)", () => libc().ioctl(dev.fd, BigInt(LOOP_CLR_FD), null));
  } finally {
    close(dev.fd);
  }
}

// ---- namespaces ----------------------------------------------------------------------------

export const CLONE_NEWNS = 0x00020000;
export const CLONE_NEWUSER = 0x10000000;

/**
 * unshare(2). Note: it applies to the calling thread; in Bun that is the
 * JS main thread. With CLONE_NEWNS, make mounts private afterwards
 * (mount(null, "/", null, MS_REC | MS_PRIVATE)) so nothing propagates out.
 */
export function unshare(flags: number): void {
  check("unshare", "unshare", () => libc().unshare(flags));
}

// ---- Node fs errors in the same form ----------------------------------------------------------

/**
 * A Node/Bun fs error (ErrnoException) as a SysError about `path` and
 * `call`: `/x: open failed: Permission denied (EACCES)`. Other values are
 * returned unchanged when they are already CfsErrors, else rethrown as-is.
 */
export function fromNodeError(path: SysPath, call: string, e: unknown): CfsError {
  if (e instanceof CfsError) return e;
  const err = e as NodeJS.ErrnoException;
  const code = typeof err?.code === "string" ? err.code : undefined;
  const num = code !== undefined ? osErrnoTable()[code] : undefined;
  if (num !== undefined) return new SysError(show(path), call, num);
  if (typeof err?.errno === "number" && err.errno !== 0) return new SysError(show(path), call, Math.abs(err.errno));
  throw e;
}
