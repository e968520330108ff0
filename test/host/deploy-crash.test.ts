// Crash test of `upgrade` on a host in a directory: 20 copies of the same
// host each get `upgrade` killed with a real SIGKILL at a point of its run —
// fixed times after the start (startup, manifest fetch), or the moment an
// effect shows on disk (the k-th new layer stream, an image, the config and
// manifest streams, the tag, the state directory while it is being written
// and once published, the kernel directory, the staged entries being written
// and published, the marker, and during the gc after staging). After each kill: `status` works, every boot
// entry (live and staged) names a deployment whose state directory exists,
// the live entries are exactly the ones before, `repo fsck` is clean, and a
// re-run of `upgrade` succeeds and stages the same deployment as the
// uninterrupted run.

import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";

import { Repository } from "../../host/repo.ts";
import { fsckOk } from "../../host/repo-fsck.ts";
import { cfsbootExe } from "../helpers/env.ts";
import { buildImage, pushImage } from "../helpers/oci-image.ts";
import { startRegistry, type TestRegistry } from "../helpers/registry.ts";
import { type HostDir, bless, bootEntry, cfs, entryFiles, hostArgs, makeHostDir, osImage, registryHome } from "../helpers/os-host.ts";
import { ensureExe } from "../helpers/sysroot.ts";

let dir: string;
let reg: TestRegistry;
let env: Record<string, string>;
let base: HostDir;

const copyHost = (from: HostDir, to: string): HostDir => {
  spawnSync("cp", ["-a", join(from.root, ".."), to]);
  return { root: join(to, "root"), esp: join(to, "esp"), boot: join(to, "root/boot"), cmdline: join(to, "cmdline"), home: join(to, "home") };
};

/** The booted cmdline file names the old host's path only through ids: rewrite nothing, it is path-free. */
function idsNamedBy(loaderDir: string): string[] {
  return entryFiles(loaderDir).map((f) => {
    const t = readFileSync(join(loaderDir, f), "utf8");
    return /v1-sha512-12:([0-9a-f]{128})/.exec(t)![1]!;
  });
}

beforeAll(async () => {
  ensureExe();
  dir = mkdtempSync(join(tmpdir(), "cfsboot-deploy-crash-"));
  const layout = join(dir, "layout");
  reg = await startRegistry({ auth: "none" });
  env = registryHome(join(dir, "home"), reg.certsD);
  buildImage(layout, osImage({ version: "1.0", kernel: "k1" }).spec, { tag: "v1" });
  buildImage(layout, osImage({ version: "2.0", kernel: "k2", kernelSize: 400_000, bulk: 2_000_000, etc: { hostname: "h\n", motd: "two\n", "a/b/c": "deep\n" } }).spec, { tag: "v2" });
  await pushImage(layout, "v1", reg, "os", "latest");
  base = makeHostDir(join(dir, "base"));
  const r = cfs(["install", "to-filesystem", "--source-imgref", reg.ref("os", "latest"), "--composefs-insecure", "--esp", base.esp, base.root], env);
  expect(r.status, r.stderr).toBe(0);
  const f = entryFiles(join(base.esp, "loader/entries"));
  bootEntry(base, bless(join(base.esp, "loader/entries", f[0]!)));
  await pushImage(layout, "v2", reg, "os", "latest");
}, 180_000);

afterAll(async () => {
  await reg?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** What can be observed on disk while an upgrade runs. */
function observer(h: HostDir): Record<string, () => number> {
  const count = (d: string, f: (n: string) => boolean): number => {
    try {
      return readdirSync(d).filter(f).length;
    } catch {
      return 0;
    }
  };
  const streams = join(h.root, "composefs/streams");
  return {
    layers: () => count(streams, (n) => n.startsWith("oci-layer-")),
    configs: () => count(streams, (n) => n.startsWith("oci-config-")),
    manifests: () => count(streams, (n) => n.startsWith("oci-manifest-")),
    images: () => count(join(h.root, "composefs/images"), (n) => /^[0-9a-f]+$/.test(n)),
    tags: () => count(join(streams, "refs/oci"), () => true),
    stateTmp: () => count(join(h.root, "state/deploy"), (n) => n.includes(".tmp-")),
    state: () => count(join(h.root, "state/deploy"), (n) => /^[0-9a-f]{128}$/.test(n)),
    kernelTmp: () => count(join(h.esp, "EFI/Linux"), (n) => n.includes(".tmp-")),
    kernels: () => count(join(h.esp, "EFI/Linux"), (n) => n.startsWith("bootc_composefs-")),
    stagedTmp: () => count(join(h.esp, "loader"), (n) => n.startsWith(".entries.staged.tmp-")),
    staged: () => (existsSync(join(h.esp, "loader/entries.staged")) ? 1 : 0),
    marker: () => (existsSync(join(h.root, "run/composefs/staged-deployment")) ? 1 : 0),
  };
}

/** A kill point: after `ms` from the start, or `ms` after observable `what` first exceeds its count on the base host by `n`. */
interface Point {
  what: string | null;
  n: number;
  ms: number;
}

async function killedUpgrade(h: HostDir, p: Point): Promise<{ killed: boolean; on: string[] }> {
  const obs = observer(h);
  const baseline = p.what === null ? 0 : obs[p.what]!();
  const child = spawn(cfsbootExe, ["upgrade", ...hostArgs(h)], { env: { PATH: process.env.PATH ?? "/usr/bin:/bin", CFSBOOT_NO_PROGRESS: "1", ...env }, stdio: "ignore" });
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
      if (obs[p.what!]!() >= baseline + p.n) {
        clearInterval(t);
        if (p.ms === 0) kill();
        else setTimeout(kill, p.ms);
      }
    }, 1);
  }
  await done;
  const after = observer(h);
  const on = ["tags", "state", "staged", "marker"].filter((k) => after[k]!() > observer(base)[k]!());
  return { killed, on };
}

