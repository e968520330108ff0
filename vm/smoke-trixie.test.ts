// Smoke test of the harness on a plain Debian 13 guest: UEFI (OVMF) →
// systemd-boot → BLS Type 1 entry with boot counting → ext4 root (-O verity),
// with the test unit injected through SMBIOS type 11 credentials (the path
// sealed-UKI scenarios will use), and an initrd that carries an extra dracut
// module the way the cfsboot module will be added. One boot.

import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { canRun, hasTool, isRoot } from "../test/helpers/env.ts";
import {
  type GuestDisk, type GuestReport, type Rootfs, type VmRun,
  OVMF_CODE, TRIXIE, projectDir, buildGuestDisk, ensureInitrd, ensureRootfs, espList, espRead, expectReport,
  injectedReportCredentials, newRunDir, runVm,
} from "./harness.ts";

const TOOLS = ["qemu-system-x86_64", "debootstrap", "sfdisk", "mkfs.vfat", "mcopy", "mke2fs", "debugfs", "zstd", "fsverity", "unshare"];
const ready = canRun(isRoot && TOOLS.every(hasTool) && existsSync(OVMF_CODE), `VM tests need root, OVMF and ${TOOLS.join(", ")}`);

describe.skipIf(!ready)("trixie guest: OVMF → systemd-boot → BLS Type 1 → ext4 root", () => {
  let rootfs: Rootfs;
  let disk: GuestDisk;
  let run: VmRun;
  let report: GuestReport;
  let zeroDigest: string;
  const probe = `${projectDir}/vm/fixtures/dracut-probe`;

  beforeAll(async () => {
    rootfs = await ensureRootfs(TRIXIE);
    const initrd = await ensureInitrd(rootfs, {
      extraModules: [{ name: "cfsvmprobe", dir: probe }],
      add: ["cfsvmprobe"],
      files: [{ from: `${probe}/payload.txt`, to: "/usr/lib/cfsvm-probe/payload", mode: 0o644 }],
    });
    const dir = newRunDir("smoke-trixie");
    // the digest the guest kernel must report for a 1 MiB file of zeros, computed on the host
    writeFileSync(join(dir, "zero"), Buffer.alloc(1 << 20));
    zeroDigest = spawnSync("fsverity", ["digest", "--compact", join(dir, "zero")]).stdout.toString().trim();
    disk = buildGuestDisk({
      rootfs, initrd, path: join(dir, "disk.img"),
      entry: { id: "cfs-smoke", tries: 3 },
      report: false, // injected below, not baked into the image
    });
    run = await runVm({
      name: "boot1", runDir: dir, disk,
      credentials: injectedReportCredentials({
        commands: [
          { name: "make_verity", cmd: "head -c 1048576 /dev/zero > /var/tmp/zero && fsverity enable /var/tmp/zero" },
          { name: "credentials", cmd: "ls -1 /run/credentials/@system" },
          { name: "dracut_probe", cmd: "cat /run/cfsvm-probe" },
          { name: "ext4_features", cmd: "cat /sys/fs/ext4/features/verity && findmnt -no SOURCE /" },
        ],
        verityFiles: ["/var/tmp/zero", "/etc/hostname"],
      }),
    });
    report = expectReport(run);
  });

  it("boots Debian 13's kernel from the ESP and the test unit reports", () => {
    expect(report.kernel).toBe(rootfs.kver);
    expect(report.kernel).toMatch(/^6\.12\./);
    expect(report.osRelease.VERSION_CODENAME).toBe("trixie");
    // the unit and its script came in as SMBIOS credentials, not from the image
    expect(report.hook("credentials").text.split("\n")).toContain("cfsvm.report");
  });

  it("the extra dracut module ran in the initrd, after sysroot.mount, with the file given to the builder", () => {
    expect(report.hook("dracut_probe").rc).toBe(0);
    expect(report.hook("dracut_probe").out.equals(readFileSync(`${probe}/payload.txt`))).toBe(true);
  });

  it("mounts the ext4 root named by the entry, read-write", () => {
    expect(report.root.fstype).toBe("ext4");
    expect(report.root.source).toBe("/dev/vda2");
    expect(report.root.options.split(",")).toContain("rw");
    // systemd-boot prepends initrd= for Type 1 entries; the rest is the entry's options
    expect(report.cmdline).toBe(`initrd=\\cfs\\initrd.img ${disk.cmdline}`);
    expect(report.mount("/efi")?.fstype).toBe("vfat");
  });

  it("reaches a clean running state", () => {
    expect(report.failedUnits).toEqual([]);
    expect(report.systemState).toBe("running");
  });

  it("fs-verity works on the ext4 root (digest equals the host's)", () => {
    expect(report.hook("make_verity").rc).toBe(0);
    expect(report.verity["/var/tmp/zero"]).toBe(`sha256:${zeroDigest}`);
    expect(report.verity["/etc/hostname"]).toBeNull();
  });

  it("systemd-boot counted the boot and systemd-bless-boot blessed the entry", () => {
    expect(report.efivar("LoaderInfo")).toMatch(/^systemd-boot 257/);
    expect(report.efivar("LoaderDevicePartUUID")?.toLowerCase()).toBe(disk.ids.espPartUuid);
    expect(report.efivar("LoaderEntrySelected")).toBe("cfs-smoke.conf");
    // the loader decremented +3 to +2-1 before starting the kernel
    expect(report.efivar("LoaderBootCountPath")).toBe("\\loader\\entries\\cfs-smoke+2-1.conf");
    expect(report.blessStatus).toBe("good");
    expect(report.text("esp_entries").split("\n")).toEqual(["cfs-smoke.conf"]);
    // and it is on the disk after power-off
    expect(espList(disk, "/loader/entries")).toEqual(["cfs-smoke.conf"]);
    expect(espRead(disk, "/loader/entries/cfs-smoke.conf").toString()).toContain(`options ${disk.cmdline}`);
  });

  it("powers off by itself, with every boot phase seen in order", () => {
    expect(run.ended).toBe("poweroff");
    expect(run.timedOut).toBe(false);
    const p = run.phases;
    const order = [p.kernel, p.initrd, p.switchRoot, p.multiUser, p.reportDone, p.shutdown, p.exit];
    for (const t of order) expect(t).toBeTypeOf("number");
    expect([...order].sort((a, b) => (a ?? 0) - (b ?? 0))).toEqual(order);
    // the guest's uptime at report time is below the host's wall clock at that point
    expect(report.uptime).toBeLessThan(p.reportDone ?? 0);
  });

  it("a kernel crash before /init is booted once more from the disk and VARS as they were before it", async () => {
    // rdinit and root name nothing: the kernel panics after systemd-boot has
    // counted the entry's try down, before any userspace ran
    const dir = newRunDir("smoke-trixie-early-fault");
    const initrd = await ensureInitrd(rootfs, {});
    const crash = buildGuestDisk({
      rootfs, initrd, path: join(dir, "disk.img"),
      entry: { id: "cfs-crash", tries: 3 },
      kargs: ["rdinit=/nonexistent", "root=/dev/nonexistent"],
      report: false,
    });
    const r = await runVm({ name: "crash", runDir: dir, disk: crash, timeoutMs: 180_000 });
    expect(r.retriedAfter).toMatch(/Kernel panic - not syncing/);
    expect(r.phases.initrd).toBeUndefined();
    // both attempts' consoles are kept
    expect(readFileSync(join(dir, "crash.fault.console.log"), "latin1")).toMatch(/Kernel panic - not syncing/);
    expect(readFileSync(join(dir, "crash.console.log"), "latin1")).toMatch(/Kernel panic - not syncing/);
    // one try counted, not two: the second attempt started from the saved disk
    expect(espList(crash, "/loader/entries")).toEqual(["cfs-crash+2-1.conf"]);
  });
});
