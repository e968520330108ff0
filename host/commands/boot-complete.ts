// `cfsboot boot-complete [host options]`: run once early at boot by
// cfsboot-boot-complete.service. When the previous shutdown's finalize failed
// (state/finalize-failure.stamp), print
//   cfsboot-finalize-staged.service failed on previous boot: <message>
// move the stamp aside (so it is reported once; `status` keeps showing it
// until a finalize succeeds) and exit 1, so the unit fails visibly.
// Without a stamp: nothing, exit 0.

import type { Argv } from "yargs";

import { oneLineText } from "../../shared/errors.ts";
import { defineCommand } from "../cli.ts";
import { FINALIZE_UNIT, takeFailureStamp } from "../finalize.ts";
import { Host, type HostArgs, hostOptions, withLock, writableSysroot } from "../sysroot.ts";

export const bootCompleteCommand = defineCommand<HostArgs>({
  command: "boot-complete",
  describe: "report once a finalize that failed at the previous shutdown",
  builder: (y: Argv) => hostOptions(y) as unknown as Argv<HostArgs>,
  handler: async (args) => {
    const host = new Host(args);
    const status = writableSysroot(host);
    if (status !== null) return status;
    const msg = await withLock(host, async () => takeFailureStamp(host));
    if (msg === null) return 0;
    process.stderr.write(`${FINALIZE_UNIT} failed on previous boot: ${oneLineText(msg)}\n`);
    return 1;
  },
});
