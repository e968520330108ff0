// Helpers for ratio benchmarks: cfsboot against the reference tool, in the
// same run, on the same data.
//
// A benchmark file `bench/<name>.bench.ts` default-exports an array of
// `Benchmark`s (use `defineBenchmarks`). `bench/run.ts` runs them: one
// untimed warm-up run of each side, then `runs` timed runs alternating
// ours/reference, and reports the best wall time of each, the ratio, the
// throughput and the peak RSS.
//
// Peak RSS comes from `/usr/bin/time -f %M` (Debian package `time`), which
// reads the child's wait4() rusage. Bun's own `resourceUsage()` is not usable
// for this: a child forked from Bun inherits Bun's memory high-water mark
// until it execs, so even `fsverity digest` (5 MB) reports ~25 MB there.

import { spawnSync } from "node:child_process";
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, readSync, renameSync, rmSync, statSync, writeSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";

export const projectRoot = new URL("..", import.meta.url).pathname;
export const TIME = "/usr/bin/time";

export interface Side {
  /** Label in the report (default: basename of argv[0]). */
  label?: string;
  argv: string[];
  cwd?: string;
  env?: Record<string, string>;
}

export interface RunResult {
  wallMs: number;
  userMs: number;
  sysMs: number;
  /** Peak resident set size of the child, KiB. */
  maxRssKiB: number;
  status: number | null;
  stdout: string;
  stderr: string;
}

export interface Benchmark {
  name: string;
  /** Bytes of input one run processes (for MB/s). */
  bytes?: number;
  /** Timed runs per side (best of); `--runs=N` overrides. Default 5. */
  runs?: number;
  /** The ratio ours/reference (best wall times) to stay at or below. */
  goal?: number;
  /** What limits the ratio, for the report. */
  limits?: string;
  /** Run once before anything else (make data, warm the page cache). */
  setup?: () => void | Promise<void>;
  /** Run before each run of either side (e.g. delete an output file). */
  beforeEach?: () => void;
  ours: Side;
  reference: Side;
  /** Compare outputs; return a message when they differ. Default: same stdout, both exit 0. */
  check?: (ours: RunResult, reference: RunResult) => string | undefined;
  /** Why this benchmark cannot run here, if it cannot (e.g. a missing tool). */
  skip?: () => string | undefined;
}

export function defineBenchmarks(list: Benchmark[]): Benchmark[] {
  return list;
}

/** Runs argv under /usr/bin/time; stdout/stderr captured. */
export function runMeasured(side: Side): RunResult {
  const out = join(tmpdir(), `cfsboot-bench-time-${process.pid}`);
  const t0 = performance.now();
  const r = spawnSync(TIME, ["-f", "%U %S %M", "-o", out, "--", ...side.argv], {
    cwd: side.cwd,
    env: side.env ? { ...process.env, ...side.env } : process.env,
    encoding: "latin1",
    maxBuffer: 1 << 30,
  });
  const wallMs = performance.now() - t0;
  if (r.error) throw new Error(`${side.argv[0]}: ${r.error.message}`);
  // The last line: time(1) prefixes "Command exited with non-zero status N" otherwise.
  const lines = readFileSync(out, "latin1").trim().split("\n");
  rmSync(out, { force: true });
  const [u, s, m] = (lines[lines.length - 1] ?? "").split(" ");
  return {
    wallMs,
    userMs: Number(u) * 1000,
    sysMs: Number(s) * 1000,
    maxRssKiB: Number(m),
    status: r.status,
    stdout: r.stdout,
    stderr: r.stderr,
  };
}

export function hasTool(name: string): boolean {
  return spawnSync("sh", ["-c", `command -v "$1"`, "sh", name], { stdio: "ignore" }).status === 0;
}

/** $CFSBOOT_EXE (to compare builds), else dist/cfsboot, built first if it does not exist. */
export function cfsboot(): string {
  if (process.env.CFSBOOT_EXE) return process.env.CFSBOOT_EXE;
  const exe = join(projectRoot, "dist/cfsboot");
  if (!existsSync(exe)) {
    const r = spawnSync(process.execPath, ["host/build.ts"], { cwd: projectRoot, stdio: "inherit" });
    if (r.status !== 0) throw new Error("building dist/cfsboot failed");
  }
  return exe;
}

/** Where benchmark data lives between runs ($CFSBOOT_BENCH_DIR, default /var/tmp/cfsboot-bench). */
export function benchDir(): string {
  const d = process.env.CFSBOOT_BENCH_DIR ?? "/var/tmp/cfsboot-bench";
  mkdirSync(d, { recursive: true });
  return d;
}

/**
 * A data file of `size` bytes in benchDir(), made once (atomically) and kept
 * for later runs. Content: a cheap deterministic pseudo-random stream, not
 * compressible and not sparse.
 */
export function dataFile(name: string, size: number): string {
  const path = join(benchDir(), name);
  if (existsSync(path) && statSync(path).size === size) return path;
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, "w");
  try {
    const chunk = new Uint32Array(1 << 20); // 4 MiB
    let x = 0x9e3779b9;
    for (let off = 0; off < size; off += chunk.byteLength) {
      for (let i = 0; i < chunk.length; i++) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        chunk[i] = x >>> 0;
      }
      const bytes = new Uint8Array(chunk.buffer, 0, Math.min(chunk.byteLength, size - off));
      for (let w = 0; w < bytes.byteLength; ) w += writeSync(fd, bytes, w, bytes.byteLength - w, off + w);
    }
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  return path;
}

/** Reads a file once so both sides start from a warm page cache. */
export function warm(path: string): void {
  const fd = openSync(path, "r");
  const buf = new Uint8Array(1 << 22);
  try {
    let off = 0;
    for (let n; (n = readSync(fd, buf, 0, buf.byteLength, off)) > 0; ) off += n;
  } finally {
    closeSync(fd);
  }
}

/** Default check: both exit 0 and print the same bytes. */
export function sameStdout(a: RunResult, b: RunResult): string | undefined {
  if (a.status !== 0) return `ours exited ${a.status}: ${a.stderr.trim().split("\n")[0]}`;
  if (b.status !== 0) return `reference exited ${b.status}: ${b.stderr.trim().split("\n")[0]}`;
  if (a.stdout !== b.stdout) return "stdout differs from the reference";
  return undefined;
}

export function loadAverage(): string {
  return loadavg()
    .map((l) => l.toFixed(2))
    .join(" ");
}

export const fmtSeconds = (ms: number) => `${(ms / 1000).toFixed(3)} s`;
export const fmtMiB = (kib: number) => `${(kib / 1024).toFixed(1)} MiB`;
export const fmtRate = (bytes: number | undefined, ms: number) =>
  bytes === undefined ? "-" : `${(bytes / (ms / 1000) / 1e6).toFixed(0)} MB/s`;
