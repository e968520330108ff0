// fs-verity digests of files on disk.
//
// - `digestFileSync(path, alg)`: in the calling thread, constant memory.
// - `digestFile(path, alg)`: the same, but a large file is hashed by all
//   cores: workers hash disjoint block-aligned ranges with positioned reads
//   and this thread combines their leaf hashes in file order.
// - `DigestPool`: a reusable set of worker threads for digesting MANY files
//   (directory scans, repository imports). Files are opened when a worker is
//   free, so thousands of queued files do not hold thousands of fds; small
//   files are hashed inline (a round trip to a worker costs more than the
//   hashing), medium ones by one worker, large ones by all of them.
//
// The workers share this process's fd table: the main thread opens and
// fstat()s a file, workers pread() it by fd number, the main thread closes it
// once every read of it has returned. The size hashed is the fstat size (as
// `fsverity digest` does); a file that shrinks meanwhile is an error.
//
// Thresholds were measured on the 2-core development machine; see the README
// section "fs-verity".

import { closeSync, fstatSync, openSync, readSync, constants as C } from "node:fs";
import { availableParallelism } from "node:os";
import { CfsError } from "../shared/errors.ts";
import { BLOCK_SIZE, FsVerityHasher, MerkleBuilder, isHashAlg, type HashAlg } from "../shared/fsverity.ts";

export interface FileDigest {
  digest: Uint8Array;
  /** The number of bytes hashed (the file's size when it was opened). */
  size: bigint;
}

// --- protocol with host/digest-worker.ts -----------------------------------

export type WorkerRequest =
  | { t: "whole"; id: number; fd: number; size: number; alg: HashAlg }
  | { t: "leaves"; id: number; fd: number; offset: number; length: number; alg: HashAlg };

export type WorkerReply =
  | { id: number; digest: Uint8Array }
  | { id: number; leaves: Uint8Array }
  | { id: number; error: { code: string; message: string } };

// --- tuning (see README "fs-verity") ---------------------------------------

/** Files up to this size are hashed in the main thread by DigestPool. */
export const INLINE_MAX = 64 * 1024;
/** Files from this size on are split across all workers. */
export const SPLIT_MIN = 8 * 1024 * 1024;
/** Bytes per range request for a split file (a multiple of the block size). */
export const CHUNK = 4 * 1024 * 1024;
/** Requests queued per worker, so a worker never waits for the next one. */
const DEPTH = 2;
/** Unconsumed chunk results a split file may have outstanding (bounds memory). */
const WINDOW_PER_WORKER = 4;

// --- errors ----------------------------------------------------------------

const ERRNO_WHAT: Record<string, string> = {
  ENOENT: "no such file or directory",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  EISDIR: "is a directory",
  ENOTDIR: "not a directory",
  ELOOP: "too many levels of symbolic links",
  ENAMETOOLONG: "file name too long",
  EIO: "input/output error",
  EMFILE: "too many open files",
  ENFILE: "too many open files in system",
  ENXIO: "no such device or address",
  ESHRANK: "file shrank while it was being read",
  EBADF: "bad file descriptor",
};

/** A filesystem error as `CfsError(path, "<what>")`. */
export function fsError(path: string, e: unknown): CfsError {
  if (e instanceof CfsError) return e;
  const err = e as NodeJS.ErrnoException;
  const code = typeof err?.code === "string" ? err.code : "";
  const what = ERRNO_WHAT[code] ?? (code ? `${code.toLowerCase()}: ${String(err.message ?? "").split("\n")[0]}` : String(err?.message ?? e));
  return new CfsError(path, what, { cause: e });
}

function checkAlg(alg: HashAlg): void {
  if (!isHashAlg(alg)) throw new CfsError(String(alg), "unknown hash algorithm (expected sha256 or sha512)");
}

// --- single-thread digest ----------------------------------------------------

interface Opened {
  fd: number;
  size: number;
}

/**
 * Opens a regular file for reading. O_NONBLOCK keeps a FIFO from blocking the
 * open; anything that is not a regular file is refused.
 */
export function openRegular(path: string): Opened {
  let fd: number;
  try {
    fd = openSync(path, C.O_RDONLY | C.O_NONBLOCK);
  } catch (e) {
    throw fsError(path, e);
  }
  try {
    const st = fstatSync(fd);
    if (st.isDirectory()) throw new CfsError(path, "is a directory");
    if (!st.isFile()) throw new CfsError(path, "not a regular file");
    if (st.size > Number.MAX_SAFE_INTEGER) throw new CfsError(path, "file too large");
    return { fd, size: st.size };
  } catch (e) {
    closeSync(fd);
    throw fsError(path, e);
  }
}

