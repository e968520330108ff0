// Prepare or inspect the VM harness caches by hand:
//   bun vm/cli.ts rootfs trixie|bookworm    build (or find) the cached guest rootfs
//   bun vm/cli.ts initrd trixie|bookworm    build (or find) the minimal cached initrd
//   bun vm/cli.ts cache                     list the cache entries and their sizes
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { ensureInitrd } from "./lib/initrd.ts";
import { GUESTS, ensureRootfs } from "./lib/rootfs.ts";
import { cacheDir, run } from "./lib/util.ts";

const [cmd, arg] = process.argv.slice(2);
const spec = arg ? GUESTS[arg] : undefined;
if (cmd === "rootfs" && spec) {
  const r = await ensureRootfs(spec);
  console.log(JSON.stringify({ dir: r.dir, kver: r.kver, meta: r.meta }, null, 2));
} else if (cmd === "initrd" && spec) {
  const r = await ensureRootfs(spec);
  const i = await ensureInitrd(r);
  console.log(JSON.stringify(i, null, 2));
} else if (cmd === "cache") {
  const base = cacheDir();
  for (const sub of ["rootfs", "initrd", "debs", "runs", "tmp"]) {
    let names: string[] = [];
    try {
      names = readdirSync(join(base, sub));
    } catch {
      continue;
    }
    for (const n of names.sort()) {
      const p = join(base, sub, n);
      const du = run(["du", "-sh", p]).stdout.toString().split("\t")[0];
      console.log(`${du}\t${sub}/${n}${statSync(p).isDirectory() ? "/" : ""}`);
    }
  }
} else {
  console.error("usage: bun vm/cli.ts rootfs|initrd trixie|bookworm | cache");
  process.exit(2);
}
