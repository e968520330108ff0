// Acceptance: a real system tree (default /usr/share; CFSBOOT_ACCEPT_TREE to
// choose another) through `cfsboot mkcomposefs --digest-store`, mounted the
// way the boot agent mounts a deployment (file-backed EROFS + overlayfs with
// the store as a data-only layer, ro,metacopy=on,redirect_dir=on, in a
// private mount namespace), must show exactly the source: every regular
// file's sha256, every symlink target, mode, owner, ns mtime, xattr, nlink.

import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";

import { canRun, cfsbootExe, hasTool, isRoot, projectRoot } from "../helpers/env.ts";

const TREE = process.env.CFSBOOT_ACCEPT_TREE ?? "/usr/share";
let dir: string;

beforeAll(() => {
  if (!existsSync(cfsbootExe)) {
    const r = spawnSync(process.execPath, ["host/build.ts"], { cwd: projectRoot, stdio: "inherit" });
    if (r.status !== 0) throw new Error("building dist/cfsboot failed");
  }
  dir = mkdtempSync(join(tmpdir(), "cfsboot-accept-"));
  chmodSync(dir, 0o755);
}, 300_000);
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test(`${TREE} → image + digest store → overlay mount equals the source`, () => {
  if (!canRun(isRoot, "mounting needs root")) return;
  if (!canRun(readFileSync("/proc/filesystems", "utf8").includes("erofs"), "kernel has no erofs")) return;
  if (!canRun(existsSync(TREE), `${TREE} does not exist`)) return;
  const img = join(dir, "tree.img");
  const store = join(dir, "store");
  const t0 = performance.now();
  const r = spawnSync(cfsbootExe, ["mkcomposefs", `--digest-store=${store}`, "--print-digest", TREE, img], {
    encoding: "utf8",
    timeout: 600_000,
  });
  const buildMs = performance.now() - t0;
  expect(r.status, r.stderr).toBe(0);
  const digest = r.stdout.trim();
  expect(digest).toMatch(/^[0-9a-f]{64}$/);
  if (hasTool("fsverity")) {
    expect(spawnSync("fsverity", ["digest", "--compact", img], { encoding: "utf8" }).stdout.trim()).toBe(digest);
  }
  // The store holds only XX/<62 hex> objects.
  for (const xx of readdirSync(store)) {
    expect(xx).toMatch(/^[0-9a-f]{2}$/);
    for (const rest of readdirSync(join(store, xx))) expect(rest).toMatch(/^[0-9a-f]{62}$/);
  }
  const t1 = performance.now();
  const m = spawnSync(process.execPath, [join(projectRoot, "test/helpers/mount-compare.ts"), img, store, TREE], {
    encoding: "utf8",
    timeout: 600_000,
    maxBuffer: 1 << 26,
  });
  const compareMs = performance.now() - t1;
  expect(m.status, m.stderr).toBe(0);
  const res = JSON.parse(m.stdout) as { entries: number; regular: number; bytes: number; mismatches: string[] };
  expect(res.mismatches).toEqual([]);
  expect(res.entries).toBeGreaterThan(100);
  expect(res.regular).toBeGreaterThan(50);
  process.stderr.write(
    `acceptance: ${TREE}: ${res.entries} entries, ${res.regular} files, ${(res.bytes / 1048576).toFixed(0)} MiB; ` +
      `mkcomposefs ${(buildMs / 1000).toFixed(1)} s, mount+compare ${(compareMs / 1000).toFixed(1)} s\n`,
  );
}, 1_200_000);
