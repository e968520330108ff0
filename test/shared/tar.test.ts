// shared/tar.ts: archives written by GNU tar (independent writer) parse to
// what the filesystem holds, every byte is accounted for exactly once, and
// hostile archives fail with a CfsError, never a crash.

import { describe, expect, test, beforeAll, afterAll } from "vitest";
import fc from "fast-check";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync, mkdirSync, symlinkSync, linkSync, lstatSync, readFileSync, utimesSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHash } from "node:crypto";

import {
  TarReader, readTar, encodeTar, encodeTarEntry, tarEndMarker, makedev, splitDev, normalizeTarPath, parseNumeric,
  type TarEvent, type TarEntry, type TarWriteEntry,
} from "../../shared/tar.ts";
import { CfsError } from "../../shared/errors.ts";
import { bstr } from "../../shared/bytes.ts";
import { canRun, hasTool, isRoot } from "../helpers/env.ts";

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "cfsboot-tar-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function parseAll(bytes: Uint8Array, chunk = 0, opts = {}): { events: TarEvent[]; entries: TarEntry[] } {
  const r = new TarReader(opts);
  const events: TarEvent[] = [];
  const step = chunk > 0 ? chunk : bytes.length || 1;
  for (let i = 0; i < bytes.length; i += step) {
    r.push(bytes.subarray(i, Math.min(bytes.length, i + step)));
    for (let ev = r.next(); ev !== null; ev = r.next()) events.push(ev);
  }
  r.end();
  for (let ev = r.next(); ev !== null; ev = r.next()) events.push(ev);
  expect(r.done).toBe(true);
  return { events, entries: events.flatMap((e) => (e.kind === "entry" ? [e.entry] : [])) };
}

function concat(events: TarEvent[]): Buffer {
  return Buffer.concat(events.map((e) => e.bytes));
}

function expectCfsError(f: () => unknown, re: RegExp): void {
  let err: unknown = null;
  try {
    f();
  } catch (e) {
    err = e;
  }
  expect(err, "expected a CfsError").toBeInstanceOf(CfsError);
  expect((err as CfsError).message).toMatch(re);
}

