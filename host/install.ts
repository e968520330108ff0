// `install to-filesystem`: make TARGET (a mounted root filesystem, or any
// directory for a host in a directory) a composefs host booting IMGREF
// (bootc-composefs.md §5.1). Also the library entry point `install to-disk`
// builds on: `installToFilesystem(opts)`.
//
// Order (each step durable before the next; the boot entry is written last,
// so an interrupted install leaves no entry and can simply be run again):
//   1. checks that need no download: boot loader, ESP, fs-verity support of
//      the target (bootc#1805: before pulling), no existing installation;
//   2. manifest + config fetched, repository initialised (sha512; insecure
//      iff verity is not required; V1 or dual), composefs/bootc and the
//      ostree/bootc compatibility link;
//   3. pull, tagged `localhost/bootc-<manifest digest>`; boot image → id;
//   4. boot loader recorded (state/cfsboot/bootloader), state directory
//      (etc copy, var link, origin), the image's /var seeded into
//      state/os/default/var;
//   5. kernel directory or UKI; systemd-boot's EFI binary copied into the
//      ESP (bootctl refuses plain directories); loader.conf `timeout 5`;
//   6. the entry set (`bootc_<osid>-<version>-1[+3].conf`), atomically.

import { existsSync, readFileSync, symlinkSync } from "node:fs";

import { entryFileName, formatEfiUuidCfg, grubMenuEntryForUki, sortKeyFor } from "../shared/bls.ts";
import { bootLabel } from "../shared/osrelease.ts";
import { CfsError } from "../shared/errors.ts";
import { addArg, applyKargsDiff, findParam, joinCmdline, kargsDiff, parseParam, splitCmdline } from "../shared/kargs.ts";
import { writeFileAtomic } from "./atomic.ts";
import {
  BOOT_TRIES,
  type PreparedImage,
  composefsKargFor,
  countsBoots,
  fetchRemote,
  filesystemHasVerity,
  makeEntry,
  originFor,
  osidOf,
  pullAndPrepare,
  seedVar,
  treeFile,
  writeKernelDir,
  writeStateDir,
  writeUkiFile,
} from "./deploy.ts";
import { scanBlsDir, scanGrubCfg, writeEntrySet, writeGrubCfg } from "./entries.ts";
import { exists, isDirectory, mkdirp, removeTree } from "./fsops.ts";
import { onInterrupt } from "./interrupt.ts";
import type { SourceOptions } from "./pull.ts";
import { Repository } from "./repo.ts";
import { Host, withLock } from "./sysroot.ts";
import { ukiVerityWarning } from "./uki.ts";

export interface InstallOptions {
  /** The physical root to install to (an existing directory). */
  target: string;
  /** Image reference with transport (`docker://…`, `oci:…`, …). */
  sourceImgref: string;
  /** Default systemd. */
  bootloader?: "systemd" | "grub" | "none";
  /** Extra kernel arguments (`--karg`). */
  kargs?: string[];
  /** fs-verity not required (`--composefs-insecure`, `--allow-missing-verity`). */
  insecure?: boolean;
  erofs?: "v1" | "dual";
  esp?: string;
  bootDir?: string;
  /** `root=` value; "" = omit root= (discoverable partitions); undefined = detect (UUID of the target's filesystem, if it is a mount). */
  rootMountSpec?: string;
  source?: SourceOptions;
  /** Print progress lines (stderr). */
  log?: (line: string) => void;
}

export interface InstallResult {
  id: string;
  entryFile: string;
  manifestDigest: string;
  bootType: "bls" | "uki";
}

/** The systemd-boot EFI binary for this architecture: from the image, else from this machine. */
function systemdBootBinary(p: PreparedImage): { name: string; bytes: Uint8Array } {
  const arch = process.arch === "arm64" ? "aa64" : process.arch === "ia32" ? "ia32" : "x64";
  const name = `systemd-boot${arch}.efi`;
  const rel = `usr/lib/systemd/boot/efi/${name}`;
  const fromImage = treeFile(p.tree, rel, p.content, p.imgref);
  if (fromImage !== null) return { name, bytes: fromImage };
  const local = `/${rel}`;
  if (existsSync(local)) return { name, bytes: new Uint8Array(readFileSync(local)) };
  throw new CfsError(local, "systemd-boot EFI binary not found in the image or on this machine (Debian package systemd-boot-efi)");
}

