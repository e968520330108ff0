// `cfsboot finalize-staged [--sysroot DIR --booted-cmdline FILE --esp DIR --boot-dir DIR]`
//
// Run at shutdown by cfsboot-finalize-staged.service (ExecStop=): carry the
// local /etc changes into the staged deployment and make it the default
// (host/finalize.ts). Nothing staged, or staged download-only → exit 0 and
// nothing changes. A conflict or any other failure → exit 1, the old
// default stays, the error is kept in state/finalize-failure.stamp.
// On a booted host the physical root is mounted read-only at /sysroot: the
// command re-executes itself in a private mount namespace and remounts it
// read-write there (the live /etc stays read-only: the unit's ReadOnlyPaths).

import type { Argv } from "yargs";

import { defineCommand } from "../cli.ts";
import { finalizeStaged } from "../finalize.ts";
import { Host, type HostArgs, hostOptions, writableSysroot } from "../sysroot.ts";

export const finalizeStagedCommand = defineCommand<HostArgs>({
  command: "finalize-staged",
  describe: "merge /etc into the staged deployment and make it the default (run at shutdown)",
  builder: (y: Argv) => hostOptions(y) as unknown as Argv<HostArgs>,
  handler: async (args) => {
    const host = new Host(args);
    const status = writableSysroot(host);
    if (status !== null) return status;
    await finalizeStaged(host);
    return 0;
  },
});
