// `cfsboot repo pull docker://…` vs `skopeo copy docker://… oci:…` of the same
// ~300 MB multi-layer image from a local docker-registry (TLS + htpasswd,
// test/helpers/registry.ts), in the same run:
//
// 1. into an empty repository / empty OCI layout: download, decompress, split
//    into objects (fs-verity digests), verify blob digests and diff_ids,
//    build the tree, write the EROFS image — against skopeo's download +
//    digest check + write of the blobs (it does not decompress layers);
// 2. again into the full repository / layout: we fetch the manifest and
//    download nothing; skopeo fetches the manifest and finds every blob present.
//
// The image: 4 layers (gzip, zstd, gzip, uncompressed), ~300 MB uncompressed,
// files from 2 KiB to 12 MiB, half incompressible, half text-like; built once
// into $CFSBOOT_BENCH_DIR/pull-layout and pushed at setup.

import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { spawnSync } from "node:child_process";

import { benchDir, cfsboot, defineBenchmarks, hasTool, type Benchmark, type RunResult } from "./lib.ts";
import { spawn, type ChildProcess } from "node:child_process";
import { buildImage, type LayerEntry, type LayerSpec } from "../test/helpers/oci-image.ts";

const layout = () => join(benchDir(), "pull-layout");
const work = () => join(benchDir(), "pull-work");
// Each run writes into a new directory, and nothing is deleted until the
// benchmark process exits: ext4 skips inodes freed in the last 60–360 s
// when it allocates new ones (ialloc.c recently_deleted()), so deleting the
// previous run's 10,600 objects right before a run made every object
// creation of the next one scan the inode table (5–15% of the pull's CPU in
// the kernel) — a cost of the benchmark, not of a pull.
let runNo = 0;
const runDir = () => join(work(), `run-${runNo}`);
const repo = () => join(runDir(), "repo");
const dest = () => join(runDir(), "skopeo-oci");
let trashed = false;
/** Old runs: renamed away now (cheap), deleted when the benchmark exits. */
function trashOldRuns(): void {
  if (trashed) return;
  trashed = true;
  const trash = `${work()}.old-${process.pid}`;
  if (existsSync(work())) renameSync(work(), trash);
  mkdirSync(work(), { recursive: true });
  process.on("exit", () => {
    rmSync(trash, { recursive: true, force: true });
    rmSync(work(), { recursive: true, force: true });
  });
}

/** Text-like bytes: compressible about 3:1 with gzip, like binaries and docs in an OS image. */
function texty(size: number, seed: number): Uint8Array {
  const words = ["usr", "lib", "systemd", "config", "value", "the", "kernel", "module", "\n", "0x1f", "static", "return", "int", "struct", "{", "}", ";"];
  const out = new Uint8Array(size);
  let x = seed * 2654435761 || 1;
  let i = 0;
  while (i < size) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    const w = words[x % words.length]! + (x & 0x100 ? " " : "");
    for (let j = 0; j < w.length && i < size; j++) out[i++] = w.charCodeAt(j);
    if ((x & 0xff) < 24 && i < size) out[i++] = (x >>> 8) & 0xff;
  }
  return out;
}

function layer(n: number, files: number, size: (i: number) => number, compression: LayerSpec["compression"]): LayerSpec {
  const entries: LayerEntry[] = [{ type: "dir", path: "usr" }, { type: "dir", path: `usr/l${n}` }];
  for (let d = 0; d < Math.ceil(files / 200); d++) entries.push({ type: "dir", path: `usr/l${n}/d${d}` });
  for (let i = 0; i < files; i++) {
    const path = `usr/l${n}/d${Math.floor(i / 200)}/f${i}`;
    const s = size(i);
    entries.push(i % 2 === 0 ? { type: "file", path, size: s, seed: n * 100_000 + i } : { type: "file", path, content: texty(s, n * 100_000 + i) });
  }
  return { compression, entries };
}

function ensureImage(): void {
  if (existsSync(join(layout(), "done"))) return;
  rmSync(layout(), { recursive: true, force: true });
  buildImage(
    layout(),
    {
      layers: [
        layer(1, 2000, (i) => 20_000 + (i % 13) * 5000, "gzip"), // ~110 MB
        layer(2, 12, (i) => 4_000_000 + i * 700_000, "zstd"), // ~95 MB
        layer(3, 8000, (i) => 2000 + (i % 7) * 1500, "gzip"), // ~40 MB
        layer(4, 600, (i) => 60_000 + (i % 5) * 20_000, "none"), // ~50 MB
      ],
    },
    { tag: "latest" },
  );
  writeFileSync(join(layout(), "done"), "");
}

