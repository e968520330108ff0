// Running the external programs cfsboot relies on (objcopy, ukify, sfdisk,
// mke2fs, mtools, podman, skopeo …): one place that turns "not installed",
// a non-zero exit or a signal into a one-line CfsError naming the program and
// its last stderr line, and that finds programs on PATH.

import { spawn, spawnSync } from "node:child_process";
import { accessSync, constants as fsConstants } from "node:fs";
import { delimiter, join } from "node:path";

import { CfsError } from "../shared/errors.ts";

/** Debian packages that ship the tools, for "not installed" messages. */
const PACKAGES: Record<string, string> = {
  objcopy: "binutils",
  objdump: "binutils",
  ukify: "systemd-ukify",
  sfdisk: "fdisk",
  "mkfs.vfat": "dosfstools",
  mcopy: "mtools",
  mmd: "mtools",
  mdir: "mtools",
  mke2fs: "e2fsprogs",
  blkid: "util-linux",
  podman: "podman",
  skopeo: "skopeo",
  losetup: "mount",
  partx: "util-linux",
};

/** The path of an executable found on PATH (or `extra` directories), or null. */
export function findProgram(name: string, extra: readonly string[] = []): string | null {
  if (name.includes("/")) return isExecutable(name) ? name : null;
  const dirs = [...(process.env.PATH ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").split(delimiter), ...extra];
  for (const d of dirs) {
    if (d === "") continue;
    const p = join(d, name);
    if (isExecutable(p)) return p;
  }
  return null;
}

function isExecutable(p: string): boolean {
  try {
    accessSync(p, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export interface RunToolOptions {
  /** Text for error messages (default: the program name). */
  input?: string;
  cwd?: string;
  env?: Record<string, string | undefined>;
  /** Written to the program's stdin. */
  stdin?: string | Uint8Array;
  /** Let the program's stderr through to ours (its stdout is still captured). */
  inheritStderr?: boolean;
}

export interface ToolResult {
  stdout: string;
  stderr: string;
}

function notInstalled(cmd: string, input: string): CfsError {
  const base = cmd.split("/").pop()!;
  const pkg = PACKAGES[base];
  return new CfsError(input, `${base} is not installed${pkg !== undefined ? ` (Debian package ${pkg})` : ""}`);
}

function failure(cmd: string, input: string, code: number | null, signal: string | null, stderr: string): CfsError {
  const base = cmd.split("/").pop()!;
  const lines = stderr.split("\n").map((l) => l.trim()).filter((l) => l !== "");
  const last = lines[lines.length - 1]?.replace(/^time="[^"]*" level=\w+ msg="?/, "").replace(/"$/, "");
  const why = last ?? (signal !== null ? `killed by ${signal}` : `exit status ${code}`);
  return new CfsError(input, `${base} failed: ${why}`);
}

/** Run a program to completion; rejects with a CfsError on failure. */
export function runTool(cmd: string, args: readonly string[], opts: RunToolOptions = {}): Promise<ToolResult> {
  const input = opts.input ?? cmd;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: (opts.env ?? process.env) as NodeJS.ProcessEnv,
      stdio: [opts.stdin !== undefined ? "pipe" : "ignore", "pipe", opts.inheritStderr ? "inherit" : "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr?.on("data", (d: Buffer) => (err += d.toString()));
    child.on("error", (e: NodeJS.ErrnoException) => reject(e.code === "ENOENT" ? notInstalled(cmd, input) : new CfsError(input, `cannot run ${cmd}: ${e.message}`)));
    child.on("close", (code, signal) => {
      if (code === 0) resolve({ stdout: out, stderr: err });
      else reject(failure(cmd, input, code, signal, err));
    });
    if (opts.stdin !== undefined) {
      child.stdin!.on("error", () => {});
      child.stdin!.end(opts.stdin);
    }
  });
}

/** Synchronous runTool (for quick queries such as `bootctl --version`). */
export function runToolSync(cmd: string, args: readonly string[], opts: RunToolOptions = {}): ToolResult {
  const input = opts.input ?? cmd;
  const r = spawnSync(cmd, args, {
    cwd: opts.cwd,
    env: (opts.env ?? process.env) as NodeJS.ProcessEnv,
    input: opts.stdin,
    stdio: [opts.stdin !== undefined ? "pipe" : "ignore", "pipe", opts.inheritStderr ? "inherit" : "pipe"],
    maxBuffer: 256 << 20,
  });
  if (r.error !== undefined) {
    const e = r.error as NodeJS.ErrnoException;
    throw e.code === "ENOENT" ? notInstalled(cmd, input) : new CfsError(input, `cannot run ${cmd}: ${e.message}`);
  }
  const stdout = r.stdout?.toString() ?? "";
  const stderr = r.stderr?.toString() ?? "";
  if (r.status !== 0) throw failure(cmd, input, r.status, r.signal, stderr);
  return { stdout, stderr };
}

// ---- private mount namespaces ------------------------------------------------------

/** The re-executed command line of this process (compiled or `bun host/main.ts`). */
function selfArgv(): string[] {
  const a1 = process.argv[1] ?? "";
  const compiled = a1.startsWith("/$bunfs/") || a1.startsWith("B:/~BUN/");
  return compiled ? [process.execPath, ...process.argv.slice(2)] : [process.execPath, a1, ...process.argv.slice(2)];
}

export const MOUNT_NS_ENV = "CFSBOOT_PRIVATE_MOUNT_NS";

/**
 * Run this very command again in a private mount namespace (unshare(1)),
 * unless it already is; returns its exit status, or null when the caller is
 * the re-executed process and should do the work.
 */
export function reexecInMountNamespace(): number | null {
  if (process.env[MOUNT_NS_ENV] === "1") return null;
  const r = spawnSync("unshare", ["--mount", "--propagation", "private", "--", ...selfArgv()], {
    stdio: "inherit",
    env: { ...process.env, [MOUNT_NS_ENV]: "1" },
  });
  if (r.error !== undefined) throw new CfsError("unshare", `cannot run: ${r.error.message}`);
  return r.status ?? 1;
}
