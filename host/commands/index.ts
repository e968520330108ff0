// Every command of the CLI, in the order `--help` lists them.
import type { CommandModule } from "yargs";

export const commands: CommandModule[] = [];
