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
        ? "SHA-256 speed: both hash ~1.5 GB/s per core (SHA-NI); we hash on both cores, fsverity-utils on one, " +
          "so the gain needs an idle second core; fixed ~0.15 s start-up (Bun + CLI) and worker start"
        : "SHA-512 speed: OpenSSL's libcrypto (through bun:ffi, host/hashing.ts) ~860-970 MB/s per core, as " +
          "fsverity-utils; we hash on both cores, so the gain needs an idle second core; fixed start-up and worker start",
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
    limits:
      "fixed costs: process start-up (~0.15 s CPU: Bun runtime + yargs), yargs parsing of 2000 arguments " +
      "(~0.2 s CPU), worker start; then SHA-512 per-core speed",
    skip: noFsverity,
    setup: () => void smallFiles(),
    ours: { label: "cfsboot", cwd: d, argv: [cfsboot(), "fsverity", "digest", "--hash-alg=sha512", ...smallNames] },
    reference: { label: "fsverity", cwd: d, argv: ["fsverity", "digest", "--hash-alg=sha512", ...smallNames] },
  });
}

export default defineBenchmarks(list);