/** Copy systemd-boot into the ESP (EFI/systemd and the removable-media fallback path). */
export function installSystemdBoot(esp: string, bin: { name: string; bytes: Uint8Array }): void {
  const fallback = bin.name.replace(/^systemd-boot/, "BOOT").toUpperCase();
  mkdirp(`${esp}/EFI/systemd`, 0o755);
  mkdirp(`${esp}/EFI/BOOT`, 0o755);
  writeFileAtomic(`${esp}/EFI/systemd/${bin.name}`, bin.bytes);
  writeFileAtomic(`${esp}/EFI/BOOT/${fallback}`, bin.bytes);
  mkdirp(`${esp}/loader`, 0o755);
  if (!exists(`${esp}/loader/loader.conf`)) writeFileAtomic(`${esp}/loader/loader.conf`, "timeout 5");
}

/** The filesystem UUID of the ESP when it is a mount point (null for a plain directory). */
function espUuid(esp: string): string | null {
  try {
    const r = Bun.spawnSync(["findmnt", "-n", "-o", "UUID", "--mountpoint", esp]);
    const uuid = r.stdout.toString().trim();
    return r.exitCode === 0 && uuid !== "" ? uuid : null;
  } catch {
    return null;
  }
}

/** `UUID=<uuid>` of the filesystem mounted at `target`, or "" when it is not a mount point with a UUID. */
function detectRootSpec(target: string): string {
  try {
    const r = Bun.spawnSync(["findmnt", "-n", "-o", "UUID", "--mountpoint", target]);
    const uuid = r.stdout.toString().trim();
    return r.exitCode === 0 && uuid !== "" ? `UUID=${uuid}` : "";
  } catch {
    return "";
  }
}

/** The command line of a first deployment: root kargs, rw, --karg…, the composefs karg, kargs.d. */
export function installCmdline(o: { rootSpec: string; kargs: readonly string[]; composefsKarg: string; kargsD: readonly string[] }): string[] {
  let args: string[] = [];
  if (o.rootSpec !== "") args.push(`root=${o.rootSpec}`);
  args.push("rw");
  for (const k of o.kargs) {
    for (const t of splitCmdline(k)) {
      if (t.startsWith("composefs=") || t.startsWith("composefs.digest=")) {
        throw new CfsError(`--karg ${t}`, "conflicts with the composefs karg cfsboot writes");
      }
      const p = parseParam(t);
      const have = findParam(args, p.key);
      if (p.key === "root" && have !== null && have.value !== p.value) throw new CfsError(`--karg ${t}`, `conflicts with ${have.raw} (use --root-mount-spec)`);
      args = addArg(args, t);
    }
  }
  args.push(o.composefsKarg);
  return applyKargsDiff(args, kargsDiff([], o.kargsD));
}

