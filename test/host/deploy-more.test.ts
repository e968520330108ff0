// More host deployment behaviour on hosts in a directory: an entry still
// being counted keeps its exact file name in the staged set
// (finalize-and-boot-counting.md §6.3); download-only staging; GRUB Type 1
// upgrade and rollback (file names ranked when GRUB's name order would
// defeat the rollback, bootc#2221); human-readable status on a terminal; and a legacy
// host as old bootc left it — a V2-only repository, `composefs=` kargs,
// unprefixed kernel directory and entry name — which gc migrates to the
// `bootc_composefs-` prefix (idempotently) and whose upgrade makes the
// repository dual-format and boots the new deployment's V1 image.

import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { formatRepoMeta, newRepoMeta } from "../../shared/repometa.ts";
import { cfsbootExe } from "../helpers/env.ts";
import { buildImage, pushImage } from "../helpers/oci-image.ts";
import { type HostDir, bless, bootEntry, cfs, entryFiles, finalizeByHand, hostArgs, makeHostDir, osImage, registryHome, type Run } from "../helpers/os-host.ts";
import { startRegistry, type TestRegistry } from "../helpers/registry.ts";
import { ensureExe } from "../helpers/sysroot.ts";

let dir: string;
let reg: TestRegistry;
let env: Record<string, string>;

const ok = (r: Run): Run => {
  expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
  expect(r.stderr).not.toMatch(/internal error/);
  return r;
};
const kv = (text: string, key: string): string | undefined => new RegExp(`^${key} (.*)$`, "m").exec(text)?.[1];
const newHost = (name: string): HostDir => makeHostDir(mkdtempSync(join(dir, `${name}-`)));
const status = (h: HostDir) => JSON.parse(ok(cfs(["status", "--format=json", ...hostArgs(h)], env)).stdout);

beforeAll(async () => {
  ensureExe();
  dir = mkdtempSync(join(tmpdir(), "cfsboot-deploy-more-"));
  const layout = join(dir, "layout");
  reg = await startRegistry({ auth: "none" });
  env = registryHome(join(dir, "home"), reg.certsD);
  buildImage(layout, osImage({ version: "1.0", kernel: "k1" }).spec, { tag: "v1" });
  buildImage(layout, osImage({ version: "2.0", kernel: "k2" }).spec, { tag: "v2" });
  await pushImage(layout, "v1", reg, "os", "v1");
  await pushImage(layout, "v2", reg, "os", "v2");
  await pushImage(layout, "v1", reg, "os", "latest");
}, 120_000);

