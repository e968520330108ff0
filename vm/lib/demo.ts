// The trixie demo fixture the cfsboot VM scenarios (and ./demo) share:
// demo OS images v1/v2/v3 (BLS) and two sealed-UKI images (format 1, 2),
// the registry serving them, and the sealed disks installed from them
// (install to-disk on the host, cfsboot seal in one sealer boot: lib/provision.ts). Everything heavy is cached by content,
// so the second test file of a run (and the next run) only starts the
// registry, pushes and copies disks.

import type { TestRegistry } from "../../test/helpers/registry.ts";
import { type DemoBase, type DemoImage, DEMO_NAME, buildBlsImage, buildUkiImage, demoBase, guestRef, pushDemo, startDemoRegistry, withLayoutLock } from "./osimage.ts";
import { type ProvisionResult, type SealedDisk, hostInstalledDisk, provisionSealed } from "./provision.ts";
import { cfsCommands } from "./cfs.ts";
import type { ReportCommand } from "./report.ts";
import { type VmRun, describeRun } from "./qemu.ts";
import { BOOKWORM, TRIXIE, ensureRootfs, type Rootfs } from "./rootfs.ts";
import { note } from "./util.ts";

export const UKI_NAME = "cfsboot/demo-uki";

/** The /etc default added in version 2 (the upgrade must bring it in). */
export const ADDED_IN_V2 = { path: "/etc/cfsboot-demo/added-in-2.conf", data: "# new default of version 2\nfeature=on\n", mode: 0o644 };

export interface Timing {
  step: string;
  seconds: number;
  note?: string;
}

export interface TrixieFixture {
  rootfs: Rootfs;
  base: DemoBase;
  v1: DemoImage;
  v2: DemoImage;
  v3: DemoImage;
  uki1: DemoImage;
  uki2: DemoImage;
  reg: TestRegistry;
  sealed: ProvisionResult;
  timings: Timing[];
  /** Point `<DEMO_NAME>:latest` at an image (what the guest's `cfsboot upgrade` finds). */
  publish(img: DemoImage): Promise<void>;
}

async function timed<T>(timings: Timing[], step: string, fn: () => Promise<T>, info?: (t: T) => string): Promise<T> {
  const t0 = performance.now();
  const r = await fn();
  const seconds = Math.round((performance.now() - t0) / 100) / 10;
  const t: Timing = { step, seconds };
  if (info) t.note = info(r);
  timings.push(t);
  note(`timing: ${step}: ${seconds} s${t.note ? ` (${t.note})` : ""}`);
  return r;
}

/**
 * Build (or find) everything, start the registry with `:latest` → v1 and the
 * UKI images, and provision the sealed disks (bls: v1, uki1, uki2).
 */
export async function trixieFixture(runDir: string): Promise<TrixieFixture> {
  const timings: Timing[] = [];
  const rootfs = await timed(timings, "rootfs (trixie)", () => ensureRootfs(TRIXIE));
  const images = await withLayoutLock(async () => {
    const base = await timed(timings, "image: base layers (rootfs, cfsboot, initramfs)", () => demoBase({ rootfs }), (b) => `initramfs ${(b.initrd.size / 1e6).toFixed(1)} MB${b.initrd.cached ? ", cached" : `, dracut ${b.initrd.buildSeconds} s`}`);
    const v1 = await timed(timings, "image: v1 (BLS)", () => buildBlsImage(base, "trixie-bls-1", { version: "1" }));
    const v2 = await timed(timings, "image: v2 (BLS)", () => buildBlsImage(base, "trixie-bls-2", { version: "2", files: [ADDED_IN_V2] }));
    // v3: the deployment whose boot is never blessed (boot-counting fallback)
    const v3 = await timed(timings, "image: v3 (BLS)", () => buildBlsImage(base, "trixie-bls-3", { version: "3", files: [ADDED_IN_V2], kargs: ["systemd.mask=systemd-bless-boot.service"] }));
    const uki1 = await timed(timings, "image: UKI --format=1", () => buildUkiImage(base, "trixie-uki-f1", { version: "1" }, 1));
    const uki2 = await timed(timings, "image: UKI --format=2", () => buildUkiImage(base, "trixie-uki-f2", { version: "1" }, 2));
    return { base, v1, v2, v3, uki1, uki2 };
  });
  const reg = await timed(timings, "registry start", () => startDemoRegistry());
  await timed(timings, "push images", async () => {
    await pushDemo(images.v1, reg, DEMO_NAME, "latest");
    for (const v of [images.v1, images.v2, images.v3]) await pushDemo(v, reg, DEMO_NAME, v.version);
    await pushDemo(images.uki1, reg, UKI_NAME, "f1");
    await pushDemo(images.uki2, reg, UKI_NAME, "f2");
  });
  const sealed = await timed(
    timings,
    "sealed disks: install to-disk (host) + cfsboot seal (sealer boot)",
    () =>
      provisionSealed({
        installer: rootfs, reg, runDir,
        targets: [
          { kind: "bls", imgref: guestRef(DEMO_NAME, "latest"), manifestDigest: images.v1.manifestDigest },
          { kind: "uki1", imgref: guestRef(UKI_NAME, "f1"), manifestDigest: images.uki1.manifestDigest },
          { kind: "uki2", imgref: guestRef(UKI_NAME, "f2"), manifestDigest: images.uki2.manifestDigest },
        ],
      }),
    (s) => (s.run ? Object.values(s.disks).map((d) => `${d.kind}: install ${d.installSeconds.toFixed(0)} s, seal ${d.sealSeconds.toFixed(0)} s`).join("; ") : "cached"),
  );
  return {
    rootfs, ...images, reg, sealed, timings,
    publish: (img) => pushDemo(img, reg, DEMO_NAME, "latest"),
  };
}

