// The two SHA-2 implementations behind fs-verity digests (host/hashing.ts):
// Bun's and OpenSSL's libcrypto through bun:ffi (shared/sys.ts) give the
// same digests as each other and as fsverity-utils (../shared/vectors), the
// deferred switch happens after the documented amount of data, and the FFI
// binding refuses ranges outside its buffers instead of reading or writing
// past them.

import { existsSync, readFileSync } from "node:fs";
import fc from "fast-check";
import { afterEach, describe, expect, test } from "vitest";
import { toHex } from "../../shared/bytes.ts";
import {
  BLOCK_SIZE,
  BUN_HASH,
  DIGEST_SIZE,
  FsVerityHasher,
  fsverityDigest,
  hashImplementation,
  hashLeaves,
  setHashImplementation,
  type HashAlg,
  type HashPieces,
} from "../../shared/fsverity.ts";
import { libcryptoHasher } from "../../shared/sys.ts";
import { LIBCRYPTO_AFTER, checkedLibcrypto, hashImplName, useFastestHashing } from "../../host/hashing.ts";
import { canRun, vectorsDir } from "../helpers/env.ts";

const ALGS: HashAlg[] = ["sha256", "sha512"];

const haveLibcrypto = () =>
  canRun(
    ["/usr/lib/x86_64-linux-gnu/libcrypto.so.3", "/usr/lib/aarch64-linux-gnu/libcrypto.so.3", "/lib/x86_64-linux-gnu/libcrypto.so.3"].some(existsSync),
    "libcrypto.so.3 (Debian package libssl3) not installed",
  );

function ruleA(size: number): Uint8Array {
  const d = new Uint8Array(size);
  for (let i = 0, v = 7; i < size; i++) {
    d[i] = v;
    v += 31;
    if (v >= 251) v -= 251;
  }
  return d;
}

/** Runs `f` with `impl` selected for `alg`, then restores Bun's. */
function withImpl<T>(alg: HashAlg, impl: HashPieces, f: () => T): T {
  setHashImplementation(alg, impl);
  try {
    return f();
  } finally {
    setHashImplementation(alg, undefined);
  }
}

/** libcrypto's `alg`, which must be there and pass the self-check. */
function lib(alg: HashAlg): HashPieces {
  const f = checkedLibcrypto(alg);
  expect(f, `libcrypto ${alg}`).toBeTypeOf("function");
  return f!;
}

afterEach(() => {
  for (const alg of ALGS) setHashImplementation(alg, undefined);
});

