// host/scan.ts on constructed trees: every file type, xattrs of several
// namespaces, hardlinks, odd names, nanosecond mtimes, sparse files; the
// C-compatible options; the flat digest store.

import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chownSync,
  lchownSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
  openSync,
  writeSync,
  closeSync,
  chmodSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { type BStr, bstr, toHex } from "../../shared/bytes.ts";
import { CfsError } from "../../shared/errors.ts";
import { fsverityDigest } from "../../shared/fsverity.ts";
import * as sys from "../../shared/sys.ts";
import { type Dir, type Node, lookup, objectPath, walk } from "../../shared/tree.ts";
import { DigestPool } from "../../host/digest.ts";
import { fillDigestStore, scanDirectory, type ScanResult } from "../../host/scan.ts";
import { hasTool, isRoot } from "../helpers/env.ts";

let base: string;
let src: string;
let pool: DigestPool;

const enc = (s: string) => new TextEncoder().encode(s);
const b = (s: string): Buffer => Buffer.from(s, "latin1");
function ruleA(size: number, salt = 0): Uint8Array {
  const d = new Uint8Array(size);
  for (let i = 0; i < size; i++) d[i] = ((i * 31 + 7) % 251) ^ salt;
  return d;
}

/** What the tree must contain, built independently of the scanner. */
interface Expect {
  type: "dir" | "regular" | "symlink" | "chr" | "blk" | "fifo" | "socket";
  mode: number;
  uid?: number;
  gid?: number;
  mtime: [number, number];
  xattrs?: Record<string, Uint8Array>;
  data?: Uint8Array;
  target?: Uint8Array;
  rdev?: [number, number];
}
const expected = new Map<BStr, Expect>();

// Paths are byte strings relative to src ("" = root).
function p(rel: BStr): BStr {
  return rel === "" ? bstr(b(src)) : `${bstr(b(src))}/${rel}`;
}
let tick = 1_600_000_000;
function stamp(rel: BStr, e: Expect): void {
  const ns = (tick * 7919) % 1_000_000_000;
  e.mtime = [tick++, ns];
  expected.set(rel, e);
}

function mkfile(rel: BStr, data: Uint8Array, mode = 0o644, xattrs: Record<string, Uint8Array> = {}): void {
  writeFileSync(b(p(rel)), data);
  chmodSync(b(p(rel)), mode);
  for (const [k, v] of Object.entries(xattrs)) sys.lsetxattr(p(rel), k, v);
  stamp(rel, { type: "regular", mode, mtime: [0, 0], data, xattrs });
}

