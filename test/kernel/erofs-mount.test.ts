// The kernel's view of the images cfsboot writes: every image passes
// `fsck.erofs` and mounts read-only as a file-backed EROFS (a detached mount
// from fsmount(2), walked through /proc/self/fd/N, so nothing is attached to
// any mount namespace), and the mounted tree matches the tree the image was
// written from: type, permission bits, uid/gid, size, mtime to the
// nanosecond, rdev, nlink of leaves, hardlinks, xattrs (listxattr/getxattr),
// symlink targets and inline file contents. Directory sizes match what the
// reader reports.
//
// The raw EROFS mount shows the composefs encoding (root stubs, escaped
// whiteouts and xattrs, metacopy/redirect); the walk undoes it the way
// overlayfs interprets it, independently of shared/erofs/reader.ts.
// Kernel quirks (vectors/README "Kernel view"): user.* xattrs of symlinks,
// devices, fifos and sockets read as ENODATA; names outside the known
// prefixes are not listed; an unparsable security.capability or POSIX ACL
// gives EINVAL, an ACL on a symlink EOPNOTSUPP; uid/gid 4294967295 shows as
// 65534.

import { spawnSync } from "node:child_process";
import { lstatSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { type BStr, bytesEqual } from "../../shared/bytes.ts";
import { parseDumpfile } from "../../shared/dumpfile.ts";
import { readImage } from "../../shared/erofs/reader.ts";
import { chooseVersion, writeErofs } from "../../shared/erofs/writer.ts";
import * as sys from "../../shared/sys.ts";
import { cloneTree, type Dir, type Leaf, type LeafContent, makeDir, type Node, type Stat, walk } from "../../shared/tree.ts";
import { arbTree } from "../helpers/arbitrary-tree.ts";
import { canRun, hasTool, isRoot, vectorsDir } from "../helpers/env.ts";
import { expectedReadBack, readBackDiffOptions } from "../helpers/image-expect.ts";
import { diffTrees } from "../helpers/tree-compare.ts";

const B = (s: BStr) => Buffer.from(s, "latin1");
const KNOWN_PREFIXES = ["user.", "trusted.", "security.", "system.posix_acl_access", "system.posix_acl_default"];

let dir = "";
let usable = false;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "cfsboot-erofs-mount-"));
  if (!isRoot || !hasTool("fsck.erofs")) return;
  // Can this kernel mount an EROFS image from a regular file?
  const probe = join(dir, "probe.img");
  writeFileSync(probe, writeErofs(makeDir(), { version: 2 }));
  try {
    sys.close(sys.mountFs("erofs", [["source", probe], ["ro", true]], sys.MOUNT_ATTR_RDONLY));
    usable = true;
  } catch {
    usable = false;
  }
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function available(): boolean {
  return canRun(isRoot, "needs root (mounts EROFS images)") &&
    canRun(hasTool("fsck.erofs"), "needs fsck.erofs (erofs-utils)") &&
    canRun(usable, "the kernel cannot mount file-backed EROFS images");
}

/** "path\0key" of xattrs the kernel lists but refuses to return (see xattrsOf). */
const unreadable = new Set<string>();

function xattrsOf(path: BStr, rel: BStr): Map<BStr, Uint8Array> {
  const out = new Map<BStr, Uint8Array>();
  for (const name of sys.llistxattr(path)) {
    try {
      out.set(name, sys.lgetxattr(path, name));
    } catch (e) {
      // user.* on special files: ENODATA; a capability the kernel cannot parse: EINVAL.
      if (sys.isErrno(e, "ENODATA")) continue;
      // ACLs on symlinks (EOPNOTSUPP), ACLs the kernel cannot parse (EINVAL).
      const quirk = name === "security.capability" ? sys.isErrno(e, "EINVAL")
        : name.startsWith("system.posix_acl_") && sys.isErrno(e, "EINVAL", "EOPNOTSUPP");
      if (quirk) {
        unreadable.add(`${rel || "/"}\0${name}`);
        continue;
      }
      throw e;
    }
  }
  return out;
}

