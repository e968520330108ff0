// `cfsboot repo create-image DIR [NAME]` and `cfsboot repo compute-id DIR`
// (cfsctl create-image / compute-id): the composefs image of a plain
// directory tree.
//
//   DIR → tree (host/scan.ts: lstat metadata, xattrs, hardlinks, fs-verity
//   digests in parallel) → OCI transform (root metadata from /usr, /run
//   emptied, xattrs filtered; skipped with --no-propagate-usr-to-root) →
//   boot transform with --bootable (/boot and /sysroot emptied, SELinux
//   labels from the tree's own policy) → EROFS.
//
// create-image stores every file > 64 bytes as an object (reflinked or
// copied; already present ones are skipped), writes one image per format
// meta.json asks for (the default one gets `images/refs/NAME`) and prints
// `<alg>:<hex>` of the default image. compute-id stores nothing and prints
// the hex id; it uses the repository's algorithm and default format when a
// repository exists at the selected location, else sha512 and V1 (cfsctl).

import { readFileSync, statSync } from "node:fs";
import type { Argv } from "yargs";

import { bstrFromUtf8, displayBstr, toHex, type BStr } from "../../../shared/bytes.ts";
import { writeErofs } from "../../../shared/erofs/writer.ts";
import { CfsError, rethrowWithin } from "../../../shared/errors.ts";
import { type HashAlg, fsverityDigest } from "../../../shared/fsverity.ts";
import { parseXattrFiltering, transformForBoot, transformForOci } from "../../../shared/transform.ts";
import type { Dir, Leaf, Regular } from "../../../shared/tree.ts";
import { defineCommand } from "../../cli.ts";
import { DigestPool } from "../../digest.ts";
import { progressBar } from "../../progress.ts";
import type { ErofsVersion, Repository } from "../../repo.ts";
import { scanDirectory } from "../../scan.ts";
import { computeImageId } from "../../pull.ts";
import { type RepoGlobalArgs, openRepo, print, withRepo } from "./common.ts";

interface FsArgs extends RepoGlobalArgs {
  path: string;
  bootable: boolean;
  "propagate-usr-to-root": boolean;
  xattrs: string;
}

interface CreateArgs extends FsArgs {
  name?: string;
}

function fsOptions(y: Argv): Argv {
  return y
    .positional("path", { type: "string", describe: "the directory" })
    .option("bootable", { type: "boolean", default: false, describe: "boot variant: empty /boot and /sysroot, SELinux labels" })
    .option("propagate-usr-to-root", { type: "boolean", default: true, describe: "OCI transform: root metadata from /usr, /run emptied, xattrs filtered (--no-propagate-usr-to-root: keep the tree as it is)" })
    .option("xattrs", { type: "string", default: "allowlist-only", describe: "xattrs kept: allowlist-only or keep-user-xattrs" });
}

export interface DirectoryTree {
  root: Dir;
  /** Source file of every external regular leaf. */
  sources: Map<Leaf, BStr>;
}

/** Read, digest and transform a directory as create-image/compute-id do. */
export async function directoryTree(dir: string, alg: HashAlg, opts: { bootable: boolean; propagateUsr: boolean; xattrs: string }): Promise<DirectoryTree> {
  const xattrs = parseXattrFiltering(opts.xattrs);
  let isDir = false;
  try {
    isDir = statSync(dir).isDirectory();
  } catch {}
  if (!isDir) throw new CfsError(dir, "not a directory");
  const pool = new DigestPool();
  const bar = progressBar("reading");
  try {
    const scan = await scanDirectory(bstrFromUtf8(dir), {
      algorithm: alg,
      pool,
      onProgress: (p) => bar.update(p.phase === "walk" ? `scanning (${p.entries} entries)` : "digesting", p.bytesDone, p.bytes),
    });
    const sources = new Map<Leaf, BStr>();
    for (const f of scan.external) sources.set(f.leaf, f.path);
    if (opts.propagateUsr) {
      try {
        transformForOci(scan.root, { xattrs });
      } catch (e) {
        rethrowWithin(dir, e); // "DIR: /usr: the image has no /usr directory …"
      }
    }
    if (opts.bootable) {
      transformForBoot(scan.root, (leaf) => {
        const c = leaf.content as Regular;
        if (c.type !== "regular") return null;
        if (c.inline !== null) return c.inline;
        if (c.size === 0n) return new Uint8Array(0);
        const src = sources.get(leaf);
        return src === undefined ? null : new Uint8Array(readFileSync(Buffer.from(src, "latin1")));
      });
    }
    return { root: scan.root, sources };
  } finally {
    bar.stop();
    await pool.close();
  }
}