const POINTS: Point[] = [
  { what: null, n: 0, ms: 40 },
  { what: null, n: 0, ms: 250 },
  { what: null, n: 0, ms: 600 },
  { what: "layers", n: 1, ms: 0 },
  { what: "layers", n: 2, ms: 0 },
  { what: "layers", n: 3, ms: 0 },
  { what: "images", n: 1, ms: 0 },
  { what: "configs", n: 1, ms: 0 },
  { what: "manifests", n: 1, ms: 0 },
  { what: "tags", n: 1, ms: 0 },
  { what: "stateTmp", n: 1, ms: 0 },
  { what: "stateTmp", n: 1, ms: 4 },
  { what: "state", n: 1, ms: 0 },
  { what: "kernelTmp", n: 1, ms: 0 },
  { what: "kernels", n: 1, ms: 0 },
  { what: "stagedTmp", n: 1, ms: 0 },
  { what: "staged", n: 1, ms: 0 },
  { what: "marker", n: 1, ms: 0 },
  { what: "marker", n: 1, ms: 30 },
  { what: "marker", n: 1, ms: 120 },
];

test("kill -9 upgrade at 20 points: status works, entries name existing deployments, fsck clean, re-run succeeds", async () => {
  // The uninterrupted run.
  const ref = copyHost(base, join(dir, "ref"));
  const full = cfs(["upgrade", ...hostArgs(ref)], env);
  expect(full.status, full.stderr).toBe(0);
  const expectedId = JSON.parse(readFileSync(join(ref.root, "run/composefs/staged-deployment"), "utf8")).depl_id as string;
  const liveBefore = entryFiles(join(base.esp, "loader/entries"));
  const phases = new Set<string>();
  let kills = 0;
  expect(POINTS.length).toBe(20);
  for (const [i, p] of POINTS.entries()) {
    const h = copyHost(base, join(dir, `k${i}`));
    const k = await killedUpgrade(h, p);
    const where = `${p.what ?? "start"}+${p.n} ${p.ms} ms`;
    if (k.killed) {
      kills++;
      phases.add(k.on.join("+") || "nothing");
    }
    process.stderr.write(`kill at ${where}: ${k.killed ? "killed" : "finished first"}, on disk: ${k.on.join("+") || "nothing"}\n`);
    // status works and names only existing deployments.
    const s = cfs(["status", "--format=json", ...hostArgs(h)], env);
    expect(s.status, `kill at ${where}: ${s.stderr}`).toBe(0);
    const doc = JSON.parse(s.stdout);
    expect(doc.status.booted.composefs.verity).toMatch(/^[0-9a-f]{128}$/);
    for (const d of ["loader/entries", "loader/entries.staged"]) {
      for (const id of idsNamedBy(join(h.esp, d))) expect(existsSync(join(h.root, "state/deploy", id, `${id}.origin`)), `${d} names ${id}`).toBe(true);
    }
    expect(entryFiles(join(h.esp, "loader/entries"))).toEqual(liveBefore);
    if (doc.status.staged !== null) expect(doc.status.staged.composefs.verity).toBe(expectedId);
    // The repository is consistent.
    const repo = Repository.open(join(h.root, "composefs"));
    try {
      const report = await repo.fsck();
      expect(fsckOk(report), JSON.stringify(report)).toBe(true);
    } finally {
      repo.close();
    }
    // A re-run finishes the job.
    const again = cfs(["upgrade", ...hostArgs(h)], env);
    expect(again.status, `after a kill at ${where}: ${again.stderr}`).toBe(0);
    const marker = JSON.parse(readFileSync(join(h.root, "run/composefs/staged-deployment"), "utf8"));
    expect(marker.depl_id).toBe(expectedId);
    expect(idsNamedBy(join(h.esp, "loader/entries.staged")).sort()).toEqual(idsNamedBy(join(ref.esp, "loader/entries.staged")).sort());
    rmSync(join(dir, `k${i}`), { recursive: true, force: true });
  }
  // The kills landed in different phases of the upgrade.
  expect(kills).toBeGreaterThanOrEqual(14);
  expect(phases.size, [...phases].join(", ")).toBeGreaterThanOrEqual(4);
}, 600_000);
