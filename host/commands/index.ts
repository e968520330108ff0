// Every command of the CLI, in the order `--help` lists them.
import type { CommandModule } from "yargs";
import { fsverityCommand } from "./fsverity.ts";
import { mkcomposefsCommand } from "./mkcomposefs.ts";
import { composefsInfoCommand } from "./composefs-info.ts";
import { mountComposefsCommand } from "./mount-composefs.ts";
import { repoCommand } from "./repo.ts";
import { installCommand } from "./install.ts";
import { statusCommand } from "./status.ts";
import { upgradeCommand } from "./upgrade.ts";
import { switchCommand } from "./switch.ts";
import { rollbackCommand } from "./rollback.ts";
import { gcCommand } from "./gc.ts";
import { containerCommand } from "./container.ts";
import { sealCommand } from "./seal.ts";
import { finalizeStagedCommand } from "./finalize-staged.ts";
import { configDiffCommand } from "./config-diff.ts";
import { bootCompleteCommand } from "./boot-complete.ts";

export const commands: CommandModule[] = [
  fsverityCommand,
  mkcomposefsCommand,
  composefsInfoCommand,
  mountComposefsCommand,
  repoCommand,
  installCommand,
  statusCommand,
  upgradeCommand,
  switchCommand,
  rollbackCommand,
  gcCommand,
  sealCommand,
  finalizeStagedCommand,
  configDiffCommand,
  bootCompleteCommand,
  containerCommand,
];