/** Every external leaf still in the tree, once per object. */
function externalLeaves(root: Dir): Leaf[] {
  const out: Leaf[] = [];
  const seen = new Set<string>();
  const stack: Dir[] = [root];
  while (stack.length > 0) {
    const d = stack.pop()!;
    for (const child of d.entries.values()) {
      if (child.kind === "dir") stack.push(child);
      else if (child.content.type === "regular" && child.content.digest !== null) {
        const hex = toHex(child.content.digest);
        if (!seen.has(hex)) {
          seen.add(hex);
          out.push(child);
        }
      }
    }
  }
  return out;
}

/** Store the objects of a directory tree and commit its images; the default image's id. */
export async function createImage(repo: Repository, t: DirectoryTree, name?: string): Promise<Uint8Array> {
  const leaves = externalLeaves(t.root);
  const total = leaves.reduce((n, l) => n + Number((l.content as Regular).size), 0);
  const bar = progressBar("storing");
  let done = 0;
  try {
    for (const leaf of leaves) {
      const c = leaf.content as Regular;
      const src = t.sources.get(leaf);
      if (src === undefined) throw new Error(`createImage: no source for an external file`);
      try {
        await repo.importFile(src, { size: c.size, digest: c.digest! });
      } catch (e) {
        throw e instanceof CfsError ? e : new CfsError(displayBstr(src), String(e));
      }
      done += Number(c.size);
      bar.update("objects", done, total);
    }
  } finally {
    bar.stop();
  }
  return (await repo.commitImages(t.root, name)).default;
}

export const createImageCommand = defineCommand<CreateArgs>({
  command: "create-image <path> [name]",
  describe: "store a directory's files and its composefs image; print the image id",
  builder: (y: Argv) => fsOptions(y).positional("name", { type: "string", describe: "image ref name (images/refs/NAME)" }) as unknown as Argv<CreateArgs>,
  handler: async (args) => {
    const id = await withRepo(args, { writable: true }, async (repo) => {
      const t = await directoryTree(String(args.path), repo.alg, {
        bootable: args.bootable,
        propagateUsr: args["propagate-usr-to-root"],
        xattrs: args.xattrs,
      });
      return `${repo.alg}:${toHex(await createImage(repo, t, args.name === undefined ? undefined : String(args.name)))}`;
    });
    await print(`${id}\n`);
  },
});

function isDirectory(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** Algorithm and default format of the selected repository, or cfsctl's defaults without one. */
function idSettings(args: RepoGlobalArgs): { alg: HashAlg; version: ErofsVersion } {
  let repo: Repository;
  try {
    repo = openRepo(args);
  } catch (e) {
    if (args.repo !== undefined) throw e;
    return { alg: "sha512", version: 1 };
  }
  try {
    return { alg: repo.alg, version: repo.formats.default };
  } finally {
    repo.close();
  }
}

export const computeIdCommand = defineCommand<FsArgs>({
  command: "compute-id <path>",
  describe: "print the image id of a directory, or of an OCI image in the repository (tag or @sha256:…); nothing is stored",
  builder: (y: Argv) => fsOptions(y) as unknown as Argv<FsArgs>,
  handler: async (args) => {
    if (!isDirectory(String(args.path))) {
      // Not a directory: an OCI image in the repository (a tag or @sha256:…), cfsctl oci compute-id.
      const id = await withRepo(args, {}, (repo) => computeImageId(repo, String(args.path), { bootable: args.bootable, xattrs: parseXattrFiltering(args.xattrs) }));
      await print(`${id}\n`);
      return;
    }
    const { alg, version } = idSettings(args);
    const t = await directoryTree(String(args.path), alg, {
      bootable: args.bootable,
      propagateUsr: args["propagate-usr-to-root"],
      xattrs: args.xattrs,
    });
    await print(`${toHex(fsverityDigest(writeErofs(t.root, { version }), alg))}\n`);
  },
});
