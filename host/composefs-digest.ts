// The deployment id of a bootable tree — what `composefs=`/`composefs.digest=`
// name — computed from a directory (a mounted container root) or from an
// image reference, without touching any system repository
// (bootc `container compute-composefs-digest`, bootc-composefs.md §10).
//
//   directory: scan (host/scan.ts via directoryTree), OCI transform, boot
//     transform (SELinux policy from the directory itself), EROFS in memory,
//     fs-verity SHA-512 in memory. Nothing is stored, so no O_TMPFILE is ever
//     needed (bootc issues 1977, 2340).
//   image: pulled with --bootable into a throw-away insecure SHA-512
//     repository under $CFSBOOT_TMPDIR or /var/tmp (V1-only for format 1,
//     dual for format 2), which is removed afterwards. The repository falls
//     back to named temporaries where O_TMPFILE is missing. This is the very
//     code path `cfsboot install`/`upgrade` use, so the id equals what a
//     deployment of that image gets.
//
// Format 1 = V1 EROFS (karg `composefs.digest=v1-sha512-12:<hex>`), format 2 =
// V2 EROFS (karg `composefs=<hex>`).

import { mkdtempSync, realpathSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";

import { toHex } from "../shared/bytes.ts";
import { writeDumpfile } from "../shared/dumpfile.ts";
import { writeErofs } from "../shared/erofs/writer.ts";
import { CfsError } from "../shared/errors.ts";
import { fsverityDigest } from "../shared/fsverity.ts";
import { formatComposefsKarg } from "../shared/kargs.ts";
import type { XattrFiltering } from "../shared/transform.ts";
import type { Dir } from "../shared/tree.ts";
import { writeFileAtomic } from "./atomic.ts";
import { directoryTree } from "./commands/repo/create-image.ts";
import { imageTree, pullImage, storageTmpRoot, type SourceOptions } from "./pull.ts";
import { Repository } from "./repo.ts";
import { removeOnInterrupt } from "./interrupt.ts";

export type ImageFormat = 1 | 2;

/** bootc's message for `/` (compute-composefs-digest and ukify refuse it). */
export const ACTIVE_ROOT_MESSAGE = "Cannot operate on active root filesystem; mount separate target instead";

export function parseFormat(s: string | number | undefined): ImageFormat {
  if (s === undefined || s === 1 || s === "1") return 1;
  if (s === 2 || s === "2") return 2;
  throw new CfsError("--format", `unknown format ${JSON.stringify(s)} (1: V1 EROFS, composefs.digest=v1-…; 2: V2 EROFS, composefs=)`);
}

/** The karg that names a boot image of `format` (composefs-rs `make_cmdline_composefs`). */
export function composefsKargFor(id: string, format: ImageFormat, insecure: boolean): string {
  return formatComposefsKarg({ version: format, algorithm: "sha512", digest: id, insecure });
}

/** The SHA-512 fs-verity id of the EROFS of `tree` in `format`. */
export function bootImageId(tree: Dir, format: ImageFormat): string {
  return toHex(fsverityDigest(writeErofs(tree, { version: format }), "sha512"));
}

/** Refuse the running system's root (`/` after resolving symlinks), as bootc does. */
export function refuseActiveRoot(dir: string): void {
  let real: string;
  try {
    real = realpathSync(dir);
  } catch {
    return;
  }
  if (real === "/") throw new CfsError(dir, ACTIVE_ROOT_MESSAGE);
}

export function isDirectory(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** Whether an argument is an image reference (a transport prefix) rather than a directory. */
export function looksLikeImageRef(s: string): boolean {
  return /^(docker:\/\/|oci:|oci-archive:|containers-storage:)/.test(s);
}

export interface DigestOptions {
  format?: ImageFormat;
  xattrs?: XattrFiltering;
  /** Write the dumpfile of the transformed tree here (atomically). */
  dumpfile?: string;
}

export interface DigestResult {
  id: string;
  format: ImageFormat;
  /** The boot tree (after both transforms). */
  tree: Dir;
}

/** The boot tree of a directory: scan, OCI transform, boot transform. */
export async function directoryBootTree(dir: string, xattrs: XattrFiltering = "allowlist-only"): Promise<Dir> {
  refuseActiveRoot(dir);
  if (!isDirectory(dir)) throw new CfsError(dir, "not a directory");
  const t = await directoryTree(dir, "sha512", { bootable: true, propagateUsr: true, xattrs });
  return t.root;
}

/** The deployment id of a directory tree. */
export async function digestOfDirectory(dir: string, opts: DigestOptions = {}): Promise<DigestResult> {
  const format = opts.format ?? 1;
  const tree = await directoryBootTree(dir, opts.xattrs);
  const id = bootImageId(tree, format);
  if (opts.dumpfile !== undefined) writeFileAtomic(opts.dumpfile, writeDumpfile(tree));
  return { id, format, tree };
}

/** The deployment id of an image reference (pulled into a temporary repository). */
export async function digestOfImage(imgref: string, opts: DigestOptions & SourceOptions & { progress?: boolean } = {}): Promise<Omit<DigestResult, "tree">> {
  const format = opts.format ?? 1;
  const tmp = mkdtempSync(join(storageTmpRoot(), "cfsboot-digest-"));
  const unregister = removeOnInterrupt(tmp);
  try {
    const { repo } = Repository.init(join(tmp, "repo"), { algorithm: "fsverity-sha512-12", insecure: true, erofs: format === 2 ? "dual" : "v1" });
    try {
      const r = await pullImage(repo, imgref, { ...opts, bootable: true, tag: "image" });
      const id = format === 2 ? r.imageIds.bootV2 : r.imageIds.bootV1;
      if (id === undefined) throw new Error(`pull of ${imgref} produced no V${format} boot image`);
      if (opts.dumpfile !== undefined) {
        const { tree } = await imageTree(repo, "image", { bootable: true, xattrs: opts.xattrs ?? "allowlist-only" });
        writeFileAtomic(opts.dumpfile, writeDumpfile(tree));
      }
      if (opts.xattrs !== undefined && opts.xattrs !== "allowlist-only") {
        const { tree } = await imageTree(repo, "image", { bootable: true, xattrs: opts.xattrs });
        return { id: bootImageId(tree, format), format };
      }
      return { id, format };
    } finally {
      repo.close();
    }
  } finally {
    unregister();
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** compute-composefs-digest's argument: an existing directory, else an image reference. */
export async function computeComposefsDigest(target: string, opts: DigestOptions & SourceOptions & { progress?: boolean } = {}): Promise<Omit<DigestResult, "tree">> {
  refuseActiveRoot(target);
  if (isDirectory(target)) {
    const r = await digestOfDirectory(target, opts);
    return { id: r.id, format: r.format };
  }
  if (looksLikeImageRef(target)) return digestOfImage(target, opts);
  throw new CfsError(target, "not a directory, and not an image reference (docker://, oci:, oci-archive:, containers-storage:)");
}
