// `cfsboot repo create-image DIR [NAME]`, `compute-id DIR` and `mount`:
// a directory tree becomes objects + EROFS images; the printed ids agree
// with each other and with the C-compatible `mkcomposefs` for the same tree;
// mounted back (root, private mount namespace) the image shows the
// directory's files with the same sha256, links and types; a second run
// stores nothing new; failures leave nothing behind.

import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, linkSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { toHex } from "../../shared/bytes.ts";
import { fsverityDigest } from "../../shared/fsverity.ts";
import * as sys from "../../shared/sys.ts";
import { Repository } from "../../host/repo.ts";
import { canRun, cfsbootExe, hasTool, isRoot, projectRoot } from "../helpers/env.ts";
import { bytesOf, listObjects } from "../helpers/repo-fixture.ts";

let dir: string;
let src: string;
const files = new Map<string, Uint8Array>();

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function cfs(args: string[]): Run {
  const r = spawnSync(cfsbootExe, args, { cwd: dir, env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dir }, timeout: 60_000 });
  return { status: r.status, stdout: r.stdout.toString("utf8"), stderr: r.stderr.toString("utf8") };
}

function expectFailure(r: Run, pattern: RegExp): void {
  expect(r.status, r.stderr).toBe(1);
  const lines = r.stderr.split("\n").filter((l) => l !== "");
  expect(lines.length, r.stderr).toBe(1);
  expect(lines[0]).toMatch(/^cfsboot: /);
  expect(lines[0]).toMatch(pattern);
}

/** type, path, then sha256 (files) or target (links), for every entry below `root`, sorted. */
const LISTING = `cd "$1" && find . -mindepth 1 \\( -type f -printf 'f %p ' -exec sh -c 'sha256sum < "$1" | cut -d" " -f1' _ {} \\; \\) -o \\( -type l -printf 'l %p %l\\n' \\) -o \\( -type d -printf 'd %p\\n' \\) -o -printf '%y %p\\n' | sort`;

