// `cfsboot finalize-staged` of an /etc with 5,000 files and 500 local
// changes, on a host in a directory (warm page cache):
//
//   setup: two OS images in an OCI layout (v1; v2 changes every third file
//   and adds 100), `install to-filesystem` of v1 (oci: transport, no
//   registry), 500 local changes in the deployment's /etc (300 edits, 100
//   deletions, 100 new files in a new directory), `upgrade` to v2 (staged);
//   the staged host is kept as a template and copied back before each run.
//
// ours: the whole finalize — snapshots of the booted and the staged image's
// /etc (read from their EROFS images, every file hashed) and of the live
// /etc (fd walk, every file hashed), the plan, the fresh copy of the new
// /etc from the repository plus the 500 local nodes, one syncfs, the
// exchange, removal of the old copy, the entry exchange, gc of boot binaries.
// reference: `cp -a` of the staged /etc (5,000 files) plus `sync -f` — the
// floor of building one fresh copy durably, with no reading of images and no
// hashing at all.

import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

import { benchDir, cfsboot, defineBenchmarks, type Benchmark, type RunResult } from "./lib.ts";
import { buildImage } from "../test/helpers/oci-image.ts";
import { bless, bootEntry, entryFiles, makeHostDir, osImage } from "../test/helpers/os-host.ts";

const FILES = 5000;
const LOCAL = 500;
const work = () => join(benchDir(), "finalize");
const template = () => join(work(), "template");
const run = () => join(work(), "run");
const idFile = () => join(work(), "ids.json");

const text = (seed: string): string => `${seed}: ${"some configuration value ".repeat(5)}\n`;

function sh(args: string[], opts: { env?: Record<string, string> } = {}): string {
  const r = spawnSync(args[0]!, args.slice(1), { encoding: "utf8", env: { ...process.env, CFSBOOT_NO_PROGRESS: "1", ...opts.env }, maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`${args.join(" ")} failed: ${r.stderr}`);
  return r.stdout;
}

function hostArgs(root: string): string[] {
  return ["--sysroot", join(root, "root"), "--esp", join(root, "esp"), "--booted-cmdline", join(root, "cmdline")];
}

function setup(): void {
  if (existsSync(idFile())) return;
  rmSync(work(), { recursive: true, force: true });
  const layout = join(work(), "layout");
  const etc1: Record<string, string> = { hostname: "h\n" };
  const etc2: Record<string, string> = { hostname: "h\n" };
  for (let i = 0; i < FILES; i++) {
    const p = `d${String(i % 50).padStart(2, "0")}/f${String(i).padStart(4, "0")}.conf`;
    etc1[p] = text(`v1 ${i}`);
    etc2[p] = text(i % 3 === 0 ? `v2 ${i}` : `v1 ${i}`);
  }
  for (let i = 0; i < 100; i++) etc2[`new/n${i}.conf`] = text(`new ${i}`);
  buildImage(layout, osImage({ version: "1.0", kernel: "k1", etc: etc1 }).spec, { tag: "latest" });
  const h = makeHostDir(template());
  sh([cfsboot(), "install", "to-filesystem", "--source-imgref", `oci:${layout}:latest`, "--composefs-insecure", "--esp", h.esp, h.root]);
  const e = join(h.esp, "loader/entries", entryFiles(join(h.esp, "loader/entries"))[0]!);
  const id1 = /v1-sha512-12:([0-9a-f]{128})/.exec(readFileSync(e, "utf8"))![1]!;
  bootEntry(h, bless(e));
  const etc = join(h.root, "state/deploy", id1, "etc");
  for (let i = 0; i < 400; i++) {
    const k = (i * 7 + 3) % FILES;
    const p = join(etc, `d${String(k % 50).padStart(2, "0")}/f${String(k).padStart(4, "0")}.conf`);
    if (i % 4 === 0) rmSync(p, { force: true });
    else writeFileSync(p, text(`local ${i}`));
  }
  sh(["mkdir", join(etc, "local")]);
  for (let i = 0; i < LOCAL - 400; i++) writeFileSync(join(etc, `local/l${i}.conf`), text(`added ${i}`));
  buildImage(layout, osImage({ version: "2.0", kernel: "k1", etc: etc2 }).spec, { tag: "latest" });
  sh([cfsboot(), "upgrade", ...hostArgs(template())]);
  const id2 = JSON.parse(readFileSync(join(template(), "root/run/composefs/staged-deployment"), "utf8")).depl_id as string;
  writeFileSync(idFile(), JSON.stringify({ id1, id2 }));
  writeFileSync(join(work(), "new-etc-path"), join(run(), "root/state/deploy", id2, "etc"));
}

const list: Benchmark[] = [
  {
    name: `finalize-staged, /etc of ${FILES} files with ${LOCAL} local changes`,
    runs: 3,
    limits: "three /etc snapshots hash 15,000 files; the fresh copy writes 5,100 files; one syncfs",
    skip: () => (process.getuid?.() === 0 ? undefined : "needs root (a host in a directory: owners, xattrs)"),
    setup,
    beforeEach: () => {
      rmSync(run(), { recursive: true, force: true });
      sh(["cp", "-a", template(), run()]);
      rmSync(join(work(), "copy"), { recursive: true, force: true });
      // warm the page cache for both sides
      spawnSync("sh", ["-c", `find "$1" -type f -print0 | xargs -0 cat > /dev/null 2>&1`, "sh", run()], { stdio: "ignore" });
    },
    ours: { label: "cfsboot finalize-staged", argv: [cfsboot(), "finalize-staged", ...hostArgs(run())], env: { CFSBOOT_NO_PROGRESS: "1" } },
    reference: { label: "cp -a + sync -f", argv: ["sh", "-c", `cp -a "$(cat "$1")" "$2" && sync -f "$2"`, "sh", join(work(), "new-etc-path"), join(work(), "copy")] },
    check: (o: RunResult, r: RunResult) => {
      if (o.status !== 0) return `finalize exited ${o.status}: ${o.stderr.trim().split("\n").pop()}`;
      if (!o.stderr.includes("Bootloader updated")) return "finalize did not commit";
      if (r.status !== 0) return `cp exited ${r.status}`;
      return undefined;
    },
  },
];

export default defineBenchmarks(list);
