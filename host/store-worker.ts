// Worker thread of host/store-pool.ts: stores file contents as repository
// objects (host/objects.ts rules) while the main thread goes on reading the
// layer. One pass over the bytes: the fs-verity digest is computed from the
// batch buffer the main thread filled, and the same bytes are written.
//
//   {t: "init", path, alg, secure, namedTemporaries}
//   {t: "batch", id, buf, items}  → {t: "done", id, buf, results}
//       items: pieces of files in order ({file, off, len, size, first, last});
//       a file in one piece is hashed first and written only when absent; a
//       file in several pieces streams to its temporary (hashed as written).
//       The buffer goes back with the reply for reuse.
//   {t: "abort"}                  → {t: "aborted"}   temporaries dropped
//
// Failures are replied per file ({file, error}); the main thread turns them
// back into CfsErrors.

import { CfsError } from "../shared/errors.ts";
import { FsVerityHasher, type HashAlg } from "../shared/fsverity.ts";
import { useFastestHashing } from "./hashing.ts";
import { ObjectFiles, writeAllFd, type TempObject } from "./objects.ts";

useFastestHashing();

declare const self: Worker;

export interface StoreItem {
  file: number;
  /** Offset and length of the piece in the batch buffer. */
  off: number;
  len: number;
  /** The file's total size. */
  size: number;
  first: boolean;
  last: boolean;
}

export type StoreError = { input: string; what: string } | { message: string };

export type StoreResult = { file: number; digest: Uint8Array; existed: boolean } | { file: number; error: StoreError };

export type StoreRequest =
  | { t: "init"; path: string; alg: HashAlg; secure: boolean; namedTemporaries: boolean }
  | { t: "batch"; id: number; buf: ArrayBuffer; items: StoreItem[] }
  | { t: "abort" };

export type StoreReply = { t: "done"; id: number; buf: ArrayBuffer; results: StoreResult[] } | { t: "aborted" };

let files: ObjectFiles | null = null;
/** Files being streamed in several pieces. */
const open = new Map<number, { w: TempObject; hasher: FsVerityHasher; got: number }>();
/** Files that failed mid-stream: their later pieces are ignored. */
const failed = new Set<number>();

function storeError(e: unknown): StoreError {
  if (e instanceof CfsError) return { input: e.input, what: e.what };
  return { message: e instanceof Error ? e.message : String(e) };
}

function piece(fs: ObjectFiles, it: StoreItem, bytes: Uint8Array): StoreResult | null {
  if (it.first && it.last) {
    const r = fs.storeBytes(bytes);
    return { file: it.file, digest: r.digest, existed: r.existed };
  }
  let o = open.get(it.file);
  if (it.first) {
    o = { w: fs.newTemp(), hasher: new FsVerityHasher(fs.alg), got: 0 };
    open.set(it.file, o);
  }
  if (o === undefined) throw new Error(`store worker: piece of unknown file ${it.file}`);
  writeAllFd(o.w.fd, bytes, fs.tempLabel(o.w));
  o.hasher.update(bytes);
  o.got += bytes.byteLength;
  if (!it.last) return null;
  open.delete(it.file);
  if (o.got !== it.size) throw new Error(`store worker: file ${it.file} got ${o.got} of ${it.size} bytes`);
  const digest = o.hasher.digest();
  try {
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

self.onmessage = (ev: MessageEvent<StoreRequest>) => {
  const m = ev.data;
  if (m.t === "init") {
    files = new ObjectFiles({ path: m.path, alg: m.alg, secure: m.secure, namedTemporaries: m.namedTemporaries });
    return;
  }
  if (m.t === "abort") {
    for (const o of open.values()) files?.dropTemp(o.w);
    open.clear();
    failed.clear();
    self.postMessage({ t: "aborted" } satisfies StoreReply);
    return;
  }
  const fs = files!;
  const results: StoreResult[] = [];
  const all = new Uint8Array(m.buf);
  for (const it of m.items) {
    if (failed.has(it.file)) {
      if (it.last) failed.delete(it.file);
      continue;
    }
    try {
      const r = piece(fs, it, all.subarray(it.off, it.off + it.len));
      if (r !== null) results.push(r);
    } catch (e) {
      const o = open.get(it.file);
      if (o !== undefined) {
        fs.dropTemp(o.w);
        open.delete(it.file);
      }
      if (!it.last) failed.add(it.file);
      results.push({ file: it.file, error: storeError(e) });
    }
  }
  self.postMessage({ t: "done", id: m.id, buf: m.buf, results } satisfies StoreReply, [m.buf]);
};
