// `cfsboot install <to-filesystem|to-disk> …`: make a disk or a filesystem a
// composefs host. The subcommands live in host/commands/install/ (listed in
// install/index.ts); the work is in host/install.ts.

import type { Argv } from "yargs";

import { defineCommand } from "../cli.ts";
import { installSubcommands } from "./install/index.ts";

export const installCommand = defineCommand<unknown>({
  command: "install <command>",
  describe: "install an image as a composefs host (to-filesystem, to-disk)",
  builder: (y: Argv) => {
    let p = y;
    for (const c of installSubcommands) p = p.command(c);
    return p.demandCommand(1, "an install subcommand is required (see cfsboot install --help)") as unknown as Argv<unknown>;
  },
  handler: () => {},
});