beforeAll(() => {
  pool = new DigestPool({ workers: 2 });
  base = mkdtempSync(join(tmpdir(), "cfsboot-scan-"));
  chmodSync(base, 0o755);
  src = join(base, "src");
  mkdirSync(src);
  mkdirSync(b(p("sub/deeper/deepest")), { recursive: true });
  mkdirSync(b(p("hard")));
  mkdirSync(b(p("sticky")));

  mkfile("empty", new Uint8Array());
  mkfile("one", enc("x"));
  mkfile("f64", ruleA(64), 0o600, { "user.small": enc("s") });
  mkfile("f65", ruleA(65), 0o4755, { "user.a": enc("1"), "user.b=c d": new Uint8Array([0, 255]) });
  mkfile("big", ruleA((1 << 20) + 3, 1), 0o444);
  mkfile("sub/deeper/deepest/nine", ruleA(9 * 1048576 + 17, 2));
  mkfile("dup1", ruleA(5000, 3));
  mkfile("dup2", ruleA(5000, 3), 0o640);
  mkfile("sub/zero-mode", ruleA(100, 4), 0o000);
  // Names: newline, invalid UTF-8, backslash, space, UTF-8.
  mkfile("name with\nnewline", enc("n"));
  mkfile("\xff\xfe", ruleA(70, 5));
  mkfile("back\\slash", enc("\\"));
  mkfile("sp ace", enc(" "));
  mkfile(bstr(enc("grüße")), enc("utf8"));

  // A sparse file: 10 MiB hole, then data.
  const sparse = p("sparse");
  writeFileSync(b(sparse), "");
  truncateSync(b(sparse), 10 * 1048576);
  const fd = openSync(b(sparse), "r+");
  writeSync(fd, enc("tail data"), 0, 9, 10 * 1048576 - 9);
  closeSync(fd);
  const sparseData = new Uint8Array(10 * 1048576);
  sparseData.set(enc("tail data"), 10 * 1048576 - 9);
  chmodSync(b(sparse), 0o644);
  stamp("sparse", { type: "regular", mode: 0o644, mtime: [0, 0], data: sparseData });

  // Hardlinks: an external and an inline file, each with two names.
  mkfile("hard/ext-a", ruleA(3000, 6));
  linkSync(b(p("hard/ext-a")), b(p("sub/ext-b")));
  mkfile("hard/small-a", enc("tiny"));
  linkSync(b(p("hard/small-a")), b(p("hard/small-b")));

  for (const [rel, target] of [
    ["sym", enc("f65")],
    ["sym-long", ruleA(1000).map((c) => 0x41 + (c % 26))],
    ["sym-odd", new Uint8Array([0xff, 0x0a, 0x20, 0x78])],
    ["sub/up", enc("../f65")],
  ] as const) {
    symlinkSync(b(bstr(target)), b(p(rel)));
    stamp(rel, { type: "symlink", mode: 0o777, mtime: [0, 0], target });
  }

  sys.mkfifo(p("fifo"), 0o620);
  chmodSync(b(p("fifo")), 0o620);
  stamp("fifo", { type: "fifo", mode: 0o620, mtime: [0, 0] });
  sys.mknod(p("sock"), sys.S_IFSOCK | 0o755);
  chmodSync(b(p("sock")), 0o755);
  stamp("sock", { type: "socket", mode: 0o755, mtime: [0, 0] });

  if (isRoot) {
    sys.mknod(p("chr"), sys.S_IFCHR | 0o600, sys.makedev(4, 300));
    stamp("chr", { type: "chr", mode: 0o600, mtime: [0, 0], rdev: [4, 300] });
    sys.mknod(p("sub/blk"), sys.S_IFBLK | 0o660, sys.makedev(259, (1 << 20) - 1));
    chmodSync(b(p("sub/blk")), 0o660);
    stamp("sub/blk", { type: "blk", mode: 0o660, mtime: [0, 0], rdev: [259, (1 << 20) - 1] });
    sys.mknod(p("sub/whiteout"), sys.S_IFCHR, 0);
    stamp("sub/whiteout", { type: "chr", mode: 0, mtime: [0, 0], rdev: [0, 0] });
    // Other namespaces, ownership.
    sys.lsetxattr(p("f65"), "trusted.t", enc("trusted value"));
    sys.lsetxattr(p("f65"), "security.test", enc("sec"));
    expected.get("f65")!.xattrs = { ...expected.get("f65")!.xattrs, "trusted.t": enc("trusted value"), "security.test": enc("sec") };
    sys.lsetxattr(p("sym"), "trusted.onlink", enc("L"));
    expected.get("sym")!.xattrs = { "trusted.onlink": enc("L") };
    chownSync(b(p("dup2")), 1234, 5678);
    Object.assign(expected.get("dup2")!, { uid: 1234, gid: 5678 });
    lchownSync(b(p("sym-odd")), 4321, 8765);
    Object.assign(expected.get("sym-odd")!, { uid: 4321, gid: 8765 });
  }

  // Directories last (creating children changes their mtime), deepest first.
  const dirs: [BStr, number, Record<string, Uint8Array>][] = [
    ["sub/deeper/deepest", 0o700, {}],
    ["sub/deeper", 0o755, {}],
    ["sub", 0o2755, { "user.dirattr": enc("d") }],
    ["hard", 0o755, {}],
    ["sticky", 0o1777, {}],
    ["", 0o755, { "user.rootattr": enc("r") }],
  ];
  for (const [rel, mode, xattrs] of dirs) {
    chmodSync(b(p(rel)), mode);
    for (const [k, v] of Object.entries(xattrs)) sys.lsetxattr(p(rel), k, v);
    stamp(rel, { type: "dir", mode, mtime: [0, 0], xattrs });
  }
  // Finally the times, leaves first then directories in the order above.
  for (const [rel, e] of expected) if (e.type !== "dir") sys.utimensat(p(rel), null, e.mtime);
  for (const [rel] of dirs) sys.utimensat(p(rel), null, expected.get(rel)!.mtime);
  // Hardlinked names share the inode: the last stamp wins for both.
  expected.set("sub/ext-b", expected.get("hard/ext-a")!);
  expected.set("hard/small-b", expected.get("hard/small-a")!);
}, 60_000);

