// Object files of a composefs repository: the part of host/repo.ts that
// creates, seals and links `objects/XX/<rest>`, in a module of its own so
// that worker threads (host/store-worker.ts) can store objects with exactly
// the same rules as the main thread without loading the whole repository
// code.
//
// Rules (repository.md §4, crash safety in host/repo.ts):
//   - an object is written to an O_TMPFILE file in objects/ (a named
//     `objects/.tmp-object-<12 alnum>` with O_EXCL where O_TMPFILE is
//     missing), sealed with fs-verity where the filesystem has it (the
//     kernel's measurement must equal the userspace digest when one was
//     computed) and only then linked under its name: a partial object never
//     appears under its name, and an O_TMPFILE vanishes with the process;
//   - `VerityGate` decides how digests are established (secure: kernel
//     measurements only; insecure: fs-verity enabled where possible);
//   - a good object already present is kept (a damaged one, wrong size or
//     wrong fs-verity, is replaced atomically).
//
// Syscalls per new object on a filesystem without fs-verity (measured to
// matter: each costs tens of µs in this VM): open(O_TMPFILE), write,
// linkat, close, plus one lstat to look for an existing copy. The read-only
// reopen that fs-verity needs (no writable fd may remain) is skipped once the
// gate knows the filesystem has no fs-verity.

import { randomInt } from "node:crypto";
import { fstatSync, lstatSync, mkdirSync, readSync, renameSync, unlinkSync, writeSync } from "node:fs";

import { bytesEqual, toHex } from "../shared/bytes.ts";
import { CfsError } from "../shared/errors.ts";
import { DIGEST_SIZE, type HashAlg, fsverityDigest } from "../shared/fsverity.ts";
import * as sys from "../shared/sys.ts";

const ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/** `<prefix><12 random alphanumerics>`, as composefs-rs names its temporaries. */
export function tmpName(prefix: string): string {
  let s = prefix;
  for (let i = 0; i < 12; i++) s += ALNUM[randomInt(ALNUM.length)];
  return s;
}

/** Prefix of named object temporaries (where O_TMPFILE is missing). */
export const TMP_OBJECT_PREFIX = ".tmp-object-";

export interface ObjectResult {
  digest: Uint8Array;
  size: number;
  /** The object was already in the repository (nothing new was stored). */
  existed: boolean;
}

/** A temporary object file: its read-write fd and, for a named temporary, its name in objects/. */
export interface TempObject {
  fd: number;
  name: string | null;
}

export function writeAllFd(fd: number, data: Uint8Array, name: string): void {
  let off = 0;
  while (off < data.byteLength) {
    try {
      off += writeSync(fd, data, off, data.byteLength - off);
    } catch (e) {
      throw sys.fromNodeError(name, "write", e);
    }
  }
}

/** Which kernel copy methods still look worth trying (they fail per filesystem, not per file: a failed one is not tried again). */
export interface CopyMethods {
  reflink: boolean;
  range: boolean;
}

/**
 * Copy `size` bytes of `src` into `dst`: reflink, else copy_file_range, else
 * read/write. Returns the bytes copied (fewer when the source shrank; after a
 * reflink, the new file's size). `name` names the source in errors.
 */
export function copyFileData(src: number, dst: number, size: number, name: string, m: CopyMethods): number {
  if (m.reflink) {
    try {
      sys.ficlone(dst, src);
      return fstatSync(dst).size;
    } catch (e) {
      if (!(e instanceof sys.SysError)) throw e;
      m.reflink = false;
    }
  }
  let copied = 0;
  let buf: Uint8Array | null = null;
  while (copied < size) {
    let n = 0;
    if (m.range) {
      try {
        n = sys.copyFileRange(src, dst, Math.min(size - copied, 1 << 30), name);
      } catch (e) {
        if (!sys.isErrno(e, "EXDEV", "EINVAL", "EOPNOTSUPP", "ENOSYS")) throw e;
        m.range = false;
        continue;
      }
    } else {
      buf ??= new Uint8Array(Math.min(size - copied, 1 << 20));
      try {
        n = readSync(src, buf, 0, Math.min(buf.byteLength, size - copied), copied);
      } catch (e) {
        throw sys.fromNodeError(name, "read", e);
      }
      writeAllFd(dst, buf.subarray(0, n), name);
    }
    if (n === 0) break;
    copied += n;
  }
  return copied;
}

