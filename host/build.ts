// `npm run build`: one single-file executable, dist/cfsboot.
//
// Worker scripts are extra entry points so the compiled executable can start
// them (Bun embeds every entry point into the one file).

import { spawnSync } from "node:child_process";
import { mkdirSync } from "node:fs";

const WORKERS: string[] = [
  "host/digest-worker.ts",
  "host/store-worker.ts",
];

mkdirSync("dist", { recursive: true });
// --splitting: the dynamic imports in host/main.ts become chunks that are
// parsed only when imported, so `setup-root` (every boot) does not pay for
// parsing the host CLI: start-up CPU 170 → 70 ms here (bench/setup-root.bench.ts),
// same size.
const args = ["build", "--compile", "--minify", "--splitting", "host/main.ts", ...WORKERS, "--outfile", "dist/cfsboot"];
const r = spawnSync(process.execPath, args, { stdio: "inherit" });
if (r.status !== 0) {
  process.stderr.write("cfsboot build: bun build failed\n");
  process.exit(1);
}
