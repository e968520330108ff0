// `cfsboot fsverity digest` (the built executable) against fsverity-utils'
// `fsverity digest`: the same bytes on stdout, the same exit status, and one
// `cfsboot: <file>: <what>` line for a file that cannot be digested.

import { spawnSync, type SpawnSyncReturns } from "node:child_process";
import { chmodSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, symlinkSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { measureFileHex } from "../../host/digest.ts";
import { canRun, cfsbootExe, hasTool, isRoot, projectRoot } from "../helpers/env.ts";

const TIME = "/usr/bin/time";
let dir: string;
const FILES = ["empty", "one", "b4095", "b4096", "b4097", "mib3", "big9", "with space", "link"];

function ruleA(size: number, salt = 0): Uint8Array {
  const d = new Uint8Array(size);
  for (let i = 0; i < size; i++) d[i] = ((i * 31 + 7) % 251) ^ salt;
  return d;
}

function run(cmd: string, args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { cwd: opts.cwd ?? dir, encoding: "latin1", timeout: 60_000, env: opts.env ? { ...process.env, ...opts.env } : undefined });
}

const ours = (args: string[], cwd?: string) => run(cfsbootExe, ["fsverity", "digest", ...args], { cwd });
const theirs = (args: string[], cwd?: string) => run("fsverity", ["digest", ...args], { cwd });

