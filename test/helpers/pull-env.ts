// Shared by the pull tests: run the cfsboot executable asynchronously (the
// test registry's log pipes must keep flowing while it runs), and an
// independent oracle for pulled trees: `umoci unpack` of the same image,
// adjusted by the OCI transform's documented rules, compared file by file
// with the image mounted from the repository (test/helpers/mount-compare.ts:
// file-backed EROFS + overlay over objects/, in a private mount namespace).

import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, lstatSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";

import * as sys from "../../shared/sys.ts";
import { cfsbootExe, projectRoot } from "./env.ts";
import { DEFAULT_MTIME, type ImageSpec, type LayerEntry } from "./oci-image.ts";

export interface CliRun {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Build dist/cfsboot when it is missing (npm test builds it first). */
export function ensureExe(): void {
  if (existsSync(cfsbootExe)) return;
  const r = spawnSync(process.execPath, ["host/build.ts"], { cwd: projectRoot, stdio: "inherit" });
  if (r.status !== 0) throw new Error("building dist/cfsboot failed");
}

/** Run `cfsboot ARGS…`; `killAfterMs` sends SIGKILL after that long. */
export function cfsboot(args: string[], opts: { env?: Record<string, string>; killAfterMs?: number; timeoutMs?: number } = {}): Promise<CliRun> {
  return new Promise((resolve) => {
    const env: Record<string, string> = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root", ...opts.env };
    const child = spawn(cfsbootExe, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timers: ReturnType<typeof setTimeout>[] = [];
    if (opts.killAfterMs !== undefined) timers.push(setTimeout(() => child.kill("SIGKILL"), opts.killAfterMs));
    timers.push(setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 120_000));
    child.on("close", (status, signal) => {
      for (const t of timers) clearTimeout(t);
      resolve({ status, signal, stdout, stderr });
    });
  });
}

/** `cfsboot ARGS…` as a child process the caller may kill; `done` resolves when it exits. */
export function cfsbootProcess(args: string[], opts: { env?: Record<string, string> } = {}): ChildProcess & { done: Promise<CliRun> } {
  const env: Record<string, string> = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root", ...opts.env };
  const child = spawn(cfsbootExe, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<CliRun>((resolve) => child.on("close", (status, signal) => resolve({ status, signal, stdout, stderr })));
  return Object.assign(child, { done });
}

/** Parse cfsctl-style pull output into its fields. */
export function parsePullOutput(out: string): Record<string, string> {
  const r: Record<string, string> = {};
  for (const line of out.split("\n")) {
    const m = /^(manifest|config|verity|tagged|objects)\s+(.*)$/.exec(line);
    if (m) r[m[1]!] = m[2]!;
    const b = /^Boot image: ([0-9a-f]+)$/.exec(line);
    if (b) r.boot = b[1]!;
  }
  return r;
}

function touch(path: string, t: { sec: number; nsec: number }): void {
  const r = spawnSync("touch", ["-h", "-d", `@${t.sec}.${String(t.nsec).padStart(9, "0")}`, path]);
  if (r.status !== 0) throw new Error(`touch ${path}: ${r.stderr.toString()}`);
}

const mtimeOf = (e: LayerEntry) => {
  const t = (e as { mtime?: number | { sec: number; nsec: number } }).mtime;
  if (t === undefined) return { sec: DEFAULT_MTIME, nsec: 0 };
  return typeof t === "number" ? { sec: t, nsec: 0 } : t;
};

/**
 * Unpack `layout:tag` with umoci into `bundle` and apply, to that tree, what
 * the OCI transform prescribes (oci.md §4) — root metadata = /usr's, /run
 * emptied (mtime = /usr's), xattrs other than security.capability removed —
 * plus directory mtimes as the layers' last entry for each directory says
 * (umoci lets later writes into a directory change its mtime). Returns the
 * rootfs path.
 */
export function umociReference(layoutDir: string, tag: string, bundle: string, spec: ImageSpec): string {
  rmSync(bundle, { recursive: true, force: true });
  const r = spawnSync("umoci", ["unpack", "--image", `${layoutDir}:${tag}`, bundle]);
  if (r.status !== 0) throw new Error(`umoci unpack: ${r.stderr.toString()}`);
  const root = join(bundle, "rootfs");
  const B = (s: string) => Buffer.from(s, "latin1");
  // xattr allowlist
  const stack = [root];
  while (stack.length > 0) {
    const p = stack.pop()!;
    for (const [name] of sys.readXattrs(p)) if (name !== "security.capability") sys.lremovexattr(p, name);
    if (lstatSync(B(p)).isDirectory()) for (const n of readdirSync(B(p), { encoding: "buffer" }) as Buffer[]) stack.push(`${p}/${n.toString("latin1")}`);
  }
  // directory mtimes from the last entry naming each directory
  const dirTimes = new Map<string, { sec: number; nsec: number }>();
  for (const l of spec.layers) {
    for (const e of l.entries) {
      const p = e.path.replace(/\/+$/, "");
      if (e.type === "dir") dirTimes.set(p, mtimeOf(e));
      else if (e.type !== "whiteout" && e.type !== "opaque") dirTimes.delete(p);
    }
  }
  // /run emptied (its mtime becomes /usr's)
  const usr = lstatSync(join(root, "usr"), { bigint: true });
  const usrTime = { sec: Number(usr.mtimeNs / 1_000_000_000n), nsec: Number(usr.mtimeNs % 1_000_000_000n) };
  if (existsSync(join(root, "run"))) {
    for (const n of readdirSync(join(root, "run"))) rmSync(join(root, "run", n), { recursive: true, force: true });
  }
  for (const [p, t] of dirTimes) {
    const full = join(root, Buffer.from(p, "utf8").toString("latin1"));
    if (existsSync(full) && lstatSync(full).isDirectory() && p !== "run") touch(full, t);
  }
  if (existsSync(join(root, "run"))) touch(join(root, "run"), { sec: usrTime.sec, nsec: usrTime.nsec });
  // root metadata from /usr (after everything else touched the root)
  spawnSync("chown", ["-h", `${usr.uid}:${usr.gid}`, root]);
  spawnSync("chmod", [(Number(usr.mode) & 0o7777).toString(8), root]);
  touch(root, usrTime);
  return root;
}

export interface MountCompare {
  entries: number;
  regular: number;
  bytes: number;
  mismatches: string[];
}

/** Mount `image` over `objects` (private namespace) and compare with `source` (mount-compare.ts). */
export function mountCompare(image: string, objects: string, source: string): MountCompare {
  const m = spawnSync(process.execPath, [join(projectRoot, "test/helpers/mount-compare.ts"), image, objects, source], { encoding: "utf8" });
  if (m.status !== 0) throw new Error(`mount-compare failed: ${m.stderr}`);
  return JSON.parse(m.stdout) as MountCompare;
}
