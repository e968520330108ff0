// `cfsboot repo mount IMG MOUNTPOINT [--bootable]`: mount an image read-only
// (EROFS + overlayfs over objects/, metacopy=on, redirect_dir=on,
// verity=require when the repository is secure; host/repo-mount.ts).
//
// IMG: an image id (hex digest, always measured), `refs/NAME` (a named
// EROFS image), or an OCI image: a tag or `@sha256:<manifest digest>`, whose
// EROFS in the repository's default format is the config's
// `composefs.image[.v1]` reference (`composefs.image.boot[.v1]` with --bootable).

import type { Argv } from "yargs";

import { CfsError } from "../../../shared/errors.ts";
import { defineCommand } from "../../cli.ts";
import type { Repository } from "../../repo.ts";
import { mountImage } from "../../repo-mount.ts";
import { type RepoGlobalArgs, withRepo } from "./common.ts";

interface Args extends RepoGlobalArgs {
  image: string;
  mountpoint: string;
  bootable: boolean;
}

/** The image id (hex) or `refs/NAME` an IMG argument names. */
export async function resolveImageArg(repo: Repository, img: string, bootable: boolean): Promise<string> {
  if (img.startsWith("refs/")) {
    if (bootable) throw new CfsError("--bootable", "only applies to OCI images (a tag or @sha256:…)");
    return img;
  }
  if (repo.parseHexDigest(img) !== null) {
    if (bootable) throw new CfsError("--bootable", "only applies to OCI images (a tag or @sha256:…)");
    return img;
  }
  return repo.ociImageId(await repo.openOciImage(img), bootable);
}

export const mountCommand = defineCommand<Args>({
  command: "mount <image> <mountpoint>",
  describe: "mount an image read-only (image id, refs/NAME, a tag or @sha256:…)",
  builder: (y: Argv) =>
    y
      .positional("image", { type: "string", describe: "image id, refs/NAME, tag or @sha256:<manifest digest>" })
      .positional("mountpoint", { type: "string", describe: "directory to mount on" })
      .option("bootable", { type: "boolean", default: false, describe: "the OCI image's boot variant" }) as unknown as Argv<Args>,
  handler: async (args) => {
    await withRepo(args, {}, async (repo) => {
      const name = await resolveImageArg(repo, String(args.image), args.bootable);
      mountImage(repo, name, String(args.mountpoint));
    });
  },
});
