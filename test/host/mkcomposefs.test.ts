// `cfsboot mkcomposefs` through the built executable: the C mkcomposefs
// contract (vectors produced by the C tool), the V2 extension, directory
// sources mounted back through overlayfs, and failures that leave nothing
// behind.

import { spawnSync, type SpawnSyncReturns } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

import * as sys from "../../shared/sys.ts";
import { canRun, cfsbootExe, hasTool, isRoot, projectRoot, vectorsDir } from "../helpers/env.ts";

let dir: string;

interface Run {
  status: number | null;
  stdout: Buffer;
  stderr: string;
}

function cfs(args: string[], opts: { input?: Uint8Array; env?: Record<string, string>; exe?: string; prefix?: string[] } = {}): Run {
  const exe = opts.exe ?? cfsbootExe;
  const argv = opts.exe ? args : ["mkcomposefs", ...args];
  const cmd = opts.prefix ? opts.prefix[0]! : exe;
  const full = opts.prefix ? [...opts.prefix.slice(1), exe, ...argv] : argv;
  const env: Record<string, string> = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dir, ...opts.env };
  const r: SpawnSyncReturns<Buffer> = spawnSync(cmd, full, {
    cwd: dir,
    input: opts.input,
    env,
    timeout: 120_000,
    maxBuffer: 1 << 30,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString("utf8") };
}

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

function tsv(path: string): Record<string, string>[] {
  const [head, ...rows] = readFileSync(path, "utf8").trimEnd().split("\n");
  const cols = head!.split("\t");
  return rows.map((r) => Object.fromEntries(r.split("\t").map((v, i) => [cols[i]!, v])));
}

/** A failed run: exit 1, exactly one `cfsboot: …` line, and `image` not created. */
function expectFailure(r: Run, pattern: RegExp, image?: string): void {
  expect(r.status, r.stderr).toBe(1);
  const lines = r.stderr.split("\n").filter((l) => l !== "");
  expect(lines.length, r.stderr).toBe(1);
  expect(lines[0]).toMatch(/^cfsboot: /);
  expect(lines[0]).toMatch(pattern);
  expect(lines[0]).not.toMatch(/internal error/);
  if (image !== undefined) expect(existsSync(image), `${image} must not exist`).toBe(false);
}

/** No temporary files left next to an output. */
function leftovers(d: string): string[] {
  return readdirSync(d).filter((n) => n.includes(".tmp"));
}

