// Sealed UKIs from a container root (bootc `container ukify`,
// bootc-composefs.md §10): the kernel and initramfs of the rootfs, its
// os-release, and a command line that names the rootfs's own boot image:
//
//   kargs.d of the rootfs  +  composefs karg(s)  +  --karg …
//
// Format 1 (default): `composefs.digest=[?]v1-sha512-12:<V1 id>`, followed —
// as current bootc does — by `composefs=[?]<V2 id>` so hosts whose tools only
// know `composefs=` (V2 repositories, bootc < 1.16) still find an image they
// can generate; the composefs-rs rules (shared/kargs.ts) prefer the
// `composefs.digest=` form, so cfsboot and the initramfs use the V1 image.
// Format 2: `composefs=[?]<V2 id>` only.
//
// The UKI belongs in /boot/EFI/Linux/ of the final image; the boot transform
// empties /boot, so putting it there does not change the digest.

import { closeSync, readFileSync, readdirSync, statSync } from "node:fs";
import { basename, join, resolve } from "node:path";

import { CfsError, describeError } from "../shared/errors.ts";
import { joinCmdline, kargsFromFiles, KARGS_D, rustArch, splitCmdline } from "../shared/kargs.ts";
import * as sys from "../shared/sys.ts";
import type { XattrFiltering } from "../shared/transform.ts";
import { writeDumpfile } from "../shared/dumpfile.ts";
import { writeFileAtomic } from "./atomic.ts";
import { bootImageId, composefsKargFor, directoryBootTree, isDirectory, refuseActiveRoot, type ImageFormat } from "./composefs-digest.ts";
import { buildUki, splitUkifyOutput, type UkiBuilder } from "./uki-build.ts";

/** Read a file of a root directory with symlinks resolved inside it (RESOLVE_IN_ROOT); null when absent. */
export function readInRoot(rootfs: string, rel: string): Uint8Array | null {
  let dirfd: number;
  try {
    dirfd = sys.open(rootfs, sys.O_RDONLY | sys.O_DIRECTORY);
  } catch (e) {
    throw new CfsError(rootfs, `cannot open: ${describeError(e)}`);
  }
  try {
    let fd: number;
    try {
      fd = sys.openat2(dirfd, rel, sys.O_RDONLY, { resolve: sys.RESOLVE_IN_ROOT | sys.RESOLVE_NO_MAGICLINKS });
    } catch (e) {
      if (sys.isErrno(e, "ENOENT", "ENOTDIR")) return null;
      throw new CfsError(join(rootfs, rel), `cannot open: ${describeError(e)}`);
    }
    try {
      return new Uint8Array(readFileSync(fd));
    } catch (e) {
      throw sys.fromNodeError(join(rootfs, rel), "read", e);
    } finally {
      closeSync(fd);
    }
  } finally {
    sys.close(dirfd);
  }
}

function utf8(bytes: Uint8Array, input: string): string {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new CfsError(input, "not valid UTF-8");
  }
}

/** The kernel arguments a root directory ships in usr/lib/bootc/kargs.d (for this machine's architecture). */
export function rootfsKargs(rootfs: string, arch = rustArch(process.arch)): string[] {
  const dir = join(rootfs, KARGS_D);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw sys.fromNodeError(dir, "readdir", e);
  }
  const files: { name: string; text: string }[] = [];
  for (const name of names) {
    if (!name.endsWith(".toml")) continue;
    const bytes = readInRoot(rootfs, `${KARGS_D}/${name}`);
    if (bytes === null) continue;
    files.push({ name: `${KARGS_D}/${name}`, text: utf8(bytes, join(dir, name)) });
  }
  return kargsFromFiles(files, arch);
}

export interface RootfsKernel {
  kver: string;
  vmlinuz: string;
  initramfs: string;
}

