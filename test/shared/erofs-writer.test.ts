// EROFS writer against the upstream-produced vectors in ../shared/vectors:
// C mkcomposefs (V0/V1, erofs-v1/ and c-assets/) and composefs-rs (V2 and
// its V0/V1 pins, erofs-v2/). Every image is also checked with fsck.erofs.

import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import fc from "fast-check";
import { afterAll, describe, expect, test } from "vitest";
import type { BStr } from "../../shared/bytes.ts";
import { toHex, utf8 } from "../../shared/bytes.ts";
import { parseDumpfile } from "../../shared/dumpfile.ts";
import {
  BLOCK_SIZE,
  COMPOSEFS_MAGIC,
  DataLayout,
  DIRENT_SIZE,
  EROFS_SUPER_MAGIC_V1,
  EROFS_SUPER_OFFSET,
  type FormatVersion,
  XATTR_FILTER_SEED,
  iFormatDataLayout,
  readComposefsHeader,
  readDirent,
  readInodeHeader,
  readSuperblock,
  readXattrEntryHeader,
  readXattrIbodyHeader,
} from "../../shared/erofs/format.ts";
import { chooseVersion, writeErofs } from "../../shared/erofs/writer.ts";
import { CfsError } from "../../shared/errors.ts";
import { fsverityDigest } from "../../shared/fsverity.ts";
import type { Dir, Leaf } from "../../shared/tree.ts";
import { cloneTree, externalFile, inlineFile, lookup, makeDir, makeLeaf, sparseFile } from "../../shared/tree.ts";
import { xxh32, xxh32Bstr } from "../../shared/xxhash.ts";
import { arbTree } from "../helpers/arbitrary-tree.ts";
import { canRun, hasTool, vectorsDir } from "../helpers/env.ts";
import { describeImage, firstDifference } from "../helpers/erofs-fields.ts";
import { diffTrees } from "../helpers/tree-compare.ts";

// ---- helpers ---------------------------------------------------------------------------

const sha256 = (d: Uint8Array) => createHash("sha256").update(d).digest("hex");
const verity = (d: Uint8Array) => toHex(fsverityDigest(d, "sha256"));
const text = (s: string) => utf8.encode(s);

function readTsv(path: string): Record<string, string>[] {
  const [head, ...rows] = readFileSync(path, "utf8").trimEnd().split("\n");
  const cols = head!.split("\t");
  return rows.map((r) => Object.fromEntries(r.split("\t").map((v, i) => [cols[i]!, v])));
}

/** C mkcomposefs flags of expected.tsv → the version C writes. */
function versionForFlags(root: Dir, flags: string): 0 | 1 {
  if (flags === "-") return chooseVersion(root);
  const m = /^--min-version=(\d+) --max-version=(\d+)$/.exec(flags);
  if (m === null) throw new Error(`unexpected flags ${flags}`);
  return chooseVersion(root, Number(m[1]), Number(m[2]));
}

