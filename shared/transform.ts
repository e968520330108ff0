// Tree transforms that shape image digests (oci.md §4–§7), pure.
//
// - transformForOci: what every tree built from an OCI image (or scanned from
//   a mounted container root) goes through: root metadata from /usr, /run
//   emptied, xattrs filtered to an allowlist. Leaves that end up unreferenced
//   simply vanish (the tree holds no leaf table, so "compaction" is implicit).
// - transformForBoot: the bootable variant on top of that: /boot and /sysroot
//   emptied (mtime seconds from /usr, nanoseconds kept — composefs-rs does
//   exactly that), then SELinux labels from the image's own policy
//   (shared/selabel.ts), or all labels stripped when it has none.
// - findBootResources: BLS Type 1 entries, UKIs and addons, kernels in
//   /usr/lib/modules (oci.md §6), found in the tree before /boot is emptied;
//   bootType() picks the deployment's boot type from them as bootc does.
//
// All functions modify the tree in place; clone it first (cloneTree) to keep
// the original. File contents are read through a callback (inline data or a
// repository object), so this module stays free of I/O.

import { displayBstr, type BStr } from "./bytes.ts";
import { CfsError } from "./errors.ts";
import { selabel, type ReadFile } from "./selabel.ts";
import { sortedNames, type Dir, type Leaf, type Node, type Regular } from "./tree.ts";

export type XattrFiltering = "allowlist-only" | "keep-user-xattrs";
export const XATTR_MODES: readonly XattrFiltering[] = ["allowlist-only", "keep-user-xattrs"];

/** Xattrs kept by every mode (composefs-rs CONTAINER_XATTR_ALLOWLIST). */
export const XATTR_ALLOWLIST: readonly BStr[] = ["security.capability"];

export function parseXattrFiltering(s: string): XattrFiltering {
  if (s === "allowlist-only" || s === "keep-user-xattrs") return s;
  throw new CfsError("--xattrs", `invalid xattr filtering mode "${s}" (expected "allowlist-only" or "keep-user-xattrs")`);
}

export function xattrFilter(mode: XattrFiltering): (name: BStr) => boolean {
  if (mode === "allowlist-only") return (n) => XATTR_ALLOWLIST.includes(n);
  return (n) => XATTR_ALLOWLIST.includes(n) || n.startsWith("user.");
}

/** Visit every directory and every leaf once (hardlinks once). */
export function forEachNode(root: Dir, f: (node: Node) => void): void {
  const seen = new Set<Leaf>();
  const stack: Dir[] = [root];
  while (stack.length > 0) {
    const d = stack.pop()!;
    f(d);
    for (const c of d.entries.values()) {
      if (c.kind === "dir") stack.push(c);
      else if (!seen.has(c)) {
        seen.add(c);
        f(c);
      }
    }
  }
}

/** Keep only the xattrs `keep` accepts, on every node. */
export function filterXattrs(root: Dir, keep: (name: BStr) => boolean): void {
  forEachNode(root, (n) => {
    for (const k of [...n.stat.xattrs.keys()]) if (!keep(k)) n.stat.xattrs.delete(k);
  });
}

/** The directory at an absolute path, or null if absent; a non-directory on the way is an error. */
export function directoryAt(root: Dir, path: BStr): Dir | null {
  let d = root;
  if (path === "/") return d;
  let at = "";
  for (const part of path.slice(1).split("/")) {
    at += "/" + part;
    const n = d.entries.get(part);
    if (n === undefined) return null;
    if (n.kind !== "dir") throw new CfsError(displayBstr(at), "not a directory in the image");
    d = n;
  }
  return d;
}

function requireDir(root: Dir, path: BStr, why: string): Dir {
  const d = directoryAt(root, path);
  if (d === null) throw new CfsError(path, `the image has no ${path} directory (${why})`);
  return d;
}

export interface OciTransformOptions {
  xattrs?: XattrFiltering;
}

/** composefs-rs `transform_for_oci` (oci.md §4), in place. */
export function transformForOci(root: Dir, opts: OciTransformOptions = {}): void {
  const usr = requireDir(root, "/usr", "its metadata becomes the root directory's");
  root.stat = {
    mode: usr.stat.mode,
    uid: usr.stat.uid,
    gid: usr.stat.gid,
    mtimeSec: usr.stat.mtimeSec,
    mtimeNsec: usr.stat.mtimeNsec,
    xattrs: new Map(usr.stat.xattrs),
  };
  const run = directoryAt(root, "/run");
  if (run !== null) {
    run.entries.clear();
    run.stat = { ...run.stat, mtimeSec: usr.stat.mtimeSec, mtimeNsec: usr.stat.mtimeNsec };
  }
  filterXattrs(root, xattrFilter(opts.xattrs ?? "allowlist-only"));
}

