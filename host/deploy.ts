// Building blocks of install/upgrade/switch: pull an image and choose its
// boot image (the deployment id), read what the deployment needs from the
// boot EROFS without mounting it (os-release, kargs.d, /etc, /var), write
// kernel directories and UKIs, state directories and boot entries.
//
// The deployment id is the fs-verity digest of the boot EROFS in the format
// the karg names (bootc-composefs.md §11 #1, #2):
//   - Type 1 (BLS): the V1 boot image whenever the repository generates V1
//     (karg `composefs.digest=[?]v1-sha512-12:<hex>`); a V2-only repository
//     is first made dual-format (V1 added, default kept: no existing digest
//     changes) so that new deployments get V1 too; `composefs=[?]<hex>`
//     only for V2 images;
//   - UKI: the image its sealed `.cmdline` names: `composefs.digest=vN-…`
//     fixes the format, a bare `composefs=` is ambiguous (bootc wrote V1
//     digests with it) and V2 then V1 are tried; each with both xattr modes.
//     The matching image is stored (images/<hex>, kept alive by gc as a
//     live deployment), so a deployment's karg always names an image that
//     exists.

import { createHash } from "node:crypto";
import { closeSync, openSync, readFileSync, symlinkSync, writeSync } from "node:fs";

import {
  type BlsEntry,
  ARTIFACT_PREFIX,
  kernelDirInEntry,
  makeType1Entry,
  makeUkiEntry,
} from "../shared/bls.ts";
import { toHex } from "../shared/bytes.ts";
import { readImage } from "../shared/erofs/reader.ts";
import { writeErofs } from "../shared/erofs/writer.ts";
import { CfsError, describeError } from "../shared/errors.ts";
import { fsverityDigest } from "../shared/fsverity.ts";
import {
  type ComposefsKarg,
  KARGS_D,
  formatComposefsKarg,
  kargsFromFiles,
  parseComposefsKarg,
  rustArch,
  splitCmdline,
} from "../shared/kargs.ts";
import { type ImageConfig, type ImageManifest, parseImageConfig, parseManifestDocument } from "../shared/oci.ts";
import { type BootType, type Origin, formatOriginImageReference, parseTransportRef } from "../shared/origin.ts";
import { type OsRelease, blsTitleVersion, bootLabel, osId, osVersion, parseOsRelease } from "../shared/osrelease.ts";
import { ukiBootDigest, ukiCmdline, ukiOsRelease } from "../shared/pe.ts";
import type { ErofsVersion } from "../shared/repometa.ts";
import * as sys from "../shared/sys.ts";
import { type BootResource, type KernelEntry, type Type2Entry, type XattrFiltering } from "../shared/transform.ts";
import { type Dir, lookup } from "../shared/tree.ts";
import { writeOriginFile } from "./deployments.ts";
import { exists, fsyncDir, fsyncTree, isDirectory, listDir, mkdirp, publish, removeAtomic, removeTree, tempSibling, writeNewFile } from "./fsops.ts";
import { type ContentSource, leafBytes, repoContent, writeTree } from "./materialize.ts";
import { type PullResult, type SourceOptions, fetchManifestAndConfig, imageBootResources, imageTree, pullImage, repoFileReader, type RemoteImageInfo } from "./pull.ts";
import { Repository, imageRefKey } from "./repo.ts";
import { ALGORITHM, type Host } from "./sysroot.ts";

/** The tag that keeps a deployment's image in the repository. */
export const bootcTag = (manifestDigest: string): string => `localhost/bootc-${manifestDigest}`;

/** Tries of a new systemd-boot entry (`+3`). */
export const BOOT_TRIES = 3;

// ---- image references -----------------------------------------------------------------

/**
 * An image reference as the user gives it to install/switch: with a transport
 * (`docker://…`, `oci:…`, `oci-archive:…`, `containers-storage:…`), or a bare
 * registry name (`quay.io/x:tag`, `--transport` to choose another).
 */
