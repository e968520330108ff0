// Scenario 2: sealed UKIs. The demo image's UKI variants carry
// /boot/EFI/Linux/cfsboot-demo.efi built by `cfsboot container ukify
// --format=1|2` during the image build (lib/osimage.ts), so the kernel
// command line — with the composefs karg naming the image itself — is inside
// the signed-able PE and nothing can be added at boot. Each format is
// installed (install to-disk on the host, cfsboot seal in the sealer boot) on
// its own disk and booted once; the test
// unit comes in through SMBIOS credentials, the one channel a sealed UKI
// leaves open.

import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { canRun, hasTool, isRoot } from "../test/helpers/env.ts";
import {
  type CfsReport as CfsReportT, type TrixieFixture, type VmRun,
  CfsReport, OVMF_CODE, cfsCommands, consoleTail, expectReport, guestNetArgs, imageId, injectedReportCredentials, newRunDir, printTimings, projectDir,
  runVm, scenarioDisk, stateWriteCommand, trixieFixture,
} from "./harness.ts";

const TOOLS = ["qemu-system-x86_64", "debootstrap", "sfdisk", "mkfs.vfat", "mcopy", "mke2fs", "debugfs", "zstd", "skopeo", "socat", "objcopy", "unshare"];
const ready = canRun(
  isRoot && TOOLS.every(hasTool) && existsSync(OVMF_CODE) && existsSync(join(projectDir, "dist/cfsboot")),
  `VM tests need root, OVMF, dist/cfsboot and ${TOOLS.join(", ")}`,
);

describe.skipIf(!ready)("scenario 2: sealed UKIs (container ukify --format=1 and --format=2)", () => {
  let fx: TrixieFixture;
  const runs: Record<string, VmRun> = {};
  const reports: Record<string, CfsReportT> = {};
  const errors: Record<string, Error> = {};
  const ids: Record<string, string> = {};

  beforeAll(async () => {
    const dir = newRunDir("cfs-uki");
    fx = await trixieFixture(dir);
    ids.v1f1 = imageId(fx.uki1, 1);
    ids.v2f1 = imageId(fx.uki1, 2);
    ids.v2f2 = imageId(fx.uki2, 2);
    for (const kind of ["uki1", "uki2"] as const) {
      const runDir = join(dir, kind);
      const disk = scenarioDisk(fx.sealed.disks[kind]!, join(runDir, "disk.img"));
      try {
        const run = await runVm({
          name: kind, runDir, disk, extraArgs: guestNetArgs(fx.reg), timeoutMs: 900_000,
          credentials: injectedReportCredentials({ commands: [...cfsCommands(), stateWriteCommand(kind)], action: "poweroff-fast" }),
        });
        runs[kind] = run;
        reports[kind] = new CfsReport(expectReport(run));
      } catch (e) {
        errors[kind] = e as Error;
      }
    }
  });

  afterAll(async () => {
    if (fx) printTimings("sealed UKIs (scenario 2)", fx.timings, Object.values(runs));
    await fx?.reg.stop(); // its storage holds every pushed image (~0.4 GB)
  });

  const need = (kind: string): CfsReportT => {
    const r = reports[kind];
    if (!r) throw errors[kind] ?? new Error(`${kind} did not boot`);
    return r;
  };

  const tail = (kind: string, fn: () => void) => {
    try {
      fn();
    } catch (e) {
      const run = runs[kind];
      throw new Error(`${(e as Error).message}${run ? `\n--- ${kind}: console tail ---\n${consoleTail(run, 60)}` : ""}`);
    }
  };

  it("the UKIs name their own image (checked against compute-composefs-digest at build time)", () => {
    expect(fx.uki1.ukiKarg).toBe(`composefs.digest=v1-sha512-12:${ids.v1f1}`);
    expect(fx.uki2.ukiKarg).toBe(`composefs=${ids.v2f2}`);
  });

  it("--format=1: systemd-boot starts the UKI, the sealed command line names the V1 image, / is that image", () => {
    const r = need("uki1");
    tail("uki1", () => {
      expect(r.r.cmdline).toContain(`composefs.digest=v1-sha512-12:${ids.v1f1}`);
      expect(r.r.cmdline).toContain(`composefs=${ids.v2f1}`);
      expect(r.r.cmdline).not.toMatch(/composefs(\.digest)?=\?/);
      expect(r.r.cmdline).toContain("root=PARTLABEL=root");
      expect(r.r.efivar("StubInfo")).toMatch(/^systemd-stub 257/);
      // systemd-boot (257) starts the UKI through bootc's Type 1 entry with an `efi` key
      expect(r.r.efivar("LoaderEntrySelected")).toMatch(/^bootc_debian-13-\d+\.conf$/);
      expect(r.bootedId).toBe(ids.v1f1);
      expect(r.r.root.options.split(",")).toContain("verity=require");
      expect(r.imageVerity.image).toBe(`sha512:${ids.v1f1}`);
      expect(r.imageVerity.meta).toMatch(/^sha512:/);
      expect(r.r.systemState).toBe("running");
    });
  });

  it("--format=2: the command line carries only composefs=<V2 id>, / is the V2 image", () => {
    const r = need("uki2");
    tail("uki2", () => {
      expect(r.r.cmdline).toContain(`composefs=${ids.v2f2}`);
      expect(r.r.cmdline).not.toContain("composefs.digest=");
      expect(r.r.cmdline).not.toMatch(/composefs=\?/);
      expect(r.bootedId).toBe(ids.v2f2);
      expect(r.r.root.options.split(",")).toContain("verity=require");
      expect(r.imageVerity.image).toBe(`sha512:${ids.v2f2}`);
      expect(r.r.systemState).toBe("running");
    });
  });

  it("both: status shows a sealed UKI deployment; /etc and /var are writable from the state", () => {
    for (const kind of ["uki1", "uki2"]) {
      const r = need(kind);
      const st = r.status();
      expect(st.status.booted?.composefs).toMatchObject({ verity: r.bootedId, bootType: "Uki", missingVerityAllowed: false });
      expect(r.r.hook(`state_write_${kind}`).text).toBe(`etc written in ${kind}\nvar written in ${kind}`);
      // `efi`-key entries (systemd < 258 has no `uki` key) get no boot counter: nothing to bless
      expect(r.r.blessStatus).toBe("clean");
    }
  });
});
