// xxh32, the 32-bit xxHash (used by the EROFS xattr name filter, erofs.md §7.3).
//
// A few lines of plain TypeScript over Math.imul: no dependency, identical
// in every runtime, and cheap for the short xattr suffixes it hashes (the
// tests check it against Bun.hash.xxHash32 and the reference values).

import type { BStr } from "./bytes.ts";

const P1 = 2654435761;
const P2 = 2246822519;
const P3 = 3266489917;
const P4 = 668265263;
const P5 = 374761393;

function rotl(x: number, r: number): number {
  return (x << r) | (x >>> (32 - r));
}

function round(acc: number, input: number): number {
  acc = (acc + Math.imul(input, P2)) | 0;
  return Math.imul(rotl(acc, 13), P1);
}

/** xxh32 of bytes with a 32-bit seed; returns an unsigned 32-bit number. */
export function xxh32(data: Uint8Array, seed = 0): number {
  const len = data.byteLength;
  seed >>>= 0;
  let p = 0;
  let h: number;
  if (len >= 16) {
    let v1 = (seed + P1 + P2) | 0;
    let v2 = (seed + P2) | 0;
    let v3 = seed | 0;
    let v4 = (seed - P1) | 0;
    const limit = len - 16;
    do {
      v1 = round(v1, le32(data, p));
      v2 = round(v2, le32(data, p + 4));
      v3 = round(v3, le32(data, p + 8));
      v4 = round(v4, le32(data, p + 12));
      p += 16;
    } while (p <= limit);
    h = (rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18)) | 0;
  } else {
    h = (seed + P5) | 0;
  }
  h = (h + len) | 0;
  while (p + 4 <= len) {
    h = (h + Math.imul(le32(data, p), P3)) | 0;
    h = Math.imul(rotl(h, 17), P4);
    p += 4;
  }
  while (p < len) {
    h = (h + Math.imul(data[p]!, P5)) | 0;
    h = Math.imul(rotl(h, 11), P1);
    p++;
  }
  h ^= h >>> 15;
  h = Math.imul(h, P2);
  h ^= h >>> 13;
  h = Math.imul(h, P3);
  h ^= h >>> 16;
  return h >>> 0;
}

function le32(d: Uint8Array, i: number): number {
  return d[i]! | (d[i + 1]! << 8) | (d[i + 2]! << 16) | (d[i + 3]! << 24);
}

/** xxh32 of a byte string (each char code is one byte 0..255). */
export function xxh32Bstr(data: BStr, seed = 0): number {
  return xxh32(Buffer.from(data, "latin1"), seed);
}
