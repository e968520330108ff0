// `cfsboot install to-disk`: disks checked with the tools that own the formats
// — sfdisk -J (GPT), minfo/mdir/mcopy (the FAT ESP), fsck.ext4 -n -f,
// dumpe2fs -h and debugfs (the ext4 root) — on a plain image file without
// loop devices or mounts (staging), through a loop device and a mount
// (method mount), and on a block device (a loop device standing in for a
// disk). The EROFS image inside the ext4 is read back with debugfs and its
// fs-verity digest must be the deployment id compute-composefs-digest prints.

import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";

import { toHex } from "../../shared/bytes.ts";
import { fsverityDigest } from "../../shared/fsverity.ts";
import { canRun, hasTool, isRoot } from "../helpers/env.ts";
import { buildImage } from "../helpers/oci-image.ts";
import { TEST_KVER, bootImageSpec, cfsbootOk, extractSpec, runCfsboot } from "../helpers/boot-image.ts";
import { ensureExe } from "../helpers/pull-env.ts";

const TOOLS = ["sfdisk", "mkfs.vfat", "mcopy", "mdir", "minfo", "mke2fs", "fsck.ext4", "dumpe2fs", "debugfs", "losetup", "unshare", "truncate"];
const SDBOOT = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
const ok = canRun(isRoot && TOOLS.every(hasTool) && existsSync(SDBOOT), `needs root, ${SDBOOT} and ${TOOLS.join(", ")}`);

const IDS = {
  disk: "c0f5b007-0000-4000-8000-000000000001",
  espPart: "c0f5b007-0000-4000-8000-0000000000e5",
  rootPart: "c0f5b007-0000-4000-8000-000000000400",
  rootFs: "c0f5b007-0000-4000-8000-0000000000f5",
  vol: "C0F5B007",
};
const idArgs = ["--disk-uuid", IDS.disk, "--esp-partuuid", IDS.espPart, "--root-partuuid", IDS.rootPart, "--root-fs-uuid", IDS.rootFs, "--esp-volume-id", IDS.vol];

let work: string;
let layout: string;
let imgref: string;
let deploymentId: string;
const spec = bootImageSpec();