let readBuf: Uint8Array | undefined;

/** Digest of the first `size` bytes of an open file, read with pread from offset 0. */
export function digestFdSync(fd: number, size: number, alg: HashAlg): Uint8Array {
  checkAlg(alg);
  const buf = (readBuf ??= new Uint8Array(1 << 20));
  const h = new FsVerityHasher(alg);
  let off = 0;
  while (off < size) {
    const want = Math.min(buf.byteLength, size - off);
    let got = 0;
    while (got < want) {
      const n = readSync(fd, buf, got, want - got, off + got);
      if (n === 0) {
        const e = new Error("short read") as NodeJS.ErrnoException;
        e.code = "ESHRANK";
        throw e;
      }
      got += n;
    }
    h.update(buf.subarray(0, want));
    off += want;
  }
  return h.digest();
}

/** Digest of a file, computed in the calling thread. */
export function digestFileSync(path: string, alg: HashAlg): FileDigest {
  checkAlg(alg);
  const { fd, size } = openRegular(path);
  try {
    return { digest: digestFdSync(fd, size, alg), size: BigInt(size) };
  } catch (e) {
    throw fsError(path, e);
  } finally {
    closeSync(fd);
  }
}

// --- the pool ---------------------------------------------------------------

interface Job {
  /** The next request to send, or undefined if none now (window full, or all sent). */
  take(id: number): WorkerRequest | undefined;
  /** True when the job will never send another request. */
  exhausted(): boolean;
  onReply(reply: WorkerReply): void;
  /** The pool failed or closed: settle with `e` once nothing is in flight. */
  abort(e: unknown): void;
}

interface Slot {
  worker: Worker;
  inflight: number;
}

export interface DigestPoolOptions {
  /** Worker threads (default: the number of CPUs, at most 8). */
  workers?: number;
  /** Files up to this many bytes are hashed in the main thread (default INLINE_MAX). */
  inlineMax?: number;
  /** Files from this many bytes are split across workers (default SPLIT_MIN). */
  splitMin?: number;
  /** Bytes per range request of a split file, a multiple of 4096 (default CHUNK). */
  chunkSize?: number;
}

function workerUrl(): URL {
  return new URL("./digest-worker.ts", import.meta.url);
}

/**
 * Worker threads that digest files. Call `close()` when done; idle workers do
 * not keep the process alive.
 */
export class DigestPool {
  readonly size: number;
  private readonly inlineMax: number;
  private readonly splitMin: number;
  private readonly chunkSize: number;
  private slots: Slot[] = [];
  private readonly jobs: Job[] = [];
  private readonly waiting = new Map<number, { job: Job; slot: Slot }>();
  private nextId = 1;
  private closed = false;
  private broken: Error | undefined;

  constructor(opts: DigestPoolOptions = {}) {
    this.size = Math.max(1, Math.min(8, opts.workers ?? availableParallelism()));
    this.inlineMax = opts.inlineMax ?? INLINE_MAX;
    this.splitMin = opts.splitMin ?? SPLIT_MIN;
    this.chunkSize = opts.chunkSize ?? CHUNK;
    if (this.chunkSize <= 0 || this.chunkSize % BLOCK_SIZE !== 0) throw new RangeError("DigestPool: chunkSize must be a positive multiple of 4096");
  }

  /** Workers are started on first use. */
  private ensureWorkers(): void {
    if (this.slots.length > 0) return;
    for (let i = 0; i < this.size; i++) {
      const worker = new Worker(workerUrl());
      const slot: Slot = { worker, inflight: 0 };
      worker.onmessage = (ev: MessageEvent<WorkerReply>) => this.onReply(slot, ev.data);
      worker.onerror = (ev: ErrorEvent) => this.fail(new Error(`digest worker failed: ${ev.message}`));
      worker.unref();
      this.slots.push(slot);
    }
  }