describe("archives from GNU tar", () => {
  let src: string;
  const longDir = "d".repeat(120) + "/" + "e".repeat(90);
  const longName = "f".repeat(150);
  beforeAll(() => {
    src = join(dir, "src");
    mkdirSync(join(src, "top/sub", longDir), { recursive: true });
    writeFileSync(join(src, "top/small"), "hello\n");
    writeFileSync(join(src, "top/sixtyfour"), "x".repeat(64));
    writeFileSync(join(src, "top/big"), Buffer.alloc(70_000, 7));
    writeFileSync(join(src, "top/sub", longDir, longName), "deep");
    writeFileSync(join(src, "top/\xe9t\xe9"), "utf8 name");
    symlinkSync("../small", join(src, "top/sub/link"));
    symlinkSync("t".repeat(200), join(src, "top/longlink"));
    linkSync(join(src, "top/small"), join(src, "top/hard"));
    execFileSync("mkfifo", [join(src, "top/fifo")]);
    if (isRoot) {
      execFileSync("mknod", [join(src, "top/null"), "c", "1", "3"]);
      execFileSync("mknod", [join(src, "top/bigdev"), "b", "4095", "1048575"]);
      execFileSync("setfattr", ["-n", "user.bin", "-v", "0x00ff10", join(src, "top/small")]);
      execFileSync("setfattr", ["-n", "security.capability", "-v", "0x0100000200000000000000000000000000000000", join(src, "top/big")]);
    }
    utimesSync(join(src, "top/big"), 1_600_000_000.25, 1_600_000_000.25);
    // GNU tar writes mtime with nanoseconds only in posix format; set a precise one.
    execFileSync("touch", ["-h", "-d", "@1234567890.123456789", join(src, "top/small")]);
  });

  for (const format of ["posix", "gnu", "ustar"] as const) {
    test(`${format} format: entries match lstat, bytes reproduce the archive`, () => {
      if (!canRun(hasTool("tar"), "GNU tar is not installed")) return;
      const file = join(dir, `${format}.tar`);
      const args = ["--format", format, "-C", src, "-cf", file];
      if (format === "posix") args.push("--xattrs", "--xattrs-include=*");
      // ustar cannot store the 200-byte symlink target or the deep path: leave them out.
      const members = format === "ustar"
        ? ["top/small", "top/sixtyfour", "top/big", "top/sub/link", "top/hard", "top/fifo", ...(isRoot ? ["top/null", "top/bigdev"] : [])]
        : ["top"];
      const r = spawnSync("tar", [...args, ...members]);
      expect(r.status, r.stderr.toString()).toBe(0);
      const bytes = new Uint8Array(readFileSync(file));
      for (const chunk of [0, 7, 511, 513, 4096]) {
        const { events, entries } = parseAll(bytes, chunk);
        expect(concat(events).equals(bytes)).toBe(true);
        // Events tile the archive: every offset follows the previous region.
        let at = 0;
        for (const ev of events) {
          expect(ev.offset).toBe(at);
          at += ev.bytes.length;
        }
        if (chunk !== 0) continue;
        const byPath = new Map(entries.map((e) => [e.path, e]));
        let hardlinks = 0;
        for (const e of entries) {
          const fsPath = join(src, Buffer.from(e.path, "latin1").toString("utf8"));
          const st = lstatSync(fsPath, { bigint: true });
          expect(e.mode).toBe(Number(st.mode & 0o7777n));
          expect(e.uid).toBe(Number(st.uid));
          expect(e.gid).toBe(Number(st.gid));
          expect(e.mtimeSec).toBe(Number(st.mtimeNs / 1_000_000_000n));
          if (format === "posix") {
            // GNU tar records the full nanoseconds in PAX mtime.
            expect(e.mtimeNsec).toBe(Number(st.mtimeNs % 1_000_000_000n));
          } else {
            expect(e.mtimeNsec).toBe(0);
          }
          switch (e.type) {
            case "dir":
              expect(st.isDirectory()).toBe(true);
              break;
            case "regular":
              expect(st.isFile()).toBe(true);
              expect(BigInt(e.size)).toBe(st.size);
              break;
            case "hardlink":
              hardlinks++;
              expect(lstatSync(join(src, e.linkPath!.slice(1))).ino).toBe(Number(st.ino));
              break;
            case "symlink":
              expect(st.isSymbolicLink()).toBe(true);
              expect(e.linkName).toBe(bstr(new Uint8Array(Buffer.from(execFileSync("readlink", [fsPath])).subarray(0, -1))));
              break;
            case "fifo":
              expect(st.isFIFO()).toBe(true);
              break;
            case "chr":
            case "blk":
              expect(e.type === "chr" ? st.isCharacterDevice() : st.isBlockDevice()).toBe(true);
              expect(e.rdev).toBe(Number(st.rdev));
              break;
          }
        }
        expect(hardlinks).toBe(1);
        // Data events of a regular file are its content.
        const big = entries.find((e) => e.path === "/top/big")!;
        const dataOfBig: Buffer[] = [];
        let inBig = false;
        for (const ev of events) {
          if (ev.kind === "entry") inBig = ev.entry === big;
          else if (ev.kind === "data" && inBig) dataOfBig.push(Buffer.from(ev.bytes));
        }
        expect(Buffer.concat(dataOfBig).equals(readFileSync(join(src, "top/big")))).toBe(true);
        if (format !== "ustar") {
          expect(byPath.has(`/top/sub/${longDir}/${longName}`)).toBe(true);
          expect(byPath.get("/top/longlink")!.linkName).toBe("t".repeat(200));
        }
        if (format === "posix" && isRoot) {
          expect([...byPath.get("/top/small")!.xattrs.get("user.bin")!]).toEqual([0x00, 0xff, 0x10]);
          expect(byPath.get("/top/big")!.xattrs.get("security.capability")!.length).toBe(20);
        }
      }
    });
  }

  test("sparse files are refused (GNU 'S' and PAX sparse)", () => {
    if (!canRun(hasTool("tar"), "GNU tar is not installed")) return;
    const sparse = join(dir, "sparse-src");
    mkdirSync(sparse, { recursive: true });
    execFileSync("truncate", ["-s", "10M", join(sparse, "holes")]);
    writeFileSync(join(sparse, "holes"), "data", { flag: "r+" });
    for (const format of ["gnu", "posix"]) {
      const file = join(dir, `sparse-${format}.tar`);
      execFileSync("tar", ["--format", format, "--sparse", "-C", sparse, "-cf", file, "holes"]);
      expectCfsError(() => parseAll(new Uint8Array(readFileSync(file))), /sparse tar entries are not supported/);
    }
  });
});

