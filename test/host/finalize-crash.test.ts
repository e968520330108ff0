// Crash test of `finalize-staged` on a host in a directory: 20 copies of a
// host with a staged upgrade (an /etc of 300 files, 40 of them changed
// locally) each get `finalize-staged` killed with a real SIGKILL at a point
// of its run — fixed times after the start (start-up, image and snapshot
// reading, planning), or the moment an effect shows on disk (the fresh /etc
// directory appearing, the k-th file of the copy of the new image's /etc,
// the local files being applied, the exchange with the staged /etc (the old
// tree moved to the trash), the entry exchange, the marker's removal, during
// the gc of boot binaries). After each kill:
//   - the default is either the old deployment (live entries unchanged) or
//     the new one (the staged set is live), and then its /etc is exactly the
//     merged result of an uninterrupted run;
//   - with the old default, the old deployment's live /etc is untouched and
//     the new deployment's /etc is either the staged copy of the new image's
//     /etc or the complete merged result, never a mix;
//   - `status` works;
//   - a re-run of `finalize-staged` completes: the new default, the merged
//     /etc, no marker, no leftovers in the state directory.

import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";

import { cfsbootExe, canRun, isRoot } from "../helpers/env.ts";
import { listing } from "../helpers/etc-disk.ts";
import { buildImage, pushImage } from "../helpers/oci-image.ts";
import { startRegistry, type TestRegistry } from "../helpers/registry.ts";
import { type HostDir, bless, bootEntry, cfs, entryFiles, hostArgs, makeHostDir, osImage, registryHome } from "../helpers/os-host.ts";
import { ensureExe } from "../helpers/sysroot.ts";

const FILES = 300;
const LOCAL = 40;

let dir: string;
let reg: TestRegistry;
let env: Record<string, string>;
let staged: HostDir;
let id1: string;
let id2: string;

const copyHost = (from: HostDir, to: string): HostDir => {
  spawnSync("cp", ["-a", join(from.root, ".."), to]);
  return { root: join(to, "root"), esp: join(to, "esp"), boot: join(to, "root/boot"), cmdline: join(to, "cmdline"), home: join(to, "home") };
};
const text = (seed: string): string => `${seed}: ${"configuration line ".repeat(6)}\n`;
const entries = (h: HostDir, d: string): Record<string, string> =>
  Object.fromEntries(entryFiles(join(h.esp, d)).map((f) => [f, readFileSync(join(h.esp, d, f), "utf8")]));

beforeAll(async () => {
  if (!isRoot) return;
  ensureExe();
  dir = mkdtempSync(join(tmpdir(), "cfsboot-finalize-crash-"));
  const layout = join(dir, "layout");
  reg = await startRegistry({ auth: "none" });
  env = registryHome(join(dir, "home"), reg.certsD);
  const etc1: Record<string, string> = { hostname: "h\n", motd: "one\n" };
  const etc2: Record<string, string> = { hostname: "h\n", motd: "two\n" };
  for (let i = 0; i < FILES; i++) {
    etc1[`bulk/f${String(i).padStart(4, "0")}.conf`] = text(`v1 ${i}`);
    // every third file changes upstream
    etc2[`bulk/f${String(i).padStart(4, "0")}.conf`] = text(i % 3 === 0 ? `v2 ${i}` : `v1 ${i}`);
  }
  buildImage(layout, osImage({ version: "1.0", kernel: "k1", etc: etc1 }).spec, { tag: "v1" });
  buildImage(layout, osImage({ version: "2.0", kernel: "k2", etc: etc2 }).spec, { tag: "v2" });
  await pushImage(layout, "v1", reg, "os", "latest");
  const base = makeHostDir(join(dir, "base"));
  const r = cfs(["install", "to-filesystem", "--source-imgref", reg.ref("os", "latest"), "--composefs-insecure", "--esp", base.esp, base.root], env);
  expect(r.status, r.stderr).toBe(0);
  const e = join(base.esp, "loader/entries", entryFiles(join(base.esp, "loader/entries"))[0]!);
  id1 = /v1-sha512-12:([0-9a-f]{128})/.exec(readFileSync(e, "utf8"))![1]!;
  bootEntry(base, bless(e));
  // Local changes: edits, additions in a directory of their own, deletions.
  const etc = join(base.root, "state/deploy", id1, "etc");
  for (let i = 0; i < LOCAL; i++) {
    const name = `bulk/f${String(i * 7).padStart(4, "0")}.conf`;
    if (i % 5 === 0) rmSync(join(etc, name));
    else writeFileSync(join(etc, name), text(`local ${i}`));
  }
  spawnSync("mkdir", [join(etc, "local")]);
  for (let i = 0; i < 40; i++) writeFileSync(join(etc, `local/l${i}.conf`), text(`added ${i}`));
  await pushImage(layout, "v2", reg, "os", "latest");
  const u = cfs(["upgrade", ...hostArgs(base)], env);
  expect(u.status, u.stderr).toBe(0);
  id2 = JSON.parse(readFileSync(join(base.root, "run/composefs/staged-deployment"), "utf8")).depl_id;
  staged = base;
}, 300_000);

