// `cfsboot repo dump IMG [--bootable]` (cfsctl oci dump): the dumpfile of an
// OCI image's tree (layers merged, OCI transform; boot transform with
// --bootable), composefs-rs style (shared/dumpfile.ts writeDumpfile).

import type { Argv } from "yargs";

import { writeDumpfileChunks } from "../../../shared/dumpfile.ts";
import { defineCommand } from "../../cli.ts";
import { writeStdout } from "../../atomic.ts";
import { imageTree } from "../../pull.ts";
import { type RepoGlobalArgs, withRepo } from "./common.ts";

interface Args extends RepoGlobalArgs {
  image: string;
  bootable: boolean;
}

export const dumpCommand = defineCommand<Args>({
  command: "dump <image>",
  describe: "print the dumpfile of an OCI image's filesystem tree",
  builder: (y: Argv) =>
    y
      .positional("image", { type: "string", describe: "tag or @sha256:<manifest digest>" })
      .option("bootable", { type: "boolean", default: false, describe: "the boot variant's tree" }) as unknown as Argv<Args>,
  handler: async (args) => {
    const chunks = await withRepo(args, {}, async (repo) => writeDumpfileChunks((await imageTree(repo, String(args.image), { bootable: args.bootable })).tree));
    for (const c of chunks) writeStdout(c);
  },
});