// ---- boot resources (oci.md §6) ----------------------------------------------------------------

export interface Type1Entry {
  kind: "type1";
  /** File name in /boot/loader/entries. */
  fileName: BStr;
  /** The entry's text, as lines (split at "\n", as composefs-rs). */
  lines: string[];
  /** `linux`/`initrd`/`efi` value → the file it names (looked up from the image root, as upstream). */
  files: Map<string, Leaf>;
}

export type PeType = "uki" | "uki-addon" | "global-addon";

export interface Type2Entry {
  kind: "type2";
  /** The /usr/lib/modules/<kver> directory the UKI was found in, or null (/boot). */
  kver: BStr | null;
  /** Path relative to the directory searched (/boot/EFI/Linux, /boot/loader/addons, /usr/lib/modules/<kver>). */
  path: BStr;
  /** Absolute path in the image. */
  imagePath: BStr;
  leaf: Leaf;
  peType: PeType;
}

export interface KernelEntry {
  kind: "kernel";
  kver: string;
  vmlinuz: Leaf;
  initramfs: Leaf | null;
  osRelease: Leaf | null;
}

export type BootResource = Type1Entry | Type2Entry | KernelEntry;

function regularLeaf(n: Node | undefined): Leaf | null {
  return n !== undefined && n.kind === "leaf" && n.content.type === "regular" ? n : null;
}

/** Resolve `path` (relative paths from the root) to a regular file, composefs-rs style; throws when absent. */
function fileAt(root: Dir, path: string, where: string): Leaf {
  const parts = path.split("/").filter((p) => p !== "");
  if (parts.length === 0) throw new CfsError(where, `"${path}" does not name a file`);
  let d = root;
  for (const [i, part] of parts.entries()) {
    if (part === "." || part === "..") throw new CfsError(where, `invalid path "${path}"`);
    const n = d.entries.get(part);
    if (n === undefined) throw new CfsError(where, `${path}: no such file in the image`);
    if (i === parts.length - 1) {
      if (n.kind === "dir") throw new CfsError(where, `${path}: is a directory`);
      if (n.content.type !== "regular") throw new CfsError(where, `${path}: not a regular file`);
      return n;
    }
    if (n.kind !== "dir") throw new CfsError(where, `${path}: ${parts.slice(0, i + 1).join("/")} is not a directory`);
    d = n;
  }
  throw new Error("unreachable");
}

function bleValues(lines: string[], key: string): string[] {
  const out: string[] = [];
  for (const line of lines) {
    if (!line.startsWith(key)) continue;
    const rest = line.slice(key.length);
    if (!/^[\t\n\f\r ]/.test(rest)) continue;
    out.push(rest.trimStart());
  }
  return out;
}

function decodeText(bytes: Uint8Array, where: string): string {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new CfsError(where, "not valid UTF-8");
  }
}

function readRequired(read: ReadFile, leaf: Leaf, path: BStr): Uint8Array {
  const data = read(leaf, path);
  if (data === null) throw new CfsError(path, "file content is not available (sparse file)");
  return data;
}

function findUkis(dir: Dir, rel: BStr, abs: BStr, kver: BStr | null, global: boolean, out: Type2Entry[]): void {
  for (const name of sortedNames(dir)) {
    const n = dir.entries.get(name)!;
    const r = rel === "" ? name : `${rel}/${name}`;
    const a = `${abs}/${name}`;
    if (n.kind === "dir") {
      findUkis(n, r, a, kver, global, out);
      continue;
    }
    if (!name.endsWith(".efi")) continue;
    if (n.content.type !== "regular") throw new CfsError(displayBstr(a), "is not a regular file");
    const peType: PeType = name.endsWith(".addon.efi") ? (global ? "global-addon" : "uki-addon") : "uki";
    out.push({ kind: "type2", kver, path: r, imagePath: a, leaf: n, peType });
  }
}

