// Every command of the CLI, in the order `--help` lists them.
import type { CommandModule } from "yargs";
import { fsverityCommand } from "./fsverity.ts";
import { mkcomposefsCommand } from "./mkcomposefs.ts";
import { composefsInfoCommand } from "./composefs-info.ts";
import { repoCommand } from "./repo.ts";
import { containerCommand } from "./container.ts";

export const commands: CommandModule[] = [
  fsverityCommand,
  mkcomposefsCommand,
  composefsInfoCommand,
  repoCommand,
  containerCommand,
];