const haveFsck = hasTool("fsck.erofs");
const work = mkdtempSync(join(tmpdir(), "cfsboot-erofs-writer-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));
let fsckCount = 0;

/** fsck.erofs accepts the image (skipped with a reason when the tool is missing, except under CI). */
function expectFsckOk(img: Uint8Array, what: string): void {
  if (!canRun(haveFsck, "fsck.erofs (erofs-utils) not installed")) return;
  const path = join(work, `img-${fsckCount++}.erofs`);
  writeFileSync(path, img);
  const r = spawnSync("fsck.erofs", [path], { encoding: "utf8" });
  rmSync(path);
  expect(r.status, `fsck.erofs ${what}: ${r.stdout}${r.stderr}`).toBe(0);
}

function dv(img: Uint8Array): DataView {
  return new DataView(img.buffer, img.byteOffset, img.byteLength);
}

// ---- trees of composefs-rs tests/mkfs.rs (erofs.md §14.1) ----------------------------------

function emptyTree(): Dir {
  return makeDir({ mode: 0o755 });
}

function simpleTree(): Dir {
  const root = makeDir({ mode: 0o755 });
  root.entries.set("blkdev", makeLeaf({ type: "blk", rdev: 123 }));
  root.entries.set("chrdev", makeLeaf({ type: "chr", rdev: 123 }));
  root.entries.set("fifo", makeLeaf({ type: "fifo" }));
  root.entries.set("regular-external", makeLeaf(externalFile(new Uint8Array(32).fill(0x5a), 1234n)));
  root.entries.set("regular-inline", makeLeaf(inlineFile(text("hihi"))));
  root.entries.set("socket", makeLeaf({ type: "socket" }));
  root.entries.set("symlink", makeLeaf({ type: "symlink", target: text("/target") }));
  return root;
}

describe("composefs-rs test_erofs_digest_stability trees (built in code)", () => {
  const pins: Record<string, Record<FormatVersion, string>> = {};
  for (const r of readTsv(`${vectorsDir}/erofs-v2/expected.tsv`)) {
    const m = /^(empty|simple)_v([012])$/.exec(r.name!);
    if (m === null) continue;
    (pins[m[1]!] ??= {} as Record<FormatVersion, string>)[Number(m[2]) as FormatVersion] = r.expected_hex!;
  }
  const trees = { empty: emptyTree, simple: simpleTree };
  test("the pinned table has all six values", () => {
    expect(Object.values(pins).flatMap((p) => Object.keys(p))).toHaveLength(6);
  });
  for (const [name, make] of Object.entries(trees)) {
    for (const version of [0, 1, 2] as const) {
      test(`${name} V${version}`, () => {
        const img = writeErofs(make(), { version });
        expect(verity(img)).toBe(pins[name]![version]);
        expect(img.byteLength).toBe(version === 2 ? 4096 : 16384);
        expect(readComposefsHeader(dv(img), 0).composefsVersion).toBe(version);
        expectFsckOk(img, `${name} V${version}`);
      });
    }
    test(`${name} V2 equals ${name}.v2.img byte for byte`, () => {
      const expected = new Uint8Array(readFileSync(`${vectorsDir}/erofs-v2/${name}.v2.img`));
      const img = writeErofs(make(), { version: 2 });
      const diff = firstDifference(describeImage(expected), describeImage(img));
      expect(diff).toBe("");
      expect(Buffer.compare(img, expected)).toBe(0);
    });
  }
  test("V0 and V1 differ only in the header's composefs_version", () => {
    const v0 = writeErofs(simpleTree(), { version: 0 });
    const v1 = writeErofs(simpleTree(), { version: 1 });
    const diffs: number[] = [];
    for (let i = 0; i < v0.length; i++) if (v0[i] !== v1[i]) diffs.push(i);
    expect(diffs).toEqual([12]);
  });
});

// ---- erofs.md §14.4 worked example ------------------------------------------------------------

describe("worked example: empty tree as V1", () => {
  const img = writeErofs(emptyTree(), { version: 1 });
  const d = dv(img);
  test("header and superblock", () => {
    expect(img.byteLength).toBe(16384);
    const h = readComposefsHeader(d, 0);
    expect(h).toEqual({ magic: COMPOSEFS_MAGIC, version: 1, flags: 0, composefsVersion: 1 });
    expect(img.subarray(16, 1024).every((b) => b === 0)).toBe(true);
    const sb = readSuperblock(d, EROFS_SUPER_OFFSET);
    expect(sb.magic).toBe(EROFS_SUPER_MAGIC_V1);
    expect(sb.featureCompat).toBe(6);
    expect(sb.blkszbits).toBe(12);
    expect(sb.rootNid).toBe(36);
    expect(sb.inos).toBe(257n);
    expect(sb.buildTime).toBe(0n);
    expect(sb.buildTimeNsec).toBe(0);
    expect(sb.blocks).toBe(4);
    expect(sb.xattrBlkaddr).toBe(2);
    expect(sb.metaBlkaddr).toBe(0);
    expect(sb.featureIncompat).toBe(0);
  });
  test("root inode and its opaque xattr", () => {
    const root = readInodeHeader(d, 1152);
    expect(root.extended).toBe(false);
    expect(root.format).toBe(0);
    expect(root.xattrIcount).toBe(6);
    expect(root.mode).toBe(0o40755);
    expect(root.nlink).toBe(2);
    expect(root.size).toBe(4096n);
    expect(root.u).toBe(3);
    expect(root.ino).toBe(0);
    const xh = readXattrIbodyHeader(d, 1184);
    expect(xh).toEqual({ nameFilter: 0xffefffff, sharedCount: 0 });
    expect(readXattrEntryHeader(d, 1196)).toEqual({ nameLen: 14, nameIndex: 4, valueSize: 1 });
    expect(Buffer.from(img.subarray(1200, 1215)).toString("latin1")).toBe("overlay.opaquey");
    expect(img[1215]).toBe(0);
  });
  test("256 stubs: compact chr 0:0, mode 020644", () => {
    for (let k = 0; k < 256; k++) {
      const s = readInodeHeader(d, 1216 + 32 * k);
      expect([s.format, s.xattrIcount, s.mode, s.nlink, s.size, s.u, s.ino]).toEqual([0, 0, 0o20644, 1, 0n, 0, k + 1]);
    }
    expect(img.subarray(9408, 12288).every((b) => b === 0)).toBe(true);
  });
  test("root directory block", () => {
    const first = readDirent(d, 12288);
    expect(first.nameoff).toBe(258 * DIRENT_SIZE);
    expect(first.nameoff).toBe(3096);
    const names: string[] = [];
    for (let i = 0; i < 258; i++) {
      const e = readDirent(d, 12288 + i * DIRENT_SIZE);
      const next = i < 257 ? readDirent(d, 12288 + (i + 1) * DIRENT_SIZE).nameoff : 3611;
      names.push(Buffer.from(img.subarray(12288 + e.nameoff, 12288 + next)).toString("latin1"));
      expect(e.nid).toBe(i < 2 ? 36 : 36 + i);
      expect(e.fileType).toBe(i < 2 ? 2 : 3);
    }
    expect(names.slice(0, 4)).toEqual([".", "..", "00", "01"]);
    expect(names[257]).toBe("ff");
    expect(img.subarray(12288 + 3611, 16384).every((b) => b === 0)).toBe(true);
  });
  test("the same tree as V2 is one block with the root at nid 36", () => {
    const v2 = writeErofs(emptyTree(), { version: 2 });
    const r = readInodeHeader(dv(v2), 1152);
    expect(v2.byteLength).toBe(4096);
    expect([r.format, r.size, r.nlink, r.ino, r.mtime]).toEqual([5, 27n, 2, 36, 0n]);
    expect(readDirent(dv(v2), 1216)).toEqual({ nid: 36, nameoff: 24, fileType: 2 });
  });
});

// ---- field-level rules --------------------------------------------------------------------------

/** Inode header of `path` in an image (walks the directory entries). */
function inodeAt(img: Uint8Array, path: BStr): ReturnType<typeof readInodeHeader> & { nid: number } {
  const d = dv(img);
  let nid = readSuperblock(d, EROFS_SUPER_OFFSET).rootNid;
  for (const part of path.split("/").filter((p) => p !== "")) {
    const dir = readInodeHeader(d, nid * 32);
    const size = Number(dir.size);
    const layout = iFormatDataLayout(dir.format);
    const regions: [number, number][] = [];
    for (let b = 0; b < Math.floor(size / BLOCK_SIZE); b++) regions.push([(dir.u + b) * BLOCK_SIZE, BLOCK_SIZE]);
    if (layout === DataLayout.FLAT_INLINE && size % BLOCK_SIZE > 0) {
      const xs = dir.xattrIcount === 0 ? 0 : 12 + 4 * (dir.xattrIcount - 1);
      regions.push([nid * 32 + (dir.extended ? 64 : 32) + xs, size % BLOCK_SIZE]);
    }
    let found = -1;
    for (const [at, len] of regions) {
      const n = readDirent(d, at).nameoff / DIRENT_SIZE;
      for (let i = 0; i < n; i++) {
        const e = readDirent(d, at + i * DIRENT_SIZE);
        let end = i + 1 < n ? readDirent(d, at + (i + 1) * DIRENT_SIZE).nameoff : len;
        if (i + 1 === n) while (end > e.nameoff && img[at + end - 1] === 0) end--;
        if (Buffer.from(img.subarray(at + e.nameoff, at + end)).toString("latin1") === part) found = e.nid;
      }
    }
    if (found < 0) throw new Error(`${path}: ${part} not found`);
    nid = found;
  }
  return { ...readInodeHeader(d, nid * 32), nid };
}

describe("data layouts", () => {
  test("chunk format of metadata-only files (§9.3 examples)", () => {
    const sizes: [bigint, number][] = [[1n, 0], [2n, 0], [4096n, 0], [4097n, 1], [1n << 20n, 8], [(1n << 20n) + 1n, 9]];
    const root = makeDir({ mode: 0o755 });
    for (const [size] of sizes) root.entries.set(`f${size}`, makeLeaf(sparseFile(size)));
    const img = writeErofs(root, { version: 0 });
    for (const [size, fmt] of sizes) {
      const ino = inodeAt(img, `/f${size}`);
      expect(iFormatDataLayout(ino.format)).toBe(DataLayout.CHUNK_BASED);
      expect(ino.u).toBe(fmt);
      expect(ino.size).toBe(size);
    }
    const v2 = writeErofs(root, { version: 2 });
    for (const [size] of sizes) expect(inodeAt(v2, `/f${size}`).u).toBe(31);
    expectFsckOk(img, "chunk formats");
  });
  test("compact inodes only at the minimum mtime and for small ids (§8.4)", () => {
    const root = makeDir({ mode: 0o755, mtimeSec: 100, mtimeNsec: 5 });
    root.entries.set("same", makeLeaf({ type: "fifo" }, { mtimeSec: 100, mtimeNsec: 5 }));
    root.entries.set("later-ns", makeLeaf({ type: "fifo" }, { mtimeSec: 100, mtimeNsec: 6 }));
    root.entries.set("big-uid", makeLeaf({ type: "fifo" }, { mtimeSec: 100, mtimeNsec: 5, uid: 65536 }));
    root.entries.set("uid-65535", makeLeaf({ type: "fifo" }, { mtimeSec: 100, mtimeNsec: 5, uid: 65535 }));
    root.entries.set("huge", makeLeaf(sparseFile(1n << 32n), { mtimeSec: 100, mtimeNsec: 5 }));
    const img = writeErofs(root, { version: 1 });
    const sb = readSuperblock(dv(img), EROFS_SUPER_OFFSET);
    expect([sb.buildTime, sb.buildTimeNsec]).toEqual([100n, 5]);
    expect(inodeAt(img, "/same").extended).toBe(false);
    expect(inodeAt(img, "/uid-65535").extended).toBe(false);
    const later = inodeAt(img, "/later-ns");
    expect([later.extended, later.mtime, later.mtimeNsec]).toEqual([true, 100n, 6]);
    expect(inodeAt(img, "/big-uid").extended).toBe(true);
    expect(inodeAt(img, "/huge").extended).toBe(true);
    // V2: always extended, nanoseconds dropped, build time 0.
    const v2 = writeErofs(root, { version: 2 });
    const l2 = inodeAt(v2, "/later-ns");
    expect([l2.extended, l2.mtime, l2.mtimeNsec]).toEqual([true, 100n, 0]);
    expect(readSuperblock(dv(v2), EROFS_SUPER_OFFSET).buildTime).toBe(0n);
    expectFsckOk(img, "mtimes");
  });
  test("inline files: Epoch1 splits data blocks and tail at 2048, V2 keeps it inline", () => {
    const root = makeDir({ mode: 0o755 });
    for (const n of [0, 1, 2048, 2049, 4096, 4097, 5000]) root.entries.set(`f${n}`, makeLeaf(inlineFile(new Uint8Array(n).fill(0x41))));
    const img = writeErofs(root, { version: 0 });
    const layouts = [0, 1, 2048, 2049, 4096, 4097, 5000].map((n) => iFormatDataLayout(inodeAt(img, `/f${n}`).format));
    const { FLAT_PLAIN: P, FLAT_INLINE: I } = DataLayout;
    expect(layouts).toEqual([P, I, I, P, P, I, I]);
    expectFsckOk(img, "inline sizes");
  });
  test("symlinks: Epoch1 moves a target to a data block when inode + xattrs + target reach 4096", () => {
    const root = makeDir({ mode: 0o755 });
    root.entries.set("short", makeLeaf({ type: "symlink", target: new Uint8Array(100).fill(0x61) }));
    root.entries.set("long", makeLeaf({ type: "symlink", target: new Uint8Array(4095).fill(0x62) }));
    const img = writeErofs(root, { version: 0 });
    expect(iFormatDataLayout(inodeAt(img, "/short").format)).toBe(DataLayout.FLAT_INLINE);
    const long = inodeAt(img, "/long");
    expect(iFormatDataLayout(long.format)).toBe(DataLayout.FLAT_PLAIN);
    expect(img.subarray(long.u * BLOCK_SIZE, long.u * BLOCK_SIZE + 4095).every((b) => b === 0x62)).toBe(true);
    expectFsckOk(img, "symlinks");
  });
  test("HAS_ACL header flag for POSIX ACL xattrs (Epoch1 only)", () => {
    const root = makeDir({ mode: 0o755 });
    const acl = new Uint8Array([2, 0, 0, 0, 1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff, 4, 0, 4, 0, 0xff, 0xff, 0xff, 0xff, 0x20, 0, 4, 0, 0xff, 0xff, 0xff, 0xff]);
    root.entries.set("f", makeLeaf(inlineFile(text("x")), { xattrs: new Map([["system.posix_acl_access", acl]]) }));
    expect(readComposefsHeader(dv(writeErofs(root, { version: 0 })), 0).flags).toBe(1);
    expect(readComposefsHeader(dv(writeErofs(root, { version: 2 })), 0).flags).toBe(0);
    expect(readComposefsHeader(dv(writeErofs(simpleTree(), { version: 0 })), 0).flags).toBe(0);
  });
});

describe("xxh32", () => {
  test("reference values and agreement with Bun.hash.xxHash32", () => {
    expect(xxh32(new Uint8Array(0), 0)).toBe(0x02cc5d05);
    expect(xxh32Bstr("abc", 0)).toBe(0x32d153ff);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 100 }), fc.integer({ min: 0, max: 0xffffffff }), (data, seed) => {
        expect(xxh32(data, seed)).toBe(Bun.hash.xxHash32(data, seed));
      }),
    );
  });
  test("name filter bits of erofs.md §7.3", () => {
    const bit = (suffix: string, index: number) => xxh32Bstr(suffix, XATTR_FILTER_SEED + index) % 32;
    expect(bit("overlay.opaque", 4)).toBe(20);
    expect(bit("overlay.metacopy", 4)).toBe(31);
    expect(bit("overlay.redirect", 4)).toBe(17);
    expect(bit("selinux", 6)).toBe(11);
  });
});

