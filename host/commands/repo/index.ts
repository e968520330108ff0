// The `cfsboot repo` subcommands, in the order `--help` lists them. Each
// lives in its own file here and uses ./common.ts for the global options;
// add a line per new subcommand.
import type { CommandModule } from "yargs";

import { computeIdCommand, createImageCommand } from "./create-image.ts";
import { dumpCommand } from "./dump.ts";
import { fsckCommand } from "./fsck.ts";
import { gcCommand } from "./gc.ts";
import { imagesCommand } from "./images.ts";
import { initCommand } from "./init.ts";
import { inspectCommand } from "./inspect.ts";
import { mountCommand } from "./mount.ts";
import { pullCommand } from "./pull.ts";
import { tagCommand, untagCommand } from "./tag.ts";

export const repoSubcommands: CommandModule[] = [
  initCommand,
  pullCommand,
  imagesCommand,
  inspectCommand,
  tagCommand,
  untagCommand,
  mountCommand,
  dumpCommand,
  createImageCommand,
  computeIdCommand,
  gcCommand,
  fsckCommand,
];