  /** fs-verity digest of the file at `path`. */
  digestFile(path: string, alg: HashAlg): Promise<FileDigest> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new Error("DigestPool is closed"));
      try {
        checkAlg(alg);
      } catch (e) {
        return reject(e);
      }
      this.jobs.push(new PathJob(this, path, alg, resolve, reject));
      this.pump();
    });
  }

  /**
   * fs-verity digest of the first `size` bytes of an open file (default: its
   * fstat size). The caller keeps `fd` open until the promise settles.
   */
  digestFd(fd: number, alg: HashAlg, size?: number, name = `fd ${fd}`): Promise<FileDigest> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new Error("DigestPool is closed"));
      try {
        checkAlg(alg);
        const n = size ?? fstatSync(fd).size;
        this.jobs.push(this.jobFor(fd, n, alg, name, false, resolve, reject));
      } catch (e) {
        return reject(fsError(name, e));
      }
      this.pump();
    });
  }

  /** Internal: the job for an open file, by size. Inline files finish right here. */
  jobFor(
    fd: number,
    size: number,
    alg: HashAlg,
    name: string,
    ownsFd: boolean,
    resolve: (d: FileDigest) => void,
    reject: (e: unknown) => void,
  ): Job {
    const done = (d: FileDigest | undefined, e?: unknown) => {
      if (ownsFd) closeSync(fd);
      if (d) resolve(d);
      else reject(fsError(name, e));
    };
    if (size <= this.inlineMax) {
      let d: FileDigest | undefined;
      let err: unknown;
      try {
        d = { digest: digestFdSync(fd, size, alg), size: BigInt(size) };
      } catch (e) {
        err = e;
      }
      done(d, err);
      return DONE_JOB;
    }
    if (size < this.splitMin || this.size === 1) return new WholeJob(fd, size, alg, done);
    return new SplitJob(fd, size, alg, this.chunkSize, this.size * WINDOW_PER_WORKER, done);
  }

  /** Sends requests while a worker has room. */
  pump(): void {
    if (this.broken) {
      for (const j of this.jobs.splice(0)) j.abort(this.broken);
      return;
    }
    for (;;) {
      // Drop exhausted jobs at the front, then find a job with a request.
      while (this.jobs.length > 0 && this.jobs[0]!.exhausted()) this.jobs.shift();
      if (this.jobs.length === 0) return;
      this.ensureWorkers();
      let slot: Slot | undefined;
      for (const s of this.slots) if (s.inflight < DEPTH && (!slot || s.inflight < slot.inflight)) slot = s;
      if (!slot) return;
      let req: WorkerRequest | undefined;
      let job: Job | undefined;
      for (let i = 0; i < this.jobs.length && !req; i++) {
        job = this.jobs[i]!;
        req = job.take(this.nextId);
        if (!req && job.exhausted()) {
          this.jobs.splice(i, 1);
          i--;
        }
      }
      if (!req || !job) return;
      this.nextId++;
      if (slot.inflight++ === 0) slot.worker.ref();
      this.waiting.set(req.id, { job, slot });
      slot.worker.postMessage(req);
    }
  }

  private onReply(slot: Slot, reply: WorkerReply): void {
    const w = this.waiting.get(reply.id);
    if (!w) return;
    this.waiting.delete(reply.id);
    if (--slot.inflight === 0) slot.worker.unref();
    w.job.onReply(reply);
    this.pump();
  }

  private fail(e: Error): void {
    this.broken = e;
    for (const [id, w] of this.waiting) {
      w.job.onReply({ id, error: { code: "", message: e.message } });
    }
    this.waiting.clear();
    for (const s of this.slots) {
      s.inflight = 0;
      s.worker.terminate();
    }
    this.slots = [];
    this.pump();
  }

  /** Stops the workers; pending digests are rejected. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.waiting.size > 0 || this.jobs.length > 0) this.fail(new Error("DigestPool closed"));
    const slots = this.slots;
    this.slots = [];
    await Promise.all(slots.map((s) => s.worker.terminate()));
  }
}

const DONE_JOB: Job = { take: () => undefined, exhausted: () => true, onReply: () => {}, abort: () => {} };

/** A file by path: opened when it reaches a free worker. */
class PathJob implements Job {
  private inner: Job | undefined;
  constructor(
    private readonly pool: DigestPool,
    private readonly path: string,
    private readonly alg: HashAlg,
    private readonly resolve: (d: FileDigest) => void,
    private readonly reject: (e: unknown) => void,
  ) {}
  take(id: number): WorkerRequest | undefined {
    if (!this.inner) {
      let o: Opened;
      try {
        o = openRegular(this.path);
      } catch (e) {
        this.inner = DONE_JOB;
        this.reject(e);
        return undefined;
      }
      this.inner = this.pool.jobFor(o.fd, o.size, this.alg, this.path, true, this.resolve, this.reject);
    }
    return this.inner.take(id);
  }
  exhausted(): boolean {
    return this.inner !== undefined && this.inner.exhausted();
  }
  onReply(reply: WorkerReply): void {
    this.inner?.onReply(reply);
  }
  abort(e: unknown): void {
    if (this.inner) this.inner.abort(e);
    else {
      this.inner = DONE_JOB;
      this.reject(e);
    }
  }
}

