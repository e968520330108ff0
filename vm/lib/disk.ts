// Disk images without loop devices or mounts (the host kernel has no vfat):
// a GPT (sfdisk) with an ESP (mkfs.vfat --offset + mtools) and an ext4 root
// (`mke2fs -E offset= -d dir`, 4 KiB blocks, `-O verity`) — written by
// host/disk.ts, the product's disk writer — and helpers to read
// and change files in both after a boot (mtools `img@@offset`, `debugfs
// "img?offset=N"`). Never use these on a disk a running VM has open.

import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { buildDiskImage, planLayout, readPartitions } from "../../host/disk.ts";
import { makeScratch, rmrf, run } from "./util.ts";

const MiB = 1024 * 1024;
export { ESP_TYPE, ROOT_X86_64_TYPE } from "../../host/disk.ts";

export interface DiskIds {
  diskGuid: string;
  espPartUuid: string;
  rootPartUuid: string;
  rootFsUuid: string;
  /** FAT volume id, 8 hex digits. */
  espVolumeId: string;
}

/** Fixed ids: every test disk looks the same, so logs and entries are comparable. */
export const DEFAULT_IDS: DiskIds = {
  diskGuid: "c0f5b007-0000-4000-8000-000000000001",
  espPartUuid: "c0f5b007-0000-4000-8000-0000000000e5",
  rootPartUuid: "c0f5b007-0000-4000-8000-000000000400",
  rootFsUuid: "c0f5b007-0000-4000-8000-0000000000f5",
  espVolumeId: "C0F5B007",
};

export interface EspFile {
  /** Path in the ESP, e.g. `/loader/entries/cfs+3.conf`. */
  path: string;
  data?: string | Uint8Array;
  /** Host file to copy instead of `data`. */
  from?: string;
}

export interface DiskSpec {
  /** Output image (raw, sparse). Replaced if it exists. */
  path: string;
  espSizeMiB?: number;
  rootSizeMiB?: number;
  /** Directory the ext4 root is filled from (`mke2fs -d`); empty root when absent. */
  rootDir?: string;
  rootLabel?: string;
  /** ext4 features (`-O`), default ["verity"]. */
  ext4Features?: string[];
  esp?: EspFile[];
  ids?: Partial<DiskIds>;
}

export interface Disk {
  path: string;
  ids: DiskIds;
  espOffset: number;
  espSize: number;
  rootOffset: number;
  rootSize: number;
}

/**
 * Build a GPT disk with the product's disk writer (host/disk.ts, the code
 * `cfsboot install to-disk` uses): 1 MiB gap, ESP (default 512 MiB: mtools
 * fails on FAT32 under ~260 MiB, vm-bookworm.md pitfall 9), ext4 root
 * (default 3 GiB), 1 MiB for the backup GPT; then the listed ESP files.
 * Sparse: a few seconds and ~0.5–1 GB allocated.
 */
export function buildDisk(spec: DiskSpec): Disk {
  const ids: DiskIds = { ...DEFAULT_IDS, ...spec.ids };
  const layout = planLayout({ espSize: (spec.espSizeMiB ?? 512) * MiB, rootSize: (spec.rootSizeMiB ?? 3072) * MiB });
  const disk: Disk = { path: spec.path, ids, espOffset: layout.espOffset, espSize: layout.espSize, rootOffset: layout.rootOffset, rootSize: layout.rootSize };
  mkdirSync(dirname(spec.path), { recursive: true });
  rmrf(spec.path);
  buildDiskImage({
    path: spec.path,
    layout,
    ids,
    ...(spec.rootDir ? { rootDir: spec.rootDir } : {}),
    rootLabel: spec.rootLabel ?? "root",
    ext4Features: spec.ext4Features ?? ["verity"],
  });
  for (const f of spec.esp ?? []) espWrite(disk, f.path, f.data ?? readFileSync(f.from ?? ""));
  return disk;
}

