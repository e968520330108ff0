// The composefs repository, laid out exactly as composefs-rs lays it out
// (repository.md), so that a repository written by cfsboot is read by
// cfsctl/bootc and the other way round.
//
//   meta.json                      format version, algorithm, features, EROFS formats (shared/repometa.ts)
//   objects/XX/<rest>              content-addressed files, named by their fs-verity digest
//   images/<hex>                   -> ../objects/XX/<rest>       EROFS images this repository made
//   images/refs/<name…>            -> relative link to images/<hex>          (GC roots)
//   streams/<content-id>           -> ../objects/XX/<rest>       splitstreams by logical name
//   streams/refs/<name…>           -> relative link to streams/<content-id>  (GC roots; OCI tags
//                                     live in streams/refs/oci/<enc(tag)>)
//
// Secure vs insecure (repository.md §3.4) is decided in ONE place, the
// `VerityGate` (host/objects.ts): a repository is secure when meta.json itself has
// fs-verity and the caller did not ask for --insecure. A secure repository
// trusts only the kernel's measurements (every object must have fs-verity
// matching its name); an insecure one computes digests in userspace (the
// same digests the kernel would report) and enables fs-verity on new objects
// wherever the filesystem supports it, so the repository can become secure
// later on a verity-capable copy. `requireVerity` turns "insecure" into an
// error at open time.
//
// Crash safety (host/objects.ts): objects are written to O_TMPFILE files (a named
// `objects/.tmp-object-<12 alnum>` with O_EXCL where O_TMPFILE is missing),
// reopened read-only, sealed with fs-verity and only then linked into place,
// so a partial object never appears under its name. Links are replaced
// atomically (`.symlink-<12 alnum>` + rename). Before a stream or image
// becomes visible, syncfs() makes everything it refers to durable. GC
// removes stale temporaries after a threshold.
//
// Locking (repository.md §5): every open handle holds flock(LOCK_SH) on the
// repository directory; GC takes LOCK_EX and downgrades afterwards. There is
// at most one handle per repository per process (a second `open` returns the
// same handle, reference-counted), so a process never deadlocks against its
// own shared lock (bootc#2364).

import { createHash } from "node:crypto";
import {
  closeSync,
  constants as fsConstants,
  fstatSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readSync,
  readdirSync,
  readlinkSync,
  renameSync,
  statSync,
  symlinkSync,
  unlinkSync,
  accessSync,
} from "node:fs";
import { homedir } from "node:os";
import { dirname, resolve as resolvePath } from "node:path";

import { bytesEqual, fromHex, toHex } from "../shared/bytes.ts";
import { writeErofs } from "../shared/erofs/writer.ts";
import { CfsError, describeError } from "../shared/errors.ts";
import { DIGEST_SIZE, FsVerityHasher, type HashAlg, algName, fsverityDigest } from "../shared/fsverity.ts";
import {
  type ErofsFormats,
  type ErofsVersion,
  type RepoMeta,
  REPO_META_FILENAME,
  effectiveFormats,
  formatRepoMeta,
  formatVersions,
  newRepoMeta,
  openMode,
  parseRepoMeta,
  requireWritable,
  sameRepoMeta,
} from "../shared/repometa.ts";
import { type SplitStreamInfo, CONTENT_TYPE, externalBlobRef, parseSplitStream, reassemble } from "../shared/splitstream.ts";
import * as sys from "../shared/sys.ts";
import type { Dir } from "../shared/tree.ts";
import { SPLIT_MIN, sharedDigestPool, digestFdSync } from "./digest.ts";
import { type CopyMethods, ObjectFiles, VerityGate, TMP_OBJECT_PREFIX, copyFileData, tmpName, writeAllFd, type ObjectResult } from "./objects.ts";
export { ObjectFiles, VerityGate, TMP_OBJECT_PREFIX, tmpName, type ObjectResult } from "./objects.ts";
import type { FsckReport } from "./repo-fsck.ts";
import type { GcOptions, GcReport } from "./repo-gc.ts";

export type { ErofsFormats, ErofsVersion, RepoMeta } from "../shared/repometa.ts";

// ---- location (repository.md §1) -------------------------------------------------------

/** bootc's and cfsctl's system repository. */
export const SYSTEM_REPO_PATH = "/sysroot/composefs";

/** `$HOME/.var/lib/composefs`. */
export function userRepoPath(): string {
  const home = process.env.HOME || homedir();
  if (!home) throw new CfsError("--user", "$HOME must be set to use the user repository");
  return `${home}/.var/lib/composefs`;
}

/** `--repo DIR | --system | --user`; without any: system for root, user otherwise. */
export function resolveRepoPath(opts: { repo?: string; system?: boolean; user?: boolean }): string {
  const given = [opts.repo !== undefined, !!opts.system, !!opts.user].filter(Boolean).length;
  if (given > 1) throw new CfsError("--repo/--system/--user", "choose at most one repository location");
  if (opts.repo !== undefined) {
    if (opts.repo === "") throw new CfsError("--repo", "empty path");
    return resolvePath(opts.repo);
  }
  if (opts.system) return SYSTEM_REPO_PATH;
  if (opts.user) return userRepoPath();
  return process.getuid?.() === 0 ? SYSTEM_REPO_PATH : userRepoPath();
}

// ---- names and links (repository.md §2, §8.4) --------------------------------------------

/**
 * The text of a relative link at `link` (repository-relative) pointing at
 * `target` (repository-relative): drop the leading components the link's
 * parent directory shares with the target, one `..` per remaining parent
 * component, then the rest of the target (repository.md §2 table).
 */
export function linkText(link: string, target: string): string {
  const parent = link.split("/").slice(0, -1);
  const tgt = target.split("/");
  let i = 0;
  while (i < parent.length && i < tgt.length - 1 && parent[i] === tgt[i]) i++;
  return [...new Array<string>(parent.length - i).fill(".."), ...tgt.slice(i)].join("/");
}

/** A tag's file name under streams/refs/oci/: `%` → `%25`, then `/` → `%2F`. */
export function encodeTag(name: string): string {
  return name.replaceAll("%", "%25").replaceAll("/", "%2F");
}

/** Single-pass decoding: `%2F` → `/`, `%25` → `%`, any other `%xx` kept as it is. */
export function decodeTag(encoded: string): string {
  let out = "";
  for (let i = 0; i < encoded.length; ) {
    const c = encoded[i]!;
    if (c !== "%") {
      out += c;
      i++;
      continue;
    }
    const two = encoded.slice(i + 1, i + 3);
    out += two === "2F" ? "/" : two === "25" ? "%" : `%${two}`;
    i += 1 + two.length;
  }
  return out;
}

