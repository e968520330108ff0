// Property tests of the /etc merge on disk against the pure planner: for
// random (O, C, N) triples written as real trees (O and N as EROFS images
// read back through the reader, C as a live directory), the snapshots, the
// plan, the fresh copy of N and the applier must produce on disk exactly the
// tree `applyPlan` computes in memory (every node: type, mode, owner, xattrs
// incl. labels, content, link target, time). The variants include absolute
// symlinks into a trap directory (and to /): nothing outside the result may
// ever change. Conflicts must leave the staged copy untouched. The same for
// an overlay-mode /etc: the upper written by the applier, mounted over the
// new image's /etc in a private mount namespace, must show the same tree.

import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { etcFromDisk, etcFromImage } from "../../host/etcsnap.ts";
import { type MergeInputs, buildAndSwap, planMerge, withoutUpdated } from "../../host/finalize.ts";
import { writeTree } from "../../host/materialize.ts";
import { canRun, hasTool, isRoot, projectRoot } from "../helpers/env.ts";
import { type Spec, type TreeSpec, d, f, imageOf, l, listing, treeListing, writeSpec } from "../helpers/etc-disk.ts";

const T0 = 1_600_000_000;
const T1 = 1_700_000_000;

let dir: string;
let trap: string;
let trapBefore: Record<string, string>;
let n = 0;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "cfsboot-etcmerge-prop-"));
  trap = join(dir, "trap");
  mkdirSync(join(trap, "b"), { recursive: true });
  writeFileSync(join(trap, "victim"), "outside\n");
  trapBefore = listing(trap);
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const UNIVERSE = ["a", "a/b", "a/b/c", "a/d", "e", "e/f", "g", "h"];
const variants = (): Spec[] => [
  d(),
  d({ mode: 0o700 }),
  d({ x: { "user.tag": "v" } }),
  f("one"),
  f("two"),
  f("one", { mode: 0o600, uid: 3 }),
  f("one", { x: { "security.selinux": "system_u:object_r:etc_t:s0" } }),
  f("x".repeat(300)),
  l("a"),
  l(trap),
  l(`${trap}/victim`),
  l("/"),
];
const choice = fc.integer({ min: -1, max: 11 });

function wellFormed(t: TreeSpec): TreeSpec {
  const out: TreeSpec = {};
  for (const p of UNIVERSE) {
    if (t[p] === undefined) continue;
    const i = p.lastIndexOf("/");
    if (i >= 0 && out[p.slice(0, i)]?.t !== "d") continue;
    out[p] = t[p]!;
  }
  return out;
}
const treeFrom = (cs: number[]): TreeSpec => {
  const v = variants();
  const t: TreeSpec = {};
  UNIVERSE.forEach((p, i) => {
    if (cs[i]! >= 0) t[p] = v[cs[i]!]!;
  });
  return wellFormed(t);
};
const arr = (a: fc.Arbitrary<number | null>) => fc.array(a, { minLength: UNIVERSE.length, maxLength: UNIVERSE.length });
/** O, then C and N as mostly-unchanged variations of O. */
const triple = fc
  .tuple(arr(choice), arr(fc.option(choice, { freq: 2, nil: null })), arr(fc.option(choice, { freq: 2, nil: null })))
  .map(([o, c, nn]) => ({ O: treeFrom(o as number[]), C: treeFrom(c.map((x, i) => x ?? o[i]!) as number[]), N: treeFrom(nn.map((x, i) => x ?? o[i]!) as number[]) }));

interface Built {
  base: string;
  inputs: MergeInputs;
  state: string;
  staged: Record<string, string>;
}

