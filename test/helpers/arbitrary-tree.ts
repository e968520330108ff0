// fast-check arbitraries for shared/tree.ts trees.
//
//   import { arbTree } from "../helpers/arbitrary-tree.ts";
//   fc.assert(fc.property(arbTree({ size: "small" }), (root) => { ... }));
//
// `arbTree(opts)` produces valid composefs trees within composefs-rs limits,
// i.e. trees that `parseDumpfile(writeDumpfile(t), { mode: "strict" })`
// reproduces and every image writer must accept:
// - directories (nested, empty ones included), names of 1..255 bytes with
//   odd bytes (space, \n, \t, \\, =, -, @, #, ≥ 0x80; never "/" or NUL, never
//   "." or ".."), paths ≤ 4096 bytes;
// - inline files (mostly ≤ 64 bytes, some up to 512, empty files as
//   inline ""), external files (digest of `digestSize` bytes, payload =
//   objectPath(digest), size 1..2^40), sparse files (no digest/payload);
// - symlinks (targets of 1..1024 bytes, any byte but NUL), chr/blk devices
//   (rdev < 2^32), whiteouts (chr 0:0, never hardlinked), fifos, sockets;
// - hardlinks across directories (one Leaf object under several names;
//   `leaf.nlink` is never set: nlink = number of references);
// - xattrs: user.*, trusted.*, security.selinux, valid system.posix_acl_*,
//   trusted.overlay.* / user.overlay.* (which image writers escape), with
//   empty, binary and "="-containing values;
// - mtimes with nanoseconds, uid/gid up to 2^32-1, modes with
//   setuid/setgid/sticky.
//
// Options switch off what a consumer cannot represent (e.g. V2 images have
// no mtime nanoseconds: `{ mtimeNsec: false }`; a kernel mount hides user.*
// xattrs on symlinks/devices: `{ userXattrsOnSpecial: false }`, and unknown
// prefixes are not produced unless `unknownXattrPrefixes: true`). Size knobs:
// `size` presets, or `maxDepth` / `maxEntries` / `maxHardlinks` directly.
//
// Generated values are fresh objects on every run (specs are built into
// trees in a final map), so tests may mutate what they get.

import fc from "fast-check";
import type { BStr } from "../../shared/bytes.ts";
import type { Dir, Leaf, LeafContent, Node, Stat } from "../../shared/tree.ts";
import { objectPath } from "../../shared/tree.ts";

export interface TreeArbOptions {
  /** Preset for the knobs below: small (default) ≈ 7 entries on average, medium ≈ 50, large ≈ 1000. */
  size?: "small" | "medium" | "large";
  /** Directory nesting below the root. */
  maxDepth?: number;
  /** Entries per directory. */
  maxEntries?: number;
  /** Extra hardlinks added across the tree. 0 disables hardlinks. */
  maxHardlinks?: number;

  /** Kinds of leaves (all true by default). */
  inline?: boolean;
  /** Inline files of 65..512 bytes (composefs-rs limit); otherwise ≤ 64. */
  largeInline?: boolean;
  external?: boolean;
  sparse?: boolean;
  symlinks?: boolean;
  devices?: boolean;
  whiteouts?: boolean;
  fifos?: boolean;
  sockets?: boolean;

  /** Byte length of external digests: 32 (sha256, default) or 64 (sha512). */
  digestSize?: 32 | 64;

  /** Xattrs at all (default true). */
  xattrs?: boolean;
  /** trusted.overlay.* and user.overlay.* keys (default true). */
  overlayXattrs?: boolean;
  /** Valid system.posix_acl_access/default values (default true). */
  aclXattrs?: boolean;
  /** Keys outside the prefixes the kernel lists (lustre.*, no dot) (default false). */
  unknownXattrPrefixes?: boolean;
  /** user.* xattrs on symlinks, devices, fifos, sockets (default true; the kernel hides them). */
  userXattrsOnSpecial?: boolean;