beforeAll(async () => {
  if (!ok) return;
  ensureExe();
  work = mkdtempSync("/var/tmp/cfs-to-disk-test-");
  layout = join(work, "layout");
  buildImage(layout, spec, { tag: "v1" });
  imgref = `oci:${layout}:v1`;
  // The id, computed independently of the install (from the same tree as a directory).
  extractSpec(spec, join(work, "rootfs"));
  deploymentId = (await cfsbootOk(["container", "compute-composefs-digest", join(work, "rootfs")])).trim();
}, 60_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

const MT = { ...process.env, MTOOLS_SKIP_CHECK: "1" };

function tool(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: "utf8", env, maxBuffer: 64 << 20 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function ok0(cmd: string, args: string[], env?: NodeJS.ProcessEnv): string {
  const r = tool(cmd, args, env);
  expect(r.status, `${cmd} ${args.join(" ")}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

function espFile(disk: string, path: string): Buffer {
  const out = join(work, "esp-file");
  rmSync(out, { force: true });
  ok0("mcopy", ["-n", "-i", `${disk}@@1M`, `::${path}`, out], MT);
  return readFileSync(out);
}

/** Everything a to-disk result must satisfy, read back with the format's own tools. */
function checkDisk(disk: string, o: { size?: number } = {}): void {
  // GPT
  const pt = JSON.parse(ok0("sfdisk", ["-J", disk])).partitiontable as { label: string; id: string; partitions: { start: number; size: number; type: string; uuid: string; name: string }[] };
  expect(pt.label).toBe("gpt");
  expect(pt.id.toLowerCase()).toBe(IDS.disk);
  expect(pt.partitions).toHaveLength(2);
  const [esp, root] = pt.partitions as [(typeof pt.partitions)[0], (typeof pt.partitions)[0]];
  expect(esp).toMatchObject({ start: 2048, size: 512 * 2048, type: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", name: "esp" });
  expect(esp.uuid.toLowerCase()).toBe(IDS.espPart);
  expect(root).toMatchObject({ start: 2048 + 512 * 2048, type: "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", name: "root" });
  expect(root.uuid.toLowerCase()).toBe(IDS.rootPart);
  if (o.size !== undefined) expect((root.start + root.size) * 512 + 1024 * 1024).toBe(o.size);
  const rootOff = root.start * 512;

  // ESP: FAT32 with our volume id; systemd-boot, loader.conf, the entry and the kernel directory.
  const info = ok0("minfo", ["-i", `${disk}@@1M`, "::"], MT);
  expect(info).toMatch(/serial number: C0F5B007/i);
  expect(info).toMatch(/disk type="FAT32/);
  const files = ok0("mdir", ["-/", "-b", "-i", `${disk}@@1M`, "::/"], MT).split("\n").map((l) => l.trim()).filter((l) => l !== "");
  const kdir = `::/EFI/Linux/bootc_composefs-${deploymentId}/`;
  for (const f of ["::/EFI/BOOT/BOOTX64.EFI", "::/EFI/systemd/systemd-bootx64.efi", "::/loader/loader.conf", "::/loader/entries/bootc_cfs_test-1-1+3.conf", `${kdir}vmlinuz`, `${kdir}initrd`]) {
    expect(files, f).toContain(f);
  }
  expect(espFile(disk, "/EFI/BOOT/BOOTX64.EFI").equals(readFileSync(SDBOOT))).toBe(true);
  expect(espFile(disk, "/loader/loader.conf").toString()).toBe("timeout 5");
  const entry = espFile(disk, "/loader/entries/bootc_cfs_test-1-1+3.conf").toString();
  // root= from the disk, rw, the insecure V1 karg, then kargs.d (console=ttyS0; its rw is there already).
  expect(entry).toContain(`\noptions root=UUID=${IDS.rootFs} rw composefs.digest=?v1-sha512-12:${deploymentId} console=ttyS0\n`);
  expect(entry).toMatch(/^title cfsboot test OS 1\nversion 1\nlinux \/EFI\/Linux\/bootc_composefs-[0-9a-f]{128}\/vmlinuz\n/);
  const rootfs = join(work, "rootfs");
  expect(espFile(disk, `/EFI/Linux/bootc_composefs-${deploymentId}/vmlinuz`).equals(readFileSync(join(rootfs, "usr/lib/modules", TEST_KVER, "vmlinuz")))).toBe(true);
  expect(espFile(disk, `/EFI/Linux/bootc_composefs-${deploymentId}/initrd`).equals(readFileSync(join(rootfs, "usr/lib/modules", TEST_KVER, "initramfs.img")))).toBe(true);

  // ext4 root: clean, 4 KiB blocks, verity feature, our UUID; the repository and the state inside.
  const ext = `${disk}?offset=${rootOff}`;
  const fsck = tool("fsck.ext4", ["-n", "-f", ext]);
  expect(fsck.status, fsck.stdout + fsck.stderr).toBe(0);
  const sb = ok0("dumpe2fs", ["-h", ext]);
  expect(sb).toMatch(new RegExp(`Filesystem UUID:\\s+${IDS.rootFs}`));
  expect(sb).toMatch(/Filesystem features:.*\bverity\b/);
  expect(sb).toMatch(/Block size:\s+4096/);
  const debugfs = (cmd: string) => ok0("debugfs", ["-R", cmd, ext]);
  const top = debugfs("ls -p /").split("\n").map((l) => l.split("/")[5]).filter((n) => n !== undefined && n !== "" && n !== "." && n !== "..");
  expect(top.sort()).toEqual(["composefs", "lost+found", "ostree", "state"]);
  expect(debugfs(`cat /state/deploy/${deploymentId}/${deploymentId}.origin`)).toContain(`container-image-reference = ostree-unverified-image:oci:${layout}:v1`);
  expect(debugfs("cat /composefs/meta.json")).toContain('"algorithm"');
  // The boot EROFS, dumped out of the ext4, is the image the karg names.
  const link = debugfs(`stat /composefs/images/${deploymentId}`);
  expect(link).toMatch(/Type: symlink/);
  const erofs = join(work, "erofs");
  rmSync(erofs, { force: true });
  ok0("debugfs", ["-R", `dump /composefs/objects/${deploymentId.slice(0, 2)}/${deploymentId.slice(2)} ${erofs}`, ext]);
  expect(toHex(fsverityDigest(new Uint8Array(readFileSync(erofs)), "sha512"))).toBe(deploymentId);
}

function leftovers(dir: string): string[] {
  return readdirSync(dir).filter((n) => n.startsWith(".cfsboot-to-disk-") || n.includes(".tmp-"));
}

function loopsOf(file: string): string {
  return tool("losetup", ["-j", file]).stdout.trim();
}

describe.skipIf(!ok)("install to-disk", () => {
  test("image file, no loop device or mount (staging): GPT, ESP, ext4 root as the tools read them", async () => {
    const disk = join(work, "staged.img");
    const out = await cfsbootOk(["install", "to-disk", "--composefs-insecure", "--source-imgref", imgref, ...idArgs, disk]);
    expect(out).toContain(`Installed deployment ${deploymentId}\n`);
    expect(out).toContain(`UUID=${IDS.rootFs}`);
    checkDisk(disk);
    expect(statSync(disk).blocks * 512).toBeLessThan(statSync(disk).size / 4); // sparse
    expect(leftovers(work)).toEqual([]);
    expect(loopsOf(disk)).toBe("");
  }, 60_000);

  test("--size and --method mount (loop device over the root partition, mounted in a private namespace)", async () => {
    const disk = join(work, "mounted.img");
    const size = 1700 * 1024 * 1024;
    await cfsbootOk(["install", "to-disk", "--composefs-insecure", "--method", "mount", "--size", "1700M", "--source-imgref", imgref, ...idArgs, disk]);
    checkDisk(disk, { size });
    expect(statSync(disk).size).toBe(size);
    expect(loopsOf(disk)).toBe("");
    expect(readFileSync("/proc/self/mountinfo", "utf8")).not.toContain(".cfsboot-to-disk-");
    expect(leftovers(work)).toEqual([]);
  }, 60_000);

  test("a block device (a loop device over a file): needs --wipe, then written in place", async () => {
    const backing = join(work, "device.img");
    const size = 1600 * 1024 * 1024;
    ok0("truncate", ["-s", String(size), backing]);
    const dev = ok0("losetup", ["--find", "--show", backing]).trim();
    try {
      const refused = await runCfsboot(["install", "to-disk", "--composefs-insecure", "--source-imgref", imgref, dev]);
      expect(refused.status).toBe(1);
      expect(refused.stderr).toBe(`cfsboot: ${dev}: is a block device; pass --wipe to erase it and install\n`);
      await cfsbootOk(["install", "to-disk", "--composefs-insecure", "--wipe", "--source-imgref", imgref, ...idArgs, dev]);
      checkDisk(dev, { size });
    } finally {
      tool("losetup", ["-d", dev]);
    }
  }, 60_000);

  test("refusals before anything is fetched or written", async () => {
    // Sealed without fs-verity in the kernel: the check comes first (the image reference is not even looked at).
    const sealed = join(work, "sealed.img");
    if (!existsSync("/sys/fs/ext4/features/verity")) {
      const r = await runCfsboot(["install", "to-disk", "--source-imgref", "oci:/nonexistent:x", sealed]);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/^cfsboot: .*sealed\.img: this kernel has no fs-verity for ext4 \(\/sys\/fs\/ext4\/features\/verity is missing\), so a sealed disk cannot be written here\. Install with --composefs-insecure/);
      expect(existsSync(sealed)).toBe(false);
    }
    const staged = await runCfsboot(["install", "to-disk", "--method", "staging", "--source-imgref", imgref, sealed]);
    expect(staged.status).toBe(1);
    expect(staged.stderr).toMatch(/staged disk cannot have fs-verity/);
    // An existing file is not replaced without --wipe; with --wipe it is.
    const keep = join(work, "keep.img");
    writeFileSync(keep, "precious");
    const r2 = await runCfsboot(["install", "to-disk", "--composefs-insecure", "--source-imgref", imgref, keep]);
    expect(r2.status).toBe(1);
    expect(r2.stderr).toBe(`cfsboot: ${keep}: exists and is not empty; pass --wipe to replace it\n`);
    expect(readFileSync(keep, "utf8")).toBe("precious");
    const grub = await runCfsboot(["install", "to-disk", "--composefs-insecure", "--bootloader", "grub", "--source-imgref", imgref, join(work, "grub.img")]);
    expect(grub.status).toBe(1);
    expect(grub.stderr).toMatch(/installs systemd-boot only/);
    // A failing install (unknown image) leaves no image and no scratch directory.
    const bad = await runCfsboot(["install", "to-disk", "--composefs-insecure", "--wipe", "--source-imgref", `oci:${layout}:nope`, keep]);
    expect(bad.status).toBe(1);
    expect(bad.stderr.trim().split("\n")).toHaveLength(1);
    expect(readFileSync(keep, "utf8")).toBe("precious");
    expect(existsSync(join(work, "grub.img"))).toBe(false);
    expect(leftovers(work)).toEqual([]);
    // --wipe replaces the file with a disk.
    await cfsbootOk(["install", "to-disk", "--composefs-insecure", "--wipe", "--source-imgref", imgref, ...idArgs, keep]);
    checkDisk(keep);
  }, 90_000);
});
