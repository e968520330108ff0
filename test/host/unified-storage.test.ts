// Unified storage (`--unified-storage`, bootc PR 2044) with Debian's podman
// (overlay driver, as root) and a real registry: install, upgrade and switch
// pull with podman into <sysroot>/composefs/bootc/storage and import from
// there. Checked independently: `podman images` of that storage lists the
// image with the registry's manifest digest; the deployment id and the
// origin's manifest digest equal those of an install that pulls from the
// registry directly; `upgrade --check` sees no change; an upgrade stages the
// new image, which is then in the storage too. The storage on another file
// system (a tmpfs over composefs/bootc/storage, in a private mount
// namespace) works the same (bootc#2324: nothing is hardlinked across).

import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

import { canRun, hasTool, isRoot } from "../helpers/env.ts";
import { buildImage, pushImage } from "../helpers/oci-image.ts";
import { startRegistry, type TestRegistry } from "../helpers/registry.ts";
import { bootImageSpec, exe, runCfsboot, type Run } from "../helpers/boot-image.ts";
import { ensureExe } from "../helpers/pull-env.ts";
import { podmanArgs } from "../../host/unified-storage.ts";

const ok = canRun(isRoot && ["podman", "skopeo", "unshare", "docker-registry", "openssl", "htpasswd"].every(hasTool), "needs root, podman, skopeo, unshare and docker-registry");

let work: string;
let reg: TestRegistry;
let ref1: string;
let ref2: string;
let auth: string[];

beforeAll(async () => {
  if (!ok) return;
  ensureExe();
  work = mkdtempSync("/var/tmp/cfs-unified-test-");
  const layout = join(work, "layout");
  buildImage(layout, bootImageSpec({ version: "1" }), { tag: "v1" });
  buildImage(layout, bootImageSpec({ version: "2" }), { tag: "v2" });
  reg = await startRegistry();
  ref1 = await pushImage(layout, "v1", reg, "cfs/os", "latest");
  ref2 = await pushImage(layout, "v2", reg, "cfs/os", "v2");
  // The host commands take the registry's CA with --cert-dir; credentials through an auth file.
  auth = ["--cert-dir", reg.caDir, "--authfile", reg.authFile];
}, 120_000);