export function normalizeImgref(s: string, transport?: string): string {
  if (transport !== undefined && transport !== "registry") {
    const r = parseTransportRef(`${transport}:${s}`, `image reference ${JSON.stringify(s)}`);
    return r.transport === "registry" ? `docker://${r.image}` : `${r.transport}:${r.image}`;
  }
  if (/^(docker:\/\/|oci:|oci-archive:|containers-storage:|docker-archive:|dir:|docker-daemon:|registry:)/.test(s)) {
    const r = parseTransportRef(s.startsWith("registry:") ? `docker://${s.slice(9)}` : s);
    return r.transport === "registry" ? `docker://${r.image}` : `${r.transport}:${r.image}`;
  }
  if (s === "" || /\s/.test(s)) throw new CfsError(`image reference ${JSON.stringify(s)}`, "not an image reference");
  return `docker://${s}`;
}

/** The origin spelling of an image reference (`ostree-unverified-image:docker://…`). */
export function originImageReference(imgref: string): string {
  return formatOriginImageReference(parseTransportRef(imgref));
}

// ---- fs-verity support ------------------------------------------------------------------

/** Whether the filesystem holding `dir` supports fs-verity (a probe file is created and removed). */
export function filesystemHasVerity(dir: string): boolean {
  mkdirp(dir, 0o755);
  const probe = `${dir}/.cfsboot-verity-probe-${process.pid}`;
  let fd = -1;
  try {
    fd = openSync(probe, "wx", 0o600);
    writeSync(fd, "cfsboot");
    closeSync(fd);
    fd = openSync(probe, "r");
    sys.enableVerity(fd, "sha512", probe);
    return true;
  } catch (e) {
    if (sys.isVerityUnsupported(e)) return false;
    throw e instanceof CfsError ? e : sys.fromNodeError(probe, "open", e);
  } finally {
    if (fd >= 0) {
      try {
        closeSync(fd);
      } catch {}
    }
    removeTree(probe);
  }
}

// ---- pulling and choosing the boot image ----------------------------------------------------

export interface PreparedImage {
  /** Transport form (`docker://…`). */
  imgref: string;
  manifestDigest: string;
  configDigest: string;
  manifest: ImageManifest;
  config: ImageConfig;
  bootType: BootType;
  /** The deployment id = boot image id. */
  id: string;
  /** Format of the boot image (1 = V0/V1, 2 = V2). */
  version: 1 | 2;
  /** The boot image's tree (from its EROFS). */
  tree: Dir;
  content: ContentSource;
  osRelease: OsRelease | null;
  /** The image's kargs.d arguments for this architecture. */
  kargsD: string[];
  /** SHA-256 of vmlinuz ‖ initrd, or of the UKI's .linux ‖ .initrd. */
  bootDigest: string;
  kernel: { vmlinuz: Uint8Array; initrd: Uint8Array; kver: string } | null;
  uki: { bytes: Uint8Array; karg: ComposefsKarg; name: string } | null;
  pull: PullResult | null;
}

/** Read a regular file of an image tree, or null. */
export function treeFile(tree: Dir, path: string, content: ContentSource, label: string): Uint8Array | null {
  const n = lookup(tree, `/${path}`);
  if (n === undefined || n.kind !== "leaf") return null;
  if (n.content.type === "symlink") {
    const t = Buffer.from(n.content.target).toString("latin1");
    const base = path.split("/").slice(0, -1).join("/");
    const next = t.startsWith("/") ? t.slice(1) : `${base}/${t}`;
    const norm: string[] = [];
    for (const p of next.split("/")) {
      if (p === "" || p === ".") continue;
      if (p === "..") norm.pop();
      else norm.push(p);
    }
    return treeFile(tree, norm.join("/"), content, label);
  }
  if (n.content.type !== "regular") return null;
  return leafBytes(content, n, `${label}: /${path}`);
}