  /** Nonzero mtime nanoseconds (default true; V2 images drop them). */
  mtimeNsec?: boolean;
  /** uid/gid above 65535 (default true). */
  bigIds?: boolean;
  /** Names with spaces, control and high bytes, long names (default true). */
  oddNames?: boolean;
  /**
   * Root whiteouts named like the V0/V1 EROFS stubs `00`..`ff` (default
   * false: an EROFS writer's stub heuristic may take such an entry for a stub).
   */
  stubNames?: boolean;
}

const PRESETS = {
  small: { maxDepth: 2, maxEntries: 6, maxHardlinks: 3 },
  medium: { maxDepth: 3, maxEntries: 12, maxHardlinks: 10 },
  large: { maxDepth: 4, maxEntries: 24, maxHardlinks: 40 },
} as const;

interface StatSpec {
  mode: number;
  uid: number;
  gid: number;
  mtimeSec: number;
  mtimeNsec: number;
  xattrs: [BStr, Uint8Array][];
}
interface LeafSpec {
  kind: "leaf";
  stat: StatSpec;
  content: LeafContent;
}
interface DirSpec {
  kind: "dir";
  stat: StatSpec;
  entries: [BStr, DirSpec | LeafSpec][];
}
interface LinkSpec {
  leaf: number;
  dir: number;
  name: BStr;
}

const bytesToBstr = (a: readonly number[]): BStr => String.fromCharCode(...a);

/** A file name: 1..255 bytes, no "/" or NUL, not "." or "..". */
export function arbName(odd = true): fc.Arbitrary<BStr> {
  const plainByte = fc.constantFrom(
    ..."abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+".split("").map((c) => c.charCodeAt(0)),
  );
  const oddByte = fc.oneof(
    fc.constantFrom(0x20, 0x0a, 0x0d, 0x09, 0x5c, 0x3d, 0x2d, 0x40, 0x23, 0x7f, 0x01, 0xff, 0x80),
    fc.integer({ min: 1, max: 255 }).filter((b) => b !== 0x2f),
  );
  const byte = odd ? fc.oneof({ arbitrary: plainByte, weight: 6 }, { arbitrary: oddByte, weight: 1 }) : plainByte;
  const short = fc.array(byte, { minLength: 1, maxLength: 12 });
  const arbs = odd
    ? fc.oneof(
        { arbitrary: short, weight: 20 },
        { arbitrary: fc.array(byte, { minLength: 13, maxLength: 255, size: "max" }), weight: 1 },
        { arbitrary: fc.constantFrom([0x2d], [0x2e, 0x2e, 0x2e], [0x2e, 0x61], [0x40]), weight: 1 },
      )
    : short;
  return arbs.map(bytesToBstr).filter((n) => n !== "." && n !== "..");
}

/** A valid POSIX ACL xattr value (version 2, USER_OBJ, GROUP_OBJ, OTHER). */
function aclValue(perms: [number, number, number]): Uint8Array {
  const out = new Uint8Array(4 + 3 * 8);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, 2, true);
  const tags = [0x01, 0x04, 0x20];
  for (let i = 0; i < 3; i++) {
    dv.setUint16(4 + i * 8, tags[i]!, true);
    dv.setUint16(6 + i * 8, perms[i]!, true);
    dv.setUint32(8 + i * 8, 0xffffffff, true);
  }
  return out;
}

