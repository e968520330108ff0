// finalize-staged end to end on hosts in a directory (sysroot + ESP), from
// OS-like OCI images served by a real registry, through the built
// executable: install v1, local /etc edits, upgrade to v2 (staging), then
// `cfsboot finalize-staged`:
//   - the upstream bug cases (bootc#1924: a directory removed upstream that
//     holds local files; composefs-rs#335: a directory that became a
//     symlink; bootc#2278: a symlink out of /etc deleted locally) and the
//     ordinary rows (kept local edits, new defaults, deletions, a chmod),
//     `.updated` removed from /etc and the shared /var, entries committed,
//     marker gone, status and config-diff after the "reboot";
//   - a conflict refused at stage time (nothing staged);
//   - a conflict created after staging: finalize refuses, the old default
//     stays, the failure stamp shows in status and `boot-complete` reports
//     it exactly once; fixed, a new upgrade + finalize succeeds;
//   - nothing staged, download-only;
//   - the booted entry's boot counter (never renamed while counted; re-keyed
//     once blessed);
//   - an image whose agent mounts /etc as an overlay: the result is an
//     upper directory with only the differences;
//   - a transient /etc: nothing carried, reported;
//   - GRUB: the boot directory's entries are exchanged.

import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, renameSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { buildImage, type LayerEntry, pushImage } from "../helpers/oci-image.ts";
import { startRegistry, type TestRegistry } from "../helpers/registry.ts";
import { type HostDir, bless, bootEntry, cfs, entryFiles, hostArgs, makeHostDir, osImage, type OsImageOptions, registryHome, type Run } from "../helpers/os-host.ts";
import { ensureExe } from "../helpers/sysroot.ts";
import { listing } from "../helpers/etc-disk.ts";
import { canRun, isRoot } from "../helpers/env.ts";

let dir: string;
let reg: TestRegistry;
let layout: string;
let env: Record<string, string>;
let trap: string;
let trapBefore: Record<string, string>;
/** Installed v1, blessed and booted. */
let base: HostDir;
/** Installed v1, booted but not blessed (its entry is still counted). */
let counted: HostDir;
let id1: string;

const V1: OsImageOptions = {
  version: "1.0",
  kernel: "k1",
  etc: {
    hostname: "h1\n",
    motd: "one\n",
    "NetworkManager/conf.d/00-default.conf": "default\n",
    "ssl/certs/ca.pem": "ca\n",
    "ssl/openssl.cnf": "cnf\n",
    app: "a=1\n",
    "svc/x.conf": "x=1\n",
  },
};
const V2: OsImageOptions = {
  version: "2.0",
  kernel: "k1",
  etc: { hostname: "h1\n", motd: "two\n", "ssl/openssl.cnf": "cnf2\n", "pki/tls/certs/ca.pem": "ca2\n", "app/main.conf": "main\n", "svc/x.conf": "x=2\n", "newdir/conf": "new\n" },
};

/** An OS image with extra entries in its base layer. */
function image(o: OsImageOptions, extra: LayerEntry[]): ReturnType<typeof osImage>["spec"] {
  const spec = osImage(o).spec;
  spec.layers[0]!.entries.push(...extra);
  return spec;
}

const ok = (r: Run): Run => {
  expect(r.stderr).not.toMatch(/internal error|^\s+at /m);
  expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
  return r;
};
const fails = (r: Run, re: RegExp): Run => {
  expect(r.status, r.stdout + r.stderr).toBe(1);
  const last = r.stderr.trim().split("\n").pop() ?? "";
  expect(last).toMatch(/^cfsboot: /);
  expect(last).toMatch(re);
  expect(r.stderr).not.toMatch(/internal error|^\s+at /m);
  return r;
};

function copyHost(from: HostDir, name: string): HostDir {
  const to = mkdtempSync(join(dir, `${name}-`));
  spawnSync("cp", ["-a", `${join(from.root, "..")}/.`, to]);
  return { root: join(to, "root"), esp: join(to, "esp"), boot: join(to, "root/boot"), cmdline: join(to, "cmdline"), home: join(to, "home") };
}

