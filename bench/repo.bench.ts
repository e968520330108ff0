// `cfsboot repo create-image` of a real tree (default /usr/share;
// CFSBOOT_BENCH_TREE to choose another), warm page cache, sha256 repository
// (so both sides hash the same way), --no-propagate-usr-to-root (the tree is
// not a container root):
//
// 1. into an empty repository (scan, fs-verity digests, every file > 64 bytes
//    copied in as an object, the EROFS image stored, syncfs), against
//    `cfsboot mkcomposefs --digest-store` of the same tree into an empty
//    flat store — the repository's overhead over the bare C-compatible path;
// 2. again into the now full repository (every object already present:
//    nothing is copied), against `mkcomposefs --print-digest-only` (scan +
//    digests, no store) — the cost of the deduplication checks.

import { spawnSync } from "node:child_process";
import { existsSync, lstatSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";

import { benchDir, cfsboot, defineBenchmarks, type Benchmark, type RunResult } from "./lib.ts";

const TREE = process.env.CFSBOOT_BENCH_TREE ?? "/usr/share";

const work = () => join(benchDir(), "repo");
const repo = () => join(work(), "repo");
const store = () => join(work(), "store");
const image = () => join(work(), "ours.img");

function treeBytes(): number {
  let bytes = 0;
  const stack = [TREE];
  while (stack.length) {
    const d = stack.pop()!;
    for (const n of readdirSync(d)) {
      const st = lstatSync(`${d}/${n}`);
      if (st.isDirectory()) stack.push(`${d}/${n}`);
      else if (st.isFile()) bytes += st.size;
    }
  }
  return bytes;
}

const bytes = existsSync(TREE) ? treeBytes() : 0;

function sh(args: string[]): void {
  const r = spawnSync(args[0]!, args.slice(1), { stdio: ["ignore", "ignore", "inherit"] });
  if (r.status !== 0) throw new Error(`${args.join(" ")} failed`);
}

const freshRepo = () => {
  rmSync(work(), { recursive: true, force: true });
  sh(["mkdir", "-p", work()]);
  sh([cfsboot(), "repo", "--repo", repo(), "init", "--insecure", "--algorithm", "fsverity-sha256-12"]);
};

const warmTree = (): void => {
  spawnSync("sh", ["-c", `find "$1" -type f -print0 | xargs -0 cat > /dev/null 2>&1`, "sh", TREE], { stdio: "ignore" });
};

const ok = (o: RunResult, r: RunResult): string | undefined => {
  if (o.status !== 0) return `ours exited ${o.status}: ${o.stderr.trim().split("\n")[0]}`;
  if (r.status !== 0) return `reference exited ${r.status}: ${r.stderr.trim().split("\n")[0]}`;
  // Same tree, same format: the image ids agree (create-image prints sha256:<hex>).
  if (o.stdout.trim().replace(/^sha256:/, "") !== r.stdout.trim() && r.stdout.trim() !== "") {
    return `image ids differ: ${o.stdout.trim()} vs ${r.stdout.trim()}`;
  }
  return undefined;
};

const createImage = { label: "cfsboot repo", argv: [cfsboot(), "repo", "--repo", repo(), "create-image", "--no-propagate-usr-to-root", TREE] };

const list: Benchmark[] = [
  {
    name: `repo create-image, ${TREE} (empty repository)`,
    bytes,
    runs: 2,
    limits: "fs-verity hashing of every byte on 2 cores, then the kernel copy of each object and one syncfs per image",
    skip: () => (existsSync(TREE) ? undefined : `${TREE} does not exist`),
    setup: warmTree,
    beforeEach: () => {
      freshRepo();
      rmSync(store(), { recursive: true, force: true });
    },
    ours: createImage,
    reference: { label: "mkcomposefs --digest-store", argv: [cfsboot(), "mkcomposefs", "--min-version=1", "--max-version=1", "--print-digest", `--digest-store=${store()}`, TREE, image()] },
    check: ok,
  },
  {
    name: `repo create-image, ${TREE} (every object present)`,
    bytes,
    runs: 3,
    limits: "scan and digests as mkcomposefs; plus one stat per object",
    skip: () => (existsSync(TREE) ? undefined : `${TREE} does not exist`),
    setup: () => {
      freshRepo();
      sh(createImage.argv);
    },
    ours: createImage,
    reference: { label: "mkcomposefs (digest only)", argv: [cfsboot(), "mkcomposefs", "--min-version=1", "--max-version=1", "--print-digest-only", TREE] },
    check: ok,
  },
];

export default defineBenchmarks(list);
