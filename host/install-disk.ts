// `install to-disk`: a whole disk (a raw image FILE or a block DEVICE) as a
// composefs host: GPT, ESP with systemd-boot, ext4 root with `-O verity`
// (bootc-composefs.md §5.1, vm.md §5). The install itself is
// installToFilesystem (host/install.ts); this module only decides where it
// runs and turns the result into partitions:
//
//   staging (default with --composefs-insecure): install into two staging
//     directories (root tree + ESP tree) beside the output, then build the
//     disk from them: sfdisk, mkfs.vfat + mtools, `mke2fs -d` — no loop
//     device, no mount, and the host kernel needs neither vfat nor ext4. A
//     FILE is built under a temporary name and renamed into place at the
//     end: a failed install leaves no output. mke2fs cannot enable fs-verity
//     on files, so a staged disk is always insecure.
//   mount (sealed installs; `--method mount`): GPT and an empty ESP written
//     as above, the root partition formatted through a loop device over its
//     byte range and mounted, the install run into the mounted root (objects
//     and meta.json get fs-verity from the kernel), the staged ESP tree
//     copied in with mtools. Runs in a private mount namespace (cfsboot
//     re-executes itself under `unshare --mount`), so a killed install
//     leaves no mount behind; the loop device clears itself.
//
// fs-verity: without --composefs-insecure the kernel must support it on
// ext4 (/sys/fs/ext4/features/verity); otherwise to-disk fails before doing
// anything. How sealed disks are provisioned where the building machine has
// no fs-verity (this project's CI host): see docs in host/seal.ts.

import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, statSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";

import { CfsError } from "../shared/errors.ts";
import * as sys from "../shared/sys.ts";
import { checkpoint, onInterrupt } from "./interrupt.ts";
import {
  type DiskIds,
  type DiskLayout,
  buildDiskImage,
  checkIds,
  espUuidOf,
  planLayout,
  randomDiskIds,
  rootSizeFor,
  syncTarget,
  targetSize,
  writeEsp,
  writeExt4,
  writePartitionTable,
  MiB,
} from "./disk.ts";
import { type InstallOptions, type InstallResult, installToFilesystem } from "./install.ts";
import { runToolSync } from "./tools.ts";

export type DiskMethod = "staging" | "mount";

export interface InstallToDiskOptions extends Omit<InstallOptions, "target" | "esp" | "bootDir" | "rootMountSpec"> {
  /** Raw image file (created or replaced) or block device. */
  device: string;
  /** Size of a new image file (default: ESP + room for the installed tree). */
  size?: number;
  espSize?: number;
  /** Overwrite a device or non-empty file (required when it holds data). */
  wipe?: boolean;
  ids?: Partial<DiskIds>;
  /** Default: staging when insecure, mount otherwise. */
  method?: DiskMethod;
  /** ext4 features of the root (default ["verity"]). */
  ext4Features?: string[];
}

export interface InstallToDiskResult extends InstallResult {
  device: string;
  layout: DiskLayout;
  ids: DiskIds;
  method: DiskMethod;
}

/** Whether this kernel supports fs-verity on ext4. */
export function kernelHasExt4Verity(): boolean {
  return existsSync("/sys/fs/ext4/features/verity");
}

export const NO_VERITY_MESSAGE =
  "this kernel has no fs-verity for ext4 (/sys/fs/ext4/features/verity is missing), so a sealed disk cannot be written here. " +
  "Install with --composefs-insecure and seal it on a machine with fs-verity (`cfsboot seal` on the booted system), " +
  "or run install to-disk where fs-verity works";

function isBlockDevice(p: string): boolean {
  try {
    return statSync(p).isBlockDevice();
  } catch {
    return false;
  }
}

/** Refuse to overwrite data without --wipe. */
function checkTarget(device: string, wipe: boolean): "file" | "device" {
  const st = statSync(device, { throwIfNoEntry: false });
  if (st === undefined) {
    if (!existsSync(dirname(resolve(device)))) throw new CfsError(device, "the directory for the disk image does not exist");
    return "file";
  }
  if (st.isBlockDevice()) {
    if (!wipe) throw new CfsError(device, "is a block device; pass --wipe to erase it and install");
    return "device";
  }
  if (!st.isFile()) throw new CfsError(device, "not a block device or a regular file");
  if (st.size > 0 && !wipe) throw new CfsError(device, "exists and is not empty; pass --wipe to replace it");
  return "file";
}

const WORK_PREFIX = ".cfsboot-to-disk-";