afterAll(async () => {
  await reg?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** What can be observed on disk while finalize runs. */
function observer(h: HostDir): Record<string, () => number> {
  const sd = join(h.root, "state/deploy", id2);
  const count = (d: string, f: (n: string) => boolean = () => true): number => {
    try {
      return readdirSync(d).filter(f).length;
    } catch {
      return 0;
    }
  };
  const fresh = (): string | null => readdirSync(sd).find((n) => n.startsWith(".etc.tmp-")) ?? null;
  const etcIno = statSync(join(sd, "etc")).ino;
  return {
    fresh: () => (fresh() === null ? 0 : 1),
    copied: () => {
      const f = fresh();
      return f === null ? 0 : count(join(sd, f, "bulk"));
    },
    applied: () => {
      const f = fresh();
      return f === null ? 0 : count(join(sd, f, "local"));
    },
    exchanged: () => {
      try {
        return statSync(join(sd, "etc")).ino !== etcIno ? 1 : 0;
      } catch {
        return 0;
      }
    },
    trash: () => count(join(h.root, "state/deploy"), (n) => n.startsWith(`.${id2}-etc.trash-`)),
    committed: () => (existsSync(join(h.esp, "loader/entries.staged")) ? 0 : 1),
    unmarked: () => (existsSync(join(h.root, "run/composefs/staged-deployment")) ? 0 : 1),
  };
}

interface Point {
  what: string | null;
  n: number;
  ms: number;
}

const POINTS: Point[] = [
  { what: null, n: 0, ms: 30 },
  { what: null, n: 0, ms: 120 },
  { what: null, n: 0, ms: 300 },
  { what: null, n: 0, ms: 600 },
  { what: "fresh", n: 1, ms: 0 },
  { what: "copied", n: 1, ms: 0 },
  { what: "copied", n: 60, ms: 0 },
  { what: "copied", n: 150, ms: 0 },
  { what: "copied", n: 240, ms: 0 },
  { what: "copied", n: 299, ms: 0 },
  { what: "applied", n: 1, ms: 0 },
  { what: "applied", n: 20, ms: 0 },
  { what: "exchanged", n: 1, ms: 0 },
  { what: "exchanged", n: 1, ms: 2 },
  { what: "trash", n: 1, ms: 0 },
  { what: "trash", n: 1, ms: 5 },
  { what: "committed", n: 1, ms: 0 },
  { what: "unmarked", n: 1, ms: 0 },
  { what: "unmarked", n: 1, ms: 3 },
  { what: "unmarked", n: 1, ms: 15 },
];

async function killedFinalize(h: HostDir, p: Point): Promise<{ killed: boolean; reached: string[] }> {
  const obs = observer(h);
  const child = spawn(cfsbootExe, ["finalize-staged", ...hostArgs(h)], { env: { PATH: process.env.PATH ?? "/usr/bin:/bin", CFSBOOT_NO_PROGRESS: "1", ...env }, stdio: "ignore" });
  let exited = false;
  let killed = false;
  const done = new Promise<void>((res) =>
    child.on("exit", () => {
      exited = true;
      res();
    }),
  );
  const kill = () => {
    if (!exited) killed = child.kill("SIGKILL");
  };
  if (p.what === null) setTimeout(kill, p.ms);
  else {
    const t = setInterval(() => {
      if (exited) return clearInterval(t);
      let v = 0;
      try {
        v = obs[p.what!]!();
      } catch {}
      if (v >= p.n) {
        clearInterval(t);
        if (p.ms === 0) kill();
        else setTimeout(kill, p.ms);
      }
    }, 1);
  }
  await done;
  const reached = Object.entries(obs)
    .filter(([, f]) => {
      try {
        return f() > 0;
      } catch {
        return false;
      }
    })
    .map(([k]) => k);
  return { killed, reached };
}

test("kill -9 finalize-staged at 20 points: old or new default with a consistent /etc, status works, a re-run completes", async () => {
  if (!canRun(isRoot, "needs root (hosts in a directory)")) return;
  // The uninterrupted run.
  const ref = copyHost(staged, join(dir, "ref"));
  const full = cfs(["finalize-staged", ...hostArgs(ref)], env);
  expect(full.status, full.stderr).toBe(0);
  const merged = listing(join(ref.root, "state/deploy", id2, "etc"));
  const newSet = entries(ref, "loader/entries");
  const oldSet = entries(staged, "loader/entries");
  const stagedCopy = listing(join(staged.root, "state/deploy", id2, "etc"));
  const oldEtc = listing(join(staged.root, "state/deploy", id1, "etc"));
  expect(merged).not.toEqual(stagedCopy);
  expect(Object.keys(merged).filter((p) => p.startsWith("local/")).length).toBe(40);

  expect(POINTS.length).toBe(20);
  let kills = 0;
  const outcomes = new Map<string, number>();
  for (const [i, p] of POINTS.entries()) {
    const h = copyHost(staged, join(dir, `k${i}`));
    const k = await killedFinalize(h, p);
    const where = `${p.what ?? "start"}+${p.n} ${p.ms} ms`;
    const live = entries(h, "loader/entries");
    const isNew = JSON.stringify(live) === JSON.stringify(newSet);
    const etc2 = listing(join(h.root, "state/deploy", id2, "etc"));
    const etcState = JSON.stringify(etc2) === JSON.stringify(merged) ? "merged" : JSON.stringify(etc2) === JSON.stringify(stagedCopy) ? "staged copy" : "MIXED";
    const outcome = `${isNew ? "new" : "old"} default, /etc ${etcState}`;
    if (k.killed) {
      kills++;
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
    }
    process.stderr.write(`kill at ${where}: ${k.killed ? "killed" : "finished first"} (reached: ${k.reached.join(", ") || "nothing"}) → ${outcome}\n`);
    // Old or new default, never anything else.
    if (!isNew) expect(live, `kill at ${where}`).toEqual(oldSet);
    // The /etc is whole: with the new default exactly the merged one.
    expect(etcState, `kill at ${where}`).not.toBe("MIXED");
    if (isNew) expect(etcState, `kill at ${where}`).toBe("merged");
    // The running deployment's /etc is an input only.
    expect(listing(join(h.root, "state/deploy", id1, "etc")), `kill at ${where}`).toEqual(oldEtc);
    // status works.
    const s = cfs(["status", "--format=json", ...hostArgs(h)], env);
    expect(s.status, `kill at ${where}: ${s.stderr}`).toBe(0);
    expect(JSON.parse(s.stdout).status.booted.composefs.verity).toBe(id1);
    // A re-run completes the job.
    const again = cfs(["finalize-staged", ...hostArgs(h)], env);
    expect(again.status, `after a kill at ${where}: ${again.stderr}`).toBe(0);
    expect(entries(h, "loader/entries"), `after a kill at ${where}`).toEqual(newSet);
    expect(listing(join(h.root, "state/deploy", id2, "etc")), `after a kill at ${where}`).toEqual(merged);
    expect(existsSync(join(h.root, "run/composefs/staged-deployment"))).toBe(false);
    expect(existsSync(join(h.esp, "loader/entries.staged"))).toBe(false);
    expect(readdirSync(join(h.root, "state/deploy", id2)).sort()).toEqual(["etc", `${id2}.origin`, "var"].sort());
    // The replaced tree: gone, or (killed after the commit, before its removal) a leftover gc removes.
    const leftovers = readdirSync(join(h.root, "state/deploy")).filter((x) => x !== id1 && x !== id2);
    for (const x of leftovers) expect(x).toMatch(new RegExp(`^\\.${id2}-etc\\.trash-[0-9a-f]{8}$`));
    if (leftovers.length > 0) {
      expect(cfs(["gc", ...hostArgs(h)], env).status).toBe(0);
      expect(readdirSync(join(h.root, "state/deploy")).sort()).toEqual([id1, id2].sort());
    }
  }
  process.stderr.write(`outcomes: ${[...outcomes].map(([o, c]) => `${c}× ${o}`).join("; ")}\n`);
  // The kills landed before and after the commit, and in the middle of building /etc.
  expect(kills).toBeGreaterThanOrEqual(15);
  expect([...outcomes.keys()].some((o) => o.startsWith("old"))).toBe(true);
  expect([...outcomes.keys()].some((o) => o.startsWith("new"))).toBe(true);
  expect(outcomes.get("old default, /etc merged") ?? 0, "kills between the /etc exchange and the commit").toBeGreaterThan(0);
}, 900_000);
