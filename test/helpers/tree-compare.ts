// Human-readable differences between two shared/tree.ts trees.
//
//   import { diffTrees } from "../helpers/tree-compare.ts";
//   expect(diffTrees(expected, actual)).toEqual([]);
//
// `diffTrees(a, b, opts)` returns one line per difference, e.g.
//   "/usr/bin/ls: mtime 1.5 (a) vs 1.6 (b)"
//   "/etc/x: only in b"
//   "/a/f: xattr user.k: 0102 (a) vs missing (b)"
//   "/a/f: hardlinked with [/a/f, /b/g] (a) vs [/a/f] (b)"
// (paths shown with displayBstr; at most `maxDiffs` lines, default 50).
//
// Compared: node type, permission bits, uid, gid, mtime (sec and nsec),
// xattrs, regular-file content (size, inline bytes, digest, payload — an
// empty inline file and a size-0 file without content are the same),
// symlink targets, rdev, leaf nlink (`leaf.nlink ?? number of references`),
// and the hardlink structure (which paths share one Leaf object), directory
// listings. Directories have no stored size or nlink in the tree (both are
// derived), so there is nothing to ignore there. `Leaf.primaryPath` (where a C
// dumpfile had the full line of a hardlinked leaf) is not a filesystem
// property and is not compared.
//
// Options turn checks off: `ignoreNsec`, `ignoreMtime`, `ignoreNlink`,
// `ignoreOwnership`, `ignoreMode`, `ignorePayload`, `ignoreHardlinks`,
// `ignoreXattr` (a predicate on key/path, or a list of exact keys; keys
// ending in "*" match a prefix).

import type { BStr } from "../../shared/bytes.ts";
import { bytesEqual, displayBstr, toHex } from "../../shared/bytes.ts";
import type { Dir, Leaf, Node, Regular } from "../../shared/tree.ts";
import { countLinks, nodeType, sortedNames } from "../../shared/tree.ts";

export interface DiffOptions {
  ignoreNsec?: boolean;
  ignoreMtime?: boolean;
  /** Leaf nlink (explicit `leaf.nlink` or the reference count). */
  ignoreNlink?: boolean;
  ignoreOwnership?: boolean;
  ignoreMode?: boolean;
  /** Regular files' payload (object path). */
  ignorePayload?: boolean;
  /** Do not compare which paths share a leaf. */
  ignoreHardlinks?: boolean;
  ignoreXattr?: ((key: BStr, path: BStr, node: Node) => boolean) | readonly BStr[];
  /** Stop after this many differences (default 50). */
  maxDiffs?: number;
}

function xattrFilter(opt: DiffOptions["ignoreXattr"]): (key: BStr, path: BStr, node: Node) => boolean {
  if (opt === undefined) return () => false;
  if (typeof opt === "function") return opt;
  const exact = new Set(opt.filter((k) => !k.endsWith("*")));
  const prefixes = opt.filter((k) => k.endsWith("*")).map((k) => k.slice(0, -1));
  return (key) => exact.has(key) || prefixes.some((p) => key.startsWith(p));
}

function showBytes(b: Uint8Array): string {
  const printable = b.every((c) => c >= 0x20 && c < 0x7f);
  if (printable && b.byteLength <= 64) return JSON.stringify(Buffer.from(b).toString("latin1"));
  const hex = toHex(b.byteLength > 32 ? b.subarray(0, 32) : b);
  return `${hex}${b.byteLength > 32 ? "…" : ""} (${b.byteLength} bytes)`;
}

function isEmptyFile(c: Regular): boolean {
  return c.size === 0n && (c.inline === null || c.inline.byteLength === 0) && c.digest === null && c.payload === null;
}

/** Every path at which each leaf appears, in depth-first byte order. */
function leafPaths(root: Dir): Map<Leaf, BStr[]> {
  const out = new Map<Leaf, BStr[]>();
  const visit = (dir: Dir, prefix: BStr): void => {
    for (const name of sortedNames(dir)) {
      const child = dir.entries.get(name)!;
      const path = prefix + name;
      if (child.kind === "dir") visit(child, path + "/");
      else {
        const list = out.get(child);
        if (list === undefined) out.set(child, [path]);
        else list.push(path);
      }
    }
  };
  visit(root, "/");
  return out;
}