export async function installToFilesystem(o: InstallOptions): Promise<InstallResult> {
  const log = o.log ?? (() => {});
  const bootloader = o.bootloader ?? "systemd";
  if (bootloader === "none") throw new CfsError("--bootloader none", "Bootloader was None: composefs deployments need a boot loader");
  if (!isDirectory(o.target)) throw new CfsError(o.target, "target is not a directory");
  const host = new Host({ ...(o.esp !== undefined ? { esp: o.esp } : {}), ...(o.bootDir !== undefined ? { "boot-dir": o.bootDir } : {}) }, { target: o.target });
  // Checks that need neither a download nor a write.
  if (bootloader === "systemd") void host.esp; // missing ESP → error now
  // Boot entries make an installation; state left by an interrupted install does not.
  const installed = (): boolean =>
    scanBlsDir(bootloader === "grub" ? `${host.bootDir}/loader/entries` : `${host.esp}/loader/entries`).entries.length > 0 ||
    (bootloader === "grub" && scanGrubCfg(`${host.grubDir}/user.cfg`).entries.length > 0);
  if (installed()) throw new CfsError(o.target, "already holds a composefs installation (boot entries exist)");
  const rootSpec = o.rootMountSpec ?? detectRootSpec(o.target);
  installCmdline({ rootSpec, kargs: o.kargs ?? [], composefsKarg: "composefs=?" + "0".repeat(128), kargsD: [] }); // conflicting --karg → error now
  const insecure = o.insecure ?? false;
  if (!insecure && !filesystemHasVerity(o.target)) {
    throw new CfsError(o.target, "Specified filesystem does not support fs-verity (use --composefs-insecure to install without it)");
  }
  const stateExisted = exists(host.statePath);
  return withLock(host, () => undoOnFailure(host, stateExisted, async () => {
    if (installed()) throw new CfsError(o.target, "already holds a composefs installation (boot entries exist)");
    const source = o.source ?? {};
    log(`Fetching ${o.sourceImgref}`);
    const remote = await fetchRemote(o.sourceImgref, null, source);
    const init = Repository.init(host.repoPath, { erofs: o.erofs ?? "v1", insecure, requireVerity: !insecure });
    const repo = init.repo;
    try {
      mkdirp(`${host.repoPath}/bootc`, 0o755);
      mkdirp(`${host.root}/ostree`, 0o755);
      if (!exists(`${host.root}/ostree/bootc`)) symlinkSync("../composefs/bootc", `${host.root}/ostree/bootc`);
      log(`Pulling ${o.sourceImgref}`);
      const p = await pullAndPrepare(repo, o.sourceImgref, remote, source);
      if (p.bootType === "uki" && (o.kargs ?? []).length > 0) throw new CfsError("--karg", "Cannot use externally specified kernel arguments with UKI");
      if (p.bootType === "uki") {
        const w = ukiVerityWarning(p.uki!.karg, insecure, `${p.imgref}: ${p.uki!.name}`);
        if (w !== null) process.stderr.write(`cfsboot: warning: ${w}\n`);
      }
      const options = p.bootType === "uki" ? "" : joinCmdline(installCmdline({ rootSpec, kargs: o.kargs ?? [], composefsKarg: composefsKargFor(p, insecure), kargsD: p.kargsD }));
      host.recordBootloader(bootloader);
      const origin = originFor(p);
      log(`Deploying ${p.id}`);
      writeStateDir(host, p, origin);
      seedVar(host, p);
      if (bootloader === "systemd") installSystemdBoot(host.esp, systemdBootBinary(p));
      let artifact = p.id;
      if (p.bootType === "uki") writeUkiFile(host, p.id, p.uki!.bytes);
      else artifact = writeKernelDir(host, p.id, p.kernel!, false);
      if (p.bootType === "uki" && bootloader === "grub") {
        // GRUB classic chainloads UKIs from grub2/user.cfg (bootc-composefs.md §4.3).
        const uuid = espUuid(host.esp);
        if (uuid !== null) writeFileAtomic(`${host.grubDir}/efiuuid.cfg`, formatEfiUuidCfg(uuid));
        writeGrubCfg(`${host.grubDir}/user.cfg`, [grubMenuEntryForUki(bootLabel(p.osRelease) ?? p.id, p.id)]);
        return { id: p.id, entryFile: `${host.grubDir}/user.cfg`, manifestDigest: p.manifestDigest, bootType: p.bootType };
      }
      const entry = makeEntry(host, p, artifact, options);
      const osid = osidOf(p);
      entry.sortKey = sortKeyFor(osid, "primary");
      const fileName = entryFileName(osid, entry.version!, "primary", countsBoots(host, entry) ? `+${BOOT_TRIES}` : "");
      writeEntrySet(host.entriesDir, [{ fileName, entry }]);
      return { id: p.id, entryFile: `${host.entriesDir}/${fileName}`, manifestDigest: p.manifestDigest, bootType: p.bootType };
    } finally {
      repo.close();
    }
  }));
}

/**
 * A failed (or interrupted) install leaves the target as it found it: the
 * directories it created there (composefs/, ostree/, and state/ when the
 * lock created it) are removed. Runs under the host lock, so nothing else
 * wrote into them.
 */
async function undoOnFailure<T>(host: Host, stateExisted: boolean, fn: () => Promise<T>): Promise<T> {
  const created = ["composefs", "ostree"].map((d) => `${host.root}/${d}`).filter((d) => !exists(d));
  if (!stateExisted) created.push(host.statePath);
  const undo = (): void => {
    for (const d of created) removeTree(d);
  };
  const unregister = onInterrupt(undo);
  try {
    return await fn();
  } catch (e) {
    undo();
    throw e;
  } finally {
    unregister();
  }
}
