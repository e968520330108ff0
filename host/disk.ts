// GPT disks with an EFI system partition and an ext4 root, written without
// loop devices or mounts (vm.md §5, vm-bookworm.md §5): `sfdisk` on the image
// file or device, `mkfs.vfat --offset` + mtools (`TARGET@@offset`) for the
// ESP, `mke2fs -E offset= -d DIR` for the root. Works the same on a plain
// file and on a block device (offsets into the whole device: no partition
// device nodes, no udev). The VM harness (vm/lib/disk.ts) builds its test
// disks with these functions.
//
// Layout (fixed, 1 MiB aligned): 1 MiB for the GPT, the ESP (default 512 MiB:
// mtools fails on FAT32 below ~260 MiB, vm-bookworm.md pitfall 9), the root
// (4 KiB blocks, `-O verity` by default), 1 MiB for the backup GPT. Partition
// types: ESP, and the Discoverable Partitions root type of the architecture.

import { closeSync, fsyncSync, openSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { randomUUID } from "node:crypto";

import { CfsError } from "../shared/errors.ts";
import { runToolSync } from "./tools.ts";

export const MiB = 1024 * 1024;
export const ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";

/** Discoverable Partitions Specification root partition types. */
export const ROOT_TYPES: Record<string, string> = {
  x64: "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
  arm64: "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
  ia32: "44479540-F297-41B2-9AF7-D131D5F0458A",
  riscv64: "72EC70A6-CF74-40E6-BD49-4BDA08E8F224",
};
export const ROOT_X86_64_TYPE = ROOT_TYPES.x64!;

export function rootPartitionType(arch = process.arch): string {
  const t = ROOT_TYPES[arch];
  if (t === undefined) throw new CfsError(`architecture ${arch}`, "no Discoverable Partitions root type known for it");
  return t;
}

export interface DiskIds {
  diskGuid: string;
  espPartUuid: string;
  rootPartUuid: string;
  rootFsUuid: string;
  /** FAT volume id, 8 hex digits (the ESP's "UUID" is XXXX-XXXX). */
  espVolumeId: string;
}

/** Fresh random ids. */
export function randomDiskIds(): DiskIds {
  return {
    diskGuid: randomUUID(),
    espPartUuid: randomUUID(),
    rootPartUuid: randomUUID(),
    rootFsUuid: randomUUID(),
    espVolumeId: randomUUID().replace(/-/g, "").slice(0, 8).toUpperCase(),
  };
}

/** The FAT volume id as blkid/GRUB spell the ESP's UUID (`ABCD-1234`). */
export const espUuidOf = (volumeId: string): string => `${volumeId.slice(0, 4)}-${volumeId.slice(4, 8)}`.toUpperCase();

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function checkIds(ids: DiskIds): void {
  for (const k of ["diskGuid", "espPartUuid", "rootPartUuid", "rootFsUuid"] as const) {
    if (!UUID_RE.test(ids[k])) throw new CfsError(`${k} ${JSON.stringify(ids[k])}`, "not a UUID");
  }
  if (!/^[0-9A-Fa-f]{8}$/.test(ids.espVolumeId)) throw new CfsError(`ESP volume id ${JSON.stringify(ids.espVolumeId)}`, "expected 8 hex digits");
}

export interface DiskLayout {
  size: number;
  espOffset: number;
  espSize: number;
  rootOffset: number;
  rootSize: number;
}

/** Partition offsets for a disk of `size` bytes (or of ESP + root when `rootSize` is given). */
export function planLayout(o: { espSize?: number; rootSize?: number; size?: number }): DiskLayout {
  const espSize = o.espSize ?? 512 * MiB;
  if (espSize % MiB !== 0 || espSize < 260 * MiB) throw new CfsError("ESP size", `${espSize} bytes: must be a whole number of MiB, at least 260 MiB (smaller FAT32 file systems break mtools)`);
  let rootSize: number;
  let size: number;
  if (o.size !== undefined) {
    size = Math.floor(o.size / MiB) * MiB;
    rootSize = size - 2 * MiB - espSize;
    if (o.rootSize !== undefined && o.rootSize > rootSize) throw new CfsError("disk size", `${o.size} bytes cannot hold the ${espSize / MiB} MiB ESP and a ${o.rootSize / MiB} MiB root`);
  } else {
    if (o.rootSize === undefined) throw new CfsError("disk size", "neither the disk size nor the root size is known");
    rootSize = Math.ceil(o.rootSize / MiB) * MiB;
    size = 2 * MiB + espSize + rootSize;
  }
  if (rootSize < 64 * MiB) throw new CfsError("disk size", `${size} bytes leave only ${Math.max(0, rootSize) / MiB} MiB for the root file system (at least 64 MiB)`);
  return { size, espOffset: MiB, espSize, rootOffset: MiB + espSize, rootSize };
}

/** The sfdisk script of a layout. */
export function sfdiskScript(l: DiskLayout, ids: DiskIds, rootType = rootPartitionType()): string {
  const s = (b: number) => b / 512;
  return [
    "label: gpt",
    `label-id: ${ids.diskGuid}`,
    `start=${s(l.espOffset)}, size=${s(l.espSize)}, type=${ESP_TYPE}, uuid=${ids.espPartUuid}, name="esp"`,
    `start=${s(l.rootOffset)}, size=${s(l.rootSize)}, type=${rootType}, uuid=${ids.rootPartUuid}, name="root"`,
    "",
  ].join("\n");
}

/** Write the GPT (the kernel is not told: the partitions are used by offset). */
export function writePartitionTable(target: string, l: DiskLayout, ids: DiskIds): void {
  runToolSync("sfdisk", ["-q", "--no-reread", "--no-tell-kernel", "--wipe", "always", target], { stdin: sfdiskScript(l, ids), input: target });
}

const MT_ENV = (): Record<string, string | undefined> => ({ ...process.env, MTOOLS_SKIP_CHECK: "1", MTOOLS_NO_VFAT: undefined });

/** `TARGET@@offset`: mtools' way to name a FAT file system inside a disk. */
export const mtoolsImage = (target: string, offset: number): string => `${target}@@${offset}`;

/**
 * Make the FAT32 ESP at `offset` and copy `fromDir` (a staged ESP tree) into
 * it with mtools; no mount.
 */
export function writeEsp(target: string, o: { offset: number; size: number; volumeId: string; label?: string; fromDir?: string }): void {
  // -I: the target is the whole disk (the ESP is at --offset inside it); on a
  // block device whose partitions the kernel already sees, mkfs.vfat would
  // otherwise refuse ("Partitions or virtual mappings on device").
  runToolSync("mkfs.vfat", ["-I", "-F", "32", "-n", o.label ?? "ESP", "-i", o.volumeId, `--offset=${o.offset / 512}`, target, String(o.size / 1024)], { input: `${target}: ESP` });
  if (o.fromDir === undefined) return;
  const names = readdirSync(o.fromDir).sort();
  if (names.length === 0) return;
  runToolSync("mcopy", ["-s", "-p", "-m", "-Q", "-i", mtoolsImage(target, o.offset), ...names.map((n) => join(o.fromDir!, n)), "::/"], { input: `${target}: ESP`, env: MT_ENV() });
}

/** Files (and directories) in an ESP, recursively, as mtools lists them (`::/path`). */
export function listEsp(target: string, offset: number): string[] {
  const r = runToolSync("mdir", ["-/", "-b", "-i", mtoolsImage(target, offset), "::/"], { input: `${target}: ESP`, env: MT_ENV() });
  return r.stdout.split("\n").map((l) => l.trim()).filter((l) => l.startsWith("::/")).sort();
}

/**
 * Make the ext4 root at `offset`, filled from `fromDir` (`mke2fs -d`: owners,
 * modes, xattrs, hardlinks and symlinks as in the directory); no mount.
 */
export function writeExt4(target: string, o: { offset: number; size: number; uuid: string; label?: string; features?: string[]; fromDir?: string }): void {
  const features = o.features ?? ["verity"];
  runToolSync("mke2fs", [
    "-q", "-F", "-t", "ext4", "-b", "4096",
    ...(features.length > 0 ? ["-O", features.join(",")] : []),
    "-L", o.label ?? "root", "-U", o.uuid,
    "-E", `offset=${o.offset},root_owner=0:0,nodiscard`,
    ...(o.fromDir !== undefined ? ["-d", o.fromDir] : []),
    target, `${o.size / 1024}k`,
  ], { input: `${target}: root file system` });
}

/** Bytes the files of a directory tree occupy in 4 KiB blocks, and its inode count. */
export function treeUsage(dir: string): { bytes: number; inodes: number } {
  let bytes = 0;
  let inodes = 0;
  const seen = new Set<string>();
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      inodes++;
      if (e.isDirectory()) {
        bytes += 4096;
        walk(p);
      } else if (e.isFile()) {
        const st = statSync(p);
        const key = `${st.dev}:${st.ino}`;
        if (st.nlink > 1) {
          if (seen.has(key)) continue;
          seen.add(key);
        }
        bytes += Math.ceil(st.size / 4096) * 4096;
      } else if (e.isSymbolicLink()) bytes += 4096;
    }
  };
  walk(dir);
  return { bytes, inodes };
}

