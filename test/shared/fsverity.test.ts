// fs-verity digests against the upstream-produced vectors in ../shared, and
// the streaming / parallel building blocks against each other.

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { toHex } from "../../shared/bytes.ts";
import {
  ALG_ID,
  BLOCK_SIZE,
  DIGEST_SIZE,
  FsVerityHasher,
  MerkleBuilder,
  algFromHexLength,
  algFromId,
  algName,
  digestFromRoot,
  emptyDigest,
  fsverityDigest,
  hashLeaves,
  leafCount,
  parseAlgName,
  type HashAlg,
} from "../../shared/fsverity.ts";
import { sharedDir, vectorsDir } from "../helpers/env.ts";

const ALGS: HashAlg[] = ["sha256", "sha512"];

function readTsv(path: string): Record<string, string>[] {
  const [head, ...rows] = readFileSync(path, "utf8").trimEnd().split("\n");
  const cols = head!.split("\t");
  return rows.map((r) => Object.fromEntries(r.split("\t").map((v, i) => [cols[i]!, v])));
}

/** Content rule A of fsverity.tsv: byte i = (i·31 + 7) mod 251. */
function ruleA(size: number): Uint8Array {
  const d = new Uint8Array(size);
  for (let i = 0, v = 7; i < size; i++) {
    d[i] = v;
    v += 31;
    if (v >= 251) v -= 251;
  }
  return d;
}

const sha256hex = (d: Uint8Array) => createHash("sha256").update(d).digest("hex");

describe("fsverity.tsv (content rule A, fsverity-utils digests)", () => {
  const rows = readTsv(`${vectorsDir}/fsverity.tsv`);
  test("the table has the documented boundary sizes", () => {
    expect(rows.length).toBeGreaterThanOrEqual(16);
    expect(rows.every((r) => r.rule === "A")).toBe(true);
  });
  for (const r of rows) {
    test(`${r.size_bytes} bytes`, () => {
      const data = ruleA(Number(r.size_bytes));
      expect(sha256hex(data)).toBe(r.content_sha256);
      expect(toHex(fsverityDigest(data, "sha256"))).toBe(r.fsverity_sha256);
      expect(toHex(fsverityDigest(data, "sha512"))).toBe(r.fsverity_sha512);
    });
  }
});

/** The `input` column of fsverity-upstream.tsv → bytes. */
function upstreamInput(desc: string): Uint8Array {
  if (desc === "empty file") return new Uint8Array(0);
  let m = /^(\d+) zero bytes$/.exec(desc);
  if (m) return new Uint8Array(Number(m[1]));
  m = /^the (\d+) bytes "(.*)"( \(no newline\))?$/.exec(desc);
  if (m) {
    const bytes = new TextEncoder().encode(m[2]!.replace(/\\n/g, "\n"));
    expect(bytes.length).toBe(Number(m[1]));
    return bytes;
  }
  throw new Error(`fsverity-upstream.tsv: input not understood: ${desc}`);
}

describe("fsverity-upstream.tsv (digests pinned by composefs-rs / composefs tests)", () => {
  const rows = readTsv(`${vectorsDir}/fsverity-upstream.tsv`);
  test("has rows", () => expect(rows.length).toBeGreaterThanOrEqual(8));
  for (const r of rows) {
    test(`${r.input} (${r.alg})`, () => {
      const data = upstreamInput(r.input!);
      expect(data.length).toBe(Number(r.size_bytes));
      expect(toHex(fsverityDigest(data, r.alg as HashAlg))).toBe(r.fsverity_digest);
    });
  }
});

