// Every command of the CLI, in the order `--help` lists them.
//
// An entry gives the command's words (its name and aliases, as in the
// module's `command`) and loads its module on demand: a run loads only the
// command it runs, with its imports (host/cli.ts). One line per command:
//     { names: ["name", "alias"], load: async () => (await import("./name.ts")).nameCommand },
// test/host/cli-commands.test.ts checks the names against the modules.
import type { CommandModule } from "yargs";

export interface CommandEntry {
  /** The words that select the command (first word of each `command` form). */
  names: readonly string[];
  load: () => Promise<CommandModule>;
}

export const commands: CommandEntry[] = [
  { names: ["fsverity"], load: async () => (await import("./fsverity.ts")).fsverityCommand },
  { names: ["mkcomposefs"], load: async () => (await import("./mkcomposefs.ts")).mkcomposefsCommand },
  { names: ["composefs-info"], load: async () => (await import("./composefs-info.ts")).composefsInfoCommand },
  { names: ["mount.composefs"], load: async () => (await import("./mount-composefs.ts")).mountComposefsCommand },
  { names: ["repo"], load: async () => (await import("./repo.ts")).repoCommand },
  { names: ["install"], load: async () => (await import("./install.ts")).installCommand },
  { names: ["status"], load: async () => (await import("./status.ts")).statusCommand },
  { names: ["upgrade", "update"], load: async () => (await import("./upgrade.ts")).upgradeCommand },
  { names: ["switch"], load: async () => (await import("./switch.ts")).switchCommand },
  { names: ["rollback"], load: async () => (await import("./rollback.ts")).rollbackCommand },
  { names: ["gc"], load: async () => (await import("./gc.ts")).gcCommand },
  { names: ["seal"], load: async () => (await import("./seal.ts")).sealCommand },
  { names: ["finalize-staged"], load: async () => (await import("./finalize-staged.ts")).finalizeStagedCommand },
  { names: ["config-diff"], load: async () => (await import("./config-diff.ts")).configDiffCommand },
  { names: ["boot-complete"], load: async () => (await import("./boot-complete.ts")).bootCompleteCommand },
  { names: ["container"], load: async () => (await import("./container.ts")).containerCommand },
];
