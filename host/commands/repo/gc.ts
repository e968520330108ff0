// `cfsboot repo gc [-n] [-r ROOT]…` (cfsctl gc): remove every object no ref
// reaches (repository.md §10). With -n nothing is removed; the objects,
// links and stale temporaries that would go are listed.

import type { Argv } from "yargs";

import { defineCommand } from "../../cli.ts";
import { formatGcReport } from "../../repo-gc.ts";
import { type RepoGlobalArgs, print, withRepo } from "./common.ts";

interface Args extends RepoGlobalArgs {
  "dry-run": boolean;
  root?: string[];
}

export const gcCommand = defineCommand<Args>({
  command: "gc",
  describe: "remove unreferenced objects, streams and images",
  builder: (y: Argv) =>
    y
      .option("dry-run", { alias: "n", type: "boolean", default: false, describe: "list what would be removed, remove nothing" })
      .option("root", { alias: "r", type: "string", array: true, describe: "extra root: an images/ or streams/ entry name (repeatable)" }) as unknown as Argv<Args>,
  handler: async (args) => {
    const dryRun = args["dry-run"];
    const report = await withRepo(args, { writable: !dryRun }, (repo) =>
      repo.gc({ dryRun, extraRoots: (args.root ?? []).map(String) }),
    );
    await print(formatGcReport(report));
  },
});
