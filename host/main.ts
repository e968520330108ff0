// Entry point of the single cfsboot executable (host tool and initramfs agent).
//
// Multi-call: invoked through a link named `mkcomposefs`, `composefs-info` or
// `mount.composefs` it behaves as that command. A compiled Bun executable sees
// argv[0] as "bun", so the invoked name is read from /proc/self/cmdline.
//
// `setup-root` (the initramfs agent) is dispatched before anything else is
// loaded so that the boot path does not pay for the host's CLI parser.

import { readFileSync } from "node:fs";
import { basename } from "node:path";

const MULTI_CALL = new Set(["mkcomposefs", "composefs-info", "mount.composefs"]);

function invokedName(): string {
  try {
    const argv0 = readFileSync("/proc/self/cmdline", "latin1").split("\0")[0] ?? "";
    return basename(argv0);
  } catch {
    return basename(process.argv0);
  }
}

async function main(): Promise<number> {
  const name = invokedName();
  const args = process.argv.slice(2);
  const argv = MULTI_CALL.has(name) ? [name, ...args] : args;
  if (argv[0] === "setup-root") {
    const { runSetupRoot } = await import("../initramfs/main.ts");
    return runSetupRoot(argv.slice(1));
  }
  const [{ runCli }, { useFastestHashing }] = await Promise.all([import("./cli.ts"), import("./hashing.ts")]);
  useFastestHashing();
  return runCli(argv);
}

process.exitCode = await main();
