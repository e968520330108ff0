// The initramfs agent: `cfsboot setup-root` from exec to the mounted root,
// on a 5,000-file image (repository written by host/repo.ts), against
// util-linux `mount` doing the same mounts without any verification; and
// the executable's start-up, with the build variants that could shrink it.
//
// Run as root: every run gets its own mount namespace (`unshare -m`), so
// nothing stays mounted. `setup` also prints, once:
//   - the agent's own work as it logs it (kargs → root mounted; best and
//     median of 15 runs) and its start-up (exec → first line of JS);
//   - sizes of the executable, of build variants and compressed sizes
//     (zstd -3/-9/-15; zstd -19 and xz -6 with CFSBOOT_BENCH_SLOW=1, each
//     over a minute of CPU);
// The timed benchmarks compare:
//   1. setup-root vs util-linux mount (file-backed EROFS on our side; mount(8)
//      2.38 always sets up a loop device for a file);
//   2. setup-root --loop vs the same;
//   3. start-up: `cfsboot setup-root --help` vs a compiled hello-world (the
//      Bun runtime's own floor);
//   4. start-up of dist/cfsboot (built with --splitting) vs the same without;
//   5. start-up of a --bytecode build vs dist/cfsboot.
// (An agent-only bundle appears in the figures: the floor a separate agent
// executable would reach.)

import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";

import { benchDir, cfsboot, defineBenchmarks, hasTool, projectRoot, type Benchmark } from "./lib.ts";
import { buildSysrootWithRepo, kargFor, makeSourceTree, type Sysroot } from "../test/helpers/sysroot.ts";

const FILES = 5000;
const isRoot = process.getuid?.() === 0;
const dir = join(benchDir(), `setup-root-${FILES}`);
const fixtureFile = join(dir, "fixture.json");
const variants = join(dir, "variants");
const bun = process.execPath;