afterAll(async () => {
  await reg?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

function host(name: string): { root: string; esp: string; cmdline: string } {
  const h = { root: join(work, name, "root"), esp: join(work, name, "esp"), cmdline: join(work, name, "cmdline") };
  mkdirSync(h.root, { recursive: true });
  mkdirSync(h.esp, { recursive: true });
  return h;
}

const must = (r: Run): Run => {
  expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
  return r;
};

function podmanImages(storage: string): { digest: string; names: string[] }[] {
  const r = spawnSync("unshare", ["--mount", "--propagation", "private", "--", "podman", ...podmanArgs({ root: storage }), "images", "--format", "json"], { encoding: "utf8" });
  expect(r.status, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as { Digest: string; Names?: string[] }[]).map((i) => ({ digest: i.Digest, names: i.Names ?? [] }));
}

function originOf(root: string, id: string): string {
  return readFileSync(join(root, "state/deploy", id, `${id}.origin`), "utf8");
}

function installedId(r: Run): string {
  return /Installed deployment ([0-9a-f]{128})/.exec(r.stdout)![1]!;
}

describe.skipIf(!ok)("--unified-storage", () => {
  test("install: podman's storage holds the image; deployment and origin equal a direct install", async () => {
    const direct = host("direct");
    const d = must(await runCfsboot(["install", "to-filesystem", "--composefs-insecure", "--source-imgref", ref1, ...auth, "--esp", direct.esp, direct.root]));
    const h = host("unified");
    const u = must(await runCfsboot(["install", "to-filesystem", "--composefs-insecure", "--unified-storage", "--source-imgref", ref1, ...auth, "--esp", h.esp, h.root]));
    const id = installedId(u);
    expect(id).toBe(installedId(d));
    expect(originOf(h.root, id)).toBe(originOf(direct.root, id));
    const manifestDigest = /Image: (sha256:[0-9a-f]{64})/.exec(u.stdout)![1]!;
    const imgs = podmanImages(join(h.root, "composefs/bootc/storage"));
    expect(imgs.map((i) => i.digest)).toEqual([manifestDigest]);
    expect(imgs[0]!.names.join(" ")).toContain("cfs/os:latest");
    // The compatibility link exposes the same storage.
    expect(readdirSync(join(h.root, "ostree/bootc/storage"))).toContain("overlay-images");
    // The repository is consistent and holds no podman leftovers.
    must(await runCfsboot(["repo", "--repo", join(h.root, "composefs"), "fsck"]));
    expect(readdirSync(join(h.root, "composefs/bootc")).filter((n) => n.startsWith(".cfsboot-import-"))).toEqual([]);
    expect(readFileSync("/proc/self/mountinfo", "utf8")).not.toContain(join(h.root, "composefs/bootc/storage"));

    // Booted: no change for the same image; an upgrade to v2 pulls it into the storage and stages it.
    const entry = readdirSync(join(h.esp, "loader/entries"))[0]!;
    const opts = /^options (.*)$/m.exec(readFileSync(join(h.esp, "loader/entries", entry), "utf8"))![1]!;
    writeFileSync(h.cmdline, `${opts}\n`);
    const hostArgs = ["--sysroot", h.root, "--esp", h.esp, "--booted-cmdline", h.cmdline];
    const check = must(await runCfsboot(["upgrade", "--check", "--unified-storage", ...auth, ...hostArgs]));
    expect(check.stdout).toMatch(/No changes/);
    const sw = must(await runCfsboot(["switch", "--unified-storage", ...auth, ...hostArgs, ref2]));
    expect(sw.stdout).toContain("Queued for next boot");
    const v2 = /Digest: (sha256:[0-9a-f]{64})/.exec(sw.stdout)![1]!;
    expect(podmanImages(join(h.root, "composefs/bootc/storage")).map((i) => i.digest).sort()).toEqual([manifestDigest, v2].sort());
  }, 180_000);

  test("the storage on another file system (tmpfs): install works, nothing hardlinked across", async () => {
    const h = host("xdev");
    const storage = join(h.root, "composefs/bootc/storage");
    mkdirSync(storage, { recursive: true });
    const script = `mount -t tmpfs -o mode=0700 cfs-storage "$1" && shift && exec "$@"`;
    const r = spawnSync("unshare", ["--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", storage, exe(), "install", "to-filesystem", "--composefs-insecure", "--unified-storage", "--source-imgref", ref1, ...auth, "--esp", h.esp, h.root], {
      encoding: "utf8",
      env: { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin", HOME: process.env.HOME ?? "/root", CFSBOOT_NO_PROGRESS: "1" },
    });
    expect(r.status, r.stderr).toBe(0);
    const id = /Installed deployment ([0-9a-f]{128})/.exec(r.stdout)![1]!;
    // The tmpfs is gone with the namespace: the repository must stand on its own.
    expect(readdirSync(storage)).toEqual([]);
    must(await runCfsboot(["repo", "--repo", join(h.root, "composefs"), "fsck"]));
    expect(readdirSync(join(h.root, "state/deploy"))).toEqual([id]);
  }, 120_000);

  test("an image missing from the registry: one line, nothing installed; oci: images are pulled directly", async () => {
    const h = host("bad");
    const r = await runCfsboot(["install", "to-filesystem", "--composefs-insecure", "--unified-storage", "--source-imgref", reg.ref("cfs/missing", "x"), ...auth, "--esp", h.esp, h.root]);
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/^cfsboot: /);
    const o = host("oci");
    must(await runCfsboot(["install", "to-filesystem", "--composefs-insecure", "--unified-storage", "--source-imgref", `oci:${join(work, "layout")}:v1`, "--esp", o.esp, o.root]));
    expect(readdirSync(join(o.root, "composefs/bootc"))).not.toContain("storage");
  }, 60_000);
});
