// `cfsboot container ukify`: sealed UKIs checked with independent tools.
// - objcopy builder on this machine (Debian 12 has no ukify; the stub is
//   systemd-boot-efi 252's): `objdump -h` shows the sections at aligned,
//   non-overlapping addresses after the stub's; `objcopy -O binary
//   --only-section` extracts them: .cmdline is kargs.d + the composefs karg
//   naming the id `compute-composefs-digest` prints + --karg, .linux/.initrd/
//   .osrel/.uname are the rootfs's files byte for byte; shared/pe.ts reads the
//   same. Both formats, insecure, reproducible output, failures.
// The ukify builder (Debian 13) is tested in ukify-guest.test.ts.

import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { join } from "node:path";

import { parseComposefsKarg } from "../../shared/kargs.ts";
import { readPeHeader, ukiBootDigest, ukiCmdline, ukiOsRelease, ukiUname } from "../../shared/pe.ts";
import { canRun, hasTool, isRoot } from "../helpers/env.ts";
import { TEST_KVER, bootImageSpec, cfsbootOk, extractSpec, runCfsboot } from "../helpers/boot-image.ts";
import { ensureExe } from "../helpers/pull-env.ts";
import { checkUkiLayout, objcopySection } from "../helpers/uki-inspect.ts";

const HOST_STUB = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
const ok = canRun(isRoot && hasTool("objcopy") && hasTool("objdump") && hasTool("tar") && existsSync(HOST_STUB), `needs root, binutils, GNU tar and ${HOST_STUB} (systemd-boot-efi)`);

let work: string;
let rootfs: string;
const spec = bootImageSpec({ kargs: ["console=ttyS0", "rw"] });
const modDir = () => join(rootfs, "usr/lib/modules", TEST_KVER);