/** Report commands baked into the bookworm image (systemd 252 cannot take an injected unit). */
export function bookwormReportCommands(): ReportCommand[] {
  return [
    ...cfsCommands(),
    { name: "loop", cmd: 'for d in /sys/block/loop*; do [ -s "$d/loop/backing_file" ] && echo "${d##*/} $(cat "$d/loop/backing_file")"; done; true' },
    // arrange the sealed attempt of the next boot: fs-verity on meta.json and the booted image (the
    // 6.1 kernel has fs-verity on ext4), written through a read-write remount in a private namespace
    {
      name: "verity_prep",
      cmd: 'id=$(findmnt -no SOURCE /); id=${id#composefs:}; unshare -m sh -ec "mount -o remount,bind,rw /sysroot; ' +
        'for f in /sysroot/composefs/meta.json /sysroot/composefs/images/$id; do fsverity measure \\$f >/dev/null 2>&1 || fsverity enable --hash-alg=sha512 \\$f; done; ' +
        'fsverity measure /sysroot/composefs/meta.json /sysroot/composefs/images/$id"',
    },
  ];
}

export interface BookwormFixture {
  rootfs: Rootfs;
  base: DemoBase;
  image: DemoImage;
  disk: SealedDisk;
  timings: Timing[];
}

/** The same kind of demo image on Debian 12 (kernel 6.1, systemd 252, dracut 059), installed insecure on the host. */
export async function bookwormFixture(): Promise<BookwormFixture> {
  const timings: Timing[] = [];
  const rootfs = await timed(timings, "rootfs (bookworm)", () => ensureRootfs(BOOKWORM));
  const { base, image } = await withLayoutLock(async () => {
    const base = await timed(timings, "image: base layers (bookworm)", () => demoBase({ rootfs, registry: false, bakedReport: { commands: bookwormReportCommands(), action: "poweroff-fast" } }),
      (b) => `initramfs ${(b.initrd.size / 1e6).toFixed(1)} MB${b.initrd.cached ? ", cached" : `, dracut ${b.initrd.buildSeconds} s`}`);
    const image = await timed(timings, "image: v1 (bookworm, BLS)", () => buildBlsImage(base, "bookworm-bls-1", { version: "1" }));
    return { base, image };
  });
  const disk = await timed(timings, "install to-disk --composefs-insecure (host)", () => hostInstalledDisk({ kind: "bookworm", imgref: image.ociRef, manifestDigest: image.manifestDigest }),
    (d) => (d.cached ? "cached" : `${d.installSeconds} s`));
  return { rootfs, base, image, disk, timings };
}

/** One line per phase: build steps, then each boot (wall, phases, load); printed by the tests and ./demo. */
export function formatTimings(title: string, timings: Timing[], runs: Array<VmRun | undefined>): string {
  const lines = [`timings — ${title}`];
  for (const t of timings) lines.push(`  ${t.step.padEnd(48)} ${t.seconds.toFixed(1).padStart(7)} s${t.note ? `  (${t.note})` : ""}`);
  for (const r of runs) {
    if (!r) continue;
    lines.push(`  boot ${r.name.padEnd(43)} ${r.wallSeconds.toFixed(1).padStart(7)} s  (${describeRun(r)})`);
  }
  return lines.join("\n");
}

export function printTimings(title: string, timings: Timing[], runs: Array<VmRun | undefined>): void {
  process.stderr.write(`${formatTimings(title, timings, runs)}\n`);
}