const live = (h: HostDir): string => join(h.esp, "loader/entries");
const stagedDir = (h: HostDir): string => join(h.esp, "loader/entries.staged");
const marker = (h: HostDir): string => join(h.root, "run/composefs/staged-deployment");
const stamp = (h: HostDir): string => join(h.root, "state/finalize-failure.stamp");
const etcOf = (h: HostDir, id: string): string => join(h.root, "state/deploy", id, "etc");
const read = (p: string): string => readFileSync(p, "utf8");
const entriesText = (d: string): Record<string, string> => Object.fromEntries(entryFiles(d).map((f) => [f, read(join(d, f))]));
const idOf = (text: string): string => /v1-sha512-12:([0-9a-f]{128})/.exec(text)![1]!;

function statusJson(h: HostDir): Record<string, any> {
  return JSON.parse(ok(cfs(["status", "--format=json", ...hostArgs(h)], env)).stdout);
}

/** Stage v2 (already pushed as os:latest) and return its id. */
function upgrade(h: HostDir, extra: string[] = []): string {
  ok(cfs(["upgrade", ...extra, ...hostArgs(h)], env));
  return JSON.parse(read(marker(h))).depl_id as string;
}

/** "Reboot" into the default entry: runtime markers vanish, the default's options become the command line. */
function rebootIntoDefault(h: HostDir, blessIt = true): string {
  rmSync(join(h.root, "run"), { recursive: true, force: true });
  const files = entryFiles(live(h));
  const primary = files.find((f) => /-1(\+[0-9]+(-[0-9]+)?)?\.conf$/.test(f))!;
  const p = join(live(h), primary);
  const booted = blessIt ? bless(p) : p;
  bootEntry(h, booted);
  return idOf(read(booted));
}

beforeAll(async () => {
  if (!isRoot) return;
  ensureExe();
  dir = mkdtempSync(join(tmpdir(), "cfsboot-finalize-"));
  layout = join(dir, "layout");
  trap = join(dir, "trap");
  mkdirSync(join(trap, "sub"), { recursive: true });
  writeFileSync(join(trap, "victim"), "outside every /etc\n");
  trapBefore = listing(trap);
  reg = await startRegistry({ auth: "none" });
  env = registryHome(join(dir, "home"), reg.certsD);
  const links: LayerEntry[] = [
    { type: "symlink", path: "etc/ext-symlink", target: `${trap}/victim` },
    { type: "symlink", path: "etc/trapdir", target: trap },
  ];
  buildImage(layout, image(V1, links), { tag: "v1" });
  buildImage(layout, image(V2, [...links, { type: "symlink", path: "etc/ssl/certs", target: "../pki/tls/certs" }]), { tag: "v2" });
  buildImage(
    layout,
    image({ ...V2, version: "3.0" }, [
      ...links,
      { type: "symlink", path: "etc/ssl/certs", target: "../pki/tls/certs" },
      { type: "dir", path: "usr/lib/composefs", mode: 0o755 },
      { type: "file", path: "usr/lib/composefs/setup-root-conf.toml", content: '[etc]\nmount = "overlay"\n' },
    ]),
    { tag: "v3" },
  );
  await pushImage(layout, "v1", reg, "os", "latest");
  await pushImage(layout, "v2", reg, "os2", "latest");
  await pushImage(layout, "v3", reg, "os3", "latest");
  await pushImage(layout, "v1", reg, "osg", "latest");
  buildImage(
    layout,
    image({ ...V2, version: "4.0" }, [
      ...links,
      { type: "symlink", path: "etc/ssl/certs", target: "../pki/tls/certs" },
      { type: "dir", path: "usr/lib/composefs", mode: 0o755 },
      { type: "file", path: "usr/lib/composefs/setup-root-conf.toml", content: "[etc]\ntransient = true\n" },
    ]),
    { tag: "v4" },
  );
  await pushImage(layout, "v4", reg, "os4", "latest");
  base = makeHostDir(join(dir, "base"));
  ok(cfs(["install", "to-filesystem", "--source-imgref", reg.ref("os", "latest"), "--composefs-insecure", "--esp", base.esp, base.root], env));
  counted = copyHost(base, "counted");
  const e = join(live(base), entryFiles(live(base))[0]!);
  id1 = idOf(read(e));
  bootEntry(base, bless(e));
  // As systemd-boot does when it boots a counted entry: +3 → +2-1.
  const c = join(live(counted), entryFiles(live(counted))[0]!);
  const c2 = c.replace(/\+3\.conf$/, "+2-1.conf");
  renameSync(c, c2);
  bootEntry(counted, c2);
  // Switch the hosts' image reference to os2 (v2) by retagging: upgrade follows os:latest.
  await pushImage(layout, "v2", reg, "os", "latest");
}, 240_000);