afterAll(async () => {
  await reg?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function install(h: HostDir, ref: string, extra: string[] = []): string {
  ok(cfs(["install", "to-filesystem", "--source-imgref", ref, "--composefs-insecure", "--esp", h.esp, ...extra, h.root], env));
  const root = extra.includes("grub") ? h.boot : h.esp;
  const f = entryFiles(join(root, "loader/entries"));
  expect(f.length).toBe(1);
  return join(root, "loader/entries", f[0]!);
}

describe("staging", () => {
  test("a booted entry still being counted keeps its exact name in the staged set", () => {
    const h = newHost("count");
    const ep = install(h, reg.ref("os", "v1"));
    expect(ep.endsWith("bootc_testos-1.0-1+3.conf")).toBe(true);
    // Booted once, not blessed (what systemd-boot leaves behind).
    const tried = ep.replace("+3.conf", "+2-1.conf");
    renameSync(ep, tried);
    bootEntry(h, tried);
    expect(status(h).metadata.annotations["cfsboot.boot-counter"]).toBe("+2-1");
    ok(cfs(["switch", reg.ref("os", "v2"), ...hostArgs(h)], env));
    const staged = join(h.esp, "loader/entries.staged");
    expect(entryFiles(staged)).toEqual(["bootc_testos-1.0-1+2-1.conf", "bootc_testos-2.0-1+3.conf"]);
    expect(kv(readFileSync(join(staged, "bootc_testos-1.0-1+2-1.conf"), "utf8"), "sort-key")).toBe("bootc-testos-1");
    expect(kv(readFileSync(join(staged, "bootc_testos-2.0-1+3.conf"), "utf8"), "sort-key")).toBe("bootc-testos-0");
  });

  test("upgrade --download-only: finalization_locked in the marker, downloadOnly in status", async () => {
    await pushImage(join(dir, "layout"), "v1", reg, "os", "dl");
    const h = newHost("dl");
    bootEntry(h, bless(install(h, reg.ref("os", "dl"))));
    await pushImage(join(dir, "layout"), "v2", reg, "os", "dl");
    ok(cfs(["upgrade", "--download-only", ...hostArgs(h)], env));
    const m = JSON.parse(readFileSync(join(h.root, "run/composefs/staged-deployment"), "utf8"));
    expect(m.finalization_locked).toBe(true);
    const doc = status(h);
    expect(doc.status.staged.downloadOnly).toBe(true);
    expect(doc.status.staged.composefs.verity).toBe(m.depl_id);
    expect(ok(cfs(["upgrade", ...hostArgs(h)], env)).stdout).toContain("Update already staged");
  });

  test("GRUB Type 1: staged in the boot directory, no counters, shared kernels by path; rollback by file-name order", () => {
    const h = newHost("grub");
    const ep = install(h, reg.ref("os", "v1"), ["--bootloader", "grub"]);
    const id1 = /v1-sha512-12:([0-9a-f]{128})/.exec(readFileSync(ep, "utf8"))![1]!;
    bootEntry(h, ep);
    ok(cfs(["switch", reg.ref("os", "v2"), ...hostArgs(h)], env));
    const staged = join(h.boot, "loader/entries.staged");
    expect(entryFiles(staged)).toEqual(["bootc_testos-1.0-0.conf", "bootc_testos-2.0-1.conf"]);
    const p = readFileSync(join(staged, "bootc_testos-2.0-1.conf"), "utf8");
    const id2 = /v1-sha512-12:([0-9a-f]{128})/.exec(p)![1]!;
    expect(kv(p, "linux")).toBe(`/boot/bootc_composefs-${id2}/vmlinuz`);
    finalizeByHand(h, h.boot);
    bootEntry(h, join(h.boot, "loader/entries/bootc_testos-2.0-1.conf"));
    let doc = status(h);
    expect([doc.status.booted.composefs.verity, doc.status.rollback.composefs.verity]).toEqual([id2, id1]);
    // Rolling back to the older version: bootc's names would keep 2.0 first for GRUB (bootc#2221);
    // cfsboot ranks the names so that GRUB boots v1 next.
    ok(cfs(["rollback", ...hostArgs(h)], env));
    expect(entryFiles(join(h.boot, "loader/entries"))).toEqual(["bootc_testos-01.2.0-0.conf", "bootc_testos-02.1.0-1.conf"]);
    doc = status(h);
    expect(doc.status.rollbackQueued).toBe(true);
    expect(doc.spec.bootOrder).toBe("rollback");
    ok(cfs(["rollback", ...hostArgs(h)], env));
    expect(entryFiles(join(h.boot, "loader/entries"))).toEqual(["bootc_testos-1.0-0.conf", "bootc_testos-2.0-1.conf"]);
    expect(status(h).status.rollbackQueued).toBe(false);
  });

  test("rollback never renames an entry still being counted; a pinned default is warned about", () => {
    const h = newHost("rbcount");
    bootEntry(h, bless(install(h, reg.ref("os", "v1"))));
    ok(cfs(["switch", reg.ref("os", "v2"), ...hostArgs(h)], env));
    finalizeByHand(h, h.esp);
    const live = join(h.esp, "loader/entries");
    // Booted v2 on its first try: systemd-boot renamed +3 to +2-1, not blessed yet.
    renameSync(join(live, "bootc_testos-2.0-1+3.conf"), join(live, "bootc_testos-2.0-1+2-1.conf"));
    bootEntry(h, join(live, "bootc_testos-2.0-1+2-1.conf"));
    ok(cfs(["rollback", ...hostArgs(h)], env));
    expect(entryFiles(live)).toEqual(["bootc_testos-1.0-1.conf", "bootc_testos-2.0-1+2-1.conf"]);
    expect(kv(readFileSync(join(live, "bootc_testos-2.0-1+2-1.conf"), "utf8"), "sort-key")).toBe("bootc-testos-1");
    expect(status(h).status.rollbackQueued).toBe(true);
    writeFileSync(join(h.esp, "loader/loader.conf"), "timeout 5\ndefault bootc_testos-2.0-*\n");
    const r = ok(cfs(["rollback", ...hostArgs(h)], env));
    expect(r.stdout).toContain('warning: the default boot entry is pinned to "bootc_testos-2.0-*"');
  });

  test("the host lock: a second mutating command waits and says so; status does not wait", async () => {
    const h = newHost("lock");
    bootEntry(h, bless(install(h, reg.ref("os", "v1"))));
    // flock and its sleep share the lock: a process group, killed as one.
    const holder = spawn("flock", ["-x", join(h.root, "state/cfsboot/lock"), "sleep", "60"], { detached: true });
    const release = () => {
      try {
        process.kill(-holder.pid!, "SIGKILL");
      } catch {}
    };
    await new Promise((r) => setTimeout(r, 300));
    try {
      expect(status(h).status.booted).not.toBeNull();
      expect(holder.exitCode).toBeNull(); // status did not wait for the lock holder
      const gc = spawn(cfsbootExe, ["gc", "--dry-run", ...hostArgs(h)], { env: { PATH: process.env.PATH ?? "", ...env } });
      let err = "";
      gc.stderr.on("data", (d) => (err += d));
      const exit = new Promise<number | null>((r) => gc.on("exit", (c) => r(c)));
      for (let i = 0; i < 600 && !err.includes("Waiting for sysroot lock..."); i++) await new Promise((r) => setTimeout(r, 50));
      expect(err).toContain("Waiting for sysroot lock...");
      expect(gc.exitCode).toBeNull();
      release();
      expect(await exit).toBe(0);
    } finally {
      release();
    }
  });

  test("--apply on a host in a directory stages but does not reboot", async () => {
    await pushImage(join(dir, "layout"), "v1", reg, "os", "apply");
    const h = newHost("apply");
    bootEntry(h, bless(install(h, reg.ref("os", "apply"))));
    await pushImage(join(dir, "layout"), "v2", reg, "os", "apply");
    const r = ok(cfs(["upgrade", "--apply", ...hostArgs(h)], env));
    expect(r.stdout).toContain("--apply: a host in a directory is not rebooted");
    expect(status(h).status.staged).not.toBeNull();
  });

  test("human-readable status on a terminal", () => {
    const h = newHost("tty");
    const ep = install(h, reg.ref("os", "v1"));
    bootEntry(h, ep);
    const cmd = [cfbootQuoted(), "status", ...hostArgs(h)].join(" ");
    const r = spawnSync("script", ["-qec", cmd, "/dev/null"], { env: { ...process.env, ...env, TERM: "dumb" } });
    const out = r.stdout.toString().replace(/\r/g, "");
    expect(out).toContain(`● Booted image: ${reg.host}/os:v1\n`);
    expect(out).toMatch(/\n\s+Digest: sha256:[0-9a-f]{64} \(amd64\)\n/);
    expect(out).toMatch(/\n\s+Version: 1\.0 \(2026-01-02T03:04:05Z\)\n/);
  });
});

const cfbootQuoted = (): string => `'${cfsbootExe}'`;

describe("a legacy host (V2-only repository, composefs= kargs, unprefixed artifacts)", () => {
  test("status works, gc migrates the prefix idempotently, upgrade makes the repository dual and boots V1", async () => {
    const h = newHost("legacy");
    const ep = install(h, reg.ref("os", "v1"), ["--erofs=dual"]);
    const idV1 = /v1-sha512-12:([0-9a-f]{128})/.exec(readFileSync(ep, "utf8"))![1]!;
    const repo = join(h.root, "composefs");
    // What bootc ≤ 1.16 would have written: V2-only meta.json, the V2 boot image as deployment.
    writeFileSync(join(repo, "meta.json"), formatRepoMeta(newRepoMeta("sha512", 2)));
    const md = /manifest_digest = (\S+)/.exec(readFileSync(join(h.root, "state/deploy", idV1, `${idV1}.origin`), "utf8"))![1]!;
    const inspect = JSON.parse(ok(cfs(["repo", "--repo", repo, "inspect", `localhost/bootc-${md}`], env)).stdout);
    const idV2 = inspect.composefs_boot_erofs as string;
    expect(idV2).toMatch(/^[0-9a-f]{128}$/);
    expect(idV2).not.toBe(idV1);
    renameSync(join(h.root, "state/deploy", idV1), join(h.root, "state/deploy", idV2));
    renameSync(join(h.root, "state/deploy", idV2, `${idV1}.origin`), join(h.root, "state/deploy", idV2, `${idV2}.origin`));
    renameSync(join(h.esp, "EFI/Linux", `bootc_composefs-${idV1}`), join(h.esp, "EFI/Linux", idV2));
    rmSync(ep);
    const legacyEntry = `title Test OS 1.0\nversion 1.0\nlinux /EFI/Linux/${idV2}/vmlinuz\ninitrd /EFI/Linux/${idV2}/initrd\noptions rw composefs=?${idV2}\nsort-key bootc-testos-0\n`;
    writeFileSync(join(h.esp, "loader/entries/legacy-1.conf"), legacyEntry);
    writeFileSync(h.cmdline, `rw composefs=?${idV2}\n`);
    expect(status(h).status.booted.composefs.verity).toBe(idV2);

    // gc: the kernel directory and the entry get the prefix; a second gc changes nothing.
    const g = ok(cfs(["gc", ...hostArgs(h)], env));
    expect(g.stderr).toContain(`migrated boot artifact ${join(h.esp, "EFI/Linux", idV2)} -> ${join(h.esp, "EFI/Linux", `bootc_composefs-${idV2}`)}`);
    expect(readdirSync(join(h.esp, "EFI/Linux")).filter((n) => !n.startsWith("bootc"))).toEqual([]);
    expect(entryFiles(join(h.esp, "loader/entries"))).toEqual(["bootc_testos-1.0-1.conf"]);
    const migrated = readFileSync(join(h.esp, "loader/entries/bootc_testos-1.0-1.conf"), "utf8");
    expect(kv(migrated, "linux")).toBe(`/EFI/Linux/bootc_composefs-${idV2}/vmlinuz`);
    expect(kv(migrated, "options")).toBe(`rw composefs=?${idV2}`);
    const g2 = ok(cfs(["gc", ...hostArgs(h)], env));
    expect(g2.stderr).not.toContain("migrated");
    expect(status(h).status.booted.composefs.verity).toBe(idV2);

    // Upgrade: the repository becomes dual (default kept), the new deployment boots its V1 image.
    const up = ok(cfs(["switch", reg.ref("os", "v2"), ...hostArgs(h)], env));
    expect(up.stderr).toContain("repository generates only V2 EROFS images; adding V1");
    expect(JSON.parse(readFileSync(join(repo, "meta.json"), "utf8")).erofs_formats).toEqual({ default: 2, extra: [1] });
    const staged = join(h.esp, "loader/entries.staged");
    const files = entryFiles(staged);
    const primary = readFileSync(join(staged, files.find((f) => f.startsWith("bootc_testos-2.0-1"))!), "utf8");
    const newId = /composefs\.digest=\?v1-sha512-12:([0-9a-f]{128})/.exec(primary)![1]!;
    expect(existsSync(join(repo, "images", newId))).toBe(true);
    const secondary = readFileSync(join(staged, files.find((f) => f.startsWith("bootc_testos-1.0-0"))!), "utf8");
    expect(kv(secondary, "options")).toBe(`rw composefs=?${idV2}`);
    expect(existsSync(join(repo, "images", idV2))).toBe(true);
    ok(cfs(["repo", "--repo", repo, "fsck"], env));
  });
});
