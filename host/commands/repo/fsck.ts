// `cfsboot repo fsck [--json] [--metadata-only]` (cfsctl fsck): re-verify
// every object (kernel fs-verity where present, userspace digests otherwise),
// stream, image, meta.json and link (repository.md §11). Text mode ends with
// an error (exit 1) when anything is wrong; JSON mode prints the report and
// exits 0 (as cfsctl).

import type { Argv } from "yargs";

import { CfsError } from "../../../shared/errors.ts";
import { defineCommand } from "../../cli.ts";
import { formatFsckJson, formatFsckText, fsckOk } from "../../repo-fsck.ts";
import { type RepoGlobalArgs, print, withRepo } from "./common.ts";

interface Args extends RepoGlobalArgs {
  json: boolean;
  "metadata-only": boolean;
}

export const fsckCommand = defineCommand<Args>({
  command: "fsck",
  describe: "check the repository's integrity",
  builder: (y: Argv) =>
    y
      .option("json", { type: "boolean", default: false, describe: "print the report as JSON (exit 0 even when not ok)" })
      .option("metadata-only", { type: "boolean", default: false, describe: "skip re-hashing the objects" }) as unknown as Argv<Args>,
  handler: async (args) => {
    const { report, path } = await withRepo(args, {}, async (repo) => ({ report: await repo.fsck({ metadataOnly: args["metadata-only"] }), path: repo.path }));
    if (args.json) {
      await print(formatFsckJson(report));
      return;
    }
    await print(formatFsckText(report));
    if (!fsckOk(report)) throw new CfsError(path, "repository integrity check failed");
  },
});
