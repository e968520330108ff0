// `cfsboot seal [--dry-run] [host options]`: enable fs-verity on every
// repository object and on meta.json, then drop the `?` from the composefs
// karg of the boot entries, so the next boot enforces verity (host/seal.ts).
// --dry-run checks every object's digest (in userspace where the kernel has
// no fs-verity) and lists what would change. Exit status 1 when an object is
// damaged.

import type { Argv } from "yargs";

import { writeStdout } from "../atomic.ts";
import { defineCommand } from "../cli.ts";
import { formatSealReport, seal } from "../seal.ts";
import { Host, type HostArgs, hostOptions, writableSysroot } from "../sysroot.ts";

interface Args extends HostArgs {
  "dry-run"?: boolean;
}

export const sealCommand = defineCommand<Args>({
  command: "seal",
  describe: "enable fs-verity on the repository and switch the boot entries to the sealed composefs karg",
  builder: (y: Argv) => hostOptions(y).option("dry-run", { alias: "n", type: "boolean", describe: "check every object and show what would change" }) as unknown as Argv<Args>,
  handler: async (args) => {
    const host = new Host(args);
    // A booted host sees its physical root read-only at /sysroot: write
    // through a read-write remount of it in a private mount namespace.
    const ns = args["dry-run"] ? null : writableSysroot(host);
    if (ns !== null) return ns;
    const r = await seal(host, { dryRun: args["dry-run"] ?? false });
    for (const p of r.problems) process.stderr.write(`cfsboot: warning: ${p}\n`);
    writeStdout(formatSealReport(r));
    return r.corrupt.length > 0 ? 1 : 0;
  },
});