/** The kargs.d arguments of an image tree (a bad file is an error naming it). */
export function imageKargsD(tree: Dir, content: ContentSource, label: string): string[] {
  const d = lookup(tree, `/${KARGS_D}`);
  if (d === undefined || d.kind !== "dir") return [];
  const files: { name: string; text: string }[] = [];
  for (const [name, n] of d.entries) {
    if (!name.endsWith(".toml") || n.kind !== "leaf" || n.content.type !== "regular") continue;
    const bytes = leafBytes(content, n, `${label}: /${KARGS_D}/${name}`);
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch {
      throw new CfsError(`${label}: /${KARGS_D}/${name}`, "not valid UTF-8");
    }
    files.push({ name: `${KARGS_D}/${name}`, text });
  }
  let args: string[];
  try {
    args = kargsFromFiles(files.map((f) => ({ name: f.name, text: f.text })), rustArch(process.arch));
  } catch (e) {
    if (e instanceof CfsError) throw e.within(label);
    throw e;
  }
  for (const a of args) {
    if (a.startsWith("composefs=") || a.startsWith("composefs.digest=")) {
      throw new CfsError(`${label}: /${KARGS_D}`, `sets "${a}"; the composefs karg is cfsboot's to write`);
    }
  }
  return args;
}

/** Make a V2-only repository dual-format (V1 added, default kept). Returns the repository to use. */
export function ensureV1(repo: Repository): Repository {
  if (repo.versions.includes(1) || repo.versions.includes(0)) return repo;
  const path = repo.path;
  repo.close();
  process.stderr.write(`cfsboot: ${path}: repository generates only V2 EROFS images; adding V1 (the format new boot images use)\n`);
  const r = Repository.init(path, { erofs: "dual" });
  return r.repo;
}

async function configRefsOf(repo: Repository, tag: string): Promise<Map<string, Uint8Array>> {
  return (await repo.openOciImage(tag)).configRefs;
}

/** Find (or make) the boot image a UKI's karg names. */
async function matchUkiImage(repo: Repository, tag: string, karg: ComposefsKarg, label: string): Promise<{ id: string; version: 1 | 2 }> {
  const versions: (1 | 2)[] = karg.form === "composefs.digest" ? [karg.version] : [2, 1];
  const modes: XattrFiltering[] = ["allowlist-only", "keep-user-xattrs"];
  const refs = await configRefsOf(repo, tag);
  let expected: string | null = null;
  for (const v of versions) {
    for (const mode of modes) {
      let id: string | null = null;
      let bytes: Uint8Array | null = null;
      const ref = mode === "allowlist-only" ? refs.get(imageRefKey(v as ErofsVersion, true)) : undefined;
      if (ref !== undefined) id = toHex(ref);
      else {
        const { tree } = await imageTree(repo, tag, { bootable: true, xattrs: mode });
        bytes = writeErofs(tree, { version: v });
        id = toHex(fsverityDigest(bytes, repo.alg));
      }
      expected ??= id;
      if (id === karg.digest) {
        if (bytes !== null) await repo.writeImage(bytes);
        return { id, version: v };
      }
    }
  }
  throw new CfsError(label, `The UKI has the wrong composefs= parameter (is '${karg.digest}', should be '${expected}')`);
}

function firstKernel(resources: readonly BootResource[]): KernelEntry | null {
  return (resources.find((r) => r.kind === "kernel") as KernelEntry | undefined) ?? null;
}

function firstUki(resources: readonly BootResource[]): Type2Entry | null {
  return (resources.find((r) => r.kind === "type2" && r.peType === "uki") as Type2Entry | undefined) ?? null;
}

/**
 * Pull `imgref` (tagging it `localhost/bootc-<manifest digest>`) and gather
 * what a deployment of it needs. `remote` is the manifest+config fetched
 * before (for the tag name); if the registry moved the tag in between, the
 * tag follows what was really pulled.
 */
