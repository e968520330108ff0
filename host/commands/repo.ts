// `cfsboot repo [--repo DIR | --system | --user] [--insecure] [--require-verity] CMD …`:
// the composefs repository (host/repo.ts). The subcommands live in
// host/commands/repo/ (one file each, listed in repo/index.ts); the global
// options and opening the repository are in repo/common.ts.

import type { Argv } from "yargs";

import { defineCommand } from "../cli.ts";
import { repoGlobalOptions } from "./repo/common.ts";
import { repoSubcommands } from "./repo/index.ts";

export const repoCommand = defineCommand<unknown>({
  command: "repo <command>",
  describe: "manage a composefs repository (init, pull, images, mount, gc, fsck, …)",
  builder: (y: Argv) => {
    let p = repoGlobalOptions(y);
    for (const c of repoSubcommands) p = p.command(c);
    return p.demandCommand(1, "a repo subcommand is required (see cfsboot repo --help)") as unknown as Argv<unknown>;
  },
  handler: () => {},
});