function sh(cmd: string, args: string[], opts: { cwd?: string } = {}): string {
  const r = spawnSync(cmd, args, { encoding: "utf8", cwd: opts.cwd, maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

interface Fixture {
  sysroot: Sysroot;
  cmdline: string;
  root: string;
  tmp: string;
  mnt: string;
}

/** Paths that do not depend on the image (the argv of the timed runs). */
const paths = {
  sysroot: join(dir, "sysroot"),
  cmdline: join(dir, "cmdline"),
  root: join(dir, "newroot"),
  tmp: join(dir, "run"),
  mnt: join(dir, "erofs"),
  mountScript: join(dir, "mount.sh"),
};

let fixture: Fixture | null = null;

/** The 5,000-file sysroot, made once and kept in benchDir(). */
async function ensureFixture(): Promise<Fixture> {
  if (fixture) return fixture;
  if (existsSync(fixtureFile)) return (fixture = JSON.parse(readFileSync(fixtureFile, "utf8")) as Fixture);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const source = join(dir, "source");
  makeSourceTree(source, { files: FILES });
  const sysroot = await buildSysrootWithRepo(paths.sysroot, source, { alg: "sha512" });
  writeFileSync(paths.cmdline, `root=UUID=00000000-0000-0000-0000-000000000000 rw ${kargFor(sysroot)} quiet\n`);
  const f: Fixture = { sysroot, cmdline: paths.cmdline, root: paths.root, tmp: paths.tmp, mnt: paths.mnt };
  for (const d of [f.root, f.tmp, f.mnt]) mkdirSync(d, { recursive: true });
  writeFileSync(paths.mountScript, `${mountScript(f)}\n`);
  writeFileSync(fixtureFile, JSON.stringify(f));
  return (fixture = f);
}

function agentArgv(exe: string, f: { cmdline: string; root: string; tmp: string } = paths, extra: string[] = []): string[] {
  return [
    "unshare", "--mount", "--propagation", "private", "--",
    exe, "setup-root", "--cmdline", f.cmdline, "--sysroot", paths.sysroot, "--root", f.root,
    "--config", join(dir, "no-config.toml"), "--tmpdir", f.tmp, "--log", "stderr", ...extra,
  ];
}

/** The same mounts with util-linux mount(8): EROFS, the composefs overlay, /sysroot, /etc, /var. */
function mountScript(f: Fixture): string {
  const s = f.sysroot;
  const img = join(s.repo, "images", s.image.digest);
  const script = [
    `mount -t erofs -o ro "${img}" "${f.mnt}"`,
    `mount -t overlay -o ro,metacopy=on,redirect_dir=on,lowerdir="${f.mnt}::${s.repo}/objects" "composefs:${s.image.digest}" "${f.root}"`,
    `mount --bind -o ro "${s.dir}" "${f.root}/sysroot"`,
    `mount --bind "${s.state}/etc" "${f.root}/etc"`,
    `mount --bind "${s.dir}/state/os/default/var" "${f.root}/var"`,
  ].join(" && ");
  return script;
}

const mountArgv = ["unshare", "--mount", "--propagation", "private", "--", "sh", paths.mountScript];

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

interface AgentFigures {
  /** kargs → root mounted, wall ms (the agent's own log). */
  work: number[];
  /** The same without the userspace image digest (excluded from the 50 ms budget). */
  workNoDigest: number[];
  /** CPU ms of that work. */
  cpu: number[];
  /** exec → first line of JS, ms. */
  startup: number[];
  rssKiB: number[];
  /** exec → exit, ms. */
  wall: number[];
}

/** The agent's own figures from its log, over n runs. */
function agentFigures(exe: string, f: Fixture, n: number, extra: string[] = []): AgentFigures {
  const a: AgentFigures = { work: [], workNoDigest: [], cpu: [], startup: [], rssKiB: [], wall: [] };
  for (let i = 0; i < n; i++) {
    const out = join(dir, "time.out");
    const t0 = performance.now();
    const r = spawnSync("/usr/bin/time", ["-f", "%M", "-o", out, "--", ...agentArgv(exe, f, extra)], { encoding: "utf8" });
    a.wall.push(performance.now() - t0);
    if (r.status !== 0) throw new Error(`setup-root failed: ${r.stderr}`);
    const w = /in ([\d.]+) ms \(CPU ([\d.]+) ms\)\n?$/.exec(r.stderr.trim());
    const d = /digest checked in userspace \(([\d.]+) ms\)/.exec(r.stderr);
    const s = /started \((\d+) ms after exec/.exec(r.stderr);
    if (w) {
      a.work.push(Number(w[1]));
      a.cpu.push(Number(w[2]));
      a.workNoDigest.push(Number(w[1]) - (d ? Number(d[1]) : 0));
    }
    if (s) a.startup.push(Number(s[1]));
    a.rssKiB.push(Number(readFileSync(out, "utf8").trim().split("\n").pop()));
  }
  return a;
}

const fig = (xs: number[]) => (xs.length ? `best ${Math.min(...xs).toFixed(1)}, median ${median(xs).toFixed(1)} ms` : "-");

function printFigures(label: string, a: AgentFigures): void {
  process.stdout.write(
    `  ${label}\n` +
      `    agent's own work (kargs → root mounted): ${fig(a.work)}; without the userspace image digest: ${fig(a.workNoDigest)}; CPU ${fig(a.cpu)}\n` +
      `    exec → JS: ${fig(a.startup)}; exec → exit: ${fig(a.wall)}; peak RSS ${(Math.max(...a.rssKiB) / 1024).toFixed(1)} MiB\n`,
  );
}

/** Build variants of the executable once (each `bun build --compile`, ~1–5 s). */
function buildVariants(): Record<string, string> {
  mkdirSync(variants, { recursive: true });
  const out: Record<string, string> = {};
  const build = (name: string, args: string[], entry: string[] = ["host/main.ts", "host/digest-worker.ts"]) => {
    const file = join(variants, name);
    sh(bun, ["build", "--compile", ...args, ...entry, "--outfile", file], { cwd: projectRoot });
    out[name] = file;
  };
  build("no-minify", ["--splitting"]);
  build("no-splitting", ["--minify"]);
  build("splitting", ["--minify", "--splitting"]);
  build("splitting-bytecode", ["--minify", "--splitting", "--bytecode", "--format=esm"]);
  const agentEntry = join(variants, "agent-entry.ts");
  writeFileSync(agentEntry, `import { runSetupRoot } from "${projectRoot}initramfs/main.ts";\nprocess.exitCode = await runSetupRoot(process.argv.slice(3));\n`);
  build("agent-only", ["--minify"], [agentEntry]);
  const hello = join(variants, "hello.ts");
  writeFileSync(hello, 'process.stdout.write("usage: hello\\n");\n');
  build("hello", ["--minify"], [hello]);
  return out;
}

const MB = (n: number) => `${(n / 1e6).toFixed(1)} MB`;

function compressedSize(file: string, cmd: string[]): { bytes: number; seconds: number } {
  const t0 = performance.now();
  const r = spawnSync("sh", ["-c", `${cmd.join(" ")} < "${file}" | wc -c`], { encoding: "utf8" });
  return { bytes: Number(r.stdout.trim()), seconds: (performance.now() - t0) / 1000 };
}

let printed = false;
async function setupAndReport(): Promise<void> {
  const f = await ensureFixture();
  if (printed) return;
  printed = true;
  const exe = cfsboot();
  const w = process.stdout;
  const v = buildVariants();
  w.write(`\nsetup-root figures (${FILES}-file image, sha512 repository, insecure karg: the image digest is computed in userspace)\n`);
  const img = statSync(join(f.sysroot.repo, "images", f.sysroot.image.digest)).size;
  w.write(`  image ${MB(img)}, ${FILES} generated files + the test tree\n`);
  for (const [label, extra] of [["dist/cfsboot, file-backed EROFS", []], ["dist/cfsboot, loop device", ["--loop"]]] as const) {
    printFigures(label, agentFigures(exe, f, 15, [...extra]));
  }
  for (const name of ["no-splitting", "splitting-bytecode", "agent-only"]) printFigures(`${name} build`, agentFigures(v[name]!, f, 9));
  w.write("  executable sizes:\n");
  for (const [name, file] of [["dist/cfsboot", exe], ...Object.entries(v)] as const) w.write(`    ${name.padEnd(16)} ${MB(statSync(file).size)}\n`);
  w.write(`  compressed (as in an initramfs cpio), dist/cfsboot:\n`);
  const levels: string[][] = [["zstd", "-3", "-T1"], ["zstd", "-9", "-T1"], ["zstd", "-15", "-T0"]];
  if (process.env.CFSBOOT_BENCH_SLOW === "1") levels.push(["zstd", "-19", "-T0"], ["xz", "-6", "-T0"]);
  for (const l of levels) {
    if (!hasTool(l[0]!)) continue;
    const c = compressedSize(exe, [...l, "-c"]);
    w.write(`    ${l.join(" ").padEnd(16)} ${MB(c.bytes)} (${c.seconds.toFixed(1)} s)\n`);
  }
}

const skip = () => (!isRoot ? "needs root (mount namespaces)" : !hasTool("unshare") ? "unshare(1) missing" : undefined);
const exitZero = (a: { status: number | null; stderr: string }, b: { status: number | null; stderr: string }) =>
  a.status !== 0 ? `ours exited ${a.status}: ${a.stderr.trim().split("\n").pop()}` : b.status !== 0 ? `reference exited ${b.status}: ${b.stderr.trim()}` : undefined;

const v = (name: string) => join(variants, name);

const list: Benchmark[] = [
  {
    name: `setup-root, ${FILES}-file image: exec → root mounted (vs util-linux mount, no verification)`,
    runs: 9,
    skip,
    setup: setupAndReport,
    limits: "Bun start-up (exec → JS) is most of our time; mount(8) checks nothing (no digest, meta.json, kargs or state)",
    ours: { label: "cfsboot setup-root", argv: agentArgv(cfsboot()) },
    reference: { label: "mount(8) ×5", argv: mountArgv },
    check: exitZero,
  },
  {
    name: `setup-root --loop, ${FILES}-file image (vs util-linux mount)`,
    runs: 5,
    skip,
    setup: setupAndReport,
    ours: { label: "cfsboot setup-root --loop", argv: agentArgv(cfsboot(), paths, ["--loop"]) },
    reference: { label: "mount(8) ×5", argv: mountArgv },
    check: exitZero,
  },
  {
    name: "start-up: cfsboot setup-root --help (vs a compiled hello world)",
    runs: 15,
    skip,
    setup: setupAndReport,
    limits: "the Bun runtime's own start-up and paging in the 110 MB executable",
    ours: { label: "cfsboot", argv: [cfsboot(), "setup-root", "--help"] },
    reference: { label: "hello", argv: [v("hello")] },
    check: exitZero,
  },
  {
    name: "start-up: dist build (--splitting) vs the same without --splitting",
    runs: 15,
    skip,
    setup: setupAndReport,
    limits: "without splitting every command parses the whole bundle (the host CLI, yargs) before running",
    ours: { label: "splitting", argv: [cfsboot(), "setup-root", "--help"] },
    reference: { label: "no-splitting", argv: [v("no-splitting"), "setup-root", "--help"] },
    check: exitZero,
  },
  {
    name: "start-up: --bytecode --format=esm on top (vs dist)",
    runs: 15,
    skip,
    setup: setupAndReport,
    limits: "+4 MB executable; saves parsing the agent's own code",
    ours: { label: "bytecode", argv: [v("splitting-bytecode"), "setup-root", "--help"] },
    reference: { label: "dist", argv: [cfsboot(), "setup-root", "--help"] },
    check: exitZero,
  },
];

export default defineBenchmarks(list);