/** Describe an existing GPT disk image (any layout with an ESP and a root partition). */
export function openDisk(path: string): Disk {
  const p = readPartitions(path);
  const fsUuid = run(["blkid", "-p", "-o", "value", "-s", "UUID", "-O", String(p.root.offset), path], { allowFail: true }).stdout.toString().trim();
  return {
    path,
    ids: { ...DEFAULT_IDS, diskGuid: p.diskGuid, espPartUuid: p.esp.partUuid, rootPartUuid: p.root.partUuid, rootFsUuid: fsUuid || DEFAULT_IDS.rootFsUuid },
    espOffset: p.esp.offset,
    espSize: p.esp.size,
    rootOffset: p.root.offset,
    rootSize: p.root.size,
  };
}

// ---------------------------------------------------------------------------
// ESP (mtools on `image@@offset`).

const MT_ENV = { ...process.env, MTOOLS_SKIP_CHECK: "1", MTOOLS_NO_VFAT: undefined };

function mimg(disk: Disk): string {
  return `${disk.path}@@${disk.espOffset}`;
}

function mpath(p: string): string {
  if (!p.startsWith("/")) throw new Error(`ESP path must be absolute: ${p}`);
  return `::${p}`;
}

/** Create a directory and its parents in the ESP (existing ones are fine). */
export function espMkdir(disk: Disk, dir: string): void {
  const parts = dir.split("/").filter((x) => x !== "");
  let cur = "";
  for (const part of parts) {
    cur += `/${part}`;
    if (espExists(disk, cur)) continue;
    run(["mmd", "-i", mimg(disk), mpath(cur)], { env: MT_ENV });
  }
}

/** Write (or replace) a file in the ESP, creating its directories. */
export function espWrite(disk: Disk, path: string, data: string | Uint8Array): void {
  espMkdir(disk, dirname(path));
  const tmp = makeScratch("esp");
  try {
    const f = join(tmp, "f");
    writeFileSync(f, data);
    run(["mcopy", "-o", "-i", mimg(disk), f, mpath(path)], { env: MT_ENV });
  } finally {
    rmrf(tmp);
  }
}

/** Copy a host file into the ESP. */
export function espCopyIn(disk: Disk, from: string, path: string): void {
  espMkdir(disk, dirname(path));
  run(["mcopy", "-o", "-i", mimg(disk), from, mpath(path)], { env: MT_ENV });
}

export function espRead(disk: Disk, path: string): Buffer {
  const tmp = makeScratch("esp");
  try {
    const f = join(tmp, "f");
    run(["mcopy", "-n", "-i", mimg(disk), mpath(path), f], { env: MT_ENV });
    return readFileSync(f);
  } finally {
    rmrf(tmp);
  }
}

export function espExists(disk: Disk, path: string): boolean {
  if (path === "/" || path === "") return true;
  return run(["mdir", "-b", "-i", mimg(disk), mpath(path)], { env: MT_ENV, allowFail: true }).status === 0;
}

/** Names in an ESP directory (sorted; directories end with `/`). */
export function espList(disk: Disk, dir: string): string[] {
  const r = run(["mdir", "-b", "-i", mimg(disk), mpath(dir)], { env: MT_ENV, allowFail: true });
  if (r.status !== 0) throw new Error(`ESP ${dir}: ${r.stderr.trim()}`);
  const prefix = `::${dir.replace(/\/$/, "")}/`;
  return r.stdout
    .toString()
    .split("\n")
    .map((l) => l.trimEnd())
    .filter((l) => l.startsWith(prefix))
    .map((l) => l.slice(prefix.length))
    .filter((n) => n !== "" && n !== "./" && n !== "../" && n !== "." && n !== "..")
    .sort();
}

export function espRemove(disk: Disk, path: string): void {
  run(["mdel", "-i", mimg(disk), mpath(path)], { env: MT_ENV });
}

export function espRename(disk: Disk, from: string, to: string): void {
  run(["mren", "-i", mimg(disk), mpath(from), mpath(to)], { env: MT_ENV });
}

// ---------------------------------------------------------------------------
// ext4 root (debugfs on `image?offset=N`).

function eimg(disk: Disk): string {
  return `${disk.path}?offset=${disk.rootOffset}`;
}

