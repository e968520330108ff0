// Bad input thrown at every command of dist/cfsboot, run as a subprocess:
// usage errors, missing and wrong paths, empty and random files as images,
// dumpfiles, meta.json, manifests, tars, kernel command lines, origins, BLS
// entries and UKIs, huge numbers, invalid digests and image references,
// unreadable files (as an unprivileged user), a read-only target, a full
// file system, and SIGINT/SIGTERM in the middle of commands that write.
//
// The rule checked everywhere: exit status 1 (128+signal when interrupted),
// exactly one line on stderr, `cfsboot: <input>: <what is wrong>`, never an
// internal error or a stack trace, and nothing left behind in the target.
// Corrupted host state (a garbage origin or entry) may instead be reported
// and skipped: warnings (`cfsboot: warning: …`), then success or one error.
// Garbage is generated with fast-check (fixed seeds: reproducible).

import { spawn, spawnSync } from "node:child_process";
import { chmodSync, cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHash } from "node:crypto";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { canRun, hasTool, isRoot } from "../helpers/env.ts";
import { buildImage, pseudoRandom } from "../helpers/oci-image.ts";
import { osImage } from "../helpers/os-host.ts";
import { ensureExe } from "../helpers/sysroot.ts";

const exe = ensureExe();
let T: string;

interface R {
  status: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

interface RunOpts {
  /** Command prefix (setpriv …, unshare …); the executable and args follow. */
  wrap?: string[];
  input?: Uint8Array | string;
  env?: Record<string, string>;
  timeoutMs?: number;
}

function run(args: string[], o: RunOpts = {}): Promise<R> {
  const argv = [...(o.wrap ?? []), exe, ...args];
  return new Promise((resolve) => {
    const child = spawn(argv[0]!, argv.slice(1), {
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: join(T, "home"), CFSBOOT_NO_PROGRESS: "1", ...o.env },
      stdio: ["pipe", "pipe", "pipe"],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (d: Buffer) => out.push(d));
    child.stderr.on("data", (d: Buffer) => err.push(d));
    child.stdin.on("error", () => {});
    child.stdin.end(o.input ?? "");
    const timer = setTimeout(() => child.kill("SIGKILL"), o.timeoutMs ?? 60_000);
    child.on("close", (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout: Buffer.concat(out).toString("utf8"), stderr: Buffer.concat(err).toString("utf8") });
    });
  });
}

const NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];

/** A private mount namespace in which `setup` (sh) runs before cfsboot. */
const inNamespace = (setup: string): string[] => ["unshare", "-m", "--propagation", "private", "sh", "-ec", `${setup}; exec "$0" "$@"`];

/** Exit `status`, exactly one stderr line `cfsboot: …` matching `re`; no internal error, no stack. */
function failsOneLine(r: R, re?: RegExp, status = 1): void {
  const ctx = `status ${r.status} signal ${r.signal}\nstderr: ${r.stderr}\nstdout: ${r.stdout.slice(0, 500)}`;
  expect(r.status, ctx).toBe(status);
  const lines = r.stderr.split("\n").filter((l) => l !== "");
  expect(lines, ctx).toHaveLength(1);
  expect(lines[0], ctx).toMatch(/^cfsboot: \S/);
  expect(r.stderr, ctx).not.toMatch(/internal error|^\s+at |TypeError|RangeError|ReferenceError/m);
  if (re !== undefined) expect(lines[0], ctx).toMatch(re);
}

/** Success, or a one-line failure (for generated input that may happen to be valid). */
function okOrOneLine(r: R): void {
  if (r.status === 0) {
    expect(r.stderr, r.stderr).not.toMatch(/internal error|^\s+at /m);
    return;
  }
  failsOneLine(r);
}

/** Corrupted state: warnings first, then success or exactly one error line (the last). */
function reportedOrOneLine(r: R): void {
  const ctx = `status ${r.status}\nstderr: ${r.stderr}`;
  expect(r.stderr, ctx).not.toMatch(/internal error|^\s+at |TypeError|RangeError|ReferenceError/m);
  expect([0, 1], ctx).toContain(r.status);
  const lines = r.stderr.split("\n").filter((l) => l !== "");
  for (const l of lines) expect(l, ctx).toMatch(/^cfsboot: /);
  const errors = lines.filter((l) => !l.startsWith("cfsboot: warning: "));
  expect(errors.length, ctx).toBe(r.status === 0 ? 0 : 1);
  if (r.status === 1) expect(lines[lines.length - 1], ctx).toBe(errors[0]);
}

/** Every path under `dir` with type, size and mode (what "nothing left behind" compares). */
function listing(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string): void => {
    let names: string[];
    try {
      names = readdirSync(d).sort();
    } catch {
      return;
    }
    for (const n of names) {
      const st = lstatSync(join(d, n));
      const kind = st.isDirectory() ? "d" : st.isSymbolicLink() ? "l" : "f";
      out.push(`${rel}${n} ${kind} ${st.isDirectory() ? 0 : st.size} ${(st.mode & 0o7777).toString(8)}`);
      if (st.isDirectory()) walk(join(d, n), `${rel}${n}/`);
    }
  };
  walk(dir, "");
  return out;
}

/** Names that only a command in progress leaves (temporaries, scratch directories). */
function temporaries(dir: string): string[] {
  return listing(dir)
    .map((l) => l.split(" ")[0]!)
    .filter((p) => /(^|\/)\.[^/]*(tmp|trash)[^/]*$|(^|\/)\.cfsboot-|cfsboot-(digest|cstor|uki)-/.test(p));
}

const sha256 = (b: Uint8Array | string): string => createHash("sha256").update(b).digest("hex");

/** An OCI layout with one layer blob `layer` (any bytes) and a correct config/manifest around it. */
function garbageLayout(dir: string, layer: Uint8Array, opts: { mediaType?: string; manifest?: Uint8Array; config?: string; dropLayer?: boolean } = {}): void {
  mkdirSync(join(dir, "blobs/sha256"), { recursive: true });
  writeFileSync(join(dir, "oci-layout"), '{"imageLayoutVersion":"1.0.0"}');
  const put = (b: Uint8Array | string): string => {
    const d = sha256(b);
    writeFileSync(join(dir, "blobs/sha256", d), b);
    return d;
  };
  const ld = opts.dropLayer ? sha256(layer) : put(layer);
  const config = opts.config ?? JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [`sha256:${sha256(layer)}`] }, config: {} });
  const cd = put(config);
  const manifest =
    opts.manifest ??
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: `sha256:${cd}`, size: Buffer.byteLength(config) },
        layers: [{ mediaType: opts.mediaType ?? "application/vnd.oci.image.layer.v1.tar", digest: `sha256:${ld}`, size: layer.length }],
      }),
    );
  const md = put(manifest);
  writeFileSync(
    join(dir, "index.json"),
    JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: "application/vnd.oci.image.manifest.v1+json", digest: `sha256:${md}`, size: manifest.length, annotations: { "org.opencontainers.image.ref.name": "t" } }] }),
  );
}