beforeAll(() => {
  if (!ok) return;
  ensureExe();
  work = mkdtempSync("/var/tmp/cfs-ukify-test-");
  rootfs = join(work, "rootfs");
  extractSpec(spec, rootfs);
}, 60_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

let cachedIds: { v1: string; v2: string } | null = null;

/** The ids compute-composefs-digest prints for the rootfs (computed once; `fresh` recomputes). */
async function ids(fresh = false): Promise<{ v1: string; v2: string }> {
  if (cachedIds !== null && !fresh) return cachedIds;
  const [a, b] = await Promise.all([
    cfsbootOk(["container", "compute-composefs-digest", rootfs]),
    cfsbootOk(["container", "compute-composefs-digest", "--format=2", rootfs]),
  ]);
  cachedIds = { v1: a.trim(), v2: b.trim() };
  return cachedIds;
}

describe.skipIf(!ok)("container ukify (objcopy + systemd stub 252)", () => {
  test("format 1: sections in place, .cmdline = kargs.d + composefs.digest=v1 + composefs=<V2> + --karg", async () => {
    const out = join(work, "f1.efi");
    const r = await runCfsboot(["container", "ukify", "--uki-builder=objcopy", "--rootfs", rootfs, "--karg", "quiet", "--karg", "panic=-1", "--", "--output", out]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe("");
    checkUkiLayout(out, HOST_STUB);
    const { v1, v2 } = await ids();
    const want = `console=ttyS0 rw composefs.digest=v1-sha512-12:${v1} composefs=${v2} quiet panic=-1`;
    expect(objcopySection(out, ".cmdline").toString()).toBe(want);
    expect(objcopySection(out, ".linux").equals(readFileSync(join(modDir(), "vmlinuz")))).toBe(true);
    expect(objcopySection(out, ".initrd").equals(readFileSync(join(modDir(), "initramfs.img")))).toBe(true);
    expect(objcopySection(out, ".osrel").equals(readFileSync(join(rootfs, "usr/lib/os-release")))).toBe(true);
    expect(objcopySection(out, ".uname").toString()).toBe(TEST_KVER);
    expect(objcopySection(out, ".sbat").toString()).toMatch(/^sbat,1,SBAT Version,.*\nsystemd,1,.*\nuki,1,UKI,uki,1,https:\/\/uapi-group.org\/specifications\/specs\/unified_kernel_image\/\n\0$/s);
    // shared/pe.ts reads the same; the composefs-rs rules pick the V1 karg.
    const bytes = new Uint8Array(readFileSync(out));
    expect(ukiCmdline(bytes)).toBe(want);
    expect(parseComposefsKarg(ukiCmdline(bytes)!, "sha512")).toEqual({ version: 1, algorithm: "sha512", digest: v1, insecure: false, form: "composefs.digest" });
    expect(ukiOsRelease(bytes)).toBe(readFileSync(join(rootfs, "usr/lib/os-release"), "utf8"));
    expect(ukiUname(bytes)).toBe(TEST_KVER);
    const kernel = readFileSync(join(modDir(), "vmlinuz"));
    const initrd = readFileSync(join(modDir(), "initramfs.img"));
    expect(ukiBootDigest(bytes)).toBe(createHash("sha256").update(kernel).update(initrd).digest("hex"));
    // The kernel here is not a PE image: NX_COMPAT cleared (as ukify does), time stamp = the stub's.
    expect(readPeHeader(bytes).dllCharacteristics & 0x100).toBe(0);
    expect(readPeHeader(bytes).timeDateStamp).toBe(readPeHeader(new Uint8Array(readFileSync(HOST_STUB))).timeDateStamp);
  });

  test("format 2 insecure: only composefs=?<V2 id>; --no-v2-compat-karg: only composefs.digest=", async () => {
    const { v1, v2 } = await ids();
    const out = join(work, "f2.efi");
    await cfsbootOk(["container", "ukify", "--uki-builder=objcopy", "--rootfs", rootfs, "--format=2", "--allow-missing-verity", "--", "--output", out]);
    checkUkiLayout(out, HOST_STUB);
    expect(objcopySection(out, ".cmdline").toString()).toBe(`console=ttyS0 rw composefs=?${v2}`);
    expect(parseComposefsKarg(ukiCmdline(new Uint8Array(readFileSync(out)))!, "sha512")).toMatchObject({ version: 2, digest: v2, insecure: true });
    const out3 = join(work, "f1-only.efi");
    await cfsbootOk(["container", "ukify", "--uki-builder=objcopy", "--rootfs", rootfs, "--composefs-insecure", "--no-v2-compat-karg", "--", `--output=${out3}`]);
    expect(objcopySection(out3, ".cmdline").toString()).toBe(`console=ttyS0 rw composefs.digest=?v1-sha512-12:${v1}`);
  });

  test("reproducible; the UKI placed in /boot/EFI/Linux does not change the digest; a second ukify refuses", async () => {
    const a = join(work, "a.efi");
    const b = join(work, "b.efi");
    const before = await ids();
    await cfsbootOk(["container", "ukify", "--uki-builder=objcopy", "--rootfs", rootfs, "--", "-o", a]);
    await cfsbootOk(["container", "ukify", "--uki-builder=objcopy", "--rootfs", rootfs, "--", "--output", b]);
    expect(readFileSync(a).equals(readFileSync(b))).toBe(true);
    // The boot transform empties /boot but keeps the nanoseconds of its mtime
    // (composefs-rs quirk, oci.md §5): adding the UKI must not change them.
    const ref = join(work, "boot-mtime");
    writeFileSync(ref, "");
    spawnSync("touch", ["-r", join(rootfs, "boot"), ref]);
    const efiLinux = join(rootfs, "boot/EFI/Linux");
    mkdirSync(efiLinux, { recursive: true });
    copyFileSync(a, join(efiLinux, "cfs.efi"));
    spawnSync("touch", ["-r", ref, join(rootfs, "boot")]);
    try {
      expect(await ids(true)).toEqual(before);
      const again = await runCfsboot(["container", "ukify", "--uki-builder=objcopy", "--rootfs", rootfs, "--", "--output", join(work, "c.efi")]);
      expect(again.status).toBe(1);
      expect(again.stderr).toBe(`cfsboot: ${rootfs}: Cannot build UKI: rootfs already contains a boot image at boot/EFI/Linux/cfs.efi\n`);
      expect(existsSync(join(work, "c.efi"))).toBe(false);
    } finally {
      rmSync(join(rootfs, "boot/EFI"), { recursive: true });
      spawnSync("touch", ["-r", ref, join(rootfs, "boot")]);
    }
  });

  test("--kernel-dir; failures leave no output behind", async () => {
    const kdir = join(work, "kernels", "6.99.0-other");
    mkdirSync(kdir, { recursive: true });
    writeFileSync(join(kdir, "vmlinuz"), "other kernel, long enough to be a kernel for this test");
    writeFileSync(join(kdir, "initramfs.img"), "other initramfs");
    const out = join(work, "kd.efi");
    await cfsbootOk(["container", "ukify", "--uki-builder=objcopy", "--rootfs", rootfs, "--kernel-dir", kdir, "--", "--output", out]);
    expect(objcopySection(out, ".linux").toString()).toBe("other kernel, long enough to be a kernel for this test");
    expect(objcopySection(out, ".uname").toString()).toBe("6.99.0-other");

    const fails: [string[], RegExp][] = [
      [["--rootfs", rootfs], /no --output \(pass it after --/],
      [["--rootfs", rootfs, "--", "--output", join(work, "x.efi"), "--secureboot-private-key=k.pem"], /objcopy builder takes no ukify arguments/],
      [["--rootfs", rootfs, "--karg", "composefs=abc", "--", "--output", join(work, "x.efi")], /--karg composefs=abc: the composefs karg is computed/],
      [["--rootfs", "/", "--", "--output", join(work, "x.efi")], /^cfsboot: \/: Cannot operate on active root filesystem/],
      [["--rootfs", join(work, "kernels"), "--", "--output", join(work, "x.efi")], /No kernel found/],
      [["--rootfs", rootfs, "--kernel-dir", join(work, "kernels"), "--", "--output", join(work, "x.efi")], /vmlinuz: Kernel not found/],
      [["--rootfs", rootfs, "--stub", join(work, "nostub"), "--", "--output", join(work, "x.efi")], /nostub/],
      [["--rootfs", rootfs, "--", "--output", join(work, "nodir", "x.efi")], /output directory does not exist/],
    ];
    for (const [args, re] of fails) {
      const r = await runCfsboot(["container", "ukify", "--uki-builder=objcopy", ...args]);
      expect(r.status, args.join(" ")).toBe(1);
      expect(r.stderr, args.join(" ")).toMatch(re);
      expect(r.stderr.trim().split("\n"), args.join(" ")).toHaveLength(1);
    }
    if (!hasTool("ukify")) {
      const r = await runCfsboot(["container", "ukify", "--uki-builder=ukify", "--rootfs", rootfs, "--", "--output", join(work, "x.efi")]);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/ukify: not installed \(Debian package systemd-ukify\)/);
    }
    // Two kernels need --kernel-dir.
    const two = join(rootfs, "usr/lib/modules/6.99.0-second");
    const ref = join(work, "modules-mtime");
    writeFileSync(ref, "");
    spawnSync("touch", ["-r", join(rootfs, "usr/lib/modules"), ref]);
    mkdirSync(two);
    writeFileSync(join(two, "vmlinuz"), "k");
    try {
      const r = await runCfsboot(["container", "ukify", "--uki-builder=objcopy", "--rootfs", rootfs, "--", "--output", join(work, "x.efi")]);
      expect(r.stderr).toMatch(/several kernels in usr\/lib\/modules \(6\.12\.0-cfstest, 6\.99\.0-second\)/);
    } finally {
      rmSync(two, { recursive: true });
      spawnSync("touch", ["-r", ref, join(rootfs, "usr/lib/modules")]);
    }
    expect(readdirSync(work).filter((n) => n.startsWith(".x.efi") || n === "x.efi")).toEqual([]);
  });
});
