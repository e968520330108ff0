// `cfsboot container CMD …`: tools for building bootable container images
// (bootc's `container` group): compute-composefs-digest and ukify. The
// subcommands live in host/commands/container/ (one file each).

import type { Argv } from "yargs";

import { defineCommand } from "../cli.ts";
import { computeDigestCommand } from "./container/compute-composefs-digest.ts";
import { ukifyCommand } from "./container/ukify.ts";

export const containerCommand = defineCommand<unknown>({
  command: "container <command>",
  describe: "build-time helpers for bootable images (compute-composefs-digest, ukify)",
  builder: (y: Argv) =>
    y
      .command(computeDigestCommand)
      .command(ukifyCommand)
      .demandCommand(1, "a container subcommand is required (see cfsboot container --help)") as unknown as Argv<unknown>,
  handler: () => {},
});