const isHex2 = (n: BStr) => /^[0-9a-f]{2}$/.test(n);

/**
 * The mounted tree, decoded like overlayfs sees it. Also returns every
 * directory's st_size by path.
 */
function kernelTree(base: BStr, version: number): { root: Dir; dirSizes: Map<BStr, bigint> } {
  const epoch1 = version < 2;
  const byIno = new Map<bigint, { leaf: Leaf; refs: number; nlink: number }>();
  const dirSizes = new Map<BStr, bigint>();
  const stat = (p: BStr, xattrs: Map<BStr, Uint8Array>) => {
    const st = lstatSync(B(p), { bigint: true });
    const s: Stat = {
      mode: Number(st.mode & 0o7777n),
      uid: Number(st.uid),
      gid: Number(st.gid),
      mtimeSec: Number(st.mtimeNs / 1_000_000_000n),
      mtimeNsec: Number(st.mtimeNs % 1_000_000_000n),
      xattrs,
    };
    return { st, s };
  };
  const userXattrs = (raw: Map<BStr, Uint8Array>, drop: (k: BStr) => boolean): Map<BStr, Uint8Array> => {
    const out = new Map<BStr, Uint8Array>();
    for (const [k, v] of raw) {
      if (drop(k)) continue;
      if (k.startsWith("trusted.overlay.")) {
        if (k.startsWith("trusted.overlay.overlay.")) out.set("trusted.overlay." + k.slice("trusted.overlay.overlay.".length), v);
        continue; // metacopy, redirect, the root's opaque
      }
      out.set(k, v);
    }
    return out;
  };
  const rootRaw = xattrsOf(`${base}/.`, "/");
  const root: Dir = { kind: "dir", stat: stat(`${base}/.`, new Map()).s, entries: new Map() };
  dirSizes.set("/", lstatSync(B(`${base}/.`), { bigint: true }).size);
  const stack: { d: Dir; rel: BStr; raw: Map<BStr, Uint8Array> }[] = [{ d: root, rel: "", raw: rootRaw }];
  while (stack.length > 0) {
    const { d, rel, raw } = stack.pop()!;
    let escapedWhiteouts = false;
    for (const nb of readdirSync(B(`${base}${rel}/`), { encoding: "buffer" }) as Buffer[]) {
      const name = nb.toString("latin1");
      const p = `${base}${rel}/${name}`;
      const x = xattrsOf(p, `${rel}/${name}`);
      const { st, s } = stat(p, x);
      if (st.isDirectory()) {
        const sub: Dir = { kind: "dir", stat: s, entries: new Map() };
        d.entries.set(name, sub);
        dirSizes.set(`${rel}/${name}`, st.size);
        stack.push({ d: sub, rel: `${rel}/${name}`, raw: x });
        continue;
      }
      if (epoch1 && rel === "" && st.isCharacterDevice() && st.rdev === 0n && isHex2(name)) continue; // a stub
      const known = byIno.get(st.ino);
      if (known !== undefined) {
        known.refs++;
        d.entries.set(name, known.leaf);
        continue;
      }
      let content: LeafContent;
      if (st.isFile() && epoch1 && x.has("trusted.overlay.overlay.whiteout")) {
        escapedWhiteouts = true;
        content = { type: "chr", rdev: 0 };
        s.xattrs = userXattrs(x, (k) => k === "trusted.overlay.overlay.whiteout" || k === "user.overlay.whiteout");
      } else if (st.isFile()) {
        const meta = x.get("trusted.overlay.metacopy");
        const redirect = x.get("trusted.overlay.redirect");
        if (meta !== undefined) {
          const v = Buffer.from(redirect ?? []).toString("latin1");
          content = {
            type: "regular", size: st.size, inline: null,
            digest: meta.byteLength > 4 ? meta.slice(4) : null,
            payload: redirect === undefined ? null : v.startsWith("/") ? v.slice(1) : v,
          };
        } else {
          const data = new Uint8Array(readFileSync(B(p)));
          content = { type: "regular", size: BigInt(data.byteLength), inline: data, digest: null, payload: null };
        }
        s.xattrs = userXattrs(x, () => false);
      } else {
        if (st.isSymbolicLink()) content = { type: "symlink", target: new Uint8Array(readlinkSync(B(p), { encoding: "buffer" })) };
        else if (st.isCharacterDevice() || st.isBlockDevice()) content = { type: st.isCharacterDevice() ? "chr" : "blk", rdev: Number(st.rdev) };
        else if (st.isFIFO()) content = { type: "fifo" };
        else content = { type: "socket" };
        s.xattrs = userXattrs(x, () => false);
      }
      const leaf: Leaf = { kind: "leaf", stat: s, content };
      byIno.set(st.ino, { leaf, refs: 1, nlink: Number(st.nlink) });
      d.entries.set(name, leaf);
    }
    d.stat.xattrs = userXattrs(raw, (k) =>
      escapedWhiteouts &&
      (k === "trusted.overlay.overlay.whiteouts" || k === "user.overlay.whiteouts" ||
        (version >= 1 && (k === "trusted.overlay.overlay.opaque" || k === "user.overlay.opaque") && bytesEqual(raw.get(k)!, B("x")))));
  }
  for (const { leaf, refs, nlink } of byIno.values()) if (nlink !== refs) leaf.nlink = nlink;
  return { root, dirSizes };
}