afterAll(async () => {
  await pool?.close();
  if (base) rmSync(base, { recursive: true, force: true });
});

/** Independent fs-verity digest: fsverity-utils when installed. */
const verityCache = new Map<BStr, string>();
function verityOf(path: BStr, data: Uint8Array): string {
  let hex = verityCache.get(path);
  if (hex === undefined) verityCache.set(path, (hex = computeVerity(path, data)));
  return hex;
}
function computeVerity(path: BStr, data: Uint8Array): string {
  if (hasTool("fsverity")) {
    const r = spawnSync("fsverity", ["digest", "--compact", b(path).toString("utf8")], { encoding: "utf8" });
    if (r.status === 0 && !b(path).toString("utf8").includes("\uFFFD")) return r.stdout.trim();
  }
  return toHex(fsverityDigest(data, "sha256"));
}

function rel(path: BStr): BStr {
  return path === "/" ? "" : path.slice(1);
}

function hexMap(m: Map<BStr, Uint8Array> | Record<string, Uint8Array>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of m instanceof Map ? m : Object.entries(m)) out[k] = toHex(v);
  return out;
}

function checkTree(root: Dir, opts: { epoch?: boolean; skipDevices?: boolean; xattrs?: "all" | "none" | "user" } = {}): void {
  const seen = new Set<BStr>();
  for (const { path, node } of walk(root)) {
    const r = rel(path);
    seen.add(r);
    const e = expected.get(r);
    expect(e, `unexpected entry ${JSON.stringify(r)}`).toBeDefined();
    const where = JSON.stringify(r);
    const type = node.kind === "dir" ? "dir" : node.content.type;
    expect(type, where).toBe(e!.type);
    expect(node.stat.mode, where).toBe(e!.mode);
    if (isRoot) {
      expect(node.stat.uid, where).toBe(e!.uid ?? 0);
      expect(node.stat.gid, where).toBe(e!.gid ?? 0);
    }
    expect([node.stat.mtimeSec, node.stat.mtimeNsec], where).toEqual(opts.epoch ? [0, 0] : e!.mtime);
    let want = e!.xattrs ?? {};
    if (opts.xattrs === "none") want = {};
    if (opts.xattrs === "user") want = Object.fromEntries(Object.entries(want).filter(([k]) => k.startsWith("user.")));
    expect(hexMap(node.stat.xattrs), where).toEqual(hexMap(want));
    if (node.kind === "leaf") {
      const c = node.content;
      if (c.type === "regular") {
        const data = e!.data!;
        expect(c.size, where).toBe(BigInt(data.byteLength));
        if (data.byteLength === 0) {
          expect([c.inline, c.digest, c.payload], where).toEqual([null, null, null]);
        } else if (data.byteLength <= 64) {
          expect(toHex(c.inline!), where).toBe(toHex(data));
          expect(c.digest, where).toBeNull();
        } else {
          expect(c.inline, where).toBeNull();
          const hex = verityOf(p(r), data);
          expect(toHex(c.digest!), where).toBe(hex);
          expect(c.payload, where).toBe(`${hex.slice(0, 2)}/${hex.slice(2)}`);
        }
      } else if (c.type === "symlink") {
        expect(toHex(c.target), where).toBe(toHex(e!.target!));
      } else if (c.type === "chr" || c.type === "blk") {
        expect(c.rdev, where).toBe(Number(sys.makedev(...e!.rdev!)));
      }
    }
  }
  const missing = [...expected.keys()].filter(
    (k) => !seen.has(k) && !(opts.skipDevices && (expected.get(k)!.type === "chr" || expected.get(k)!.type === "blk")),
  );
  expect(missing).toEqual([]);
}

