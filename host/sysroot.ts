// The host model: where a composefs host keeps its repository, deployment
// state, boot entries and runtime markers, which deployment is booted, and
// which boot loader is in charge (bootc-composefs.md §2, §1.3).
//
// Physical root (`--sysroot DIR`, default /sysroot; the TARGET for install):
//   composefs/                       the repository (0700)
//   composefs/bootc/, ostree/bootc -> ../composefs/bootc
//   state/deploy/<id>/{etc/, var -> ../../os/default/var, <id>.origin}
//   state/os/default/var/            the /var every deployment shares
//   state/cfsboot/bootloader         cfsboot: the boot loader chosen at install ("systemd\n", "grub\n")
//   state/cfsboot/lock               cfsboot: flock of every mutating command
//   state/finalize-failure.stamp     cfsboot: the last finalize error (finalize-and-boot-counting.md §4)
// Boot directories:
//   systemd-boot, grub-cc: the ESP (`--esp DIR`): loader/entries[.staged]/, loader/loader.conf,
//                          EFI/Linux/bootc_composefs-<id>/{vmlinuz,initrd}, EFI/Linux/bootc/*.efi
//   GRUB classic: the boot directory (`--boot-dir DIR`, default <root>/boot; on a booted
//                 host /boot when it is a mount of its own, else /sysroot/boot):
//                 loader/entries[.staged]/, bootc_composefs-<id>/, grub2/user.cfg[.staged]
// Runtime markers (tmpfs: they vanish at reboot):
//   booted host:     /run/composefs/staged-deployment (the file bootc uses, same JSON)
//   directory host:  <root>/run/composefs/staged-deployment (tests "reboot" by deleting <root>/run)
//
// A "directory host" is any --sysroot other than /sysroot: the boot loader is
// the one recorded at install (no EFI variables), markers live under the
// root, no systemd unit is started and nothing reboots. The booted deployment
// is the one the composefs karg of `--booted-cmdline` (default /proc/cmdline)
// names; on a booted host the source of the `/` mount (`composefs:<hex>`)
// must agree and wins (soft reboots).

import { accessSync, closeSync, constants as fsConstants, existsSync, openSync, readFileSync, statSync } from "node:fs";
import { resolve } from "node:path";
import type { Argv } from "yargs";

import type { Bootloader } from "../shared/bls.ts";
import { CfsError } from "../shared/errors.ts";
import { type ComposefsKarg, parseComposefsKarg, parseRootMountSource, splitCmdline, withoutLoaderArgs } from "../shared/kargs.ts";
import * as sys from "../shared/sys.ts";
import { writeFileAtomic } from "./atomic.ts";
import { isDirectory, mkdirp } from "./fsops.ts";
import { reexecInMountNamespace } from "./tools.ts";

export const SYSTEM_SYSROOT = "/sysroot";
export const ALGORITHM = "sha512" as const;

/** The options every host command takes. */
export interface HostArgs {
  sysroot?: string;
  "booted-cmdline"?: string;
  esp?: string;
  "boot-dir"?: string;
}

export function hostOptions<T>(y: Argv<T>): Argv<T & HostArgs> {
  return y
    .option("sysroot", { type: "string", describe: "physical root of the host (default /sysroot); any other directory is a host in a directory" })
    .option("booted-cmdline", { type: "string", describe: "kernel command line naming the booted deployment (default /proc/cmdline)" })
    .option("esp", { type: "string", describe: "EFI system partition directory (systemd-boot entries, kernels, UKIs)" })
    .option("boot-dir", { type: "string", describe: "boot directory of GRUB (default <sysroot>/boot)" }) as unknown as Argv<T & HostArgs>;
}

export type HostBootloader = Bootloader | "none";
const BOOTLOADERS: readonly string[] = ["systemd", "grub", "grub-cc", "none"];

const EFI_GUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/** A systemd-boot EFI variable as text (4 attribute bytes, UTF-16LE, NUL-terminated), or null. */
export function readLoaderEfiVar(name: string): string | null {
  try {
    const b = readFileSync(`/sys/firmware/efi/efivars/${name}-${EFI_GUID}`);
    if (b.length < 4) return null;
    return b.subarray(4).toString("utf16le").replace(/\0+$/, "");
  } catch {
    return null;
  }
}

