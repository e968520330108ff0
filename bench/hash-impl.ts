// `bun bench/hash-impl.ts [--rounds=N]`: the SHA-2 implementations
// shared/fsverity.ts can use, per 4 KiB block, in this thread: Bun's
// (BoringSSL) and libcrypto's through bun:ffi (shared/sys.ts), as selected
// in host/hashing.ts. Each round hashes a cache-resident 4 MiB buffer once
// per implementation (interleaved, so drift in machine load hits all);
// the figure is the best round's CPU time (user + sys of this single-
// threaded process), less sensitive to other load than wall time. Also
// prints the one-time cost of loading libcrypto (CPU, first call included).

import { BUN_HASH, DIGEST_SIZE, HASH_ALGS, type HashPieces } from "../shared/fsverity.ts";
import { libcryptoHasher } from "../shared/sys.ts";

const rounds = Number(process.argv.find((a) => a.startsWith("--rounds="))?.slice(9) ?? 8);
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

const SIZE = 4 << 20;
const BLOCKS = SIZE / 4096;
const data = new Uint8Array(SIZE);
for (let i = 0, x = 0x9e3779b9; i < SIZE; i += 4) {
  x ^= x << 13;
  x ^= x >>> 17;
  x ^= x << 5;
  data[i] = x;
  data[i + 1] = x >>> 8;
  data[i + 2] = x >>> 16;
  data[i + 3] = x >>> 24;
}
const out = new Uint8Array(BLOCKS * 64);

const t0 = cpuMs();
const first = libcryptoHasher("sha512");
first?.(data, 0, 4096, 1, out, 0);
const loadMs = cpuMs() - t0;

const impls: [string, Record<string, HashPieces | null>][] = [
  ["bun (BoringSSL)", { ...BUN_HASH }],
  ["libcrypto (OpenSSL, FFI)", { sha256: libcryptoHasher("sha256"), sha512: first }],
];

process.stdout.write(`libcrypto: ${first ? `loaded, ${loadMs.toFixed(1)} ms CPU (dlopen + provider set-up + first block)` : "not available"}\n`);
for (const alg of HASH_ALGS) {
  const best = new Map<string, number>();
  for (let r = 0; r < rounds; r++) {
    for (const [name, m] of impls) {
      const f = m[alg];
      if (!f) continue;
      const c = cpuMs();
      f(data, 0, 4096, BLOCKS, out, 0);
      const d = cpuMs() - c;
      if (d < (best.get(name) ?? Infinity)) best.set(name, d);
    }
  }
  // Same digests from every implementation.
  const ref = new Uint8Array(BLOCKS * DIGEST_SIZE[alg]);
  BUN_HASH[alg](data, 0, 4096, BLOCKS, ref, 0);
  for (const [name, m] of impls) {
    const f = m[alg];
    if (!f) continue;
    const o = new Uint8Array(ref.length);
    f(data, 0, 4096, BLOCKS, o, 0);
    const same = o.every((v, i) => v === ref[i]);
    const ms = best.get(name)!;
    process.stdout.write(
      `${alg}  ${name.padEnd(26)} ${(SIZE / (ms / 1000) / 1e6).toFixed(0).padStart(5)} MB/s  ${((ms * 1000) / BLOCKS).toFixed(2)} µs/block${same ? "" : "  DIGESTS DIFFER"}\n`,
    );
  }
}