export async function pullAndPrepare(repo: Repository, imgref: string, remote: RemoteImageInfo, source: SourceOptions): Promise<PreparedImage> {
  const tag = bootcTag(remote.manifestDigest);
  const pull = await pullImage(repo, imgref, { ...source, tag, bootable: true });
  if (pull.manifestDigest !== remote.manifestDigest) {
    repo.tag(bootcTag(pull.manifestDigest), pull.manifestDigest);
    try {
      repo.untag(tag);
    } catch {}
  }
  return prepareStored(repo, imgref, pull.manifestDigest, pull);
}

/** Gather a deployment's data from an image already in the repository. */
export async function prepareStored(repo: Repository, imgref: string, manifestDigest: string, pull: PullResult | null = null): Promise<PreparedImage> {
  const tag = bootcTag(manifestDigest);
  const label = `${imgref}@${manifestDigest}`;
  const stored = await repo.openOciImage(tag);
  const manifest = parseManifestDocument(stored.manifest, label);
  if (manifest.kind !== "manifest") throw new CfsError(label, "not an image manifest");
  const config = parseImageConfig(stored.config ?? new Uint8Array(0), `${label}: config`);
  const { resources, bootType } = await imageBootResources(repo, tag);
  const read = repoFileReader(repo);
  const content = repoContent(repo);
  let id: string;
  let version: 1 | 2;
  let uki: PreparedImage["uki"] = null;
  let kernel: PreparedImage["kernel"] = null;
  let bootDigest: string;
  let osRelease: OsRelease | null = null;
  if (bootType === "uki") {
    const u = firstUki(resources)!;
    const bytes = read(u.leaf, u.imagePath);
    if (bytes === null) throw new CfsError(`${label}: ${u.imagePath}`, "UKI content is not available");
    const cl = ukiCmdline(bytes, `${label}: ${u.imagePath}`);
    const karg = cl === null ? null : parseComposefsKarg(cl, ALGORITHM);
    if (karg === null) throw new CfsError(`${label}: ${u.imagePath}`, "No composefs image in UKI cmdline");
    ({ id, version } = await matchUkiImage(repo, tag, karg, `${label}: ${u.imagePath}`));
    uki = { bytes, karg, name: u.path };
    bootDigest = ukiBootDigest(bytes, `${label}: ${u.imagePath}`);
    const osrel = ukiOsRelease(bytes, `${label}: ${u.imagePath}`);
    osRelease = osrel === null ? null : parseOsRelease(osrel);
  } else {
    const k = firstKernel(resources)!;
    if (k.initramfs === null) throw new CfsError(`${label}: /usr/lib/modules/${k.kver}`, "vmlinuz without initramfs.img");
    const vmlinuz = read(k.vmlinuz, `/usr/lib/modules/${k.kver}/vmlinuz`);
    const initrd = read(k.initramfs, `/usr/lib/modules/${k.kver}/initramfs.img`);
    if (vmlinuz === null || initrd === null) throw new CfsError(`${label}: /usr/lib/modules/${k.kver}`, "kernel content is not available");
    kernel = { vmlinuz, initrd, kver: k.kver };
    bootDigest = createHash("sha256").update(vmlinuz).update(initrd).digest("hex");
    version = repo.versions.includes(1) || repo.versions.includes(0) ? 1 : 2;
    const v: ErofsVersion = version === 2 ? 2 : repo.versions.includes(1) ? 1 : 0;
    const ref = stored.configRefs.get(imageRefKey(v, true));
    if (ref === undefined) throw new CfsError(label, `no boot EROFS image (${imageRefKey(v, true)}) in the repository; pull it again`);
    id = toHex(ref);
  }
  const bytes = repo.openImage(id);
  const tree = readImage(bytes, { name: `images/${id}`, algorithm: ALGORITHM }).root;
  if (bootType === "bls") {
    const osr = treeFile(tree, "usr/lib/os-release", content, label) ?? treeFile(tree, "etc/os-release", content, label);
    osRelease = osr === null ? null : parseOsRelease(Buffer.from(osr).toString("utf8"));
  }
  const kargsD = imageKargsD(tree, content, label);
  return { imgref, manifestDigest, configDigest: stored.configDigest, manifest, config, bootType, id, version, tree, content, osRelease, kargsD, bootDigest, kernel, uki, pull };
}

