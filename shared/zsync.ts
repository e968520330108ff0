// Streaming (de)compression driven synchronously, into one reused output
// buffer.
//
// node:zlib's stream classes run each write on a thread pool and allocate a
// fresh output buffer per chunk; for many small writes (splitstream records)
// the round trips dominate, and for large streams (layers) page-faulting the
// fresh buffers cost more than the decompression itself on the development
// VM. This drives the same native handle the way zlib's own *Sync functions
// do (`handle.writeSync(flush, in, inOff, inLen, out, outOff, outLen)`, the
// amounts left in `_writeState`), so the bytes produced are exactly those of
// the stream API with the same options; output goes to one buffer that the
// caller consumes (or copies) before asking for more.

import * as zlib from "node:zlib";

export type CodecKind = "gunzip" | "zstd-decompress" | "zstd-compress";

/** The parts of node:zlib's native handle (as Node's zlib.js drives it) used here. */
interface ZlibHandle {
  writeSync(flush: number, input: Uint8Array, inOff: number, inLen: number, out: Uint8Array, outOff: number, outLen: number): void;
  onerror: (message: string, errno: number) => void;
}

interface ZlibInternals {
  _handle: ZlibHandle;
  _writeState: Uint32Array;
  _defaultFlushFlag: number;
  _finishFlushFlag: number;
  close(): void;
}

/** A (de)compressor; errors throw `Error(<zlib's message>)` from run(). */
export class SyncCodec {
  private readonly z: ZlibInternals;
  private readonly out: Uint8Array;
  private error: string | null = null;
  private closed = false;

  constructor(kind: CodecKind, outSize = 256 << 10) {
    const z = kind === "gunzip" ? zlib.createGunzip() : kind === "zstd-decompress" ? zlib.createZstdDecompress() : zlib.createZstdCompress();
    this.z = z as unknown as ZlibInternals;
    this.z._handle.onerror = (message) => {
      this.error ??= message;
    };
    this.out = new Uint8Array(outSize);
  }

  /**
   * Feed `input` (all of it is consumed); `end` finishes the stream (zstd:
   * ends the frame). Yields views of the one output buffer: each is valid
   * until the next is requested.
   */
  *run(input: Uint8Array, end = false): Generator<Uint8Array> {
    if (this.closed) throw new Error("SyncCodec used after close()");
    const h = this.z._handle;
    const state = this.z._writeState;
    const flush = end ? this.z._finishFlushFlag : this.z._defaultFlushFlag;
    const out = this.out;
    let inOff = 0;
    let availIn = input.byteLength;
    for (;;) {
      h.writeSync(flush, input, inOff, availIn, out, 0, out.byteLength);
      if (this.error !== null) throw new Error(this.error);
      const availOut = state[0]!;
      const availInAfter = state[1]!;
      if (availOut < out.byteLength) yield out.subarray(0, out.byteLength - availOut);
      // A full output buffer may mean more output: go on with what input is left.
      if (availOut !== 0) return;
      inOff += availIn - availInAfter;
      availIn = availInAfter;
    }
  }

  /** run() with every output piece copied, concatenated. */
  all(input: Uint8Array, end = false): Uint8Array[] {
    const parts: Uint8Array[] = [];
    for (const piece of this.run(input, end)) parts.push(piece.slice());
    return parts;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.z.close();
  }
}
