// The initramfs agent (`cfsboot setup-root`), run as root in a private mount
// namespace on a physical-root directory whose repository was written by
// the host tool's repository code (and, for the C layout, by mkcomposefs
// --digest-store). Happy paths check the mounted tree file by file; every bad
// input has its own test: a clear one-line error, exit status 1, and the
// mount table unchanged.

import { spawnSync } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, truncateSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { toHex } from "../../shared/bytes.ts";
import { fsverityDigest } from "../../shared/fsverity.ts";
import { formatRepoMeta, newRepoMeta } from "../../shared/repometa.ts";
import { agentExecutable } from "../helpers/agent-exe.ts";
import { canRun, hasTool, isRoot, projectRoot } from "../helpers/env.ts";
import type { RunReport, RunSpec } from "../helpers/setup-root-run.ts";
import { type Sysroot, addState, buildSysrootByInstall, buildSysrootWithMkcomposefs, buildSysrootWithRepo, copySysroot, kargFor, makeSourceTree, objectOf } from "../helpers/sysroot.ts";

const ok = canRun(isRoot && hasTool("unshare"), "the setup-root tests need root and unshare(1) (mount namespaces)");
const helper = join(projectRoot, "test/helpers/setup-root-run.ts");

let work = "";
let agent: string[] = [];
let source = "";
/** sha512 repository by host/repo.ts, V1 images (the default). */
let s512: Sysroot;
/** sha256 repository by mkcomposefs --digest-store. */
let s256: Sysroot;
/** sha256 repository by host/repo.ts generating V1 and V2 images. */
let sDual: Sysroot;
/** The physical root `cfsboot install to-filesystem` writes from an OCI image. */
let sInst: Sysroot;

let counter = 0;
/** A fresh copy of a fixture plus its own root and tmp directories. */
function fresh(s: Sysroot): { s: Sysroot; root: string; tmp: string; cmdline: (text: string) => string } {
  const n = ++counter;
  const dir = join(work, `case${n}`);
  mkdirSync(dir, { recursive: true });
  const c = copySysroot(s, join(dir, "sysroot"));
  const root = join(dir, "newroot");
  const tmp = join(dir, "run");
  mkdirSync(root);
  mkdirSync(tmp);
  return {
    s: c,
    root,
    tmp,
    cmdline: (text: string) => {
      const f = join(dir, `cmdline${++counter}`);
      writeFileSync(f, `${text}\n`);
      return f;
    },
  };
}

interface Run {
  s: Sysroot;
  root: string;
  tmp: string;
  cmdline: string;
  config?: string;
  extraArgs?: string[];
  env?: Record<string, string>;
  checks?: Partial<RunSpec>;
  /** No --root: the composed root is stacked over the sysroot, as in the initramfs. */
  stacked?: boolean;
}

function runAgent(r: Run): RunReport {
  const spec: RunSpec = {
    exe: agent,
    args: [
      "--cmdline", r.cmdline, "--sysroot", r.s.dir, ...(r.stacked ? [] : ["--root", r.root]), "--config", r.config ?? join(work, "no-config.toml"),
      "--tmpdir", r.tmp, "--log", "stderr", "--json", ...(r.extraArgs ?? []),
    ],
    env: r.env,
    root: r.stacked ? r.s.dir : r.root,
    tmpdir: r.tmp,
    sysroot: r.s.dir,
    source: r.s.source,
    state: r.s.state,
    ...r.checks,
  };
  const specFile = join(work, `spec${++counter}.json`);
  writeFileSync(specFile, JSON.stringify(spec));
  const p = spawnSync("unshare", ["--mount", "--propagation", "private", "--", process.execPath, helper, specFile], { encoding: "utf8", maxBuffer: 64 << 20 });
  if (p.status !== 0) throw new Error(`helper failed (${p.status}): ${p.stderr}`);
  return JSON.parse(p.stdout) as RunReport;
}

/** The one-line error of a failed run (the step log lines are prefixed differently). */
function errorLine(rep: RunReport): string {
  const lines = rep.stderr.trim().split("\n").filter((l) => l.startsWith("cfsboot: setup-root: "));
  expect(lines).toHaveLength(1);
  return lines[0]!.slice("cfsboot: setup-root: ".length);
}