describe("scanDirectory", () => {
  let scan: ScanResult;
  beforeAll(async () => {
    scan = await scanDirectory(p(""), { pool });
  });

  test("every entry, field by field", () => {
    checkTree(scan.root);
    expect(scan.entries).toBe(expected.size);
  });

  test("hardlinks are one shared leaf; external files listed once", () => {
    expect(lookup(scan.root, "/hard/ext-a")).toBe(lookup(scan.root, "/sub/ext-b"));
    expect(lookup(scan.root, "/hard/small-a")).toBe(lookup(scan.root, "/hard/small-b"));
    const ext = [...expected.entries()].filter(([, e]) => e.type === "regular" && e.data!.byteLength > 64);
    const distinct = new Set(ext.map(([, e]) => e));
    expect(scan.external.length).toBe(distinct.size);
    expect(scan.externalBytes).toBe([...distinct].reduce((n, e) => n + e.data!.byteLength, 0));
    // Same content, different inodes: same digest, separate leaves.
    const d1 = lookup(scan.root, "/dup1") as Node;
    const d2 = lookup(scan.root, "/dup2") as Node;
    expect(d1).not.toBe(d2);
    expect(d1.kind === "leaf" && d2.kind === "leaf" && d1.content.type === "regular" && d2.content.type === "regular").toBe(true);
  });

  test("hardlinks: false gives every name its own leaf (C mkcomposefs)", async () => {
    const s = await scanDirectory(p(""), { pool, hardlinks: false });
    expect(lookup(s.root, "/hard/ext-a")).not.toBe(lookup(s.root, "/sub/ext-b"));
    checkTree(s.root);
  });

  test("--use-epoch, --skip-devices, --skip-xattrs, --user-xattrs", async () => {
    checkTree((await scanDirectory(p(""), { pool, useEpoch: true })).root, { epoch: true });
    checkTree((await scanDirectory(p(""), { pool, skipXattrs: true })).root, { xattrs: "none" });
    checkTree((await scanDirectory(p(""), { pool, userXattrs: true })).root, { xattrs: "user" });
    const s = await scanDirectory(p(""), { pool, skipDevices: true });
    checkTree(s.root, { skipDevices: true });
    for (const { node } of walk(s.root)) expect(node.kind === "leaf" && ["chr", "blk"].includes(node.content.type)).toBe(false);
    await expect(scanDirectory(p(""), { skipXattrs: true, userXattrs: true })).rejects.toThrow("conflicts");
  });

  test("without a pool the digests are the same", async () => {
    const s = await scanDirectory(p(""));
    checkTree(s.root);
  });

  test("errors name the path", async () => {
    await expect(scanDirectory(`${p("")}/absent`)).rejects.toThrow(`${src}/absent: statx failed: No such file or directory (ENOENT)`);
    await expect(scanDirectory(`${p("")}/absent`)).rejects.toBeInstanceOf(CfsError);
    await expect(scanDirectory(p("f65"))).rejects.toThrow(`${src}/f65: not a directory`);
    await expect(scanDirectory(`${p("f65")}/x`)).rejects.toThrow(`${src}/f65/x: statx failed: Not a directory (ENOTDIR)`);
  });
});

