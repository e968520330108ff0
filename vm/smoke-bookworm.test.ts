// Smoke test of the harness on a plain Debian 12 guest (kernel 6.1, systemd
// 252: the old-kernel path). Two boots of one disk:
//   1. OVMF → systemd-boot → BLS Type 1 entry with boot counting; the test
//      unit is baked into the image (systemd 252 has no extra-unit credentials)
//      and ends the boot with the fast power-off (sysrq remount-ro + off).
//   2. Direct kernel boot (SeaBIOS, -kernel/-initrd/-append) with a 9p share,
//      after the host rewrote the report script and read a file the first
//      boot left, both through debugfs on the powered-off disk; the initrd is
//      the cached one with an appended cpio carrying an extra initrd unit.

import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { canRun, hasTool, isRoot } from "../test/helpers/env.ts";
import {
  BAKED_SCRIPT_PATH, BOOKWORM, type GuestDisk, type GuestReport, type Rootfs, type VmRun,
  OVMF_CODE, appendToInitrd, buildGuestDisk, ensureInitrd, ensureRootfs, espList, expectReport, ext4Features, ext4Read, ext4Write,
  newRunDir, reportScript, runVm,
} from "./harness.ts";

const TOOLS = ["qemu-system-x86_64", "debootstrap", "sfdisk", "mkfs.vfat", "mcopy", "mke2fs", "debugfs", "zstd", "unshare"];
const ready = canRun(isRoot && TOOLS.every(hasTool) && existsSync(OVMF_CODE), `VM tests need root, OVMF and ${TOOLS.join(", ")}`);

describe.skipIf(!ready)("bookworm guest: UEFI BLS boot, then direct kernel boot with a 9p share", () => {
  let rootfs: Rootfs;
  let dir: string;
  let disk: GuestDisk;
  let uefi: VmRun;
  let r1: GuestReport;
  let direct: VmRun;
  let r2: GuestReport;
  let leftByBoot1: string;
  let featuresAfterBoot1: string[];
  const shared = `shared over 9p at ${new Date().toISOString()}\n`;

  beforeAll(async () => {
    rootfs = await ensureRootfs(BOOKWORM);
    const initrd = await ensureInitrd(rootfs);
    dir = newRunDir("smoke-bookworm");
    disk = buildGuestDisk({
      rootfs, initrd, path: join(dir, "disk.img"),
      entry: { id: "cfs-old", tries: 3 },
      report: {
        commands: [{ name: "leave_file", cmd: "mkdir -p /var/lib/cfsvm-test && uname -r > /var/lib/cfsvm-test/boot1" }],
        action: "poweroff-fast",
      },
    });
    uefi = await runVm({ name: "uefi", runDir: dir, disk });
    r1 = expectReport(uefi);

    // between boots, on the powered-off disk: read what boot 1 wrote, replace the report script
    leftByBoot1 = ext4Read(disk, "/var/lib/cfsvm-test/boot1").toString();
    featuresAfterBoot1 = ext4Features(disk);
    ext4Write(disk, BAKED_SCRIPT_PATH, reportScript({
      commands: [
        { name: "share", cmd: "modprobe 9pnet_virtio && mkdir -p /mnt/host && mount -t 9p -o trans=virtio,version=9p2000.L,ro host0 /mnt/host && cat /mnt/host/hello.txt" },
        { name: "appended", cmd: "cat /run/cfsvm-appended" },
      ],
    }), 0o755);
    // an initrd unit that only exists in the appended cpio; /run survives the switch to the real root
    const unit = "/usr/lib/systemd/system/cfsvm-appended.service";
    const initrdAppended = join(dir, "initrd-appended.img");
    appendToInitrd(initrd.path, [
      {
        path: unit, mode: 0o644,
        data: "[Unit]\nDefaultDependencies=no\nConditionPathExists=/etc/initrd-release\nBefore=initrd-root-fs.target\n" +
          "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo from-appended-cpio > /run/cfsvm-appended'\n",
      },
      { path: "/etc/systemd/system/initrd-root-fs.target.wants/cfsvm-appended.service", symlink: unit },
    ], initrdAppended);
    const share = join(dir, "share");
    mkdirSync(share, { recursive: true });
    writeFileSync(join(share, "hello.txt"), shared);
    direct = await runVm({
      name: "direct", runDir: dir, disk, firmware: "bios",
      direct: { kernel: disk.kernel, initrd: initrdAppended, append: `${disk.cmdline} cfsvm.direct` },
      share: { path: share, tag: "host0" },
    });
    r2 = expectReport(direct);
  });

  it("UEFI boot: Debian 12's kernel, ext4 root, clean running state", () => {
    expect(r1.kernel).toBe(rootfs.kver);
    expect(r1.kernel).toMatch(/^6\.1\./);
    expect(r1.osRelease.VERSION_CODENAME).toBe("bookworm");
    expect(r1.root.fstype).toBe("ext4");
    expect(r1.root.source).toBe("/dev/vda2");
    expect(r1.cmdline).toBe(`initrd=\\cfs\\initrd.img ${disk.cmdline}`);
    expect(r1.failedUnits).toEqual([]);
    expect(r1.systemState).toBe("running");
  });

  it("UEFI boot: systemd-boot 252 counted the boot, bless renamed +3 to the plain name", () => {
    expect(r1.efivar("LoaderInfo")).toMatch(/^systemd-boot 252/);
    expect(r1.efivar("LoaderBootCountPath")).toBe("\\loader\\entries\\cfs-old+2-1.conf");
    expect(r1.blessStatus).toBe("good");
    expect(espList(disk, "/loader/entries")).toEqual(["cfs-old.conf"]);
    expect(uefi.ended).toBe("poweroff");
  });

  it("the fast power-off leaves a clean disk: the host reads what boot 1 wrote", () => {
    expect(uefi.lines.some((l) => /cfsvm: root is ro, powering off/.test(l.line))).toBe(true);
    expect(featuresAfterBoot1).toContain("verity");
    expect(featuresAfterBoot1).not.toContain("needs_recovery");
    expect(leftByBoot1.trim()).toBe(rootfs.kver);
  });

  it("the host writes the ext4 root of the powered-off disk", () => {
    // boot 2 ran the script the host wrote: it has the share command, not leave_file
    expect(r2.has("hook.share")).toBe(true);
    expect(r2.has("hook.leave_file")).toBe(false);
  });

  it("direct kernel boot: the appended cpio's initrd unit ran", () => {
    expect(r2.hook("appended").text).toBe("from-appended-cpio");
  });

  it("direct kernel boot: no firmware loader, the -append command line, 9p share readable", () => {
    expect(r2.kernel).toBe(rootfs.kver);
    expect(r2.cmdline).toBe(`${disk.cmdline} cfsvm.direct`);
    expect(r2.efivar("LoaderInfo")).toBeUndefined();
    expect(r2.root.source).toBe("/dev/vda2");
    expect(r2.hook("share").rc).toBe(0);
    expect(r2.hook("share").text + "\n").toBe(shared);
    expect(direct.ended).toBe("poweroff");
  });
});
