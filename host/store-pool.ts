// Storing file contents as repository objects in worker threads
// (host/store-worker.ts), so that a pull decompresses and parses a layer on
// the main thread while another core hashes and writes its files.
//
//   const pool = new StorePool(repo);
//   const f = pool.begin(size);          // a file of `size` bytes > 0
//   pool.write(f, bytes); …              // its bytes in order (copied; views may be reused)
//   pool.flush();                        // send what is buffered (before awaiting a result)
//   await pool.ready();                  // back-pressure: few enough buffers in flight
//   const r = await f.result;            // {digest, size, existed}
//   await pool.close();
//
// Bytes are copied into 1 MiB batch buffers (many small files per message, a
// large file as a run of pieces to the same worker); buffers are
// transferred, not copied, and come back with the reply for reuse, so memory
// stays at (buffers in flight) × 1 MiB whatever the layer size. A file's
// digest is computed once, in the worker, from the bytes it writes (the
// fs-verity digest and the write share one pass); a file whose object exists
// is not written (for files that fit one batch buffer).

import { availableParallelism } from "node:os";

import { CfsError } from "../shared/errors.ts";
import type { HashAlg } from "../shared/fsverity.ts";
import { ObjectFiles, type ObjectResult } from "./objects.ts";
import { ObjectSink, type StoreItem, type StoreResult } from "./store-sink.ts";
import type { StoreReply, StoreRequest } from "./store-worker.ts";

/** Bytes per batch buffer. */
const BUFFER_SIZE = 1 << 20;
/** Batch buffers in flight per worker before ready() waits. */
const IN_FLIGHT = 6;

export interface StoreTarget {
  path: string;
  alg: HashAlg;
  secure: boolean;
  files: { namedTemporaries: boolean };
}

export interface StoreFile {
  readonly result: Promise<ObjectResult>;
}

interface FileState extends StoreFile {
  id: number;
  size: number;
  written: number;
  /** The worker it goes to (null: stored on this thread). */
  slot: Slot | null;
  resolve: (r: ObjectResult) => void;
  reject: (e: unknown) => void;
}

interface Slot {
  worker: Worker;
  buf: ArrayBuffer | null;
  used: number;
  items: StoreItem[];
  /** Batches sent and not answered. */
  inflight: number;
  /** Bytes of files assigned and not finished (for choosing a worker). */
  pendingBytes: number;
}

function workerUrl(): URL {
  return new URL("./store-worker.ts", import.meta.url);
}

/** Store workers on this machine: one per core beside the main thread, at least one, at most 4. */
export function defaultStoreWorkers(): number {
  const env = Number(process.env.CFSBOOT_STORE_WORKERS);
  if (Number.isInteger(env) && env > 0) return Math.min(env, 8);
  return Math.max(1, Math.min(4, availableParallelism() - 1));
}

/** With `workers: 0` (small pulls: no worker to start) everything happens in write(), on this thread. */
export class StorePool {
  private readonly target: StoreTarget;
  private readonly nworkers: number;
  /** workers: 0 — objects are stored on this thread, as the bytes arrive. */
  private readonly local: ObjectSink | null;
  private slots: Slot[] = [];
  private readonly files = new Map<number, FileState>();
  private readonly free: ArrayBuffer[] = [];
  private nextFile = 1;
  private nextBatch = 1;
  private waiters: (() => void)[] = [];
  private broken: Error | null = null;
  private closed = false;

  constructor(target: StoreTarget, opts: { workers?: number } = {}) {
    this.target = target;
    this.nworkers = opts.workers === 0 ? 0 : Math.max(1, opts.workers ?? defaultStoreWorkers());
    this.local =
      this.nworkers === 0
        ? new ObjectSink(new ObjectFiles({ path: target.path, alg: target.alg, secure: target.secure, namedTemporaries: target.files.namedTemporaries }))
        : null;
  }

  private start(): void {
    if (this.slots.length > 0 || this.local !== null) return;
    for (let i = 0; i < this.nworkers; i++) {
      const worker = new Worker(workerUrl());
      const slot: Slot = { worker, buf: null, used: 0, items: [], inflight: 0, pendingBytes: 0 };
      worker.onmessage = (ev: MessageEvent<StoreReply>) => this.onReply(slot, ev.data);
      worker.onerror = (ev: ErrorEvent) => this.fail(new Error(`object store worker failed: ${ev.message}`));
      worker.unref();
      const init: StoreRequest = { t: "init", path: this.target.path, alg: this.target.alg, secure: this.target.secure, namedTemporaries: this.target.files.namedTemporaries };
      worker.postMessage(init);
      this.slots.push(slot);
    }
  }

