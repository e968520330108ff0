// mount.composefs (C composefs' mount helper): invoked through a link named
// mount.composefs and as `cfsboot mount.composefs`, in a private mount
// namespace. The mounted tree must equal the source file by file; bad
// options, images and mount points are refused on one line with nothing
// left mounted.

import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { canRun, isRoot } from "../helpers/env.ts";
import { pseudoRandom } from "../helpers/oci-image.ts";
import { ensureExe } from "../helpers/sysroot.ts";

const exe = ensureExe();
let T: string;
let src: string;
let store: string;
let img: string;
let link: string;

/** Run a shell script in a private mount namespace ($C = cfsboot, $M = the mount.composefs link). */
function inNs(script: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync("unshare", ["-m", "--propagation", "private", "sh", "-c", script], { env: { PATH: process.env.PATH ?? "/usr/bin:/bin", C: exe, M: link, T }, encoding: "utf8" });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function oneLine(r: { status: number | null; stderr: string }, re: RegExp): void {
  expect(r.status, r.stderr).toBe(1);
  const lines = r.stderr.split("\n").filter((l) => l !== "");
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^cfsboot: /);
  expect(lines[0]).toMatch(re);
}

beforeAll(() => {
  T = mkdtempSync(join(tmpdir(), "cfsboot-mountcfs-"));
  src = join(T, "src");
  mkdirSync(join(src, "d/e"), { recursive: true });
  writeFileSync(join(src, "big"), pseudoRandom(100_000, 1));
  writeFileSync(join(src, "d/e/f"), pseudoRandom(5000, 2));
  writeFileSync(join(src, "small"), "x\n");
  symlinkSync("big", join(src, "link"));
  store = join(T, "store");
  img = join(T, "i.img");
  const r = spawnSync(exe, ["mkcomposefs", `--digest-store=${store}`, src, img], { encoding: "utf8" });
  expect(r.status, r.stderr).toBe(0);
  link = join(T, "mount.composefs");
  symlinkSync(exe, link);
  mkdirSync(join(T, "mnt"));
});

afterAll(() => {
  if (T !== undefined) rmSync(T, { recursive: true, force: true });
});

describe("mount.composefs", () => {
  const ok = (): boolean => canRun(isRoot, "needs root for mounts in a private namespace");

  test("through the link and as a subcommand: the tree equals the source", () => {
    if (!ok()) return;
    for (const cmd of ['"$M"', '"$C" mount.composefs']) {
      const r = inNs(`${cmd} "$T/i.img" "$T/mnt" -o basedir="$T/store",ro && findmnt -n -o FSTYPE,SOURCE "$T/mnt" && diff -r --no-dereference "${src}" "$T/mnt" && echo SAME`);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/^overlay\s+composefs$/m);
      expect(r.stdout).toContain("SAME");
    }
  });

  test("a writable upper layer (upperdir/workdir)", () => {
    if (!ok()) return;
    mkdirSync(join(T, "up/u"), { recursive: true });
    mkdirSync(join(T, "up/w"), { recursive: true });
    const r = inNs(`"$M" "$T/i.img" "$T/mnt" -o basedir="$T/store",upperdir="$T/up/u",workdir="$T/up/w" && echo new > "$T/mnt/new" && cat "$T/mnt/small"`);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe("x\n");
    expect(spawnSync("cat", [join(T, "up/u/new")], { encoding: "utf8" }).stdout).toBe("new\n");
  });

  test("a missing object fails on access, not at mount", () => {
    if (!ok()) return;
    const empty = join(T, "emptystore");
    mkdirSync(empty, { recursive: true });
    const r = inNs(`"$M" "$T/i.img" "$T/mnt" -o basedir="${empty}" && cat "$T/mnt/small" && ! cat "$T/mnt/big" >/dev/null 2>&1 && echo REFUSED`);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe("x\nREFUSED\n");
  });

  test("refusals: one line, nothing mounted", () => {
    if (!ok()) return;
    writeFileSync(join(T, "junk.img"), pseudoRandom(8192, 3));
    const cases: [string, RegExp][] = [
      [`"$M" "$T/i.img" "$T/mnt" -o frob`, /-o frob: unknown option \(expected basedir=/],
      [`"$M" "$T/i.img" "$T/mnt" -o digest=abc`, /-o digest=abc: not a sha256 or sha512 fs-verity digest/],
      [`"$M" "$T/i.img" "$T/mnt" -o basedir="$T/store",digest=${"0".repeat(128)}`, /i\.img: (digest= given, but the image has no fs-verity|fs-verity digest [0-9a-f]+ is not the expected)/],
      [`"$M" "$T/i.img" "$T/mnt" -o upperdir=/tmp`, /-o upperdir: upperdir= and workdir= go together/],
      [`"$M" "$T/i.img" "$T/mnt" -o rw`, /-o rw: a writable mount needs upperdir= and workdir=/],
      [`"$M" "$T/i.img" "$T/absent"`, /absent: open failed: No such file or directory/],
      [`"$M" "$T/i.img" "$T/i.img"`, /i\.img: mount point is not a directory/],
      [`"$M" "$T/absent.img" "$T/mnt"`, /absent\.img: open failed: No such file or directory/],
      [`"$M" "$T" "$T/mnt"`, /: not a regular file/],
      [`"$M" "$T/junk.img" "$T/mnt" -o basedir="$T/store"`, /junk\.img: cannot mount the EROFS image/],
      [`"$M" "$T/i.img" "$T/mnt" -o basedir="$T/absent"`, /absent: open failed: No such file or directory/],
      [`"$M" "$T/i.img"`, /mount\.composefs: missing argument TARGET/],
    ];
    for (const [script, re] of cases) {
      const r = inNs(`${script}; rc=$?; findmnt -n "$T/mnt" >&2 && echo STILL-MOUNTED >&2; exit $rc`);
      oneLine(r, re);
    }
  });
});