/** The source of the `/` mount from /proc/self/mountinfo, or null. */
export function rootMountSource(): string | null {
  let text: string;
  try {
    text = readFileSync("/proc/self/mountinfo", "utf8");
  } catch {
    return null;
  }
  let source: string | null = null;
  for (const line of text.split("\n")) {
    const f = line.split(" ");
    if (f[4] !== "/") continue;
    const sep = f.indexOf("-");
    if (sep < 0) continue;
    source = f[sep + 2] ?? null; // the last mount on / wins
  }
  return source;
}

function isMountPoint(path: string): boolean {
  try {
    const a = statSync(path);
    const b = statSync(resolve(path, ".."));
    return a.dev !== b.dev;
  } catch {
    return false;
  }
}

/** `path` is a directory, or a symlink to one. */
function followsToDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

export interface BootedInfo {
  id: string;
  karg: ComposefsKarg;
  /** The kernel command line it was booted with (loader-added arguments removed). */
  cmdline: string[];
}

export class Host {
  /** Physical root (absolute). */
  readonly root: string;
  /** --sysroot is not /sysroot: the host lives in a directory. */
  readonly directory: boolean;
  readonly repoPath: string;
  readonly statePath: string;
  readonly deployPath: string;
  readonly varPath: string;
  readonly cfsbootPath: string;
  readonly runDir: string;
  readonly stagedMarkerPath: string;
  readonly failureStampPath: string;
  readonly bootDir: string;
  readonly bootIsSeparateMount: boolean;
  private readonly espArg: string | undefined;
  private readonly cmdlineFile: string;
  private bootloaderCache: HostBootloader | null = null;
  private bootedCache: BootedInfo | null | undefined = undefined;

  /** Constructed for install (the target need not hold a host yet). */
  private readonly installing: boolean;

  constructor(args: HostArgs, opts: { target?: string } = {}) {
    for (const k of ["sysroot", "booted-cmdline", "esp", "boot-dir"] as const) {
      if (args[k] === "") throw new CfsError(`--${k}`, "empty path");
    }
    // An explicit --sysroot must exist: never create a host's state in a mistyped directory.
    if (opts.target === undefined && args.sysroot !== undefined && !followsToDirectory(args.sysroot)) {
      throw new CfsError(`--sysroot ${args.sysroot}`, existsSync(args.sysroot) ? "not a directory" : "no such directory");
    }
    this.installing = opts.target !== undefined;
    const root = resolve(opts.target ?? args.sysroot ?? SYSTEM_SYSROOT);
    this.root = root;
    this.directory = root !== SYSTEM_SYSROOT;
    this.repoPath = `${root}/composefs`;
    this.statePath = `${root}/state`;
    this.deployPath = `${root}/state/deploy`;
    this.varPath = `${root}/state/os/default/var`;
    this.cfsbootPath = `${root}/state/cfsboot`;
    this.runDir = this.directory ? `${root}/run/composefs` : "/run/composefs";
    this.stagedMarkerPath = `${this.runDir}/staged-deployment`;
    this.failureStampPath = `${root}/state/finalize-failure.stamp`;
    this.espArg = args.esp;
    this.cmdlineFile = args["booted-cmdline"] ?? "/proc/cmdline";
    if (args["boot-dir"] !== undefined) {
      this.bootDir = resolve(args["boot-dir"]);
      this.bootIsSeparateMount = this.bootDir !== `${root}/boot`;
    } else if (!this.directory && opts.target === undefined && isMountPoint("/boot")) {
      this.bootDir = "/boot";
      this.bootIsSeparateMount = true;
    } else {
      this.bootDir = `${root}/boot`;
      this.bootIsSeparateMount = !this.directory && isMountPoint(this.bootDir);
    }
  }

  /** Booted for real (not a directory host, and the command line is the kernel's). */
  get reallyBooted(): boolean {
    return !this.directory && this.cmdlineFile === "/proc/cmdline";
  }

  // ---- boot loader -------------------------------------------------------------

  private get bootloaderFile(): string {
    return `${this.cfsbootPath}/bootloader`;
  }

  /** Record the boot loader (install). */
  recordBootloader(b: HostBootloader): void {
    mkdirp(this.cfsbootPath, 0o755);
    writeFileAtomic(this.bootloaderFile, `${b}\n`);
    this.bootloaderCache = b;
  }

