// Pieces of files in, repository objects out (host/objects.ts rules): what
// a store worker (host/store-worker.ts) does with each batch, and what
// host/store-pool.ts does on the calling thread for small pulls (where
// starting a worker would cost more than it saves).
//
// A file in one piece is hashed first and written only when its object is
// absent; a file in several pieces streams to its temporary, hashed as it
// is written (one pass over the bytes), and is dropped if the object turns
// out to exist. A failure is reported once per file; its later pieces are
// ignored.

import { CfsError } from "../shared/errors.ts";
import { FsVerityHasher } from "../shared/fsverity.ts";
import { type ObjectFiles, type TempObject, writeAllFd } from "./objects.ts";

export interface StoreItem {
  file: number;
  /** Offset and length of the piece in the batch buffer (worker batches). */
  off: number;
  len: number;
  /** The file's total size. */
  size: number;
  first: boolean;
  last: boolean;
}

export type StoreError = { input: string; what: string } | { message: string };

export type StoreResult = { file: number; digest: Uint8Array; existed: boolean } | { file: number; error: StoreError };

function storeError(e: unknown): StoreError {
  if (e instanceof CfsError) return { input: e.input, what: e.what };
  return { message: e instanceof Error ? e.message : String(e) };
}

export class ObjectSink {
  /** Files being streamed in several pieces. */
  private readonly open = new Map<number, { w: TempObject; hasher: FsVerityHasher; got: number }>();
  /** Files that failed mid-stream: their later pieces are ignored. */
  private readonly failed = new Set<number>();

  constructor(readonly files: ObjectFiles) {}

  /** One piece of a file; the file's result once its last piece is in (else null). Never throws. */
  piece(it: Omit<StoreItem, "off" | "len">, bytes: Uint8Array): StoreResult | null {
    if (this.failed.has(it.file)) {
      if (it.last) this.failed.delete(it.file);
      return null;
    }
    try {
      return this.store(it, bytes);
    } catch (e) {
      const o = this.open.get(it.file);
      if (o !== undefined) {
        this.files.dropTemp(o.w);
        this.open.delete(it.file);
      }
      if (!it.last) this.failed.add(it.file);
      return { file: it.file, error: storeError(e) };
    }
  }

  private store(it: Omit<StoreItem, "off" | "len">, bytes: Uint8Array): StoreResult | null {
    const fs = this.files;
    if (it.first && it.last) {
      const r = fs.storeBytes(bytes);
      return { file: it.file, digest: r.digest, existed: r.existed };
    }
    let o = this.open.get(it.file);
    if (it.first) {
      o = { w: fs.newTemp(), hasher: new FsVerityHasher(fs.alg), got: 0 };
      this.open.set(it.file, o);
    }
    if (o === undefined) throw new Error(`object sink: piece of unknown file ${it.file}`);
    writeAllFd(o.w.fd, bytes, fs.tempLabel(o.w));
    o.hasher.update(bytes);
    o.got += bytes.byteLength;
    if (!it.last) return null;
    this.open.delete(it.file);
    try {
      if (o.got !== it.size) throw new Error(`object sink: file ${it.file} got ${o.got} of ${it.size} bytes`);
      const digest = o.hasher.digest();
      if (fs.exists(digest, it.size)) {
        fs.dropTemp(o.w);
        return { file: it.file, digest, existed: true };
      }
      const r = fs.sealAndLink(o.w, digest, it.size);
      return { file: it.file, digest: r.digest, existed: !r.created };
    } catch (e) {
      fs.dropTemp(o.w);
      throw e;
    }
  }

  /** Drop every temporary of an unfinished file. */
  abort(): void {
    for (const o of this.open.values()) this.files.dropTemp(o.w);
    this.open.clear();
    this.failed.clear();
  }
}