export function diffTrees(a: Dir, b: Dir, opts: DiffOptions = {}): string[] {
  const max = opts.maxDiffs ?? 50;
  const out: string[] = [];
  const ignoreX = xattrFilter(opts.ignoreXattr);
  const linksA = countLinks(a);
  const linksB = countLinks(b);
  const pathsA = opts.ignoreHardlinks ? null : leafPaths(a);
  const pathsB = opts.ignoreHardlinks ? null : leafPaths(b);
  const reportedGroups = new Set<Leaf>();
  const full = (): boolean => out.length > max;
  const add = (path: BStr, what: string): void => {
    if (out.length < max) out.push(`${displayBstr(path)}: ${what}`);
    else if (out.length === max) out.push("… (more differences)");
  };

  const compareStat = (path: BStr, x: Node, y: Node): void => {
    const sx = x.stat, sy = y.stat;
    if (!opts.ignoreMode && (sx.mode & 0o7777) !== (sy.mode & 0o7777)) {
      add(path, `mode ${(sx.mode & 0o7777).toString(8)} (a) vs ${(sy.mode & 0o7777).toString(8)} (b)`);
    }
    if (!opts.ignoreOwnership) {
      if (sx.uid !== sy.uid) add(path, `uid ${sx.uid} (a) vs ${sy.uid} (b)`);
      if (sx.gid !== sy.gid) add(path, `gid ${sx.gid} (a) vs ${sy.gid} (b)`);
    }
    if (!opts.ignoreMtime) {
      const nx = opts.ignoreNsec ? 0 : sx.mtimeNsec, ny = opts.ignoreNsec ? 0 : sy.mtimeNsec;
      if (sx.mtimeSec !== sy.mtimeSec || nx !== ny) add(path, `mtime ${sx.mtimeSec}.${nx} (a) vs ${sy.mtimeSec}.${ny} (b)`);
    }
    const keys = new Set<BStr>([...sx.xattrs.keys(), ...sy.xattrs.keys()]);
    for (const key of [...keys].sort()) {
      if (ignoreX(key, path, x)) continue;
      const vx = sx.xattrs.get(key), vy = sy.xattrs.get(key);
      if (vx !== undefined && vy !== undefined && bytesEqual(vx, vy)) continue;
      add(path, `xattr ${displayBstr(key)}: ${vx === undefined ? "missing" : showBytes(vx)} (a) vs ${vy === undefined ? "missing" : showBytes(vy)} (b)`);
    }
  };

  const compareLeaf = (path: BStr, x: Leaf, y: Leaf): void => {
    const cx = x.content, cy = y.content;
    if (cx.type === "regular" && cy.type === "regular") {
      if (isEmptyFile(cx) && isEmptyFile(cy)) {
        // the same empty file
      } else {
        if (cx.size !== cy.size) add(path, `size ${cx.size} (a) vs ${cy.size} (b)`);
        const ix = cx.inline, iy = cy.inline;
        if ((ix === null) !== (iy === null)) {
          add(path, `content ${ix === null ? "external" : "inline"} (a) vs ${iy === null ? "external" : "inline"} (b)`);
        } else if (ix !== null && iy !== null && !bytesEqual(ix, iy)) {
          add(path, `inline content ${showBytes(ix)} (a) vs ${showBytes(iy)} (b)`);
        }
        if (ix === null && iy === null) {
          const dx = cx.digest === null ? "none" : toHex(cx.digest), dy = cy.digest === null ? "none" : toHex(cy.digest);
          if (dx !== dy) add(path, `digest ${dx} (a) vs ${dy} (b)`);
          if (!opts.ignorePayload && cx.payload !== cy.payload) {
            add(path, `payload ${cx.payload === null ? "none" : displayBstr(cx.payload)} (a) vs ${cy.payload === null ? "none" : displayBstr(cy.payload)} (b)`);
          }
        }
      }
    } else if (cx.type === "symlink" && cy.type === "symlink") {
      if (!bytesEqual(cx.target, cy.target)) add(path, `symlink target ${showBytes(cx.target)} (a) vs ${showBytes(cy.target)} (b)`);
    } else if ((cx.type === "chr" || cx.type === "blk") && (cy.type === "chr" || cy.type === "blk")) {
      if (cx.rdev !== cy.rdev) add(path, `rdev ${cx.rdev} (a) vs ${cy.rdev} (b)`);
    }
    if (!opts.ignoreNlink) {
      const nx = x.nlink ?? linksA.get(x) ?? 1, ny = y.nlink ?? linksB.get(y) ?? 1;
      if (nx !== ny) add(path, `nlink ${nx} (a) vs ${ny} (b)`);
    }
    if (pathsA !== null && pathsB !== null) {
      const gx = pathsA.get(x) ?? [], gy = pathsB.get(y) ?? [];
      if (gx.join("\0") !== gy.join("\0") && !reportedGroups.has(x)) {
        reportedGroups.add(x);
        const show = (g: BStr[]): string => `[${g.map(displayBstr).join(", ")}]`;
        add(path, `hardlinked with ${show(gx)} (a) vs ${show(gy)} (b)`);
      }
    }
  };

  // Leaf pairs already compared (a hardlinked leaf is compared once per partner).
  const pairs = new Map<Leaf, Set<Leaf>>();
  const compareDir = (path: BStr, x: Dir, y: Dir): void => {
    const prefix = path === "/" ? "/" : path + "/";
    const names = new Set<BStr>([...x.entries.keys(), ...y.entries.keys()]);
    for (const name of [...names].sort()) {
      if (full()) return;
      const cx = x.entries.get(name), cy = y.entries.get(name);
      const p = prefix + name;
      if (cx === undefined) { add(p, "only in b"); continue; }
      if (cy === undefined) { add(p, "only in a"); continue; }
      const tx = nodeType(cx), ty = nodeType(cy);
      if (tx !== ty) { add(p, `type ${tx} (a) vs ${ty} (b)`); continue; }
      if (cx.kind === "dir" && cy.kind === "dir") {
        compareStat(p, cx, cy);
        compareDir(p, cx, cy);
      } else if (cx.kind === "leaf" && cy.kind === "leaf") {
        let partners = pairs.get(cx);
        if (partners === undefined) pairs.set(cx, (partners = new Set()));
        if (!partners.has(cy)) {
          partners.add(cy);
          compareStat(p, cx, cy);
          compareLeaf(p, cx, cy);
        }
      }
    }
  };

  compareStat("/", a, b);
  compareDir("/", a, b);
  return out;
}
