// On-disk /etc trees for the merge tests (test/host/etcmerge-disk.test.ts,
// the finalize tests): a small spec language, writers that make the trees
// for real (contents, modes, owners, xattrs, times, symlinks, fifos, sockets,
// devices, hardlinks), images made from them through the project's own
// scanner, EROFS writer and reader, and exact listings to compare results.
//
//   const O = { motd: f("one\n"), d: d({ mode: 0o700 }), "d/x": f("x", { x: { "user.a": "1" } }), l: l("/abs") };
//   writeSpec(`${dir}/O/etc`, O, { mtime: T0 });
//   const img = await imageOf(`${dir}/O`);      // { etc: Dir, content }
//   expect(listing(`${dir}/result`)).toEqual(specListing(expected));

import { createHash } from "node:crypto";
import { chmodSync, chownSync, lchownSync, linkSync, mkdirSync, readFileSync, readdirSync, readlinkSync, symlinkSync, writeFileSync } from "node:fs";

import { toHex } from "../../shared/bytes.ts";
import { readImage } from "../../shared/erofs/reader.ts";
import { writeErofs } from "../../shared/erofs/writer.ts";
import * as sys from "../../shared/sys.ts";
import { type Dir, lookup } from "../../shared/tree.ts";
import { scanDirectory } from "../../host/scan.ts";
import type { ContentSource } from "../../host/materialize.ts";

export interface Meta {
  mode?: number;
  uid?: number;
  gid?: number;
  /** xattr name → value (latin1 string or bytes). */
  x?: Record<string, string | Uint8Array>;
  mtime?: number;
}
export type Spec =
  | ({ t: "f"; c: string | Uint8Array } & Meta)
  | ({ t: "d" } & Meta)
  | ({ t: "l"; target: string } & Meta)
  | ({ t: "fifo" } & Meta)
  | ({ t: "sock" } & Meta)
  | ({ t: "chr" } & Meta)
  /** A hardlink to another path of the same tree (written after it). */
  | { t: "hl"; of: string };
export type TreeSpec = Record<string, Spec>;

export const f = (c: string | Uint8Array, m: Meta = {}): Spec => ({ t: "f", c, ...m });
export const d = (m: Meta = {}): Spec => ({ t: "d", ...m });
export const l = (target: string, m: Meta = {}): Spec => ({ t: "l", target, ...m });
export const fifo = (m: Meta = {}): Spec => ({ t: "fifo", ...m });
export const sock = (m: Meta = {}): Spec => ({ t: "sock", ...m });
export const chr = (m: Meta = {}): Spec => ({ t: "chr", ...m });
export const hl = (of: string): Spec => ({ t: "hl", of });

const bytesOf = (v: string | Uint8Array): Uint8Array => (typeof v === "string" ? new Uint8Array(Buffer.from(v, "latin1")) : v);

/** A POSIX ACL xattr value (system.posix_acl_access) granting `uid` read, consistent with mode 0644. */
export function aclReadFor(uid: number): Uint8Array {
  const entries: [number, number, number][] = [
    [0x01, 6, 0xffffffff], // USER_OBJ rw
    [0x02, 4, uid], // USER uid r
    [0x04, 4, 0xffffffff], // GROUP_OBJ r
    [0x10, 4, 0xffffffff], // MASK r
    [0x20, 4, 0xffffffff], // OTHER r
  ];
  const b = Buffer.alloc(4 + 8 * entries.length);
  b.writeUInt32LE(2, 0);
  entries.forEach(([tag, perm, id], i) => {
    b.writeUInt16LE(tag, 4 + 8 * i);
    b.writeUInt16LE(perm, 6 + 8 * i);
    b.writeUInt32LE(id, 8 + 8 * i);
  });
  return new Uint8Array(b);
}

const depth = (p: string): number => p.split("/").length;