/** Refuse tag names cfsctl refuses (leading `@`) and ones that cannot be a file name. */
export function validateTagName(name: string): void {
  if (name === "") throw new CfsError("tag", "empty tag name");
  if (name.startsWith("@")) throw new CfsError(name, "invalid tag name: a leading '@' is reserved for digest references");
  if (name.includes("\0")) throw new CfsError(JSON.stringify(name), "invalid tag name: contains NUL");
  const enc = encodeTag(name);
  if (enc === "." || enc === "..") throw new CfsError(name, "invalid tag name");
  if (Buffer.byteLength(enc) > 255) throw new CfsError(name.slice(0, 60) + "…", "tag name too long (255 bytes at most once encoded)");
}

/** `sha256:<hex>` (also accepts a leading `@`). */
export function normalizeManifestDigest(s: string): string {
  const d = s.startsWith("@") ? s.slice(1) : s;
  if (!/^sha256:[0-9a-f]{64}$/.test(d)) throw new CfsError(s, "not a manifest digest (expected sha256:<64 hex digits>)");
  return d;
}

/** Prefix of link temporaries. */
export const TMP_SYMLINK_PREFIX = ".symlink-";

/** Content ids of OCI streams (repository.md §8.1). */
export const manifestStreamId = (digest: string): string => `oci-manifest-${digest}`;
export const configStreamId = (digest: string): string => `oci-config-${digest}`;
export const layerStreamId = (diffId: string): string => `oci-layer-${diffId}`;
export const blobStreamId = (digest: string): string => `oci-blob-${digest}`;

/** The config named ref holding an OCI image's EROFS of a given format (repository.md §8.2). */
export function imageRefKey(version: ErofsVersion, bootable: boolean): string {
  const base = bootable ? "composefs.image.boot" : "composefs.image";
  return version === 2 ? base : `${base}.v1`;
}

function validateContentId(id: string): void {
  if (id === "" || id === "refs" || id.startsWith(".") || id.includes("/") || id.includes("\0") || Buffer.byteLength(id) > 255) {
    throw new CfsError(JSON.stringify(id), "invalid stream name");
  }
}

function validateRefName(what: string, name: string): void {
  const parts = name.split("/");
  if (name === "" || parts.some((p) => p === "" || p === "." || p === ".." || Buffer.byteLength(p) > 255) || name.includes("\0")) {
    throw new CfsError(JSON.stringify(name), `invalid ${what} name`);
  }
}

/** A streaming object import: write(), then finish() (or abort()). */
export interface ObjectWriter {
  /** The temporary file's read-write fd (e.g. for a DigestPool while writing is done). */
  readonly fd: number;
  /** Bytes written so far. */
  readonly size: number;
  write(chunk: Uint8Array): void;
  /**
   * Seal and link the object. `digest`, when the caller computed it from
   * this file (e.g. with a DigestPool on `fd`), saves hashing here; in a
   * secure repository the kernel's measurement must equal it.
   */
  finish(opts?: { digest?: Uint8Array }): Promise<ObjectResult>;
  /** Drop the temporary file (no-op after finish). */
  abort(): void;
}

function isEnoent(e: unknown): boolean {
  return (e as NodeJS.ErrnoException)?.code === "ENOENT" || sys.isErrno(e, "ENOENT");
}

// ---- the repository ----------------------------------------------------------------------

export interface OpenOptions {
  /** Refuse to open when the repository cannot be written (read-only feature flags, read-only filesystem). */
  writable?: boolean;
  /** Treat the repository as insecure even if meta.json has fs-verity (bootc's `composefs=?…`). */
  insecure?: boolean;
  /** Refuse an insecure repository. */
  requireVerity?: boolean;
  /** Tests: use named temporaries as on filesystems without O_TMPFILE. */
  namedTemporaries?: boolean;
  /** Print "waiting for the repository lock" here when another process holds it (default: stderr). */
  onWait?: (message: string) => void;
}

export interface InitOptions {
  /** Default fsverity-sha512-12 for a new repository; for an existing one, it must match when given. */
  algorithm?: "fsverity-sha256-12" | "fsverity-sha512-12";
  /** `v1` (V1 only, `v1_erofs` flag) or `dual` (V1 and V2). Default v1 for a new repository; kept for an existing one. */
  erofs?: "v1" | "dual";
  /** Do not put fs-verity on meta.json: the repository does not require fs-verity. */
  insecure?: boolean;
  /** Fail instead of creating an insecure repository when the filesystem lacks fs-verity. */
  requireVerity?: boolean;
}

export type InitOutcome =
  /** A new repository. */
  | "created"
  /** Existing repository with the same settings: nothing changed. */
  | "unchanged"
  /** Existing V1- or V2-only repository now generates both formats. */
  | "dual"
  /** A pre-meta.json repository got its meta.json. */
  | "upgraded";

export interface InitResult {
  repo: Repository;
  created: boolean;
  outcome: InitOutcome;
  /** meta.json has fs-verity (the repository requires it). */
  verity: boolean;
  /** The filesystem lacked fs-verity, so the repository was made insecure although --insecure was not given. */
  degraded: boolean;
}

/** A resolved OCI image in the repository (repository.md §8.5). */
export interface StoredOciImage {
  /** The tag it was found by (undefined for `@sha256:` lookups). */
  tag?: string;
  manifestDigest: string;
  /** Object id of the manifest splitstream. */
  manifestStream: Uint8Array;
  manifest: Uint8Array;
  manifestRefs: Map<string, Uint8Array>;
  configDigest: string;
  configStream: Uint8Array | null;
  config: Uint8Array | null;
  /** The config splitstream's named refs: layer diff_ids and `composefs.image*`. */
  configRefs: Map<string, Uint8Array>;
}

const openHandles = new Map<string, Repository>();

export class Repository {
  /** Absolute path of the repository directory. */
  readonly path: string;
  readonly meta: RepoMeta;
  /** Object digest algorithm. */
  readonly alg: HashAlg;
  /** meta.json has fs-verity and --insecure was not given: only kernel measurements count. */
  readonly secure: boolean;
  /** meta.json itself has fs-verity. */
  readonly metaHasVerity: boolean;
  /** Writes allowed (known features, writable filesystem). */
  readonly writable: boolean;
  /** EROFS versions to generate: `default` gets the named refs. */
  readonly formats: ErofsFormats;
  readonly gate: VerityGate;
  /** O_RDONLY fd of the repository directory, holding the flock. */
  readonly dirfd: number;
  private refs = 1;
  private closed = false;
  private lockState: "shared" | "exclusive" = "shared";
  /** Creates, seals and links object files (host/objects.ts). */
  readonly files: ObjectFiles;
  /** importFile: copy methods that worked so far. */
  private readonly copyMethods: CopyMethods = { reflink: true, range: true };