// ---- the verity gate ---------------------------------------------------------------------

/**
 * THE place that decides how digests are established. Secure: the kernel
 * enables and measures fs-verity, and anything else is an error. Insecure:
 * fs-verity is enabled where the filesystem supports it (and then the
 * kernel's measurement is used), otherwise the caller's userspace digest is.
 */
export class VerityGate {
  /** Whether the repository's filesystem supports fs-verity (null: not known yet). */
  private fsSupport: boolean | null = null;

  constructor(
    readonly alg: HashAlg,
    readonly secure: boolean,
  ) {}

  /** Whether new objects should be sealed (false once the filesystem is known to lack fs-verity). */
  get trySeal(): boolean {
    return this.secure || this.fsSupport !== false;
  }

  /** What `fsck`/`status` should call this repository's integrity. */
  get description(): string {
    if (this.secure) return "fs-verity (kernel-measured)";
    return this.fsSupport === true ? "insecure (fs-verity enabled where possible, not required)" : "insecure (userspace digests)";
  }

  private checkAlg(m: sys.VerityMeasurement, name: string): Uint8Array {
    if (m.algorithm !== this.alg || m.digest.length !== DIGEST_SIZE[this.alg]) {
      throw new CfsError(name, `has fs-verity with ${String(m.algorithm)} digests, the repository uses ${this.alg}`);
    }
    return m.digest;
  }

  /**
   * Enable fs-verity on a read-only fd (no writable fd may remain) and
   * return the kernel's digest; null when the filesystem lacks fs-verity in
   * an insecure repository. ETXTBSY is retried three times.
   */
  seal(fd: number, name: string): Uint8Array | null {
    if (!this.trySeal) return null;
    for (let attempt = 0; ; attempt++) {
      try {
        sys.enableVerity(fd, this.alg, name);
        break;
      } catch (e) {
        if (sys.isVerityUnsupported(e)) {
          this.fsSupport = false;
          if (this.secure) {
            throw new CfsError(name, "the filesystem does not support fs-verity, but this repository requires it (meta.json has fs-verity)");
          }
          return null;
        }
        if (sys.isErrno(e, "EEXIST")) break;
        if (sys.isErrno(e, "ETXTBSY") && attempt < 3) {
          Bun.sleepSync(10 * (attempt + 1));
          continue;
        }
        throw e;
      }
    }
    this.fsSupport = true;
    const m = sys.measureVerity(fd, name);
    if (m === null) throw new CfsError(name, "fs-verity was enabled but the kernel reports none");
    return this.checkAlg(m, name);
  }

  /**
   * The kernel's digest of an existing file; null when it has none and the
   * repository is insecure (the caller then computes it in userspace).
   */
  measure(fd: number, name: string): Uint8Array | null {
    let m: sys.VerityMeasurement | null;
    try {
      m = sys.measureVerity(fd, name);
    } catch (e) {
      if (!sys.isVerityUnsupported(e)) throw e;
      this.fsSupport = false;
      if (this.secure) throw new CfsError(name, "the filesystem does not support fs-verity, but this repository requires it");
      return null;
    }
    if (m === null) {
      if (this.secure) throw new CfsError(name, "has no fs-verity, but this repository requires it");
      return null;
    }
    this.fsSupport = true;
    return this.checkAlg(m, name);
  }
}

// ---- object files ------------------------------------------------------------------------

export interface ObjectFilesOptions {
  /** Absolute path of the repository directory. */
  path: string;
  alg: HashAlg;
  /** Only kernel measurements count (meta.json has fs-verity, no --insecure). */
  secure: boolean;
  /** Use named temporaries as on filesystems without O_TMPFILE. */
  namedTemporaries?: boolean;
  /** Share a gate (default: a new one). */
  gate?: VerityGate;
}

