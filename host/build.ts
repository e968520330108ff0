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
// same size. The CLI loads only the invoked command's chunk (commands/index.ts).
// --bytecode (needs --format=esm): precompiled JavaScriptCore bytecode, no
// parsing at start-up: CPU per run, `fsverity digest FILE` 125–140 → 80–100 ms,
// `setup-root --help` 72–85 → 63–72 ms (20-run means, load ≈ 20 on 2 cores);
// the executable grows 110.0 → 114.5 MB (zstd -3: 50.4 → 52.7 MB).
const args = ["build", "--compile", "--minify", "--splitting", "--bytecode", "--format=esm", "host/main.ts", ...WORKERS, "--outfile", "dist/cfsboot"];
const r = spawnSync(process.execPath, args, { stdio: "inherit" });
if (r.status !== 0) {
  process.stderr.write("cfsboot build: bun build failed\n");
  process.exit(1);
}
