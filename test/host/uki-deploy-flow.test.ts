// The sealed-UKI workflow end to end on hosts in a directory: a container
// root → `cfsboot container ukify` (objcopy builder) → the UKI added to the
// image in /boot/EFI/Linux (a layer of its own that leaves /boot's metadata
// alone, so the boot image does not change) → `install to-filesystem`. The
// deployment is the image the UKI names (V1 for --format=1, V2 for
// --format=2, stored although the repository generates only V1), the UKI is
// copied byte for byte to EFI/Linux/bootc/, and a UKI that requires fs-verity
// on an insecure install is warned about.

import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";

import { canRun, hasTool, isRoot } from "../helpers/env.ts";
import { buildImage, type ImageSpec } from "../helpers/oci-image.ts";
import { bootImageSpec, cfsbootOk, extractSpec, runCfsboot } from "../helpers/boot-image.ts";
import { ensureExe } from "../helpers/pull-env.ts";

const ok = canRun(isRoot && hasTool("objcopy") && existsSync("/usr/lib/systemd/boot/efi/linuxx64.efi.stub"), "needs root, objcopy and the systemd stub (systemd-boot-efi)");

let work: string;
let rootfs: string;
let v1: string;
let v2: string;
const base = bootImageSpec();

beforeAll(async () => {
  if (!ok) return;
  ensureExe();
  work = mkdtempSync("/var/tmp/cfs-uki-flow-test-");
  rootfs = join(work, "rootfs");
  extractSpec(base, rootfs);
  [v1, v2] = (await Promise.all([
    cfsbootOk(["container", "compute-composefs-digest", rootfs]),
    cfsbootOk(["container", "compute-composefs-digest", "--format=2", rootfs]),
  ])).map((s) => s.trim()) as [string, string];
}, 60_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

/** Build a UKI for the rootfs and an image = base layer + a layer with the UKI. */
async function ukiImage(tag: string, ukifyArgs: string[]): Promise<{ ref: string; uki: Buffer }> {
  const out = join(work, `${tag}.efi`);
  await cfsbootOk(["container", "ukify", "--uki-builder=objcopy", "--rootfs", rootfs, ...ukifyArgs, "--", "--output", out]);
  const uki = readFileSync(out);
  const spec: ImageSpec = {
    ...base,
    layers: [
      ...base.layers,
      { compression: "gzip", entries: [{ type: "dir", path: "boot/EFI" }, { type: "dir", path: "boot/EFI/Linux" }, { type: "file", path: "boot/EFI/Linux/cfs.efi", content: uki }] },
    ],
  };
  buildImage(join(work, "layout"), spec, { tag });
  return { ref: `oci:${join(work, "layout")}:${tag}`, uki };
}

function newHost(name: string): { root: string; esp: string } {
  const h = { root: join(work, name, "root"), esp: join(work, name, "esp") };
  mkdirSync(h.root, { recursive: true });
  mkdirSync(h.esp, { recursive: true });
  return h;
}

describe.skipIf(!ok)("container ukify → image → install", () => {
  test("format 1, sealed: deployment = the V1 id, UKI copied, efi entry; warning: it needs fs-verity this host lacks", async () => {
    const img = await ukiImage("f1", []);
    const h = newHost("h1");
    const r = await runCfsboot(["install", "to-filesystem", "--composefs-insecure", "--source-imgref", img.ref, "--esp", h.esp, h.root]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain(`Installed deployment ${v1}\n`);
    expect(r.stderr).toContain(`cfsboot: warning: ${img.ref}: cfs.efi requires fs-verity (its composefs karg has no '?'), but this host is installed without it: the deployment will not boot until fs-verity is enabled (cfsboot seal)\n`);
    const copied = join(h.esp, "EFI/Linux/bootc", `bootc_composefs-${v1}.efi`);
    expect(readFileSync(copied).equals(img.uki)).toBe(true);
    const entries = readdirSync(join(h.esp, "loader/entries"));
    expect(entries).toHaveLength(1);
    const entry = readFileSync(join(h.esp, "loader/entries", entries[0]!), "utf8");
    expect(entry).toContain(`\nefi /EFI/Linux/bootc/bootc_composefs-${v1}.efi\n`);
    expect(entry).not.toMatch(/^options /m);
    expect(lstatSync(join(h.root, "composefs/images", v1)).isSymbolicLink()).toBe(true);
  }, 60_000);

  test("format 2, insecure, on a V1 repository: the V2 image is made and stored; no warning", async () => {
    const img = await ukiImage("f2", ["--format=2", "--allow-missing-verity"]);
    const h = newHost("h2");
    const r = await runCfsboot(["install", "to-filesystem", "--composefs-insecure", "--source-imgref", img.ref, "--esp", h.esp, h.root]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain(`Installed deployment ${v2}\n`);
    expect(r.stderr).not.toContain("warning");
    expect(lstatSync(join(h.root, "composefs/images", v2)).isSymbolicLink()).toBe(true);
    expect(readFileSync(join(h.esp, "EFI/Linux/bootc", `bootc_composefs-${v2}.efi`)).equals(img.uki)).toBe(true);
    // The state directory is the deployment's.
    expect(existsSync(join(h.root, "state/deploy", v2, `${v2}.origin`))).toBe(true);
  }, 60_000);

  test("a UKI sealed for another tree is refused with bootc's message", async () => {
    // Seal a UKI for the rootfs, then ship it in an image whose tree differs (an extra file).
    const out = join(work, "other.efi");
    await cfsbootOk(["container", "ukify", "--uki-builder=objcopy", "--rootfs", rootfs, "--no-v2-compat-karg", "--", "--output", out]);
    const spec: ImageSpec = {
      ...base,
      layers: [
        ...base.layers,
        { compression: "gzip", entries: [{ type: "file", path: "usr/lib/extra", content: "changes the tree" }, { type: "dir", path: "boot/EFI" }, { type: "dir", path: "boot/EFI/Linux" }, { type: "file", path: "boot/EFI/Linux/cfs.efi", content: readFileSync(out) }] },
      ],
    };
    buildImage(join(work, "layout"), spec, { tag: "other" });
    const h = newHost("h3");
    const r = await runCfsboot(["install", "to-filesystem", "--composefs-insecure", "--source-imgref", `oci:${join(work, "layout")}:other`, "--esp", h.esp, h.root]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`The UKI has the wrong composefs= parameter \\(is '${v1}', should be '[0-9a-f]{128}'\\)`));
    expect(existsSync(join(h.esp, "loader/entries"))).toBe(false);
  }, 60_000);
});
