// File digests on disk: the worker pool (inline, one worker, split across
// workers) gives the same digest as the single-thread path and as the
// fsverity-utils values in ../shared/vectors/fsverity.tsv.

import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { openSync, closeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { toHex } from "../../shared/bytes.ts";
import { CfsError } from "../../shared/errors.ts";
import { BLOCK_SIZE, type HashAlg } from "../../shared/fsverity.ts";
import { DigestPool, digestFile, digestFileSync, digestPaths } from "../../host/digest.ts";
import { vectorsDir } from "../helpers/env.ts";

const ALGS: HashAlg[] = ["sha256", "sha512"];
let dir: string;

function ruleA(size: number): Uint8Array {
  const d = new Uint8Array(size);
  for (let i = 0, v = 7; i < size; i++) {
    d[i] = v;
    v += 31;
    if (v >= 251) v -= 251;
  }
  return d;
}

const vectors = new Map<number, { sha256: string; sha512: string }>();

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "cfsboot-digest-"));
  const [, ...rows] = readFileSync(`${vectorsDir}/fsverity.tsv`, "utf8").trimEnd().split("\n");
  for (const r of rows) {
    const [, size, , s256, s512] = r.split("\t");
    vectors.set(Number(size), { sha256: s256!, sha512: s512! });
  }
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("vector files on disk", () => {
  // Sizes crossing every tree level reachable with files of at most 64 MiB
  // (sha512 3rd level at 16 MiB + 1, sha256 3rd level at 64 MiB + 1).
  test("single thread, shared pool (split), and a pool forced to split into tiny ranges", async () => {
    const sizes = [...vectors.keys()];
    expect(sizes).toContain(67108865);
    const tiny = new DigestPool({ inlineMax: 0, splitMin: 0, chunkSize: 3 * BLOCK_SIZE });
    const whole = new DigestPool({ inlineMax: 0, splitMin: Number.MAX_SAFE_INTEGER });
    try {
      for (const size of sizes) {
        const path = join(dir, `v${size}`);
        writeFileSync(path, ruleA(size));
        for (const alg of ALGS) {
          const want = vectors.get(size)![alg];
          expect(toHex(digestFileSync(path, alg).digest), `sync ${size} ${alg}`).toBe(want);
          const d = await digestFile(path, alg);
          expect(toHex(d.digest), `digestFile ${size} ${alg}`).toBe(want);
          expect(d.size).toBe(BigInt(size));
          expect(toHex((await whole.digestFile(path, alg)).digest), `one worker ${size} ${alg}`).toBe(want);
          // tiny ranges: 4 MiB + 16 MiB+1 worth of 12 KiB requests is plenty
          if (size <= 16777217) expect(toHex((await tiny.digestFile(path, alg)).digest), `split ${size} ${alg}`).toBe(want);
        }
        rmSync(path);
      }
    } finally {
      await tiny.close();
      await whole.close();
    }
  });
});