/** The tree as the kernel can show it: uid/gid −1 is the overflow id. */
function kernelExpected(tree: Dir, version: 0 | 1 | 2): Dir {
  const out = expectedReadBack(tree, version);
  const fix = (n: Node) => {
    if (n.stat.uid === 0xffffffff) n.stat.uid = 65534;
    if (n.stat.gid === 0xffffffff) n.stat.gid = 65534;
  };
  const seen = new Set<Node>();
  for (const e of walk(out)) if (!seen.has(e.node)) (seen.add(e.node), fix(e.node));
  return out;
}

/** What the kernel cannot show: user.* on special files, unknown prefixes, broken capabilities. */
function ignoreXattr(key: BStr, path: BStr, node: Node): boolean {
  if (!KNOWN_PREFIXES.some((p) => key.startsWith(p))) return true;
  // (Escaped whiteouts are regular files in the image, so their user.* show.)
  const special = node.kind === "leaf" && node.content.type !== "regular" && !(node.content.type === "chr" && node.content.rdev === 0);
  if (key.startsWith("user.") && special) return true;
  return unreadable.has(`${path}\0${key}`);
}

let imageSeq = 0;

/** fsck, mount, walk and compare; returns the number of entries compared. */
function checkImage(label: string, tree: Dir, image: Uint8Array, version: 0 | 1 | 2): number {
  const path = join(dir, `img${imageSeq++}.img`);
  writeFileSync(path, image);
  const fsck = spawnSync("fsck.erofs", [path], { encoding: "utf8" });
  expect({ label, fsck: fsck.status, out: fsck.status === 0 ? "" : `${fsck.stdout}${fsck.stderr}` }).toEqual({ label, fsck: 0, out: "" });
  const fd = sys.mountFs("erofs", [["source", path], ["ro", true]], sys.MOUNT_ATTR_RDONLY);
  try {
    const { root, dirSizes } = kernelTree(`/proc/self/fd/${fd}`, version);
    const want = kernelExpected(tree, version);
    expect({ label, diff: diffTrees(want, root, { ...readBackDiffOptions(version), ignoreXattr }) }).toEqual({ label, diff: [] });
    // Directory sizes as the reader reports them (the EROFS directory size).
    const back = readImage(image, { info: true });
    for (const e of walk(back.root)) {
      if (e.node.kind !== "dir") continue;
      expect({ label, path: e.path, size: dirSizes.get(e.path) }).toEqual({ label, path: e.path, size: back.info!.get(e.node)!.size });
    }
    return dirSizes.size + [...walk(root)].length;
  } finally {
    sys.close(fd);
    rmSync(path);
  }
}

