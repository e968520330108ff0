// Child-process helper: run the initramfs agent in a private mount namespace
// and inspect what it mounted, from inside that namespace.
//
//   unshare --mount --propagation private -- bun test/helpers/setup-root-run.ts SPEC.json
//
// SPEC (RunSpec below) names the agent's command line and what to check.
// Prints one JSON object (RunReport). The namespace, and with it every
// mount the agent made, disappears when this process exits.

import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { closeSync, existsSync, lstatSync, openSync, readFileSync, readdirSync, readSync, readlinkSync, writeFileSync, type BigIntStats } from "node:fs";
import { join } from "node:path";

import * as sys from "../../shared/sys.ts";

export interface RunSpec {
  /** The agent: argv before `setup-root`, e.g. ["dist/cfsboot"]. */
  exe: string[];
  args: string[];
  env?: Record<string, string>;
  root: string;
  tmpdir: string;
  /** For the checks below. */
  sysroot?: string;
  source?: string;
  state?: string;
  compareTree?: boolean;
  /** Compare mtimes to the second only (V2 images store no nanoseconds). */
  ignoreNsec?: boolean;
  /** Write this file under <root>/etc and report where it landed. */
  writeEtc?: string;
  /** Try to create files here (paths relative to root): report "ok" or the error code. */
  tryWrite?: string[];
  /** Read these files (relative to root) completely: "ok" or the error code. */
  read?: string[];
  /** List these directories (relative to root). */
  list?: string[];
}

export interface MountEntry {
  target: string;
  /** The mounted directory within its filesystem (mountinfo field 4; a bind mount's source path). */
  fsroot: string;
  source: string;
  fstype: string;
  options: string;
  superOptions: string;
}

export interface RunReport {
  status: number | null;
  stdout: string;
  stderr: string;
  /** The agent's --json result (when it succeeded and --json was given). */
  result: Record<string, unknown> | null;
  mountinfoBefore: string[];
  mountinfoAfterFailure: string[] | null;
  /** Mounts at or under root, in mountinfo order. */
  mounts: MountEntry[];
  treeDiffs: string[];
  compared: number;
  etcDiffs: string[];
  writeEtc: { written: boolean; inState: boolean; error?: string } | null;
  tryWrite: Record<string, string>;
  read: Record<string, string>;
  list: Record<string, string[] | string>;
  tmpdirLeft: string[];
}

const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));

function mountinfo(): string[] {
  return readFileSync("/proc/self/mountinfo", "utf8").trim().split("\n");
}

/** Mount lines without the ids (which differ between reads only when mounts change). */
function parseMountinfo(lines: string[]): MountEntry[] {
  return lines.map((l) => {
    const [left, right] = l.split(" - ");
    const f = left!.split(" ");
    const r = right!.split(" ");
    return { target: unescape(f[4]!), fsroot: unescape(f[3]!), options: f[5]!, fstype: r[0]!, source: unescape(r[1]!), superOptions: r[2] ?? "" };
  });
}

function code(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? String(e);
}