// Fixture paths (under T).
let rand: string; // 10,000 random bytes
let empty: string; // empty file
let adir: string; // empty directory
let src: string; // a small source tree
let goodImg: string; // mkcomposefs of src
let layout: string; // OCI layout: tag v1 (OS image), tag uki (a garbage UKI in /boot/EFI/Linux)
let repo: string; // repository with v1 pulled as "v1"
let host: { root: string; esp: string; cmdline: string };
const H = (): string[] => ["--sysroot", host.root, "--esp", host.esp, "--booted-cmdline", host.cmdline];

/** A private copy of the installed host (for commands that may write). */
function copyHost(name: string): { root: string; esp: string; cmdline: string; args: string[] } {
  const d = join(T, "hosts", name);
  mkdirSync(d, { recursive: true });
  cpSync(join(T, "host"), d, { recursive: true, verbatimSymlinks: true });
  const h = { root: join(d, "root"), esp: join(d, "esp"), cmdline: join(d, "cmdline") };
  return { ...h, args: ["--sysroot", h.root, "--esp", h.esp, "--booted-cmdline", h.cmdline] };
}

beforeAll(async () => {
  T = mkdtempSync(join(tmpdir(), "cfsboot-robust-"));
  chmodSync(T, 0o755);
  mkdirSync(join(T, "home"));
  rand = join(T, "rand.bin");
  writeFileSync(rand, pseudoRandom(10_000, 7));
  empty = join(T, "empty");
  writeFileSync(empty, "");
  adir = join(T, "adir");
  mkdirSync(adir);
  src = join(T, "src");
  mkdirSync(join(src, "sub"), { recursive: true });
  writeFileSync(join(src, "big"), pseudoRandom(5000, 3));
  writeFileSync(join(src, "small"), "hello\n");
  writeFileSync(join(src, "sub/c"), pseudoRandom(300, 4));
  goodImg = join(T, "good.img");
  expect(spawnSync(exe, ["mkcomposefs", src, goodImg]).status).toBe(0);

  layout = join(T, "layout");
  buildImage(layout, osImage({ version: "1.0" }).spec, { tag: "v1" });
  buildImage(layout, osImage({ version: "1.1", files: { "/boot/EFI/Linux/bad.efi": pseudoRandom(8192, 9) } }).spec, { tag: "uki" });

  repo = join(T, "repo");
  const env = { PATH: process.env.PATH ?? "/usr/bin:/bin", CFSBOOT_NO_PROGRESS: "1" };
  expect(spawnSync(exe, ["repo", "--repo", repo, "init"], { env }).status).toBe(0);
  const pull = spawnSync(exe, ["repo", "--repo", repo, "pull", `oci:${layout}:v1`, "v1"], { env, encoding: "utf8" });
  expect(pull.status, pull.stderr).toBe(0);

  host = { root: join(T, "host/root"), esp: join(T, "host/esp"), cmdline: join(T, "host/cmdline") };
  mkdirSync(host.root, { recursive: true });
  mkdirSync(host.esp, { recursive: true });
  const inst = spawnSync(exe, ["install", "to-filesystem", "--source-imgref", `oci:${layout}:v1`, "--composefs-insecure", "--esp", host.esp, host.root], { env, encoding: "utf8" });
  expect(inst.status, inst.stderr).toBe(0);
  const entries = join(host.esp, "loader/entries");
  const entry = readFileSync(join(entries, readdirSync(entries)[0]!), "utf8");
  writeFileSync(host.cmdline, `initrd=x ${/^options (.*)$/m.exec(entry)![1]}\n`);
}, 300_000);

afterAll(() => {
  if (T !== undefined) rmSync(T, { recursive: true, force: true });
});

// ---- the command line itself -----------------------------------------------------------------------

const COMMANDS: string[][] = [
  ["fsverity", "digest"],
  ["mkcomposefs"],
  ["composefs-info"],
  ["mount.composefs"],
  ["repo", "init"],
  ["repo", "pull"],
  ["repo", "images"],
  ["repo", "inspect"],
  ["repo", "tag"],
  ["repo", "untag"],
  ["repo", "mount"],
  ["repo", "dump"],
  ["repo", "create-image"],
  ["repo", "compute-id"],
  ["repo", "gc"],
  ["repo", "fsck"],
  ["install", "to-filesystem"],
  ["install", "to-disk"],
  ["status"],
  ["upgrade"],
  ["switch"],
  ["rollback"],
  ["gc"],
  ["seal"],
  ["finalize-staged"],
  ["config-diff"],
  ["boot-complete"],
  ["container", "compute-composefs-digest"],
  ["container", "ukify"],
];