function replyError(reply: WorkerReply): unknown {
  if (!("error" in reply)) return new Error("unexpected reply from digest worker");
  const e = new Error(reply.error.message) as NodeJS.ErrnoException;
  if (reply.error.code) e.code = reply.error.code;
  return e;
}

/** A medium file: one request to one worker. */
class WholeJob implements Job {
  private sent = false;
  constructor(
    private readonly fd: number,
    private readonly size: number,
    private readonly alg: HashAlg,
    private readonly done: (d: FileDigest | undefined, e?: unknown) => void,
  ) {}
  take(id: number): WorkerRequest | undefined {
    if (this.sent) return undefined;
    this.sent = true;
    return { t: "whole", id, fd: this.fd, size: this.size, alg: this.alg };
  }
  exhausted(): boolean {
    return this.sent;
  }
  onReply(reply: WorkerReply): void {
    if ("digest" in reply) this.done({ digest: reply.digest, size: BigInt(this.size) });
    else this.done(undefined, replyError(reply));
  }
  abort(e: unknown): void {
    if (!this.sent) {
      this.sent = true;
      this.done(undefined, e);
    }
  }
}

/** A large file: CHUNK-sized ranges to every worker, leaf hashes combined in order. */
class SplitJob implements Job {
  private readonly builder: MerkleBuilder;
  private readonly chunks: number;
  private issued = 0;
  private fed = 0;
  private inflight = 0;
  private readonly ready = new Map<number, Uint8Array>();
  private readonly chunkOf = new Map<number, number>();
  private error: unknown;
  private settled = false;

  constructor(
    private readonly fd: number,
    private readonly size: number,
    private readonly alg: HashAlg,
    private readonly chunk: number,
    private readonly window: number,
    private readonly done: (d: FileDigest | undefined, e?: unknown) => void,
  ) {
    this.builder = new MerkleBuilder(alg);
    this.chunks = Math.ceil(size / chunk);
  }

  take(id: number): WorkerRequest | undefined {
    if (this.error !== undefined || this.issued >= this.chunks) return undefined;
    if (this.issued - this.fed >= this.window) return undefined;
    const c = this.issued++;
    this.inflight++;
    this.chunkOf.set(id, c);
    const offset = c * this.chunk;
    return { t: "leaves", id, fd: this.fd, offset, length: Math.min(this.chunk, this.size - offset), alg: this.alg };
  }

  exhausted(): boolean {
    return this.error !== undefined || this.issued >= this.chunks;
  }

  onReply(reply: WorkerReply): void {
    this.inflight--;
    const c = this.chunkOf.get(reply.id);
    this.chunkOf.delete(reply.id);
    if ("leaves" in reply && c !== undefined) {
      if (this.error === undefined) {
        this.ready.set(c, reply.leaves);
        for (let r = this.ready.get(this.fed); r; r = this.ready.get(this.fed)) {
          this.ready.delete(this.fed++);
          this.builder.addLeafHashes(r);
        }
      }
    } else if (this.error === undefined) {
      this.error = replyError(reply);
    }
    this.settle();
  }

  abort(e: unknown): void {
    if (this.error === undefined) this.error = e;
    this.settle();
  }

  private settle(): void {
    if (this.settled || this.inflight > 0) return;
    if (this.error !== undefined) {
      this.settled = true;
      this.done(undefined, this.error);
    } else if (this.fed === this.chunks) {
      this.settled = true;
      this.done({ digest: this.builder.finish(this.size), size: BigInt(this.size) });
    }
  }
}

// --- convenience --------------------------------------------------------------

let defaultPool: DigestPool | undefined;

/** A process-wide pool (idle workers do not keep the process alive). */
export function sharedDigestPool(): DigestPool {
  return (defaultPool ??= new DigestPool());
}

/** Files below this size are digested without starting workers. */
export const PARALLEL_MIN = SPLIT_MIN;

/**
 * Digest of one file; a large file is hashed by all cores (through the
 * shared pool, or `pool` if given).
 */
export async function digestFile(path: string, alg: HashAlg, pool?: DigestPool): Promise<FileDigest> {
  checkAlg(alg);
  if (!pool) {
    const { fd, size } = openRegular(path);
    if (size < PARALLEL_MIN || availableParallelism() < 2) {
      try {
        return { digest: digestFdSync(fd, size, alg), size: BigInt(size) };
      } catch (e) {
        throw fsError(path, e);
      } finally {
        closeSync(fd);
      }
    }
    try {
      return await sharedDigestPool().digestFd(fd, alg, size, path);
    } finally {
      closeSync(fd);
    }
  }
  return pool.digestFile(path, alg);
}

export { BLOCK_SIZE };