/** A root size with room to spare for the content of `dir` (content × 1.25 + 512 MiB, at least 1 GiB). */
export function rootSizeFor(dir: string): number {
  const u = treeUsage(dir);
  const need = Math.ceil((u.bytes + u.inodes * 256) * 1.25) + 512 * MiB;
  return Math.max(1024 * MiB, Math.ceil(need / MiB) * MiB);
}

/** Size of a block device (BLKGETSIZE64 through blockdev) or a file. */
export function targetSize(target: string): number {
  const st = statSync(target);
  if (st.isBlockDevice()) return Number(runToolSync("blockdev", ["--getsize64", target], { input: target }).stdout.trim());
  return st.size;
}

export interface BuildDiskSpec {
  /** Image file or block device, written in place. */
  path: string;
  layout: DiskLayout;
  ids: DiskIds;
  /** Staged ESP tree (copied with mtools). */
  espDir?: string;
  /** Staged root tree (mke2fs -d). */
  rootDir?: string;
  rootLabel?: string;
  /** ext4 features (`-O`), default ["verity"]. */
  ext4Features?: string[];
}

/**
 * Partition and fill a disk: the file is extended to the layout's size
 * (sparse), then GPT, ESP and root. For a file, the caller provides a fresh
 * path (to-disk builds into a temporary file and renames it).
 */