/** Creates and links the object files of one repository (any thread). */
export class ObjectFiles {
  readonly path: string;
  readonly alg: HashAlg;
  readonly secure: boolean;
  readonly gate: VerityGate;
  readonly namedTemporaries: boolean;
  /** Repository-relative directories known to exist (objects/, objects/XX, refs parents). */
  private readonly made = new Set<string>();

  constructor(opts: ObjectFilesOptions) {
    this.path = opts.path;
    this.alg = opts.alg;
    this.secure = opts.secure;
    this.gate = opts.gate ?? new VerityGate(opts.alg, opts.secure);
    this.namedTemporaries = opts.namedTemporaries ?? false;
  }

  /** `objects/XX/<rest>` of a digest, repository-relative. */
  relPath(digest: Uint8Array | string): string {
    const hex = typeof digest === "string" ? digest : toHex(digest);
    return `objects/${hex.slice(0, 2)}/${hex.slice(2)}`;
  }

  /** Absolute path of an object. */
  pathOf(digest: Uint8Array | string): string {
    return `${this.path}/${this.relPath(digest)}`;
  }

  /** Create a repository-relative directory (and its parents) once per handle. */
  mkdirp(rel: string): void {
    if (this.made.has(rel)) return;
    try {
      mkdirSync(`${this.path}/${rel}`, { recursive: true, mode: 0o755 });
    } catch (e) {
      throw sys.fromNodeError(`${this.path}/${rel}`, "mkdir", e);
    }
    this.made.add(rel);
  }

  /**
   * Whether a good copy of the object is already there: a regular file of
   * the right size, and in a secure repository with the right fs-verity
   * digest. A damaged one counts as absent: the new copy replaces it.
   */
  exists(digest: Uint8Array, size: number): boolean {
    const path = this.pathOf(digest);
    let st;
    try {
      // No exception per miss: most objects of a pull are new.
      st = lstatSync(path, { throwIfNoEntry: false });
    } catch (e) {
      throw sys.fromNodeError(path, "lstat", e);
    }
    if (st === undefined || !st.isFile() || st.size !== size) return false;
    if (!this.secure) return true;
    let fd = -1;
    try {
      fd = sys.open(path, sys.O_RDONLY | sys.O_NOFOLLOW);
      return bytesEqual(this.gate.measure(fd, path)!, digest);
    } catch (e) {
      if (e instanceof CfsError) return false; // no or wrong fs-verity: replaced by the new copy
      throw e;
    } finally {
      if (fd >= 0) sys.close(fd);
    }
  }

  /** A temporary object file: O_TMPFILE in objects/, or a named O_EXCL file there. */
  newTemp(): TempObject {
    this.mkdirp("objects");
    const dir = `${this.path}/objects`;
    if (!this.namedTemporaries) {
      try {
        return { fd: sys.openTmpfile(dir, 0o644), name: null };
      } catch (e) {
        if (!sys.isErrno(e, "EOPNOTSUPP", "EISDIR", "ENOSYS")) throw e;
      }
    }
    for (let i = 0; i < 16; i++) {
      const name = tmpName(TMP_OBJECT_PREFIX);
      try {
        return { fd: sys.open(`${dir}/${name}`, sys.O_RDWR | sys.O_CREAT | sys.O_EXCL, 0o644), name };
      } catch (e) {
        if (!sys.isErrno(e, "EEXIST")) throw e;
      }
    }
    throw new CfsError(dir, "cannot create a temporary object file");
  }

  /** Close and remove a temporary (no-op for parts already gone). */
  dropTemp(w: TempObject): void {
    if (w.fd >= 0) {
      try {
        sys.close(w.fd);
      } catch {}
      w.fd = -1;
    }
    if (w.name !== null) {
      try {
        unlinkSync(`${this.path}/objects/${w.name}`);
      } catch {}
      w.name = null;
    }
  }

  /** Name of a temporary for messages. */
  tempLabel(w: TempObject): string {
    return `${this.path}/objects/${w.name ?? "O_TMPFILE"}`;
  }