describe("PAX records and numeric fields", () => {
  test("mtime fractions become nanoseconds (right-padded, truncated at 9 digits)", () => {
    const cases: [string, number, number][] = [
      ["1234567890.5", 1234567890, 500_000_000],
      ["1234567890.000000001", 1234567890, 1],
      ["1234567890.1234567899", 1234567890, 123_456_789],
      ["1234567890", 1234567890, 0],
      ["7.", 7, 0],
    ];
    for (const [v, sec, nsec] of cases) {
      const tar = encodeTar([{ path: "f", type: "regular", extraPax: [{ key: "mtime", value: new Uint8Array(Buffer.from(v)) }] }]);
      const [e] = parseAll(tar).entries;
      expect([e!.mtimeSec, e!.mtimeNsec]).toEqual([sec, nsec]);
    }
  });

  test("path/linkpath/uid/gid/size overrides, binary SCHILY and LIBARCHIVE xattrs", () => {
    const bin = new Uint8Array([0, 1, 2, 0x0a, 0xff, 0x3d]);
    const tar = encodeTar([
      {
        path: "short", type: "regular", data: new Uint8Array(100), uid: 5, gid: 6,
        extraPax: [
          { key: "path", value: new Uint8Array(Buffer.from("over/ride\xff", "latin1")) },
          { key: "uid", value: new Uint8Array(Buffer.from("4000000000")) },
          { key: "gid", value: new Uint8Array(Buffer.from("77")) },
          { key: "SCHILY.xattr.user.bin", value: bin },
          { key: "LIBARCHIVE.xattr.user.%41b", value: new Uint8Array(Buffer.from(Buffer.from("lib").toString("base64"))) },
          { key: "LIBARCHIVE.xattr.user.bin", value: new Uint8Array(Buffer.from("aWdub3JlZA==")) },
        ],
      },
      { path: "l", type: "symlink", linkName: "x", extraPax: [{ key: "linkpath", value: new Uint8Array(Buffer.from("y".repeat(300))) }] },
    ]);
    const { entries } = parseAll(tar);
    expect(entries[0]!.path).toBe("/over/ride\xff");
    expect(entries[0]!.uid).toBe(4_000_000_000);
    expect(entries[0]!.gid).toBe(77);
    expect([...entries[0]!.xattrs.get("user.bin")!]).toEqual([...bin]); // SCHILY wins over LIBARCHIVE
    expect(Buffer.from(entries[0]!.xattrs.get("user.Ab")!).toString()).toBe("lib");
    expect(entries[1]!.linkName).toBe("y".repeat(300));
  });

  test("PAX size overrides the header size (the payload length follows it)", () => {
    const data = new Uint8Array(1000).fill(9);
    const [xh, xbody, xpad, h, ...rest] = encodeTarEntry({ path: "f", type: "regular", data, extraPax: [{ key: "comment", value: new Uint8Array(Buffer.from("c")) }] });
    // Rewrite: header size field 0, PAX size=1000.
    const rec = new Uint8Array(Buffer.from("13 size=1000\n"));
    const body = new Uint8Array(Buffer.concat([xbody!, rec]));
    const pax = encodeTarEntry({ path: "x", type: "regular", data: body })[0]!;
    pax[156] = "x".charCodeAt(0);
    fixChecksum(pax);
    const hdr = h!.slice();
    hdr.set(Buffer.from("00000000000\0"), 124);
    fixChecksum(hdr);
    const padded = new Uint8Array(Math.ceil(body.length / 512) * 512);
    padded.set(body);
    void xh; void xpad;
    const tar = new Uint8Array(Buffer.concat([pax, padded, hdr, ...rest, tarEndMarker()]));
    const { entries } = parseAll(tar);
    expect(entries[0]!.size).toBe(1000);
  });

  test("base-256 numbers (GNU) parse; negative and oversized values are refused", () => {
    const tar = encodeTar([{ path: "f", type: "regular", uid: 0x7fffffff, gid: 3_000_000, mtimeSec: 2 ** 40 }], "gnu");
    const [e] = parseAll(tar).entries;
    expect([e!.uid, e!.gid, e!.mtimeSec]).toEqual([0x7fffffff, 3_000_000, 2 ** 40]);
    expect(parseNumeric(new Uint8Array([0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]), "size")).toBe(256n);
    expect(() => parseNumeric(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]), "uid")).toThrow(/negative/);
    // A size of 2^80 in base-256: refused as absurd, not truncated.
    const h = encodeTarEntry({ path: "f", type: "regular" }, "gnu")[0]!.slice();
    h.fill(0, 124, 136);
    h[124] = 0x80;
    h[126] = 1;
    fixChecksum(h);
    expectCfsError(() => parseAll(new Uint8Array(Buffer.concat([h, tarEndMarker()]))), /offset 0: entry size \d+ exceeds the limit/);
  });

  test("makedev matches glibc for large major/minor and round-trips", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xfffff }), fc.integer({ min: 0, max: 0xfffff }), (M, m) => {
        const d = makedev(M, m);
        expect(splitDev(d)).toEqual({ major: M, minor: m });
        // glibc: minor low 8 bits at 0..7, major low 12 at 8..19, minor high bits from 20.
        expect(d % 256).toBe(m & 0xff);
      }),
    );
  });

  test("path normalisation (oci.md §3.1)", () => {
    expect(normalizeTarPath("./usr/bin/")).toBe("/usr/bin");
    expect(normalizeTarPath("/usr//bin")).toBe("/usr/bin");
    expect(normalizeTarPath("./")).toBe("/");
    expect(normalizeTarPath(".")).toBe("/");
    expect(normalizeTarPath("usr/./bin")).toBe("/usr/bin");
    expect(normalizeTarPath("a/../b")).toBeNull();
    expect(normalizeTarPath("..")).toBeNull();
  });
});