export function buildDiskImage(spec: BuildDiskSpec): void {
  checkIds(spec.ids);
  const l = spec.layout;
  const st = statSync(spec.path, { throwIfNoEntry: false });
  if (st === undefined || st.isFile()) {
    runToolSync("truncate", ["-s", String(l.size), spec.path], { input: spec.path });
  } else if (targetSize(spec.path) < l.size) {
    throw new CfsError(spec.path, `device holds ${targetSize(spec.path)} bytes, the layout needs ${l.size}`);
  }
  writePartitionTable(spec.path, l, spec.ids);
  writeEsp(spec.path, { offset: l.espOffset, size: l.espSize, volumeId: spec.ids.espVolumeId, ...(spec.espDir !== undefined ? { fromDir: spec.espDir } : {}) });
  writeExt4(spec.path, {
    offset: l.rootOffset,
    size: l.rootSize,
    uuid: spec.ids.rootFsUuid,
    ...(spec.rootLabel !== undefined ? { label: spec.rootLabel } : {}),
    ...(spec.ext4Features !== undefined ? { features: spec.ext4Features } : {}),
    ...(spec.rootDir !== undefined ? { fromDir: spec.rootDir } : {}),
  });
  syncTarget(spec.path);
}

/** fsync a disk image or device (the tools that wrote it do not). */
export function syncTarget(path: string): void {
  const fd = openSync(path, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export interface DiskPartitions {
  diskGuid: string;
  esp: { offset: number; size: number; partUuid: string };
  root: { offset: number; size: number; partUuid: string; type: string };
}

/** The ESP and root partitions of a GPT disk (sfdisk -J). */
export function readPartitions(path: string): DiskPartitions {
  const j = JSON.parse(runToolSync("sfdisk", ["-J", path], { input: path }).stdout) as {
    partitiontable: { id: string; sectorsize?: number; partitions: Array<{ start: number; size: number; type: string; uuid: string }> };
  };
  const pt = j.partitiontable;
  const ss = pt.sectorsize ?? 512;
  const esp = pt.partitions.find((p) => p.type.toUpperCase() === ESP_TYPE);
  const root = pt.partitions.find((p) => Object.values(ROOT_TYPES).includes(p.type.toUpperCase())) ?? pt.partitions.find((p) => p !== esp);
  if (esp === undefined || root === undefined) throw new CfsError(path, "no ESP and root partition in the GPT");
  return {
    diskGuid: pt.id.toLowerCase(),
    esp: { offset: esp.start * ss, size: esp.size * ss, partUuid: esp.uuid.toLowerCase() },
    root: { offset: root.start * ss, size: root.size * ss, partUuid: root.uuid.toLowerCase(), type: root.type.toUpperCase() },
  };
}