function arbXattrs(o: Required<TreeArbOptions>, special: boolean): fc.Arbitrary<[BStr, Uint8Array][]> {
  if (!o.xattrs) return fc.constant([]);
  const suffix = fc
    .array(fc.oneof({ arbitrary: fc.integer({ min: 0x61, max: 0x7a }), weight: 8 }, { arbitrary: fc.integer({ min: 1, max: 255 }), weight: 1 }), {
      minLength: 1,
      maxLength: 16,
    })
    .map(bytesToBstr);
  const prefixes: fc.Arbitrary<BStr>[] = [fc.constantFrom("trusted.", "security.")];
  if (o.userXattrsOnSpecial || !special) prefixes.push(fc.constant("user."));
  if (o.overlayXattrs) {
    prefixes.push(fc.constant("trusted.overlay."));
    if (o.userXattrsOnSpecial || !special) prefixes.push(fc.constant("user.overlay."));
  }
  if (o.unknownXattrPrefixes) prefixes.push(fc.constantFrom("lustre.", "nonsense", "system.foo"));
  const key = fc.tuple(fc.oneof(...prefixes), suffix).map(([p, s]) => p + s);
  const value = fc.oneof(
    { arbitrary: fc.uint8Array({ maxLength: 24 }), weight: 6 },
    { arbitrary: fc.constantFrom("", "-", "=", "a=b=c", "x y").map((s) => new Uint8Array(Buffer.from(s, "latin1"))), weight: 2 },
    { arbitrary: fc.uint8Array({ minLength: 25, maxLength: 400, size: "max" }), weight: 1 },
  );
  const entries: fc.Arbitrary<[BStr, Uint8Array]>[] = [fc.tuple(key, value)];
  entries.push(
    fc.constantFrom("system_u:object_r:usr_t:s0\0", "system_u:object_r:bin_t:s0", "unconfined_u:object_r:user_home_t:s0\0")
      .map((l): [BStr, Uint8Array] => ["security.selinux", new Uint8Array(Buffer.from(l, "latin1"))]),
  );
  if (o.aclXattrs) {
    const perm = fc.integer({ min: 0, max: 7 });
    entries.push(
      fc.tuple(fc.constantFrom("system.posix_acl_access", "system.posix_acl_default"), perm, perm, perm)
        .map(([k, a, b, c]): [BStr, Uint8Array] => [k, aclValue([a, b, c])]),
    );
  }
  // Mostly no xattrs at all.
  return fc.oneof(
    { arbitrary: fc.constant([] as [BStr, Uint8Array][]), weight: 2 },
    { arbitrary: fc.uniqueArray(fc.oneof(...entries), { selector: (e) => e[0], minLength: 1, maxLength: 5 }), weight: 1 },
  );
}

function arbStat(o: Required<TreeArbOptions>, special: boolean, dir: boolean): fc.Arbitrary<StatSpec> {
  const mode = fc.oneof(
    { arbitrary: fc.constant(dir ? 0o755 : 0o644), weight: 6 },
    { arbitrary: fc.constantFrom(0o755, 0o700, 0o777, 0o4755, 0o2755, 0o1777, 0o6711, 0o000), weight: 2 },
    { arbitrary: fc.integer({ min: 0, max: 0o7777 }), weight: 1 },
  );
  const id = o.bigIds
    ? fc.oneof({ arbitrary: fc.constantFrom(0, 1000), weight: 6 }, { arbitrary: fc.integer({ min: 0, max: 0xffffffff }), weight: 1 },
      { arbitrary: fc.constantFrom(65535, 65536, 0xfffffffe, 0xffffffff), weight: 1 })
    : fc.oneof({ arbitrary: fc.constantFrom(0, 1000), weight: 6 }, { arbitrary: fc.integer({ min: 0, max: 65535 }), weight: 1 });
  const sec = fc.oneof(
    { arbitrary: fc.constantFrom(0, 1700000000), weight: 4 },
    { arbitrary: fc.integer({ min: 0, max: 2 ** 34 }), weight: 1 },
  );
  const nsec = o.mtimeNsec
    ? fc.oneof({ arbitrary: fc.constant(0), weight: 3 }, { arbitrary: fc.integer({ min: 0, max: 999_999_999 }), weight: 1 },
      { arbitrary: fc.constantFrom(1, 5, 500_000_000, 999_999_999), weight: 1 })
    : fc.constant(0);
  return fc.record({ mode, uid: id, gid: id, mtimeSec: sec, mtimeNsec: nsec, xattrs: arbXattrs(o, special) });
}

