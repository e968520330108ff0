// What the machine can do, for tests that need root, a tool or a kernel
// feature. On a developer machine a missing capability skips the test with a
// printed reason; under CI=true it is a failure (CI must have everything).

import { spawnSync } from "node:child_process";

export const inCI = process.env.CI === "true";

/** Returns true when `ok`; otherwise prints why, and fails under CI. */
export function canRun(ok: boolean, reason: string): boolean {
  if (ok) return true;
  if (inCI) throw new Error(`required capability missing under CI: ${reason}`);
  process.stderr.write(`SKIP: ${reason}\n`);
  return false;
}

export const isRoot = process.getuid?.() === 0;

export function hasTool(name: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${name}`], { stdio: "ignore" }).status === 0;
}

/** The repository root (tests run with it as cwd). */
export const projectRoot = new URL("../..", import.meta.url).pathname;

/** ../shared next to the project: reference documents and vectors. */
export const sharedDir = new URL("../../../shared", import.meta.url).pathname;
export const vectorsDir = `${sharedDir}/vectors`;

/** The built executable (npm test builds it before the tests run). */
export const cfsbootExe = `${projectRoot}dist/cfsboot`;
