// Progress bars: on a terminal (a pty from script(1)) the long operations
// draw bars with a rate and an ETA; on a pipe they print nothing extra.

import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { canRun, hasTool } from "../helpers/env.ts";
import { buildImage, pseudoRandom } from "../helpers/oci-image.ts";
import { osImage } from "../helpers/os-host.ts";
import { ensureExe } from "../helpers/sysroot.ts";

const exe = ensureExe();
let T: string;
const env = (): NodeJS.ProcessEnv => ({ PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: T, TERM: "xterm" });
const q = (s: string): string => `'${s.replace(/'/g, "'\\''")}'`;

/** Run cfsboot on a pty; everything it wrote to the terminal. */
function onTty(args: string[]): { status: number | null; out: string } {
  const r = spawnSync("script", ["-qfec", [exe, ...args].map(q).join(" "), "/dev/null"], { env: env(), encoding: "utf8", timeout: 120_000 });
  return { status: r.status, out: r.stdout };
}

/** Run cfsboot with stdout and stderr on pipes. */
function onPipe(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(exe, args, { env: env(), encoding: "utf8", timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

beforeAll(() => {
  T = mkdtempSync(join(tmpdir(), "cfsboot-progress-"));
  mkdirSync(join(T, "tree/sub"), { recursive: true });
  for (let i = 0; i < 12; i++) writeFileSync(join(T, "tree/sub", `f${i}`), pseudoRandom(1 << 20, i + 1));
  buildImage(join(T, "layout"), osImage({ version: "1.0", bulk: 8 << 20 }).spec, { tag: "v1" });
});

afterAll(() => {
  if (T !== undefined) rmSync(T, { recursive: true, force: true });
});

describe("progress", () => {
  const ok = (): boolean => canRun(hasTool("script"), "needs script(1) (bsdutils) for a pty");

  test("mkcomposefs --digest-store: a bar with rate and ETA on a terminal, nothing on a pipe", () => {
    if (!ok()) return;
    const t = onTty(["mkcomposefs", `--digest-store=${join(T, "store1")}`, join(T, "tree"), join(T, "a.img")]);
    expect(t.status, t.out).toBe(0);
    expect(t.out).toMatch(/mkcomposefs: \S.* \[[^\]]*\] [\d.]+\/[\d.?]+ MiB (--|[\d.]+) MiB\/s ETA (--|\d+[smh])/);
    const p = onPipe(["mkcomposefs", `--digest-store=${join(T, "store2")}`, join(T, "tree"), join(T, "b.img")]);
    expect(p.status, p.stderr).toBe(0);
    expect(p.stderr).toBe("");
    expect(p.stdout).toBe("");
  });

  test("repo pull and fsck: bars on a terminal, only the pull's lines on a pipe; --quiet draws none", () => {
    if (!ok()) return;
    const repo = join(T, "repo");
    expect(onPipe(["repo", "--repo", repo, "init"]).status).toBe(0);
    const t = onTty(["repo", "--repo", repo, "pull", `oci:${join(T, "layout")}:v1`, "a"]);
    expect(t.status, t.out).toBe(0);
    expect(t.out).toMatch(/\/s ETA /);
    const f = onTty(["repo", "--repo", repo, "fsck"]);
    expect(f.status, f.out).toBe(0);
    expect(f.out).toMatch(/fsck: .* prefix directories .*\/s ETA /);

    const repo2 = join(T, "repo2");
    expect(onPipe(["repo", "--repo", repo2, "init"]).status).toBe(0);
    const p = onPipe(["repo", "--repo", repo2, "pull", `oci:${join(T, "layout")}:v1`, "a"]);
    expect(p.status, p.stderr).toBe(0);
    expect(p.stderr).toBe("");
    expect(p.stdout).toMatch(/^manifest sha256:/m);
    expect(p.stdout).not.toMatch(/ETA|\x1b\[/);
    const fp = onPipe(["repo", "--repo", repo2, "fsck"]);
    expect(fp.stderr).toBe("");
    expect(fp.stdout).not.toMatch(/ETA|\x1b\[/);

    expect(onPipe(["repo", "--repo", join(T, "repo3"), "init"]).status).toBe(0);
    const quiet = onTty(["repo", "--repo", join(T, "repo3"), "pull", "--quiet", `oci:${join(T, "layout")}:v1`, "a"]);
    expect(quiet.status, quiet.out).toBe(0);
    expect(quiet.out).not.toMatch(/ETA/);
  });
});