/** The karg naming a prepared image (`?` when verity is not enforced). */
export function composefsKargFor(p: PreparedImage, insecure: boolean): string {
  return formatComposefsKarg({ version: p.version, algorithm: ALGORITHM, digest: p.id, insecure });
}

/** kargs.d of a deployment already in the repository (its boot EROFS). */
export function deploymentKargsD(repo: Repository, id: string): string[] {
  const tree = readImage(repo.openImage(id), { name: `images/${id}`, algorithm: ALGORITHM }).root;
  return imageKargsD(tree, repoContent(repo), `deployment ${id}`);
}

// ---- boot artifacts --------------------------------------------------------------------------

const sha256Hex = (...parts: Uint8Array[]): string => {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return h.digest("hex");
};

/** SHA-256 of vmlinuz ‖ initrd of an existing kernel directory, or null. */
function kernelDirDigest(dir: string): string | null {
  try {
    return sha256Hex(new Uint8Array(readFileSync(`${dir}/vmlinuz`)), new Uint8Array(readFileSync(`${dir}/initrd`)));
  } catch {
    return null;
  }
}

/**
 * Put `vmlinuz` and `initrd` in `<bin>/bootc_composefs-<id>/` (written in a
 * temporary directory, fsynced, renamed). With `share`, an existing
 * `bootc_composefs-*` directory holding the same two files is used instead
 * (FAT has no symlinks: sharing is by reference in the entry). Returns the
 * artifact name the entry must use.
 */
export function writeKernelDir(host: Host, id: string, k: { vmlinuz: Uint8Array; initrd: Uint8Array }, share: boolean): string {
  const bin = host.kernelBinDir;
  mkdirp(bin, 0o755);
  const digest = sha256Hex(k.vmlinuz, k.initrd);
  if (share) {
    for (const name of listDir(bin)) {
      if (!name.startsWith(ARTIFACT_PREFIX) || !isDirectory(`${bin}/${name}`)) continue;
      if (kernelDirDigest(`${bin}/${name}`) === digest) return name.slice(ARTIFACT_PREFIX.length);
    }
  }
  const final = `${bin}/${ARTIFACT_PREFIX}${id}`;
  if (isDirectory(final) && kernelDirDigest(final) === digest) return id;
  const tmp = tempSibling(final);
  mkdirp(tmp, 0o755);
  try {
    writeNewFile(`${tmp}/vmlinuz`, k.vmlinuz, 0o644);
    writeNewFile(`${tmp}/initrd`, k.initrd, 0o644);
    fsyncDir(tmp);
    publish(tmp, final);
  } catch (e) {
    removeAtomic(tmp);
    throw e;
  }
  return id;
}

/** Put the UKI at `EFI/Linux/bootc/bootc_composefs-<id>.efi` (atomically). */
export function writeUkiFile(host: Host, id: string, bytes: Uint8Array): void {
  const dir = host.ukiDir;
  mkdirp(dir, 0o755);
  const final = `${dir}/${ARTIFACT_PREFIX}${id}.efi`;
  if (exists(final)) {
    try {
      const cur = new Uint8Array(readFileSync(final));
      if (cur.byteLength === bytes.byteLength && sha256Hex(cur) === sha256Hex(bytes)) return;
    } catch {}
  }
  const tmp = tempSibling(final);
  writeNewFile(tmp, bytes, 0o644);
  try {
    publish(tmp, final);
  } catch (e) {
    removeAtomic(tmp);
    throw e;
  }
}