afterAll(async () => {
  await reg?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const rootTest = (name: string, fn: () => void | Promise<void>, timeout = 120_000) =>
  test(
    name,
    async () => {
      if (!canRun(isRoot, "needs root (hosts in a directory: owners, xattrs, installs)")) return;
      await fn();
    },
    timeout,
  );

describe("finalize-staged", () => {
  rootTest("upgrade + local edits + finalize: bootc#1924, composefs-rs#335, bootc#2278 and the ordinary rows", () => {
    const h = copyHost(base, "bugs");
    const etc = etcOf(h, id1);
    // local changes
    writeFileSync(join(etc, "NetworkManager/conf.d/99-local.conf"), "mine\n"); // #1924: upstream removes NetworkManager/
    writeFileSync(join(etc, "ssl/openssl.cnf"), "my cnf\n"); // #335: upstream turns ssl/certs into a symlink
    unlinkSync(join(etc, "ext-symlink")); // #2278: a link out of /etc, deleted locally
    writeFileSync(join(etc, "motd"), "local motd\n"); // both changed: kept, reported
    chmodSync(join(etc, "hostname"), 0o600); // chmod only: kept
    writeFileSync(join(etc, "local.conf"), "added\n");
    writeFileSync(join(etc, ".updated"), "# systemd-update-done\n");
    writeFileSync(join(h.root, "state/os/default/var/.updated"), "# systemd-update-done\n");
    const liveBefore = entriesText(live(h));

    const id2 = upgrade(h);
    const stagedSet = entriesText(stagedDir(h));
    expect(entriesText(live(h))).toEqual(liveBefore);
    expect(read(join(etcOf(h, id2), "motd"))).toBe("two\n"); // the staged copy is the new image's

    const r = ok(cfs(["finalize-staged", ...hostArgs(h)], env));
    expect(r.stderr).toContain(`Finalizing staged deployment ${id2}`);
    expect(r.stderr).toContain("Copying /etc changes: 3 modified, 1 removed, 2 added");
    expect(r.stderr).toContain("etc merge: /etc/motd: kept local version; the new image also changed it");
    expect(r.stderr).toContain("etc merge: /etc/ssl/openssl.cnf: kept local version; the new image also changed it");
    expect(r.stderr).toContain("etc merge: /etc/NetworkManager: orphaned local config kept; the new image removed this directory");
    expect(r.stderr).toMatch(/etc merge: kept \d+ local changes and 1 local deletion, took \d+ new defaults, \d+ reports/);

    const e2 = etcOf(h, id2);
    // bootc#1924
    expect(read(join(e2, "NetworkManager/conf.d/99-local.conf"))).toBe("mine\n");
    expect(existsSync(join(e2, "NetworkManager/conf.d/00-default.conf"))).toBe(false);
    // composefs-rs#335
    expect(readlinkSync(join(e2, "ssl/certs"))).toBe("../pki/tls/certs");
    expect(read(join(e2, "pki/tls/certs/ca.pem"))).toBe("ca2\n");
    expect(read(join(e2, "ssl/openssl.cnf"))).toBe("my cnf\n");
    // bootc#2278: the link is gone, what it pointed at is untouched
    expect(() => lstatSync(join(e2, "ext-symlink"))).toThrow();
    expect(readlinkSync(join(e2, "trapdir"))).toBe(trap);
    expect(listing(trap)).toEqual(trapBefore);
    // ordinary rows
    expect(read(join(e2, "motd"))).toBe("local motd\n");
    expect(statSync(join(e2, "hostname")).mode & 0o7777).toBe(0o600);
    expect(read(join(e2, "hostname"))).toBe("h1\n");
    expect(read(join(e2, "local.conf"))).toBe("added\n");
    expect(read(join(e2, "svc/x.conf"))).toBe("x=2\n");
    expect(read(join(e2, "newdir/conf"))).toBe("new\n");
    expect(read(join(e2, "app/main.conf"))).toBe("main\n");
    // .updated: ConditionNeedsUpdate units run on the first boot of the new deployment
    expect(existsSync(join(e2, ".updated"))).toBe(false);
    expect(existsSync(join(h.root, "state/os/default/var/.updated"))).toBe(false);
    expect(readdirSync(join(h.root, "state/deploy", id2)).sort()).toEqual(["etc", `${id2}.origin`, "var"].sort());
    // the live /etc of the old deployment is the input, never written
    expect(read(join(etc, "motd"))).toBe("local motd\n");
    expect(existsSync(join(etc, "ext-symlink"))).toBe(false);
    // committed: the staged set is live, nothing staged any more
    expect(entriesText(live(h))).toEqual(stagedSet);
    expect(existsSync(stagedDir(h))).toBe(false);
    expect(existsSync(marker(h))).toBe(false);
    expect(existsSync(stamp(h))).toBe(false);
    // A second run has nothing to do.
    expect(ok(cfs(["finalize-staged", ...hostArgs(h)], env)).stderr).toContain("No staged deployment");

    // After the reboot: booted v2, rollback v1; config-diff lists what the merge kept.
    expect(rebootIntoDefault(h)).toBe(id2);
    const doc = statusJson(h);
    expect(doc.status.booted.composefs.verity).toBe(id2);
    expect(doc.status.rollback.composefs.verity).toBe(id1);
    expect(doc.status.staged).toBeNull();
    expect(doc.metadata.annotations?.["cfsboot.finalize-error"]).toBeUndefined();
    expect(ok(cfs(["config-diff", ...hostArgs(h)], env)).stdout).toBe(
      [
        'Added "NetworkManager"',
        'Added "NetworkManager/conf.d"',
        'Added "NetworkManager/conf.d/99-local.conf"',
        'Added "local.conf"',
        'Modified "hostname"',
        'Modified "motd"',
        'Modified "ssl/openssl.cnf"',
        'Removed "ext-symlink"',
        "",
      ].join("\n"),
    );
  });

  rootTest("a conflict is refused at stage time: every path listed, nothing staged", () => {
    const h = copyHost(base, "stage-conflict");
    writeFileSync(join(etcOf(h, id1), "app"), "a=2\n"); // the new image makes /etc/app a directory
    const before = entriesText(live(h));
    const r = fails(cfs(["upgrade", ...hostArgs(h)], env), /\/etc: Merge conflicts found in etc \(1 path\); nothing was staged/);
    expect(r.stderr).toContain("etc merge conflict: /etc/app: locally modified file, but the new image has a directory here");
    expect(existsSync(stagedDir(h))).toBe(false);
    expect(existsSync(marker(h))).toBe(false);
    expect(readdirSync(join(h.root, "state/deploy"))).toEqual([id1]);
    expect(entriesText(live(h))).toEqual(before);
    expect(ok(cfs(["finalize-staged", ...hostArgs(h)], env)).stderr).toContain("No staged deployment");
  });

  rootTest("a conflict created after staging: finalize keeps the old default, status shows it, boot-complete reports it once", () => {
    const h = copyHost(base, "late-conflict");
    const id2 = upgrade(h);
    const liveBefore = entriesText(live(h));
    const stagedBefore = entriesText(stagedDir(h));
    const newEtcBefore = listing(etcOf(h, id2));
    writeFileSync(join(etcOf(h, id1), "app"), "a=2\n");

    const r = fails(
      cfs(["finalize-staged", ...hostArgs(h)], env),
      /^cfsboot: \/etc: Merge conflicts found in etc \(1 path\); the staged deployment was not finalized: \/etc\/app \(file-now-directory\)$/,
    );
    expect(r.stderr).toContain("etc merge conflict: /etc/app: locally modified file, but the new image has a directory here");
    // Nothing was swapped: old default, staged state and the new /etc untouched.
    expect(entriesText(live(h))).toEqual(liveBefore);
    expect(entriesText(stagedDir(h))).toEqual(stagedBefore);
    expect(listing(etcOf(h, id2))).toEqual(newEtcBefore);
    expect(readdirSync(join(h.root, "state/deploy", id2)).sort()).toEqual(["etc", `${id2}.origin`, "var"].sort());
    const msg = read(stamp(h)).trim();
    expect(msg).toBe("/etc: Merge conflicts found in etc (1 path); the staged deployment was not finalized: /etc/app (file-now-directory)");
    expect(statusJson(h).metadata.annotations["cfsboot.finalize-error"]).toBe(msg);

    // The next boot is the old deployment; boot-complete reports the failure once.
    rmSync(join(h.root, "run"), { recursive: true, force: true });
    const bc = cfs(["boot-complete", ...hostArgs(h)], env);
    expect(bc.status).toBe(1);
    expect(bc.stderr).toBe(`cfsboot-finalize-staged.service failed on previous boot: ${msg}\n`);
    const again = cfs(["boot-complete", ...hostArgs(h)], env);
    expect(again.status).toBe(0);
    expect(again.stderr).toBe("");
    const doc = statusJson(h);
    expect(doc.status.booted.composefs.verity).toBe(id1);
    expect(doc.status.staged).toBeNull();
    expect(doc.metadata.annotations["cfsboot.finalize-error"]).toBe(msg);
    expect(ok(cfs(["status", "--format=humanreadable", "-v", ...hostArgs(h)], env)).stdout).toContain(`finalize-error: ${msg}`);

    // Resolved: stage again, finalize succeeds, the error is gone.
    writeFileSync(join(etcOf(h, id1), "app"), "a=1\n");
    expect(upgrade(h)).toBe(id2);
    ok(cfs(["finalize-staged", ...hostArgs(h)], env));
    expect(existsSync(stamp(h))).toBe(false);
    expect(statusJson(h).metadata.annotations?.["cfsboot.finalize-error"]).toBeUndefined();
    expect(read(join(etcOf(h, id2), "app/main.conf"))).toBe("main\n");
  });

  rootTest("nothing staged, and a download-only deployment: nothing changes", () => {
    const h = copyHost(base, "nothing");
    const before = entriesText(live(h));
    const r = ok(cfs(["finalize-staged", ...hostArgs(h)], env));
    expect(r.stderr).toBe("No staged deployment\n");
    const id2 = upgrade(h, ["--download-only"]);
    const r2 = ok(cfs(["finalize-staged", ...hostArgs(h)], env));
    expect(r2.stderr).toBe("Staged deployment is marked download only. Won't finalize\n");
    expect(entriesText(live(h))).toEqual(before);
    expect(JSON.parse(read(marker(h)))).toEqual({ depl_id: id2, finalization_locked: true });
    expect(read(join(etcOf(h, id2), "motd"))).toBe("two\n");
  });

  rootTest("boot counting: the booted entry keeps its exact name while counted, and is re-keyed once blessed", () => {
    // Not blessed: the live set after finalize holds the booted entry under its current name.
    const a = copyHost(counted, "counted-a");
    const bootedName = entryFiles(live(a))[0]!;
    expect(bootedName).toBe("bootc_testos-1.0-1+2-1.conf");
    const id2 = upgrade(a);
    ok(cfs(["finalize-staged", ...hostArgs(a)], env));
    expect(entryFiles(live(a))).toEqual(["bootc_testos-1.0-1+2-1.conf", "bootc_testos-2.0-1+3.conf"]);
    expect(idOf(read(join(live(a), "bootc_testos-2.0-1+3.conf")))).toBe(id2);
    expect(read(join(live(a), "bootc_testos-1.0-1+2-1.conf"))).toMatch(/^sort-key bootc-testos-1$/m);

    // Blessed after staging (boot-complete reached later in the same boot): no counter on the rollback entry.
    const b = copyHost(counted, "counted-b");
    upgrade(b);
    expect(entryFiles(stagedDir(b))).toContain("bootc_testos-1.0-1+2-1.conf");
    bless(join(live(b), "bootc_testos-1.0-1+2-1.conf"));
    ok(cfs(["finalize-staged", ...hostArgs(b)], env));
    expect(entryFiles(live(b))).toEqual(["bootc_testos-1.0-0.conf", "bootc_testos-2.0-1+3.conf"]);
    expect(read(join(live(b), "bootc_testos-1.0-0.conf"))).toMatch(/^sort-key bootc-testos-1$/m);
  });

  rootTest("an overlay /etc: the result is an upper with only the differences, read back by config-diff", () => {
    const h = copyHost(base, "overlay");
    const etc = etcOf(h, id1);
    writeFileSync(join(etc, "motd"), "local motd\n");
    unlinkSync(join(etc, "hostname"));
    writeFileSync(join(etc, "local.conf"), "added\n");
    ok(cfs(["switch", reg.ref("os3", "latest"), ...hostArgs(h)], env));
    const id3 = JSON.parse(read(marker(h))).depl_id as string;
    ok(cfs(["finalize-staged", ...hostArgs(h)], env));
    const e3 = etcOf(h, id3);
    expect(readdirSync(e3).sort()).toEqual(["upper", "work"]);
    expect(readdirSync(join(e3, "work"))).toEqual([]);
    const up = listing(join(e3, "upper"));
    // Only what differs from the image: the kept edit, the local file, a whiteout for the deletion.
    expect(Object.keys(up).sort()).toEqual(["hostname", "local.conf", "motd"]);
    expect(up.hostname).toBe("special 20000");
    const wh = statSync(join(e3, "upper/hostname"));
    expect([wh.rdev, wh.isCharacterDevice()]).toEqual([0, true]);
    expect(read(join(e3, "upper/motd"))).toBe("local motd\n");
    expect(listing(trap)).toEqual(trapBefore);
    // Booted into it (overlay mode), config-diff sees image /etc + upper.
    expect(rebootIntoDefault(h)).toBe(id3);
    expect(ok(cfs(["config-diff", ...hostArgs(h)], env)).stdout).toBe(['Added "local.conf"', 'Modified "motd"', 'Removed "hostname"', ""].join("\n"));
  });

  rootTest("GRUB (Type 1 entries in the boot directory): finalize merges and exchanges the boot directory's entries", async () => {
    const h = makeHostDir(mkdtempSync(join(dir, "grub-")));
    ok(cfs(["install", "to-filesystem", "--source-imgref", reg.ref("osg", "latest"), "--composefs-insecure", "--bootloader", "grub", "--esp", h.esp, h.root], env));
    const gl = join(h.boot, "loader/entries");
    const e = join(gl, entryFiles(gl)[0]!);
    const idg = idOf(read(e));
    bootEntry(h, e);
    writeFileSync(join(etcOf(h, idg), "motd"), "grub local\n");
    await pushImage(layout, "v2", reg, "osg", "latest");
    const id2 = upgrade(h);
    const staged = Object.fromEntries(entryFiles(join(h.boot, "loader/entries.staged")).map((f) => [f, read(join(h.boot, "loader/entries.staged", f))]));
    ok(cfs(["finalize-staged", ...hostArgs(h)], env));
    expect(Object.fromEntries(entryFiles(gl).map((f) => [f, read(join(gl, f))]))).toEqual(staged);
    expect(existsSync(join(h.boot, "loader/entries.staged"))).toBe(false);
    expect(read(join(etcOf(h, id2), "motd"))).toBe("grub local\n");
    expect(read(join(etcOf(h, id2), "svc/x.conf"))).toBe("x=2\n");
    expect(statusJson(h).status.staged).toBeNull();
  });

  rootTest("a transient /etc: nothing is carried, reported; booted, it has no local changes", () => {
    const h = copyHost(base, "transient");
    writeFileSync(join(etcOf(h, id1), "motd"), "local motd\n");
    ok(cfs(["switch", reg.ref("os4", "latest"), ...hostArgs(h)], env));
    const id4 = JSON.parse(read(marker(h))).depl_id as string;
    const before = listing(etcOf(h, id4));
    const r = ok(cfs(["finalize-staged", ...hostArgs(h)], env));
    expect(r.stderr).toContain("etc merge: the new deployment mounts a transient /etc; local changes are not carried into it");
    expect(listing(etcOf(h, id4))).toEqual(before);
    expect(read(join(etcOf(h, id4), "motd"))).toBe("two\n");
    expect(rebootIntoDefault(h)).toBe(id4);
    // Whatever is in the state directory, a transient /etc starts from the image at every boot.
    writeFileSync(join(etcOf(h, id4), "motd"), "lost at reboot\n");
    expect(ok(cfs(["config-diff", ...hostArgs(h)], env)).stdout).toBe("");
  });
});
