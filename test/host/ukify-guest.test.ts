// `cfsboot container ukify` with systemd 257 (the Debian 13 guest rootfs the
// VM harness builds and caches, vm/lib/rootfs.ts): cfsboot itself runs in a
// chroot of that rootfs, where `ukify` is installed, so the ukify builder is
// used; the result is checked with `ukify inspect` and compared with the
// objcopy builder on the same 257 stub (whose image base is not 0): same
// section addresses, same bytes in every section ukify wrote (.sbat merged
// from stub and kernel the same way).

import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";

import { splitCmdline } from "../../shared/kargs.ts";
import { peSection, readPeHeader, readPeSections } from "../../shared/pe.ts";
import { canRun, hasTool, isRoot } from "../helpers/env.ts";
import { TEST_KVER, bootImageSpec, cfsbootOk, exe, extractSpec } from "../helpers/boot-image.ts";
import { ensureExe } from "../helpers/pull-env.ts";
import { UKI_SECTIONS, checkUkiLayout, objdumpSections } from "../helpers/uki-inspect.ts";
import { TRIXIE, chrootScript, ensureRootfs, extractRootfs, type Rootfs } from "../../vm/lib/rootfs.ts";

const ok = canRun(isRoot && hasTool("objcopy") && hasTool("objdump") && hasTool("tar") && hasTool("debootstrap") && hasTool("unshare"), "needs root, binutils, GNU tar, debootstrap (the VM harness's guest rootfs)");

let work: string;
let rootfs: string;
let guest: Rootfs;
let chroot: string;

beforeAll(async () => {
  if (!ok) return;
  ensureExe();
  work = mkdtempSync("/var/tmp/cfs-ukify-guest-test-");
  rootfs = join(work, "rootfs");
  extractSpec(bootImageSpec({ kernel: new Uint8Array(readFileSync((guest = await ensureRootfs(TRIXIE)).vmlinuz)) }), rootfs);
  chroot = join(work, "trixie");
  extractRootfs(guest, chroot);
}, 1_800_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

function inChroot(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const outDir = join(work, "out");
  mkdirSync(outDir, { recursive: true });
  const r = spawnSync(chrootScript, [chroot, "--bind", `${exe()}:/usr/local/bin/cfsboot`, "--bind", `${rootfs}:/mnt/rootfs`, "--bind", `${outDir}:/mnt/out`, "--", ...args], { encoding: "utf8" });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe.skipIf(!ok)("container ukify with systemd 257 (Debian 13 guest rootfs)", () => {
  test("the guest has ukify and the stub; the host has no ukify, so the guest is where the ukify builder runs", () => {
    expect(existsSync(join(chroot, "usr/bin/ukify"))).toBe(true);
    expect(existsSync(join(chroot, "usr/lib/systemd/boot/efi/linuxx64.efi.stub"))).toBe(true);
  });

  test("ukify build: ukify inspect shows the cmdline; the objcopy builder on the same stub gives the same sections", async () => {
    const [v1, v2] = (await Promise.all([
      cfsbootOk(["container", "compute-composefs-digest", rootfs]),
      cfsbootOk(["container", "compute-composefs-digest", "--format=2", rootfs]),
    ])).map((s) => s.trim());
    for (const format of ["1", "2"] as const) {
      const r = inChroot(["cfsboot", "container", "ukify", `--format=${format}`, "--rootfs", "/mnt/rootfs", "--karg", "quiet", "--", "--output", `/mnt/out/u${format}.efi`]);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stderr).toContain(`Wrote unsigned /mnt/out/u${format}.efi`);
      const inspect = inChroot(["ukify", "--json=short", "inspect", `/mnt/out/u${format}.efi`]);
      expect(inspect.status, inspect.stderr).toBe(0);
      const info = JSON.parse(inspect.stdout) as Record<string, { size: number; text?: string }>;
      const want = format === "1" ? `console=ttyS0 rw composefs.digest=v1-sha512-12:${v1} composefs=${v2} quiet` : `console=ttyS0 rw composefs=${v2} quiet`;
      expect(info[".cmdline"]?.text).toBe(want);
      expect(info[".uname"]?.text).toBe(TEST_KVER);
      expect(info[".osrel"]?.text).toBe(readFileSync(join(rootfs, "usr/lib/os-release"), "utf8"));
      expect(splitCmdline(want).filter((t) => t.startsWith("composefs"))).toHaveLength(format === "1" ? 2 : 1);

      const ukified = join(work, "out", `u${format}.efi`);
      checkUkiLayout(ukified, guest.stub);
      const obj = join(work, `o${format}.efi`);
      await cfsbootOk(["container", "ukify", "--uki-builder=objcopy", "--stub", guest.stub, `--format=${format}`, "--rootfs", rootfs, "--karg", "quiet", "--", "--output", obj]);
      checkUkiLayout(obj, guest.stub);
      expect(objdumpSections(obj).map((s) => [s.name, s.vma])).toEqual(objdumpSections(ukified).map((s) => [s.name, s.vma]));
      const ua = new Uint8Array(readFileSync(ukified));
      const ub = new Uint8Array(readFileSync(obj));
      for (const name of [".sbat", ...UKI_SECTIONS]) expect(Buffer.from(peSection(ub, name)!).equals(Buffer.from(peSection(ua, name)!)), name).toBe(true);
      // The 257 stub is linked at a high image base: objdump's VMAs are base + RVA.
      const base = readPeHeader(ub).imageBase;
      expect(base).not.toBe(0n);
      const osrel = readPeSections(ub).find((s) => s.name === ".osrel")!;
      expect(objdumpSections(obj).find((s) => s.name === ".osrel")!.vma).toBe(base + BigInt(osrel.virtualAddress));
    }
  }, 120_000);
});