export async function installToDisk(o: InstallToDiskOptions): Promise<InstallToDiskResult> {
  const device = resolve(o.device);
  const insecure = o.insecure ?? false;
  const bootloader = o.bootloader ?? "systemd";
  if (bootloader !== "systemd") {
    throw new CfsError(`--bootloader ${bootloader}`, "install to-disk installs systemd-boot only (GRUB needs its own installer); use install to-filesystem for GRUB");
  }
  const kind = checkTarget(device, o.wipe ?? false);
  const method: DiskMethod = o.method ?? (insecure ? "staging" : "mount");
  // fs-verity first (bootc#1805): nothing is fetched or written without it.
  if (!insecure) {
    if (method === "staging") throw new CfsError("--method staging", "a staged disk cannot have fs-verity (mke2fs -d does not enable it on files); sealed installs use --method mount");
    if (!kernelHasExt4Verity()) throw new CfsError(device, NO_VERITY_MESSAGE);
  }
  const ids: DiskIds = { ...randomDiskIds(), ...o.ids };
  checkIds(ids);
  const features = o.ext4Features ?? ["verity"];
  const espSize = o.espSize ?? 512 * MiB;
  // ESP size and --size checked now, not after the whole install (the root needs at least 64 MiB).
  if (kind === "file") planLayout({ espSize, rootSize: 64 * MiB, ...(o.size !== undefined ? { size: o.size } : {}) });

  // Scratch space next to the output (same file system: the image file is renamed into place).
  const workParent = kind === "file" ? dirname(device) : (process.env.CFSBOOT_TMPDIR ?? "/var/tmp");
  const work = mkdtempSync(join(workParent, WORK_PREFIX));
  const espDir = join(work, "esp");
  const rootDir = join(work, "root");
  mkdirSync(espDir, { mode: 0o755 });
  mkdirSync(rootDir, { mode: 0o755 });
  const out = kind === "file" ? join(work, `${basename(device)}.img`) : device;
  const installOpts = (target: string): InstallOptions => ({
    ...o,
    target,
    bootloader: "systemd",
    esp: espDir,
    rootMountSpec: `UUID=${ids.rootFsUuid}`,
  });
  let mounted: string | null = null;
  let loop: sys.LoopDevice | null = null;
  // Ctrl-C/SIGTERM: unmount and remove the scratch directory (the target file is only renamed in at the end).
  const unregister = onInterrupt(() => {
    if (mounted !== null) sys.umount2(mounted, sys.MNT_DETACH);
    if (loop !== null) sys.close(loop.fd);
    rmSync(work, { recursive: true, force: true });
  });
  try {
    let result: InstallResult;
    let layout: DiskLayout;
    if (method === "staging") {
      result = await installToFilesystem(installOpts(rootDir));
      const size = kind === "device" ? targetSize(device) : o.size;
      layout = planLayout({ espSize, ...(size !== undefined ? { size } : { rootSize: rootSizeFor(rootDir) }) });
      buildDiskImage({ path: out, layout, ids, espDir, rootDir, ext4Features: features });
    } else {
      if (process.getuid?.() !== 0) throw new CfsError(device, "--method mount needs root (loop device, mount)");
      const size = kind === "device" ? targetSize(device) : o.size;
      if (size === undefined) throw new CfsError(device, "--method mount needs --size for a new image file");
      layout = planLayout({ espSize, size });
      if (kind === "file") runToolSync("truncate", ["-s", String(layout.size), out], { input: out });
      writePartitionTable(out, layout, ids);
      const fd = sys.open(out, sys.O_RDWR);
      try {
        loop = sys.loopAttach(fd, { readOnly: false, offset: layout.rootOffset, sizeLimit: layout.rootSize });
      } finally {
        sys.close(fd);
      }
      writeExt4(loop.path, { offset: 0, size: layout.rootSize, uuid: ids.rootFsUuid, features });
      sys.mount(loop.path, rootDir, "ext4", 0, null);
      mounted = rootDir;
      result = await installToFilesystem(installOpts(rootDir));
      const rfd = sys.open(rootDir, sys.O_RDONLY | sys.O_DIRECTORY);
      try {
        sys.syncfs(rfd, rootDir);
      } finally {
        sys.close(rfd);
      }
      sys.umount2(rootDir);
      mounted = null;
      sys.close(loop.fd);
      loop = null;
      writeEsp(out, { offset: layout.espOffset, size: layout.espSize, volumeId: ids.espVolumeId, fromDir: espDir });
      syncTarget(out);
    }
    await checkpoint(); // Ctrl-C during the synchronous disk build: no disk appears
    if (kind === "file") {
      renameSync(out, device);
      sys.fsyncPath(dirname(device));
    } else {
      // Let the kernel see the new partitions (best effort: a loop device without partscan has none).
      spawnSync("blockdev", ["--rereadpt", device], { stdio: "ignore" });
    }
    return { ...result, device, layout, ids, method };
  } finally {
    unregister();
    let stillMounted = false;
    if (mounted !== null) {
      try {
        sys.umount2(mounted, sys.MNT_DETACH);
      } catch {
        stillMounted = true;
      }
    }
    if (loop !== null) {
      try {
        sys.close(loop.fd);
      } catch {}
    }
    if (stillMounted) process.stderr.write(`cfsboot: warning: ${rootDir} is still mounted; left ${work} in place\n`);
    else rmSync(work, { recursive: true, force: true });
  }
}

/** The ESP's filesystem UUID on a disk written by to-disk (for GRUB's efiuuid.cfg and fstab lines). */
export const espUuidForIds = (ids: DiskIds): string => espUuidOf(ids.espVolumeId);