describe("pool", () => {
  test("parallel == sequential around range and tree boundaries", async () => {
    const pool = new DigestPool({ inlineMax: 0, splitMin: 0, chunkSize: 8 * BLOCK_SIZE });
    try {
      // 64/128-leaf fan-out boundaries and range boundaries of 8 blocks
      const sizes = [1, 4095, 4096, 4097, 8 * 4096 - 1, 8 * 4096, 8 * 4096 + 1, 64 * 4096, 64 * 4096 + 1, 128 * 4096, 128 * 4096 + 1, 4096 * 4096 + 1];
      const paths = sizes.map((s, i) => {
        const p = join(dir, `b${i}`);
        writeFileSync(p, ruleA(s).map((b) => b ^ (i * 13)));
        return p;
      });
      for (const alg of ALGS) {
        const par = await Promise.all(paths.map((p) => pool.digestFile(p, alg)));
        paths.forEach((p, i) => expect(toHex(par[i]!.digest), `${sizes[i]} ${alg}`).toBe(toHex(digestFileSync(p, alg).digest)));
      }
    } finally {
      await pool.close();
    }
  });

  test("many files at once, mixed sizes, results in the right order; errors only for the bad ones", async () => {
    const pool = new DigestPool();
    try {
      const paths: string[] = [];
      for (let i = 0; i < 240; i++) {
        const p = join(dir, `m${i}`);
        if (i % 50 === 7) {
          paths.push(join(dir, `missing${i}`));
          continue;
        }
        // inline, one-worker and (twice) split sizes
        const size = i === 5 || i === 11 ? 9_000_000 : [0, 100, 5000, 70_000, 300_000][i % 5]!;
        writeFileSync(p, ruleA(size).map((b) => b ^ i));
        paths.push(p);
      }
      const res = await Promise.allSettled(paths.map((p) => pool.digestFile(p, "sha512")));
      res.forEach((r, i) => {
        if (paths[i]!.includes("missing")) {
          expect(r.status).toBe("rejected");
          const e = (r as PromiseRejectedResult).reason;
          expect(e).toBeInstanceOf(CfsError);
          expect(e.message).toBe(`${paths[i]}: no such file or directory`);
        } else {
          expect(r.status, paths[i]).toBe("fulfilled");
          expect(toHex((r as PromiseFulfilledResult<{ digest: Uint8Array }>).value.digest)).toBe(toHex(digestFileSync(paths[i]!, "sha512").digest));
        }
      });
    } finally {
      await pool.close();
    }
  });

  test("errors: directory, FIFO (no hang), missing, unreadable; the pool keeps working", async () => {
    const pool = new DigestPool({ inlineMax: 0 });
    try {
      const d = join(dir, "adir");
      mkdirSync(d);
      const fifo = join(dir, "fifo");
      expect(spawnSync("mkfifo", [fifo]).status).toBe(0);
      const link = join(dir, "dangling");
      symlinkSync(join(dir, "nowhere"), link);
      await expect(pool.digestFile(d, "sha256")).rejects.toThrow(`${d}: is a directory`);
      await expect(pool.digestFile(fifo, "sha256")).rejects.toThrow(`${fifo}: not a regular file`);
      await expect(pool.digestFile(link, "sha256")).rejects.toThrow(`${link}: no such file or directory`);
      await expect(pool.digestFile(join(d, "x", "y"), "sha256")).rejects.toThrow("no such file or directory");
      const f = join(dir, "file");
      writeFileSync(f, ruleA(100_000));
      await expect(pool.digestFile(join(f, "sub"), "sha256")).rejects.toThrow(`${join(f, "sub")}: not a directory`);
      await expect(pool.digestFile(f, "md5" as HashAlg)).rejects.toThrow(/unknown hash algorithm/);
      expect(() => digestFileSync(d, "sha256")).toThrow(CfsError);
      await expect(digestFile(fifo, "sha256")).rejects.toThrow("not a regular file");
      expect(toHex((await pool.digestFile(f, "sha256")).digest)).toBe(toHex(digestFileSync(f, "sha256").digest));
    } finally {
      await pool.close();
    }
  });

  test("digestFd hashes the given size of an open file", async () => {
    const pool = new DigestPool({ inlineMax: 0, splitMin: 0, chunkSize: 4096 });
    const f = join(dir, "fdfile");
    writeFileSync(f, ruleA(50_000));
    const fd = openSync(f, "r");
    try {
      const full = await pool.digestFd(fd, "sha256");
      expect(toHex(full.digest)).toBe(toHex(digestFileSync(f, "sha256").digest));
      const part = await pool.digestFd(fd, "sha256", 4097);
      writeFileSync(join(dir, "fdpart"), ruleA(4097));
      expect(toHex(part.digest)).toBe(toHex(digestFileSync(join(dir, "fdpart"), "sha256").digest));
      // asking for more than the file holds: the file "shrank"
      await expect(pool.digestFd(fd, "sha256", 60_000, f)).rejects.toThrow(`${f}: file shrank while it was being read`);
    } finally {
      closeSync(fd);
      await pool.close();
    }
  });

  test("digestPaths: results in order, stops at the first failure (sequential and pool phases)", async () => {
    const paths: string[] = [];
    for (let i = 0; i < 60; i++) {
      const p = join(dir, `dp${i}`);
      writeFileSync(p, ruleA(i * 1000).map((b) => b ^ i));
      paths.push(p);
    }
    for (const sequentialMs of [0, 1e9]) {
      const seen: string[] = [];
      await digestPaths(paths, "sha256", (p, d) => seen.push(`${p} ${toHex(d.digest)}`), { sequentialMs });
      expect(seen).toEqual(paths.map((p) => `${p} ${toHex(digestFileSync(p, "sha256").digest)}`));
      const bad = [...paths.slice(0, 30), join(dir, "nope"), ...paths.slice(30)];
      const got: string[] = [];
      await expect(digestPaths(bad, "sha512", (p) => got.push(p), { sequentialMs })).rejects.toThrow(`${join(dir, "nope")}: no such file or directory`);
      expect(got).toEqual(paths.slice(0, 30));
    }
  });

  test("a closed pool refuses work", async () => {
    const pool = new DigestPool();
    await pool.close();
    await expect(pool.digestFile(join(dir, "file"), "sha256")).rejects.toThrow(/closed/);
  });
});