describe("fillDigestStore", () => {
  test("objects named by digest, complete, 0644, deduplicated, no temp files; a rerun copies nothing", async () => {
    const scan = await scanDirectory(p(""), { pool });
    const store = join(base, "store");
    const res = fillDigestStore(scan, store);
    const digests = new Map<string, Uint8Array>();
    for (const [r, e] of expected) if (e.type === "regular" && e.data!.byteLength > 64) digests.set(verityOf(p(r), e.data!), e.data!);
    expect(res.written).toBe(digests.size);
    expect(res.present).toBe(0);
    // This kernel may lack fs-verity: then it is reported unsupported, not an error.
    expect(res.verity === true || res.verity === false).toBe(true);
    const files: string[] = [];
    for (const xx of readdirSync(store)) {
      expect(xx).toMatch(/^[0-9a-f]{2}$/);
      expect(lstatSync(join(store, xx)).mode & 0o777).toBe(0o755);
      for (const rest of readdirSync(join(store, xx))) files.push(`${xx}/${rest}`);
    }
    expect(files.sort()).toEqual([...digests.keys()].map((h) => objectPath(Buffer.from(h, "hex"))).sort());
    for (const [hex, data] of digests) {
      const obj = join(store, hex.slice(0, 2), hex.slice(2));
      expect(createHash("sha256").update(readFileSync(obj)).digest("hex")).toBe(createHash("sha256").update(data).digest("hex"));
      expect(lstatSync(obj).mode & 0o777).toBe(0o644);
      expect(lstatSync(obj).nlink).toBe(1);
      if (res.verity) expect(toHex(sys.measureVerity(sys.open(obj, sys.O_RDONLY))!.digest)).toBe(hex);
    }
    const ino = lstatSync(join(store, files[0]!)).ino;
    const again = fillDigestStore(scan, store);
    expect([again.written, again.present]).toEqual([0, digests.size]);
    expect(lstatSync(join(store, files[0]!)).ino).toBe(ino);
  });

  test("objects are 0644 whatever the umask", async () => {
    const d = join(base, "umask-src");
    mkdirSync(d);
    writeFileSync(join(d, "f"), ruleA(777));
    const scan = await scanDirectory(d, { pool });
    const old = process.umask(0o077);
    try {
      fillDigestStore(scan, join(base, "umask-store"));
    } finally {
      process.umask(old);
    }
    const hex = toHex((scan.external[0]!.leaf.content as { digest: Uint8Array }).digest);
    expect(lstatSync(join(base, "umask-store", hex.slice(0, 2), hex.slice(2))).mode & 0o777).toBe(0o644);
  });

  test("a file that changed size since the scan fails the copy and leaves no object", async () => {
    const d = join(base, "changing");
    mkdirSync(d);
    writeFileSync(join(d, "f"), ruleA(1000));
    const scan = await scanDirectory(d, { pool });
    writeFileSync(join(d, "f"), ruleA(500));
    const store = join(base, "store-changing");
    expect(() => fillDigestStore(scan, store)).toThrow(`${d}/f: changed while being copied (500 of 1000 bytes)`);
    const left = readdirSync(store).flatMap((xx) => readdirSync(join(store, xx)));
    expect(left).toEqual([]);
  });
});

describe("scale", () => {
  test("a tree of 3000 files digests in parallel and matches the serial result", async () => {
    const d = join(base, "many");
    mkdirSync(d);
    for (let i = 0; i < 30; i++) {
      mkdirSync(join(d, `d${i}`));
      for (let j = 0; j < 100; j++) writeFileSync(join(d, `d${i}`, `f${j}`), ruleA(40 + ((i * 100 + j) * 37) % 20000, i ^ j));
    }
    const t0 = performance.now();
    const par = await scanDirectory(d, { pool });
    const t1 = performance.now();
    const ser = await scanDirectory(d);
    expect(par.entries).toBe(3031);
    const digestsOf = (s: ScanResult) =>
      [...walk(s.root)].map((w) => (w.node.kind === "leaf" && w.node.content.type === "regular" ? toHex(w.node.content.digest ?? w.node.content.inline!) : w.path));
    expect(digestsOf(par)).toEqual(digestsOf(ser));
    expect(t1 - t0).toBeLessThan(20_000);
  });
});
