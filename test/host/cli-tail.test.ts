// Long FILE… lists bypass most of yargs' parsing (host/cli-tail.ts): the
// split itself (property), and dist/cfsboot giving exactly what a full parse
// gives: outputs equal fsverity-utils' for lists with options before, after
// and inside, errors naming every offending word, refusal when the command
// has no FILE… positional.

import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type { Argv } from "yargs";
import { KEEP, TAIL_MIN, applyTail, splitTail } from "../../host/cli-tail.ts";
import yargs from "../../host/yargs.ts";
import { canRun, cfsbootExe, hasTool, projectRoot } from "../helpers/env.ts";

describe("splitTail", () => {
  test("cuts only a long final run of plain words; head + rest is argv (property)", () => {
    const word = fc.oneof(fc.constantFrom("a", "b.txt", "x y", "-", "--", "--compact", "--hash-alg=sha512", "--hash-alg", "sha512", "-v", "0", "-1"), fc.string({ maxLength: 4 }));
    fc.assert(
      fc.property(fc.array(word, { maxLength: 12 }), fc.nat({ max: 80 }), fc.array(fc.constantFrom("--compact", "-v", "--x=1"), { maxLength: 3 }), (pre, n, post) => {
        const run = Array.from({ length: n }, (_, i) => `f${i}`);
        const argv = [...pre, ...run, ...post];
        const t = splitTail(argv);
        if (t === null) return;
        expect(argv).not.toContain("--");
        // the cut words are plain, none follows them, and they come back in order
        const cut = argv.length - post.length - t.rest.length;
        expect([...t.head.slice(0, cut), ...t.rest, ...t.head.slice(cut)]).toEqual(argv);
        expect(t.rest.length).toBeGreaterThanOrEqual(TAIL_MIN - KEEP);
        expect(t.lastKept).toBe(t.head[cut - 1]);
        for (const w of [t.lastKept, ...t.rest, ...t.head.slice(cut - KEEP, cut)]) expect(w.startsWith("-")).toBe(false);
        for (const w of t.head.slice(cut)) expect(w.startsWith("-")).toBe(true);
      }),
      { numRuns: 400 },
    );
    expect(splitTail(["fsverity", "digest", "--compact", ...Array.from({ length: TAIL_MIN - 1 }, (_, i) => `f${i}`)])).toBeNull();
    expect(splitTail(["fsverity", "digest", "--compact", ...Array.from({ length: TAIL_MIN }, (_, i) => `f${i}`)])).not.toBeNull();
    expect(splitTail(["x", "--", ...Array.from({ length: 100 }, (_, i) => `f${i}`)])).toBeNull();
  });
});

describe("applyTail", () => {
  /** Parses `argv` shortened by splitTail for a command `spec`; what applyTail did and the args the handler got. */
  async function withTail(spec: string, builder: (y: Argv) => Argv, argv: string[]) {
    const t = splitTail(argv)!;
    expect(t).not.toBeNull();
    let applied: boolean | undefined;
    let got: Record<string, unknown> | undefined;
    await yargs(t.head)
      .middleware(((args: Record<string, unknown>, y: unknown) => {
        applied ??= applyTail(args, y, t);
      }) as unknown as (a: Record<string, unknown>) => void, true)
      .command(spec, "x", builder, (a: unknown) => void (got = a as Record<string, unknown>))
      .strict()
      .exitProcess(false)
      .fail(() => {})
      .parseAsync();
    return { applied, got };
  }
  const many = Array.from({ length: 50 }, (_, i) => `w${i}`);

  test("appends the cut words to a string-typed variadic positional", async () => {
    const r = await withTail("digest <files..>", (y) => y.positional("files", { type: "string", array: true }).option("k", { type: "string", array: true, nargs: 1 }), ["digest", "--k", "v", ...many]);
    expect(r.applied).toBe(true);
    expect(r.got?.files).toEqual(many);
    expect(r.got?.k).toEqual(["v"]);
  });

  test("refuses: no variadic positional, untyped (numbers coerced), greedy array option", async () => {
    expect((await withTail("cp <a> <b>", (y) => y.positional("a", { type: "string" }).positional("b", { type: "string" }), ["cp", ...many])).applied).toBeFalsy();
    expect((await withTail("sum <n..>", (y) => y.positional("n", { array: true }), ["sum", ...many])).applied).toBe(false);
    const greedy = await withTail("digest <files..>", (y) => y.positional("files", { type: "string", array: true }).option("k", { type: "string", array: true }), ["digest", "--k", ...many]);
    expect(greedy.applied).toBe(false);
  });
});