function isRegular(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

function efiFiles(dir: string): string[] {
  try {
    return readdirSync(dir).filter((n) => n.endsWith(".efi") && isRegular(join(dir, n))).sort();
  } catch {
    return [];
  }
}

/**
 * The kernel to seal: `--kernel-dir /parent/<kver>` (vmlinuz + initramfs.img
 * there, kver = the directory's name), else the one `usr/lib/modules/<kver>/`
 * of the rootfs holding a vmlinuz. A rootfs that already has a UKI is refused.
 */
export function findRootfsKernel(rootfs: string, kernelDir?: string): RootfsKernel {
  const uki = efiFiles(join(rootfs, "boot/EFI/Linux"))[0];
  if (uki !== undefined) throw new CfsError(rootfs, `Cannot build UKI: rootfs already contains a boot image at boot/EFI/Linux/${uki}`);
  let dir: string;
  if (kernelDir !== undefined) {
    dir = resolve(kernelDir);
  } else {
    const modules = join(rootfs, "usr/lib/modules");
    let names: string[] = [];
    try {
      names = readdirSync(modules).sort();
    } catch {}
    for (const k of names) {
      const e = efiFiles(join(modules, k))[0];
      if (e !== undefined) throw new CfsError(rootfs, `Cannot build UKI: rootfs already contains a boot image at usr/lib/modules/${k}/${e}`);
    }
    const kvers = names.filter((k) => isRegular(join(modules, k, "vmlinuz")));
    if (kvers.length === 0) throw new CfsError(rootfs, "No kernel found (no usr/lib/modules/<kver>/vmlinuz; use --kernel-dir)");
    if (kvers.length > 1) throw new CfsError(rootfs, `several kernels in usr/lib/modules (${kvers.join(", ")}); choose one with --kernel-dir`);
    dir = join(modules, kvers[0]!);
  }
  const vmlinuz = join(dir, "vmlinuz");
  const initramfs = join(dir, "initramfs.img");
  if (!isRegular(vmlinuz)) throw new CfsError(vmlinuz, "Kernel not found");
  if (!isRegular(initramfs)) throw new CfsError(initramfs, "Initramfs not found");
  return { kver: basename(dir), vmlinuz, initramfs };
}

export interface SealedUkiOptions {
  rootfs: string;
  format?: ImageFormat;
  /** `?` in the karg: fs-verity not required (development). */
  insecure?: boolean;
  /** Extra kernel arguments, after the composefs karg (bootc's deprecated --karg). */
  kargs?: readonly string[];
  kernelDir?: string;
  /** Write the dumpfile of the boot tree here. */
  dumpfile?: string;
  builder?: "auto" | UkiBuilder;
  stub?: string;
  /** Arguments for `ukify build` (`--output FILE` among them, required). */
  ukifyArgs?: readonly string[];
  /** Format 1: also `composefs=<V2 id>` for tools that only read that (default true). */
  v2CompatKarg?: boolean;
  xattrs?: XattrFiltering;
}

export interface SealedUki {
  output: string;
  builder: UkiBuilder;
  cmdline: string;
  /** The deployment id the UKI names (in `format`). */
  id: string;
  format: ImageFormat;
  /** The V2 id written for compatibility (format 1), if any. */
  v2Id: string | null;
  kernel: RootfsKernel;
}

/** Build a sealed UKI for a root directory (see the module comment). */
export async function buildSealedUki(opts: SealedUkiOptions): Promise<SealedUki> {
  const rootfs = resolve(opts.rootfs);
  const format = opts.format ?? 1;
  const { output } = splitUkifyOutput(opts.ukifyArgs ?? []);
  if (output === null) throw new CfsError("ukify arguments", "no --output (pass it after --, e.g. `-- --output uki.efi`)");
  refuseActiveRoot(rootfs);
  if (!isDirectory(rootfs)) throw new CfsError(rootfs, "not a directory");
  const kernel = findRootfsKernel(rootfs, opts.kernelDir);
  const osRelease = readInRoot(rootfs, "usr/lib/os-release");
  if (osRelease === null) throw new CfsError(join(rootfs, "usr/lib/os-release"), "missing (the UKI's .osrel is made from it)");
  const kargsD = rootfsKargs(rootfs);
  for (const k of opts.kargs ?? []) if (splitCmdline(k).some((t) => t.startsWith("composefs=") || t.startsWith("composefs.digest="))) {
    throw new CfsError(`--karg ${k}`, "the composefs karg is computed from the rootfs; do not pass one");
  }

  const tree = await directoryBootTree(rootfs, opts.xattrs);
  const id = bootImageId(tree, format);
  let v2Id: string | null = null;
  if (format === 1 && (opts.v2CompatKarg ?? true)) {
    try {
      v2Id = bootImageId(tree, 2);
    } catch (e) {
      if (!(e instanceof CfsError)) throw e;
      process.stderr.write(`cfsboot: warning: no V2 compatibility karg: ${e.message}\n`);
    }
  }
  if (opts.dumpfile !== undefined) writeFileAtomic(opts.dumpfile, writeDumpfile(tree));
  const insecure = opts.insecure ?? false;
  const args = [...kargsD, composefsKargFor(id, format, insecure)];
  if (v2Id !== null) args.push(composefsKargFor(v2Id, 2, insecure));
  for (const k of opts.kargs ?? []) args.push(...splitCmdline(k));
  const cmdline = joinCmdline(args);
  const r = await buildUki(
    { linux: kernel.vmlinuz, initrds: [kernel.initramfs], cmdline, osRelease: utf8(osRelease, "usr/lib/os-release"), uname: kernel.kver },
    {
      output,
      builder: opts.builder ?? "auto",
      rootfs,
      ...(opts.stub !== undefined ? { stub: opts.stub } : {}),
      ukifyArgs: splitUkifyOutput(opts.ukifyArgs ?? []).rest,
    },
  );
  return { output: r.output, builder: r.builder, cmdline, id, format, v2Id, kernel };
}