// ---- dumpfile vectors --------------------------------------------------------------------------------

describe("special_v1.dump as V1 (erofs.md §14.2)", () => {
  test("fs-verity digest", () => {
    const root = parseDumpfile(readFileSync(`${vectorsDir}/erofs-v2/special_v1-trimmed.dump`), { mode: "c" });
    expect(chooseVersion(root)).toBe(1);
    const img = writeErofs(root, { version: 1 });
    expect(verity(img)).toBe("b1c78c25db8638be5b9b483472d32ee9624d8d32ded626a91cd536116e8df97c");
    expectFsckOk(img, "special_v1");
  });
});

describe("erofs-v1 vectors (C mkcomposefs --from-file)", () => {
  const rows = readTsv(`${vectorsDir}/erofs-v1/expected.tsv`);
  test("the table has 99 rows", () => expect(rows).toHaveLength(99));
  const trees = new Map<string, Dir>();
  for (const r of rows) {
    test(`${r.name} ${r.flags}`, () => {
      let root = trees.get(r.name!);
      if (root === undefined) {
        root = parseDumpfile(readFileSync(`${vectorsDir}/erofs-v1/${r.name}.dump`), { mode: "c" });
        trees.set(r.name!, root);
      }
      const version = versionForFlags(root, r.flags!);
      expect(version).toBe(Number(r.composefs_version));
      const img = writeErofs(root, { version });
      expect(img.byteLength).toBe(Number(r.size_bytes));
      expect(readComposefsHeader(dv(img), 0).composefsVersion).toBe(Number(r.composefs_version));
      expect(sha256(img)).toBe(r.image_sha256);
      expect(verity(img)).toBe(r.image_fsverity_sha256);
      expectFsckOk(img, `${r.name} ${r.flags}`);
    });
  }
  test("a11: hardlinks numbered at their C target line (Leaf.primaryPath) reproduce C's image", () => {
    // Independent of the parser: mark the full (non-@) lines of the hardlinked leaves.
    const root = parseDumpfile(readFileSync(`${vectorsDir}/erofs-v1/a11-hardlink-late-target.dump`), { mode: "c" });
    for (const p of ["/z/target", "/z/c-target", "/b-target"]) (lookup(root, p) as Leaf).primaryPath = p;
    const want = rows.filter((r) => r.name === "a11-hardlink-late-target");
    for (const r of want) expect(sha256(writeErofs(root, { version: versionForFlags(root, r.flags!) }))).toBe(r.image_sha256);
  });
});