/** debugfs prints its version banner and all errors on stderr and exits 0: any other stderr line is an error. */
function debugfs(disk: Disk, cmds: string[], write = false): Buffer {
  const tmp = makeScratch("debugfs");
  try {
    const f = join(tmp, "cmds");
    writeFileSync(f, cmds.join("\n") + "\n");
    const r = run(["debugfs", ...(write ? ["-w"] : []), "-f", f, eimg(disk)]);
    const errs = r.stderr
      .split("\n")
      .filter((l) => l.trim() !== "" && !/^debugfs \d/.test(l) && !/^debugfs: /.test(l));
    if (errs.length) throw new Error(`debugfs on ${eimg(disk)}: ${errs.join("; ")}`);
    return r.stdout;
  } finally {
    rmrf(tmp);
  }
}

function dq(p: string): string {
  if (/["\n]/.test(p)) throw new Error(`debugfs path with a quote or newline: ${p}`);
  return `"${p}"`;
}

export function ext4Read(disk: Disk, path: string): Buffer {
  const tmp = makeScratch("ext4");
  try {
    const f = join(tmp, "f");
    debugfs(disk, [`dump ${dq(path)} ${dq(f)}`]);
    return readFileSync(f);
  } catch (e) {
    throw new Error(`ext4 ${path}: ${(e as Error).message}`);
  } finally {
    rmrf(tmp);
  }
}

export function ext4Exists(disk: Disk, path: string): boolean {
  try {
    debugfs(disk, [`stat ${dq(path)}`]);
    return true;
  } catch {
    return false;
  }
}

/** Names in an ext4 directory (without . and ..), sorted. */
export function ext4List(disk: Disk, dir: string): string[] {
  const out = debugfs(disk, [`ls -p ${dq(dir)}`]).toString();
  // -p: /inode/mode/uid/gid/name/size/
  return out
    .split("\n")
    .map((l) => l.split("/")[5])
    .filter((n): n is string => n !== undefined && n !== "" && n !== "." && n !== "..")
    .sort();
}

export function ext4Mkdir(disk: Disk, dir: string): void {
  const parts = dir.split("/").filter((x) => x !== "");
  let cur = "";
  for (const p of parts) {
    cur += `/${p}`;
    if (!ext4Exists(disk, cur)) debugfs(disk, [`mkdir ${dq(cur)}`], true);
  }
}

/** Write (or replace) a regular file in the ext4 root, owned by root. */
export function ext4Write(disk: Disk, path: string, data: string | Uint8Array, mode = 0o644): void {
  const dir = dirname(path);
  const name = path.slice(dir.length + (dir === "/" ? 0 : 1));
  ext4Mkdir(disk, dir);
  const tmp = makeScratch("ext4");
  try {
    const f = join(tmp, "f");
    writeFileSync(f, data);
    if (ext4Exists(disk, path)) debugfs(disk, [`rm ${dq(path)}`], true);
    debugfs(disk, [
      `cd ${dq(dir)}`,
      `write ${dq(f)} ${dq(name)}`,
      `sif ${dq(path)} mode 0${(0o100000 | mode).toString(8)}`,
      `sif ${dq(path)} uid 0`,
      `sif ${dq(path)} gid 0`,
    ], true);
  } finally {
    rmrf(tmp);
  }
}

export function ext4Remove(disk: Disk, path: string): void {
  debugfs(disk, [`rm ${dq(path)}`], true);
}

/** Copy the ESP and root partitions out as separate images (debugging aid). */
export function splitDisk(disk: Disk, outDir: string): { esp: string; root: string } {
  mkdirSync(outDir, { recursive: true });
  const esp = join(outDir, "esp.img");
  const root = join(outDir, "root.img");
  for (const [file, off, size] of [[esp, disk.espOffset, disk.espSize], [root, disk.rootOffset, disk.rootSize]] as const) {
    run(["dd", `if=${disk.path}`, `of=${file}`, "bs=1M", `skip=${off / MiB}`, `count=${size / MiB}`, "conv=sparse", "status=none"]);
  }
  return { esp, root };
}

/** The ext4 feature list (`needs_recovery` in it means the journal was not flushed: an unclean stop). */
export function ext4Features(disk: Disk): string[] {
  const out = debugfs(disk, ["features"]).toString();
  const m = /Filesystem features:\s*(.*)/.exec(out);
  return (m?.[1] ?? "").trim().split(/\s+/).filter(Boolean);
}
