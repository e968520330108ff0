// Scenario 7, old kernel: the same kind of demo image on Debian 12 (kernel
// 6.1: no file-backed EROFS, no data-only overlay lowers, no overlay
// verity=), installed with `install to-disk --composefs-insecure` on the host.
//   boot 1: karg `composefs.digest=?…` → the agent attaches a loop device for
//           the EROFS and mounts the two-layer overlay form of the V1 image;
//           the baked test unit reports, then enables fs-verity on meta.json
//           and the image (so that only the kernel's overlay is missing for a
//           sealed boot);
//   host:   the entry's karg loses its `?` (mtools, on the powered-off disk);
//   boot 2: the agent refuses the sealed karg and says why (overlay verity=
//           needs Linux ≥ 6.6); the boot stops in the emergency target.

import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { canRun, hasTool, isRoot } from "../test/helpers/env.ts";
import {
  type BookwormFixture, type CfsReport as CfsReportT, type SealedDisk, type VmRun,
  CfsReport, OVMF_CODE, bookwormFixture, consoleTail, espList, espRead, espWrite, expectReport, newRunDir, printTimings, projectDir, runVm, scenarioDisk,
} from "./harness.ts";

const TOOLS = ["qemu-system-x86_64", "debootstrap", "sfdisk", "mkfs.vfat", "mcopy", "mke2fs", "debugfs", "zstd", "skopeo", "unshare"];
const ready = canRun(
  isRoot && TOOLS.every(hasTool) && existsSync(OVMF_CODE) && existsSync(join(projectDir, "dist/cfsboot")),
  `VM tests need root, OVMF, dist/cfsboot and ${TOOLS.join(", ")}`,
);

describe.skipIf(!ready)("scenario 7: the demo image on Debian 12 (kernel 6.1)", () => {
  let fx: BookwormFixture;
  let disk: SealedDisk;
  let boot1: VmRun;
  let r1: CfsReportT;
  let entryName: string;
  let sealedOptions: string;
  let boot2: VmRun;

  beforeAll(async () => {
    fx = await bookwormFixture();
    const dir = newRunDir("cfs-bookworm");
    disk = scenarioDisk(fx.disk, join(dir, "disk.img"));
    boot1 = await runVm({ name: "insecure", runDir: dir, disk });
    r1 = new CfsReport(expectReport(boot1));
    // the powered-off disk: drop the `?` of the composefs karg in the (blessed) entry
    entryName = espList(disk, "/loader/entries").filter((n) => n.endsWith(".conf"))[0] ?? "";
    const text = espRead(disk, `/loader/entries/${entryName}`).toString();
    sealedOptions = (/^options (.*)$/m.exec(text)?.[1] ?? "").replace(/(composefs(?:\.digest)?=)\?/g, "$1");
    espWrite(disk, `/loader/entries/${entryName}`, text.replace(/^options .*$/m, `options ${sealedOptions}`));
    boot2 = await runVm({ name: "sealed", runDir: dir, disk, timeoutMs: 400_000 });
  });

  afterAll(() => {
    if (fx) printTimings("scenario 7 (bookworm)", fx.timings, [boot1, boot2]);
  });

  it("boot 1: Debian 12's 6.1 kernel boots the `?` deployment: / is the composefs image", () => {
    try {
      expect(r1.r.kernel).toMatch(/^6\.1\./);
      expect(r1.r.cmdline).toMatch(/composefs\.digest=\?v1-sha512-12:[0-9a-f]{128}/);
      expect(r1.r.root.fstype).toBe("overlay");
      expect(r1.bootedId).toMatch(/^[0-9a-f]{128}$/);
      expect(r1.r.cmdline).toContain(r1.bootedId);
      expect(r1.r.failedUnits).toEqual([]);
      expect(r1.r.systemState).toBe("running");
      expect(r1.version).toBe("1");
    } catch (e) {
      throw new Error(`${(e as Error).message}\n--- console tail ---\n${consoleTail(boot1, 60)}`);
    }
  });

  it("boot 1: the EROFS is on a loop device, the overlay is the plain two-layer form (no data-only lower, no verity=)", () => {
    const loops = r1.r.hook("loop").text.split("\n").filter(Boolean);
    expect(loops.length).toBeGreaterThan(0);
    expect(loops.some((l) => l.includes("/composefs/"))).toBe(true);
    const opts = r1.r.root.options;
    expect(opts).toMatch(/lowerdir=[^,]*:[^,]*/);
    expect(opts).not.toContain("::");
    expect(opts).not.toMatch(/datadir|verity=/);
    expect(opts.split(",")).toContain("ro");
  });

  it("boot 1: cfsboot status shows the booted deployment, insecure", () => {
    const st = r1.status();
    expect(st.status.booted?.composefs?.verity).toBe(r1.bootedId);
    expect(st.status.booted?.composefs?.bootType).toBe("Bls");
    expect(st.status.booted?.composefs?.missingVerityAllowed).toBe(true);
    expect(st.status.booted?.image?.version).toBe("1");
    expect(st.status.staged).toBeNull();
  });

  it("boot 1: /etc and /var are writable and land in the deployment's state; / is read-only", () => {
    expect(r1.files("etc")["site.conf"]).toContain("setting=default");
    expect(r1.files("var")["seeded"]).toContain("seeded by image version 1");
    expect(r1.r.hook("root_ro").rc).not.toBe(0);
    expect(r1.r.hook("root_ro").err).toMatch(/Read-only file system/);
  });

  it("boot 1: the agent's log names the loop device", () => {
    expect(r1.r.hook("agent_log").text).toMatch(/loop/i);
  });

  it("between the boots: fs-verity enabled on meta.json and the image in the guest (6.1 has it on ext4)", () => {
    const h = r1.r.hook("verity_prep");
    expect(h.rc).toBe(0);
    expect(h.text).toMatch(new RegExp(`sha512:${r1.bootedId}\\s+\\S*/images/${r1.bootedId}`));
    expect(sealedOptions).toMatch(/composefs\.digest=v1-sha512-12:[0-9a-f]{128}/);
    expect(sealedOptions).not.toContain("=?");
  });

  it("boot 2: the sealed karg is refused on 6.1, with the reason on the console", () => {
    expect(() => expectReport(boot2)).toThrow(/CFSVM-REPORT-BEGIN/);
    const log = boot2.lines.map((l) => l.line).join("\n");
    try {
      expect(log).toMatch(/sealed boot .* requires overlayfs verity=require \(Linux \S+ 6\.6\)/);
      expect(boot2.killedFor ?? "").toMatch(/emergency/i);
    } catch (e) {
      throw new Error(`${(e as Error).message}\n--- console tail ---\n${consoleTail(boot2, 60)}`);
    }
  });
});