beforeAll(() => {
  if (!existsSync(cfsbootExe)) {
    const r = spawnSync(process.execPath, ["host/build.ts"], { cwd: projectRoot, stdio: "inherit" });
    if (r.status !== 0) throw new Error("building dist/cfsboot failed");
  }
  dir = mkdtempSync(join(tmpdir(), "cfsboot-mkcfs-"));
  chmodSync(dir, 0o755);
}, 300_000);
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("--from-file: the C tool's images", () => {
  test("every erofs-v1 vector and flag set gives the C image byte for byte", () => {
    const rows = tsv(join(vectorsDir, "erofs-v1/expected.tsv"));
    expect(rows.length).toBe(99);
    const wrong: string[] = [];
    for (const row of rows) {
      const flags = row.flags === "-" ? [] : row.flags!.split(" ");
      const out = join(dir, `${row.name}.img`);
      const r = cfs([...flags, "--from-file", "-", out], { input: readFileSync(join(vectorsDir, "erofs-v1", `${row.name}.dump`)) });
      if (r.status !== 0) {
        wrong.push(`${row.name} ${row.flags}: exit ${r.status}: ${r.stderr.trim()}`);
        continue;
      }
      const img = readFileSync(out);
      if (sha256(img) !== row.image_sha256) wrong.push(`${row.name} ${row.flags}: sha256 differs`);
      if (img.readUInt32LE(12) !== Number(row.composefs_version)) wrong.push(`${row.name} ${row.flags}: version`);
      rmSync(out);
    }
    expect(wrong).toEqual([]);
    expect(leftovers(dir)).toEqual([]);
  });

  test("the C test assets (plain and gzipped dumps, .version files)", () => {
    const rows = tsv(join(vectorsDir, "c-assets/expected.tsv"));
    expect(rows.length).toBe(14);
    for (const row of rows) {
      let input: Uint8Array = readFileSync(join(vectorsDir, "c-assets", row.name!));
      if (row.name!.endsWith(".gz")) input = gunzipSync(input);
      const flags = row.flags === "-" ? [] : row.flags!.split(" ");
      // SOURCE as a file path this time.
      const src = join(dir, "asset.dump");
      writeFileSync(src, input);
      const r = cfs([...flags, "--from-file", src, "-"]);
      expect(r.status, `${row.name}: ${r.stderr}`).toBe(0);
      expect(sha256(r.stdout), row.name).toBe(row.image_sha256);
    }
  });

  test("CFS_PARSE_STRICT makes the strict C checks apply", () => {
    const rows = tsv(join(vectorsDir, "erofs-v1/checks.tsv")).filter((r) => r.flags === "-");
    const rejected = rows.filter((r) => r.strict_parse!.startsWith("rejected"));
    expect(rejected.length).toBeGreaterThan(0);
    for (const row of rows) {
      const input = readFileSync(join(vectorsDir, "erofs-v1", `${row.name}.dump`));
      const out = join(dir, "strict.img");
      const r = cfs(["--from-file", "-", out], { input, env: { CFS_PARSE_STRICT: "1" } });
      if (row.strict_parse === "same") {
        expect(r.status, `${row.name}: ${r.stderr}`).toBe(0);
        rmSync(out);
      } else {
        expectFailure(r, /^cfsboot: stdin: line \d+: /, out);
        expect(cfs(["--from-file", "-", "-"], { input }).status).toBe(0);
      }
    }
  });

  test("every should-fail input is rejected with one line and no image", () => {
    const rows = tsv(join(vectorsDir, "c-assets/should-fail/expected-errors.tsv"));
    expect(rows.length).toBe(14);
    for (const row of rows) {
      const out = join(dir, "fail.img");
      writeFileSync(join(dir, "keep.img"), "old");
      const src = join(vectorsDir, "c-assets/should-fail", row.file!);
      const r = cfs(["--from-file", src, out]);
      expectFailure(r, new RegExp(`^cfsboot: ${src.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: `), out);
    }
    expect(leftovers(dir)).toEqual([]);
  });
});