  private recordedBootloader(): HostBootloader | null {
    let text: string;
    try {
      text = readFileSync(this.bootloaderFile, "utf8").trim();
    } catch {
      return null;
    }
    if (!BOOTLOADERS.includes(text)) throw new CfsError(this.bootloaderFile, `unknown boot loader "${text}" (expected systemd, grub, grub-cc or none)`);
    return text as HostBootloader;
  }

  /**
   * The boot loader: on a booted host from the `LoaderInfo` EFI variable
   * (systemd-boot → systemd, "grub cc" → grub-cc), else the one recorded at
   * install, else grub (bootc's rule); on a directory host the recorded one.
   */
  get bootloader(): HostBootloader {
    if (this.bootloaderCache !== null) return this.bootloaderCache;
    let b: HostBootloader | null = null;
    if (!this.directory) {
      const info = readLoaderEfiVar("LoaderInfo");
      if (info !== null) b = info.includes("systemd-boot") ? "systemd" : info.toLowerCase().includes("grub cc") ? "grub-cc" : "grub";
    }
    b ??= this.recordedBootloader();
    if (b === null) {
      if (this.directory) {
        throw new CfsError(this.bootloaderFile, "no boot loader recorded (this directory was not installed by `cfsboot install`)");
      }
      b = "grub";
    }
    this.bootloaderCache = b;
    return b;
  }

  /** The ESP directory (systemd-boot/grub-cc entries and kernels, every UKI). */
  get esp(): string {
    const candidates = this.espArg !== undefined ? [resolve(this.espArg)] : this.directory ? [`${this.root}/boot/efi`, `${this.root}/efi`] : ["/efi", "/boot/efi", "/boot"];
    for (const c of candidates) {
      if (this.espArg !== undefined || existsSync(`${c}/EFI`) || existsSync(`${c}/loader`)) {
        if (!isDirectory(c)) throw new CfsError(this.espArg !== undefined ? `--esp ${this.espArg}` : c, "missing ESP: not a directory");
        return c;
      }
    }
    throw new CfsError("ESP", `missing ESP: none found (looked at ${candidates.join(", ")}); give it with --esp DIR`);
  }

  /** True when an ESP can be found (without throwing). */
  hasEsp(): boolean {
    try {
      void this.esp;
      return true;
    } catch {
      return false;
    }
  }

  /** The directory holding `loader/` (entries) for this host's boot loader. */
  get loaderRoot(): string {
    const b = this.bootloader;
    if (b === "none") throw new CfsError(this.root, "Bootloader was None: composefs deployments need a boot loader");
    return b === "grub" ? this.bootDir : this.esp;
  }

  get entriesDir(): string {
    return `${this.loaderRoot}/loader/entries`;
  }

  get stagedEntriesDir(): string {
    return `${this.loaderRoot}/loader/entries.staged`;
  }

  /** Where Type 1 kernel directories `bootc_composefs-<x>/` live. */
  get kernelBinDir(): string {
    return this.bootloader === "grub" ? this.bootDir : `${this.esp}/EFI/Linux`;
  }

  /** Where UKIs `bootc_composefs-<id>.efi` live. */
  get ukiDir(): string {
    return `${this.esp}/EFI/Linux/bootc`;
  }

  get grubDir(): string {
    return `${this.bootDir}/grub2`;
  }

  // ---- the booted deployment -----------------------------------------------------

  /** The kernel command line of the booted system, split (loader-added arguments removed), or null when unreadable. */
  bootedCmdline(): string[] | null {
    let text: string;
    try {
      text = readFileSync(this.cmdlineFile, "utf8");
    } catch (e) {
      if (this.cmdlineFile === "/proc/cmdline") return null;
      throw new CfsError(`--booted-cmdline ${this.cmdlineFile}`, `cannot read: ${sys.fromNodeError(this.cmdlineFile, "open", e).what}`);
    }
    return withoutLoaderArgs(splitCmdline(text));
  }

