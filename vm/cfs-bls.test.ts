// Scenarios 1, 3, 4 and 6 on one sealed BLS disk (`cfsboot install to-disk
// --composefs-insecure` on the host, `cfsboot seal` in the sealer boot, see
// lib/provision.ts), five boots
// chained so that each one starts where the previous one left the disk:
//   boot 1  v1, sealed (composefs.digest=v1-sha512-12:…, no `?`): root is the
//           image, objects verity-enforced, /etc and /var writable from the
//           state; local /etc changes; `cfsboot upgrade` stages v2; the
//           orderly shutdown runs the finalize unit          (scenario 1)
//   boot 2  v2: new deployment booted, local /etc change kept, new /etc
//           default present, status booted=v2 rollback=v1; `cfsboot
//           rollback`                                        (scenario 3)
//   boot 3  v1 again (the rollback); `cfsboot upgrade` stages v3, whose
//           kargs.d masks systemd-bless-boot (its boot never gets blessed)
//                                                            (scenario 4)
//   host    the staged-then-finalized v3 entry gets 1 try (+3 → +1)
//   boot 4  v3, not blessed: systemd-boot leaves +0-1
//   host    one byte of the object behind /usr/share/cfsboot-demo/payload.bin
//           flipped in place (debugfs bmap + write at that disk offset)
//   boot 5  systemd-boot skips the exhausted entry: v1 boots  (scenario 6);
//           reading the damaged file fails with EIO         (scenario 5, object;
//           the EROFS half is cfs-tamper.test.ts)
// The test unit comes in through SMBIOS credentials (systemd 257), so the
// image is the plain demo OS; every boot has the NIC to the registry.

import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { canRun, hasTool, isRoot } from "../test/helpers/env.ts";
import {
  type CfsReport as CfsReportT, type Flip, type ReportCommand, type SealedDisk, type TrixieFixture, type VmRun,
  CfsReport, GUEST_NET_UP, GUEST_REGISTRY, OVMF_CODE, PAYLOAD_PATH, cfsCommands, consoleTail, espList, espRead, espRename, expectReport, flipByte,
  guestNetArgs, imageId, injectedReportCredentials, newRunDir, objectPath, payloadObjectDigest, printTimings, projectDir, runVm,
  scenarioDisk, stateWriteCommand, trixieFixture,
} from "./harness.ts";

const TOOLS = ["qemu-system-x86_64", "debootstrap", "sfdisk", "mkfs.vfat", "mcopy", "mke2fs", "debugfs", "zstd", "skopeo", "socat", "fsverity", "unshare"];
const ready = canRun(
  isRoot && TOOLS.every(hasTool) && existsSync(OVMF_CODE) && existsSync(join(projectDir, "dist/cfsboot")),
  `VM tests need root, OVMF, dist/cfsboot and ${TOOLS.join(", ")}`,
);

/** Wrap assertions so a failure shows the boot's console tail. */
function withTail(run: VmRun | undefined, fn: () => void): void {
  try {
    fn();
  } catch (e) {
    if (!run) throw e;
    throw new Error(`${(e as Error).message}\n--- ${run.name}: console tail (${run.consoleLog}) ---\n${consoleTail(run, 60)}`);
  }
}

