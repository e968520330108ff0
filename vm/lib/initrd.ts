// Minimal dracut initrds, built inside a chroot of the guest rootfs (the host
// has no /lib/modules), cached by a hash of everything that goes in.
//
// Cache: initrd/<suite>-<key>.img and .json next to it.
// The project's dracut module (dracut/ in the repository, `cfsboot`) is added
// later through `extraModules` + `add` (or `conf: 'add_dracutmodules+=" cfsboot "'`).

import { chmodSync, copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, renameSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { withLock } from "./lock.ts";
import { type Rootfs, extractRootfs, inChroot } from "./rootfs.ts";
import { cacheDir, elapsed, fileSize, hashTree, makeScratch, note, rmrf, run, sha256, writeAtomic } from "./util.ts";

/** Bump when the build steps change in a way the spec does not show. */
export const INITRD_RECIPE_VERSION = 1;

/** The dracut modules of a minimal systemd initrd that mounts an ext4 root on virtio (vm.md §4). */
export const MINIMAL_MODULES = ["systemd-initrd", "dracut-systemd", "rootfs-block", "base", "fs-lib", "udev-rules", "kernel-modules"];
/** Kernel modules the test VMs need in the initrd (ext4, erofs, overlay, vfat are modules in Debian). */
export const MINIMAL_DRIVERS = [
  "virtio_blk", "virtio_pci", "virtio_scsi", "sd_mod", "ext4", "erofs", "overlay", "loop",
  "vfat", "nls_cp437", "nls_iso8859_1", "efivarfs",
];

export interface DracutModuleSource {
  /** Module name as dracut knows it (`cfsboot`). */
  name: string;
  /** Host directory with module-setup.sh and friends (e.g. `<repo>/dracut`). */
  dir: string;
  /** Ordering prefix in modules.d (default 90 → `90cfsboot`). */
  prio?: number;
}

export interface InitrdFile {
  /** Host file. */
  from: string;
  /** Absolute path inside the guest tree (where the dracut module expects it). */
  to: string;
  mode?: number;
}

export interface InitrdSpec {
  /** Exclusive dracut module list (-m); default MINIMAL_MODULES. */
  modules?: string[];
  /** Exclusive kernel driver list (--drivers); default MINIMAL_DRIVERS. */
  drivers?: string[];
  /** Module directories copied into /usr/lib/dracut/modules.d before dracut runs. */
  extraModules?: DracutModuleSource[];
  /** Modules to add (--add), e.g. ["cfsboot"]. */
  add?: string[];
  /** Files placed into the tree before dracut runs (e.g. the cfsboot executable). */
  files?: InitrdFile[];
  /** Extra dracut.conf.d drop-in text. */
  conf?: string;
}

export interface Initrd {
  path: string;
  key: string;
  size: number;
  kver: string;
  /** Seconds the dracut build took (0 when it came from the cache). */
  buildSeconds: number;
  cached: boolean;
}

export function initrdKey(rootfs: Rootfs, spec: InitrdSpec): string {
  const k = {
    recipe: INITRD_RECIPE_VERSION,
    rootfs: rootfs.key,
    modules: spec.modules ?? MINIMAL_MODULES,
    drivers: spec.drivers ?? MINIMAL_DRIVERS,
    extraModules: (spec.extraModules ?? []).map((m) => ({ name: m.name, prio: m.prio ?? 90, tree: hashTree(m.dir) })),
    add: spec.add ?? [],
    files: (spec.files ?? []).map((f) => ({ to: f.to, mode: f.mode ?? 0o755, sha: sha256(readFileSync(f.from)) })),
    conf: spec.conf ?? "",
  };
  return sha256(JSON.stringify(k)).slice(0, 16);
}

/** The cached initrd for this rootfs and spec, built first if missing (~10–30 s incl. unpacking). */
export async function ensureInitrd(rootfs: Rootfs, spec: InitrdSpec = {}): Promise<Initrd> {
  const key = initrdKey(rootfs, spec);
  const path = join(cacheDir(), "initrd", `${rootfs.spec.suite}-${key}.img`);
  const found = (): Initrd | undefined => {
    if (!existsSync(path) || !existsSync(`${path}.json`)) return undefined;
    return { path, key, size: fileSize(path), kver: rootfs.kver, buildSeconds: 0, cached: true };
  };
  const hit = found();
  if (hit) return hit;
  return withLock(`${path}.lock`, async () => {
    const again = found();
    if (again) return again;
    const t0 = performance.now();
    await buildInitrd(rootfs, spec, path);
    const buildSeconds = Math.round((performance.now() - t0) / 100) / 10;
    const info = { key, kver: rootfs.kver, rootfs: rootfs.key, size: fileSize(path), buildSeconds, spec: describeSpec(spec), builtAt: new Date().toISOString() };
    writeAtomic(`${path}.json`, JSON.stringify(info, null, 2) + "\n");
    return { path, key, size: info.size, kver: rootfs.kver, buildSeconds, cached: false };
  });
}

function describeSpec(spec: InitrdSpec): unknown {
  return {
    modules: spec.modules ?? MINIMAL_MODULES,
    drivers: spec.drivers ?? MINIMAL_DRIVERS,
    extraModules: (spec.extraModules ?? []).map((m) => m.name),
    add: spec.add ?? [],
    files: (spec.files ?? []).map((f) => f.to),
    conf: spec.conf ?? "",
  };
}

async function buildInitrd(rootfs: Rootfs, spec: InitrdSpec, out: string): Promise<void> {
  const t0 = performance.now();
  const work = makeScratch(`initrd-${rootfs.spec.suite}`);
  const root = join(work, "root");
  const log = join(work, "dracut.log");
  try {
    extractRootfs(rootfs, root);
    for (const m of spec.extraModules ?? []) {
      const dest = join(root, "usr/lib/dracut/modules.d", `${m.prio ?? 90}${m.name}`);
      rmrf(dest);
      cpSync(m.dir, dest, { recursive: true });
    }
    for (const f of spec.files ?? []) {
      const dest = join(root, f.to);
      mkdirSync(dirname(dest), { recursive: true });
      copyFileSync(f.from, dest);
      chmodSync(dest, f.mode ?? 0o755);
    }
    if (spec.conf) writeFileSync(join(root, "etc/dracut.conf.d/60-cfsvm-extra.conf"), spec.conf.endsWith("\n") ? spec.conf : `${spec.conf}\n`);
    const argv = [
      "dracut", "--force", "--no-hostonly", "--no-hostonly-cmdline", "--nostrip", "--no-early-microcode",
      "-m", (spec.modules ?? MINIMAL_MODULES).join(" "),
      "--drivers", (spec.drivers ?? MINIMAL_DRIVERS).join(" "),
      ...((spec.add ?? []).length ? ["--add", (spec.add ?? []).join(" ")] : []),
      "--kver", rootfs.kver, "/root/cfsvm-initrd.img",
    ];
    await inChroot(root, argv, { log, timeoutMs: 900_000 });
    mkdirSync(dirname(out), { recursive: true });
    const tmp = `${out}.tmp-${process.pid}`;
    copyFileSync(join(root, "root/cfsvm-initrd.img"), tmp);
    renameSync(tmp, out);
    copyFileSync(log, `${out}.log`);
    note(`initrd ${rootfs.spec.suite} ${(fileSize(out) / 1e6).toFixed(1)} MB in ${elapsed(t0)}`);
  } finally {
    rmrf(work);
  }
}

export interface CpioEntry {
  /** Absolute path inside the initrd. */
  path: string;
  from?: string;
  data?: string | Uint8Array;
  symlink?: string;
  mode?: number;
}

/**
 * Write `out` = `base` followed by a zstd-compressed newc cpio holding
 * `entries` (the kernel unpacks concatenated archives, later files win).
 * About 1 s instead of a dracut run per agent build (vm-bookworm.md §4);
 * `lsinitrd` does not list the appended part, and a Bun executable needs its
 * libm/libpthread/libdl in it when the base initrd lacks them.
 */
export function appendToInitrd(base: string, entries: CpioEntry[], out: string): void {
  const work = makeScratch("cpio");
  try {
    const root = join(work, "root");
    mkdirSync(root, { recursive: true });
    for (const e of entries) {
      if (!e.path.startsWith("/")) throw new Error(`initrd path must be absolute: ${e.path}`);
      const dest = join(root, e.path);
      mkdirSync(dirname(dest), { recursive: true });
      if (e.symlink !== undefined) {
        symlinkSync(e.symlink, dest);
        continue;
      }
      if (e.from !== undefined) copyFileSync(e.from, dest);
      else writeFileSync(dest, e.data ?? "");
      chmodSync(dest, e.mode ?? 0o755);
    }
    const cpio = join(work, "extra.cpio.zst");
    run(["sh", "-c", 'cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | zstd -3 -T0 -q > "$2"', "sh", root, cpio]);
    const tmp = `${out}.tmp-${process.pid}`;
    run(["sh", "-c", 'cat "$1" "$2" > "$3"', "sh", base, cpio, tmp]);
    renameSync(tmp, out);
  } finally {
    rmrf(work);
  }
}
