// `npm run bench [-- NAME…] [--runs=N] [--json=FILE]`
//
// Runs every bench/*.bench.ts (or those named: `fsverity` or
// `bench/fsverity.bench.ts`; a benchmark name substring also selects) and
// prints, per benchmark, our best wall time and the reference tool's from the
// same run, the ratio, throughput, CPU time and peak RSS of both. Exit status
// 1 when a command fails or its output differs from the reference's; a missed
// goal is reported but is not a failure.

import { readdirSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import {
  type Benchmark,
  type RunResult,
  fmtMiB,
  fmtRate,
  fmtSeconds,
  hasTool,
  loadAverage,
  projectRoot,
  runMeasured,
  sameStdout,
  TIME,
} from "./lib.ts";

interface Outcome {
  file: string;
  name: string;
  ours?: Summary;
  reference?: Summary;
  ratio?: number;
  goal?: number;
  goalMet?: boolean;
  limits?: string;
  skipped?: string;
  error?: string;
}

interface Summary {
  label: string;
  bestWallMs: number;
  wallMs: number[];
  /** CPU (user + sys) of the best run. */
  cpuMs: number;
  /** Highest peak RSS over all runs. */
  maxRssKiB: number;
  throughput: string;
}

function parseArgs(argv: string[]) {
  const names: string[] = [];
  let runs: number | undefined;
  let json: string | undefined;
  for (const a of argv) {
    if (a.startsWith("--runs=")) runs = Number(a.slice(7));
    else if (a.startsWith("--json=")) json = a.slice(7);
    else if (a === "--help" || a === "-h") {
      process.stdout.write("usage: bun bench/run.ts [NAME…] [--runs=N] [--json=FILE]\n");
      process.exit(0);
    } else names.push(a);
  }
  if (runs !== undefined && !(Number.isInteger(runs) && runs > 0)) {
    process.stderr.write("bench: --runs must be a positive integer\n");
    process.exit(2);
  }
  return { names, runs, json };
}

function summarize(label: string, bytes: number | undefined, rs: RunResult[]): Summary {
  const best = rs.reduce((a, b) => (b.wallMs < a.wallMs ? b : a));
  return {
    label,
    bestWallMs: best.wallMs,
    wallMs: rs.map((r) => Math.round(r.wallMs)),
    cpuMs: best.userMs + best.sysMs,
    maxRssKiB: Math.max(...rs.map((r) => r.maxRssKiB)),
    throughput: fmtRate(bytes, best.wallMs),
  };
}

const labelOf = (s: { label?: string; argv: string[] }) => s.label ?? basename(s.argv[0] ?? "?");

async function runOne(file: string, b: Benchmark, runsOverride: number | undefined): Promise<Outcome> {
  const o: Outcome = { file, name: b.name, goal: b.goal, limits: b.limits };
  const why = b.skip?.();
  if (why) return { ...o, skipped: why };
  await b.setup?.();
  const check = b.check ?? sameStdout;
  const runs = runsOverride ?? b.runs ?? 5;
  const ours: RunResult[] = [];
  const ref: RunResult[] = [];
  // warm-up (untimed): also the output check
  b.beforeEach?.();
  const wo = runMeasured(b.ours);
  b.beforeEach?.();
  const wr = runMeasured(b.reference);
  const bad = check(wo, wr);
  if (bad) return { ...o, error: bad };
  for (let i = 0; i < runs; i++) {
    // alternate the order so drift in machine load hits both sides
    const order = i % 2 === 0 ? ["o", "r"] : ["r", "o"];
    for (const s of order) {
      b.beforeEach?.();
      const r = runMeasured(s === "o" ? b.ours : b.reference);
      if (r.status !== 0) return { ...o, error: `${s === "o" ? "ours" : "reference"} exited ${r.status}: ${r.stderr.trim()}` };
      (s === "o" ? ours : ref).push(r);
    }
  }
  o.ours = summarize(labelOf(b.ours), b.bytes, ours);
  o.reference = summarize(labelOf(b.reference), b.bytes, ref);
  o.ratio = o.ours.bestWallMs / o.reference.bestWallMs;
  if (b.goal !== undefined) o.goalMet = o.ratio <= b.goal;
  return o;
}

function print(o: Outcome): void {
  const w = process.stdout;
  w.write(`\n${o.name}   [${o.file}]\n`);
  if (o.skipped) return void w.write(`  skipped: ${o.skipped}\n`);
  if (o.error) return void w.write(`  FAILED: ${o.error}\n`);
  const width = Math.max(o.ours!.label.length, o.reference!.label.length);
  for (const s of [o.ours!, o.reference!]) {
    w.write(
      `  ${s.label.padEnd(width)}  ${fmtSeconds(s.bestWallMs).padStart(9)}  ${s.throughput.padStart(10)}` +
        `  cpu ${fmtSeconds(s.cpuMs).padStart(9)}  peak RSS ${fmtMiB(s.maxRssKiB).padStart(10)}   runs ${s.wallMs.join(" ")} ms\n`,
    );
  }
  const goal = o.goal === undefined ? "" : `   goal ≤ ${o.goal.toFixed(2)}: ${o.goalMet ? "met" : "MISSED"}`;
  const cpuRatio = o.ours!.cpuMs / o.reference!.cpuMs;
  w.write(`  ratio ${o.ratio!.toFixed(2)} (wall time)${goal};  cpu-time ratio ${cpuRatio.toFixed(2)} (less sensitive to load)\n`);
  if (o.limits) w.write(`  limited by: ${o.limits}\n`);
}

async function main(): Promise<number> {
  const { names, runs, json } = parseArgs(process.argv.slice(2));
  if (!hasTool(TIME)) {
    process.stderr.write(`bench: ${TIME} is missing (Debian package "time")\n`);
    return 1;
  }
  const dir = join(projectRoot, "bench");
  const files = readdirSync(dir)
    .filter((f) => f.endsWith(".bench.ts"))
    .sort();
  // An argument selects a file (`fsverity`, `bench/fsverity.bench.ts`) or,
  // failing that, every benchmark whose name contains it.
  const fileOf = (n: string) => files.find((f) => f === basename(n) || f === `${n}.bench.ts`);
  const wantedFiles = new Set(names.map(fileOf).filter((f): f is string => f !== undefined));
  const substrings = names.filter((n) => fileOf(n) === undefined);
  const selected = (f: string, b: Benchmark) => names.length === 0 || wantedFiles.has(f) || substrings.some((n) => b.name.includes(n));
  process.stdout.write(`cfsboot benchmarks — load average ${loadAverage()} (2 cores shared: ratios are only comparable within one run)\n`);
  const outcomes: Outcome[] = [];
  for (const f of files) {
    if (wantedFiles.size > 0 && substrings.length === 0 && !wantedFiles.has(f)) continue;
    const mod = (await import(join(dir, f))) as { default: Benchmark[] };
    for (const b of mod.default) {
      if (!selected(f, b)) continue;
      const o = await runOne(f, b, runs).catch((e: unknown) => ({ file: f, name: b.name, error: String(e) }) as Outcome);
      print(o);
      outcomes.push(o);
    }
  }
  process.stdout.write(`\nload average at the end ${loadAverage()}\n`);
  if (outcomes.length === 0) process.stderr.write("bench: nothing selected\n");
  process.stdout.write("\nsummary\n");
  for (const o of outcomes) {
    const r = o.ratio === undefined ? (o.skipped ? "skipped" : "FAILED") : `ratio ${o.ratio.toFixed(2)}${o.goalMet === false ? " (goal missed)" : ""}`;
    process.stdout.write(`  ${o.name.padEnd(50)} ${r}\n`);
  }
  if (json) writeFileSync(json, `${JSON.stringify({ loadAverage: loadAverage(), outcomes }, null, 2)}\n`);
  return outcomes.some((o) => o.error) || outcomes.length === 0 ? 1 : 0;
}

process.exitCode = await main();