function fixChecksum(h: Uint8Array): void {
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.set(Buffer.from(sum.toString(8).padStart(6, "0") + "\0 "), 148);
}

describe("hostile archives", () => {
  const ok = encodeTar([
    { path: "usr/", type: "dir", mode: 0o755 },
    { path: "usr/file", type: "regular", data: new Uint8Array(700).fill(1), xattrs: new Map([["user.a", new Uint8Array([1])]]), mtimeNsec: 5 },
    { path: "usr/link", type: "symlink", linkName: "file" },
  ]);

  test("'..' escapes in paths and hardlink targets", () => {
    expectCfsError(() => parseAll(encodeTar([{ path: "../etc/passwd", type: "regular" }])), /'\.\.' component/);
    expectCfsError(() => parseAll(encodeTar([{ path: "usr/../../x", type: "dir" }])), /'\.\.' component/);
    expectCfsError(() => parseAll(encodeTar([{ path: "h", type: "hardlink", linkName: "../../etc/shadow" }])), /hardlink target with a '\.\.'/);
    expectCfsError(() => parseAll(encodeTar([{ path: "x", type: "regular", extraPax: [{ key: "path", value: new Uint8Array(Buffer.from("a/../..")) }] }])), /'\.\.'/);
  });

  test("truncation anywhere is an error unless it is at an entry boundary", () => {
    const boundaries = new Set<number>();
    for (const ev of parseAll(ok).events) if (ev.kind === "entry") boundaries.add(ev.offset);
    for (let cut = 1; cut < ok.length; cut += 97) {
      const part = ok.subarray(0, cut);
      if (boundaries.has(cut)) {
        expect(() => parseAll(part)).not.toThrow();
      } else {
        expectCfsError(() => parseAll(part), /truncated archive|single zero block/);
      }
    }
  });

  test("sizes over the limit, non-zero sizes on directories, stray zero blocks, bad checksums, unknown types", () => {
    expectCfsError(() => parseAll(encodeTar([{ path: "f", type: "regular", data: new Uint8Array(2000) }]), 0, { maxEntrySize: 1000 }), /exceeds the limit/);
    const dirWithSize = encodeTarEntry({ path: "d/", type: "dir" })[0]!.slice();
    dirWithSize.set(Buffer.from("00000001000\0"), 124);
    fixChecksum(dirWithSize);
    expectCfsError(() => parseAll(new Uint8Array(Buffer.concat([dirWithSize, new Uint8Array(512), tarEndMarker()]))), /non-zero size 512 for a dir entry/);
    const stray = new Uint8Array(Buffer.concat([new Uint8Array(512), ...encodeTarEntry({ path: "f", type: "regular" }), tarEndMarker()]));
    expectCfsError(() => parseAll(stray), /offset 0: stray zero block/);
    const corrupt = ok.slice();
    corrupt[1] = corrupt[1]! ^ 1;
    expectCfsError(() => parseAll(corrupt), /offset 0: bad tar header checksum/);
    const odd = encodeTarEntry({ path: "v", type: "regular" })[0]!.slice();
    odd[156] = "V".charCodeAt(0);
    fixChecksum(odd);
    expectCfsError(() => parseAll(new Uint8Array(Buffer.concat([odd, tarEndMarker()]))), /unsupported tar entry type 'V'/);
  });

  test("PAX garbage", () => {
    const garbage = ["5 a=b\n", "x path=foo\n", "99 path=foo\n", "11 pathfoo\n", "11 path=fo\r", "10 uid=-5\n", "13 mtime=1.x\n", "12 size=1e3\n", "10 =empty\n", "0 \n", "\x01"];
    for (const g of garbage) {
      const body = new Uint8Array(Buffer.from(g, "latin1"));
      const x = encodeTarEntry({ path: "x", type: "regular", data: body });
      const h = x[0]!.slice();
      h[156] = "x".charCodeAt(0);
      fixChecksum(h);
      const tar = new Uint8Array(Buffer.concat([h, ...x.slice(1), ...encodeTarEntry({ path: "f", type: "regular" }), tarEndMarker()]));
      expectCfsError(() => parseAll(tar), /malformed PAX record|invalid PAX/);
    }
  });

  test("extension headers: metadata limit, pending limit, orphans, duplicates", () => {
    const big = encodeTar([{ path: "f", type: "regular", extraPax: [{ key: "comment", value: new Uint8Array(2 << 20) }] }]);
    expectCfsError(() => parseAll(big), /exceeds the limit of 1048576/);
    const orphan = encodeTarEntry({ path: "f", type: "regular", extraPax: [{ key: "comment", value: new Uint8Array([0x41]) }] });
    expectCfsError(() => parseAll(new Uint8Array(Buffer.concat([orphan[0]!, orphan[1]!, orphan[2]!, tarEndMarker()]))), /extension headers without a following entry/);
    const dup = new Uint8Array(Buffer.concat([orphan[0]!, orphan[1]!, orphan[2]!, ...orphan, tarEndMarker()]));
    expectCfsError(() => parseAll(dup), /duplicate PAX extended header/);
  });

  test("fuzz: mutated archives parse or fail with a CfsError, never anything else", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(ok.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }),
        fc.integer({ min: 1, max: 2000 }),
        (muts, chunk) => {
          const m = ok.slice();
          for (const [i, b] of muts) m[i] = b;
          try {
            const { events } = parseAll(m, chunk);
            expect(concat(events).equals(m)).toBe(true);
          } catch (e) {
            if (!(e instanceof CfsError)) throw e;
          }
        },
      ),
      { numRuns: 400 },
    );
  });
});