let dir: string;
const N = 300;
const files = Array.from({ length: N }, (_, i) => `f${i}`);

beforeAll(() => {
  if (!existsSync(cfsbootExe)) {
    const r = spawnSync(process.execPath, ["host/build.ts"], { cwd: projectRoot, stdio: "inherit" });
    if (r.status !== 0) throw new Error("building dist/cfsboot failed");
  }
  dir = mkdtempSync(join(tmpdir(), "cfsboot-tail-"));
  for (let i = 0; i < N; i++) writeFileSync(join(dir, files[i]!), `file ${i}\n`.repeat(i));
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const run = (cmd: string, args: string[]) => spawnSync(cmd, args, { cwd: dir, encoding: "latin1", timeout: 60_000 });
const ours = (args: string[]) => run(cfsbootExe, args);
const haveFsverity = () => canRun(hasTool("fsverity"), "fsverity (Debian package fsverity) not installed");

describe("dist/cfsboot with long FILE… lists", () => {
  test("fsverity digest: options before, after and between, as fsverity digest prints", () => {
    if (!haveFsverity()) return;
    const lists = [
      [...files],
      ["--hash-alg", "sha512", ...files],
      [...files, "--compact"],
      ["--compact", ...files.slice(0, 100), "--hash-alg=sha512", ...files.slice(100)],
      ["f1", ...files, "f1"],
    ];
    for (const args of lists) {
      const a = ours(["fsverity", "digest", ...args]);
      const b = run("fsverity", ["digest", ...args]);
      expect(b.status).toBe(0);
      expect(a.stderr).toBe("");
      expect(a.stdout).toBe(b.stdout);
      expect(a.stdout.split("\n").length).toBeGreaterThan(N);
    }
  });

  test("a missing file deep in the list: the files before it, then one line (as fsverity digest)", () => {
    if (!haveFsverity()) return;
    const args = [...files.slice(0, 200), "missing", ...files.slice(200)];
    const a = ours(["fsverity", "digest", ...args]);
    const b = run("fsverity", ["digest", ...args]);
    expect(a.status).toBe(1);
    expect(b.status).toBe(1);
    expect(a.stdout).toBe(b.stdout);
    expect(a.stdout.split("\n")).toHaveLength(201);
    expect(a.stderr).toBe("cfsboot: missing: no such file or directory\n");
  });

  test("composefs-info measure-file: every file, in order", () => {
    if (!haveFsverity()) return;
    const a = ours(["composefs-info", "measure-file", ...files]);
    expect(a.stderr).toBe("");
    expect(a.stdout).toBe(run("fsverity", ["digest", "--compact", ...files]).stdout);
  });

  test("usage errors name every offending word, as a full parse does", () => {
    // no FILE… positional: every extra word is named
    const a = ours(["mkcomposefs", ...files.slice(0, 40)]);
    expect(a.status).toBe(1);
    expect(a.stderr).toBe(`cfsboot: ${files.slice(2, 40).join(" ")}: unexpected arguments (see cfsboot mkcomposefs --help)\n`);
    const b = ours(["status", ...files.slice(0, 40)]);
    expect(b.status).toBe(1);
    expect(b.stderr).toBe(`cfsboot: ${files.slice(0, 40).join(" ")}: unexpected arguments (see cfsboot status --help)\n`);
    // an unknown option after the list
    const c = ours(["fsverity", "digest", ...files, "--bogus"]);
    expect(c.status).toBe(1);
    expect(c.stdout).toBe("");
    expect(c.stderr).toBe("cfsboot: --bogus: unknown option (see cfsboot fsverity digest --help)\n");
    // a bad choice with a long list
    const d = ours(["fsverity", "digest", "--hash-alg=md5", ...files]);
    expect(d.stderr).toBe("cfsboot: --hash-alg=md5: unknown hash algorithm (expected sha256 or sha512)\n");
  });
});