  private constructor(path: string, dirfd: number, meta: RepoMeta, metaHasVerity: boolean, opts: OpenOptions, writable: boolean) {
    this.path = path;
    this.dirfd = dirfd;
    this.meta = meta;
    this.alg = meta.algorithm;
    this.metaHasVerity = metaHasVerity;
    this.secure = metaHasVerity && !opts.insecure;
    this.writable = writable;
    this.formats = effectiveFormats(meta);
    this.gate = new VerityGate(this.alg, this.secure);
    this.files = new ObjectFiles({ path, alg: this.alg, secure: this.secure, namedTemporaries: opts.namedTemporaries ?? false, gate: this.gate });
  }

  /** The format versions to generate, default first. */
  get versions(): ErofsVersion[] {
    return formatVersions(this.meta);
  }

  /**
   * Open an existing repository (meta.json required) and take the shared
   * lock. A second open of the same repository in this process returns
   * the same handle (closed when every opener has closed it).
   */
  static open(path: string, opts: OpenOptions = {}): Repository {
    const abs = resolvePath(path);
    const existing = openHandles.get(abs);
    if (existing && !existing.closed) {
      if (opts.writable) existing.requireWritable();
      if (opts.requireVerity && !existing.secure) existing.refuseInsecure();
      if (opts.insecure && existing.secure) throw new CfsError(abs, "already open in this process as a secure repository");
      existing.refs++;
      return existing;
    }
    let dirfd: number;
    try {
      dirfd = sys.open(abs, sys.O_RDONLY | sys.O_DIRECTORY);
    } catch (e) {
      if (sys.isErrno(e, "ENOENT")) throw new CfsError(abs, "no repository here (create one with `cfsboot repo init`)");
      if (sys.isErrno(e, "ENOTDIR")) throw new CfsError(abs, "not a directory");
      throw e;
    }
    try {
      Repository.lock(dirfd, abs, sys.LOCK_SH, opts.onWait);
      const { meta, verity } = Repository.readMeta(dirfd, abs);
      let writable = openMode(meta) === "rw";
      if (writable) {
        try {
          accessSync(abs, fsConstants.W_OK);
        } catch {
          writable = false;
        }
      }
      const repo = new Repository(abs, dirfd, meta, verity, opts, writable);
      if (opts.requireVerity && !repo.secure) repo.refuseInsecure();
      if (opts.writable) repo.requireWritable();
      openHandles.set(abs, repo);
      return repo;
    } catch (e) {
      sys.close(dirfd);
      throw e;
    }
  }

  /** Blocking flock; says that it waits when another process holds the lock. */
  private static lock(fd: number, path: string, op: number, onWait?: (m: string) => void): void {
    try {
      sys.flock(fd, op | sys.LOCK_NB, path);
      return;
    } catch (e) {
      if (!sys.isErrno(e, "EAGAIN")) throw e;
    }
    const what = op === sys.LOCK_EX ? "exclusive" : "shared";
    (onWait ?? ((m: string) => process.stderr.write(`${m}\n`)))(`cfsboot: ${path}: waiting for the repository lock (${what}); another process is using the repository`);
    sys.flock(fd, op, path);
  }

  /** meta.json parsed, and whether it has fs-verity (= the repository is secure). */
  private static readMeta(dirfd: number, path: string): { meta: RepoMeta; verity: boolean } {
    const metaPath = `${path}/${REPO_META_FILENAME}`;
    let fd: number;
    try {
      fd = sys.openat(dirfd, REPO_META_FILENAME, sys.O_RDONLY);
    } catch (e) {
      if (!sys.isErrno(e, "ENOENT")) throw e;
      let hasObjects = false;
      try {
        hasObjects = statSync(`${path}/objects`).isDirectory();
      } catch {}
      if (hasObjects) {
        throw new CfsError(metaPath, "not found; this is an old-format repository (run `cfsboot repo init` to add meta.json)");
      }
      throw new CfsError(metaPath, "not found; this repository must be initialized with `cfsboot repo init`");
    }
    try {
      const bytes = readFd(fd, metaPath);
      const meta = parseRepoMeta(bytes, metaPath);
      let verity = false;
      try {
        const m = sys.measureVerity(fd, metaPath);
        verity = m !== null;
        if (m !== null && m.algorithm !== meta.algorithm) {
          throw new CfsError(metaPath, `has fs-verity with ${String(m.algorithm)}, the repository uses ${meta.algorithm}`);
        }
      } catch (e) {
        if (!sys.isVerityUnsupported(e)) throw e;
      }
      return { meta, verity };
    } finally {
      sys.close(fd);
    }
  }

  private refuseInsecure(): never {
    throw new CfsError(
      this.path,
      this.metaHasVerity
        ? "fs-verity is required (--require-verity) but the repository is used insecurely (--insecure)"
        : "fs-verity is required (--require-verity) but this repository is insecure (meta.json has no fs-verity; re-create it with `cfsboot repo init` on a verity-capable filesystem)",
    );
  }

  /** Throws unless writes are allowed. */
  requireWritable(): void {
    requireWritable(this.meta, this.path);
    if (!this.writable) {
      try {
        accessSync(this.path, fsConstants.W_OK);
      } catch (e) {
        throw new CfsError(this.path, `repository is not writable: ${describeError(sys.fromNodeError(this.path, "access", e))}`);
      }
    }
  }