describe("digests and outputs", () => {
  const row = () => tsv(join(vectorsDir, "erofs-v1/expected.tsv")).find((r) => r.name === "a34-os-like" || r.name!.includes("os-like"))!;

  test("--print-digest prints the image's fs-verity digest, equal to `fsverity digest`", () => {
    const v = row();
    const out = join(dir, "pd.img");
    const r = cfs(["--print-digest", "--from-file", join(vectorsDir, "erofs-v1", `${v.name}.dump`), out]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.toString()).toBe(`${v.image_fsverity_sha256}\n`);
    expect(sha256(readFileSync(out))).toBe(v.image_sha256);
    if (canRun(hasTool("fsverity"), "fsverity (Debian package fsverity) not installed")) {
      const f = spawnSync("fsverity", ["digest", "--compact", out], { encoding: "utf8" });
      expect(f.stdout).toBe(`${v.image_fsverity_sha256}\n`);
    }
  });

  test("--print-digest-only writes no image; an IMAGE with it is refused", () => {
    const v = row();
    const src = join(vectorsDir, "erofs-v1", `${v.name}.dump`);
    const before = readdirSync(dir).sort();
    const r = cfs(["--print-digest-only", "--from-file", src]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.toString()).toBe(`${v.image_fsverity_sha256}\n`);
    expect(readdirSync(dir).sort()).toEqual(before);
    expectFailure(cfs(["--print-digest-only", "--from-file", src, join(dir, "x.img")]), /usage: cannot give an image path/, join(dir, "x.img"));
    expectFailure(cfs(["--from-file", src]), /usage: no image path given/);
  });

  test("IMAGE - writes to stdout; with --print-digest the digest line follows the image (as C)", () => {
    const v = row();
    const src = join(vectorsDir, "erofs-v1", `${v.name}.dump`);
    const r = cfs(["--from-file", src, "-"]);
    expect(r.status, r.stderr).toBe(0);
    expect(sha256(r.stdout)).toBe(v.image_sha256);
    const r2 = cfs(["--print-digest", "--from-file", src, "-"]);
    const size = Number(v.size_bytes);
    expect(sha256(r2.stdout.subarray(0, size))).toBe(v.image_sha256);
    expect(r2.stdout.subarray(size).toString()).toBe(`${v.image_fsverity_sha256}\n`);
  });

  test("--min-version=2 --max-version=2 writes the composefs-rs V2 format", () => {
    for (const v of tsv(join(vectorsDir, "erofs-v2/expected.tsv")).filter((r) => r.erofs_format === "V2")) {
      const r = cfs(["--min-version=2", "--max-version=2", "--print-digest", "--from-file", join(vectorsDir, "erofs-v2", v.dumpfile!), "-"]);
      expect(r.status, r.stderr).toBe(0);
      const size = Number(v.size_bytes);
      expect(sha256(r.stdout.subarray(0, size)), v.name).toBe(v.image_sha256);
      expect(r.stdout.subarray(size).toString(), v.name).toBe(`${v.expected_hex}\n`);
    }
  });

  test("version options follow C: one option sets the other to 0, max raised to min, whiteouts bump to V1", () => {
    const wo = join(vectorsDir, "erofs-v1/a15-whiteouts.dump");
    const plain = join(vectorsDir, "erofs-v1/a02-inline-sizes.dump");
    const v = (flags: string[], src: string) => {
      const r = cfs([...flags, "--from-file", src, "-"]);
      expect(r.status, r.stderr).toBe(0);
      return r.stdout.readUInt32LE(12);
    };
    expect(v([], plain)).toBe(0);
    expect(v([], wo)).toBe(1);
    expect(v(["--min-version=1"], plain)).toBe(1);
    expect(v(["--max-version=0"], wo)).toBe(0);
    expect(v(["--max-version=1"], wo)).toBe(1);
    expect(v(["--max-version=1"], plain)).toBe(0);
    expect(v(["--min-version=1", "--max-version=0"], plain)).toBe(1);
    expect(v(["--max-version=2"], wo)).toBe(1);
    expect(v(["--min-version=2"], plain)).toBe(2);
    expectFailure(cfs(["--min-version=3", "--from-file", plain, "-"]), /--min-version: unsupported format version 3/);
    expectFailure(cfs(["--max-version=x", "--from-file", plain, "-"]), /--max-version: invalid value "x"/);
    expectFailure(cfs(["--threads=0", "--from-file", plain, "-"]), /--threads: invalid thread count 0/);
  });

  test("a `mkcomposefs` link to the executable is the same command", () => {
    const v = row();
    const link = join(dir, "mkcomposefs");
    if (!existsSync(link)) symlinkSync(cfsbootExe, link);
    const r = cfs(["--print-digest", "--from-file", join(vectorsDir, "erofs-v1", `${v.name}.dump`), "-"], { exe: link });
    expect(r.status, r.stderr).toBe(0);
    expect(sha256(r.stdout.subarray(0, Number(v.size_bytes)))).toBe(v.image_sha256);
  });
});