async function build(t: { O: TreeSpec; C: TreeSpec; N: TreeSpec }, mode: "bind" | "overlay"): Promise<Built> {
  const base = join(dir, `p${++n}`);
  writeSpec(join(base, "O/etc"), t.O, { mtime: T0 });
  writeSpec(join(base, "N/etc"), t.N, { mtime: T0 });
  writeSpec(join(base, "C"), t.C, { mtime: T1 });
  const O = await imageOf(join(base, "O"));
  const N = await imageOf(join(base, "N"));
  const inputs: MergeInputs = {
    O: withoutUpdated(etcFromImage(O.etc, O.content, "O")),
    C: withoutUpdated(etcFromDisk(join(base, "C"))),
    N: withoutUpdated(etcFromImage(N.etc, N.content, "N")),
    currentRoot: join(base, "C"),
    bootedMode: "bind",
    newMode: mode,
    newEtc: N.etc,
    content: N.content,
    newLabel: "N",
  };
  const state = join(base, "state");
  mkdirSync(join(state, "etc"), { recursive: true });
  writeTree(N.etc!, join(state, "etc"), N.content, "N");
  return { base, inputs, state, staged: listing(join(state, "etc")) };
}

describe("snapshot + apply on disk = applyPlan in memory", () => {
  test("bind mode: the exchanged-in /etc is exactly the planned tree; the trap never changes", async () => {
    if (!canRun(isRoot, "needs root (owners, security.* xattrs)")) return;
    let plans = 0;
    let conflicts = 0;
    await fc.assert(
      fc.asyncProperty(triple, async (t) => {
        const b = await build(t, "bind");
        try {
          const m = planMerge(b.inputs);
          if ("conflicts" in m) {
            conflicts++;
            expect(listing(join(b.state, "etc"))).toEqual(b.staged);
          } else {
            plans++;
            buildAndSwap(b.state, b.inputs, m.plan, m.result);
            expect(listing(join(b.state, "etc"))).toEqual(treeListing(m.result));
            expect(readdirSync(b.state)).toEqual(["etc"]);
          }
          expect(listing(trap)).toEqual(trapBefore);
        } finally {
          rmSync(b.base, { recursive: true, force: true });
        }
      }),
      { numRuns: 60 },
    );
    // the generator reached both outcomes
    expect(plans).toBeGreaterThan(10);
    expect(conflicts).toBeGreaterThan(0);
  }, 120_000);

  test("overlay mode: the upper mounted over the new /etc shows exactly the planned tree", async () => {
    if (!canRun(isRoot && hasTool("unshare"), "needs root and unshare (overlay mount in a private mount namespace)")) return;
    let plans = 0;
    await fc.assert(
      fc.asyncProperty(triple, async (t) => {
        const b = await build(t, "overlay");
        try {
          const m = planMerge(b.inputs);
          if ("conflicts" in m) return;
          plans++;
          // the lower: the new image's /etc as the agent sees it
          const lower = join(b.base, "lower");
          mkdirSync(lower);
          writeTree(b.inputs.newEtc!, lower, b.inputs.content, "N", { skipTop: new Set([".updated"]) });
          buildAndSwap(b.state, b.inputs, m.plan, m.result);
          expect(readdirSync(join(b.state, "etc")).sort()).toEqual(["upper", "work"]);
          const mnt = join(b.base, "mnt");
          mkdirSync(mnt);
          const etc = join(b.state, "etc");
          const script = `mount -t overlay overlay -o lowerdir=${lower},upperdir=${etc}/upper,workdir=${etc}/work ${mnt} && exec ${process.execPath} ${join(projectRoot, "test/helpers/etc-listing-cli.ts")} ${mnt}`;
          const r = spawnSync("unshare", ["--mount", "--propagation", "private", "sh", "-c", script], { encoding: "utf8" });
          expect(r.status, r.stderr).toBe(0);
          expect(JSON.parse(r.stdout)).toEqual(treeListing(m.result));
          expect(listing(trap)).toEqual(trapBefore);
        } finally {
          rmSync(b.base, { recursive: true, force: true });
        }
      }),
      { numRuns: 20 },
    );
    expect(plans).toBeGreaterThan(5);
  }, 180_000);
});