  /**
   * Create a repository, or check an existing one against the requested
   * settings (repository.md §3.6, with cfsboot's rules: same settings = no-op,
   * other algorithm = error, v1/V2-only → dual allowed, dual → v1 refused,
   * a pre-meta.json repository gets meta.json with V2 as its format).
   */
  static init(path: string, opts: InitOptions = {}): InitResult {
    const abs = resolvePath(path);
    if (openHandles.has(abs)) throw new CfsError(abs, "repository is open in this process; close it before init");
    try {
      mkdirSync(dirname(abs), { recursive: true, mode: 0o755 });
      mkdirSync(abs, { mode: 0o700 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw sys.fromNodeError(abs, "mkdir", e);
    }
    const requestedAlg = opts.algorithm === undefined ? undefined : (opts.algorithm.replace(/^fsverity-(sha\d+)-12$/, "$1") as HashAlg);
    if (requestedAlg !== undefined && requestedAlg !== "sha256" && requestedAlg !== "sha512") {
      throw new CfsError(String(opts.algorithm), "unknown algorithm (expected fsverity-sha256-12 or fsverity-sha512-12)");
    }
    const dirfd = sys.open(abs, sys.O_RDONLY | sys.O_DIRECTORY);
    let outcome: InitOutcome = "unchanged";
    let verity = false;
    let degraded = false;
    try {
      // Shared to look; exclusive (nobody else may use the repository) to change meta.json.
      Repository.lock(dirfd, abs, sys.LOCK_SH);
      for (let exclusive = false; ; exclusive = true) {
        let existing: { meta: RepoMeta; verity: boolean } | null = null;
        try {
          existing = Repository.readMeta(dirfd, abs);
        } catch (e) {
          if (!(e instanceof CfsError) || !/^not found;/.test(e.what)) throw e;
        }
        let write: (() => void) | null = null;
        if (existing !== null) {
          const cur = existing.meta;
          if (requestedAlg !== undefined && requestedAlg !== cur.algorithm) {
            throw new CfsError(
              abs,
              `repository already initialized with different configuration (algorithm ${algName(cur.algorithm)}); cannot re-initialize with ${algName(requestedAlg)}`,
            );
          }
          verity = existing.verity;
          const target = opts.erofs === undefined ? cur : initTargetMeta(cur, opts.erofs, abs);
          if (!sameRepoMeta(target, cur)) {
            requireWritable(cur, abs);
            const v = existing.verity;
            write = () => writeMetaReplacing(dirfd, abs, target, v);
            outcome = "dual";
          } else {
            outcome = "unchanged";
          }
        } else {
          const legacy = isDir(`${abs}/objects`);
          const alg = requestedAlg ?? (legacy ? inferLegacyAlgorithm(abs) : undefined) ?? "sha512";
          let meta: RepoMeta;
          if (legacy) {
            // Legacy repositories only ever held V2 images (repository.md §13: not V1 as composefs-rs writes).
            meta = opts.erofs === "dual" ? newRepoMeta(alg, { default: 2, extra: [1] }) : opts.erofs === "v1" ? newRepoMeta(alg, 1) : newRepoMeta(alg, 2);
            outcome = "upgraded";
          } else {
            meta = opts.erofs === "dual" ? newRepoMeta(alg, { default: 2, extra: [1] }) : newRepoMeta(alg, 1);
            outcome = "created";
          }
          write = () => {
            const r = writeMetaNew(dirfd, abs, meta, { verity: !opts.insecure, requireVerity: !!opts.requireVerity });
            verity = r.verity;
            degraded = !opts.insecure && !r.verity;
          };
        }
        if (write === null) break;
        if (exclusive) {
          write();
          break;
        }
        Repository.lock(dirfd, abs, sys.LOCK_EX);
      }
    } finally {
      sys.close(dirfd);
    }
    const repo = Repository.open(abs, { requireVerity: opts.requireVerity, insecure: opts.insecure });
    return { repo, created: outcome === "created", outcome, verity, degraded };
  }

  /** Release this handle (the lock goes with the last one). */
  close(): void {
    if (this.closed) return;
    if (--this.refs > 0) return;
    this.closed = true;
    if (openHandles.get(this.path) === this) openHandles.delete(this.path);
    try {
      sys.flock(this.dirfd, sys.LOCK_UN, this.path);
    } catch {}
    sys.close(this.dirfd);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  private checkOpen(): void {
    if (this.closed) throw new Error(`repository ${this.path} used after close()`);
  }

  // ---- locking -----------------------------------------------------------------------

  /** Upgrade this process's lock to exclusive (waits for every other user). */
  lockExclusive(onWait?: (m: string) => void): void {
    this.checkOpen();
    if (this.lockState === "exclusive") return;
    Repository.lock(this.dirfd, this.path, sys.LOCK_EX, onWait);
    this.lockState = "exclusive";
  }

  /** Back to the shared lock. */
  lockShared(): void {
    if (this.lockState === "shared") return;
    sys.flock(this.dirfd, sys.LOCK_SH, this.path);
    this.lockState = "shared";
  }

  // ---- paths ---------------------------------------------------------------------------

  /** `objects/XX/<rest>` of a digest, repository-relative. */
  objectRelPath(digest: Uint8Array | string): string {
    const hex = typeof digest === "string" ? digest : toHex(digest);
    return `objects/${hex.slice(0, 2)}/${hex.slice(2)}`;
  }

  /** Absolute path of an object. */
  objectPath(digest: Uint8Array | string): string {
    return `${this.path}/${this.objectRelPath(digest)}`;
  }

  /** A lowercase hex digest of this repository's algorithm → bytes, or null. */
  parseHexDigest(hex: string): Uint8Array | null {
    if (hex.length !== DIGEST_SIZE[this.alg] * 2 || !/^[0-9a-f]+$/.test(hex)) return null;
    return fromHex(hex);
  }

  /** The object id at the end of a link text `…/XX/<rest>`, or null. */
  idFromLinkText(text: string): Uint8Array | null {
    const m = /([0-9a-f]{2})\/([0-9a-f]+)$/.exec(text);
    if (m === null) return null;
    return this.parseHexDigest(m[1]! + m[2]!);
  }

  // ---- objects ----------------------------------------------------------------------

  /** Whether the object exists (one stat). */
  hasObject(digest: Uint8Array | string): boolean {
    try {
      return lstatSync(this.objectPath(digest), { throwIfNoEntry: false })?.isFile() ?? false;
    } catch {
      return false;
    }
  }

  /**
   * Read an object, verified: kernel measurement in a secure repository,
   * userspace digest otherwise (unless `verify: false`). Meant for small
   * objects (JSON, images).
   */
  readObject(digest: Uint8Array, opts: { verify?: boolean } = {}): Uint8Array {
    this.checkOpen();
    const path = this.objectPath(digest);
    let fd: number;
    try {
      fd = sys.open(path, sys.O_RDONLY | sys.O_NOFOLLOW);
    } catch (e) {
      if (sys.isErrno(e, "ENOENT")) throw new CfsError(this.objectRelPath(digest), "object missing from the repository");
      throw e;
    }
    try {
      const kernel = this.secure || opts.verify !== false ? this.gate.measure(fd, path) : null;
      const bytes = readFd(fd, path);
      if (opts.verify !== false) {
        const got = kernel ?? fsverityDigest(bytes, this.alg);
        if (!bytesEqual(got, digest)) {
          throw new CfsError(this.objectRelPath(digest), `fs-verity content mismatch (measured ${toHex(got)})`);
        }
      }
      return bytes;
    } finally {
      sys.close(fd);
    }
  }

  /** Store bytes as an object (deduplicated); returns its digest. */
  async ensureObject(bytes: Uint8Array): Promise<Uint8Array> {
    return this.ensureObjectSync(bytes).digest;
  }

  /** ensureObject, synchronously, with whether it existed. */
  ensureObjectSync(bytes: Uint8Array): ObjectResult {
    this.checkOpen();
    this.requireWritable();
    return this.files.storeBytes(bytes);
  }

  /**
   * A streaming import: bytes go to a temporary file as they come
   * (constant memory); finish() seals and links it. In an insecure
   * repository the digest is computed while writing unless `hash: false`
   * (then pass it to finish, or a large file is hashed by the worker pool).
   */
  createObjectWriter(opts: { hash?: boolean } = {}): ObjectWriter {
    this.checkOpen();
    this.requireWritable();
    const files = this.files;
    const w = files.newTemp();
    const hasher = !this.secure && opts.hash !== false ? new FsVerityHasher(this.alg) : null;
    let size = 0;
    let done = false;
    const repo = this;
    return {
      get fd() {
        return w.fd;
      },
      get size() {
        return size;
      },
      write(chunk: Uint8Array) {
        if (done) throw new Error("ObjectWriter used after finish/abort");
        writeAllFd(w.fd, chunk, files.tempLabel(w));
        hasher?.update(chunk);
        size += chunk.byteLength;
      },
      async finish(fo: { digest?: Uint8Array } = {}) {
        if (done) throw new Error("ObjectWriter.finish called twice");
        done = true;
        try {
          let digest: Uint8Array | null = fo.digest ?? (hasher ? hasher.digest() : null);
          if (digest === null && !repo.gate.trySeal && size >= SPLIT_MIN) {
            digest = (await sharedDigestPool().digestFd(w.fd, repo.alg, size, "object")).digest;
          }
          const r = files.sealAndLink(w, digest, size, (fd) => digestFdSync(fd, size, repo.alg));
          return { digest: r.digest, size, existed: !r.created };
        } catch (e) {
          files.dropTemp(w);
          throw e;
        }
      },
      abort() {
        if (done) return;
        done = true;
        files.dropTemp(w);
      },
    };
  }

  /**
   * Copy a file into the repository as an object (reflink or in-kernel copy
   * where possible). With `digest` (e.g. from a directory scan) an existing
   * object is not copied again; the copy must have the size `size`.
   */
  async importFile(path: string, opts: { size?: number | bigint; digest?: Uint8Array } = {}): Promise<ObjectResult> {
    this.checkOpen();
    this.requireWritable();
    if (opts.digest && opts.size !== undefined && this.files.exists(opts.digest, Number(opts.size))) {
      return { digest: opts.digest, size: Number(opts.size), existed: true };
    }
    let src: number;
    try {
      src = sys.open(Buffer.from(path, "latin1"), sys.O_RDONLY | sys.O_NOFOLLOW | sys.O_NONBLOCK);
    } catch (e) {
      throw e instanceof CfsError ? e : new CfsError(path, describeError(e));
    }
    const w = this.files.newTemp();
    try {
      const st = fstatSync(src);
      if (!st.isFile()) throw new CfsError(path, "not a regular file");
      const size = opts.size === undefined ? st.size : Number(opts.size);
      const copied = copyFileData(src, w.fd, size, path, this.copyMethods);
      if (copied !== size || fstatSync(src).size !== size) {
        throw new CfsError(path, `changed while being imported (${copied} of ${size} bytes)`);
      }
      let digest = opts.digest ?? null;
      if (digest === null && !this.gate.trySeal) {
        digest = size >= SPLIT_MIN ? (await sharedDigestPool().digestFd(w.fd, this.alg, size, path)).digest : digestFdSync(w.fd, size, this.alg);
      }
      const r = this.files.sealAndLink(w, digest, size, (fd) => digestFdSync(fd, size, this.alg));
      return { digest: r.digest, size, existed: !r.created };
    } catch (e) {
      this.files.dropTemp(w);
      throw e;
    } finally {
      closeSync(src);
    }
  }

  /** syncfs(): everything written so far is durable. */
  syncfs(): void {
    sys.syncfs(this.dirfd, this.path);
  }

  // ---- links ----------------------------------------------------------------------------

  /**
   * Make `link` (repository-relative) point at `target` (repository-relative)
   * with a minimal relative link; missing parents are created; an existing
   * link is replaced atomically (no-op when its text is already right).
   */
  symlink(link: string, target: string): void {
    this.requireWritable();
    const text = linkText(link, target);
    const parent = link.split("/").slice(0, -1).join("/");
    if (parent !== "") this.files.mkdirp(parent);
    const abs = `${this.path}/${link}`;
    try {
      symlinkSync(text, abs);
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw sys.fromNodeError(abs, "symlink", e);
    }
    try {
      if (readlinkSync(abs) === text) return;
    } catch {}
    for (let i = 0; i < 16; i++) {
      const tmp = `${this.path}/${parent === "" ? "" : `${parent}/`}${tmpName(TMP_SYMLINK_PREFIX)}`;
      try {
        symlinkSync(text, tmp);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "EEXIST") continue;
        throw sys.fromNodeError(tmp, "symlink", e);
      }
      try {
        renameSync(tmp, abs);
        return;
      } catch (e) {
        try {
          unlinkSync(tmp);
        } catch {}
        throw sys.fromNodeError(abs, "rename", e);
      }
    }
    throw new CfsError(abs, "cannot create a temporary link");
  }

  /** readlink of a repository-relative path, or null when it does not exist. */
  readLink(rel: string): string | null {
    try {
      return readlinkSync(`${this.path}/${rel}`);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "ENOENT" || code === "EINVAL" || code === "ENOTDIR") return null;
      throw sys.fromNodeError(`${this.path}/${rel}`, "readlink", e);
    }
  }

  // ---- streams --------------------------------------------------------------------------

  /**
   * Store a splitstream file under `streams/<contentId>` (and
   * `streams/refs/<ref>` when given). Every object and stream it refers to
   * must already be in the repository; syncfs() runs before the link
   * appears, so a visible stream never lacks its objects after a crash.
   * Returns the stream's object id.
   */
  async writeStream(contentId: string, file: Uint8Array | readonly Uint8Array[], opts: { ref?: string } = {}): Promise<Uint8Array> {
    this.checkOpen();
    this.requireWritable();
    validateContentId(contentId);
    if (opts.ref !== undefined) validateRefName("stream ref", opts.ref);
    const bytes = file instanceof Uint8Array ? file : new Uint8Array(Buffer.concat(file as Uint8Array[]));
    const info = parseSplitStream(bytes, { name: `streams/${contentId}`, algorithm: this.alg });
    for (const id of info.objectRefs) {
      if (!this.hasObject(id)) throw new CfsError(`streams/${contentId}`, `refers to object ${toHex(id)}, which is not in the repository`);
    }
    for (const [name, id] of info.namedRefs) {
      if (!this.hasObject(id)) throw new CfsError(`streams/${contentId}`, `named reference ${name} points at ${toHex(id)}, which is not in the repository`);
    }
    const { digest } = this.ensureObjectSync(bytes);
    this.syncfs();
    this.symlink(`streams/${contentId}`, this.objectRelPath(digest));
    if (opts.ref !== undefined) this.symlink(`streams/refs/${opts.ref}`, `streams/${contentId}`);
    return digest;
  }

  /**
   * The object id of `streams/<contentId>` when the link exists, has the
   * `../` form and its object exists (a cheap stat); otherwise null.
   */
  hasStream(contentId: string): Uint8Array | null {
    validateContentId(contentId);
    const text = this.readLink(`streams/${contentId}`);
    if (text === null || !text.startsWith("../")) return null;
    const id = this.idFromLinkText(text);
    if (id === null || !this.hasObject(id)) return null;
    return id;
  }

  /** Point `streams/refs/<name>` at an existing stream (a GC root). */
  nameStream(contentId: string, name: string): void {
    validateRefName("stream ref", name);
    if (this.hasStream(contentId) === null) throw new CfsError(`streams/${contentId}`, "no such stream");
    this.symlink(`streams/refs/${name}`, `streams/${contentId}`);
  }

  /**
   * Open and parse `streams/<contentId>` (or the stream object `id`). In a
   * secure repository its fs-verity is checked against the id the link names.
   */
  openStream(contentId: string, expectedContentType?: bigint, opts: { id?: Uint8Array } = {}): SplitStreamInfo & { id: Uint8Array } {
    this.checkOpen();
    const id = opts.id ?? this.hasStream(contentId);
    if (id === null) throw new CfsError(`streams/${contentId}`, "no such stream");
    const bytes = this.readObject(id, { verify: this.secure });
    const info = parseSplitStream(bytes, { name: `streams/${contentId}`, algorithm: this.alg, contentType: expectedContentType });
    return { ...info, id };
  }

  /** The stream's reassembled bytes, piece by piece (large objects are read in chunks). */
  catStream(info: SplitStreamInfo, name = "splitstream"): AsyncGenerator<Uint8Array> {
    return reassemble(info, (id) => this.readObjectChunks(id), name);
  }

  /** An object's bytes in 1 MiB pieces (not verified; fsck verifies objects). */
  async *readObjectChunks(id: Uint8Array): AsyncGenerator<Uint8Array> {
    const path = this.objectPath(id);
    let fd: number;
    try {
      fd = sys.open(path, sys.O_RDONLY | sys.O_NOFOLLOW);
    } catch (e) {
      if (sys.isErrno(e, "ENOENT")) throw new CfsError(this.objectRelPath(id), "object missing from the repository");
      throw e;
    }
    try {
      for (;;) {
        const buf = new Uint8Array(1 << 20);
        const n = readSync(fd, buf, 0, buf.byteLength, null);
        if (n === 0) return;
        yield buf.subarray(0, n);
      }
    } finally {
      sys.close(fd);
    }
  }

  /** The object a JSON splitstream (manifest, config, blob) holds: exactly one external chunk. */
  async readJsonStream(info: SplitStreamInfo & { id: Uint8Array }, name: string): Promise<Uint8Array> {
    const id = await externalBlobRef(info, name);
    return this.readObject(id);
  }

  // ---- images ---------------------------------------------------------------------------

  /**
   * Store an EROFS image: object + `images/<hex>` (+ `images/refs/<name>`).
   * The objects it refers to must be durable first: syncfs() runs before the
   * link appears.
   */
  async writeImage(bytes: Uint8Array, name?: string): Promise<Uint8Array> {
    this.checkOpen();
    this.requireWritable();
    if (name !== undefined) validateRefName("image ref", name);
    const { digest } = this.ensureObjectSync(bytes);
    this.syncfs();
    const hex = toHex(digest);
    this.symlink(`images/${hex}`, this.objectRelPath(digest));
    if (name !== undefined) this.symlink(`images/refs/${name}`, `images/${hex}`);
    return digest;
  }

  /**
   * Write one EROFS image of `root` per configured format (default first;
   * only the default gets the `images/refs/<name>` ref). Returns the ids by
   * version and the default one.
   */
  async commitImages(root: Dir, name?: string): Promise<{ default: Uint8Array; byVersion: Map<ErofsVersion, Uint8Array> }> {
    const byVersion = new Map<ErofsVersion, Uint8Array>();
    for (const v of this.versions) {
      const bytes = writeErofs(root, { version: v });
      byVersion.set(v, await this.writeImage(bytes, v === this.formats.default ? name : undefined));
    }
    return { default: byVersion.get(this.formats.default)!, byVersion };
  }

  /**
   * Resolve an image name to its hex id: a full hex digest stays as it is;
   * `refs/<name>` follows `images/refs/<name>` to its `images/<hex>` entry.
   */
  resolveImageName(name: string): string {
    if (name.startsWith("refs/")) {
      const ref = name.slice(5);
      validateRefName("image ref", ref);
      const text = this.readLink(`images/refs/${ref}`);
      if (text === null) throw new CfsError(name, "image not found");
      const hex = text.split("/").pop()!;
      if (this.parseHexDigest(hex) === null) throw new CfsError(`images/${name}`, `link text ${JSON.stringify(text)} does not name an image`);
      return hex;
    }
    if (this.parseHexDigest(name) === null) {
      throw new CfsError(name, `not an image name (expected a ${DIGEST_SIZE[this.alg] * 2}-digit ${this.alg} hex digest or refs/NAME)`);
    }
    return name;
  }

  /**
   * Open `images/<hex>` with its fs-verity digest MEASURED (kernel, or
   * userspace in an insecure repository without fs-verity) and equal to
   * the name; `refs/<name>` is resolved to its digest first and measured
   * the same way. Never falls back from a digest to refs/ (fail closed).
   * Returns an O_RDONLY fd (the caller closes it), the bytes and the id.
   */
  openImageFd(name: string): { fd: number; bytes: Uint8Array; hex: string; kernelVerified: boolean } {
    this.checkOpen();
    const hex = this.resolveImageName(name);
    const path = `${this.path}/images/${hex}`;
    let fd: number;
    try {
      fd = sys.open(path, sys.O_RDONLY);
    } catch (e) {
      if (sys.isErrno(e, "ENOENT")) throw new CfsError(name, "image not found");
      throw e;
    }
    try {
      const kernel = this.gate.measure(fd, path);
      const bytes = readFd(fd, path);
      const got = kernel ?? fsverityDigest(bytes, this.alg);
      if (toHex(got) !== hex) throw new CfsError(`images/${hex}`, `fs-verity content mismatch (measured ${toHex(got)})`);
      return { fd, bytes, hex, kernelVerified: kernel !== null };
    } catch (e) {
      sys.close(fd);
      throw e;
    }
  }

  /** The verified bytes of an image (see openImageFd). */
  openImage(name: string): Uint8Array {
    const r = this.openImageFd(name);
    sys.close(r.fd);
    return r.bytes;
  }

  /** `images/refs/**`: name → image hex id (sorted by name). */
  listImageRefs(): { name: string; digest: string }[] {
    return this.listRefs("images/refs").map(({ name, text }) => ({ name, digest: text.split("/").pop()! }));
  }

  /** Every link below `rel` (recursively): repository-relative name and link text. */
  listRefs(rel: string): { name: string; text: string }[] {
    const out: { name: string; text: string }[] = [];
    const walk = (dir: string, prefix: string) => {
      let ents;
      try {
        ents = readdirSync(`${this.path}/${dir}`, { withFileTypes: true });
      } catch (e) {
        if (isEnoent(e) || (e as NodeJS.ErrnoException).code === "ENOTDIR") return;
        throw sys.fromNodeError(`${this.path}/${dir}`, "readdir", e);
      }
      for (const ent of ents) {
        const name = String(ent.name);
        if (name.startsWith(TMP_SYMLINK_PREFIX)) continue;
        if (ent.isDirectory()) walk(`${dir}/${name}`, `${prefix}${name}/`);
        else if (ent.isSymbolicLink()) {
          const text = this.readLink(`${dir}/${name}`);
          if (text !== null) out.push({ name: `${prefix}${name}`, text });
        }
      }
    };
    walk(rel, "");
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  // ---- tags (repository.md §8.4) -----------------------------------------------------------

  /** `streams/refs/oci/<enc(name)>` → `../../oci-manifest-<digest>`; the manifest stream must exist. */
  tag(name: string, manifestDigest: string): void {
    this.checkOpen();
    validateTagName(name);
    const digest = normalizeManifestDigest(manifestDigest);
    if (this.hasStream(manifestStreamId(digest)) === null) throw new CfsError(digest, "no such manifest in the repository");
    this.symlink(`streams/refs/oci/${encodeTag(name)}`, `streams/${manifestStreamId(digest)}`);
  }

  /** Remove a tag (its image becomes garbage unless something else refers to it). */
  untag(name: string): void {
    this.checkOpen();
    this.requireWritable();
    validateTagName(name);
    const path = `${this.path}/streams/refs/oci/${encodeTag(name)}`;
    try {
      if (!lstatSync(path).isSymbolicLink()) throw new CfsError(name, "not a tag");
      unlinkSync(path);
    } catch (e) {
      if (isEnoent(e)) throw new CfsError(name, "no such tag");
      throw e instanceof CfsError ? e : sys.fromNodeError(path, "unlink", e);
    }
  }

  /** Every tag and the manifest digest it names, sorted by tag. */
  listTags(): { name: string; manifestDigest: string }[] {
    const out: { name: string; manifestDigest: string }[] = [];
    for (const { name, text } of this.listRefs("streams/refs/oci")) {
      const base = text.split("/").pop()!;
      if (!base.startsWith("oci-manifest-")) continue;
      out.push({ name: decodeTag(name), manifestDigest: base.slice("oci-manifest-".length) });
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** The manifest digest a tag names, or null. */
  resolveTag(name: string): string | null {
    validateTagName(name);
    const text = this.readLink(`streams/refs/oci/${encodeTag(name)}`);
    if (text === null) return null;
    const base = text.split("/").pop()!;
    return base.startsWith("oci-manifest-") ? base.slice("oci-manifest-".length) : null;
  }

  /**
   * An OCI image by tag, `@sha256:<hex>` or `sha256:<hex>` (repository.md
   * §8.5): manifest and config bytes (their sha256 checked against the
   * digests) and the config stream's named refs.
   */
  async openOciImage(ref: string): Promise<StoredOciImage> {
    this.checkOpen();
    let tag: string | undefined;
    let digest: string;
    if (ref.startsWith("@") || /^sha256:[0-9a-f]{64}$/.test(ref)) {
      digest = normalizeManifestDigest(ref);
    } else {
      const d = this.resolveTag(ref);
      if (d === null) throw new CfsError(ref, "no such image (not a tag in this repository)");
      tag = ref;
      digest = d;
    }
    const mid = manifestStreamId(digest);
    const minfo = this.openStream(mid, CONTENT_TYPE.ociManifest);
    const manifest = await this.readJsonStream(minfo, `streams/${mid}`);
    if (sha256Digest(manifest) !== digest) throw new CfsError(`streams/${mid}`, `manifest content does not match its digest (sha256 is ${sha256Digest(manifest)})`);
    let configDigest: string | undefined;
    let configStream: Uint8Array | null = null;
    for (const [k, v] of minfo.namedRefs) {
      if (k.startsWith("config:")) {
        configDigest = k.slice(7);
        configStream = v;
      }
    }
    if (configDigest === undefined) throw new CfsError(`streams/${mid}`, "manifest stream has no config:<digest> reference");
    let config: Uint8Array | null = null;
    let configRefs = new Map<string, Uint8Array>();
    const cid = configStreamId(configDigest);
    const cinfo = this.openStream(cid, CONTENT_TYPE.ociConfig, { id: configStream ?? undefined });
    config = await this.readJsonStream(cinfo, `streams/${cid}`);
    if (sha256Digest(config) !== configDigest) throw new CfsError(`streams/${cid}`, `config content does not match its digest (sha256 is ${sha256Digest(config)})`);
    configRefs = cinfo.namedRefs;
    return { tag, manifestDigest: digest, manifestStream: minfo.id, manifest, manifestRefs: minfo.namedRefs, configDigest, configStream, config, configRefs };
  }

  /**
   * The hex id of an OCI image's EROFS in the repository's default format
   * (the boot variant with `bootable`).
   */
  ociImageId(img: StoredOciImage, bootable = false): string {
    const key = imageRefKey(this.formats.default, bootable);
    const id = img.configRefs.get(key);
    if (id === undefined) {
      throw new CfsError(
        img.tag ?? `@${img.manifestDigest}`,
        bootable ? `no boot EROFS image (${key}) linked; pull it with --bootable` : `no composefs EROFS image (${key}) linked; pull the image again`,
      );
    }
    return toHex(id);
  }

  // ---- maintenance ------------------------------------------------------------------------

  /** Garbage collection (repository.md §10); see host/repo-gc.ts. */
  async gc(opts: GcOptions = {}): Promise<GcReport> {
    const { runGc } = await import("./repo-gc.ts");
    return runGc(this, opts);
  }

  /** Integrity check (repository.md §11); see host/repo-fsck.ts. */
  async fsck(opts: { metadataOnly?: boolean } = {}): Promise<FsckReport> {
    const { runFsck } = await import("./repo-fsck.ts");
    return runFsck(this, opts);
  }
}

// ---- helpers ------------------------------------------------------------------------------

/** `sha256:<hex>` of bytes. */
export function sha256Digest(bytes: Uint8Array): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

function isDir(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** Read a whole fd from offset 0. */
export function readFd(fd: number, name: string): Uint8Array {
  const size = fstatSync(fd).size;
  const buf = new Uint8Array(size);
  let off = 0;
  while (off < size) {
    let n: number;
    try {
      n = readSync(fd, buf, off, size - off, off);
    } catch (e) {
      throw sys.fromNodeError(name, "read", e);
    }
    if (n === 0) throw new CfsError(name, "file shrank while it was being read");
    off += n;
  }
  return buf;
}

/** Object name lengths in objects/XX: 62 hex → sha256, 126 → sha512. */
function inferLegacyAlgorithm(path: string): HashAlg | undefined {
  let dirs: string[];
  try {
    dirs = readdirSync(`${path}/objects`).filter((d) => /^[0-9a-f]{2}$/.test(d));
  } catch {
    return undefined;
  }
  for (const d of dirs) {
    for (const f of readdirSync(`${path}/objects/${d}`)) {
      if (f.length === 62) return "sha256";
      if (f.length === 126) return "sha512";
    }
  }
  return undefined;
}

/**
 * The meta.json `init --erofs=<choice>` asks for, given the existing one:
 * v1 on a V1-only repository, dual on one that has both = unchanged;
 * V1-only or V2-only → dual adds the other format and keeps the default
 * (so no deployment's digest changes); dual → v1 and V2-only → v1 are refused.
 */
function initTargetMeta(cur: RepoMeta, choice: "v1" | "dual", path: string): RepoMeta {
  const f = effectiveFormats(cur);
  const versions = new Set([f.default, ...f.extra]);
  const hasBoth = versions.has(2) && (versions.has(1) || versions.has(0));
  if (choice === "v1") {
    if (f.default === 1 && f.extra.length === 0) return cur;
    if (hasBoth) throw new CfsError(path, "repository generates V1 and V2 EROFS images; refusing to drop V2 (sealed UKIs may depend on the V2 images)");
    throw new CfsError(path, `repository already initialized with different configuration (EROFS default V${f.default}); cannot re-initialize with V1 only`);
  }
  if (hasBoth) return cur;
  if (f.default === 0) throw new CfsError(path, "repository generates V0 EROFS images; cannot turn it into a V1+V2 repository");
  const extra: ErofsVersion = f.default === 1 ? 2 : 1;
  const next = newRepoMeta(cur.algorithm, { default: f.default, extra: [extra] });
  // Keep any features the existing file carries (e.g. unknown compatible ones).
  for (const k of ["compatible", "readOnlyCompatible", "incompatible"] as const) {
    for (const x of cur.features[k]) if (!next.features[k].includes(x)) next.features[k].push(x);
  }
  return next;
}

/**
 * Write a new meta.json (repository.md §3.5): O_TMPFILE, write, fsync,
 * reopen read-only, fs-verity (unless insecure), linkat. Where O_TMPFILE is
 * missing: O_CREAT|O_EXCL. `verity`: try to enable fs-verity; returns
 * whether meta.json got it (false when the filesystem lacks it, unless
 * `requireVerity`, which makes that an error).
 */
function writeMetaNew(dirfd: number, path: string, meta: RepoMeta, opts: { verity: boolean; requireVerity: boolean }): { verity: boolean } {
  const data = formatRepoMeta(meta);
  const metaPath = `${path}/${REPO_META_FILENAME}`;
  let fd: number;
  let named = false;
  try {
    fd = sys.openTmpfile(path, 0o644);
  } catch (e) {
    if (!sys.isErrno(e, "EOPNOTSUPP", "EISDIR", "ENOSYS")) throw e;
    fd = sys.openat(dirfd, REPO_META_FILENAME, sys.O_WRONLY | sys.O_CREAT | sys.O_EXCL, 0o644);
    named = true;
  }
  let ro = -1;
  try {
    writeAllFd(fd, data, metaPath);
    sys.fsync(fd, metaPath);
    ro = named ? sys.openat(dirfd, REPO_META_FILENAME, sys.O_RDONLY) : sys.open(`/proc/self/fd/${fd}`, sys.O_RDONLY);
    sys.close(fd);
    fd = -1;
    const verity = opts.verity && enableMetaVerity(ro, meta.algorithm, metaPath, opts.requireVerity);
    if (!named) sys.linkat(sys.AT_FDCWD, `/proc/self/fd/${ro}`, dirfd, REPO_META_FILENAME, sys.AT_SYMLINK_FOLLOW);
    sys.fsyncPath(path);
    return { verity };
  } catch (e) {
    if (named) {
      try {
        unlinkSync(metaPath);
      } catch {}
    }
    throw e;
  } finally {
    if (fd >= 0) sys.close(fd);
    if (ro >= 0) sys.close(ro);
  }
}

/** fs-verity on meta.json; false when the filesystem lacks it (an error with requireVerity). */
function enableMetaVerity(ro: number, alg: HashAlg, metaPath: string, requireVerity: boolean): boolean {
  const gate = new VerityGate(alg, false);
  if (gate.seal(ro, metaPath) !== null) return true;
  if (requireVerity) {
    throw new CfsError(metaPath, "the filesystem does not support fs-verity (--require-verity); use a verity-capable filesystem (e.g. ext4 with -O verity) or --insecure");
  }
  return false;
}

/**
 * Replace meta.json atomically (the repository is locked exclusively):
 * O_TMPFILE with the new content and the old file's fs-verity state,
 * linked under a temporary name and renamed over meta.json.
 */
function writeMetaReplacing(dirfd: number, path: string, meta: RepoMeta, verity: boolean): void {
  const data = formatRepoMeta(meta);
  const metaPath = `${path}/${REPO_META_FILENAME}`;
  const tmp = tmpName(`.${REPO_META_FILENAME}.tmp-`);
  let fd = sys.openTmpfile(path, 0o644);
  let ro = -1;
  let linked = false;
  try {
    writeAllFd(fd, data, metaPath);
    sys.fsync(fd, metaPath);
    ro = sys.open(`/proc/self/fd/${fd}`, sys.O_RDONLY);
    sys.close(fd);
    fd = -1;
    if (verity) enableMetaVerity(ro, meta.algorithm, metaPath, true);
    sys.linkat(sys.AT_FDCWD, `/proc/self/fd/${ro}`, dirfd, tmp, sys.AT_SYMLINK_FOLLOW);
    linked = true;
    renameSync(`${path}/${tmp}`, metaPath);
    linked = false;
    sys.fsyncPath(path);
  } finally {
    if (fd >= 0) sys.close(fd);
    if (ro >= 0) sys.close(ro);
    if (linked) {
      try {
        unlinkSync(`${path}/${tmp}`);
      } catch {}
    }
  }
}
