// `cfsboot repo init` and the open rules, through the built executable:
// meta.json byte for byte as composefs-rs writes it (the texts in
// repository.md §3.1, read at run time), every init variant and transition,
// and what opening an existing meta.json allows (version, incompatible and
// read-only-compatible features, missing or legacy metadata, --require-verity).
// This machine has no fs-verity: every repository here is insecure.

import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { Repository } from "../../host/repo.ts";
import { cfsbootExe, projectRoot, sharedDir } from "../helpers/env.ts";

let dir: string;

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
  expect(lines[0]).not.toMatch(/internal error/);
}

/** The fenced blocks of repository.md §3.1 (the exact meta.json texts). */
function referenceTexts(): string[] {
  const md = readFileSync(`${sharedDir}/reference/repository.md`, "utf8");
  const start = md.indexOf("### 3.1 Exact content");
  const end = md.indexOf("### 3.2", start);
  expect(start).toBeGreaterThan(0);
  const section = md.slice(start, end);
  const blocks = [...section.matchAll(/```\n([\s\S]*?)```/g)].map((m) => m[1]!);
  return blocks.filter((b) => b.trimStart().startsWith("{"));
}

let refDefault: string; // cfsctl init (sha512, V1)
let refV2: string; // sha256, default 2

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "cfsboot-repo-meta-"));
  if (!existsSync(cfsbootExe)) {
    const r = spawnSync(process.execPath, ["host/build.ts"], { cwd: projectRoot, stdio: "inherit" });
    if (r.status !== 0) throw new Error("building dist/cfsboot failed");
  }
  const texts = referenceTexts();
  expect(texts.length).toBe(2);
  refDefault = texts[0]!;
  refV2 = texts[1]!;
  expect(refDefault).toContain('"fsverity-sha512-12"');
  expect(refV2).toContain('"fsverity-sha256-12"');
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

let n = 0;
const fresh = () => join(dir, `r${n++}`);
const meta = (p: string) => readFileSync(join(p, "meta.json"), "utf8");