function arbLeaf(o: Required<TreeArbOptions>): fc.Arbitrary<LeafSpec> {
  const kinds: fc.WeightedArbitrary<LeafSpec>[] = [];
  const leaf = (content: fc.Arbitrary<LeafContent>, special: boolean, weight: number): void => {
    kinds.push({ arbitrary: fc.record({ kind: fc.constant("leaf" as const), stat: arbStat(o, special, false), content }), weight });
  };
  if (o.inline) {
    const data = o.largeInline
      ? fc.oneof({ arbitrary: fc.uint8Array({ maxLength: 64 }), weight: 8 }, { arbitrary: fc.uint8Array({ minLength: 65, maxLength: 512, size: "max" }), weight: 1 })
      : fc.uint8Array({ maxLength: 64 });
    leaf(data.map((d) => ({ type: "regular", size: BigInt(d.byteLength), inline: d, digest: null, payload: null })), false, 6);
  }
  const bigSize = fc.oneof(
    { arbitrary: fc.bigInt(1n, 1n << 20n), weight: 4 },
    { arbitrary: fc.bigInt(1n, 1n << 40n), weight: 1 },
    { arbitrary: fc.constantFrom(1n, 4096n, 4097n, 65n), weight: 1 },
  );
  if (o.external) {
    leaf(fc.tuple(fc.uint8Array({ minLength: o.digestSize, maxLength: o.digestSize }), bigSize)
      .map(([d, size]) => ({ type: "regular", size, inline: null, digest: d, payload: objectPath(d) })), false, 4);
  }
  if (o.sparse) leaf(bigSize.map((size) => ({ type: "regular", size, inline: null, digest: null, payload: null })), false, 1);
  if (o.symlinks) {
    const tbyte = fc.oneof({ arbitrary: fc.integer({ min: 0x21, max: 0x7e }), weight: 8 }, { arbitrary: fc.integer({ min: 1, max: 255 }), weight: 1 });
    const target = fc.oneof(
      { arbitrary: fc.array(tbyte, { minLength: 1, maxLength: 40 }), weight: 8 },
      { arbitrary: fc.array(tbyte, { minLength: 41, maxLength: 1024, size: "max" }), weight: 1 },
    ).map((a) => new Uint8Array(a));
    leaf(target.map((t) => ({ type: "symlink", target: t })), true, 3);
  }
  if (o.devices) {
    const rdev = fc.oneof(
      fc.tuple(fc.integer({ min: 0, max: 4095 }), fc.integer({ min: 0, max: 0xfffff }))
        .map(([maj, min]) => ((min & 0xff) | ((maj & 0xfff) << 8) | ((min & ~0xff) << 12)) >>> 0),
      fc.integer({ min: 1, max: 0xffffffff }),
    ).filter((r) => r !== 0);
    // Block device 0:0 now and then (only chr 0:0 is a whiteout).
    leaf(fc.tuple(fc.constantFrom("chr" as const, "blk" as const), rdev, fc.integer({ min: 0, max: 7 }))
      .map(([type, r, k]) => ({ type, rdev: type === "blk" && k === 0 ? 0 : r })), true, 1);
  }
  if (o.whiteouts) leaf(fc.constant({ type: "chr", rdev: 0 }), true, 1);
  if (o.fifos) leaf(fc.constant({ type: "fifo" }), true, 1);
  if (o.sockets) leaf(fc.constant({ type: "socket" }), true, 1);
  if (kinds.length === 0) throw new Error("arbTree: every kind of leaf is disabled");
  return fc.oneof(...kinds);
}

function arbDirSpec(o: Required<TreeArbOptions>, depth: number, leafArb: fc.Arbitrary<LeafSpec>, name: fc.Arbitrary<BStr>): fc.Arbitrary<DirSpec> {
  const child: fc.Arbitrary<DirSpec | LeafSpec> =
    depth <= 0 ? leafArb : fc.oneof({ arbitrary: leafArb, weight: 3 }, { arbitrary: arbDirSpec(o, depth - 1, leafArb, name), weight: 1 });
  return fc.record({
    kind: fc.constant("dir" as const),
    stat: arbStat(o, false, true),
    entries: fc.uniqueArray(fc.tuple(name, child), { selector: (e) => e[0], maxLength: o.maxEntries, size: o.size }),
  });
}