describe("c-assets (composefs tests/assets, plain sha256)", () => {
  const rows = readTsv(`${vectorsDir}/c-assets/expected.tsv`);
  test("the table has 14 rows", () => expect(rows).toHaveLength(14));
  for (const r of rows) {
    test(r.name!, () => {
      const dir = `${vectorsDir}/c-assets`;
      let data: Uint8Array = readFileSync(`${dir}/${r.name}`);
      if (r.name!.endsWith(".gz")) data = gunzipSync(data);
      const root = parseDumpfile(data, { mode: "c" });
      // test-checksums.sh: --min-version=N --max-version=N from <asset>.version, else defaults.
      let version: 0 | 1;
      try {
        const n = Number(readFileSync(`${dir}/${r.name}.version`, "utf8").trim());
        version = chooseVersion(root, n, n);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
        version = chooseVersion(root);
      }
      const img = writeErofs(root, { version });
      const upstream = readFileSync(`${dir}/${r.name}.sha256`, "utf8").trim().split(/\s+/)[0];
      expect(sha256(img)).toBe(upstream);
      expect(sha256(img)).toBe(r.image_sha256);
      expect(verity(img)).toBe(r.image_fsverity_sha256);
      expect(img.byteLength).toBe(Number(r.size_bytes));
      expectFsckOk(img, r.name!);
    });
  }
  test("should-fail-too-big: the writer refuses files above 2^53 bytes (C: File too large)", () => {
    // The dumpfile parser already refuses the asset; the writer must too for trees built otherwise.
    const size = 9500000000000000n; // the asset's SIZE
    const root = makeDir({ mode: 0o755 });
    root.entries.set("toobig", makeLeaf(sparseFile(size)));
    expect(() => writeErofs(root, { version: 0 })).toThrow(/^\/toobig: file too large/);
    root.entries.set("toobig", makeLeaf(sparseFile(1n << 53n)));
    expectFsckOk(writeErofs(root, { version: 0 }), "2^53-byte file");
  });
});