function readVector(path: string): Uint8Array {
  const b = readFileSync(path);
  return new Uint8Array(path.endsWith(".gz") ? gunzipSync(b) : b);
}

function tsv(path: string): Record<string, string>[] {
  const [head, ...rows] = readFileSync(path, "utf8").trimEnd().split("\n");
  const cols = head!.split("\t");
  return rows.map((r) => Object.fromEntries(r.split("\t").map((v, i) => [cols[i]!, v])));
}

function versionFor(flags: string, tree: Dir): 0 | 1 {
  if (flags === "-") return chooseVersion(tree);
  const min = /--min-version=(\d)/.exec(flags);
  const max = /--max-version=(\d)/.exec(flags);
  return chooseVersion(tree, min ? Number(min[1]) : undefined, max ? Number(max[1]) : undefined);
}

describe("vector images in the kernel", () => {
  const rows = [
    ...tsv(`${vectorsDir}/erofs-v1/expected.tsv`).map((r) => ({ file: `erofs-v1/${r.name}.dump`, flags: r.flags! })),
    // The 140k-entry developer tree takes long to walk through FFI; its smaller siblings stand in.
    ...tsv(`${vectorsDir}/c-assets/expected.tsv`).filter((r) => !r.name!.startsWith("cs9-x86_64-developer")).map((r) => ({ file: `c-assets/${r.name}`, flags: r.flags! })),
  ];
  test.each(rows.map((r) => [`${r.file} ${r.flags}`, r] as const))("%s", (label, r) => {
    if (!available()) return;
    const tree = parseDumpfile(readVector(`${vectorsDir}/${r.file}`), { mode: "c" });
    const version = versionFor(r.flags, tree);
    const n = checkImage(label, tree, writeErofs(tree, { version }), version);
    expect(n).toBeGreaterThan(0);
  });

  test.each(["empty", "simple"])("erofs-v2/%s.v2.img", (name) => {
    if (!available()) return;
    const tree = parseDumpfile(readVector(`${vectorsDir}/erofs-v2/${name}.dump`));
    checkImage(name, tree, readVector(`${vectorsDir}/erofs-v2/${name}.v2.img`), 2);
  });
});

describe("generated trees in the kernel, many per image", () => {
  const PER_IMAGE = 20;
  const IMAGES = 5;
  test.each([0, 1, 2] as const)(`V%i: ${PER_IMAGE * IMAGES} trees`, (version) => {
    if (!available()) return;
    const arb = arbTree({ size: "small", userXattrsOnSpecial: false, mtimeNsec: version !== 2 });
    const trees = fc.sample(arb, { numRuns: PER_IMAGE * IMAGES, seed: 7000 + version });
    let entries = 0;
    for (let i = 0; i < IMAGES; i++) {
      // The first tree of a batch is the root; the others become top-level
      // directories of it (so root stubs and root xattrs are tested too).
      const batch = trees.slice(i * PER_IMAGE, (i + 1) * PER_IMAGE);
      const root = cloneTree(batch[0]!);
      batch.slice(1).forEach((t, k) => {
        if (!root.entries.has(`batch.${k}`)) root.entries.set(`batch.${k}`, cloneTree(t));
      });
      // uid/gid 4294967295 is unmapped in every user namespace: root's
      // capabilities do not apply to such inodes, so with restrictive modes
      // even root cannot read them. Use the largest mapped id instead.
      for (const e of walk(root)) {
        if (e.node.stat.uid === 0xffffffff) e.node.stat.uid = 0xfffffffe;
        if (e.node.stat.gid === 0xffffffff) e.node.stat.gid = 0xfffffffe;
      }
      entries += checkImage(`V${version} batch ${i}`, root, writeErofs(root, { version }), version);
    }
    expect(entries).toBeGreaterThan(PER_IMAGE * IMAGES);
  });
});
