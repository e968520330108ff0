// `cfsboot rollback [host options]`: the rollback deployment becomes the next
// boot; run again, the queued rollback is reverted (host/rollback.ts).

import type { Argv } from "yargs";

import { defineCommand } from "../cli.ts";
import { outLine } from "../hostcli.ts";
import { rollback } from "../rollback.ts";
import { Host, type HostArgs, hostOptions, writableSysroot } from "../sysroot.ts";

export const rollbackCommand = defineCommand<HostArgs>({
  command: "rollback",
  describe: "boot the rollback deployment next (again: undo)",
  builder: (y: Argv) => hostOptions(y) as unknown as Argv<HostArgs>,
  handler: async (args) => {
    const host = new Host(args);
    const ns = writableSysroot(host);
    if (ns !== null) return ns;
    return rollback(host, outLine);
  },
});