describe.skipIf(!ready)("sealed BLS deployments: boot, upgrade, rollback, boot-counting fallback", () => {
  let fx: TrixieFixture;
  let disk: SealedDisk;
  let dir: string;
  const runs: Record<string, VmRun> = {};
  const reports: Record<string, CfsReportT> = {};
  const ids = { v1: "", v2: "", v3: "" };
  let payloadHex = "";
  let v3Entry = "";
  let v3EntryText = "";
  const entriesAfter: Record<string, string[]> = {};
  let objectFlip: Flip | undefined;
  let failure: Error | null = null;

  const boot = async (name: string, commands: ReportCommand[], action: "poweroff" | "poweroff-fast", verityFiles: string[] = []) => {
    const run = await runVm({
      name, runDir: dir, disk, extraArgs: guestNetArgs(fx.reg), timeoutMs: 900_000,
      credentials: injectedReportCredentials({ commands: [...cfsCommands(), ...commands], action, verityFiles }),
    });
    runs[name] = run;
    reports[name] = new CfsReport(expectReport(run));
    entriesAfter[name] = espList(disk, "/loader/entries");
    return reports[name]!;
  };

  beforeAll(async () => {
    dir = newRunDir("cfs-bls");
    fx = await trixieFixture(dir);
    ids.v1 = imageId(fx.v1);
    ids.v2 = imageId(fx.v2);
    ids.v3 = imageId(fx.v3);
    payloadHex = payloadObjectDigest();
    disk = scenarioDisk(fx.sealed.disks.bls!, join(dir, "disk.img"));
    try {
      await fx.publish(fx.v2);
      await boot("1-v1-sealed", [
        stateWriteCommand("boot1"),
        { name: "object_read", cmd: `cat ${PAYLOAD_PATH} > /dev/null && echo read-ok` },
        { name: "local_etc", cmd: "set -e; sed -i s/setting=default/setting=local/ /etc/cfsboot-demo/site.conf; echo 'local only' > /etc/cfsboot-demo/local-only.conf" },
        { name: "net", cmd: GUEST_NET_UP },
        { name: "upgrade", cmd: "cfsboot upgrade 2>&1" },
        { name: "status_staged", cmd: "cfsboot status --json" },
      ], "poweroff", [`/sysroot${objectPath(payloadHex)}`]);
      await boot("2-v2", [
        stateWriteCommand("boot2"),
        { name: "rollback", cmd: "cfsboot rollback 2>&1" },
        { name: "status_after", cmd: "cfsboot status --json" },
      ], "poweroff-fast");
      await fx.publish(fx.v3);
      await boot("3-rollback-v1", [
        { name: "net", cmd: GUEST_NET_UP },
        { name: "upgrade", cmd: "cfsboot upgrade 2>&1" },
        { name: "status_staged", cmd: "cfsboot status --json" },
      ], "poweroff");
      // one try for the v3 entry: a single boot that never reaches bless exhausts it
      for (const n of espList(disk, "/loader/entries")) {
        const text = espRead(disk, `/loader/entries/${n}`).toString();
        if (text.includes(ids.v3)) [v3Entry, v3EntryText] = [n, text];
      }
      if (!/\+3\.conf$/.test(v3Entry)) throw new Error(`no v3 entry with +3 on the ESP: ${espList(disk, "/loader/entries").join(", ")}`);
      espRename(disk, `/loader/entries/${v3Entry}`, `/loader/entries/${v3Entry.replace(/\+3\.conf$/, "+1.conf")}`);
      await boot("4-v3-unblessed", [], "poweroff-fast");
      objectFlip = flipByte(disk, objectPath(payloadHex), 5000);
      await boot("5-fallback", [
        { name: "object_read", cmd: `cat ${PAYLOAD_PATH} > /dev/null` },
        { name: "other_read", cmd: "cat /usr/share/cfsboot-demo/version /usr/lib/os-release > /dev/null && echo read-ok" },
      ], "poweroff-fast");
    } catch (e) {
      failure = e as Error; // each test below reports what it needed and did not get
    }
  });

  afterAll(async () => {
    if (fx) printTimings("sealed BLS chain (scenarios 1, 3, 4, 6)", [...fx.timings], Object.values(runs));
    await fx?.reg.stop(); // its storage holds every pushed image (~0.4 GB)
  });

  const need = (name: string): CfsReportT => {
    const r = reports[name];
    if (!r) throw failure ?? new Error(`boot ${name} did not run`);
    return r;
  };

  it("the disk was installed by `cfsboot install to-disk` and sealed by `cfsboot seal` in a guest with fs-verity", () => {
    const d = fx.sealed.disks.bls!;
    expect(d.installOutput).toMatch(/Installed deployment [0-9a-f]{128}/);
    expect(d.installOutput).toContain(ids.v1);
    expect(d.sealOutput).toMatch(/composefs\.digest=v1-sha512-12:/);
    expect(d.sealOutput).not.toMatch(/composefs(\.digest)?=\?/);
  });

  it("scenario 1: sealed V1 boot (composefs.digest=, no `?`): / is the image, mounted composefs:<id> with overlay verity=require", () => {
    const r = need("1-v1-sealed");
    withTail(runs["1-v1-sealed"], () => {
      expect(r.r.cmdline).toContain(`composefs.digest=v1-sha512-12:${ids.v1}`);
      expect(r.r.cmdline).not.toMatch(/composefs(\.digest)?=\?/);
      expect(r.bootedId).toBe(ids.v1);
      expect(r.r.root.fstype).toBe("overlay");
      expect(r.r.root.options.split(",")).toEqual(expect.arrayContaining(["ro", "verity=require"]));
      expect(r.r.systemState).toBe("running");
      expect(r.r.failedUnits).toEqual([]);
      expect(r.version).toBe("1");
    });
  });

  it("scenario 1: meta.json, the image and the objects carry fs-verity; the system reads objects through verity", () => {
    const r = need("1-v1-sealed");
    const v = r.imageVerity;
    expect(v.rc).toBe(0);
    expect(v.meta).toMatch(/^sha512:[0-9a-f]{128}$/);
    expect(v.image).toBe(`sha512:${ids.v1}`);
    expect(r.r.verity[`/sysroot${objectPath(payloadHex)}`]).toBe(`sha512:${payloadHex}`);
    expect(r.r.hook("object_read").text).toBe("read-ok");
  });

  it("scenario 1: /etc and /var are writable and land in the state directory; / is read-only", () => {
    const r = need("1-v1-sealed");
    expect(r.r.hook("state_write_boot1").rc).toBe(0);
    expect(r.r.hook("state_write_boot1").text).toBe("etc written in boot1\nvar written in boot1");
    expect(r.r.hook("root_ro").err).toMatch(/Read-only file system/);
    expect(r.files("etc")["site.conf"]).toContain("setting=default");
    expect(r.files("var")["seeded"]).toContain("seeded by image version 1");
  });

  it("scenario 1: cfsboot status: booted = v1, sealed (missingVerityAllowed false), from the registry", () => {
    const st = need("1-v1-sealed").status();
    expect(st.status.booted?.composefs).toMatchObject({ verity: ids.v1, bootType: "Bls", bootloader: "systemd", missingVerityAllowed: false });
    expect(st.status.booted?.image?.version).toBe("1");
    expect(st.status.booted?.image?.image.image).toBe(`${GUEST_REGISTRY}/cfsboot/demo:latest`);
    expect(st.status.rollback).toBeNull();
  });

  it("scenario 1: systemd-boot counted and blessed the installed entry", () => {
    const r = need("1-v1-sealed");
    expect(r.r.efivar("LoaderBootCountPath")).toMatch(/\+2-1\.conf$/);
    expect(r.r.blessStatus).toBe("good");
  });

  it("scenario 3: `cfsboot upgrade` in the guest staged v2 from the registry", () => {
    const r = need("1-v1-sealed");
    withTail(runs["1-v1-sealed"], () => {
      expect(r.r.hook("net").rc).toBe(0);
      expect(r.r.hook("upgrade").rc).toBe(0);
      expect(r.r.hook("upgrade").text).toMatch(/Queued for next boot/);
      expect(r.r.hook("upgrade").text).toContain(ids.v2);
      const st = r.status("status_staged");
      expect(st.status.staged?.composefs?.verity).toBe(ids.v2);
      expect(st.status.staged?.image?.version).toBe("2");
      expect(runs["1-v1-sealed"]!.ended).toBe("poweroff");
    });
  });

  it("scenario 3: after the reboot v2 is booted, sealed; the local /etc change is kept and the new default is there", () => {
    const r = need("2-v2");
    withTail(runs["2-v2"], () => {
      expect(r.bootedId).toBe(ids.v2);
      expect(r.version).toBe("2");
      expect(r.r.cmdline).toContain(`composefs.digest=v1-sha512-12:${ids.v2}`);
      const etc = r.files("etc");
      expect(etc["site.conf"]).toContain("setting=local");
      expect(etc["local-only.conf"]).toBe("local only\n");
      expect(etc["added-in-2.conf"]).toContain("feature=on");
      expect(etc["written-boot1"]).toBe("etc written in boot1\n");
      expect(r.files("var")["written-boot1"]).toBe("var written in boot1\n");
    });
  });

  it("scenario 3: status after the upgrade: booted v2, rollback v1, nothing staged", () => {
    const st = need("2-v2").status();
    expect(st.status.booted?.composefs?.verity).toBe(ids.v2);
    expect(st.status.booted?.image?.version).toBe("2");
    expect(st.status.rollback?.composefs?.verity).toBe(ids.v1);
    expect(st.status.staged).toBeNull();
  });

  it("scenario 4: `cfsboot rollback` queues v1", () => {
    const r = need("2-v2");
    expect(r.r.hook("rollback").rc).toBe(0);
    const st = r.status("status_after");
    expect(st.status.rollbackQueued).toBe(true);
  });

  it("scenario 4: after the reboot the previous deployment (v1) is booted", () => {
    const r = need("3-rollback-v1");
    withTail(runs["3-rollback-v1"], () => {
      expect(r.bootedId).toBe(ids.v1);
      expect(r.version).toBe("1");
      const st = r.status();
      expect(st.status.booted?.composefs?.verity).toBe(ids.v1);
      expect(st.status.rollback?.composefs?.verity).toBe(ids.v2);
      // /etc is per deployment (v1's own, with boot 1's changes), /var is shared
      const etc = r.files("etc");
      expect(etc["site.conf"]).toContain("setting=local");
      expect(etc["written-boot2"]).toBeUndefined();
      expect(r.files("var")["written-boot2"]).toBe("var written in boot2\n");
    });
  });

  it("scenario 6: v3 was staged with its kargs.d change (bless masked) and finalized at shutdown", () => {
    const r = need("3-rollback-v1");
    expect(r.r.hook("upgrade").rc).toBe(0);
    expect(r.status("status_staged").status.staged?.composefs?.verity).toBe(ids.v3);
    // the entry as finalize wrote it (systemd-boot has counted it down since)
    const text = v3EntryText;
    expect(v3Entry).toMatch(/\+3\.conf$/);
    expect(text).toContain("systemd.mask=systemd-bless-boot.service");
    expect(text).toContain(`composefs.digest=v1-sha512-12:${ids.v3}`);
  });

  it("scenario 6: v3 boots once with its single try and is not blessed", () => {
    const r = need("4-v3-unblessed");
    withTail(runs["4-v3-unblessed"], () => {
      expect(r.bootedId).toBe(ids.v3);
      expect(r.r.efivar("LoaderBootCountPath")).toMatch(/\+0-1\.conf$/);
      expect(entriesAfter["4-v3-unblessed"]).toContain(v3Entry.replace(/\+3\.conf$/, "+0-1.conf"));
    });
  });

  it("scenario 6: the next boot falls back to the previous deployment (v1)", () => {
    const r = need("5-fallback");
    withTail(runs["5-fallback"], () => {
      expect(r.bootedId).toBe(ids.v1);
      expect(r.version).toBe("1");
      expect(r.r.efivar("LoaderEntrySelected")).not.toContain(v3Entry.replace(/\+3\.conf$/, ""));
      expect(r.status().status.booted?.composefs?.verity).toBe(ids.v1);
    });
  });

  it("scenario 5 (object): a byte flipped on the disk in a file's object → reading that file fails with EIO under the sealed boot", () => {
    const r = need("5-fallback");
    withTail(runs["5-fallback"], () => {
      expect(objectFlip?.after).toBe((objectFlip?.before ?? 0) ^ 0xff);
      expect(r.r.cmdline).not.toMatch(/composefs(\.digest)?=\?/);
      const h = r.r.hook("object_read");
      expect(h.rc).not.toBe(0);
      expect(h.err).toMatch(/Input\/output error/);
      expect(r.r.hook("payload").rc).not.toBe(0);
      // the rest of the system reads fine
      expect(r.r.hook("other_read").text).toBe("read-ok");
      expect(r.r.systemState).toBe("running");
    });
  });
});