/** Exit 1, one clear line, nothing left mounted, no temporary directories left. */
function expectFailure(rep: RunReport, ...parts: (string | RegExp)[]): string {
  expect(rep.status, rep.stderr).toBe(1);
  const line = errorLine(rep);
  for (const p of parts) {
    if (typeof p === "string") expect(line).toContain(p);
    else expect(line).toMatch(p);
  }
  expect(rep.mountinfoAfterFailure).toEqual(rep.mountinfoBefore);
  expect(rep.tmpdirLeft).toEqual([]);
  return line;
}

function expectMounted(rep: RunReport): void {
  expect(rep.status, rep.stderr).toBe(0);
  expect(rep.tmpdirLeft).toEqual([]);
}

beforeAll(async () => {
  if (!ok) return;
  work = mkdtempSync("/var/tmp/cfsboot-setup-root-test-");
  agent = [agentExecutable(work)];
  source = join(work, "source");
  makeSourceTree(source);
  s512 = await buildSysrootWithRepo(join(work, "s512"), source, { alg: "sha512" });
  s256 = buildSysrootWithMkcomposefs(join(work, "s256"), source);
  sDual = await buildSysrootWithRepo(join(work, "sdual"), source, { alg: "sha256", erofs: "dual" });
  sInst = buildSysrootByInstall(join(work, "installed"));
}, 300_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

describe.runIf(ok)("a deployment boots", () => {
  test("installed from an OCI image by `cfsboot install`: the boot entry's command line, the image's tree file by file, /etc and /var from the state", () => {
    const f = fresh(sInst);
    const hex = f.s.image.digest;
    writeFileSync(join(f.s.state, "etc/only-in-state"), "state\n");
    const rep = runAgent({
      ...f,
      cmdline: f.cmdline(f.s.cmdline!),
      checks: {
        image: join(f.s.repo, "images", hex),
        imageAlg: "sha512",
        writeEtc: "written-at-runtime",
        tryWrite: ["usr/new-file"],
        read: ["opt/app/removed", "opt/app/cache/stale"],
        readText: ["etc/only-in-state", "etc/hostname", "usr/bin/hello", "var/lib/seed", "opt/app/cache/fresh"],
        list: ["opt/app/cache"],
      },
    });
    expectMounted(rep);
    expect(f.s.cmdline).toMatch(new RegExp(`(^| )composefs(\\.digest)?=\\??[^ ]*${hex}( |$)`));
    expect(rep.imageDiffs).toEqual([]);
    expect(rep.imageCompared).toBeGreaterThan(30);
    expect(rep.mounts.find((m) => m.target === f.root)!.source).toBe(`composefs:${hex}`);
    // layer semantics of the OCI image, as mounted
    expect(rep.read).toEqual({ "opt/app/removed": "ENOENT", "opt/app/cache/stale": "ENOENT" });
    expect(rep.list["opt/app/cache"]).toEqual(["fresh"]);
    expect(rep.text).toEqual({
      "etc/only-in-state": "state\n",
      "etc/hostname": "image-host\n",
      "usr/bin/hello": "#!/bin/sh\necho hello 1.0\n",
      "var/lib/seed": "var seed\n",
      "opt/app/cache/fresh": "from the top layer\n",
    });
    expect(rep.writeEtc).toEqual({ written: true, inState: true });
    expect(rep.tryWrite).toEqual({ "usr/new-file": "EROFS" });
  });

  test("sha512 repository (host repository code), V1 image: the tree file by file, /etc and /var from the state, /sysroot read-only", () => {
    const f = fresh(s512);
    const rep = runAgent({
      ...f,
      cmdline: f.cmdline(`BOOT_IMAGE=/vmlinuz root=UUID=abc rw ${kargFor(f.s)} quiet`),
      checks: { compareTree: true, writeEtc: "written-at-runtime", tryWrite: ["usr/new-file", "sysroot/new-file", "var/lib/new-file"], read: ["var/lib/persistent", "sysroot/composefs/meta.json"] },
    });
    expectMounted(rep);
    expect(rep.treeDiffs).toEqual([]);
    expect(rep.etcDiffs).toEqual([]);
    expect(rep.compared).toBeGreaterThan(40);
    const hex = f.s.image.digest;
    expect(hex).toHaveLength(128);
    const byTarget = new Map(rep.mounts.map((m) => [m.target, m]));
    const rootMount = byTarget.get(f.root)!;
    expect(rootMount.source).toBe(`composefs:${hex}`);
    expect(rootMount.fstype).toBe("overlay");
    expect(rootMount.options.split(",")).toContain("ro");
    expect(byTarget.get(`${f.root}/etc`)!.fsroot.endsWith(`/state/deploy/${hex}/etc`)).toBe(true);
    expect(byTarget.get(`${f.root}/var`)!.fsroot).toMatch(/\/state\/os\/default\/var$/);
    expect(byTarget.get(`${f.root}/sysroot`)!.options.split(",")).toContain("ro");
    expect([...byTarget.keys()].sort()).toEqual([f.root, `${f.root}/etc`, `${f.root}/sysroot`, `${f.root}/var`].sort());
    // /etc is the state's, and writes land there
    expect(rep.writeEtc).toEqual({ written: true, inState: true });
    expect(readFileSync(join(f.s.state, "etc/written-at-runtime"), "utf8")).toBe("written at runtime\n");
    expect(rep.tryWrite).toEqual({ "usr/new-file": "EROFS", "sysroot/new-file": "EROFS", "var/lib/new-file": "ok" });
    expect(existsSync(join(f.s.dir, "state/os/default/var/lib/new-file"))).toBe(true);
    expect(rep.read).toEqual({ "var/lib/persistent": "ok", "sysroot/composefs/meta.json": "ok" });
    expect(rep.result).toMatchObject({ digest: hex, source: `composefs:${hex}`, erofsVia: "file", overlayForm: "lowerdir+", imageCheck: "userspace", etc: "bind", var: "bind", sysrootMounted: true });
  });

  test("without --root the composed root is stacked over the physical root, which stays reachable at /sysroot", () => {
    const f = fresh(s512);
    const rep = runAgent({ ...f, stacked: true, cmdline: f.cmdline(kargFor(f.s)), checks: { compareTree: true, readText: ["sysroot/composefs/meta.json", "etc/hostname"], tryWrite: ["sysroot/x"] } });
    expectMounted(rep);
    expect(rep.treeDiffs).toEqual([]);
    const top = rep.mounts.filter((m) => m.target === f.s.dir);
    expect(top.at(-1)!.source).toBe(`composefs:${f.s.image.digest}`);
    expect(rep.text["sysroot/composefs/meta.json"]).toBe(readFileSync(join(f.s.repo, "meta.json"), "utf8"));
    expect(rep.text["etc/hostname"]).toBe("state-host\n");
    expect(rep.tryWrite["sysroot/x"]).toBe("EROFS");
  });

  test("sha256 repository in the C layout (mkcomposefs --digest-store), composefs= karg", () => {
    const f = fresh(s256);
    const rep = runAgent({ ...f, cmdline: f.cmdline(`composefs=?${f.s.image.digest} rw`), checks: { compareTree: true } });
    expectMounted(rep);
    expect(rep.treeDiffs).toEqual([]);
    expect(rep.mounts.find((m) => m.target === f.root)!.source).toBe(`composefs:${f.s.image.digest}`);
  });

  test("loop device instead of a file-backed EROFS mount (--loop, the path of kernels < 6.12)", () => {
    const f = fresh(s512);
    const rep = runAgent({ ...f, cmdline: f.cmdline(kargFor(f.s)), extraArgs: ["--loop"], checks: { compareTree: true } });
    expectMounted(rep);
    expect(rep.treeDiffs).toEqual([]);
    expect(rep.result).toMatchObject({ erofsVia: "loop" });
    expect(String(rep.result!.loopDevice)).toMatch(/^\/dev\/loop\d+$/);
    expect(rep.stderr).toContain(`EROFS mounted through ${rep.result!.loopDevice}`);
  });

  test("CFSBOOT_FORCE_LOOP=1 does the same", () => {
    const f = fresh(s256);
    const rep = runAgent({ ...f, cmdline: f.cmdline(`composefs=?${f.s.image.digest}`), env: { CFSBOOT_FORCE_LOOP: "1" } });
    expectMounted(rep);
    expect(rep.result).toMatchObject({ erofsVia: "loop" });
  });

  test.each([
    ["data-only", "lowerdir=<image>::<objects> (Linux ≥ 6.5)"],
    ["two-layer", "objects as a plain lower layer"],
  ])("overlay form %s (older kernels): same tree, the object store stays hidden", (form, text) => {
    const f = fresh(s512);
    const rep = runAgent({ ...f, cmdline: f.cmdline(kargFor(f.s)), extraArgs: ["--overlay-form", form], checks: { compareTree: true, list: [""] } });
    expectMounted(rep);
    expect(rep.stderr).toContain(text);
    expect(rep.treeDiffs).toEqual([]);
    // no 00..ff store directories in / (the V1 image's root whiteouts hide them in the two-layer form)
    expect((rep.list[""] as string[]).filter((n) => /^[0-9a-f]{2}$/.test(n))).toEqual([]);
  });

  test("V2 image of a dual-format repository, named by composefs=", () => {
    const v2 = sDual.images.find((i) => i.version === 2)!;
    const f = fresh(sDual);
    expect(sDual.image.version).toBe(2); // dual repositories default to V2 (V1 extra)
    const rep = runAgent({ ...f, cmdline: f.cmdline(`composefs=?${v2.digest}`), checks: { compareTree: true, ignoreNsec: true } });
    expectMounted(rep);
    expect(rep.treeDiffs).toEqual([]);
    expect(rep.stderr).toContain("composefs V2");
  });

  test("composefs.digest= wins over composefs=; a missing V1 image falls back to the V2 karg", () => {
    const v1 = sDual.images.find((i) => i.version === 1)!;
    const v2 = sDual.images.find((i) => i.version === 2)!;
    const f = fresh(sDual);
    addState(f.s, v1.digest);
    const both = `composefs=?${v2.digest} composefs.digest=?v1-sha256-12:${v1.digest}`;
    const rep1 = runAgent({ ...f, cmdline: f.cmdline(both) });
    expectMounted(rep1);
    expect(rep1.result!.digest).toBe(v1.digest);

    const g = fresh(sDual);
    unlinkSync(join(g.s.repo, "images", v1.digest));
    const rep2 = runAgent({ ...g, cmdline: g.cmdline(both) });
    expectMounted(rep2);
    expect(rep2.result!.digest).toBe(v2.digest);
    expect(rep2.stderr).toContain(`skipped kargs whose image is missing: composefs.digest=?v1-sha256-12:${v1.digest}`);
  });

  test("config: /etc as a persistent overlay, transient /var, transient root", () => {
    const f = fresh(s512);
    const conf = join(work, `conf${++counter}.toml`);
    writeFileSync(conf, '[root]\ntransient = true\n[etc]\nmount = "overlay"\n[var]\nmount = "transient"\n');
    const rep = runAgent({
      ...f,
      cmdline: f.cmdline(kargFor(f.s)),
      config: conf,
      checks: { writeEtc: "via-overlay", tryWrite: ["usr/new-file", "var/new-file"], read: ["etc/hostname"] },
    });
    expectMounted(rep);
    const byTarget = new Map(rep.mounts.map((m) => [m.target, m]));
    expect(rep.mounts.filter((m) => m.target === f.root).map((m) => m.source)).toEqual([`composefs:${f.s.image.digest}`, `transient:composefs=${f.s.image.digest}`]);
    expect(byTarget.get(`${f.root}/etc`)!.source).toBe("overlay");
    expect(byTarget.get(`${f.root}/var`)!.source).toBe("transient");
    // overlay /etc: the image's /etc underneath, writes in state/deploy/<id>/etc/upper
    expect(rep.writeEtc!.written).toBe(true);
    expect(existsSync(join(f.s.state, "etc/upper/via-overlay"))).toBe(true);
    // transient root and /var: writable, and nothing reaches the physical root
    expect(rep.tryWrite).toEqual({ "usr/new-file": "ok", "var/new-file": "ok" });
    expect(existsSync(join(f.s.dir, "state/os/default/var/new-file"))).toBe(false);
  });

  test("systemd.volatile=state leaves /var to systemd (the image's /var)", () => {
    const f = fresh(s512);
    const rep = runAgent({ ...f, cmdline: f.cmdline(`${kargFor(f.s)} systemd.volatile=state`) });
    expectMounted(rep);
    expect(rep.mounts.map((m) => m.target)).not.toContain(`${f.root}/var`);
    expect(rep.result).toMatchObject({ var: "none", etc: "bind" });
  });

  test("/etc none: the image's read-only /etc", () => {
    const f = fresh(s512);
    const conf = join(work, `conf${++counter}.toml`);
    writeFileSync(conf, '[etc]\nmount = "none"\n');
    const rep = runAgent({ ...f, cmdline: f.cmdline(kargFor(f.s)), config: conf, checks: { tryWrite: ["etc/x"] } });
    expectMounted(rep);
    expect(rep.tryWrite["etc/x"]).toBe("EROFS");
  });

  test("step log in the kernel-log format, every step with its duration", () => {
    const f = fresh(s512);
    const logFile = join(work, `kmsg${++counter}`);
    const rep = runAgent({ ...f, cmdline: f.cmdline(kargFor(f.s)), extraArgs: ["--log", logFile] });
    expectMounted(rep);
    const lines = readFileSync(logFile, "utf8").trim().split("\n");
    expect(lines.length).toBeGreaterThanOrEqual(8);
    for (const l of lines) expect(l).toMatch(/^<[0-7]>cfsboot-setup-root: /);
    const steps = lines.filter((l) => /\(\d+(\.\d+)? ms\)$/.test(l));
    expect(steps.map((l) => l.replace(/^<6>cfsboot-setup-root: /, "").split(/[ :]/)[0])).toEqual(["repository", "image", "state", "EROFS", "overlay", "root", "/sysroot"]);
    expect(lines.at(-1)).toMatch(new RegExp(`^<6>cfsboot-setup-root: mounted composefs:${f.s.image.digest} at .* in \\d+(\\.\\d+)? ms \\(CPU \\d+(\\.\\d+)? ms\\)$`));
    expect(lines.find((l) => l.includes(": image "))).toMatch(/digest checked in userspace \(\d+(\.\d+)? ms\)/);
  });

  test("a missing object breaks only the file that needs it, on access", () => {
    const f = fresh(s512);
    rmSync(objectOf(f.s, "usr/lib/big.bin"));
    const rep = runAgent({ ...f, cmdline: f.cmdline(kargFor(f.s)), checks: { read: ["usr/lib/big.bin", "usr/lib/libfake.so.1", "usr/bin/env"] } });
    expectMounted(rep);
    expect(rep.read["usr/lib/big.bin"]).toMatch(/^(EIO|ENOENT)$/);
    expect(rep.read["usr/lib/libfake.so.1"]).toBe("ok");
    expect(rep.read["usr/bin/env"]).toBe("ok");
  });
});

describe.runIf(ok)("bad inputs: refused, nothing left mounted", () => {
  test("no composefs karg", () => {
    const f = fresh(s512);
    expectFailure(runAgent({ ...f, cmdline: f.cmdline("root=UUID=abc rw") }), "no composefs karg");
  });

  test("missing image", () => {
    const f = fresh(s512);
    const other = "ab".repeat(64);
    const line = expectFailure(runAgent({ ...f, cmdline: f.cmdline(`composefs=?${other}`) }), "not in the repository", `composefs=?${other}: no ${f.s.repo}/images/${other}`);
    expect(line).not.toContain("refs");
  });

  test("both kargs pointing to missing images: the error names both", () => {
    const f = fresh(s512);
    const a = "cd".repeat(64);
    const b = "ef".repeat(64);
    expectFailure(runAgent({ ...f, cmdline: f.cmdline(`composefs.digest=?v1-sha512-12:${a} composefs=?${b}`) }), `composefs.digest=?v1-sha512-12:${a}: no `, `composefs=?${b}: no `);
  });

  test("no fallback to images/refs/<hex>", () => {
    const f = fresh(s512);
    const other = "12".repeat(64);
    mkdirSync(join(f.s.repo, "images/refs"), { recursive: true });
    symlinkSync(`../${f.s.image.digest}`, join(f.s.repo, "images/refs", other));
    expectFailure(runAgent({ ...f, cmdline: f.cmdline(`composefs=?${other}`) }), "not in the repository");
  });

  test("digest mismatch: images/<hex> holds another image", () => {
    const f = fresh(s512);
    const img = join(f.s.repo, "images", f.s.image.digest);
    const other = join(f.s.dir, "other.img");
    spawnSync("cp", [join(s256.repo, "images", s256.image.digest), other]);
    unlinkSync(img);
    symlinkSync(other, img);
    // an absolute link leaves the repository: refused before anything else
    expectFailure(runAgent({ ...f, cmdline: f.cmdline(kargFor(f.s)) }), "a symbolic link leading outside the repository");
    // inside the repository: the digest decides
    const g = fresh(s512);
    const gimg = join(g.s.repo, "images", g.s.image.digest);
    spawnSync("cp", [join(s256.repo, "images", s256.image.digest), join(g.s.repo, "objects/other-image")]);
    unlinkSync(gimg);
    symlinkSync("../objects/other-image", gimg);
    const actual = toHex(fsverityDigest(readFileSync(join(g.s.repo, "objects/other-image")), "sha512"));
    expectFailure(runAgent({ ...g, cmdline: g.cmdline(kargFor(g.s)) }), "fs-verity digest mismatch", `expects ${g.s.image.digest}`, actual);
  });

  test("a mismatch is fatal even with '?' and a secondary karg that would work", () => {
    const f = fresh(sDual);
    const v1 = sDual.images.find((i) => i.version === 1)!;
    const v2 = sDual.images.find((i) => i.version === 2)!;
    addState(f.s, v1.digest);
    const img = join(f.s.repo, "images", v1.digest);
    appendFileSync(readlinkResolved(img), new Uint8Array(1));
    expectFailure(runAgent({ ...f, cmdline: f.cmdline(`composefs.digest=?v1-sha256-12:${v1.digest} composefs=?${v2.digest}`) }), "fs-verity digest mismatch");
  });

  test("truncated image", () => {
    const f = fresh(s512);
    const obj = readlinkResolved(join(f.s.repo, "images", f.s.image.digest));
    truncateSync(obj, statSync(obj).size - 4096);
    expectFailure(runAgent({ ...f, cmdline: f.cmdline(kargFor(f.s)) }), "fs-verity digest mismatch");
  });

  test("truncated image whose digest matches the karg (damaged before it was named): refused before mounting", () => {
    const f = fresh(s512);
    const obj = readlinkResolved(join(f.s.repo, "images", f.s.image.digest));
    truncateSync(obj, statSync(obj).size - 4096);
    const hex = toHex(fsverityDigest(readFileSync(obj), "sha512"));
    symlinkSync(`../objects/${f.s.image.digest.slice(0, 2)}/${f.s.image.digest.slice(2)}`, join(f.s.repo, "images", hex));
    addState(f.s, hex);
    expectFailure(runAgent({ ...f, cmdline: f.cmdline(`composefs.digest=?v1-sha512-12:${hex}`) }), "truncated: the EROFS superblock says");
  });

  test("corrupted meta.json", () => {
    const f = fresh(s512);
    writeFileSync(join(f.s.repo, "meta.json"), '{"version": 1, "algorithm": "fsverity-sha512-12", "features": {');
    expectFailure(runAgent({ ...f, cmdline: f.cmdline(kargFor(f.s)) }), `${f.s.repo}/meta.json: not valid JSON`);
  });

  test("unknown incompatible feature in meta.json", () => {
    const f = fresh(s512);
    const m = newRepoMeta("sha512");
    m.features.incompatible.push("chunked-objects");
    writeFileSync(join(f.s.repo, "meta.json"), formatRepoMeta(m));
    expectFailure(runAgent({ ...f, cmdline: f.cmdline(kargFor(f.s)) }), "field features.incompatible", 'unknown incompatible feature "chunked-objects"');
  });

  test("unknown read-only-compatible feature: the agent only reads, so it boots", () => {
    const f = fresh(s512);
    const m = newRepoMeta("sha512");
    m.features.readOnlyCompatible.push("new-index");
    writeFileSync(join(f.s.repo, "meta.json"), formatRepoMeta(m));
    const rep = runAgent({ ...f, cmdline: f.cmdline(kargFor(f.s)) });
    expectMounted(rep);
    expect(rep.stderr).toContain("ignoring unknown features new-index");
  });

  test("repository format version 2", () => {
    const f = fresh(s512);
    writeFileSync(join(f.s.repo, "meta.json"), '{"version": 2, "algorithm": "fsverity-sha512-12"}\n');
    expectFailure(runAgent({ ...f, cmdline: f.cmdline(kargFor(f.s)) }), "unsupported repository format version 2");
  });

  test("no repository at all", () => {
    const f = fresh(s512);
    rmSync(f.s.repo, { recursive: true });
    expectFailure(runAgent({ ...f, cmdline: f.cmdline(kargFor(f.s)) }), `${f.s.repo}: no composefs repository`);
  });

  const h = "ab".repeat(64);
  test.each([
    ["bad hex", `composefs=?${"zz".repeat(64)}`, `composefs=?${"zz".repeat(64)}: not a hex digest`],
    ["wrong length for the repository's sha512", `composefs=?${"ab".repeat(32)}`, `composefs=?${"ab".repeat(32)}: expected 128 hex digits for sha512, got 64`],
    ["unknown format version", `composefs.digest=?v3-sha512-12:${h}`, `composefs.digest=?v3-sha512-12:${h}: unsupported format version 'v3'`],
    ["malformed composefs.digest", `composefs.digest=?sha512:${h}`, `composefs.digest=?sha512:${h}: expected 'v<N>-<hash>-<blocksize>'`],
    ["conflicting duplicates", `composefs=?${h} composefs=?${"cd".repeat(64)}`, `composefs=?${"cd".repeat(64)}: conflicts with composefs=?${h}`],
    ["only another algorithm's digest", `composefs.digest=?v1-sha256-12:${"ab".repeat(32)}`, "no composefs karg for this repository's algorithm sha512"],
  ])("malformed kargs: %s", (_n, karg, message) => {
    const f = fresh(s512);
    expectFailure(runAgent({ ...f, cmdline: f.cmdline(`root=/dev/vda ${karg} rw`) }), message);
  });

  test("missing state directory", () => {
    const f = fresh(s512);
    rmSync(f.s.state, { recursive: true });
    expectFailure(runAgent({ ...f, cmdline: f.cmdline(kargFor(f.s)) }), `${f.s.state}: missing (expected the deployment's state directory`);
  });

  test("state directory without etc/ (bind mode)", () => {
    const f = fresh(s512);
    rmSync(join(f.s.state, "etc"), { recursive: true });
    expectFailure(runAgent({ ...f, cmdline: f.cmdline(kargFor(f.s)) }), `${f.s.state}/etc: missing (expected the directory bound at /etc)`);
  });

  test("shared /var missing behind the state's var link", () => {
    const f = fresh(s512);
    rmSync(join(f.s.dir, "state/os/default/var"), { recursive: true });
    expectFailure(runAgent({ ...f, cmdline: f.cmdline(kargFor(f.s)) }), `${f.s.state}/var: missing`);
  });

  test("object store missing", () => {
    const f = fresh(s512);
    // keep the image object, drop everything else
    const img = readFileSync(join(f.s.repo, "images", f.s.image.digest));
    rmSync(join(f.s.repo, "objects"), { recursive: true });
    mkdirSync(join(f.s.repo, "images-store"));
    writeFileSync(join(f.s.repo, "images-store/img"), img);
    unlinkSync(join(f.s.repo, "images", f.s.image.digest));
    symlinkSync("../images-store/img", join(f.s.repo, "images", f.s.image.digest));
    expectFailure(runAgent({ ...f, cmdline: f.cmdline(kargFor(f.s)) }), `${f.s.repo}/objects: missing`);
  });

  test("unparsable setup-root-conf.toml", () => {
    const f = fresh(s512);
    const conf = join(work, `conf${++counter}.toml`);
    writeFileSync(conf, '[etc]\nmount = "tmpfs"\n');
    expectFailure(runAgent({ ...f, cmdline: f.cmdline(kargFor(f.s)), config: conf }), `${conf}: line 2`, "unknown mount type");
  });

  test("the image has no /etc to mount the state on", () => {
    const src = join(work, `noetc${++counter}`);
    makeSourceTree(src);
    rmSync(join(src, "etc"), { recursive: true });
    mkdirSync(join(src, "etc-elsewhere"));
    const s = buildSysrootWithMkcomposefs(join(work, `noetc-sys${counter}`), src);
    const root = join(work, `noetc-root${counter}`);
    const tmp = join(work, `noetc-run${counter}`);
    mkdirSync(root);
    mkdirSync(tmp);
    const cmd = join(work, `noetc-cmdline${counter}`);
    writeFileSync(cmd, `composefs=?${s.image.digest}\n`);
    expectFailure(runAgent({ s, root, tmp, cmdline: cmd }), `${root}/etc: missing in the image`);
  });

  test("sealed boot (no '?') on this kernel, which has no fs-verity: refused, saying why", () => {
    const f = fresh(s512);
    expectFailure(runAgent({ ...f, cmdline: f.cmdline(kargFor(f.s, f.s.image, false)) }), "sealed boot", "has no '?'", "requires a secure repository: expected fs-verity on meta.json");
  });

  test("sealed boot with a legacy repository (no meta.json): refused because the image has no kernel fs-verity", () => {
    const f = fresh(s512);
    unlinkSync(join(f.s.repo, "meta.json"));
    expectFailure(runAgent({ ...f, cmdline: f.cmdline(`composefs=${f.s.image.digest}`) }), "sealed boot", "requires kernel-measured fs-verity on the image");
  });

  test("sealed boot stays refused when the config allows unenforced object verity (that only covers overlayfs)", () => {
    const f = fresh(s512);
    const conf = join(work, `conf${++counter}.toml`);
    writeFileSync(conf, "[composefs]\nallow-unenforced-object-verity = true\n");
    expectFailure(runAgent({ ...f, cmdline: f.cmdline(kargFor(f.s, f.s.image, false)), config: conf }), "sealed boot");
  });

  test("legacy repository (no meta.json) with '?': boots, algorithm from the karg", () => {
    const f = fresh(s512);
    unlinkSync(join(f.s.repo, "meta.json"));
    const rep = runAgent({ ...f, cmdline: f.cmdline(`composefs=?${f.s.image.digest}`) });
    expectMounted(rep);
    expect(rep.stderr).toContain("legacy (no meta.json), algorithm sha512 from the karg");
  });

  test("a V1 karg naming a V2 image is refused", () => {
    const v2 = sDual.images.find((i) => i.version === 2)!;
    const f = fresh(sDual);
    expectFailure(runAgent({ ...f, cmdline: f.cmdline(`composefs.digest=?v1-sha256-12:${v2.digest}`) }), "names a V1 image, found a V2 image");
  });

  test("forced loop path failing later still detaches the loop device", () => {
    const f = fresh(s512);
    // the root target does not exist: attaching the composefs root fails after EROFS and the overlay are up
    const rep = runAgent({ ...f, root: join(f.root, "missing"), cmdline: f.cmdline(kargFor(f.s)), extraArgs: ["--loop"] });
    expectFailure(rep, "move_mount failed");
    // autoclear: the device goes away once the (lazily unmounted) EROFS is released
    let after = loopBackings();
    for (let i = 0; i < 100 && after.some((b) => b.includes(f.s.dir)); i++) {
      spawnSync("sleep", ["0.1"]);
      after = loopBackings();
    }
    // (other processes may use loop devices meanwhile: only ours are checked)
    expect(after.filter((b) => b.includes(f.s.dir))).toEqual([]);
  });

  test("usage errors exit 1 with the usage text", () => {
    const r = spawnSync(agent[0]!, [...agent.slice(1), "setup-root", "--no-such-option"], { encoding: "utf8" });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('unknown option "--no-such-option"');
    expect(r.stderr).toContain("usage: cfsboot setup-root");
  });
});

function readlinkResolved(p: string): string {
  return spawnSync("readlink", ["-f", p], { encoding: "utf8" }).stdout.trim();
}

function loopBackings(): string[] {
  const out: string[] = [];
  for (const d of existsSync("/sys/block") ? readdirSync("/sys/block") : []) {
    if (!d.startsWith("loop")) continue;
    try {
      out.push(readFileSync(`/sys/block/${d}/loop/backing_file`, "utf8").trim());
    } catch {
      // not attached
    }
  }
  return out;
}
