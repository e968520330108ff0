// The initramfs agent's entry point (`cfsboot setup-root`).
// Kept free of host/ imports: this code runs before the root is mounted.

import { describeError } from "../shared/errors.ts";

export async function runSetupRoot(args: string[]): Promise<number> {
  void args;
  process.stderr.write(`cfsboot: setup-root: ${describeError(new Error("not built yet"))}\n`);
  return 1;
}
