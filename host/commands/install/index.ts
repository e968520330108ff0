// The `cfsboot install` subcommands, in the order `--help` lists them (one
// file each here; add a line per new subcommand).
import type { CommandModule } from "yargs";

import { toFilesystemCommand } from "./to-filesystem.ts";
import { toDiskCommand } from "./to-disk.ts";

export const installSubcommands: CommandModule[] = [
  toFilesystemCommand,
  toDiskCommand,
];
