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

import type { HashAlg } from "../shared/fsverity.ts";
import { useFastestHashing } from "./hashing.ts";
import { ObjectFiles } from "./objects.ts";
import { ObjectSink, type StoreItem, type StoreResult } from "./store-sink.ts";

useFastestHashing();

declare const self: Worker;

export type { StoreItem, StoreResult } from "./store-sink.ts";

export type StoreRequest =
  | { t: "init"; path: string; alg: HashAlg; secure: boolean; namedTemporaries: boolean }
  | { t: "batch"; id: number; buf: ArrayBuffer; items: StoreItem[] }
  | { t: "abort" };

export type StoreReply = { t: "done"; id: number; buf: ArrayBuffer; results: StoreResult[] } | { t: "aborted" };

let sink: ObjectSink | null = null;

self.onmessage = (ev: MessageEvent<StoreRequest>) => {
  const m = ev.data;
  if (m.t === "init") {
    sink = new ObjectSink(new ObjectFiles({ path: m.path, alg: m.alg, secure: m.secure, namedTemporaries: m.namedTemporaries }));
    return;
  }
  if (m.t === "abort") {
    sink?.abort();
    self.postMessage({ t: "aborted" } satisfies StoreReply);
    return;
  }
  const results: StoreResult[] = [];
  const all = new Uint8Array(m.buf);
  for (const it of m.items) {
    const r = sink!.piece(it, all.subarray(it.off, it.off + it.len));
    if (r !== null) results.push(r);
  }
  self.postMessage({ t: "done", id: m.id, buf: m.buf, results } satisfies StoreReply, [m.buf]);
};
