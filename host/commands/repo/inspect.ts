// `cfsboot repo inspect IMG [--manifest|--config]` (cfsctl oci inspect):
// without flags one JSON object {manifest, config, referrers,
// composefs_erofs, composefs_boot_erofs}; --manifest / --config print the
// stored JSON exactly as pulled (plus a newline). IMG: a tag or @sha256:….

import type { Argv } from "yargs";

import { CfsError } from "../../../shared/errors.ts";
import { defineCommand } from "../../cli.ts";
import { inspectImage } from "../../pull.ts";
import { type RepoGlobalArgs, print, withRepo } from "./common.ts";

interface Args extends RepoGlobalArgs {
  image: string;
  manifest: boolean;
  config: boolean;
}

export const inspectCommand = defineCommand<Args>({
  command: "inspect <image>",
  describe: "show an OCI image's manifest, config and EROFS ids",
  builder: (y: Argv) =>
    y
      .positional("image", { type: "string", describe: "tag or @sha256:<manifest digest>" })
      .option("manifest", { type: "boolean", default: false, describe: "only the raw manifest JSON" })
      .option("config", { type: "boolean", default: false, describe: "only the raw config JSON" }) as unknown as Argv<Args>,
  handler: async (args) => {
    if (args.manifest && args.config) throw new CfsError("usage", "--manifest and --config are mutually exclusive");
    const out = await withRepo(args, {}, async (repo) => {
      if (!args.manifest && !args.config) return inspectImage(repo, String(args.image));
      const img = await repo.openOciImage(String(args.image));
      const bytes = args.manifest ? img.manifest : img.config!;
      return Buffer.concat([bytes, Buffer.from("\n")]);
    });
    if (typeof out === "string") await print(out);
    else await new Promise<void>((resolve, reject) => process.stdout.write(out, (e) => (e ? reject(e) : resolve())));
  },
});