/** Write `spec` into the (new) directory `root`; `mtime` is the default time of every node. */
export function writeSpec(root: string, spec: TreeSpec, opts: { mtime: number; rootMode?: number }): void {
  mkdirSync(root, { recursive: true, mode: 0o755 });
  chmodSync(root, opts.rootMode ?? 0o755);
  const paths = Object.keys(spec).sort((a, b) => depth(a) - depth(b) || (a < b ? -1 : 1));
  const links: [string, string][] = [];
  for (const p of paths) {
    const s = spec[p]!;
    const abs = `${root}/${p}`;
    if (s.t === "hl") {
      links.push([p, s.of]);
      continue;
    }
    switch (s.t) {
      case "d":
        mkdirSync(abs, { mode: 0o700 });
        break;
      case "f":
        writeFileSync(abs, bytesOf(s.c), { mode: 0o600 });
        break;
      case "l":
        symlinkSync(s.target, abs);
        break;
      case "fifo":
        sys.mkfifo(abs, s.mode ?? 0o644);
        break;
      case "sock":
        sys.mknod(abs, sys.S_IFSOCK | (s.mode ?? 0o755));
        break;
      case "chr":
        sys.mknod(abs, sys.S_IFCHR | (s.mode ?? 0o644), sys.makedev(1, 3));
        break;
    }
    const uid = s.uid ?? 0;
    const gid = s.gid ?? 0;
    if (s.t === "l") lchownSync(abs, uid, gid);
    else {
      chownSync(abs, uid, gid);
      chmodSync(abs, s.mode ?? (s.t === "d" ? 0o755 : 0o644));
    }
    for (const [k, v] of Object.entries(s.x ?? {})) sys.lsetxattr(abs, k, bytesOf(v));
  }
  for (const [p, of] of links) linkSync(`${root}/${of}`, `${root}/${p}`);
  // times last, deepest first (a directory's time after its children were made)
  for (const p of [...paths].reverse()) {
    const s = spec[p]!;
    if (s.t === "hl") continue;
    const t = s.mtime ?? opts.mtime;
    sys.utimensat(`${root}/${p}`, [t, 0], [t, 0]);
  }
  sys.utimensat(root, [opts.mtime, 0], [opts.mtime, 0]);
}

export interface TestImage {
  /** The image's root directory node (read back from EROFS bytes). */
  root: Dir;
  etc: Dir | null;
  content: ContentSource;
}

/**
 * An image of the directory `dir` (which holds `etc/`): scanned, written as
 * a V1 EROFS, read back with the project's reader; file contents are served
 * from the scanned files (the role of the repository's objects).
 */
export async function imageOf(dir: string): Promise<TestImage> {
  const scan = await scanDirectory(dir);
  const byDigest = new Map<string, string>();
  for (const e of scan.external) {
    const c = e.leaf.content;
    if (c.type === "regular" && c.digest !== null) byDigest.set(toHex(c.digest), e.path);
  }
  const root = readImage(writeErofs(scan.root, { version: 1 }), { name: dir }).root;
  const content: ContentSource = {
    inline: (leaf) => {
      const c = leaf.content;
      if (c.type !== "regular") return null;
      if (c.inline !== null) return c.inline;
      return c.size === 0n ? new Uint8Array(0) : null;
    },
    objectPath: (leaf) => {
      const c = leaf.content;
      return c.type === "regular" && c.digest !== null ? (byDigest.get(toHex(c.digest)) ?? null) : null;
    },
  };
  const etc = lookup(root, "/etc");
  return { root, etc: etc !== undefined && etc.kind === "dir" ? etc : null, content };
}

/** One line per node, everything a user could notice (times included, selinux included). */
export type Listing = Record<string, string>;

const xattrText = (m: Map<string, Uint8Array> | Record<string, string | Uint8Array>): string => {
  const entries = m instanceof Map ? [...m.entries()] : Object.entries(m).map(([k, v]) => [k, bytesOf(v)] as const);
  return entries
    .map(([k, v]) => `${k}=${Buffer.from(v).toString("hex")}`)
    .sort()
    .join(",");
};