describe("directory SOURCE", () => {
  let src: string;
  beforeAll(() => {
    src = join(dir, "tree");
    mkdirSync(join(src, "sub/deep"), { recursive: true });
    const big = new Uint8Array(200_000).map((_, i) => (i * 31 + 7) % 251);
    writeFileSync(join(src, "big"), big);
    writeFileSync(join(src, "sub/deep/copy"), big);
    writeFileSync(join(src, "small"), "inline me\n");
    writeFileSync(join(src, "empty"), "");
    writeFileSync(join(src, "f65"), "y".repeat(65));
    linkSync(join(src, "f65"), join(src, "sub/f65-link"));
    symlinkSync("../big", join(src, "sub/up"));
    symlinkSync("/absolute/nowhere", join(src, "dangling"));
    sys.mkfifo(join(src, "fifo"));
    writeFileSync(join(src, "name with\nnewline and \xe9"), "odd");
    chmodSync(join(src, "small"), 0o4711);
    sys.lsetxattr(join(src, "big"), "user.k", new TextEncoder().encode("v"));
    if (isRoot) {
      sys.mknod(join(src, "sub/null"), sys.S_IFCHR | 0o666, sys.makedev(1, 3));
      sys.lsetxattr(join(src, "sub"), "trusted.dir", new TextEncoder().encode("t"));
      sys.lsetxattr(join(src, "sub/up"), "trusted.onlink", new TextEncoder().encode("s"));
    }
    sys.utimensat(join(src, "small"), null, [1_700_000_000, 123_456_789]);
  });

  test("the image plus the digest store mount back (overlay, data-only store) as the same tree", () => {
    if (!canRun(isRoot, "mounting needs root")) return;
    const img = join(dir, "tree.img");
    const store = join(dir, "tree-store");
    const r = cfs(["--digest-store", store, "--print-digest", src, img]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.toString()).toMatch(/^[0-9a-f]{64}\n$/);
    if (canRun(hasTool("fsverity"), "fsverity not installed")) {
      expect(spawnSync("fsverity", ["digest", "--compact", img], { encoding: "utf8" }).stdout).toBe(r.stdout.toString());
    }
    // big and sub/deep/copy share one object; f65 and its link another.
    const objects = readdirSync(store).flatMap((xx) => readdirSync(join(store, xx)));
    expect(objects.length).toBe(2);
    const m = spawnSync(process.execPath, [join(projectRoot, "test/helpers/mount-compare.ts"), img, store, src], { encoding: "utf8" });
    expect(m.status, m.stderr).toBe(0);
    const res = JSON.parse(m.stdout);
    expect(res.mismatches).toEqual([]);
    expect(res.entries).toBe(isRoot ? 14 : 13);
  });

  test("--no-hardlinks breaks links; the same tree gives the same digest every time", () => {
    const a = cfs(["--print-digest-only", src]);
    const b = cfs(["--print-digest-only", "--threads=1", src]);
    const c = cfs(["--print-digest-only", "--no-hardlinks", src]);
    expect(a.status, a.stderr).toBe(0);
    expect(a.stdout.toString()).toBe(b.stdout.toString());
    expect(c.stdout.toString()).not.toBe(a.stdout.toString());
    const e = cfs(["--print-digest-only", "--use-epoch", src]);
    expect(e.stdout.toString()).not.toBe(a.stdout.toString());
  });
});

