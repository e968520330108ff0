// Small helpers of the VM harness: running host commands, hashing, the cache
// directory, and keeping the Debian mirror's address out of every output.
//
// The harness is test machinery, not part of the cfsboot executable: it may
// use node:fs/child_process freely and throws plain Errors (a failure here is
// a broken test environment, reported with the tool's own stderr).

import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";

/** Where the harness keeps its caches (outside the work tree). */
export function cacheDir(): string {
  return process.env.CFSBOOT_VM_CACHE ?? "/var/cache/cfsboot-vm";
}

let pruned = false;

/**
 * Scratch space for builds and runs: under the cache dir (same filesystem, so
 * renames are atomic). Leftovers of killed builds older than 6 hours are
 * removed the first time a process asks for it.
 */
export function scratchDir(): string {
  const d = process.env.CFSBOOT_VM_TMP ?? join(cacheDir(), "tmp");
  mkdirSync(d, { recursive: true });
  if (!pruned) {
    pruned = true;
    for (const n of readdirSync(d)) {
      try {
        if (Date.now() - statSync(join(d, n)).mtimeMs > 6 * 3_600_000) rmSync(join(d, n), { recursive: true, force: true });
      } catch {
        // raced with another process: fine
      }
    }
  }
  return d;
}

/** The directory holding this file's siblings (vm/lib) and the vm/ scripts. */
export const vmDir = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
export const projectDir = dirname(vmDir);

// ---------------------------------------------------------------------------
// Secrets that must never reach a file: the mirror URL (and its host name).

const redactions = new Set<string>();

/** Register a string (e.g. the mirror URL) that is replaced by `$MIRROR` in every log and error. */
export function addRedaction(s: string): void {
  if (s.length < 4) return;
  redactions.add(s);
  try {
    const host = new URL(s).host;
    if (host.length >= 4) redactions.add(host);
  } catch {
    // not a URL: the string alone is enough
  }
}

export function redact(text: string): string {
  let out = text;
  for (const r of redactions) out = out.split(r).join("$MIRROR");
  return out;
}

// ---------------------------------------------------------------------------
// Running commands.

export interface RunOptions {
  /** stdin contents */
  input?: string | Uint8Array;
  cwd?: string;
  env?: Record<string, string | undefined>;
  /** Append redacted stdout+stderr to this log file. */
  log?: string;
  /** Kill after this many ms (default: no limit). */
  timeoutMs?: number;
  /** Do not throw on a non-zero exit. */
  allowFail?: boolean;
}

export interface RunResult {
  status: number;
  stdout: Buffer;
  stderr: string;
}

function tail(s: string, lines = 30): string {
  const l = s.trimEnd().split("\n");
  return l.slice(-lines).join("\n");
}

function describeCmd(argv: string[]): string {
  return redact(argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(" ")).slice(0, 400);
}

/** Run a command synchronously (for short tools: mtools, debugfs, sfdisk, mke2fs). */
export function run(argv: string[], opts: RunOptions = {}): RunResult {
  const [cmd, ...args] = argv;
  if (cmd === undefined) throw new Error("run: empty argv");
  const r = spawnSync(cmd, args, {
    input: opts.input,
    cwd: opts.cwd,
    env: opts.env ? { ...opts.env } : process.env,
    maxBuffer: 1 << 30,
    timeout: opts.timeoutMs,
  });
  const stderr = r.stderr?.toString("utf8") ?? "";
  const stdout = r.stdout ?? Buffer.alloc(0);
  if (opts.log) appendLog(opts.log, `$ ${describeCmd(argv)}\n${stdout.toString("utf8")}${stderr}`);
  const status = r.status ?? (r.signal ? 128 : 127);
  if (r.error && !opts.allowFail) throw new Error(`${describeCmd(argv)}: ${redact(String(r.error))}`);
  if (status !== 0 && !opts.allowFail) {
    throw new Error(`${describeCmd(argv)}: exit ${status}${r.signal ? ` (${r.signal})` : ""}\n${redact(tail(stderr || stdout.toString("utf8")))}`);
  }
  return { status, stdout, stderr };
}