/** The listing of a real directory tree (not following symlinks). */
export function listing(root: string): Listing {
  const out: Listing = {};
  const walk = (rel: string): void => {
    const dir = rel === "" ? root : `${root}/${rel}`;
    for (const name of (readdirSync(dir, { encoding: "buffer" }) as Buffer[]).map((b) => b.toString("latin1")).sort()) {
      const p = rel === "" ? name : `${rel}/${name}`;
      const abs = `${root}/${p}`;
      const st = sys.statx(abs);
      const type = st.mode & 0o170000;
      const common = `mode=${(st.mode & 0o7777).toString(8)} uid=${st.uid} gid=${st.gid} mtime=${st.mtimeSec} x=[${xattrText(sys.readXattrs(abs))}]`;
      if (type === 0o040000) {
        out[p] = `dir ${common}`;
        walk(p);
      } else if (type === 0o100000) {
        const bytes = readFileSync(abs);
        out[p] = `file ${common} nlink=${st.nlink} sha256=${createHash("sha256").update(bytes).digest("hex")}`;
      } else if (type === 0o120000) {
        const target = (readlinkSync(abs, { encoding: "buffer" }) as Buffer).toString("latin1");
        out[p] = `link uid=${st.uid} gid=${st.gid} mtime=${st.mtimeSec} x=[${xattrText(sys.readXattrs(abs))}] -> ${target}`;
      } else out[p] = `special ${type.toString(8)}`;
    }
  };
  walk("");
  return out;
}

/** The listing `writeSpec(root, spec, {mtime})` produces (hardlinks: each path once, nlink counted). */
export function specListing(spec: TreeSpec, mtime: number): Listing {
  const out: Listing = {};
  const nlinks = new Map<string, number>();
  for (const s of Object.values(spec)) if (s.t === "hl") nlinks.set(s.of, (nlinks.get(s.of) ?? 1) + 1);
  for (const [p, s0] of Object.entries(spec)) {
    const s = s0.t === "hl" ? spec[s0.of]! : s0;
    const target = s0.t === "hl" ? s0.of : p;
    if (s.t === "hl") throw new Error("hardlink to a hardlink");
    const t = s.mtime ?? mtime;
    const x = xattrText(s.x ?? {});
    const common = `mode=${(s.mode ?? (s.t === "d" ? 0o755 : 0o644)).toString(8)} uid=${s.uid ?? 0} gid=${s.gid ?? 0} mtime=${t} x=[${x}]`;
    if (s.t === "d") out[p] = `dir ${common}`;
    else if (s.t === "f") out[p] = `file ${common} nlink=${nlinks.get(target) ?? 1} sha256=${createHash("sha256").update(bytesOf(s.c)).digest("hex")}`;
    else if (s.t === "l") out[p] = `link uid=${s.uid ?? 0} gid=${s.gid ?? 0} mtime=${t} x=[${x}] -> ${s.target}`;
    else out[p] = `special ${(s.t === "fifo" ? 0o010000 : s.t === "sock" ? 0o140000 : 0o020000).toString(8)}`;
  }
  return Object.fromEntries(Object.entries(out).sort(([a], [b]) => (a < b ? -1 : 1)));
}

/** The listing a merge result (an in-memory EtcTree, e.g. applyPlan's) must have on disk. */
export function treeListing(t: Map<string, import("../../shared/etcmerge.ts").EtcNode>): Listing {
  const out: Listing = {};
  for (const p of [...t.keys()].sort((a, b) => (a < b ? -1 : 1))) {
    const n = t.get(p)!;
    const x = xattrText(n.xattrs);
    const mt = n.mtime?.sec ?? "?";
    const common = `mode=${(n.mode & 0o7777).toString(8)} uid=${n.uid} gid=${n.gid} mtime=${mt} x=[${x}]`;
    if (n.kind === "dir") out[p] = `dir ${common}`;
    else if (n.kind === "file") out[p] = `file ${common} nlink=1 sha256=${n.sha256}`;
    else out[p] = `link uid=${n.uid} gid=${n.gid} mtime=${mt} x=[${x}] -> ${Buffer.from(n.target).toString("latin1")}`;
  }
  return out;
}