beforeAll(() => {
  if (!existsSync(cfsbootExe)) {
    const r = spawnSync(process.execPath, ["host/build.ts"], { cwd: projectRoot, stdio: "inherit" });
    if (r.status !== 0) throw new Error("building dist/cfsboot failed");
  }
  dir = mkdtempSync(join(tmpdir(), "cfsboot-fsv-cli-"));
  chmodSync(dir, 0o755);
  writeFileSync(join(dir, "empty"), "");
  writeFileSync(join(dir, "one"), "x");
  writeFileSync(join(dir, "b4095"), ruleA(4095));
  writeFileSync(join(dir, "b4096"), ruleA(4096));
  writeFileSync(join(dir, "b4097"), ruleA(4097));
  writeFileSync(join(dir, "mib3"), ruleA((1 << 20) + 3, 5));
  writeFileSync(join(dir, "big9"), ruleA(9 * (1 << 20) + 17, 9)); // above the split threshold
  writeFileSync(join(dir, "with space"), "hello world\n");
  symlinkSync("b4097", join(dir, "link"));
  mkdirSync(join(dir, "adir"));
  mkdirSync(join(dir, "many"));
  for (let i = 0; i < 200; i++) writeFileSync(join(dir, "many", `f${i}`), ruleA(i * 997, i));
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const haveFsverity = () => canRun(hasTool("fsverity"), "fsverity (Debian package fsverity) not installed");

describe("same output as fsverity digest", () => {
  for (const alg of ["sha256", "sha512"]) {
    for (const compact of [false, true]) {
      test(`--hash-alg=${alg}${compact ? " --compact" : ""}, relative and absolute paths`, () => {
        if (!haveFsverity()) return;
        const args = [`--hash-alg=${alg}`, ...(compact ? ["--compact"] : []), ...FILES, join(dir, "b4096"), `./one`];
        const a = ours(args);
        const b = theirs(args);
        expect(b.status).toBe(0);
        expect(a.stderr).toBe("");
        expect(a.status).toBe(0);
        expect(a.stdout).toBe(b.stdout);
        expect(a.stdout.split("\n")).toHaveLength(FILES.length + 3);
      });
    }
  }

  test("default algorithm is sha256; one file at a time", () => {
    if (!haveFsverity()) return;
    for (const f of FILES) expect(ours([f]).stdout).toBe(theirs([f]).stdout);
    expect(ours(["one"]).stdout).toMatch(/^sha256:[0-9a-f]{64} one\n$/);
  });

  test("200 files in one call, in order", () => {
    if (!haveFsverity()) return;
    const files = Array.from({ length: 200 }, (_, i) => `many/f${i}`);
    for (const alg of ["sha256", "sha512"]) {
      const a = ours([`--hash-alg=${alg}`, ...files]);
      expect(a.status).toBe(0);
      expect(a.stdout).toBe(theirs([`--hash-alg=${alg}`, ...files]).stdout);
    }
  });

  test("both SHA-2 implementations (CFSBOOT_HASH=bun, CFSBOOT_HASH=libcrypto) print the same", () => {
    if (!haveFsverity()) return;
    for (const alg of ["sha256", "sha512"]) {
      const args = [`--hash-alg=${alg}`, ...FILES];
      const want = theirs(args).stdout;
      for (const impl of ["bun", "libcrypto"]) {
        const a = run(cfsbootExe, ["fsverity", "digest", ...args], { env: { CFSBOOT_HASH: impl } });
        expect(a.stderr, impl).toBe("");
        expect(a.stdout, `${alg} ${impl}`).toBe(want);
      }
    }
  });

  test("--block-size=4096 is accepted, other sizes are refused", () => {
    if (!haveFsverity()) return;
    expect(ours(["--block-size=4096", "b4097"]).stdout).toBe(theirs(["--block-size=4096", "b4097"]).stdout);
    const r = ours(["--block-size=65536", "b4097"]);
    expect(r.status).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toBe("cfsboot: --block-size=65536: unsupported block size (only 4096 is supported)\n");
  });
});

test("sparse 1 GiB + 1 byte file (sha512 4th tree level): same digest, bounded memory", () => {
  if (!haveFsverity() || !canRun(hasTool(TIME), `${TIME} (Debian package time) not installed`)) return;
  const f = join(dir, "sparse");
  const fd = openSync(f, "w");
  for (const [off, byte] of [[0, 1], [4096 * 64 ** 2, 2], [2 ** 30 - 1, 3], [2 ** 30, 4]] as const) writeSync(fd, new Uint8Array([byte]), 0, 1, off);
  closeSync(fd);
  const a = spawnSync(TIME, ["-f", "%M", "-o", join(dir, "rss"), cfsbootExe, "fsverity", "digest", "--hash-alg=sha512", "sparse"], { cwd: dir, encoding: "latin1" });
  expect(a.status).toBe(0);
  expect(a.stdout).toBe(theirs(["--hash-alg=sha512", "sparse"]).stdout);
  const rssKiB = Number(readFileSync(join(dir, "rss"), "latin1").trim().split("\n").pop());
  expect(rssKiB).toBeGreaterThan(1000);
  expect(rssKiB).toBeLessThan(200 * 1024); // the file is 1 GiB; the runtime alone is ~50 MiB
  rmSync(f);
});

describe("errors", () => {
  test("missing file: files before it are printed, then one line, exit 1 (as fsverity does)", () => {
    if (!haveFsverity()) return;
    const args = ["one", "b4096", "missing", "b4097"];
    const a = ours(args);
    const b = theirs(args);
    expect(b.status).toBe(1);
    expect(a.status).toBe(1);
    expect(a.stdout).toBe(b.stdout);
    expect(a.stdout.split("\n")).toHaveLength(3);
    expect(a.stderr).toBe("cfsboot: missing: no such file or directory\n");
  });

  test("directory", () => {
    const a = ours(["adir"]);
    expect(a.status).toBe(1);
    expect(a.stdout).toBe("");
    expect(a.stderr).toBe("cfsboot: adir: is a directory\n");
    const b = ours(["one", `${dir}/adir`, "one"]);
    expect(b.status).toBe(1);
    expect(b.stdout).toMatch(/^sha256:[0-9a-f]{64} one\n$/);
    expect(b.stderr).toBe(`cfsboot: ${dir}/adir: is a directory\n`);
  });

  test("FIFO: refused at once instead of blocking", () => {
    expect(spawnSync("mkfifo", [join(dir, "fifo")]).status).toBe(0);
    const a = ours(["fifo"]);
    expect(a.status).toBe(1);
    expect(a.stderr).toBe("cfsboot: fifo: not a regular file\n");
  });

  test("unreadable file (run as nobody)", () => {
    if (!canRun(isRoot && hasTool("setpriv"), "needs root and setpriv to run as another user")) return;
    writeFileSync(join(dir, "secret"), "x");
    chmodSync(join(dir, "secret"), 0o600);
    const a = spawnSync("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", cfsbootExe, "fsverity", "digest", "one", "secret"], {
      cwd: dir,
      encoding: "latin1",
      timeout: 60_000,
      env: { ...process.env, HOME: dir, TMPDIR: "/tmp" },
    });
    expect(a.stderr).toBe("cfsboot: secret: permission denied\n");
    expect(a.status).toBe(1);
    expect(a.stdout).toMatch(/^sha256:[0-9a-f]{64} one\n$/);
  });

  test("bad arguments: one line, no stack trace", () => {
    const md5 = ours(["--hash-alg=md5", "one"]);
    expect(md5.stderr).toBe("cfsboot: --hash-alg=md5: unknown hash algorithm (expected sha256 or sha512)\n");
    for (const args of [["--hash-alg=md5", "one"], []]) {
      const a = ours(args);
      expect(a.status).toBe(1);
      expect(a.stdout).toBe("");
      expect(a.stderr).toMatch(/^cfsboot: [^\n]+\n$/);
    }
  });
});

test("measureFileHex gives the bare sha256 hex (composefs-info measure-file)", async () => {
  if (!haveFsverity()) return;
  for (const f of ["empty", "b4097", "big9"]) {
    expect(`${await measureFileHex(join(dir, f))}\n`).toBe(theirs(["--compact", f]).stdout);
  }
});
