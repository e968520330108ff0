// `cfsboot repo dump IMG [--bootable]` (cfsctl oci dump): the dumpfile of an
// OCI image's tree (layers merged, OCI transform; boot transform with
// --bootable), composefs-rs style (shared/dumpfile.ts writeDumpfile). IMG may
// also name an EROFS image of the repository (its hex id, or `refs/NAME` as
// `create-image` names them): then the tree is read back from that image,
// after its fs-verity digest was checked against its name.

import type { Argv } from "yargs";

import { writeDumpfileChunks } from "../../../shared/dumpfile.ts";
import { defineCommand } from "../../cli.ts";
import { writeStdout } from "../../atomic.ts";
import { readImage } from "../../../shared/erofs/reader.ts";
import { CfsError } from "../../../shared/errors.ts";
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
      .positional("image", { type: "string", describe: "tag or @sha256:<manifest digest>, or an EROFS image: its id or refs/NAME" })
      .option("bootable", { type: "boolean", default: false, describe: "the boot variant's tree" }) as unknown as Argv<Args>,
  handler: async (args) => {
    const img = String(args.image);
    const chunks = await withRepo(args, {}, async (repo) => {
      if (img.startsWith("refs/") || repo.parseHexDigest(img) !== null) {
        if (args.bootable) throw new CfsError("--bootable", "only applies to OCI images (a tag or @sha256:…)");
        const id = repo.resolveImageName(img);
        return writeDumpfileChunks(readImage(repo.openImage(id), { name: `images/${id}`, algorithm: repo.alg }).root);
      }
      return writeDumpfileChunks((await imageTree(repo, img, { bootable: args.bootable })).tree);
    });
    for (const c of chunks) writeStdout(c);
  },
});