const buf = new Uint8Array(1 << 20);
function sha256(path: string): string {
  const h = createHash("sha256");
  const fd = openSync(path, "r");
  try {
    for (let n; (n = readSync(fd, buf, 0, buf.byteLength, null)) > 0; ) h.update(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return h.digest("hex");
}

function xattrsOf(path: string): string {
  const m = sys.readXattrs(Buffer.from(path).toString("latin1"), (n) => n.startsWith("user.") || n.startsWith("security.capability"));
  return JSON.stringify([...m].map(([k, v]) => [k, Buffer.from(v).toString("hex")]).sort());
}

function typeOf(st: BigIntStats): string {
  return st.isDirectory() ? "dir" : st.isFile() ? "file" : st.isSymbolicLink() ? "symlink" : st.isCharacterDevice() ? "chr" : st.isBlockDevice() ? "blk" : st.isFIFO() ? "fifo" : "socket";
}

/**
 * Compare `b` against `a` entry by entry: type, permissions, owner, mtime
 * (ns), size, content, link target, device number, user xattrs, nlink, and
 * the exact set of names in each directory. `skip` = top-level names of `a`
 * not compared (mounted over).
 */
function compareTrees(a: string, b: string, skip: Set<string>, top = true, ignoreNsec = false): { diffs: string[]; count: number } {
  const diffs: string[] = [];
  let count = 0;
  const walk = (rel: string): void => {
    const pa = join(a, rel);
    const pb = join(b, rel);
    let sa: BigIntStats;
    let sb: BigIntStats;
    try {
      sa = lstatSync(pa, { bigint: true });
    } catch (e) {
      diffs.push(`${rel || "/"}: cannot stat the original: ${code(e)}`);
      return;
    }
    try {
      sb = lstatSync(pb, { bigint: true });
    } catch (e) {
      diffs.push(`${rel || "/"}: missing (${code(e)})`);
      return;
    }
    count++;
    const d = (what: string) => diffs.length < 100 && diffs.push(`${rel || "/"}: ${what}`);
    if (typeOf(sa) !== typeOf(sb)) return void d(`type ${typeOf(sa)} vs ${typeOf(sb)}`);
    if ((sa.mode & 0o7777n) !== (sb.mode & 0o7777n)) d(`mode ${sa.mode.toString(8)} vs ${sb.mode.toString(8)}`);
    if (sa.uid !== sb.uid || sa.gid !== sb.gid) d(`owner ${sa.uid}:${sa.gid} vs ${sb.uid}:${sb.gid}`);
    const mt = (st: BigIntStats) => (ignoreNsec ? st.mtimeNs / 1_000_000_000n : st.mtimeNs);
    if (!sa.isSymbolicLink() && mt(sa) !== mt(sb)) d(`mtime ${sa.mtimeNs} vs ${sb.mtimeNs}`);
    if (!sa.isSymbolicLink()) {
      const xa = xattrsOf(pa);
      const xb = xattrsOf(pb);
      if (xa !== xb) d(`xattrs ${xa} vs ${xb}`);
    }
    if (sa.isFile()) {
      if (sa.size !== sb.size) d(`size ${sa.size} vs ${sb.size}`);
      if (sa.nlink !== sb.nlink) d(`nlink ${sa.nlink} vs ${sb.nlink}`);
      try {
        if (sha256(pa) !== sha256(pb)) d("content differs");
      } catch (e) {
        d(`read failed: ${code(e)}`);
      }
    } else if (sa.isSymbolicLink()) {
      if (readlinkSync(pa) !== readlinkSync(pb)) d(`target ${readlinkSync(pa)} vs ${readlinkSync(pb)}`);
    } else if (sa.isCharacterDevice() || sa.isBlockDevice()) {
      if (sa.rdev !== sb.rdev) d(`rdev ${sa.rdev} vs ${sb.rdev}`);
    } else if (sa.isDirectory()) {
      const na = readdirSync(pa).sort();
      const nb = readdirSync(pb).sort();
      if (JSON.stringify(na) !== JSON.stringify(nb)) {
        const extra = nb.filter((n) => !na.includes(n));
        const missing = na.filter((n) => !nb.includes(n));
        d(`listing differs: extra [${extra.slice(0, 5).join(", ")}${extra.length > 5 ? ", …" : ""}], missing [${missing.join(", ")}]`);
      }
      for (const n of na) {
        if (rel === "" && top && skip.has(n)) continue;
        if (nb.includes(n)) walk(rel === "" ? n : `${rel}/${n}`);
      }
    }
  };
  walk("");
  return { diffs, count };
}

function main(): void {
  const spec = JSON.parse(readFileSync(process.argv[2]!, "utf8")) as RunSpec;
  const before = mountinfo();
  const r = spawnSync(spec.exe[0]!, [...spec.exe.slice(1), "setup-root", ...spec.args], {
    encoding: "utf8",
    env: { ...process.env, ...(spec.env ?? {}) },
  });
  const report: RunReport = {
    status: r.status,
    stdout: r.stdout,
    stderr: r.stderr,
    result: null,
    mountinfoBefore: before,
    mountinfoAfterFailure: null,
    mounts: [],
    treeDiffs: [],
    compared: 0,
    etcDiffs: [],
    writeEtc: null,
    tryWrite: {},
    read: {},
    list: {},
    tmpdirLeft: existsSync(spec.tmpdir) ? readdirSync(spec.tmpdir) : [],
  };
  if (r.status !== 0) {
    report.mountinfoAfterFailure = mountinfo();
    process.stdout.write(JSON.stringify(report));
    return;
  }
  try {
    report.result = JSON.parse(r.stdout.trim().split("\n").pop() ?? "null");
  } catch {
    report.result = null;
  }
  const root = spec.root;
  report.mounts = parseMountinfo(mountinfo()).filter((m) => m.target === root || m.target.startsWith(`${root}/`));
  if (spec.compareTree && spec.source) {
    const t = compareTrees(spec.source, root, new Set(["etc", "var", "sysroot"]), true, spec.ignoreNsec);
    report.treeDiffs = t.diffs;
    report.compared = t.count;
    if (spec.state) {
      const e = compareTrees(join(spec.state, "etc"), join(root, "etc"), new Set(), false);
      report.etcDiffs = e.diffs;
      report.compared += e.count;
    }
  }
  if (spec.writeEtc) {
    const name = spec.writeEtc;
    try {
      writeFileSync(join(root, "etc", name), "written at runtime\n");
      const inState = spec.state !== undefined && existsSync(join(spec.state, "etc", name));
      report.writeEtc = { written: true, inState };
    } catch (e) {
      report.writeEtc = { written: false, inState: false, error: code(e) };
    }
  }
  for (const p of spec.tryWrite ?? []) {
    try {
      writeFileSync(join(root, p), "x");
      report.tryWrite[p] = "ok";
    } catch (e) {
      report.tryWrite[p] = code(e);
    }
  }
  for (const p of spec.read ?? []) {
    try {
      sha256(join(root, p));
      report.read[p] = "ok";
    } catch (e) {
      report.read[p] = code(e);
    }
  }
  for (const p of spec.list ?? []) {
    try {
      report.list[p] = readdirSync(join(root, p)).sort();
    } catch (e) {
      report.list[p] = code(e);
    }
  }
  process.stdout.write(JSON.stringify(report));
}

main();
