// Which SHA-2 implementation computes fs-verity digests in this thread.
//
// shared/fsverity.ts hashes with Bun's SHA-2 (BoringSSL) unless told
// otherwise; host code calls `useFastestHashing()` once per thread (the CLI
// in host/main.ts, each worker at its start). Measured per 4 KiB block on the
// development machine (`bun bench/hash-impl.ts`, CPU time, best of 20 rounds,
// 4 runs at load ≈ 11 on 2 cores):
//
//   sha256: Bun 1400–1470 MB/s, libcrypto 1545–1575 MB/s (+7%)
//   sha512: Bun  620–645 MB/s,  libcrypto  860–885 MB/s (+37%)
//
// Loading libcrypto costs ~10–15 ms of CPU (dlopen, provider set-up), paid
// back after ~20 MB of sha512 or ~200 MB of sha256. So each thread starts
// with Bun's and switches once it has hashed that much (the rent-or-buy
// rule: never more than twice the better choice's cost): a command hashing
// a few files never loads libcrypto. Where libcrypto.so.3 is missing or
// gives a wrong answer for a test block, Bun's stays. The initramfs agent
// never calls this.
//
// CFSBOOT_HASH=bun or CFSBOOT_HASH=libcrypto overrides the choice for both
// algorithms (libcrypto from the first byte; still Bun's without libcrypto).

import { BUN_HASH, DIGEST_SIZE, HASH_ALGS, type HashAlg, type HashPieces, setHashImplementation } from "../shared/fsverity.ts";
import { libcryptoHasher } from "../shared/sys.ts";

export type HashImplName = "bun" | "libcrypto";

/** Bytes of each algorithm hashed by Bun's implementation before libcrypto is loaded (see the header). */
export const LIBCRYPTO_AFTER: Readonly<Record<HashAlg, number>> = { sha256: 192 << 20, sha512: 16 << 20 };

/** What each algorithm uses in this thread now ("bun" until a deferred switch happened). */
const current: Record<HashAlg, HashImplName> = { sha256: "bun", sha512: "bun" };

/**
 * libcrypto's `alg`, checked against Bun's on a test block and a
 * descriptor-sized piece; undefined when it is unavailable or differs.
 */
export function checkedLibcrypto(alg: HashAlg): HashPieces | undefined {
  const f = libcryptoHasher(alg);
  if (f === null) return undefined;
  const ds = DIGEST_SIZE[alg];
  const input = new Uint8Array(4096 + 256);
  for (let i = 0, x = 0x2545f491; i < input.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    input[i] = x;
  }
  const a = new Uint8Array(2 * ds);
  const b = new Uint8Array(2 * ds);
  try {
    f(input, 0, 4096, 1, a, 0);
    f(input, 4096, 256, 1, a, ds);
  } catch {
    return undefined;
  }
  BUN_HASH[alg](input, 0, 4096, 1, b, 0);
  BUN_HASH[alg](input, 4096, 256, 1, b, ds);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return undefined;
  return f;
}

function switchTo(alg: HashAlg): HashPieces {
  const f = checkedLibcrypto(alg);
  setHashImplementation(alg, f);
  current[alg] = f ? "libcrypto" : "bun";
  return f ?? BUN_HASH[alg];
}

/** Bun's hash until `after` bytes were hashed, then libcrypto's (when usable). */
function deferred(alg: HashAlg, after: number): HashPieces {
  let bytes = 0;
  const bun = BUN_HASH[alg];
  return (src, srcOff, len, count, out, outOff) => {
    bytes += len * count;
    (bytes > after ? switchTo(alg) : bun)(src, srcOff, len, count, out, outOff);
  };
}

/** Selects the fastest implementation of each algorithm for this thread (see the header). */
export function useFastestHashing(env: string | undefined = process.env.CFSBOOT_HASH): void {
  for (const alg of HASH_ALGS) {
    current[alg] = "bun";
    if (env === "bun") setHashImplementation(alg, undefined);
    else if (env === "libcrypto") switchTo(alg);
    else setHashImplementation(alg, deferred(alg, LIBCRYPTO_AFTER[alg]));
  }
}

/** The implementation `alg` uses in this thread now. */
export function hashImplName(alg: HashAlg): HashImplName {
  return current[alg];
}