/** Boot resources of an image tree, in composefs-rs order: Type 1 entries, UKIs/addons, kernels. */
export function findBootResources(root: Dir, read: ReadFile): BootResource[] {
  const out: BootResource[] = [];
  const entries = directoryAt(root, "/boot/loader/entries");
  if (entries !== null) {
    for (const name of sortedNames(entries)) {
      if (!name.endsWith(".conf")) continue;
      const n = entries.entries.get(name)!;
      const path = `/boot/loader/entries/${name}`;
      if (n.kind === "dir") throw new CfsError(displayBstr(path), "is a directory");
      if (n.content.type !== "regular") throw new CfsError(displayBstr(path), "is not a regular file");
      const text = decodeText(readRequired(read, n, path), displayBstr(path));
      const lines = text.split("\n");
      if (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
      const files = new Map<string, Leaf>();
      for (const key of ["linux", "initrd", "efi"]) {
        for (const v of bleValues(lines, key)) files.set(v, fileAt(root, v, displayBstr(path)));
      }
      out.push({ kind: "type1", fileName: name, lines, files });
    }
  }
  const ukis: Type2Entry[] = [];
  for (const [p, global] of [["/boot/EFI/Linux", false], ["/boot/loader/addons", true]] as const) {
    const d = directoryAt(root, p);
    if (d !== null) findUkis(d, "", p, null, global, ukis);
  }
  const modules = directoryAt(root, "/usr/lib/modules");
  if (modules !== null) {
    for (const kver of sortedNames(modules)) {
      const d = modules.entries.get(kver)!;
      if (d.kind === "dir") findUkis(d, "", `/usr/lib/modules/${kver}`, kver, false, ukis);
    }
  }
  out.push(...ukis);
  if (modules !== null) {
    const usrLib = directoryAt(root, "/usr/lib")!;
    const osRelease = regularLeaf(usrLib.entries.get("os-release"));
    for (const kver of sortedNames(modules)) {
      const d = modules.entries.get(kver)!;
      if (d.kind !== "dir") continue;
      const vmlinuz = regularLeaf(d.entries.get("vmlinuz"));
      if (vmlinuz === null) continue;
      let text: string;
      try {
        text = new TextDecoder("utf-8", { fatal: true }).decode(Buffer.from(kver, "latin1"));
      } catch {
        throw new CfsError(displayBstr(`/usr/lib/modules/${kver}`), "kernel version is not valid UTF-8");
      }
      out.push({ kind: "kernel", kver: text, vmlinuz, initramfs: regularLeaf(d.entries.get("initramfs.img")), osRelease });
    }
  }
  return out;
}

/**
 * The boot type bootc picks from an image's resources: the first resource
 * decides (a UKI → "uki", a kernel → "bls"); Type 1 entries in /boot are an
 * error; no resource at all is an error.
 */
export function bootType(resources: readonly BootResource[], image = "image"): "uki" | "bls" {
  const first = resources[0];
  if (first === undefined) throw new CfsError(image, "no boot entries (no UKI in /boot/EFI/Linux or /usr/lib/modules/*, no /usr/lib/modules/*/vmlinuz)");
  if (first.kind === "type1") throw new CfsError(image, "Found Type1 entries in /boot");
  return first.kind === "type2" ? "uki" : "bls";
}

// ---- boot transform (oci.md §5) --------------------------------------------------------------

/** Empty /boot and /sysroot; their mtime seconds become /usr's (nanoseconds unchanged). */
export function emptyBootDirs(root: Dir): void {
  const usr = requireDir(root, "/usr", "needed for the boot image");
  for (const p of ["/boot", "/sysroot"]) {
    const d = requireDir(root, p, "a bootable image must have it");
    d.stat = { ...d.stat, mtimeSec: usr.stat.mtimeSec };
    d.entries.clear();
  }
}

export interface BootTransformResult {
  resources: BootResource[];
  /** Whether a SELinux policy was applied (false: labels stripped). */
  selinux: boolean;
}

/**
 * composefs-rs `transform_for_boot`, in place, on a tree that already went
 * through transformForOci: boot resources first, then /boot and /sysroot
 * emptied, then SELinux labels.
 */
export function transformForBoot(root: Dir, read: ReadFile): BootTransformResult {
  const resources = findBootResources(root, read);
  emptyBootDirs(root);
  const selinux = selabel(root, read);
  return { resources, selinux };
}

/** Bytes of a regular leaf when they are inline (null: external or sparse). */
export function inlineBytes(leaf: Leaf): Uint8Array | null {
  const c = leaf.content as Regular;
  return c.type === "regular" ? c.inline : null;
}