let reg: { ref: string; creds: string; caDir: string } | null = null;
let server: ChildProcess | null = null;
const ourArgv: string[] = [];
const skopeoArgv: string[] = [];

/** The registry runs in a helper process (bench/pull-registry.ts) with its own event loop. */
async function startServer(): Promise<{ ref: string; creds: string; caDir: string }> {
  server = spawn(process.execPath, [join(import.meta.dirname, "pull-registry.ts"), layout()], { stdio: ["pipe", "pipe", "inherit"] });
  let buf = "";
  return await new Promise((resolve, reject) => {
    server!.stdout!.on("data", (d: Buffer) => {
      buf += d.toString();
      const nl = buf.indexOf("\n");
      if (nl >= 0) {
        // Do not keep the runner alive; the helper exits when its stdin closes with us.
        server!.unref();
        (server!.stdout as unknown as { unref?: () => void }).unref?.();
        (server!.stdin as unknown as { unref?: () => void }).unref?.();
        resolve(JSON.parse(buf.slice(0, nl)));
      }
    });
    server!.on("exit", (code) => reject(new Error(`registry helper exited with ${code}`)));
  });
}

/** Point both command lines at the current run directory. */
function setArgv(): void {
  const { ref, creds, caDir } = reg!;
  ourArgv.splice(0, ourArgv.length, cfsboot(), "repo", "--repo", repo(), "pull", "--quiet", ref, "bench", "--creds", creds, "--cert-dir", caDir);
  skopeoArgv.splice(0, skopeoArgv.length, "skopeo", "--insecure-policy", "copy", "--quiet", "--src-creds", creds, "--src-cert-dir", caDir, ref, `oci:${dest()}:bench`);
}

async function setup(): Promise<void> {
  ensureImage();
  trashOldRuns();
  reg ??= await startServer();
  setArgv();
}

/** A new run directory with an empty repository (and no skopeo layout). */
function fresh(): void {
  runNo++;
  mkdirSync(runDir(), { recursive: true });
  setArgv();
  const r = spawnSync(cfsboot(), ["repo", "--repo", repo(), "init", "--insecure"], { stdio: ["ignore", "ignore", "inherit"] });
  if (r.status !== 0) throw new Error("repo init failed");
}

const ok = (o: RunResult, r: RunResult): string | undefined => {
  if (o.status !== 0) return `ours exited ${o.status}: ${o.stderr.trim().split("\n")[0]}`;
  if (r.status !== 0) return `reference exited ${r.status}: ${r.stderr.trim().split("\n")[0]}`;
  return undefined;
};

const skip = () => (["skopeo", "docker-registry", "openssl", "htpasswd"].every(hasTool) ? undefined : "needs skopeo, docker-registry, openssl and htpasswd");
const BYTES = 300_000_000;

const list: Benchmark[] = [
  {
    name: "repo pull docker:// (~300 MB, 4 layers), empty repository",
    bytes: BYTES,
    runs: 3,
    limits: "decompression, sha256 of blob and tar, fs-verity sha512 of every object (workers) and one write per object on 2 cores; skopeo only stores the compressed blobs",
    skip,
    setup,
    beforeEach: fresh,
    ours: { label: "cfsboot repo pull", argv: ourArgv },
    reference: { label: "skopeo copy → oci:", argv: skopeoArgv },
    check: ok,
  },
  {
    name: "repo pull docker:// again (everything present)",
    runs: 5,
    limits: "manifest request + repository checks; skopeo: manifest + a check per blob",
    skip,
    setup: async () => {
      await setup();
      fresh();
      spawnSync(ourArgv[0]!, ourArgv.slice(1), { stdio: "inherit" });
      spawnSync(skopeoArgv[0]!, skopeoArgv.slice(1), { stdio: "inherit" });
    },
    ours: { label: "cfsboot repo pull", argv: ourArgv },
    reference: { label: "skopeo copy → oci:", argv: skopeoArgv },
    check: ok,
  },
];

export default defineBenchmarks(list);
