// Plain Debian guest disks: the cached rootfs unpacked, per-disk files laid
// over it (fstab, the baked test unit, scenario files), an ESP with
// systemd-boot (copied EFI binary, no bootctl), loader.conf and one BLS Type 1
// entry with boot counting, all written without mounts. 5–10 s per disk.

import { chmodSync, copyFileSync, mkdirSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { type Disk, type DiskIds, type EspFile, DEFAULT_IDS, buildDisk } from "./disk.ts";
import type { Initrd } from "./initrd.ts";
import { type ReportOptions, bakedReportFiles } from "./report.ts";
import { type Rootfs, extractRootfs } from "./rootfs.ts";
import { cacheDir, elapsed, makeScratch, note, rmrf } from "./util.ts";

export interface RootFile {
  /** Absolute path in the guest root. */
  path: string;
  data?: string | Uint8Array;
  /** Host file to copy instead of `data`. */
  from?: string;
  symlink?: string;
  mode?: number;
}

export interface BlsEntry {
  /** Entry id: the file is `loader/entries/<id>[+<tries>].conf`. */
  id: string;
  /** Boot-counting tries (`+N`); 0 = no counter. Default 3. */
  tries?: number;
  title?: string;
  version?: string;
  sortKey?: string;
  /** ESP paths of kernel and initrd (default /cfs/vmlinuz, /cfs/initrd.img). */
  linux?: string;
  initrd?: string;
  /** Kernel command line (default: the disk's cmdline). */
  options?: string;
}

export interface GuestDiskOptions {
  rootfs: Rootfs;
  initrd: Initrd;
  /** Output disk image. */
  path: string;
  /** Boot entry; `null` writes no entry (direct kernel boot only). */
  entry?: Partial<BlsEntry> | null;
  /** Extra kernel arguments appended to the default command line. */
  kargs?: string[];
  /** Bake the test unit into the image (default true); false when it is injected with SMBIOS credentials. */
  report?: ReportOptions | false;
  /** Files laid over the rootfs before the ext4 is made. */
  files?: RootFile[];
  /** Extra files in the ESP. */
  esp?: EspFile[];
  /** loader.conf text (default `timeout 0`, `default <id>*`, `editor no`). */
  loaderConf?: string;
  rootSizeMiB?: number;
  ids?: Partial<DiskIds>;
}

export interface GuestDisk extends Disk {
  /** The kernel command line of the entry (also usable for direct kernel boot). */
  cmdline: string;
  /** ESP path of the entry as written (`/loader/entries/<id>+3.conf`). */
  entryPath?: string;
  entryId?: string;
  /** Host paths of the kernel and initrd that went into the ESP (for direct boot). */
  kernel: string;
  initrdPath: string;
  buildSeconds: number;
}

export function defaultCmdline(ids: DiskIds, extra: string[] = []): string {
  return [`root=UUID=${ids.rootFsUuid}`, "rw", "console=ttyS0", "systemd.firstboot=off", "panic=-1", ...extra].join(" ");
}

export function renderBlsEntry(e: BlsEntry & { options: string }): string {
  const lines = [`title ${e.title ?? `cfsboot test guest (${e.id})`}`];
  if (e.version) lines.push(`version ${e.version}`);
  if (e.sortKey) lines.push(`sort-key ${e.sortKey}`);
  lines.push(`linux ${e.linux ?? "/cfs/vmlinuz"}`, `initrd ${e.initrd ?? "/cfs/initrd.img"}`, `options ${e.options}`);
  return lines.join("\n") + "\n";
}

/** Lay files over a guest tree (parents created; existing files replaced). */
export function applyRootFiles(root: string, files: RootFile[]): void {
  for (const f of files) {
    if (!f.path.startsWith("/")) throw new Error(`guest path must be absolute: ${f.path}`);
    const dest = join(root, f.path);
    mkdirSync(dirname(dest), { recursive: true });
    rmSync(dest, { force: true, recursive: true });
    if (f.symlink !== undefined) {
      symlinkSync(f.symlink, dest);
      continue;
    }
    if (f.from !== undefined) copyFileSync(f.from, dest);
    else writeFileSync(dest, f.data ?? "");
    chmodSync(dest, f.mode ?? (f.from !== undefined ? statSync(f.from).mode & 0o7777 : 0o644));
  }
}

export function buildGuestDisk(o: GuestDiskOptions): GuestDisk {
  const t0 = performance.now();
  const ids: DiskIds = { ...DEFAULT_IDS, ...o.ids };
  const cmdline = defaultCmdline(ids, o.kargs);
  const work = makeScratch(`disk-${o.rootfs.spec.suite}`);
  try {
    const root = join(work, "root");
    extractRootfs(o.rootfs, root);
    const files: RootFile[] = [
      {
        path: "/etc/fstab",
        data: `# cfsboot VM harness\nUUID=${ids.rootFsUuid} / ext4 defaults 0 1\nPARTUUID=${ids.espPartUuid} /efi vfat umask=0077 0 2\n`,
      },
    ];
    if (o.report !== false) files.push(...bakedReportFiles(o.report ?? {}));
    files.push(...(o.files ?? []));
    applyRootFiles(root, files);
    for (const d of readdirSync(join(root, "tmp"))) rmrf(join(root, "tmp", d));

    const esp: EspFile[] = [
      { path: "/EFI/BOOT/BOOTX64.EFI", from: o.rootfs.sdboot },
      { path: "/EFI/systemd/systemd-bootx64.efi", from: o.rootfs.sdboot },
      { path: "/cfs/vmlinuz", from: o.rootfs.vmlinuz },
      { path: "/cfs/initrd.img", from: o.initrd.path },
    ];
    let entryPath: string | undefined;
    let entryId: string | undefined;
    if (o.entry !== null) {
      const e: BlsEntry & { options: string } = {
        id: "cfs-test", version: o.rootfs.kver, sortKey: "cfs", options: cmdline, ...o.entry,
      } as BlsEntry & { options: string };
      const tries = e.tries ?? 3;
      entryId = e.id;
      entryPath = `/loader/entries/${e.id}${tries > 0 ? `+${tries}` : ""}.conf`;
      esp.push({ path: entryPath, data: renderBlsEntry(e) });
      esp.push({ path: "/loader/loader.conf", data: o.loaderConf ?? `timeout 0\ndefault ${e.id}*\neditor no\n` });
    }
    esp.push(...(o.esp ?? []));
    const disk = buildDisk({ path: o.path, rootDir: root, esp, ids, ...(o.rootSizeMiB ? { rootSizeMiB: o.rootSizeMiB } : {}) });
    const buildSeconds = Math.round((performance.now() - t0) / 100) / 10;
    note(`disk ${o.path} (${o.rootfs.spec.suite}) built in ${elapsed(t0)}`);
    const g: GuestDisk = { ...disk, cmdline, kernel: o.rootfs.vmlinuz, initrdPath: o.initrd.path, buildSeconds };
    if (entryPath) g.entryPath = entryPath;
    if (entryId) g.entryId = entryId;
    return g;
  } finally {
    rmrf(work);
  }
}

/**
 * A fresh directory for one test's VM runs (logs, disks, VARS) under the
 * cache dir. The 20 newest run directories are kept; disk images and VARS
 * files only in the 3 newest and in any younger than an hour (a disk is
 * ~0.7 GB allocated).
 */
export function newRunDir(name: string): string {
  const base = process.env.CFSBOOT_VM_RUNS ?? join(cacheDir(), "runs");
  mkdirSync(base, { recursive: true });
  const old = readdirSync(base).sort();
  old.slice(0, Math.max(0, old.length - 19)).forEach((d) => rmrf(join(base, d)));
  for (const d of old.slice(Math.max(0, old.length - 19), Math.max(0, old.length - 2))) {
    // never touch a run that may still be going (another test process)
    if (Date.now() - statSync(join(base, d)).mtimeMs < 3_600_000) continue;
    for (const f of readdirSync(join(base, d))) if (/\.(img|qcow2|fd)$/.test(f)) rmrf(join(base, d, f));
  }
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const dir = join(base, `${stamp}-${name}`);
  mkdirSync(dir, { recursive: true });
  return dir;
}