  /**
   * Seal the temporary with fs-verity where possible (the kernel must agree
   * with `digest` when given; otherwise its measurement is the digest; with
   * neither, `fallback` computes it from a read-only fd) and link it into
   * place. The temporary's fds are closed either way. Returns the final
   * digest and whether this call created the object (false: a good copy
   * was there already).
   */
  sealAndLink(w: TempObject, digest: Uint8Array | null, size: number, fallback?: (fd: number) => Uint8Array): { digest: Uint8Array; created: boolean } {
    const label = this.tempLabel(w);
    // fs-verity needs a read-only fd and no writable one; without fs-verity the writable fd serves.
    let fd = w.fd;
    if (this.gate.trySeal) {
      fd = w.name === null ? sys.open(`/proc/self/fd/${w.fd}`, sys.O_RDONLY) : sys.open(`${this.path}/objects/${w.name}`, sys.O_RDONLY);
      sys.close(w.fd);
    }
    w.fd = -1;
    try {
      const kernel = this.gate.trySeal ? this.gate.seal(fd, label) : null;
      let d = digest;
      if (kernel !== null) {
        if (d !== null && !bytesEqual(kernel, d)) {
          throw new CfsError(this.relPath(d), `content changed while being stored (kernel measured ${toHex(kernel)})`);
        }
        d = kernel;
      }
      if (d === null) {
        if (fallback === undefined) throw new Error("ObjectFiles.sealAndLink: no digest");
        d = fallback(fd);
      }
      return { digest: d, created: this.link(w, fd, d, size) };
    } finally {
      sys.close(fd);
    }
  }

  /** Give the sealed temporary (open as `fd`) the object's name; false when a good copy was there. */
  private link(w: TempObject, fd: number, d: Uint8Array, size: number): boolean {
    const hex = toHex(d);
    this.mkdirp(`objects/${hex.slice(0, 2)}`);
    const dest = this.pathOf(hex);
    if (w.name !== null) {
      try {
        sys.renameat2(sys.AT_FDCWD, `${this.path}/objects/${w.name}`, sys.AT_FDCWD, dest, sys.RENAME_NOREPLACE);
        w.name = null;
        return true;
      } catch (e) {
        if (!sys.isErrno(e, "EEXIST")) throw e;
        if (this.exists(d, size)) {
          this.dropTemp(w);
          return false;
        }
        // A damaged object of that name: replace it.
        renameSync(`${this.path}/objects/${w.name}`, dest);
        w.name = null;
        return true;
      }
    }
    try {
      sys.linkat(sys.AT_FDCWD, `/proc/self/fd/${fd}`, sys.AT_FDCWD, dest, sys.AT_SYMLINK_FOLLOW);
      return true;
    } catch (e) {
      if (!sys.isErrno(e, "EEXIST")) throw e;
      if (this.exists(d, size)) return false;
      // Damaged object in an insecure repository: link under a temporary name, rename over it.
      const tmp = `${this.path}/objects/${tmpName(TMP_OBJECT_PREFIX)}`;
      sys.linkat(sys.AT_FDCWD, `/proc/self/fd/${fd}`, sys.AT_FDCWD, tmp, sys.AT_SYMLINK_FOLLOW);
      renameSync(tmp, dest);
      return true;
    }
  }

  /**
   * Store bytes as an object (deduplicated): digest in userspace, nothing
   * written when a good copy exists. `digest` may be given when the caller
   * already computed it from these bytes.
   */
  storeBytes(bytes: Uint8Array, digest?: Uint8Array): ObjectResult {
    const d = digest ?? fsverityDigest(bytes, this.alg);
    if (this.exists(d, bytes.byteLength)) return { digest: d, size: bytes.byteLength, existed: true };
    const w = this.newTemp();
    try {
      writeAllFd(w.fd, bytes, this.tempLabel(w));
      const r = this.sealAndLink(w, d, bytes.byteLength);
      return { digest: r.digest, size: bytes.byteLength, existed: !r.created };
    } catch (e) {
      this.dropTemp(w);
      throw e;
    }
  }
}