  /**
   * The booted deployment, or null when the system is not booted into one.
   * A malformed composefs karg is an error naming the command line.
   */
  booted(): BootedInfo | null {
    if (this.bootedCache !== undefined) return this.bootedCache;
    const cmdline = this.bootedCmdline();
    let karg: ComposefsKarg | null = null;
    if (cmdline !== null) {
      try {
        karg = parseComposefsKarg(cmdline, ALGORITHM);
      } catch (e) {
        if (e instanceof CfsError) throw e.within(this.cmdlineFile);
        throw e;
      }
    }
    let info: BootedInfo | null = null;
    if (karg !== null && cmdline !== null) {
      let id = karg.digest;
      if (this.reallyBooted) {
        const src = rootMountSource();
        if (src === null) throw new CfsError("/proc/self/mountinfo", "cannot find the / mount");
        id = parseRootMountSource(src, ALGORITHM).digest;
      }
      info = { id, karg, cmdline };
    }
    this.bootedCache = info;
    return info;
  }

  /** The live /etc of a deployment: /etc when really booted into it, else its state directory's etc. */
  liveEtc(id: string): string {
    return this.reallyBooted && this.booted()?.id === id ? "/etc" : `${this.deployPath}/${id}/etc`;
  }

  stateDir(id: string): string {
    return `${this.deployPath}/${id}`;
  }

  originPath(id: string): string {
    return `${this.deployPath}/${id}/${id}.origin`;
  }

  // ---- locking --------------------------------------------------------------------

  /**
   * Take the host's exclusive lock (every mutating command; status never
   * does). Tries first, then says "Waiting for sysroot lock..." and waits,
   * repeating the message every 3 seconds as ostree does.
   */
  async lock(): Promise<SysrootLock> {
    const path = `${this.cfsbootPath}/lock`;
    if (!this.installing && !followsToDirectory(this.statePath)) {
      throw new CfsError(this.root, "not a composefs host (no state/ directory; install one with `cfsboot install`)");
    }
    let fd: number;
    try {
      mkdirp(this.cfsbootPath, 0o755);
      fd = openSync(path, "a", 0o600);
    } catch (e) {
      // A read-only physical root (upgrade --check on a booted host): lock the file if it exists, else nobody can write.
      if (!sys.isErrno(e, "EROFS") && (e as NodeJS.ErrnoException).code !== "EROFS") throw sys.fromNodeError(path, "open", e);
      try {
        fd = openSync(path, "r");
      } catch {
        return new SysrootLock(-1);
      }
    }
    for (let first = true; ; first = false) {
      try {
        sys.flock(fd, sys.LOCK_EX | sys.LOCK_NB, path);
        break;
      } catch (e) {
        if (!sys.isErrno(e, "EAGAIN")) {
          closeSync(fd);
          throw e;
        }
      }
      if (first) process.stderr.write("Waiting for sysroot lock...\n");
      const until = Date.now() + 3000;
      while (Date.now() < until) {
        await new Promise((r) => setTimeout(r, 50));
        try {
          sys.flock(fd, sys.LOCK_EX | sys.LOCK_NB, path);
          return new SysrootLock(fd);
        } catch (e) {
          if (!sys.isErrno(e, "EAGAIN")) {
            closeSync(fd);
            throw e;
          }
        }
      }
      process.stderr.write("Waiting for sysroot lock...\n");
    }
    return new SysrootLock(fd);
  }
}

export class SysrootLock {
  constructor(private fd: number) {}
  release(): void {
    if (this.fd < 0) return;
    try {
      closeSync(this.fd);
    } catch {}
    this.fd = -1;
  }
}

/** The physical root is mounted read-only (EROFS on a write test). */
export function sysrootReadOnly(host: Host): boolean {
  try {
    accessSync(host.root, fsConstants.W_OK);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EROFS";
  }
}

/**
 * On a booted host /sysroot is mounted read-only: re-run this command in a
 * private mount namespace and remount it read-write there (bootc does the
 * same). Returns the exit status when this process is done (the child did
 * the work), or null when the caller should go on (directory hosts, an
 * already writable root, or the re-executed child).
 */
export function writableSysroot(host: Host): number | null {
  if (host.directory || !sysrootReadOnly(host)) return null;
  const status = reexecInMountNamespace();
  if (status !== null) return status;
  sys.mount(null, host.root, null, sys.MS_REMOUNT | sys.MS_BIND, null);
  return null;
}

/** Run `fn` holding the host lock. */
export async function withLock<T>(host: Host, fn: () => Promise<T>): Promise<T> {
  const l = await host.lock();
  try {
    return await fn();
  } finally {
    l.release();
  }
}
