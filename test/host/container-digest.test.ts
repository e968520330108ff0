// `cfsboot container compute-composefs-digest`: the deployment id of a
// directory must equal the boot image id a `repo pull --bootable` of the same
// tree as an OCI image produces (V1 in a V1 repository, V2 in a dual one),
// and the id computed straight from the image reference (oci: and a real
// registry). The directory is the image's layer extracted by GNU tar, so
// both forms hold the same tree (test/helpers/boot-image.ts).

import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { mkdtempSync, readFileSync, rmSync, mkdirSync } from "node:fs";
import { join } from "node:path";

import { parseDumpfile } from "../../shared/dumpfile.ts";
import { writeErofs } from "../../shared/erofs/writer.ts";
import { fsverityDigest } from "../../shared/fsverity.ts";
import { toHex } from "../../shared/bytes.ts";
import { lookup } from "../../shared/tree.ts";
import { canRun, hasTool, isRoot } from "../helpers/env.ts";
import { buildImage, pushImage } from "../helpers/oci-image.ts";
import { startRegistry, type TestRegistry } from "../helpers/registry.ts";
import { bootImageSpec, cfsbootOk, extractSpec, runCfsboot } from "../helpers/boot-image.ts";
import { ensureExe } from "../helpers/pull-env.ts";

const ok = canRun(isRoot && hasTool("tar") && hasTool("skopeo") && hasTool("docker-registry") && hasTool("openssl") && hasTool("htpasswd"), "needs root, GNU tar, skopeo, docker-registry, openssl, htpasswd");

let work: string;
let rootfs: string;
let layout: string;
let reg: TestRegistry | null = null;
const spec = bootImageSpec();
const HEX128 = /^[0-9a-f]{128}\n$/;

beforeAll(async () => {
  if (!ok) return;
  ensureExe();
  work = mkdtempSync("/var/tmp/cfs-digest-test-");
  rootfs = join(work, "rootfs");
  layout = join(work, "layout");
  buildImage(layout, spec, { tag: "v1" });
  extractSpec(spec, rootfs);
}, 60_000);

