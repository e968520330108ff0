// `npm run build`: one single-file executable, dist/cfsboot.
//
// Worker scripts are extra entry points so the compiled executable can start
// them (Bun embeds every entry point into the one file).

import { spawnSync } from "node:child_process";
import { mkdirSync } from "node:fs";

const WORKERS: string[] = [
  "host/digest-worker.ts",
];

mkdirSync("dist", { recursive: true });
const args = ["build", "--compile", "--minify", "host/main.ts", ...WORKERS, "--outfile", "dist/cfsboot"];
const r = spawnSync(process.execPath, args, { stdio: "inherit" });
if (r.status !== 0) {
  process.stderr.write("cfsboot build: bun build failed\n");
  process.exit(1);
}