describe("init writes meta.json as composefs-rs does", () => {
  test("default: sha512, V1 with v1_erofs — the reference text exactly", () => {
    const p = fresh();
    const r = cfs(["repo", "--repo", p, "init", "--insecure"]);
    expect(r.status, r.stderr).toBe(0);
    expect(meta(p)).toBe(refDefault);
    expect(r.stdout).toBe(`Initialized composefs repository at ${p}\n  algorithm: fsverity-sha512-12\n  verity:    not required (insecure)\n`);
    // Repository directory 0700; nothing else created (objects/, images/, streams/ appear lazily).
    expect(statSync(p).mode & 0o777).toBe(0o700);
    expect(readdirSync(p)).toEqual(["meta.json"]);
    expect(statSync(join(p, "meta.json")).mode & 0o777).toBe(0o644);
  });

  test("sha256, V1: the reference text with the other algorithm", () => {
    const p = fresh();
    expect(cfs(["repo", "--repo", p, "init", "--insecure", "--algorithm", "fsverity-sha256-12"]).status).toBe(0);
    expect(meta(p)).toBe(refDefault.replace("fsverity-sha512-12", "fsverity-sha256-12"));
  });

  test("dual: V2 default with V1 extra, no v1_erofs flag (the V2 reference text plus extra)", () => {
    const p = fresh();
    expect(cfs(["repo", "--repo", p, "init", "--insecure", "--algorithm", "fsverity-sha256-12", "--erofs=dual"]).status).toBe(0);
    const expected = refV2.replace('"default": 2\n', '"default": 2,\n    "extra": [\n      1\n    ]\n');
    expect(expected).not.toBe(refV2);
    expect(meta(p)).toBe(expected);
    const repo = Repository.open(p);
    try {
      expect(repo.formats).toEqual({ default: 2, extra: [1] });
      expect(repo.versions).toEqual([2, 1]);
    } finally {
      repo.close();
    }
  });

  test("the PATH argument and the --user location", () => {
    const p = fresh();
    expect(cfs(["repo", "init", "--insecure", p]).status).toBe(0);
    expect(meta(p)).toBe(refDefault);
    const u = cfs(["repo", "--user", "init", "--insecure"]);
    expect(u.status, u.stderr).toBe(0);
    expect(meta(join(dir, ".var/lib/composefs"))).toBe(refDefault);
  });

  test("without --insecure on a filesystem without fs-verity: insecure, and it says so", () => {
    const p = fresh();
    const r = cfs(["repo", "--repo", p, "init"]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain("verity:    not required (insecure: the filesystem does not support fs-verity)");
    expect(meta(p)).toBe(refDefault);
  });

  test("--require-verity on a filesystem without fs-verity: clear error, no meta.json", () => {
    const p = fresh();
    expectFailure(cfs(["repo", "--repo", p, "--require-verity", "init"]), /does not support fs-verity/);
    expect(existsSync(join(p, "meta.json"))).toBe(false);
  });
});

describe("init on an existing repository", () => {
  test("same settings again: no-op, same bytes", () => {
    const p = fresh();
    expect(cfs(["repo", "--repo", p, "init", "--insecure"]).status).toBe(0);
    const before = statSync(join(p, "meta.json"));
    for (const args of [["init"], ["init", "--erofs=v1"], ["init", "--algorithm", "fsverity-sha512-12", "--erofs", "v1"]]) {
      const r = cfs(["repo", "--repo", p, ...args]);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toBe(`Repository already initialized at ${p}\n`);
    }
    expect(meta(p)).toBe(refDefault);
    expect(statSync(join(p, "meta.json")).ino).toBe(before.ino);
  });

  test("a different algorithm: error, meta.json unchanged", () => {
    const p = fresh();
    expect(cfs(["repo", "--repo", p, "init", "--insecure"]).status).toBe(0);
    expectFailure(cfs(["repo", "--repo", p, "init", "--algorithm", "fsverity-sha256-12"]), /different configuration.*fsverity-sha512-12.*fsverity-sha256-12/);
    expect(meta(p)).toBe(refDefault);
  });

  test("v1 → dual allowed (default V1 kept, V2 added); dual → v1 refused", () => {
    const p = fresh();
    expect(cfs(["repo", "--repo", p, "init", "--insecure"]).status).toBe(0);
    const r = cfs(["repo", "--repo", p, "init", "--erofs=dual"]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe(`Repository at ${p} now generates V1 and V2 EROFS images\n`);
    expect(meta(p)).toBe(refDefault.replace('"default": 1\n', '"default": 1,\n    "extra": [\n      2\n    ]\n'));
    expect(cfs(["repo", "--repo", p, "init", "--erofs=dual"]).stdout).toBe(`Repository already initialized at ${p}\n`);
    const before = meta(p);
    expectFailure(cfs(["repo", "--repo", p, "init", "--erofs=v1"]), /refusing to drop V2/);
    expect(meta(p)).toBe(before);
    // No temporary left behind by the replacement.
    expect(readdirSync(p).sort()).toEqual(["meta.json"]);
  });

  test("a fresh dual repository refuses v1", () => {
    const p = fresh();
    expect(cfs(["repo", "--repo", p, "init", "--insecure", "--erofs=dual"]).status).toBe(0);
    expectFailure(cfs(["repo", "--repo", p, "init", "--erofs", "v1"]), /refusing to drop V2/);
  });

  test("V2-only (the reference's V2 text) → dual adds V1 and keeps V2 as the default; → v1 is refused", () => {
    const p = fresh();
    mkdirSync(p, { mode: 0o700 });
    writeFileSync(join(p, "meta.json"), refV2);
    expectFailure(cfs(["repo", "--repo", p, "init", "--erofs=v1"]), /different configuration/);
    expect(cfs(["repo", "--repo", p, "init", "--erofs=dual"]).status).toBe(0);
    expect(meta(p)).toBe(refV2.replace('"default": 2\n', '"default": 2,\n    "extra": [\n      1\n    ]\n'));
  });

  test("an old-format repository (objects/, no meta.json): opening is refused, init writes V2 metadata", () => {
    const p = fresh();
    mkdirSync(join(p, "objects", "ab"), { recursive: true });
    writeFileSync(join(p, "objects", "ab", "c".repeat(62)), "x");
    expectFailure(cfs(["repo", "--repo", p, "fsck"]), /old-format repository/);
    const r = cfs(["repo", "--repo", p, "init", "--insecure"]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^Upgraded legacy repository at /);
    // sha256 inferred from the 62-digit object name; V2 (what legacy repositories hold), not V1.
    expect(meta(p)).toBe(refV2);
  });
});

describe("opening an existing meta.json", () => {
  function repoWith(edit: (doc: Record<string, any>) => void): string {
    const p = fresh();
    expect(cfs(["repo", "--repo", p, "init", "--insecure"]).status).toBe(0);
    const doc = JSON.parse(meta(p));
    edit(doc);
    writeFileSync(join(p, "meta.json"), JSON.stringify(doc, null, 2) + "\n");
    return p;
  }

  test("version 2: refused", () => {
    const p = repoWith((d) => (d.version = 2));
    expectFailure(cfs(["repo", "--repo", p, "images"]), /meta\.json: field version: unsupported repository format version 2/);
    expectFailure(cfs(["repo", "--repo", p, "init"]), /unsupported repository format version 2/);
  });

  test("an unknown incompatible feature: refused", () => {
    const p = repoWith((d) => d.features.incompatible.push("future_thing"));
    expectFailure(cfs(["repo", "--repo", p, "fsck"]), /unknown incompatible feature "future_thing"/);
  });

  test("an unknown read-only-compatible feature: reads work, writes are refused", () => {
    const p = repoWith((d) => d.features["read-only-compatible"].push("future_ro"));
    const f = cfs(["repo", "--repo", p, "fsck"]);
    expect(f.status, f.stderr).toBe(0);
    expect(f.stdout).toContain("status: ok");
    expect(cfs(["repo", "--repo", p, "images"]).status).toBe(0);
    expect(cfs(["repo", "--repo", p, "gc", "-n"]).status).toBe(0);
    expectFailure(cfs(["repo", "--repo", p, "gc"]), /read-only.*"future_ro"/);
    mkdirSync(join(dir, "src-ro"), { recursive: true });
    expectFailure(cfs(["repo", "--repo", p, "create-image", "--no-propagate-usr-to-root", join(dir, "src-ro")]), /read-only.*"future_ro"/);
    expectFailure(cfs(["repo", "--repo", p, "init", "--erofs=dual"]), /read-only.*"future_ro"/);
    expect(existsSync(join(p, "objects"))).toBe(false);
  });

  test("an unknown compatible feature and unknown fields: ignored", () => {
    const p = repoWith((d) => {
      d.features.compatible.push("whatever");
      d.future_field = { x: 1 };
    });
    const r = cfs(["repo", "--repo", p, "fsck"]);
    expect(r.status, r.stderr).toBe(0);
  });

  test("corrupted meta.json: one-line error naming the file", () => {
    const p = fresh();
    mkdirSync(p);
    writeFileSync(join(p, "meta.json"), '{"version": 1, "algorithm": ');
    expectFailure(cfs(["repo", "--repo", p, "images"]), /meta\.json: not valid JSON/);
  });

  test("no repository, no meta.json: errors that say what to do", () => {
    expectFailure(cfs(["repo", "--repo", join(dir, "nonexistent"), "images"]), /no repository here.*repo init/);
    const p = fresh();
    mkdirSync(p);
    expectFailure(cfs(["repo", "--repo", p, "images"]), /meta\.json: not found; this repository must be initialized/);
  });

  test("--require-verity refuses an insecure repository", () => {
    const p = fresh();
    expect(cfs(["repo", "--repo", p, "init", "--insecure"]).status).toBe(0);
    expectFailure(cfs(["repo", "--repo", p, "--require-verity", "fsck"]), /fs-verity is required.*insecure/);
  });

  test("at most one of --repo/--system/--user", () => {
    expectFailure(cfs(["repo", "--repo", dir, "--user", "images"]), /at most one/);
  });
});
