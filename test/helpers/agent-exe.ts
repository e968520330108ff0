// The cfsboot executable the agent tests run: dist/cfsboot when it is newer
// than every source it bundles for `setup-root`, otherwise a private build
// with the flags of host/build.ts (so a stale dist/ never hides a change, and
// dist/ is never rewritten under other running tests).

import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";

import { cfsbootExe, projectRoot } from "./env.ts";

function newest(dir: string): number {
  return Math.max(
    0,
    ...readdirSync(join(projectRoot, dir), { recursive: true, encoding: "utf8" })
      .filter((f) => f.endsWith(".ts"))
      .map((f) => statSync(join(projectRoot, dir, f)).mtimeMs),
  );
}

/** Path of a cfsboot executable whose setup-root matches the sources; may build into `scratch`. */
export function agentExecutable(scratch: string): string {
  const src = Math.max(newest("initramfs"), newest("shared"), statSync(join(projectRoot, "host/main.ts")).mtimeMs);
  if (existsSync(cfsbootExe) && statSync(cfsbootExe).mtimeMs > src) return cfsbootExe;
  const out = join(scratch, "cfsboot");
  if (existsSync(out)) return out;
  const r = spawnSync(process.execPath, ["build", "--compile", "--minify", "host/main.ts", "--outfile", out], { cwd: projectRoot, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`bun build failed: ${r.stderr}`);
  return out;
}
