// `cfsboot fsverity digest` vs fsverity-utils `fsverity digest`.
//
// 1 GiB file, warm page cache, best of N, both algorithms; and many small
// files in one call (where per-process startup and per-file cost dominate).

import { mkdirSync, existsSync, writeFileSync, renameSync } from "node:fs";
import { join } from "node:path";
import { benchDir, cfsboot, dataFile, defineBenchmarks, hasTool, warm, type Benchmark } from "./lib.ts";

const GiB = 1 << 30;
const SMALL = 2000;
const SMALL_SIZE = 16 * 1024;

function bigFile(): string {
  const f = dataFile("fsverity-1GiB", GiB);
  warm(f);
  return f;
}

/** SMALL files of SMALL_SIZE bytes each, made once. */
function smallFiles(): string {
  const d = join(benchDir(), `fsverity-${SMALL}x${SMALL_SIZE}`);
  if (!existsSync(join(d, "done"))) {
    mkdirSync(d, { recursive: true });
    const src = new Uint8Array(SMALL_SIZE);
    for (let i = 0; i < SMALL; i++) {
      for (let j = 0; j < SMALL_SIZE; j++) src[j] = (i * 7 + j * 13) & 0xff;
      writeFileSync(join(d, `f${i}.tmp`), src);
      renameSync(join(d, `f${i}.tmp`), join(d, `f${i}`));
    }
    writeFileSync(join(d, "done"), "");
  }
  return d;
}

const noFsverity = () => (hasTool("fsverity") ? undefined : "fsverity (Debian package fsverity) is not installed");
const smallNames = Array.from({ length: SMALL }, (_, i) => `f${i}`);

const list: Benchmark[] = [];
for (const alg of ["sha256", "sha512"]) {
  const file = join(benchDir(), "fsverity-1GiB");
  list.push({
    name: `fsverity digest, 1 GiB file, ${alg}`,
    bytes: GiB,
    runs: 5,
    goal: 1.0,
    limits:
      alg === "sha256"
        ? "SHA-256 speed (SHA-NI, ~1.5 GB/s per core in both); we hash on both cores, fsverity-utils on one"
        : "SHA-512 speed: BoringSSL in Bun is ~25% slower per core than OpenSSL; both cores make up for it",
    skip: noFsverity,
    setup: () => void bigFile(),
    ours: { label: "cfsboot", argv: [cfsboot(), "fsverity", "digest", `--hash-alg=${alg}`, file] },
    reference: { label: "fsverity", argv: ["fsverity", "digest", `--hash-alg=${alg}`, file] },
  });
}
{
  const d = join(benchDir(), `fsverity-${SMALL}x${SMALL_SIZE}`);
  list.push({
    name: `fsverity digest, ${SMALL} files of 16 KiB, sha512`,
    bytes: SMALL * SMALL_SIZE,
    runs: 5,
    limits: "process start-up (cfsboot ~0.1 s, mostly loading the CLI) and per-file open/fstat/read in the main thread",
    skip: noFsverity,
    setup: () => void smallFiles(),
    ours: { label: "cfsboot", cwd: d, argv: [cfsboot(), "fsverity", "digest", "--hash-alg=sha512", ...smallNames] },
    reference: { label: "fsverity", cwd: d, argv: ["fsverity", "digest", "--hash-alg=sha512", ...smallNames] },
  });
}

export default defineBenchmarks(list);