/** Whether systemd-boot on the ESP understands the `uki` key (systemd ≥ 258). */
export function systemdBootKnowsUkiKey(host: Host): boolean {
  for (const dir of [`${host.esp}/EFI/systemd`, `${host.esp}/EFI/BOOT`]) {
    for (const name of listDir(dir)) {
      if (!/\.efi$/i.test(name)) continue;
      try {
        const text = readFileSync(`${dir}/${name}`).toString("latin1");
        const m = /systemd-boot (\d+)/.exec(text);
        if (m) return Number(m[1]) >= 258;
      } catch {}
    }
  }
  return false;
}

/**
 * The Type 1 / UKI entry of a prepared deployment (no sort key or file name:
 * the planners give those). `options` is the full command line (Type 1).
 */
export function makeEntry(host: Host, p: PreparedImage, artifact: string, options: string): BlsEntry {
  if (p.bootType === "uki") {
    const label = bootLabel(p.osRelease) ?? p.id;
    return makeUkiEntry({ title: label, version: osVersion(p.osRelease) ?? p.id, id: p.id, useUkiKey: host.bootloader === "systemd" && systemdBootKnowsUkiKey(host) });
  }
  const tv = blsTitleVersion(p.osRelease, p.id);
  return makeType1Entry({ title: tv.title, version: tv.version, kernelDir: kernelDirInEntry(host.bootloader as "grub" | "grub-cc" | "systemd", artifact, host.bootIsSeparateMount), options });
}

/** bootc's osid of a prepared image (ID, default "bootc"). */
export const osidOf = (p: PreparedImage): string => osId(p.osRelease);

/** Boot counters apply: systemd-boot counts Type 1 and `uki`-key entries. */
export function countsBoots(host: Host, entry: BlsEntry): boolean {
  return host.bootloader === "systemd" && (entry.linux !== null || entry.uki !== null);
}

// ---- state directories ---------------------------------------------------------------------------

/**
 * Write `state/deploy/<id>/` — `etc/` (the image's /etc without `.updated`),
 * `var -> ../../os/default/var`, `<id>.origin` — in a temporary directory,
 * fsynced, then renamed into place, so the directory appears complete with
 * its origin or not at all. An existing directory of that id is replaced.
 */
export function writeStateDir(host: Host, p: PreparedImage, origin: Origin): void {
  mkdirp(host.deployPath, 0o755);
  const final = host.stateDir(p.id);
  const tmp = tempSibling(final);
  mkdirp(tmp, 0o755);
  try {
    mkdirp(`${tmp}/etc`, 0o755);
    const etc = lookup(p.tree, "/etc");
    if (etc !== undefined && etc.kind === "dir") writeTree(etc, `${tmp}/etc`, p.content, `${p.imgref}: /etc`, { skipTop: new Set([".updated"]) });
    symlinkSync("../../os/default/var", `${tmp}/var`);
    writeOriginFile(tmp, p.id, origin);
    fsyncTree(tmp);
    publish(tmp, final);
  } catch (e) {
    removeAtomic(tmp);
    throw e;
  }
}

/** Copy the image's /var into the shared state/os/default/var (install; existing paths are kept). */
export function seedVar(host: Host, p: PreparedImage): void {
  mkdirp(host.varPath, 0o755);
  const v = lookup(p.tree, "/var");
  if (v === undefined || v.kind !== "dir") return;
  writeTree(v, host.varPath, p.content, `${p.imgref}: /var`, { skipExisting: true });
  fsyncTree(host.varPath);
}

/** The origin of a new deployment. */
export function originFor(p: PreparedImage): Origin {
  return { imageReference: originImageReference(p.imgref), bootType: p.bootType, bootDigest: p.bootDigest, manifestDigest: p.manifestDigest, extra: new Map() };
}

/** Manifest + config of a remote image (no layers), with what a pull would download. */
export async function fetchRemote(imgref: string, repo: Repository | null, source: SourceOptions): Promise<RemoteImageInfo> {
  try {
    return await fetchManifestAndConfig(imgref, { ...source, ...(repo !== null ? { repo } : {}) });
  } catch (e) {
    if (e instanceof CfsError) throw e;
    throw new CfsError(imgref, describeError(e));
  }
}

