// Scenario 5: tampering with a sealed disk offline, the EROFS half (the
// object half — a flipped byte in a file's object makes reading it fail with
// EIO — runs in cfs-bls.test.ts's fifth boot, which needs a full boot
// anyway). The disk is edited the way an attacker with the powered-off disk
// would, in place: debugfs finds the file's physical block (`bmap`), one byte
// is flipped at that offset of the image; the inode keeps its fs-verity flag
// and Merkle tree.
//   boot a  a flipped byte in the booted EROFS image, sealed karg: the agent
//           refuses to mount it (the kernel's fs-verity check fails the read)
//   boot b  the same image, the karg made insecure (`?`): refused alike

import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { canRun, hasTool, isRoot } from "../test/helpers/env.ts";
import {
  type Flip, type SealedDisk, type TrixieFixture, type VmRun,
  OVMF_CODE, cfsCommands, consoleTail, espList, espRead, espRename, espWrite, expectReport, flipByte, guestNetArgs, imageId,
  injectedReportCredentials, newRunDir, printTimings, projectDir, runVm, scenarioDisk, trixieFixture,
} from "./harness.ts";

const TOOLS = ["qemu-system-x86_64", "debootstrap", "sfdisk", "mkfs.vfat", "mcopy", "mke2fs", "debugfs", "zstd", "skopeo", "socat", "fsverity", "unshare"];
const ready = canRun(
  isRoot && TOOLS.every(hasTool) && existsSync(OVMF_CODE) && existsSync(join(projectDir, "dist/cfsboot")),
  `VM tests need root, OVMF, dist/cfsboot and ${TOOLS.join(", ")}`,
);

describe.skipIf(!ready)("scenario 5: a tampered EROFS image on a sealed disk", () => {
  let fx: TrixieFixture;
  let disk: SealedDisk;
  let id = "";
  let entry = "";
  let sealedText = "";
  let imageFlip: Flip;
  const runs: Record<string, VmRun> = {};
  let failure: Error | null = null;

  /** The one entry file (its name changes as systemd-boot counts tries). */
  const entryName = () => espList(disk, "/loader/entries").filter((n) => n.endsWith(".conf"))[0] ?? "";
  const setEntry = (text: string) => {
    const n = entryName();
    espWrite(disk, `/loader/entries/${n}`, text);
    // reset the counter: every boot here starts with tries left
    if (n !== entry) espRename(disk, `/loader/entries/${n}`, `/loader/entries/${entry}`);
  };

  beforeAll(async () => {
    const dir = newRunDir("cfs-tamper");
    fx = await trixieFixture(dir);
    id = imageId(fx.v1);
    disk = scenarioDisk(fx.sealed.disks.bls!, join(dir, "disk.img"));
    entry = entryName();
    sealedText = espRead(disk, `/loader/entries/${entry}`).toString();
    // (the unit is injected as usual: if the agent let the boot through, the report would show it)
    const boot = (name: string) =>
      runVm({
        name, runDir: dir, disk, extraArgs: guestNetArgs(fx.reg), timeoutMs: 420_000,
        credentials: injectedReportCredentials({ commands: cfsCommands(), action: "poweroff-fast" }),
      });
    try {
      // a: one byte of the EROFS superblock block
      imageFlip = flipByte(disk, `/composefs/images/${id}`, 1100);
      runs.a = await boot("a-image-sealed");
      // b: same damage, insecure karg
      setEntry(sealedText.replace(/(composefs(?:\.digest)?=)/g, "$1?"));
      runs.b = await boot("b-image-insecure");
    } catch (e) {
      failure = e as Error;
    }
  });

  afterAll(async () => {
    if (fx) printTimings("tamper (scenario 5)", fx.timings, Object.values(runs));
    await fx?.reg.stop(); // its storage holds every pushed image (~0.4 GB)
  });

  const log = (r: VmRun | undefined) => (r ? r.lines.map((l) => l.line).join("\n") : "");
  const tail = (r: VmRun | undefined, fn: () => void) => {
    try {
      fn();
    } catch (e) {
      throw new Error(`${(e as Error).message}${r ? `\n--- ${r.name}: console tail ---\n${consoleTail(r, 60)}` : ""}`);
    }
  };

  it("the flips changed one byte on the disk, in place", () => {
    if (failure && !imageFlip) throw failure;
    expect(imageFlip.after).toBe(imageFlip.before ^ 0xff);
    expect(imageFlip.path).toMatch(/^\/composefs\/objects\//);
  });

  it("a flipped byte in the EROFS image: the agent refuses the sealed boot (no root mounted, emergency target)", () => {
    const r = runs.a;
    if (!r) throw failure ?? new Error("boot a did not run");
    tail(r, () => {
      expect(() => expectReport(r)).toThrow();
      expect(log(r)).toMatch(/cfsboot.*(Input\/output error|EIO)/);
      expect(log(r)).toContain(`/composefs/images/${id}`);
      expect(r.killedFor ?? "").toMatch(/emergency/i);
      expect(log(r)).not.toMatch(/Reached target .*Multi-User System/);
    });
  });

  it("… and the `?` (insecure) karg is refused alike", () => {
    const r = runs.b;
    if (!r) throw failure ?? new Error("boot b did not run");
    tail(r, () => {
      expect(log(r)).toMatch(/composefs\.digest=\?v1-sha512-12:/);
      expect(() => expectReport(r)).toThrow();
      expect(log(r)).toMatch(/cfsboot.*(Input\/output error|EIO)/);
      expect(r.killedFor ?? "").toMatch(/emergency/i);
    });
  });

});