  /** Start a file of `size` bytes (> 0); write exactly that many bytes. */
  begin(size: number): StoreFile {
    if (this.closed) throw new Error("StorePool is closed");
    if (this.broken) throw this.broken;
    if (!(size > 0)) throw new RangeError("StorePool.begin: size must be > 0");
    this.start();
    let slot = this.slots[0] ?? null;
    for (const s of this.slots) if (s.pendingBytes < slot!.pendingBytes) slot = s;
    if (slot !== null) slot.pendingBytes += size;
    let resolve!: (r: ObjectResult) => void;
    let reject!: (e: unknown) => void;
    const result = new Promise<ObjectResult>((a, b) => {
      resolve = a;
      reject = b;
    });
    result.catch(() => {}); // the caller awaits it (or gives up on a failure elsewhere)
    const f: FileState = { id: this.nextFile++, size, written: 0, slot, result, resolve, reject };
    this.files.set(f.id, f);
    return f;
  }

  /** Append bytes to a file (copied now). */
  write(file: StoreFile, bytes: Uint8Array): void {
    const f = file as FileState;
    if (this.broken) throw this.broken;
    if (f.written + bytes.byteLength > f.size) throw new Error(`StorePool.write: more than ${f.size} bytes`);
    if (this.local !== null) {
      const first = f.written === 0;
      f.written += bytes.byteLength;
      const r = this.local.piece({ file: f.id, size: f.size, first, last: f.written === f.size }, bytes);
      if (r !== null) this.settle(r);
      return;
    }
    const s = f.slot!;
    let off = 0;
    while (off < bytes.byteLength) {
      if (s.buf === null) {
        s.buf = this.free.pop() ?? new ArrayBuffer(BUFFER_SIZE);
        s.used = 0;
      }
      const n = Math.min(bytes.byteLength - off, BUFFER_SIZE - s.used);
      new Uint8Array(s.buf, s.used, n).set(bytes.subarray(off, off + n));
      const first = f.written === 0;
      f.written += n;
      s.items.push({ file: f.id, off: s.used, len: n, size: f.size, first, last: f.written === f.size });
      s.used += n;
      off += n;
      if (s.used === BUFFER_SIZE) this.send(s);
    }
  }

  private send(s: Slot): void {
    if (s.buf === null || s.items.length === 0) return;
    const req: StoreRequest = { t: "batch", id: this.nextBatch++, buf: s.buf, items: s.items };
    if (s.inflight++ === 0) s.worker.ref();
    s.worker.postMessage(req, [s.buf]);
    s.buf = null;
    s.used = 0;
    s.items = [];
  }

  /** Send every partly filled buffer (call before awaiting a file's result). */
  flush(): void {
    for (const s of this.slots) this.send(s);
  }

  /** Resolves once every worker has few enough batches in flight. */
  async ready(): Promise<void> {
    while (!this.broken && this.slots.some((s) => s.inflight >= IN_FLIGHT)) {
      await new Promise<void>((r) => this.waiters.push(r));
    }
    if (this.broken) throw this.broken;
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const r of w) r();
  }

  private onReply(s: Slot, m: StoreReply): void {
    if (m.t !== "done") return;
    if (--s.inflight === 0) s.worker.unref();
    if (this.free.length < this.slots.length * (IN_FLIGHT + 2)) this.free.push(m.buf);
    for (const r of m.results) this.settle(r);
    this.wake();
  }

  private settle(r: StoreResult): void {
    const f = this.files.get(r.file);
    if (f === undefined) return;
    this.files.delete(r.file);
    if (f.slot !== null) f.slot.pendingBytes -= f.size;
    if ("error" in r) {
      const e = r.error;
      f.reject("input" in e ? new CfsError(e.input, e.what) : new Error(e.message));
    } else {
      f.resolve({ digest: r.digest, size: f.size, existed: r.existed });
    }
  }

  private fail(e: Error): void {
    if (this.broken) return;
    this.broken = e;
    for (const f of this.files.values()) f.reject(e);
    this.files.clear();
    this.wake();
  }

  /**
   * Stop the workers. Files not finished are given up: their temporaries
   * are dropped (O_TMPFILEs vanish anyway; named ones are unlinked) before
   * the workers go.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const slots = this.slots;
    this.slots = [];
    const unfinished = this.files.size > 0;
    if (unfinished) this.fail(new Error("StorePool closed"));
    this.local?.abort();
    await Promise.all(
      slots.map(async (s) => {
        if (unfinished && !this.brokenByWorker()) {
          s.worker.ref();
          await new Promise<void>((resolve) => {
            const prev = s.worker.onmessage;
            s.worker.onmessage = (ev: MessageEvent<StoreReply>) => {
              if (ev.data.t === "aborted") resolve();
              else prev?.call(s.worker, ev);
            };
            s.worker.postMessage({ t: "abort" } satisfies StoreRequest);
          });
        }
        await s.worker.terminate();
      }),
    );
  }

  private brokenByWorker(): boolean {
    return this.broken !== null && this.broken.message.startsWith("object store worker failed");
  }
}
