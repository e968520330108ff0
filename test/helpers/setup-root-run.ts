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

import { bytesEqual, toHex } from "../../shared/bytes.ts";
import { readImage } from "../../shared/erofs/reader.ts";
import { FsVerityHasher, type HashAlg } from "../../shared/fsverity.ts";
import * as sys from "../../shared/sys.ts";
import { type Dir, type Node, isWhiteout } from "../../shared/tree.ts";

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
  /**
   * Compare the mounted root with this EROFS image as shared/erofs/reader
   * reads it (independently of the kernel): every entry, and every external
   * file's fs-verity digest against the one the image names.
   */
  image?: string;
  imageAlg?: HashAlg;
  /** Write this file under <root>/etc and report where it landed. */
  writeEtc?: string;
  /** Try to create files here (paths relative to root): report "ok" or the error code. */
  tryWrite?: string[];
  /** Read these files (relative to root) completely: "ok" or the error code. */
  read?: string[];
  /** List these directories (relative to root). */
  list?: string[];
  /** Return the text of these files (relative to root), or the error code. */
  readText?: string[];
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
  imageDiffs: string[];
  imageCompared: number;
  etcDiffs: string[];
  writeEtc: { written: boolean; inState: boolean; error?: string } | null;
  tryWrite: Record<string, string>;
  read: Record<string, string>;
  list: Record<string, string[] | string>;
  text: Record<string, string>;
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

function fsverityOf(path: string, alg: HashAlg): string {
  const h = new FsVerityHasher(alg);
  const fd = openSync(path, "r");
  try {
    for (let n; (n = readSync(fd, buf, 0, buf.byteLength, null)) > 0; ) h.update(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return toHex(h.digest());
}

const XATTR_SHOWN = (n: string) => n.startsWith("user.") || n.startsWith("security.capability");

function nodeType(n: Node): string {
  if (n.kind === "dir") return "dir";
  const t = n.content.type;
  return t === "regular" ? "file" : t;
}

/** The mounted tree at `root` against the image's tree, entry by entry. */
function compareWithImage(image: string, alg: HashAlg, root: string, skip: Set<string>): { diffs: string[]; count: number } {
  const tree = readImage(new Uint8Array(readFileSync(image)), { algorithm: alg });
  const refs = new Map<Node, number>();
  const countRefs = (d: Dir): void => {
    for (const c of d.entries.values()) {
      refs.set(c, (refs.get(c) ?? 0) + 1);
      if (c.kind === "dir") countRefs(c);
    }
  };
  countRefs(tree.root);
  const diffs: string[] = [];
  let count = 0;
  const walk = (node: Node, rel: string): void => {
    const p = join(root, rel);
    const d = (what: string) => diffs.length < 100 && diffs.push(`${rel || "/"}: ${what}`);
    let st: BigIntStats;
    try {
      st = lstatSync(p, { bigint: true });
    } catch (e) {
      return void d(`missing (${code(e)})`);
    }
    count++;
    if (typeOf(st) !== nodeType(node)) return void d(`type ${nodeType(node)} in the image, ${typeOf(st)} mounted`);
    const s = node.stat;
    if (Number(st.mode & 0o7777n) !== s.mode) d(`mode ${s.mode.toString(8)} vs ${st.mode.toString(8)}`);
    if (Number(st.uid) !== s.uid || Number(st.gid) !== s.gid) d(`owner ${s.uid}:${s.gid} vs ${st.uid}:${st.gid}`);
    if (typeOf(st) !== "symlink" && st.mtimeNs !== BigInt(s.mtimeSec) * 1_000_000_000n + BigInt(s.mtimeNsec)) d(`mtime ${s.mtimeSec}.${s.mtimeNsec} vs ${st.mtimeNs}`);
    if (typeOf(st) !== "symlink") {
      const want = JSON.stringify([...s.xattrs].filter(([k]) => XATTR_SHOWN(k)).map(([k, v]) => [k, Buffer.from(v).toString("hex")]).sort());
      if (want !== xattrsOf(p)) d(`xattrs ${want} vs ${xattrsOf(p)}`);
    }
    if (node.kind === "dir") {
      const names = [...node.entries].filter(([, c]) => !isWhiteout(c)).map(([n]) => Buffer.from(n, "latin1").toString("utf8")).sort();
      const mounted = readdirSync(p).sort();
      if (JSON.stringify(names) !== JSON.stringify(mounted)) d(`listing: image [${names.slice(0, 8).join(", ")}…] vs mounted [${mounted.slice(0, 8).join(", ")}…]`);
      for (const [n, c] of node.entries) {
        if (isWhiteout(c)) continue;
        const name = Buffer.from(n, "latin1").toString("utf8");
        if (rel === "" && skip.has(name)) continue;
        walk(c, rel === "" ? name : `${rel}/${name}`);
      }
      return;
    }
    const c = node.content;
    if (c.type === "regular") {
      if (st.size !== c.size) d(`size ${c.size} vs ${st.size}`);
      if (Number(st.nlink) !== (node.nlink ?? refs.get(node) ?? 1)) d(`nlink ${node.nlink ?? refs.get(node)} vs ${st.nlink}`);
      try {
        if (c.inline !== null) {
          if (!bytesEqual(new Uint8Array(readFileSync(p)), c.inline)) d("inline content differs");
        } else if (c.digest !== null) {
          const got = fsverityOf(p, alg);
          if (got !== toHex(c.digest)) d(`content digest ${toHex(c.digest)} in the image, ${got} mounted`);
        }
      } catch (e) {
        d(`read failed: ${code(e)}`);
      }
    } else if (c.type === "symlink") {
      if (readlinkSync(p, { encoding: "buffer" }).toString("latin1") !== Buffer.from(c.target).toString("latin1")) d("symlink target differs");
    } else if (c.type === "chr" || c.type === "blk") {
      if (Number(st.rdev) !== c.rdev) d(`rdev ${c.rdev} vs ${st.rdev}`);
    }
  };
  walk(tree.root, "");
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
    imageDiffs: [],
    imageCompared: 0,
    etcDiffs: [],
    writeEtc: null,
    tryWrite: {},
    read: {},
    list: {},
    text: {},
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
  if (spec.image) {
    const t = compareWithImage(spec.image, spec.imageAlg ?? "sha512", root, new Set(["etc", "var", "sysroot"]));
    report.imageDiffs = t.diffs;
    report.imageCompared = t.count;
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
  for (const p of spec.readText ?? []) {
    try {
      report.text[p] = readFileSync(join(root, p), "utf8");
    } catch (e) {
      report.text[p] = code(e);
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
