// `cfsboot mkcomposefs` on a real tree (default /usr; CFSBOOT_BENCH_TREE to
// choose another), warm page cache:
//
// 1. directory → image + digest store (every file > 64 bytes copied into an
//    empty store, fs-verity digests of all of them, syncfs at the end), against
//    `mkfs.erofs IMAGE TREE` (erofs-utils), which copies the same data into
//    one uncompressed image (and does not sync);
// 2. directory → image only (--print-digest-only: scan + digests), against
//    the same mkfs.erofs run;
// 3. the tree's dumpfile → image (--from-file), against C mkcomposefs
//    --from-file when CFSBOOT_C_MKCOMPOSEFS names a C build, else against
//    mkfs.erofs of the tree for scale only (not the same work).

import { spawnSync } from "node:child_process";
import { existsSync, lstatSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";

import { writeDumpfile } from "../shared/dumpfile.ts";
import { DigestPool } from "../host/digest.ts";
import { scanDirectory } from "../host/scan.ts";
import { benchDir, cfsboot, defineBenchmarks, hasTool, type Benchmark, type RunResult } from "./lib.ts";

const TREE = process.env.CFSBOOT_BENCH_TREE ?? "/usr";
const C_MKCOMPOSEFS = process.env.CFSBOOT_C_MKCOMPOSEFS;

const work = () => join(benchDir(), "mkcomposefs");
const image = () => join(work(), "ours.img");
const store = () => join(work(), "store");
const refImage = () => join(work(), "ref.erofs");
const dumpfile = () => join(benchDir(), `mkcomposefs-${TREE.replace(/\//g, "_")}.dump`);

/** Regular-file bytes and entry count of the tree; reading it also warms the page cache for metadata. */
function treeSize(): { bytes: number; entries: number } {
  let bytes = 0;
  let entries = 0;
  const stack = [TREE];
  while (stack.length) {
    const d = stack.pop()!;
    for (const n of readdirSync(d)) {
      const p = `${d}/${n}`;
      const st = lstatSync(p);
      entries++;
      if (st.isDirectory()) stack.push(p);
      else if (st.isFile()) bytes += st.size;
    }
  }
  return { bytes, entries };
}

/** Reads every file once (page cache warm for both sides). */
function warmTree(): void {
  spawnSync("sh", ["-c", `find "$1" -type f -print0 | xargs -0 cat > /dev/null 2>&1`, "sh", TREE], { stdio: "ignore" });
}

const size = existsSync(TREE) ? treeSize() : { bytes: 0, entries: 0 };
process.stderr.write(`mkcomposefs bench: ${TREE}: ${size.entries} entries, ${(size.bytes / 1e9).toFixed(2)} GB in regular files\n`);

const clean = () => {
  rmSync(work(), { recursive: true, force: true });
  spawnSync("mkdir", ["-p", work()]);
};

const bothOk = (o: RunResult, r: RunResult): string | undefined => {
  if (o.status !== 0) return `ours exited ${o.status}: ${o.stderr.trim().split("\n")[0]}`;
  if (r.status !== 0) return `reference exited ${r.status}: ${r.stderr.trim().split("\n")[0]}`;
  return undefined;
};

const noTree = () =>
  !existsSync(TREE) ? `${TREE} does not exist` : !hasTool("mkfs.erofs") ? "mkfs.erofs (Debian package erofs-utils) is not installed" : undefined;

const mkfsErofs = { label: "mkfs.erofs", argv: ["mkfs.erofs", "--quiet", refImage(), TREE] };

const list: Benchmark[] = [
  {
    name: `mkcomposefs --digest-store, ${TREE} (empty store)`,
    bytes: size.bytes,
    runs: 2,
    limits: "fs-verity hashing of every byte on 2 cores, then the kernel copy into the store and one syncfs",
    skip: noTree,
    setup: () => {
      clean();
      warmTree();
    },
    beforeEach: clean,
    ours: { label: "cfsboot", argv: [cfsboot(), "mkcomposefs", `--digest-store=${store()}`, TREE, image()] },
    reference: mkfsErofs,
    check: bothOk,
  },
  {
    name: `mkcomposefs (image only), ${TREE}`,
    bytes: size.bytes,
    runs: 3,
    limits: "fs-verity hashing of every byte on 2 cores; mkfs.erofs copies the data instead",
    skip: noTree,
    setup: clean,
    beforeEach: clean,
    ours: { label: "cfsboot", argv: [cfsboot(), "mkcomposefs", TREE, image()] },
    reference: mkfsErofs,
    check: bothOk,
  },
  {
    name: `mkcomposefs --from-file, dumpfile of ${TREE}`,
    runs: 5,
    limits: C_MKCOMPOSEFS
      ? "dumpfile parsing and the EROFS writer, single-threaded in both"
      : "reference is mkfs.erofs of the tree itself (no C mkcomposefs here): for scale only",
    skip: noTree,
    setup: async () => {
      clean();
      if (!existsSync(dumpfile())) {
        const pool = new DigestPool();
        try {
          const scan = await scanDirectory(TREE, { pool });
          const tmp = `${dumpfile()}.tmp`;
          writeFileSync(tmp, writeDumpfile(scan.root));
          renameSync(tmp, dumpfile());
        } finally {
          await pool.close();
        }
      }
      process.stderr.write(`mkcomposefs bench: dumpfile ${(statSync(dumpfile()).size / 1e6).toFixed(1)} MB\n`);
    },
    beforeEach: () => rmSync(image(), { force: true }),
    ours: { label: "cfsboot", argv: [cfsboot(), "mkcomposefs", "--from-file", dumpfile(), image()] },
    reference: C_MKCOMPOSEFS
      ? { label: "mkcomposefs (C)", argv: [C_MKCOMPOSEFS, "--from-file", dumpfile(), refImage()] }
      : mkfsErofs,
    check: bothOk,
  },
];

export default defineBenchmarks(list);