describe("writer", () => {
  const arbEntry: fc.Arbitrary<TarWriteEntry> = fc.record({
    path: fc.stringMatching(/^[a-z]{1,20}(\/[a-z0-9._-]{1,60}){0,5}$/).filter((p) => !p.split("/").includes("..") && !p.split("/").includes(".")),
    type: fc.constantFrom("regular" as const, "dir" as const, "symlink" as const, "fifo" as const),
    mode: fc.integer({ min: 0, max: 0o7777 }),
    uid: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
    gid: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
    mtimeSec: fc.integer({ min: 0, max: 2 ** 34 }),
    mtimeNsec: fc.integer({ min: 0, max: 999_999_999 }),
    data: fc.uint8Array({ maxLength: 1500 }),
    linkName: fc.stringMatching(/^[a-z/.]{1,150}$/),
    xattrs: fc.dictionary(fc.stringMatching(/^user\.[a-z]{1,10}$/), fc.uint8Array({ maxLength: 40 })).map((d) => new Map(Object.entries(d))),
  }).map((e) => ({ ...e, data: e.type === "regular" ? e.data : new Uint8Array(0) }));

  test("pax writer round-trips through the reader and GNU tar lists the same names", () => {
    const haveTar = hasTool("tar");
    fc.assert(
      fc.property(fc.uniqueArray(arbEntry, { selector: (e) => e.path, maxLength: 12 }), (entries) => {
        const tar = encodeTar(entries);
        const got = parseAll(tar).entries;
        expect(got.length).toBe(entries.length);
        entries.forEach((e, i) => {
          const g = got[i]!;
          expect(g.path).toBe(normalizeTarPath(e.path));
          expect([g.type, g.mode, g.uid, g.gid, g.mtimeSec, g.mtimeNsec]).toEqual([e.type, e.mode, e.uid, e.gid, e.mtimeSec, e.mtimeNsec]);
          if (e.type === "regular") expect(g.size).toBe(e.data!.length);
          if (e.type === "symlink") expect(g.linkName).toBe(e.linkName);
          expect(new Map([...g.xattrs].map(([k, v]) => [k, [...v]]))).toEqual(new Map([...e.xattrs!].map(([k, v]) => [k, [...v]])));
        });
        if (haveTar) {
          const r = spawnSync("tar", ["-tf", "-"], { input: tar });
          expect(r.status, r.stderr.toString()).toBe(0);
          expect(r.stdout.toString().split("\n").filter((l) => l !== "")).toEqual(entries.map((e) => e.path));
        }
      }),
      { numRuns: 40 },
    );
  });

  test("GNU tar extracts a written archive with the declared metadata", () => {
    if (!canRun(hasTool("tar"), "GNU tar is not installed")) return;
    const out = join(dir, "extract");
    mkdirSync(out, { recursive: true });
    const data = new Uint8Array(5000).map((_, i) => i & 0xff);
    const tar = encodeTar([
      { path: "a/", type: "dir", mode: 0o750, mtimeSec: 1000 },
      { path: "a/" + "n".repeat(180), type: "regular", data, mode: 0o640, mtimeSec: 1_700_000_000, mtimeNsec: 123_456_789 },
      { path: "a/s", type: "symlink", linkName: "l".repeat(150) },
      { path: "a/h", type: "hardlink", linkName: "a/" + "n".repeat(180) },
    ]);
    const r = spawnSync("tar", ["-xf", "-", "-C", out], { input: tar });
    expect(r.status, r.stderr.toString()).toBe(0);
    const f = join(out, "a", "n".repeat(180));
    expect(createHash("sha256").update(readFileSync(f)).digest("hex")).toBe(createHash("sha256").update(data).digest("hex"));
    const st = lstatSync(f, { bigint: true });
    expect(st.mtimeNs).toBe(1_700_000_000_123_456_789n);
    expect(Number(st.mode & 0o7777n)).toBe(0o640);
    expect(lstatSync(join(out, "a/h")).ino).toBe(Number(st.ino));
    expect(readdirSync(join(out, "a")).sort()).toEqual(["h", "n".repeat(180), "s"].sort());
  });
});