afterAll(async () => {
  await reg?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

async function digest(args: string[], env?: Record<string, string>): Promise<string> {
  const out = await cfsbootOk(["container", "compute-composefs-digest", ...args], { ...(env ? { env } : {}) });
  expect(out).toMatch(HEX128);
  return out.trim();
}

async function pulledBootImage(erofs: "v1" | "dual", ref: string): Promise<string> {
  const repo = join(work, `repo-${erofs}-${Math.random().toString(36).slice(2)}`);
  await cfsbootOk(["repo", "--repo", repo, "init", "--insecure", "--erofs", erofs]);
  const out = await cfsbootOk(["repo", "--repo", repo, "pull", "--bootable", ref, "img"]);
  const m = /^Boot image: ([0-9a-f]{128})$/m.exec(out);
  expect(m, out).not.toBeNull();
  return m![1]!;
}

describe.skipIf(!ok)("compute-composefs-digest", () => {
  test("directory = OCI image = --bootable pull, for V1 and V2", async () => {
    const v1 = await digest([rootfs]);
    const v1b = await digest(["--format=1", rootfs]);
    const v2 = await digest(["--format", "2", rootfs]);
    expect(v1b).toBe(v1);
    expect(v2).not.toBe(v1);
    // What a deployment of the image gets: the boot image a --bootable pull stores.
    expect(await pulledBootImage("v1", `oci:${layout}:v1`)).toBe(v1);
    expect(await pulledBootImage("dual", `oci:${layout}:v1`)).toBe(v2);
    // Straight from the image reference (temporary repository).
    expect(await digest([`oci:${layout}:v1`])).toBe(v1);
    expect(await digest(["--format=2", `oci:${layout}:v1`])).toBe(v2);
  }, 60_000);

  test("from a registry (docker://, TLS + credentials)", async () => {
    reg = await startRegistry();
    const ref = await pushImage(layout, "v1", reg, "cfs/bootable", "latest");
    const v1 = await digest([rootfs]);
    expect(await digest(["--cert-dir", reg.caDir, "--creds", reg.creds, ref])).toBe(v1);
    // Wrong credentials: one clear line, no id.
    const bad = await runCfsboot(["container", "compute-composefs-digest", "--cert-dir", reg.caDir, "--creds", "nobody:wrong", ref]);
    expect(bad.status).toBe(1);
    expect(bad.stdout).toBe("");
    expect(bad.stderr.trim().split("\n")).toHaveLength(1);
    expect(bad.stderr).toMatch(/^cfsboot: /);
  }, 60_000);

  test("--write-dumpfile-to writes the boot tree: /boot, /sysroot, /run emptied; its V1 image has the printed id", async () => {
    const dump = join(work, "tree.dump");
    const id = await digest(["--write-dumpfile-to", dump, rootfs]);
    const tree = parseDumpfile(new Uint8Array(readFileSync(dump)));
    for (const p of ["/boot", "/sysroot", "/run"]) {
      const d = lookup(tree, p);
      expect(d?.kind, p).toBe("dir");
      expect(d?.kind === "dir" ? d.entries.size : -1, p).toBe(0);
    }
    // SELinux labels from the image's own policy, the OCI allowlist dropped user.note.
    const tool = lookup(tree, "/usr/bin/tool")!;
    expect(Buffer.from(tool.stat.xattrs.get("security.selinux") ?? new Uint8Array()).toString()).toBe("system_u:object_r:usr_t:s0");
    expect(tool.stat.xattrs.has("user.note")).toBe(false);
    expect(tool.stat.xattrs.has("security.capability")).toBe(true);
    expect(toHex(fsverityDigest(writeErofs(tree, { version: 1 }), "sha512"))).toBe(id);
    // The same dumpfile from the image reference.
    const dump2 = join(work, "tree2.dump");
    await digest(["--write-dumpfile-to", dump2, `oci:${layout}:v1`]);
    expect(readFileSync(dump2).equals(readFileSync(dump))).toBe(true);
  }, 60_000);

  test("keep-user-xattrs: another id, equal for directory and image", async () => {
    const dflt = await digest([rootfs]);
    const keep = await digest(["--xattrs", "keep-user-xattrs", rootfs]);
    expect(keep).not.toBe(dflt);
    expect(await digest(["--xattrs", "keep-user-xattrs", `oci:${layout}:v1`])).toBe(keep);
  }, 60_000);

  test("a directory needs no temporary storage at all (no O_TMPFILE, bootc#1977/#2340)", async () => {
    const v1 = await digest([rootfs]);
    // Temporary locations that cannot be written: the directory path still works.
    expect(await digest([rootfs], { CFSBOOT_TMPDIR: "/nonexistent/cfsboot", TMPDIR: "/nonexistent/tmp" })).toBe(v1);
  }, 60_000);

  test("refusals: / (bootc's message), a missing path, an unknown transport, a bad format", async () => {
    const root = await runCfsboot(["container", "compute-composefs-digest", "/"]);
    expect(root.status).toBe(1);
    expect(root.stderr).toBe("cfsboot: /: Cannot operate on active root filesystem; mount separate target instead\n");
    const missing = await runCfsboot(["container", "compute-composefs-digest", join(work, "nope")]);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/nope: not a directory, and not an image reference/);
    const tr = await runCfsboot(["container", "compute-composefs-digest", "docker-daemon:x"]);
    expect(tr.status).toBe(1);
    const fmt = await runCfsboot(["container", "compute-composefs-digest", "--format=3", rootfs]);
    expect(fmt.status).toBe(1);
    expect(fmt.stderr).toMatch(/format/);
    // A tree without /usr cannot be a bootable image.
    const bare = join(work, "bare");
    mkdirSync(join(bare, "boot"), { recursive: true });
    const noUsr = await runCfsboot(["container", "compute-composefs-digest", bare]);
    expect(noUsr.status).toBe(1);
    expect(noUsr.stderr).toMatch(/\/usr/);
    expect(noUsr.stderr.split("\n")).toHaveLength(2);
  }, 60_000);
});