/**
 * Run a long command asynchronously (debootstrap, apt-get, dracut), streaming
 * its redacted output into `log`. Throws with the log tail on failure.
 */
export async function runLong(argv: string[], opts: RunOptions & { log: string }): Promise<void> {
  const [cmd, ...args] = argv;
  if (cmd === undefined) throw new Error("runLong: empty argv");
  appendLog(opts.log, `$ ${describeCmd(argv)}\n`);
  const child = spawn(cmd, args, {
    cwd: opts.cwd,
    env: opts.env ? { ...opts.env } : process.env,
    stdio: [opts.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
  });
  if (opts.input !== undefined) child.stdin?.end(opts.input);
  let captured = "";
  const onData = (b: Buffer) => {
    const t = redact(b.toString("utf8"));
    captured = (captured + t).slice(-20000);
    appendLog(opts.log, t);
  };
  child.stdout?.on("data", onData);
  child.stderr?.on("data", onData);
  let timer: ReturnType<typeof setTimeout> | undefined;
  if (opts.timeoutMs) timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs);
  const status: number = await new Promise((res) => {
    child.on("error", (e) => {
      captured += String(e);
      res(127);
    });
    child.on("close", (code, sig) => res(code ?? (sig ? 128 : 127)));
  });
  if (timer) clearTimeout(timer);
  if (status !== 0 && !opts.allowFail) {
    throw new Error(`${describeCmd(argv)}: exit ${status} (log: ${opts.log})\n${tail(captured)}`);
  }
}

export function appendLog(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, redact(text), { flag: "a" });
}

// ---------------------------------------------------------------------------
// Files.

/** Write a file atomically: temp file in the same directory, fsync, rename, fsync dir. */
export function writeAtomic(path: string, data: string | Uint8Array, mode = 0o644): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data, { mode });
  const fd = openSync(tmp, "r");
  fsyncSync(fd);
  closeSync(fd);
  renameSync(tmp, path);
  fsyncDir(dirname(path));
}

export function fsyncDir(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export function sha256(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** Hash of a file or directory tree: names, modes, symlink targets and contents, in byte order. */
export function hashTree(path: string): string {
  const h = createHash("sha256");
  const walk = (p: string, rel: string) => {
    const st = statSync(p, { throwIfNoEntry: true });
    if (st.isDirectory()) {
      h.update(`d ${rel} ${st.mode & 0o7777}\n`);
      for (const name of readdirSync(p).sort()) walk(join(p, name), `${rel}/${name}`);
    } else {
      h.update(`f ${rel} ${st.mode & 0o7777} ${st.size}\n`);
      h.update(readFileSync(p));
    }
  };
  walk(path, "");
  return h.digest("hex");
}

export function rmrf(path: string): void {
  rmSync(path, { recursive: true, force: true });
}

/** A fresh directory under the scratch dir. */
/** Copy a (sparse) disk image keeping it sparse; `dest` is replaced. */
export function copySparse(src: string, dest: string): void {
  mkdirSync(dirname(dest), { recursive: true });
  rmrf(dest);
  run(["cp", "--sparse=always", src, dest]);
}

export function makeScratch(prefix: string): string {
  const d = join(scratchDir(), `${prefix}-${Date.now().toString(36)}-${process.pid}-${Math.random().toString(36).slice(2, 6)}`);
  mkdirSync(d, { recursive: true });
  return d;
}

export function fileSize(path: string): number {
  return statSync(path).size;
}

/** Allocated bytes of a (sparse) file. */
export function allocatedSize(path: string): number {
  return statSync(path).blocks * 512;
}

/** Progress line on stderr (tests and CI logs show what the harness is doing). */
export function note(msg: string): void {
  process.stderr.write(`[vm] ${redact(msg)}\n`);
}

export function elapsed(startMs: number): string {
  return `${((performance.now() - startMs) / 1000).toFixed(1)} s`;
}