function listing(root: string): string {
  const r = spawnSync("sh", ["-c", LISTING, "sh", root], { encoding: "utf8" });
  expect(r.status, r.stderr).toBe(0);
  return r.stdout;
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "cfsboot-repo-ci-"));
  if (!existsSync(cfsbootExe)) {
    const r = spawnSync(process.execPath, ["host/build.ts"], { cwd: projectRoot, stdio: "inherit" });
    if (r.status !== 0) throw new Error("building dist/cfsboot failed");
  }
  src = join(dir, "src");
  for (const d of ["usr/bin", "usr/share/doc", "etc", "run/stale", "empty"]) mkdirSync(join(src, d), { recursive: true });
  const put = (p: string, data: Uint8Array) => {
    writeFileSync(join(src, p), data);
    files.set(p, data);
  };
  for (const size of [0, 1, 63, 64, 65, 4095, 4096, 4097, 100_000, 1_500_000]) put(`usr/share/doc/f${size}`, bytesOf(`ci/${size}`, size));
  put("usr/bin/tool", bytesOf("tool", 20_000));
  put("etc/config", new TextEncoder().encode("key=value\n"));
  put("usr/share/doc/same-as-tool", bytesOf("tool", 20_000)); // same content: one object
  writeFileSync(join(src, "run/stale/junk"), "emptied by the OCI transform");
  linkSync(join(src, "usr/bin/tool"), join(src, "usr/bin/tool-hardlink"));
  files.set("usr/bin/tool-hardlink", files.get("usr/bin/tool")!);
  symlinkSync("../share/doc/f65", join(src, "usr/bin/link"));
  symlinkSync("/nonexistent/target", join(src, "etc/dangling"));
  if (isRoot) sys.mkfifo(join(src, "etc/fifo"));
  for (const p of ["usr", "usr/bin", "etc"]) utimesSync(join(src, p), 1_700_000_000, 1_700_000_000);
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe("create-image", () => {
  let repoPath: string;
  let id: string;

  test("create-image prints <alg>:<id>, equal to compute-id; every file > 64 bytes became an object", async () => {
    repoPath = join(dir, "repo");
    expect(cfs(["repo", "--repo", repoPath, "init", "--insecure"]).status).toBe(0);
    const c = cfs(["repo", "--repo", repoPath, "create-image", src, "myimg"]);
    expect(c.status, c.stderr).toBe(0);
    expect(c.stdout).toMatch(/^sha512:[0-9a-f]{128}\n$/);
    id = c.stdout.trim().slice(7);
    const k = cfs(["repo", "--repo", repoPath, "compute-id", src]);
    expect(k.status, k.stderr).toBe(0);
    expect(k.stdout).toBe(`${id}\n`);
    const repo = Repository.open(repoPath);
    try {
      expect(repo.listImageRefs()).toEqual([{ name: "myimg", digest: id }]);
      const want = new Set<string>([id]);
      for (const data of files.values()) if (data.length > 64) want.add(toHex(fsverityDigest(data, "sha512")));
      expect(await listObjects(repo)).toEqual(want);
      // The image is what compute-id measured: its fs-verity digest is the id.
      expect(toHex(fsverityDigest(repo.openImage(id), "sha512"))).toBe(id);
    } finally {
      repo.close();
    }
  });

  test("a second create-image stores nothing new; gc keeps everything", async () => {
    const repo = Repository.open(repoPath);
    const before = await listObjects(repo);
    repo.close();
    const c = cfs(["repo", "--repo", repoPath, "create-image", src, "myimg"]);
    expect(c.stdout).toBe(`sha512:${id}\n`);
    const g = cfs(["repo", "--repo", repoPath, "gc"]);
    expect(g.stdout).toBe("Objects: 0 removed (0 bytes)\n");
    const again = Repository.open(repoPath);
    expect(await listObjects(again)).toEqual(before);
    again.close();
  });

  test("repo dump of the EROFS image (refs/NAME or its id) lists the directory's entries, contents by object digest", () => {
    const byRef = cfs(["repo", "--repo", repoPath, "dump", "refs/myimg"]);
    expect(byRef.status, byRef.stderr).toBe(0);
    const byId = cfs(["repo", "--repo", repoPath, "dump", id]);
    expect(byId.stdout).toBe(byRef.stdout);
    const lines = byRef.stdout.split("\n");
    expect(lines.find((l) => l.startsWith("/run "))).toMatch(/^\/run 0 40755 /);
    expect(lines.some((l) => l.startsWith("/run/stale"))).toBe(false);
    expect(lines.find((l) => l.startsWith("/etc/config "))).toMatch(/ - key=value\\n -$/);
    const f65 = toHex(fsverityDigest(files.get("usr/share/doc/f65")!, "sha512"));
    expect(lines.find((l) => l.startsWith("/usr/share/doc/f65 "))).toMatch(new RegExp(` 65 100644 1 0 0 0 \\S+ ${f65.slice(0, 2)}/${f65.slice(2)} - ${f65}$`));
    expectFailure(cfs(["repo", "--repo", repoPath, "dump", "refs/nosuch"]), /refs\/nosuch: image not found/);
  });

  test("mounted back, the image shows the directory: same files (sha256), links, types; /run emptied", () => {
    if (!canRun(isRoot && hasTool("unshare"), "needs root and unshare(1) for a private mount namespace")) return;
    const mnt = join(dir, "mnt");
    mkdirSync(mnt, { recursive: true });
    const expected = listing(src)
      .split("\n")
      .filter((l) => !l.includes("./run/"))
      .join("\n");
    for (const name of ["refs/myimg", id]) {
      const script = `"$CFS" repo --repo "$REPO" mount "$IMG" "$MNT" && sh -c "$LISTING" sh "$MNT"`;
      const r = spawnSync("unshare", ["--mount", "--propagation", "private", "sh", "-c", script], {
        env: { PATH: process.env.PATH ?? "/usr/bin:/bin", CFS: cfsbootExe, REPO: repoPath, IMG: name, MNT: mnt, LISTING },
        encoding: "utf8",
      });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toBe(expected);
      expect(r.stdout).toContain(`f ./usr/share/doc/f1500000 ${createHash("sha256").update(files.get("usr/share/doc/f1500000")!).digest("hex")}`);
      expect(r.stdout).toContain("l ./usr/bin/link ../share/doc/f65");
    }
    expect(readdirSync(mnt)).toEqual([]);
  });

  test("--no-propagate-usr-to-root in a sha256 repository matches C-compatible mkcomposefs (V1) for the same tree", () => {
    const p = join(dir, "repo256");
    expect(cfs(["repo", "--repo", p, "init", "--insecure", "--algorithm", "fsverity-sha256-12"]).status).toBe(0);
    const k = cfs(["repo", "--repo", p, "compute-id", "--no-propagate-usr-to-root", src]);
    expect(k.status, k.stderr).toBe(0);
    const m = cfs(["mkcomposefs", "--min-version=1", "--max-version=1", "--print-digest-only", src]);
    expect(m.status, m.stderr).toBe(0);
    expect(k.stdout).toBe(m.stdout);
    // The OCI transform changes the root's metadata, so the default differs.
    expect(cfs(["repo", "--repo", p, "compute-id", src]).stdout).not.toBe(m.stdout);
  });

  test("compute-id without a repository uses sha512 and V1 (cfsctl's defaults)", () => {
    const k = cfs(["repo", "--user", "compute-id", src]);
    expect(k.status, k.stderr).toBe(0);
    expect(k.stdout).toBe(`${id}\n`);
  });

  test("failures: one line, nothing stored", async () => {
    const p = join(dir, "repo-fail");
    expect(cfs(["repo", "--repo", p, "init", "--insecure"]).status).toBe(0);
    expectFailure(cfs(["repo", "--repo", p, "create-image", join(dir, "missing")]), /missing: not a directory/);
    const noUsr = join(dir, "no-usr");
    mkdirSync(noUsr);
    writeFileSync(join(noUsr, "big"), bytesOf("no-usr", 1000));
    expectFailure(cfs(["repo", "--repo", p, "create-image", noUsr]), /\/usr/);
    expectFailure(cfs(["repo", "--repo", p, "create-image", "--xattrs", "all", src]), /--xattrs/);
    expect(existsSync(join(p, "objects"))).toBe(false);
    expectFailure(cfs(["repo", "--repo", p, "mount", "refs/nothing", dir]), /image not found/);
    expectFailure(cfs(["repo", "--repo", p, "mount", "0".repeat(128), dir]), /image not found/);
    expectFailure(cfs(["repo", "--repo", p, "mount", "no-such-tag", dir]), /no such image/);
  });
});
