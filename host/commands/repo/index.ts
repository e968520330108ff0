// The `cfsboot repo` subcommands, in the order `--help` lists them. Each
// lives in its own file here and uses ./common.ts for the global options;
// add a line per new subcommand.
import type { CommandModule } from "yargs";

import { computeIdCommand, createImageCommand } from "./create-image.ts";
import { fsckCommand } from "./fsck.ts";
import { gcCommand } from "./gc.ts";
import { imagesCommand } from "./images.ts";
import { initCommand } from "./init.ts";
import { mountCommand } from "./mount.ts";
import { tagCommand, untagCommand } from "./tag.ts";

export const repoSubcommands: CommandModule[] = [
  initCommand,
  imagesCommand,
  tagCommand,
  untagCommand,
  mountCommand,
  createImageCommand,
  computeIdCommand,
  gcCommand,
  fsckCommand,
];