describe("libcrypto gives the same digests as Bun's hash", () => {
  test("both algorithms load and pass the self-check", () => {
    if (!haveLibcrypto()) return;
    for (const alg of ALGS) {
      expect(libcryptoHasher(alg)).not.toBeNull();
      expect(checkedLibcrypto(alg)).toBeTypeOf("function");
    }
  });

  test("fsverity.tsv vectors (fsverity-utils digests) with libcrypto", () => {
    if (!haveLibcrypto()) return;
    const [, ...rows] = readFileSync(`${vectorsDir}/fsverity.tsv`, "utf8").trimEnd().split("\n");
    expect(rows.length).toBeGreaterThanOrEqual(16);
    for (const r of rows) {
      const [, size, , s256, s512] = r.split("\t");
      const data = ruleA(Number(size));
      expect(withImpl("sha256", lib("sha256"), () => toHex(fsverityDigest(data, "sha256"))), `${size} sha256`).toBe(s256);
      expect(withImpl("sha512", lib("sha512"), () => toHex(fsverityDigest(data, "sha512"))), `${size} sha512`).toBe(s512);
    }
  });

  test("whole-buffer, streamed and leaf-range digests are identical for both (property)", () => {
    if (!haveLibcrypto()) return;
    const libs = { sha256: lib("sha256"), sha512: lib("sha512") };
    fc.assert(
      fc.property(
        fc.constantFrom(...ALGS),
        // up to 3 tree levels for sha512 (64 leaves per tree block)
        fc.integer({ min: 0, max: 70 * BLOCK_SIZE }),
        fc.integer({ min: 1, max: 3 * BLOCK_SIZE }),
        fc.integer(),
        (alg, size, piece, seed) => {
          const data = ruleA(size).map((b, i) => (b ^ seed ^ (i >> 9)) & 0xff);
          const run = (impl: HashPieces) =>
            withImpl(alg, impl, () => {
              const h = new FsVerityHasher(alg);
              for (let off = 0; off < size; off += piece) h.update(data.subarray(off, off + piece));
              return [toHex(fsverityDigest(data, alg)), toHex(h.digest()), toHex(hashLeaves(alg, data.subarray(0, size - (size % BLOCK_SIZE))))];
            });
          const a = run(BUN_HASH[alg]);
          const b = run(libs[alg]);
          expect(b).toEqual(a);
          expect(a[1]).toBe(a[0]);
        },
      ),
      { numRuns: 150 },
    );
  });

  test("pieces of any length, at any offset, into any output offset", () => {
    if (!haveLibcrypto()) return;
    const src = ruleA(20000);
    for (const alg of ALGS) {
      const ds = DIGEST_SIZE[alg];
      const f = libcryptoHasher(alg)!;
      for (const [off, len, count] of [[0, 0, 1], [3, 1, 5], [1, 255, 3], [7, 4096, 4], [100, 4095, 2], [0, 20000, 1]] as const) {
        const a = new Uint8Array(5 + count * ds);
        const b = new Uint8Array(5 + count * ds);
        f(src, off, len, count, a, 5);
        BUN_HASH[alg](src, off, len, count, b, 5);
        expect(toHex(a), `${alg} ${off}/${len}×${count}`).toBe(toHex(b));
        expect(a.subarray(0, 5).every((x) => x === 0)).toBe(true);
      }
      // an empty input buffer (ptr() refuses those)
      const e1 = new Uint8Array(ds);
      const e2 = new Uint8Array(ds);
      f(new Uint8Array(0), 0, 0, 1, e1, 0);
      BUN_HASH[alg](new Uint8Array(0), 0, 0, 1, e2, 0);
      expect(toHex(e1)).toBe(toHex(e2));
    }
  });

  test("ranges outside the buffers are refused, nothing written", () => {
    if (!haveLibcrypto()) return;
    for (const alg of ALGS) {
      const ds = DIGEST_SIZE[alg];
      const f = libcryptoHasher(alg)!;
      const src = new Uint8Array(8192);
      const out = new Uint8Array(2 * ds);
      expect(() => f(src, 1, 4096, 2, out, 0)).toThrow(RangeError); // reads past src
      expect(() => f(src, 0, 4096, 2, out, 1)).toThrow(RangeError); // writes past out
      expect(() => f(src, 0, 4096, 3, new Uint8Array(3 * ds - 1), 0)).toThrow(RangeError);
      expect(() => f(src, -1, 10, 1, out, 0)).toThrow(RangeError);
      expect(() => f(src, 0.5, 10, 1, out, 0)).toThrow(RangeError);
      expect(out.every((x) => x === 0)).toBe(true);
    }
  });
});

describe("selection (useFastestHashing)", () => {
  test("starts with Bun's, switches to libcrypto after LIBCRYPTO_AFTER bytes, digests unchanged", () => {
    if (!haveLibcrypto()) return;
    const alg: HashAlg = "sha512";
    const data = ruleA(LIBCRYPTO_AFTER[alg] + 3 * BLOCK_SIZE + 5);
    const expected = toHex(fsverityDigest(data, alg)); // Bun's
    useFastestHashing(undefined);
    expect(hashImplName(alg)).toBe("bun");
    expect(toHex(fsverityDigest(ruleA(1 << 20), alg))).toBe(toHex(withImpl(alg, BUN_HASH[alg], () => fsverityDigest(ruleA(1 << 20), alg))));
    expect(hashImplName(alg)).toBe("bun"); // 1 MiB is not enough to load libcrypto
    useFastestHashing(undefined);
    expect(toHex(fsverityDigest(data, alg))).toBe(expected);
    expect(hashImplName(alg)).toBe("libcrypto");
    expect(hashImplementation(alg)).not.toBe(BUN_HASH[alg]);
    expect(toHex(fsverityDigest(data, alg))).toBe(expected);
    // sha256 is not switched by that: its own threshold is larger
    expect(hashImplName("sha256")).toBe("bun");
  });

  test("CFSBOOT_HASH=bun and CFSBOOT_HASH=libcrypto", () => {
    useFastestHashing("bun");
    for (const alg of ALGS) expect(hashImplementation(alg)).toBe(BUN_HASH[alg]);
    fsverityDigest(ruleA(LIBCRYPTO_AFTER.sha512 + BLOCK_SIZE), "sha512");
    expect(hashImplName("sha512")).toBe("bun");
    if (!haveLibcrypto()) return;
    useFastestHashing("libcrypto");
    for (const alg of ALGS) {
      expect(hashImplName(alg)).toBe("libcrypto");
      expect(toHex(fsverityDigest(ruleA(12345), alg))).toBe(toHex(withImpl(alg, BUN_HASH[alg], () => fsverityDigest(ruleA(12345), alg))));
    }
  });
});