describe("failures leave nothing behind", () => {
  test("missing source, a path through a file, a missing dumpfile, a missing output directory", () => {
    const img = join(dir, "never.img");
    expectFailure(cfs([join(dir, "absent"), img]), new RegExp(`${dir}/absent: statx failed: No such file or directory \\(ENOENT\\)$`), img);
    writeFileSync(join(dir, "plainfile"), "x");
    expectFailure(cfs([join(dir, "plainfile", "sub"), img]), /plainfile\/sub: statx failed: Not a directory \(ENOTDIR\)$/, img);
    expectFailure(cfs([join(dir, "plainfile"), img]), /plainfile: not a directory$/, img);
    expectFailure(cfs(["--from-file", join(dir, "absent.dump"), img]), /absent\.dump: read failed: No such file or directory \(ENOENT\)$/, img);
    expectFailure(
      cfs(["--from-file", join(vectorsDir, "erofs-v1/a01-empty-root.dump"), join(dir, "no/such/dir/out.img")]),
      /no\/such\/dir\/out\.img: open failed: No such file or directory \(ENOENT\)$/,
    );
    expectFailure(cfs(["--skip-xattrs", "--user-xattrs", dir, img]), /--user-xattrs: conflicts with --skip-xattrs/, img);
    expectFailure(cfs(["", img]), /usage: empty source path/, img);
    expect(leftovers(dir)).toEqual([]);
  });

  test("a failed run does not replace an existing image", () => {
    const img = join(dir, "existing.img");
    writeFileSync(img, "previous image");
    const r = cfs(["--from-file", join(vectorsDir, "c-assets/should-fail", "should-fail-dot-name.dump"), img]);
    expect(r.status).toBe(1);
    expect(readFileSync(img, "utf8")).toBe("previous image");
    expect(leftovers(dir)).toEqual([]);
  });

  describe("as an unprivileged user", () => {
    let exe: string;
    let work: string;
    const asNobody = () => ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
    const ok = () => canRun(isRoot && hasTool("setpriv"), "dropping privileges needs root and setpriv");
    beforeAll(() => {
      if (!isRoot || !hasTool("setpriv")) return;
      work = join(dir, "nobody");
      mkdirSync(work);
      chmodSync(work, 0o777);
      exe = join(work, "cfsboot");
      copyFileSync(cfsbootExe, exe);
      chmodSync(exe, 0o755);
    });

    test("an unreadable directory: one error naming it, no image, nothing in the store", () => {
      if (!ok()) return;
      const src = join(work, "src-dir");
      mkdirSync(join(src, "locked"), { recursive: true });
      writeFileSync(join(src, "readable"), "r".repeat(1000));
      chmodSync(join(src, "locked"), 0o700);
      const img = join(work, "out.img");
      const store = join(work, "store");
      const r = cfs(["mkcomposefs", "--digest-store", store, src, img], { exe, prefix: asNobody() });
      expectFailure(r, new RegExp(`^cfsboot: ${src}/locked: readdir failed: Permission denied \\(EACCES\\)$`), img);
      expect(existsSync(store)).toBe(false);
      expect(leftovers(work)).toEqual([]);
    });

    test("an unreadable file: one error naming it, no image, nothing in the store", () => {
      if (!ok()) return;
      const src = join(work, "src-file");
      mkdirSync(src);
      for (let i = 0; i < 50; i++) writeFileSync(join(src, `ok${i}`), String(i).repeat(100 + i));
      writeFileSync(join(src, "secret"), "s".repeat(500));
      chmodSync(join(src, "secret"), 0o600);
      const img = join(work, "out2.img");
      const store = join(work, "store2");
      const r = cfs(["mkcomposefs", "--digest-store", store, src, img], { exe, prefix: asNobody() });
      expectFailure(r, new RegExp(`^cfsboot: ${src}/secret: open failed: Permission denied \\(EACCES\\)$`), img);
      expect(existsSync(store)).toBe(false);
      // A small (inline) unreadable file is named the same way.
      writeFileSync(join(src, "tiny"), "t");
      chmodSync(join(src, "tiny"), 0o600);
      chmodSync(join(src, "secret"), 0o644);
      expectFailure(cfs(["mkcomposefs", src, img], { exe, prefix: asNobody() }), new RegExp(`${src}/tiny: open failed: Permission denied`), img);
    });

    test("an unwritable output directory", () => {
      if (!ok()) return;
      const ro = join(work, "ro");
      mkdirSync(ro);
      chmodSync(ro, 0o755);
      const r = cfs(["mkcomposefs", "--from-file", join(vectorsDir, "erofs-v1/a01-empty-root.dump"), join(ro, "x.img")], { exe, prefix: asNobody() });
      expectFailure(r, /ro\/x\.img: open failed: Permission denied \(EACCES\)$/, join(ro, "x.img"));
    });
  });
});
