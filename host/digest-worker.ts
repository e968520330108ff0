// Worker thread of host/digest.ts: hashes file data read with positioned
// reads from a file descriptor the main thread opened (threads share the fd
// table). Two requests:
//
//   {t: "whole", id, fd, size, alg}           → {id, digest}    the whole file
//   {t: "leaves", id, fd, offset, length, alg} → {id, leaves}    leaf hashes of a
//                                                               block-aligned range
//
// Failures reply {id, error: {code, message}}; the main thread turns them
// into CfsErrors naming the file.

import { readSync } from "node:fs";
import { DIGEST_SIZE, FsVerityHasher, hashLeaves, type HashAlg } from "../shared/fsverity.ts";
import type { WorkerReply, WorkerRequest } from "./digest.ts";

declare const self: Worker;

/** Read buffer, reused for every request (grown to the largest range asked). */
let buf = new Uint8Array(1 << 20);

/** Reads exactly `length` bytes at `offset` into buf; a short read means the file shrank. */
function readRange(fd: number, offset: number, length: number): Uint8Array {
  if (buf.byteLength < length) buf = new Uint8Array(length);
  let got = 0;
  while (got < length) {
    const n = readSync(fd, buf, got, length - got, offset + got);
    if (n === 0) {
      const e = new Error("file shrank while it was being read") as NodeJS.ErrnoException;
      e.code = "ESHRANK";
      throw e;
    }
    got += n;
  }
  return buf.subarray(0, length);
}

function whole(fd: number, size: number, alg: HashAlg): Uint8Array {
  const h = new FsVerityHasher(alg);
  const step = 1 << 20;
  for (let off = 0; off < size; off += step) h.update(readRange(fd, off, Math.min(step, size - off)));
  return h.digest();
}

self.onmessage = (ev: MessageEvent<WorkerRequest>) => {
  const m = ev.data;
  let reply: WorkerReply;
  const transfer: ArrayBuffer[] = [];
  try {
    if (m.t === "whole") {
      const digest = whole(m.fd, m.size, m.alg);
      reply = { id: m.id, digest };
      transfer.push(digest.buffer as ArrayBuffer);
    } else {
      const data = readRange(m.fd, m.offset, m.length);
      const leaves = new Uint8Array(Math.ceil(m.length / 4096) * DIGEST_SIZE[m.alg]);
      hashLeaves(m.alg, data, leaves);
      reply = { id: m.id, leaves };
      transfer.push(leaves.buffer as ArrayBuffer);
    }
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    reply = { id: m.id, error: { code: err.code ?? "", message: err.message ?? String(e) } };
  }
  self.postMessage(reply, transfer);
};
