// host/store-pool.ts: file contents stored as repository objects by worker
// threads (and on the calling thread with workers: 0) are the objects
// ensureObject would store — named by their fs-verity digest, with their
// bytes — whatever the sizes and the way the bytes are split into writes;
// present objects are reported and not rewritten; giving up (close with
// files unfinished) leaves no temporary behind, and a failure reaches the
// file's result as a CfsError.

import { existsSync, lstatSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { toHex } from "../../shared/bytes.ts";
import { CfsError } from "../../shared/errors.ts";
import { fsverityDigest } from "../../shared/fsverity.ts";
import { Repository } from "../../host/repo.ts";
import { StorePool } from "../../host/store-pool.ts";

let dir: string;
let n = 0;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "cfsboot-store-pool-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function newRepo(opts: { named?: boolean; alg?: "fsverity-sha256-12" | "fsverity-sha512-12" } = {}): Repository {
  const p = join(dir, `r${n++}`);
  Repository.init(p, { insecure: true, algorithm: opts.alg ?? "fsverity-sha512-12" }).repo.close();
  return Repository.open(p, { writable: true, namedTemporaries: opts.named });
}

/** Deterministic pseudo-random bytes. */
function bytes(size: number, seed: number): Uint8Array {
  const out = new Uint8Array(size);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** Everything under objects/ that is not an object file in an XX directory. */
function strayFiles(repo: Repository): string[] {
  const out: string[] = [];
  for (const d of readdirSync(`${repo.path}/objects`)) {
    if (!lstatSync(`${repo.path}/objects/${d}`).isDirectory()) out.push(d);
  }
  return out;
}

async function storeAll(pool: StorePool, files: Uint8Array[], pieces: number[]) {
  const handles = files.map((f) => pool.begin(f.length));
  // Interleave nothing: one file after the other, each in pieces of the given sizes (as a tar stream delivers them).
  files.forEach((f, i) => {
    let off = 0;
    for (let k = 0; off < f.length; k++) {
      const len = Math.min(pieces[(i + k) % pieces.length]!, f.length - off);
      pool.write(handles[i]!, f.subarray(off, off + len));
      off += len;
    }
  });
  pool.flush();
  return Promise.all(handles.map((h) => h.result));
}

describe.each([
  ["worker threads", {} as { workers?: number }],
  ["two worker threads", { workers: 2 }],
  ["the calling thread (workers: 0)", { workers: 0 }],
])("store pool on %s", (_label, poolOpts) => {
  test("objects equal ensureObject's: digest names, bytes, 0644; sizes across batch buffers; written in any pieces", async () => {
    const repo = newRepo();
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.oneof(fc.integer({ min: 65, max: 5000 }), fc.integer({ min: 5000, max: 300_000 }), fc.constant(1 << 20), fc.integer({ min: 1 << 20, max: 1_600_000 })), { minLength: 1, maxLength: 5 }),
          fc.array(fc.integer({ min: 1, max: 400_000 }), { minLength: 1, maxLength: 5 }),
          fc.integer(),
          async (sizes, pieces, seed) => {
            const files = sizes.map((s, i) => bytes(s, seed + i));
            const pool = new StorePool(repo, poolOpts);
            try {
              const results = await storeAll(pool, files, pieces);
              results.forEach((r, i) => {
                const want = fsverityDigest(files[i]!, repo.alg);
                expect(toHex(r.digest)).toBe(toHex(want));
                expect(r.size).toBe(files[i]!.length);
                const path = repo.objectPath(want);
                expect(Buffer.compare(readFileSync(path), Buffer.from(files[i]!))).toBe(0);
                expect(statSync(path).mode & 0o777).toBe(0o644);
              });
            } finally {
              await pool.close();
            }
          },
        ),
        { numRuns: 8 },
      );
      expect(strayFiles(repo)).toEqual([]);
    } finally {
      repo.close();
    }
  });

  test("a second store of the same contents reports every object present and rewrites none", async () => {
    const repo = newRepo({ alg: "fsverity-sha256-12" });
    try {
      const files = [100, 70_000, 1_500_000].map((s, i) => bytes(s, 7 + i));
      const p1 = new StorePool(repo, poolOpts);
      const first = await storeAll(p1, files, [65536]);
      await p1.close();
      expect(first.map((r) => r.existed)).toEqual([false, false, false]);
      const inodes = first.map((r) => statSync(repo.objectPath(r.digest)).ino);
      const p2 = new StorePool(repo, poolOpts);
      const again = await storeAll(p2, files, [4096, 333_333]);
      await p2.close();
      expect(again.map((r) => r.existed)).toEqual([true, true, true]);
      expect(again.map((r) => statSync(repo.objectPath(r.digest)).ino)).toEqual(inodes);
    } finally {
      repo.close();
    }
  });

  test("close() with files unfinished leaves no temporary (named temporaries too) and rejects their results", async () => {
    for (const named of [false, true]) {
      const repo = newRepo({ named });
      try {
        const pool = new StorePool(repo, poolOpts);
        const done = pool.begin(200);
        pool.write(done, bytes(200, 1));
        const half = pool.begin(3_000_000);
        pool.write(half, bytes(1_500_000, 2));
        pool.flush();
        expect(toHex((await done.result).digest)).toBe(toHex(fsverityDigest(bytes(200, 1), repo.alg)));
        await pool.close();
        await expect(half.result).rejects.toThrow(/closed/);
        expect(strayFiles(repo)).toEqual([]);
        expect(existsSync(repo.objectPath(fsverityDigest(bytes(3_000_000, 2), repo.alg)))).toBe(false);
      } finally {
        repo.close();
      }
    }
  });

  test("a failure to write reaches the file's result as a CfsError naming the repository", async () => {
    const repo = newRepo();
    try {
      // objects/ replaced by a file: no temporary can be created there (root or not).
      rmSync(`${repo.path}/objects`, { recursive: true, force: true });
      writeFileSync(`${repo.path}/objects`, "not a directory");
      const pool = new StorePool(repo, poolOpts);
      const small = pool.begin(1000);
      pool.write(small, bytes(1000, 3));
      const large = pool.begin(2_000_000);
      pool.write(large, bytes(2_000_000, 4));
      pool.flush();
      const errs = await Promise.all([small.result, large.result].map((p) => p.then(() => null, (e: unknown) => e)));
      await pool.close();
      for (const err of errs) {
        expect(err).toBeInstanceOf(CfsError);
        expect((err as CfsError).message).toContain(`${repo.path}/objects`);
      }
    } finally {
      repo.close();
    }
  });
});