describe("erofs-v2 vectors (composefs-rs pins)", () => {
  for (const r of readTsv(`${vectorsDir}/erofs-v2/expected.tsv`)) {
    test(`${r.name} (${r.erofs_format} of ${r.dumpfile})`, () => {
      const version = Number(r.erofs_format!.slice(1)) as FormatVersion;
      const root = parseDumpfile(readFileSync(`${vectorsDir}/erofs-v2/${r.dumpfile}`), { mode: version === 2 ? "strict" : "c" });
      const img = writeErofs(root, { version });
      expect(verity(img)).toBe(r.expected_hex);
      expect(sha256(img)).toBe(r.image_sha256);
      expect(img.byteLength).toBe(Number(r.size_bytes));
      if (version === 2) {
        const expected = readFileSync(`${vectorsDir}/erofs-v2/${r.dumpfile!.replace(/\.dump$/, "")}.v2.img`);
        expect(Buffer.compare(img, expected)).toBe(0);
      }
      expectFsckOk(img, r.name!);
    });
  }
});

// ---- version choice (erofs.md §12) ----------------------------------------------------------------------

describe("chooseVersion (C mkcomposefs --min-version/--max-version)", () => {
  const plain = simpleTree();
  const withWhiteout = simpleTree();
  const sub = makeDir({ mode: 0o755 });
  sub.entries.set("gone", makeLeaf({ type: "chr", rdev: 0 }));
  withWhiteout.entries.set("sub", sub);
  test.each([
    ["defaults, no whiteout", plain, undefined, undefined, 0],
    ["defaults, whiteout deep in the tree", withWhiteout, undefined, undefined, 1],
    ["--min-version=1 alone", plain, 1, undefined, 1],
    ["--max-version=0 alone, whiteout", withWhiteout, undefined, 0, 0],
    ["--max-version=1 alone, whiteout", withWhiteout, undefined, 1, 1],
    ["--max-version=1 alone, no whiteout", plain, undefined, 1, 0],
    ["--min-version=0 --max-version=0, whiteout", withWhiteout, 0, 0, 0],
    ["--min-version=1 --max-version=0 (max raised)", plain, 1, 0, 1],
  ] as const)("%s", (_what, tree, min, max, want) => {
    expect(chooseVersion(tree, min, max)).toBe(want);
  });
  test("versions above 1 are refused like C", () => {
    expect(() => chooseVersion(plain, 2, 2)).toThrow(CfsError);
    expect(() => chooseVersion(plain, undefined, 2)).toThrow(/--max-version/);
  });
  test("a chr 0:0 that is not a whiteout stub of the root is escaped (V1 marks its directory)", () => {
    const img = writeErofs(withWhiteout, { version: 1 });
    const gone = inodeAt(img, "/sub/gone");
    expect(gone.mode).toBe(0o100000);
    expect(gone.u).toBe(0);
    expect(describeImage(img).join("\n")).toMatch(/"trusted\.overlay\.overlay\.opaque" = "x"/);
    expect(describeImage(writeErofs(withWhiteout, { version: 0 })).join("\n")).not.toMatch(/overlay\.opaque" = "x"/);
  });
});

// ---- validation (erofs.md §2) -----------------------------------------------------------------------------

describe("impossible trees are refused with a CfsError naming the path", () => {
  const cases: [string, () => Dir, RegExp][] = [
    ["name longer than 255 bytes", () => {
      const r = makeDir();
      r.entries.set("x".repeat(256), makeLeaf({ type: "fifo" }));
      return r;
    }, /^\/x{256}: file name longer than 255 bytes$/],
    ["hardlinked whiteout", () => {
      const r = makeDir();
      const w = makeLeaf({ type: "chr", rdev: 0 });
      r.entries.set("a", w);
      r.entries.set("b", w);
      return r;
    }, /^\/b: a whiteout \(chr 0:0\) cannot be hardlinked$/],
    ["name with a slash", () => {
      const r = makeDir();
      r.entries.set("a/b", makeLeaf({ type: "fifo" }));
      return r;
    }, /invalid file name/],
    ["a directory linked twice", () => {
      const r = makeDir();
      const d = makeDir();
      r.entries.set("a", d);
      r.entries.set("b", d);
      return r;
    }, /^\/b: directory linked more than once$/],
    ["empty symlink target", () => {
      const r = makeDir();
      r.entries.set("l", makeLeaf({ type: "symlink", target: new Uint8Array(0) }));
      return r;
    }, /^\/l: empty symlink target$/],
    ["xattr value above 65535 bytes", () => {
      const r = makeDir();
      r.entries.set("f", makeLeaf({ type: "fifo" }, { xattrs: new Map([["user.big", new Uint8Array(65536)]]) }));
      return r;
    }, /^\/f: xattr user\.big: value longer than 65535 bytes$/],
    ["mtime nanoseconds out of range", () => makeDir({ mtimeNsec: 1_000_000_000 }), /^\/: mtime nanoseconds/],
  ];
  for (const [what, make, message] of cases) {
    test(what, () => {
      for (const version of [0, 2] as const) {
        let err: unknown;
        try {
          writeErofs(make(), { version });
        } catch (e) {
          err = e;
        }
        expect(err).toBeInstanceOf(CfsError);
        expect((err as CfsError).message).toMatch(message);
      }
    });
  }
  test("V2 cannot hold inline content of a block or more", () => {
    const r = makeDir();
    r.entries.set("f", makeLeaf(inlineFile(new Uint8Array(4096))));
    expect(() => writeErofs(r, { version: 2 })).toThrow(/\/f: inline content of 4096 bytes/);
    expectFsckOk(writeErofs(r, { version: 0 }), "4096-byte inline V0");
  });
  test("V2 refuses an inline tail that its padding rule would let cross a block", () => {
    const r = makeDir();
    r.entries.set("f", makeLeaf(inlineFile(new Uint8Array(4000).fill(1))));
    expectFsckOk(writeErofs(r, { version: 2 }), "4000-byte inline V2");
    r.entries.set("f", makeLeaf(inlineFile(new Uint8Array(4090).fill(1))));
    expect(() => writeErofs(r, { version: 2 })).toThrow(/^\/f: 4090 bytes of inline data do not fit one block of a V2 image$/);
    expectFsckOk(writeErofs(r, { version: 1 }), "4090-byte inline V1");
  });
});

// ---- properties ----------------------------------------------------------------------------------------------

describe("generated trees", () => {
  test("every version is accepted by fsck.erofs, deterministic, and leaves the tree untouched", () => {
    fc.assert(
      fc.property(arbTree({ size: "medium" }), (root) => {
        const before = cloneTree(root);
        const v2alone = writeErofs(cloneTree(root), { version: 2 });
        const images = ([0, 1, 2] as const).map((version) => writeErofs(root, { version }));
        expect(diffTrees(before, root)).toEqual([]);
        expect(Buffer.compare(images[2]!, v2alone)).toBe(0);
        expect(Buffer.compare(images[1]!, writeErofs(root, { version: 1 }))).toBe(0);
        images.forEach((img, version) => {
          expect(img.byteLength % BLOCK_SIZE).toBe(0);
          expect(readSuperblock(dv(img), EROFS_SUPER_OFFSET).blocks).toBe(img.byteLength / BLOCK_SIZE);
          expectFsckOk(img, `generated tree V${version}`);
        });
      }),
      { numRuns: 25 },
    );
  });
  test("sha512 digests give 68-byte metacopy values", () => {
    fc.assert(
      fc.property(arbTree({ size: "small", digestSize: 64 }), (root) => {
        for (const version of [1, 2] as const) expectFsckOk(writeErofs(root, { version }), `sha512 tree V${version}`);
      }),
      { numRuns: 5 },
    );
    const r = makeDir({ mode: 0o755 });
    r.entries.set("f", makeLeaf(externalFile(new Uint8Array(64).fill(7), 100n)));
    expect(describeImage(writeErofs(r, { version: 1 })).join("\n")).toMatch(/"trusted\.overlay\.metacopy" = 0x00440002(07){64}/);
  });
});
