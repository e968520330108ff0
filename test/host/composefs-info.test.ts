// `cfsboot composefs-info` (and the `composefs-info` multi-call link)
// through the built executable: the output formats of C composefs-info
// (tools/composefs-info.c) for ls, dump, objects, missing-objects and
// measure-file, --filter, and failures.

import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { parseDumpfile } from "../../shared/dumpfile.ts";
import { writeErofs } from "../../shared/erofs/writer.ts";
import { cfsbootExe, projectRoot, vectorsDir } from "../helpers/env.ts";

let dir: string;
let link: string;

interface Run {
  status: number | null;
  stdout: Buffer;
  stderr: string;
  ms: number;
}

function run(exe: string, args: string[]): Run {
  const t0 = performance.now();
  const r = spawnSync(exe, args, { cwd: dir, timeout: 120_000, maxBuffer: 1 << 30 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString("utf8"), ms: performance.now() - t0 };
}
const info = (args: string[]) => run(cfsbootExe, ["composefs-info", ...args]);

function expectFailure(r: Run, pattern: RegExp): void {
  expect(r.status, r.stderr).toBe(1);
  const lines = r.stderr.split("\n").filter((l) => l !== "");
  expect(lines.length, r.stderr).toBe(1);
  expect(lines[0]).toMatch(/^cfsboot: /);
  expect(lines[0]).toMatch(pattern);
  expect(lines[0]).not.toMatch(/internal error/);
}

/** Writes the image of a dumpfile (C parser rules) and returns its path. */
function image(name: string, dump: string | Uint8Array, version: 0 | 1 | 2 = 0): string {
  const text = typeof dump === "string" ? new Uint8Array(Buffer.from(dump, "latin1")) : dump;
  const path = join(dir, name);
  writeFileSync(path, writeErofs(parseDumpfile(text, { mode: "c" }), { version }));
  return path;
}

const D1 = "5a".repeat(32);
const D2 = "a1".repeat(32);
const TREE = [
  "/ 0 40755 2 0 0 0 0.0 - - -",
  "/a\\x20dir 0 40755 2 0 0 0 0.0 - - -",
  `/a\\x20dir/ext 1234 100644 2 0 0 0 0.0 5a/${D1.slice(2)} - ${D1}`,
  `/a\\x20dir/other 99 100644 1 0 0 0 0.0 a1/${D2.slice(2)} - ${D2}`,
  "/a\\x20dir/tab\\tname 3 100644 1 0 0 0 0.0 - abc -",
  "/hard 0 @120000 - - - - 0.0 /a\\x20dir/ext - -",
  "/link 6 120777 1 0 0 0 0.0 /x\\x20y - -",
  "/sparse 100 100644 1 0 0 0 0.0 - - -",
  "/nodigest 100 100644 1 0 0 0 0.0 foo/bar.file - -",
  "",
].join("\n");

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "cfsboot-info-"));
  if (!existsSync(cfsbootExe)) {
    const r = spawnSync(process.execPath, ["host/build.ts"], { cwd: projectRoot, stdio: "inherit" });
    if (r.status !== 0) throw new Error("building dist/cfsboot failed");
  }
  link = join(dir, "composefs-info");
  symlinkSync(cfsbootExe, link);
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("dump", () => {
  test.each([
    ["a09-hardlinks", "-", 0],
    ["a15-whiteouts", "--min-version=1", 1],
    ["a28-names-escapes", "-", 0],
  ] as const)("%s is printed like C composefs-info dump", (name, _flags, version) => {
    const img = image(`${name}.img`, new Uint8Array(readFileSync(join(vectorsDir, "erofs-v1", `${name}.dump`))), version);
    const r = info(["dump", img]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.toString("latin1")).toBe(readFileSync(join(vectorsDir, "erofs-v1", `${name}.canonical.dump`), "latin1"));
  });

  test("the composefs-info link is the same command; several images are printed in order", () => {
    const a = image("t.img", TREE);
    const b = image("e.img", "/ 0 40700 2 0 0 0 5.6 - - -\n", 2);
    const r = run(link, ["dump", b, a]);
    expect(r.status, r.stderr).toBe(0);
    const text = r.stdout.toString("latin1");
    expect(text.split("\n").slice(0, 2)).toEqual(["/ 27 40700 2 0 0 0 5.0 - - -", "/ 4096 40755 3 0 0 0 0.0 - - -"]);
    expect(text).toContain(`\n/hard 1234 @100644 2 0 0 0 0.0 /a\\x20dir/ext - ${D1}\n`);
    expect(text).toContain("\n/a\\x20dir/tab\\tname 3 100644 1 0 0 0 0.0 - abc -\n");
    expect(text).toContain("\n/nodigest 100 100644 1 0 0 0 0.0 foo/bar.file - -\n");
  });

  test("--filter keeps only the named top-level entries", () => {
    const r = info(["dump", "--filter=link", "--filter=sparse", image("f.img", TREE)]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.toString("latin1").split("\n").map((l) => l.split(" ")[0])).toEqual(["/", "/link", "/sparse", ""]);
    expectFailure(info(["dump", "--filter=a/b", image("f2.img", TREE)]), /--filter=a\/b: filter must be a single name/);
  });

  test("the 140k-entry cs9 developer image", () => {
    const img = image("cs9.img", new Uint8Array(gunzipSync(readFileSync(join(vectorsDir, "c-assets", "cs9-x86_64-developer.dump.gz")))));
    const r = info(["dump", img]);
    expect(r.status, r.stderr).toBe(0);
    process.stderr.write(`composefs-info dump of cs9-x86_64-developer (${readFileSync(img).byteLength} bytes): ${r.ms.toFixed(0)} ms wall, ${r.stdout.byteLength} bytes out\n`);
    const want = gunzipSync(readFileSync(join(vectorsDir, "c-assets", "cs9-x86_64-developer.canonical.dump.gz")));
    expect(r.stdout.equals(want)).toBe(true);
  });
});