/** The §4 table of reference/fsverity.md, read from the document itself. */
function section4Rows(): { input: string; data: Uint8Array; alg: HashAlg; digest: string }[] {
  const md = readFileSync(`${sharedDir}/reference/fsverity.md`, "utf8");
  const start = md.indexOf("## 4. Test vectors");
  const end = md.indexOf("\n## 5.", start);
  const out: { input: string; data: Uint8Array; alg: HashAlg; digest: string }[] = [];
  for (const line of md.slice(start, end).split("\n")) {
    const m = /^\| (.+?) \| (sha256|sha512) \| `([0-9a-f]+)` \|$/.exec(line);
    if (!m) continue;
    const input = m[1]!;
    let data: Uint8Array;
    let k: RegExpExecArray | null;
    if (input === "empty file") data = new Uint8Array(0);
    else if ((k = /^(\d+) × `(.)`/.exec(input))) data = new Uint8Array(Number(k[1])).fill(k[2]!.charCodeAt(0));
    else if ((k = /^`([^`]*)`$/.exec(input))) data = new TextEncoder().encode(k[1]!.replace(/\\n/g, "\n"));
    else throw new Error(`fsverity.md §4: input not understood: ${input}`);
    out.push({ input, data, alg: m[2] as HashAlg, digest: m[3]! });
  }
  return out;
}

describe("fsverity.md §4", () => {
  const rows = section4Rows();
  test("table parsed", () => expect(rows.length).toBe(10));
  for (const r of rows) {
    test(`${r.input} (${r.alg})`, () => expect(toHex(fsverityDigest(r.data, r.alg))).toBe(r.digest));
  }
});

describe("parameters and names", () => {
  test("sizes, ids, names", () => {
    expect(DIGEST_SIZE).toEqual({ sha256: 32, sha512: 64 });
    expect(ALG_ID).toEqual({ sha256: 1, sha512: 2 });
    expect(algFromId(1)).toBe("sha256");
    expect(algFromId(2)).toBe("sha512");
    expect(algFromId(3)).toBeUndefined();
    expect(algName("sha512")).toBe("fsverity-sha512-12");
    expect(parseAlgName("fsverity-sha256-12")).toBe("sha256");
    expect(parseAlgName("fsverity-sha512-12")).toBe("sha512");
    expect(() => parseAlgName("fsverity-sha512-16")).toThrow(/block size/);
    expect(() => parseAlgName("sha512")).toThrow(/unknown fs-verity algorithm/);
    expect(algFromHexLength(64)).toBe("sha256");
    expect(algFromHexLength(128)).toBe("sha512");
    expect(algFromHexLength(40)).toBeUndefined();
  });
  test("empty file: all-zero root (not the hash of a zero block)", () => {
    for (const alg of ALGS) {
      expect(emptyDigest(alg)).toEqual(fsverityDigest(new Uint8Array(0), alg));
      const zeroBlockRoot = hashLeaves(alg, new Uint8Array(BLOCK_SIZE));
      expect(toHex(fsverityDigest(new Uint8Array(0), alg))).not.toBe(toHex(digestFromRoot(alg, 0, zeroBlockRoot)));
    }
  });
  test("data_size is part of the digest (trailing zeros are not padding)", () => {
    for (const alg of ALGS) {
      expect(toHex(fsverityDigest(new Uint8Array(100), alg))).not.toBe(toHex(fsverityDigest(new Uint8Array(101), alg)));
    }
  });
  test("unknown algorithm is a CfsError", () => {
    expect(() => new FsVerityHasher("md5" as HashAlg)).toThrow(/unknown hash algorithm/);
  });
});

describe("streaming and parallel pieces", () => {
  test("chunking of update() never changes the digest (property)", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...ALGS),
        fc.integer({ min: 0, max: 40 * BLOCK_SIZE }),
        fc.array(fc.integer({ min: 0, max: 3 * BLOCK_SIZE }), { maxLength: 30 }),
        fc.integer(),
        (alg, size, cuts, seed) => {
          const data = ruleA(size).map((b, i) => (b ^ seed ^ (i >> 12)) & 0xff);
          const whole = toHex(fsverityDigest(data, alg));
          const h = new FsVerityHasher(alg);
          let off = 0;
          for (const c of cuts) {
            const n = Math.min(c, size - off);
            h.update(data.subarray(off, off + n));
            off += n;
          }
          h.update(data.subarray(off));
          expect(h.length).toBe(size);
          expect(toHex(h.digest())).toBe(whole);
        },
      ),
      { numRuns: 300 },
    );
  });

  test("leaf hashes of block-aligned ranges, combined in order, equal the sequential digest (property)", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...ALGS),
        fc.integer({ min: 0, max: 300 * BLOCK_SIZE }),
        fc.array(fc.integer({ min: 1, max: 80 }), { minLength: 1, maxLength: 10 }),
        (alg, size, blocksPerRange) => {
          const data = ruleA(size);
          const b = new MerkleBuilder(alg);
          let off = 0;
          for (let i = 0; off < size; i++) {
            const len = blocksPerRange[i % blocksPerRange.length]! * BLOCK_SIZE;
            b.addLeafHashes(hashLeaves(alg, data.subarray(off, Math.min(size, off + len))));
            off += len;
          }
          expect(b.leaves).toBe(leafCount(size));
          expect(toHex(b.finish(BigInt(size)))).toBe(toHex(fsverityDigest(data, alg)));
        },
      ),
      { numRuns: 60 },
    );
  });

  test("finish() refuses a leaf count that does not fit the size", () => {
    const b = new MerkleBuilder("sha256");
    b.addLeafHashes(new Uint8Array(64));
    expect(() => b.finish(4096)).toThrow(/leaf hashes/);
  });

  /** Straightforward level-by-level root computation, for comparison. */
  function naiveRoot(alg: HashAlg, leaves: Uint8Array): Uint8Array {
    const ds = DIGEST_SIZE[alg];
    let level = leaves;
    while (level.byteLength > ds) {
      const blocks = Math.ceil(level.byteLength / BLOCK_SIZE);
      const padded = new Uint8Array(blocks * BLOCK_SIZE);
      padded.set(level);
      const next = new Uint8Array(blocks * ds);
      for (let i = 0; i < blocks; i++) {
        next.set(createHash(alg).update(padded.subarray(i * BLOCK_SIZE, (i + 1) * BLOCK_SIZE)).digest(), i * ds);
      }
      level = next;
    }
    return level;
  }

  // Trees up to 4 levels above the leaves, from synthetic leaf hashes (no file
  // data needed): every leaf count around a power of the fan-out.
  for (const alg of ALGS) {
    const fan = BLOCK_SIZE / DIGEST_SIZE[alg];
    const counts = [1, 2, fan - 1, fan, fan + 1, fan * fan, fan * fan + 1, fan ** 3, fan ** 3 + 1];
    test(`${alg}: builder root = naive root at leaf counts ${counts.join(", ")}`, () => {
      const ds = DIGEST_SIZE[alg];
      const max = counts[counts.length - 1]!;
      const all = new Uint8Array(max * ds);
      for (let i = 0; i < all.length; i += 65536) crypto.getRandomValues(all.subarray(i, Math.min(all.length, i + 65536)));
      for (const n of counts) {
        const leaves = all.subarray(0, n * ds);
        const b = new MerkleBuilder(alg);
        // feed in uneven batches
        for (let off = 0, k = 1; off < n; k = (k * 7 + 3) % 1000) {
          const m = Math.min(n - off, k + 1);
          b.addLeafHashes(leaves.subarray(off * ds, (off + m) * ds));
          off += m;
        }
        expect(toHex(b.root()), `${n} leaves`).toBe(toHex(naiveRoot(alg, leaves)));
      }
    });
  }
});