test("readTar over an async source yields the same events as push/next", async () => {
  const tar = encodeTar([{ path: "x", type: "regular", data: new Uint8Array(3000).fill(3) }]);
  async function* src() {
    for (let i = 0; i < tar.length; i += 100) yield tar.subarray(i, i + 100);
  }
  const evs: TarEvent[] = [];
  for await (const ev of readTar(src())) evs.push(ev);
  expect(concat(evs).equals(tar)).toBe(true);
  expect(evs.filter((e) => e.kind === "data").reduce((n, e) => n + e.bytes.length, 0)).toBe(3000);
});

test("copyPending: chunks pushed from ONE reused buffer give the same entries and bytes as fresh chunks", () => {
  // How a layer import reads: each chunk overwrites the previous one's buffer
  // once the events it produced were consumed (copied where kept).
  const arbFile = fc.record({
    name: fc.stringMatching(/^[a-z]{1,12}$/),
    data: fc.uint8Array({ maxLength: 3000 }),
    xattr: fc.uint8Array({ maxLength: 300 }),
    longName: fc.boolean(),
  });
  fc.assert(
    fc.property(fc.uniqueArray(arbFile, { selector: (f) => f.name, minLength: 1, maxLength: 10 }), fc.integer({ min: 1, max: 1500 }), (files, chunk) => {
      const tar = encodeTar(
        files.map((f) => ({
          path: f.longName ? `${"d".repeat(110)}/${"n".repeat(60)}${f.name}` : f.name,
          type: "regular" as const,
          data: f.data,
          xattrs: new Map([["user.x", f.xattr]]),
        })),
      );
      const expected = parseAll(tar);
      const r = new TarReader();
      const buf = new Uint8Array(chunk);
      const got: { kind: string; bytes: Buffer; entry?: TarEntry }[] = [];
      for (let i = 0; i < tar.length; i += chunk) {
        const n = Math.min(chunk, tar.length - i);
        buf.fill(0xee);
        buf.set(tar.subarray(i, i + n));
        r.push(buf.subarray(0, n));
        for (let ev = r.next(); ev !== null; ev = r.next()) got.push({ kind: ev.kind, bytes: Buffer.from(ev.bytes), ...(ev.kind === "entry" ? { entry: ev.entry } : {}) });
        r.copyPending();
      }
      r.end();
      for (let ev = r.next(); ev !== null; ev = r.next()) got.push({ kind: ev.kind, bytes: Buffer.from(ev.bytes) });
      expect(r.done).toBe(true);
      expect(Buffer.concat(got.map((g) => g.bytes)).equals(Buffer.from(tar))).toBe(true);
      const entries = got.flatMap((g) => (g.entry ? [g.entry] : []));
      expect(entries.map((e) => [e.path, e.size])).toEqual(expected.entries.map((e) => [e.path, e.size]));
      expect(entries.map((e) => [...e.xattrs.get("user.x")!])).toEqual(files.map((f) => [...f.xattr]));
    }),
    { numRuns: 60 },
  );
});