function buildStat(s: StatSpec): Stat {
  return { mode: s.mode, uid: s.uid, gid: s.gid, mtimeSec: s.mtimeSec, mtimeNsec: s.mtimeNsec, xattrs: new Map(s.xattrs) };
}

const STUB_NAME = /^[0-9a-f]{2}$/;

function build(spec: DirSpec, links: LinkSpec[], stubNames: boolean): Dir {
  const dirs: [Dir, number][] = [];
  const leaves: Leaf[] = [];
  const make = (d: DirSpec, pathLen: number): Dir => {
    const dir: Dir = { kind: "dir", stat: buildStat(d.stat), entries: new Map() };
    dirs.push([dir, pathLen]);
    for (const [name, c] of d.entries) {
      const len = pathLen + 1 + name.length;
      if (len > 4096) continue;
      if (!stubNames && pathLen === 0 && STUB_NAME.test(name) && c.kind === "leaf" && c.content.type === "chr" && c.content.rdev === 0) continue;
      let node: Node;
      if (c.kind === "dir") {
        node = make(c, len);
      } else {
        const leaf: Leaf = { kind: "leaf", stat: buildStat(c.stat), content: { ...c.content } };
        if (!(leaf.content.type === "chr" && leaf.content.rdev === 0)) leaves.push(leaf);
        node = leaf;
      }
      dir.entries.set(name, node);
    }
    return dir;
  };
  const root = make(spec, 0);
  if (leaves.length > 0) {
    for (const l of links) {
      const [dir, pathLen] = dirs[l.dir % dirs.length]!;
      if (dir.entries.has(l.name) || pathLen + 1 + l.name.length > 4096) continue;
      dir.entries.set(l.name, leaves[l.leaf % leaves.length]!);
    }
  }
  return root;
}

function resolve(opts: TreeArbOptions): Required<TreeArbOptions> {
  const p = PRESETS[opts.size ?? "small"];
  return {
    size: opts.size ?? "small",
    maxDepth: opts.maxDepth ?? p.maxDepth,
    maxEntries: opts.maxEntries ?? p.maxEntries,
    maxHardlinks: opts.maxHardlinks ?? p.maxHardlinks,
    inline: opts.inline ?? true,
    largeInline: opts.largeInline ?? true,
    external: opts.external ?? true,
    sparse: opts.sparse ?? true,
    symlinks: opts.symlinks ?? true,
    devices: opts.devices ?? true,
    whiteouts: opts.whiteouts ?? true,
    fifos: opts.fifos ?? true,
    sockets: opts.sockets ?? true,
    digestSize: opts.digestSize ?? 32,
    xattrs: opts.xattrs ?? true,
    overlayXattrs: opts.overlayXattrs ?? true,
    aclXattrs: opts.aclXattrs ?? true,
    unknownXattrPrefixes: opts.unknownXattrPrefixes ?? false,
    userXattrsOnSpecial: opts.userXattrsOnSpecial ?? true,
    mtimeNsec: opts.mtimeNsec ?? true,
    bigIds: opts.bigIds ?? true,
    oddNames: opts.oddNames ?? true,
    stubNames: opts.stubNames ?? false,
  };
}

/** Arbitrary composefs tree (see the file comment for what it contains). */
export function arbTree(opts: TreeArbOptions = {}): fc.Arbitrary<Dir> {
  const o = resolve(opts);
  const name = arbName(o.oddNames);
  const dirSpec = arbDirSpec(o, o.maxDepth, arbLeaf(o), name);
  const links = o.maxHardlinks > 0
    ? fc.array(fc.record({ leaf: fc.nat(), dir: fc.nat(), name }), { maxLength: o.maxHardlinks, size: o.size })
    : fc.constant([] as LinkSpec[]);
  return fc.tuple(dirSpec, links).map(([spec, l]) => build(spec, l, o.stubNames));
}