describe.concurrent("usage errors: one line naming the argument, exit 1", () => {
  for (const cmd of COMMANDS) {
    const name = cmd.join(" ");
    test(`${name} --no-such-option`, async () => {
      // Enough arguments that the unknown option is the only thing wrong.
      const fill: Record<string, string[]> = { "mount.composefs": ["x"], "repo tag": ["x"], "repo mount": ["x"], "install to-filesystem": ["--source-imgref", "x"], "install to-disk": ["--source-imgref", "x"] };
      failsOneLine(await run([...cmd, "--no-such-option", "x", ...(fill[name] ?? [])]), new RegExp(`^cfsboot: --no-such-option: unknown option \\(see cfsboot ${name} --help\\)$`));
    });
    test(`${name} --help describes every option`, async () => {
      const r = await run([...cmd, "--help"]);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toContain(`cfsboot ${name}`);
      // An option line with nothing between its name(s) and the type tag has no description.
      const bare = r.stdout.split("\n").filter((l) => /^\s+(-\w, )?--[\w-]+(, --[\w-]+)*\s+\[(string|boolean|number|array)\]/.test(l));
      expect(bare, r.stdout).toEqual([]);
      expect(r.stdout).not.toMatch(/\bteh\b|\brecieve|\boccured|\bseperat|\bwich\b/i);
    });
  }

  const missing: [string[], RegExp][] = [
    [["fsverity", "digest"], /^cfsboot: fsverity digest: missing argument FILES/],
    [["mkcomposefs"], /^cfsboot: mkcomposefs: missing argument SOURCE/],
    [["composefs-info"], /^cfsboot: composefs-info: missing argument ACTION/],
    [["repo", "pull"], /^cfsboot: repo pull: missing argument IMGREF/],
    [["repo", "inspect"], /^cfsboot: repo inspect: missing argument IMAGE/],
    [["repo", "tag", "sha256:x"], /^cfsboot: repo tag: missing argument NAME/],
    [["repo", "untag"], /^cfsboot: repo untag: missing argument NAME/],
    [["repo", "mount", "img"], /^cfsboot: repo mount: missing argument MOUNTPOINT/],
    [["repo", "dump"], /^cfsboot: repo dump: missing argument IMAGE/],
    [["repo", "create-image"], /^cfsboot: repo create-image: missing argument PATH/],
    [["repo", "compute-id"], /^cfsboot: repo compute-id: missing argument PATH/],
    [["install", "to-filesystem", "--source-imgref", "oci:x"], /^cfsboot: install to-filesystem: missing argument TARGET/],
    [["install", "to-disk", "--source-imgref", "oci:x"], /^cfsboot: install to-disk: missing argument DEVICE/],
    [["install", "to-filesystem", "/t"], /^cfsboot: --source-imgref: required option missing/],
    [["switch"], /^cfsboot: switch: missing argument IMGREF/],
    [[], /^cfsboot: missing command \(commands: fsverity, mkcomposefs, .*see cfsboot --help\)$/],
    [["repo"], /^cfsboot: repo: missing command \(commands: init, pull,/],
    [["install"], /^cfsboot: install: missing command \(commands: to-filesystem, to-disk/],
    [["container"], /^cfsboot: container: missing command/],
    [["fsverity"], /^cfsboot: fsverity: missing command \(commands: digest/],
  ];
  for (const [args, re] of missing) test(`missing: cfsboot ${args.join(" ")}`, async () => failsOneLine(await run(args), re));

  const wrong: [string[], RegExp][] = [
    [["frobnicate"], /^cfsboot: frobnicate: unknown command \(commands: fsverity,/],
    [["statu"], /^cfsboot: statu: unknown command \(did you mean status\?/],
    [["repo", "frobnicate"], /^cfsboot: repo frobnicate: unknown command \(commands: init,/],
    [["repo", "--repo", "/x", "frobnicate"], /^cfsboot: repo frobnicate: unknown command/],
    [["install", "frobnicate"], /^cfsboot: install frobnicate: unknown command/],
    [["container", "frobnicate"], /^cfsboot: container frobnicate: unknown command/],
    [["fsverity", "frobnicate"], /^cfsboot: fsverity frobnicate: unknown command/],
    [["composefs-info", "frobnicate", "x"], /^cfsboot: frobnicate: invalid action \(expected ls, dump, objects, missing-objects or measure-file/],
    [["mkcomposefs", "a", "b", "c"], /^cfsboot: c: unexpected argument/],
    [["status", "extra"], /^cfsboot: extra: unexpected argument \(see cfsboot status --help\)/],
    [["upgrade", "extra"], /^cfsboot: extra: unexpected argument/],
    [["repo", "images", "extra"], /^cfsboot: extra: unexpected argument/],
    [["switch", "a", "b"], /^cfsboot: b: unexpected argument/],
    [["status", "--sysroot"], /^cfsboot: --sysroot: missing value \(see cfsboot status --help\)$/],
    [["status", "--sysroot", "--booted"], /^cfsboot: --sysroot: missing value/],
    [["repo", "images", "--repo"], /^cfsboot: --repo: missing value/],
    [["install", "to-filesystem", "/t", "--source-imgref"], /^cfsboot: --source-imgref: missing value/],
    [["status", "--sysroot", "/a", "--sysroot", "/b"], /^cfsboot: --sysroot: given more than once/],
    [["mkcomposefs", "--digest-store=/a", "--digest-store=/b", "s", "i"], /^cfsboot: --digest-store: given more than once/],
    [["upgrade", "--check", "--apply"], /^cfsboot: --check, --apply: cannot be used together/],
    [["container", "compute-composefs-digest", "--format=3", "/"], /^cfsboot: --format=3: invalid value \(expected 1 or 2\)$/],
    [["container", "ukify", "--uki-builder=lilo"], /^cfsboot: --uki-builder=lilo: invalid value/],
    [["status", "--format=xml"], /^cfsboot: --format: unknown format "xml"/],
    [["status", "--format-version=7"], /^cfsboot: --format-version: unsupported format version 7/],
    [["fsverity", "digest", "--hash-alg=md5", "/etc/hostname"], /^cfsboot: --hash-alg=md5: unknown hash algorithm/],
    [["fsverity", "digest", "--block-size=1024", "/etc/hostname"], /^cfsboot: --block-size=1024: unsupported block size/],
    [["mkcomposefs", "--min-version=abc", "/usr/share/doc/bash", "/dev/null/i"], /^cfsboot: --min-version: invalid value "abc"/],
    [["mkcomposefs", "--max-version=99", "/usr/share/doc/bash", "/dev/null/i"], /^cfsboot: --max-version: unsupported format version 99/],
    [["mkcomposefs", "--threads=0", "s", "i"], /^cfsboot: --threads: invalid thread count 0/],
    [["mkcomposefs", "--threads=1e999", "s", "i"], /^cfsboot: --threads: /],
    [["mkcomposefs", "--skip-xattrs", "--user-xattrs", "s", "i"], /^cfsboot: --user-xattrs: conflicts with --skip-xattrs/],
    [["repo", "--repo", "/x", "init", "--algorithm=md5"], /^cfsboot: --algorithm: unknown algorithm "md5"/],
    [["repo", "--repo", "/x", "init", "--erofs=v3"], /^cfsboot: --erofs: unknown value "v3"/],
  ];
  for (const [args, re] of wrong) test(`wrong: cfsboot ${args.join(" ")}`, async () => failsOneLine(await run(args), re));

  test("repeatable options still repeat (--karg twice, --filter twice)", async () => {
    // Both kargs reach the install (which then fails on the missing ESP: no bar to repeat).
    const r = await run(["install", "to-filesystem", "--source-imgref", `oci:${layout}:v1`, "--karg", "a=1", "--karg", "composefs=x", join(T, "adir")]);
    failsOneLine(r, /--karg composefs=x: conflicts with the composefs karg|ESP/);
    const f = await run(["composefs-info", "ls", "--filter", "big", "--filter", "sub", goodImg]);
    expect(f.status, f.stderr).toBe(0);
    expect(f.stdout.split("\n").map((l) => l.split("\t")[0]!.replace(/\/$/, "")).filter((l) => l !== "")).toEqual(["/big", "/sub", "/sub/c"]);
  });
});

// ---- files and paths --------------------------------------------------------------------------------

describe.concurrent("bad paths and bad files: one line, nothing written", () => {
  const cases = (): [string, (o: string) => string[], RegExp, string?][] => [
    ["fsverity: missing file", (o) => ["fsverity", "digest", join(T, "absent")], /absent: no such file or directory$/],
    ["fsverity: a directory", (o) => ["fsverity", "digest", adir], /adir: is a directory$/],
    ["fsverity: a device", (o) => ["fsverity", "digest", "/dev/zero"], /\/dev\/zero: not a regular file$/],
    ["mkcomposefs: missing source", (o) => ["mkcomposefs", join(T, "absent"), join(o, "o1.img")], /absent: statx failed: No such file or directory/, "o1.img"],
    ["mkcomposefs: a file as source", (o) => ["mkcomposefs", rand, join(o, "o2.img")], /rand\.bin: not a directory$/, "o2.img"],
    ["mkcomposefs: a directory as dumpfile", (o) => ["mkcomposefs", "--from-file", adir, join(o, "o3.img")], /adir: is a directory$/, "o3.img"],
    ["mkcomposefs: a device as dumpfile", (o) => ["mkcomposefs", "--from-file", "/dev/zero", join(o, "o4.img")], /\/dev\/zero: not a regular file$/, "o4.img"],
    ["mkcomposefs: an empty dumpfile", (o) => ["mkcomposefs", "--from-file", empty, join(o, "o5.img")], /empty: line 1: the dumpfile is empty/, "o5.img"],
    ["mkcomposefs: random bytes as dumpfile", (o) => ["mkcomposefs", "--from-file", rand, join(o, "o6.img")], /rand\.bin: line \d+: /, "o6.img"],
    ["mkcomposefs: image in a missing directory", (o) => ["mkcomposefs", src, join(o, "absent/o.img")], /absent\/o\.img: open failed: No such file or directory/],
    ["mkcomposefs: image is a directory", (o) => ["mkcomposefs", src, adir], /adir: rename failed: Is a directory/],
    ["mkcomposefs: digest store is a file", (o) => ["mkcomposefs", `--digest-store=${rand}`, src, join(o, "o7.img")], /rand\.bin: /, "o7.img"],
    ["composefs-info: missing image", (o) => ["composefs-info", "ls", join(T, "absent")], /absent: read failed: No such file or directory/],
    ["composefs-info: a directory", (o) => ["composefs-info", "dump", adir], /adir: is a directory$/],
    ["composefs-info: a device", (o) => ["composefs-info", "ls", "/dev/zero"], /\/dev\/zero: not a regular file$/],
    ["composefs-info: empty image", (o) => ["composefs-info", "objects", empty], /empty: offset 0: image is 0 bytes/],
    ["composefs-info: random image", (o) => ["composefs-info", "dump", rand], /rand\.bin: offset 0: bad composefs magic/],
    ["composefs-info: no image", (o) => ["composefs-info", "ls"], /composefs-info ls: no image path specified/],
    ["composefs-info: measure a directory", (o) => ["composefs-info", "measure-file", adir], /adir: is a directory$/],
    ["repo: missing repository", (o) => ["repo", "--repo", join(T, "absent"), "images"], /absent: no repository here/],
    ["repo: a file as repository", (o) => ["repo", "--repo", rand, "images"], /rand\.bin: not a directory$/],
    ["repo: a directory without meta.json", (o) => ["repo", "--repo", adir, "fsck"], /adir\/meta\.json: not found/],
    ["repo init: a file as repository", (o) => ["repo", "--repo", rand, "init"], /rand\.bin: /],
    ["repo create-image: missing directory", (o) => ["repo", "--repo", repo, "create-image", join(T, "absent")], /absent: not a directory$/],
    ["repo create-image: a file", (o) => ["repo", "--repo", repo, "create-image", rand], /rand\.bin: not a directory$/],
    ["repo create-image: bad ref name", (o) => ["repo", "--repo", repo, "create-image", "--no-propagate-usr-to-root", src, "../up"], /"\.\.\/up": invalid image ref name/],
    ["repo compute-id: no such image", (o) => ["repo", "--repo", repo, "compute-id", "nosuch"], /nosuch: no such image/],
    ["repo mount: mount point missing", (o) => ["repo", "--repo", repo, "mount", "v1", join(T, "absent")], /absent|no such/i],
    ["install: a file as target", (o) => ["install", "to-filesystem", "--source-imgref", `oci:${layout}:v1`, "--composefs-insecure", "--esp", o, rand], /rand\.bin: target is not a directory$/],
    ["install: missing ESP", (o) => ["install", "to-filesystem", "--source-imgref", `oci:${layout}:v1`, "--composefs-insecure", o], /missing ESP: none found/],
    ["install: ESP not a directory", (o) => ["install", "to-filesystem", "--source-imgref", `oci:${layout}:v1`, "--composefs-insecure", "--esp", rand, o], /--esp .*rand\.bin: missing ESP: not a directory/],
    ["install: boot loader", (o) => ["install", "to-filesystem", "--source-imgref", `oci:${layout}:v1`, "--bootloader=lilo", o], /--bootloader: unknown boot loader "lilo"/],
    ["install: conflicting karg", (o) => ["install", "to-filesystem", "--source-imgref", `oci:${layout}:v1`, "--composefs-insecure", "--esp", o, "--karg", "composefs=abc", o], /--karg composefs=abc: conflicts with the composefs karg/],
    ["install: already installed", (o) => ["install", "to-filesystem", "--source-imgref", `oci:${layout}:v1`, "--composefs-insecure", "--esp", host.esp, host.root], /already holds a composefs installation/],
    ["to-disk: a directory", (o) => ["install", "to-disk", "--source-imgref", `oci:${layout}:v1`, "--composefs-insecure", o], /: not a block device or a regular file/],
    ["to-disk: a non-empty file", (o) => ["install", "to-disk", "--source-imgref", `oci:${layout}:v1`, "--composefs-insecure", rand], /rand\.bin: exists and is not empty; pass --wipe/],
    ["to-disk: bad size", (o) => ["install", "to-disk", "--source-imgref", `oci:${layout}:v1`, "--composefs-insecure", "--size=lots", join(o, "d1.img")], /--size "lots": expected a size/, "d1.img"],
    ["to-disk: huge size", (o) => ["install", "to-disk", "--source-imgref", `oci:${layout}:v1`, "--composefs-insecure", "--size=99999999999T", join(o, "d2.img")], /--size "99999999999T": too large/, "d2.img"],
    ["to-disk: tiny ESP", (o) => ["install", "to-disk", "--source-imgref", `oci:${layout}:v1`, "--composefs-insecure", "--esp-size=1", join(o, "d3.img")], /ESP size: 1 bytes: must be/, "d3.img"],
    ["to-disk: bad disk UUID", (o) => ["install", "to-disk", "--source-imgref", `oci:${layout}:v1`, "--composefs-insecure", "--disk-uuid=zz", join(o, "d4.img")], /"zz": not a UUID/, "d4.img"],
    ["host: missing --sysroot", (o) => ["status", "--sysroot", join(T, "absent")], /--sysroot .*absent: no such directory$/],
    ["host: a file as --sysroot", (o) => ["upgrade", "--sysroot", rand], /--sysroot .*rand\.bin: not a directory$/],
    ["host: not a host (upgrade)", (o) => ["upgrade", "--sysroot", adir, "--booted-cmdline", host.cmdline], /adir: not a composefs host/],
    ["host: not a host (gc)", (o) => ["gc", "--sysroot", adir, "--booted-cmdline", host.cmdline], /adir: not a composefs host/],
    ["host: not a host (rollback)", (o) => ["rollback", "--sysroot", adir, "--booted-cmdline", host.cmdline], /adir: not a composefs host/],
    ["host: not a host (finalize-staged)", (o) => ["finalize-staged", "--sysroot", adir, "--booted-cmdline", host.cmdline], /adir: not a composefs host/],
    ["host: not a host (seal)", (o) => ["seal", "--sysroot", adir, "--booted-cmdline", host.cmdline], /adir\/composefs: no composefs repository here/],
    ["host: empty --sysroot", (o) => ["gc", "--sysroot", ""], /--sysroot: empty path/],
    ["host: missing --booted-cmdline", (o) => [...["status"], ...H().slice(0, 4), "--booted-cmdline", join(T, "absent")], /--booted-cmdline .*absent: cannot read: open failed: No such file/],
    ["host: a directory as --booted-cmdline", (o) => [...["upgrade"], ...H().slice(0, 4), "--booted-cmdline", adir], /adir: cannot read: open failed: Is a directory/],
    ["host: missing --esp", (o) => ["status", "--sysroot", host.root, "--booted-cmdline", host.cmdline, "--esp", join(T, "absent")], /--esp .*absent: missing ESP: not a directory$/],
    ["host: missing --esp (upgrade)", (o) => ["upgrade", "--sysroot", host.root, "--booted-cmdline", host.cmdline, "--esp", join(T, "absent")], /--esp .*absent: missing ESP: not a directory$/],
    ["compute-composefs-digest: missing directory", (o) => ["container", "compute-composefs-digest", join(T, "absent")], /absent/],
    ["ukify: missing rootfs", (o) => ["container", "ukify", "--rootfs", join(T, "absent"), "--", "--output", join(o, "u.efi")], /absent/, "u.efi"],
    ["ukify: missing stub", (o) => ["container", "ukify", "--rootfs", src, "--uki-builder=objcopy", "--stub", join(T, "absent"), "--", "--output", join(o, "u2.efi")], /absent|no kernel|vmlinuz/, "u2.efi"],
  ];
  for (const [name, args, re, out] of cases()) {
    test(name, async () => {
      const o = mkdtempSync(join(T, "case-"));
      failsOneLine(await run(args(o)), re);
      if (out !== undefined) expect(existsSync(join(o, out)), `${out} must not exist`).toBe(false);
      expect(listing(o), "nothing left in the target").toEqual([]);
      expect(listing(adir)).toEqual([]);
    });
  }

  test("the repository and the host are unchanged by all of the above", async () => {
    const before = listing(T);
    const checks: [string[], RegExp][] = [
      [["repo", "--repo", repo, "tag", "sha256:" + "0".repeat(64), "x"], /no such manifest in the repository/],
      [["repo", "--repo", repo, "untag", "nosuch"], /nosuch: no such tag/],
      [["repo", "--repo", repo, "inspect", "@sha256:zz"], /@sha256:zz: not a manifest digest/],
      [["repo", "--repo", repo, "dump", "nosuch"], /nosuch: no such image/],
      [["rollback", ...H()], /No rollback available/],
    ];
    const rs = await Promise.all(checks.map(([a]) => run(a)));
    rs.forEach((r, i) => failsOneLine(r, checks[i]![1]));
    expect(listing(T).filter((l) => !l.startsWith("hosts/"))).toEqual(before.filter((l) => !l.startsWith("hosts/")));
  });
});

// ---- image references, transports, manifests, tars, UKIs -------------------------------------------

describe.concurrent("image references and OCI content", () => {
  const refs: [string, RegExp][] = [
    ["frob:x", /^cfsboot: frob:x: unknown transport/],
    ["plainname", /^cfsboot: plainname: unknown transport/],
    ["docker://", /^cfsboot: docker:\/\/: empty image reference/],
    ["docker://127.0.0.1:1/x@sha256:zz", /invalid sha256 digest "sha256:zz"/],
    ["docker://127.0.0.1:1/x:y", /cannot connect to 127\.0\.0\.1:1: connection refused/],
    ["oci:", /^cfsboot: oci:/],
    ["oci-archive:", /^cfsboot: oci-archive:/],
    ["containers-storage:", /^cfsboot: containers-storage:/],
  ];
  for (const [ref, re] of refs) {
    test(`repo pull ${ref}`, async () => {
      const r = await run(["repo", "--repo", repo, "pull", ref], { timeoutMs: 30_000 });
      failsOneLine(r, re);
    });
  }

  test("generated docker:// references fail on one line", async () => {
    const junk = fc.sample(fc.string({ maxLength: 40 }), { numRuns: 8, seed: 11 });
    const rs = await Promise.all(junk.map((j) => run(["repo", "--repo", repo, "pull", `docker://127.0.0.1:1/${j}`], { timeoutMs: 30_000 })));
    for (const r of rs) failsOneLine(r);
  });

  test("install / switch / compute-composefs-digest with bad references", async () => {
    const t = mkdtempSync(join(T, "badref-"));
    failsOneLine(await run(["install", "to-filesystem", "--source-imgref", "frob:x", "--composefs-insecure", "--esp", t, t]), /frob:x|unknown transport/);
    expect(listing(t), "a failed install leaves the target as it was").toEqual([]);
    const h = copyHost("badref");
    failsOneLine(await run(["switch", ...h.args, `oci:${join(T, "absent")}`]), /absent: (not an OCI image layout|no such directory)/);
    failsOneLine(await run(["switch", ...h.args, "--transport=frob", "x"]), /unknown transport/);
    failsOneLine(await run(["container", "compute-composefs-digest", "oci:" + join(T, "absent")]), /absent: (not an OCI image layout|no such directory)/);
    expect(existsSync(join(h.esp, "loader/entries.staged"))).toBe(false);
  });

  const layouts: [string, (d: string) => void, RegExp][] = [
    ["random bytes as a tar layer", (d) => garbageLayout(d, pseudoRandom(20_000, 21)), /layer sha256:[0-9a-f]{64}: offset 0: bad tar header checksum/],
    ["random bytes as a gzip layer", (d) => garbageLayout(d, pseudoRandom(20_000, 22), { mediaType: "application/vnd.oci.image.layer.v1.tar+gzip" }), /cannot decompress the gzip layer/],
    ["random bytes as a zstd layer", (d) => garbageLayout(d, pseudoRandom(20_000, 23), { mediaType: "application/vnd.oci.image.layer.v1.tar+zstd" }), /cannot decompress the zstd layer/],
    ["an unknown layer media type", (d) => garbageLayout(d, pseudoRandom(100, 24), { mediaType: "application/x-frob" }), /media type "application\/x-frob" is not a tar layer/],
    ["random bytes as the manifest", (d) => garbageLayout(d, pseudoRandom(100, 25), { manifest: pseudoRandom(300, 26) }), /invalid JSON/],
    ["a manifest without config", (d) => garbageLayout(d, pseudoRandom(100, 27), { manifest: Buffer.from('{"schemaVersion":2,"layers":"x"}') }), /field config: missing/],
    ["a config that is not JSON", (d) => garbageLayout(d, pseudoRandom(100, 28), { config: "not json" }), /config sha256:[0-9a-f]{64}: invalid JSON/],
    ["a layer blob missing", (d) => garbageLayout(d, pseudoRandom(100, 29), { dropLayer: true }), /blob missing from the layout/],
    [
      "random bytes as index.json",
      (d) => {
        garbageLayout(d, pseudoRandom(100, 30));
        writeFileSync(join(d, "index.json"), pseudoRandom(200, 31));
      },
      /index\.json: invalid JSON/,
    ],
    [
      "a blob whose bytes do not match its digest",
      (d) => {
        garbageLayout(d, pseudoRandom(100, 32));
        const blobs = join(d, "blobs/sha256");
        for (const n of readdirSync(blobs)) if (readFileSync(join(blobs, n)).length === 100) writeFileSync(join(blobs, n), pseudoRandom(100, 33));
      },
      /digest|mismatch/i,
    ],
  ];
  for (const [name, make, re] of layouts) {
    test(`pull: ${name} — repository unchanged, fsck clean`, async () => {
      const d = mkdtempSync(join(T, "lay-"));
      make(d);
      const r2 = join(T, `repo-${d.slice(-6)}`);
      expect(spawnSync(exe, ["repo", "--repo", r2, "init"]).status).toBe(0);
      const before = listing(r2);
      failsOneLine(await run(["repo", "--repo", r2, "pull", `oci:${d}:t`]), re);
      expect(listing(r2).filter((l) => !l.startsWith("objects/"))).toEqual(before.filter((l) => !l.startsWith("objects/")));
      const f = await run(["repo", "--repo", r2, "fsck"]);
      expect(f.status, f.stdout + f.stderr).toBe(0);
    });
  }

  test("generated garbage layers (fast-check): one line each, fsck clean", async () => {
    const blobs = fc.sample(fc.uint8Array({ minLength: 0, maxLength: 3000 }), { numRuns: 4, seed: 5 });
    const media = ["application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.oci.image.layer.v1.tar+zstd"];
    await Promise.all(
      blobs.map(async (b, i) => {
        const d = join(T, `lay-fc-${i}`);
        const r2 = join(T, `repo-fc-${i}`);
        garbageLayout(d, b, { mediaType: media[i % 3]! });
        expect(spawnSync(exe, ["repo", "--repo", r2, "init"]).status).toBe(0);
        okOrOneLine(await run(["repo", "--repo", r2, "pull", `oci:${d}:t`])); // an empty tar is a valid layer
        expect((await run(["repo", "--repo", r2, "fsck"])).status).toBe(0);
      }),
    );
  });

  test("random bytes as a UKI in /boot/EFI/Linux: install refuses on one line, nothing installed", async () => {
    const root = mkdtempSync(join(T, "ukiroot-"));
    const esp = mkdtempSync(join(T, "ukiesp-"));
    const r = await run(["install", "to-filesystem", "--source-imgref", `oci:${layout}:uki`, "--composefs-insecure", "--esp", esp, root]);
    failsOneLine(r, /bad\.efi|PE|UKI|\.efi/i);
    expect(existsSync(join(esp, "loader/entries"))).toBe(false);
  });
});

// ---- generated garbage: images, dumpfiles, meta.json, kernel command lines ---------------------------

describe.concurrent("generated garbage (fast-check)", () => {
  test("composefs-info dump: random and bit-flipped images", async () => {
    const good = new Uint8Array(readFileSync(goodImg));
    const flipped = fc.tuple(fc.nat(good.length - 1), fc.integer({ min: 1, max: 255 })).map(([off, x]) => {
      const b = good.slice();
      b[off]! ^= x;
      return b;
    });
    const images = fc.sample(fc.oneof(fc.uint8Array({ maxLength: 9000 }), flipped, flipped), { numRuns: 10, seed: 1 });
    const rs = await Promise.all(
      images.map((img, i) => {
        const p = join(T, `fc-img-${i}`);
        writeFileSync(p, img);
        return run(["composefs-info", "dump", p]);
      }),
    );
    for (const r of rs) okOrOneLine(r);
  });

  test("mkcomposefs --from-file: dumpfile-like garbage", async () => {
    const word = fc.oneof(fc.constantFrom("/", "/a", "/a/b", "40755", "100644", "120777", "1", "0", "-", "\\x00", "\\x", "&", "=", "user.x=y", "5000", "1.5"), fc.string({ maxLength: 6 }));
    const line = fc.array(word, { minLength: 1, maxLength: 12 }).map((w) => w.join(" "));
    const docs = fc.sample(fc.array(line, { maxLength: 6 }).map((ls) => ["/ 0 40755 2 0 0 0 0.0 - - -", ...ls].join("\n") + "\n"), { numRuns: 10, seed: 2 });
    const rs = await Promise.all(
      docs.map((d, i) => {
        const out = join(T, `fc-dump-${i}.img`);
        return run(["mkcomposefs", "--from-file", "-", out], { input: d }).then((r) => ({ r, out }));
      }),
    );
    for (const { r, out } of rs) {
      okOrOneLine(r);
      expect(existsSync(out)).toBe(r.status === 0);
    }
  });

  test("meta.json garbage: the repository refuses to open, on one line", async () => {
    const metas = fc.sample(fc.oneof(fc.json().map((j) => Buffer.from(j)), fc.uint8Array({ maxLength: 300 }), fc.constant(Buffer.from('{"version":1,"algorithm":"fsverity-sha512-12","features":{"incompatible":["frob"]}}'))), { numRuns: 8, seed: 3 });
    const rs = await Promise.all(
      metas.map((m, i) => {
        const d = join(T, `fc-repo-${i}`);
        mkdirSync(d);
        writeFileSync(join(d, "meta.json"), m);
        return run(["repo", "--repo", d, "images"]);
      }),
    );
    for (const r of rs) failsOneLine(r, /meta\.json/);
  });

  test("kernel command lines with malformed composefs kargs", async () => {
    const hex = fc.stringMatching(/^\??[0-9a-fA-F]{0,140}$/);
    const karg = fc.oneof(
      hex.map((h) => `composefs=${h}`),
      hex.map((h) => `composefs.digest=${h}`),
      hex.map((h) => `composefs.digest=v1-sha512-12:${h}`),
      fc.string({ maxLength: 30 }).map((s) => `composefs=${s}`),
    );
    const lines = fc.sample(fc.array(karg, { minLength: 1, maxLength: 3 }).map((k) => `quiet ${k.join(" ")}\n`), { numRuns: 8, seed: 4 });
    const rs = await Promise.all(
      lines.map((l, i) => {
        const p = join(T, `fc-cmdline-${i}`);
        writeFileSync(p, l);
        return run(["status", "--sysroot", host.root, "--esp", host.esp, "--booted-cmdline", p, "--format=json"]);
      }),
    );
    for (const r of rs) reportedOrOneLine(r);
  });

  test("origin files and BLS entries of random text: reported and skipped, or one error; never a half-written loader", async () => {
    const texts = fc.sample(fc.oneof(fc.string({ maxLength: 200 }), fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b).toString("latin1")), fc.constant("[origin]\ncontainer-image-reference=\n"), fc.constant("title x\nversion 1\nlinux /nonexistent\noptions composefs=zz\n")), { numRuns: 4, seed: 6 });
    const id = readdirSync(join(host.root, "state/deploy")).find((n) => !n.startsWith("."))!;
    const jobs: Promise<void>[] = [];
    for (const [i, t] of texts.entries()) {
      jobs.push(
        (async () => {
          const h = copyHost(`origin-${i}`);
          writeFileSync(join(h.root, "state/deploy", id, `${id}.origin`), t, "latin1");
          for (const cmd of [["status"], ["upgrade", "--check"], ["rollback"], ["config-diff"]]) reportedOrOneLine(await run([...cmd, ...h.args]));
        })(),
      );
      jobs.push(
        (async () => {
          const h = copyHost(`bls-${i}`);
          const dir = join(h.esp, "loader/entries");
          const name = readdirSync(dir)[0]!;
          writeFileSync(join(dir, name), t, "latin1");
          const before = listing(h.esp);
          for (const cmd of [["status"], ["upgrade"], ["gc", "--dry-run"]]) reportedOrOneLine(await run([...cmd, ...h.args]));
          expect(listing(h.esp)).toEqual(before);
          // gc for real: the booted deployment's image survives a corrupted entry.
          reportedOrOneLine(await run(["gc", ...h.args]));
          const f = await run(["repo", "--repo", join(h.root, "composefs"), "--insecure", "fsck"]);
          expect(f.status, f.stdout + f.stderr).toBe(0);
          expect(readdirSync(join(h.root, "composefs/images"))).toContain(id);
        })(),
      );
    }
    await Promise.all(jobs);
  });
  test("garbage host state files: meta.json, the recorded boot loader, the staged marker, the failure stamp", async () => {
    const junk = pseudoRandom(10_000, 51);
    const meta = copyHost("junk-meta");
    writeFileSync(join(meta.root, "composefs/meta.json"), junk);
    const loader = copyHost("junk-loader");
    writeFileSync(join(loader.root, "state/cfsboot/bootloader"), junk);
    const [marker, marker2] = ["junk-marker", "junk-marker2"].map((n) => {
      const h = copyHost(n); // one host per command: two at once would wait for each other's lock
      mkdirSync(join(h.root, "run/composefs"), { recursive: true });
      writeFileSync(join(h.root, "run/composefs/staged-deployment"), junk);
      return h;
    }) as [ReturnType<typeof copyHost>, ReturnType<typeof copyHost>];
    const meta2 = copyHost("junk-meta2");
    writeFileSync(join(meta2.root, "composefs/meta.json"), junk);
    const stampHost = copyHost("junk-stamp");
    writeFileSync(join(stampHost.root, "state/finalize-failure.stamp"), junk);
    const runs: [string[], (r: R) => void][] = [
      [["status", ...meta.args], reportedOrOneLine],
      [["upgrade", ...meta.args], (r) => failsOneLine(r, /meta\.json: not valid UTF-8$/)],
      [["gc", ...meta2.args], (r) => failsOneLine(r, /meta\.json: not valid UTF-8$/)],
      [["status", ...loader.args], (r) => failsOneLine(r, /bootloader: unknown boot loader ".*… \(\d+ more characters\)$/)],
      [["upgrade", ...marker.args], reportedOrOneLine],
      [["gc", "--dry-run", ...marker2.args], reportedOrOneLine],
      [
        ["boot-complete", ...stampHost.args],
        (r) => {
          // bootc's wording (not a `cfsboot:` error): one printable line however garbled the stamp.
          expect(r.status).toBe(1);
          expect(r.stderr).toMatch(/^cfsboot-finalize-staged\.service failed on previous boot: [^\n]{1,520}\n$/);
          expect(r.stderr).not.toMatch(/[\x00-\x08\x0b-\x1f]/);
        },
      ],
    ];
    const rs = await Promise.all(runs.map(([a]) => run(a)));
    rs.forEach((r, i) => runs[i]![1](r));
  });
});
// ---- permissions, read-only and full file systems, signals --------------------------------------------

describe.concurrent("unreadable inputs (unprivileged user)", () => {
  const ok = (): boolean => canRun(isRoot && hasTool("setpriv"), "needs root and setpriv to run as nobody");
  test("unreadable file, directory and repository", async () => {
    if (!ok()) return;
    const d = join(T, "perm");
    mkdirSync(join(d, "tree/locked"), { recursive: true });
    writeFileSync(join(d, "secret"), "secret\n", { mode: 0o600 });
    writeFileSync(join(d, "tree/locked/f"), "x");
    writeFileSync(join(d, "tree/ok"), "ok");
    chmodSync(join(d, "tree/locked"), 0o700);
    mkdirSync(join(d, "out"), { mode: 0o777 });
    chmodSync(join(d, "out"), 0o777);
    mkdirSync(join(d, "ro"), { mode: 0o555 });
    chmodSync(join(d, "ro"), 0o555);
    const as = { wrap: NOBODY };
    const checks: [string[], RegExp][] = [
      [["fsverity", "digest", join(d, "secret")], /secret: permission denied$/],
      [["composefs-info", "ls", join(d, "secret")], /secret: read failed: Permission denied \(EACCES\)$/],
      [["mkcomposefs", "--from-file", join(d, "secret"), join(d, "out/a.img")], /secret: read failed: Permission denied/],
      [["mkcomposefs", join(d, "tree"), join(d, "out/b.img")], /tree\/locked: readdir failed: Permission denied \(EACCES\)$/],
      [["mkcomposefs", src, join(d, "ro/c.img")], /ro\/c\.img: open failed: Permission denied \(EACCES\)$/],
      [["repo", "--repo", repo, "images"], /repo: open failed: Permission denied \(EACCES\)$/],
      [["repo", "--repo", join(d, "ro/r"), "init"], /ro\/r: .*Permission denied/],
      [["upgrade", ...H()], /Permission denied \(EACCES\)$/],
      [["install", "to-disk", "--source-imgref", `oci:${layout}:v1`, "--composefs-insecure", join(d, "ro/disk.img")], /Permission denied/],
    ];
    const rs = await Promise.all(checks.map(([a]) => run(a, as)));
    rs.forEach((r, i) => failsOneLine(r, checks[i]![1]));
    expect(readdirSync(join(d, "out"))).toEqual([]);
    expect(readdirSync(join(d, "ro"))).toEqual([]);
  });
});

describe.concurrent("read-only and full file systems (private mount namespace)", () => {
  const ok = (): boolean => canRun(isRoot && hasTool("unshare"), "needs root and unshare for private mounts");
  test("a read-only target directory", async () => {
    if (!ok()) return;
    const d = mkdtempSync(join(T, "rofs-"));
    const wrap = inNamespace(`mount --bind ${d} ${d} && mount -o remount,bind,ro ${d}`);
    failsOneLine(await run(["mkcomposefs", src, join(d, "x.img")], { wrap }), /x\.img: open failed: Read-only file system \(EROFS\)$/);
    failsOneLine(await run(["mkcomposefs", `--digest-store=${join(d, "store")}`, src, join(T, "never.img")], { wrap }), /Read-only file system \(EROFS\)$/);
    failsOneLine(await run(["repo", "--repo", join(d, "r"), "init"], { wrap }), /Read-only file system \(EROFS\)$/);
    failsOneLine(await run(["install", "to-filesystem", "--source-imgref", `oci:${layout}:v1`, "--composefs-insecure", "--esp", d, d], { wrap }), /Read-only file system/);
    expect(readdirSync(d)).toEqual([]);
    expect(existsSync(join(T, "never.img"))).toBe(false);
  });

  test("ENOSPC: digest store, repository objects, an image, a pull", async () => {
    if (!ok()) return;
    const d = mkdtempSync(join(T, "full-"));
    const big = join(T, "bigtree");
    mkdirSync(big, { recursive: true });
    writeFileSync(join(big, "blob"), pseudoRandom(2 << 20, 41));
    for (let i = 0; i < 400; i++) writeFileSync(join(big, `f${i}-${"n".repeat(60)}`), `${i}\n`);
    const wrap = inNamespace(`mount -t tmpfs -o size=256k tmpfs ${d} && mkdir ${d}/r && ${exe} repo --repo ${d}/r init >/dev/null`);
    // A pull that runs out of space leaves a repository that fsck finds clean (checked in the same namespace).
    const report = join(T, "full-fsck.txt");
    const script = `mount -t tmpfs -o size=96k tmpfs ${d} && mkdir ${d}/r && "$0" repo --repo ${d}/r init >/dev/null; "$0" "$@"; rc=$?; "$0" repo --repo ${d}/r fsck >${report} 2>&1; echo "fsck $?" >>${report}; ls -A ${d} ${d}/r >>${report}; exit $rc`;
    const [r1, r2, r3, pull] = await Promise.all([
      run(["mkcomposefs", `--digest-store=${d}/store`, big, join(T, "never2.img")], { wrap }),
      run(["repo", "--repo", `${d}/r`, "create-image", "--no-propagate-usr-to-root", big], { wrap }),
      run(["mkcomposefs", big, `${d}/x.img`], { wrap: inNamespace(`mount -t tmpfs -o size=16k tmpfs ${d}`) }),
      run(["repo", "--repo", `${d}/r`, "pull", `oci:${layout}:v1`], { wrap: ["unshare", "-m", "--propagation", "private", "sh", "-c", script] }),
    ]);
    failsOneLine(r1, /No space left on device \(ENOSPC\)$/);
    failsOneLine(r2, /No space left on device \(ENOSPC\)$/);
    failsOneLine(r3, /x\.img: .*No space left on device \(ENOSPC\)$/);
    failsOneLine(pull, /No space left on device \(ENOSPC\)$/);
    const fsck = readFileSync(join(T, "full-fsck.txt"), "utf8");
    expect(fsck, fsck).toMatch(/status: ok\nfsck 0\n/);
    expect(fsck).not.toMatch(/\.tmp|\.trash/);
    expect(existsSync(join(T, "never2.img"))).toBe(false);
  });
});

describe("interrupted commands (SIGTERM, SIGINT)", () => {
  /** Start cfsboot, wait until `ready()` holds (the operation is under way), send `signal`. */
  async function interrupt(args: string[], ready: () => boolean, signal: NodeJS.Signals): Promise<R & { early: boolean }> {
    const child = spawn(exe, args, { env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: join(T, "home"), CFSBOOT_NO_PROGRESS: "1" } });
    const err: Buffer[] = [];
    child.stderr.on("data", (d: Buffer) => err.push(d));
    child.stdout.on("data", () => {});
    let early = true;
    const done = new Promise<{ status: number | null; signal: string | null }>((resolve) => child.on("close", (status, sig) => resolve({ status, signal: sig })));
    let exited = false;
    void done.then(() => (exited = true));
    for (let i = 0; i < 600 && !exited; i++) {
      if (ready()) {
        early = false;
        child.kill(signal);
        break;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    const r = await done;
    return { ...r, stdout: "", stderr: Buffer.concat(err).toString("utf8"), early };
  }

  test("install to-disk: SIGTERM mid-install removes the scratch directory, writes no disk", async () => {
    const d = mkdtempSync(join(T, "sig-"));
    const r = await interrupt(["install", "to-disk", "--source-imgref", `oci:${layout}:v1`, "--composefs-insecure", join(d, "disk.img")], () => readdirSync(d).some((n) => n.startsWith(".cfsboot-to-disk-")), "SIGTERM");
    expect(r.early, "the install finished before it could be interrupted").toBe(false);
    failsOneLine(r, /^cfsboot: interrupted \(SIGTERM\)$/, 143);
    expect(readdirSync(d)).toEqual([]);
  });

  test("repo pull: SIGINT mid-pull leaves no temporaries and a clean repository; the pull then completes", async () => {
    const big = join(T, "biglayout");
    buildImage(big, osImage({ version: "9.0", bulk: 24 << 20 }).spec, { tag: "big" });
    const r2 = join(T, "repo-sig");
    expect(spawnSync(exe, ["repo", "--repo", r2, "init"]).status).toBe(0);
    const objects = (): number => {
      try {
        return readdirSync(join(r2, "objects")).length;
      } catch {
        return 0;
      }
    };
    const r = await interrupt(["repo", "--repo", r2, "pull", `oci:${big}:big`], () => objects() > 0, "SIGINT");
    if (!r.early) failsOneLine(r, /^cfsboot: interrupted \(SIGINT\)$/, 130);
    expect(temporaries(r2)).toEqual([]);
    const f = await run(["repo", "--repo", r2, "fsck"]);
    expect(f.status, f.stdout + f.stderr).toBe(0);
    const again = await run(["repo", "--repo", r2, "pull", `oci:${big}:big`]);
    expect(again.status, again.stderr).toBe(0);
  });

  test("mkcomposefs with a digest store: SIGTERM leaves no image and no temporary", async () => {
    const tree = join(T, "sigtree");
    mkdirSync(tree);
    for (let i = 0; i < 40; i++) writeFileSync(join(tree, `f${i}`), pseudoRandom(1 << 20, 100 + i));
    const store = join(T, "sigstore");
    const out = join(T, "sig.img");
    const r = await interrupt(["mkcomposefs", `--digest-store=${store}`, tree, out], () => existsSync(store) && readdirSync(store).length > 0, "SIGTERM");
    if (!r.early) failsOneLine(r, /^cfsboot: interrupted \(SIGTERM\)$/, 143);
    // The image is written whole or not at all (a signal that arrives during the synchronous
    // store copy is handled once it ends, after the image may have been committed).
    if (existsSync(out)) expect((await run(["composefs-info", "ls", out])).status).toBe(0);
    expect(temporaries(store)).toEqual([]);
    expect(readdirSync(T).filter((n) => n.startsWith(".sig.img"))).toEqual([]);
  });
});