describe("ls, objects, missing-objects", () => {
  test("ls: every path, `/` after directories, `-> target`, `@ payload`; spaces kept, hardlinks bare", () => {
    const r = info(["ls", image("ls.img", TREE)]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.toString("latin1")).toBe(
      [
        "/a dir/\t",
        `/a dir/ext\t@ 5a/${D1.slice(2)}`,
        `/a dir/other\t@ a1/${D2.slice(2)}`,
        "/a dir/tab\\tname",
        "/hard",
        "/link\t-> /x\\x20y",
        "/nodigest\t@ foo/bar.file",
        "/sparse",
        "",
      ].join("\n"),
    );
  });

  test("objects: payloads of all images, sorted and unique", () => {
    const a = image("o1.img", TREE);
    const b = image("o2.img", `/ 0 40755 2 0 0 0 0.0 - - -\n/x 5 100644 1 0 0 0 0.0 00/${"0".repeat(62)} - ${"0".repeat(64)}\n/y 7 100644 1 0 0 0 0.0 5a/${D1.slice(2)} - ${D1}\n`);
    const r = info(["objects", a, b]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.toString("latin1")).toBe(`00/${"0".repeat(62)}\n5a/${D1.slice(2)}\na1/${D2.slice(2)}\nfoo/bar.file\n`);
  });

  test("missing-objects: those not below --basedir", () => {
    const store = join(dir, "store");
    mkdirSync(join(store, "5a"), { recursive: true });
    writeFileSync(join(store, "5a", D1.slice(2)), "x");
    mkdirSync(join(store, "foo"));
    writeFileSync(join(store, "foo", "bar.file"), "y");
    const img = image("m.img", TREE);
    const r = info(["missing-objects", `--basedir=${store}`, img]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.toString("latin1")).toBe(`a1/${D2.slice(2)}\n`);
    // Without a base directory every object is missing, as with C.
    expect(info(["missing-objects", img]).stdout.toString("latin1").split("\n").length).toBe(4);
    expectFailure(info(["missing-objects", `--basedir=${join(dir, "nope")}`, img]), /nope: cannot open basedir/);
  });
});

describe("measure-file", () => {
  test("fs-verity sha256 digests, one per line", () => {
    const rows = readFileSync(join(vectorsDir, "fsverity.tsv"), "utf8").trimEnd().split("\n").slice(1).map((l) => l.split("\t"));
    const picked = rows.filter((r) => ["0", "1", "4097", "65536"].includes(r[1]!));
    expect(picked.length).toBe(4);
    const files = picked.map((r) => {
      const n = Number(r[1]);
      const data = new Uint8Array(n);
      for (let i = 0; i < n; i++) data[i] = (i * 31 + 7) % 251;
      const p = join(dir, `rule-a-${n}`);
      writeFileSync(p, data);
      return p;
    });
    const r = run(link, ["measure-file", ...files]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.toString()).toBe(picked.map((x) => `${x[3]}\n`).join(""));
    expectFailure(info(["measure-file", join(dir, "missing")]), /missing/);
  });
});

describe("failures", () => {
  test("an image that is not composefs: one error line naming it and the offset", () => {
    const bad = join(dir, "bad.img");
    writeFileSync(bad, new Uint8Array(8192));
    expectFailure(info(["dump", bad]), new RegExp(`^cfsboot: ${bad}: offset 0: bad composefs magic 0x00000000`));
  });

  test("a truncated image: the earlier images are printed, then the error", () => {
    const good = image("g.img", "/ 0 40755 2 0 0 0 0.0 - - -\n", 2);
    const full = readFileSync(image("tr.img", TREE));
    const cut = join(dir, "cut.img");
    writeFileSync(cut, full.subarray(0, 5000));
    const r = info(["ls", good, cut]);
    expectFailure(r, new RegExp(`^cfsboot: ${cut}: offset \\d+: `));
    expect(r.stdout.toString()).toBe("");
    const d = info(["dump", good, cut]);
    expect(d.stdout.toString()).toBe("/ 27 40755 2 0 0 0 0.0 - - -\n");
  });

  test("usage errors", () => {
    expectFailure(info(["dump"]), /no image path specified/);
    expectFailure(info(["measure-file"]), /no files specified/);
    expect(info(["frobnicate", "x"]).status).toBe(1);
  });
});
