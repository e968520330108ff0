// `cfsboot repo tag DIGEST NAME` / `cfsboot repo untag NAME` (cfsctl oci tag/untag):
// a tag is `streams/refs/oci/<enc(NAME)>` → `../../oci-manifest-<DIGEST>`
// (repository.md §8.4), a GC root. Tagging needs the manifest stream to exist.

import type { Argv } from "yargs";

import { defineCommand } from "../../cli.ts";
import { normalizeManifestDigest } from "../../repo.ts";
import { type RepoGlobalArgs, print, withRepo } from "./common.ts";

interface TagArgs extends RepoGlobalArgs {
  digest: string;
  name: string;
}

export const tagCommand = defineCommand<TagArgs>({
  command: "tag <digest> <name>",
  describe: "tag a stored OCI manifest (sha256:…) with a name",
  builder: (y: Argv) =>
    y
      .positional("digest", { type: "string", describe: "manifest digest, sha256:<hex>" })
      .positional("name", { type: "string", describe: "tag name" }) as unknown as Argv<TagArgs>,
  handler: async (args) => {
    const digest = normalizeManifestDigest(String(args.digest));
    const name = String(args.name);
    await withRepo(args, { writable: true }, (repo) => repo.tag(name, digest));
    await print(`Tagged ${digest} as ${name}\n`);
  },
});

export const untagCommand = defineCommand<{ name: string } & RepoGlobalArgs>({
  command: "untag <name>",
  describe: "remove a tag",
  builder: (y: Argv) => y.positional("name", { type: "string", describe: "tag name" }) as unknown as Argv<{ name: string } & RepoGlobalArgs>,
  handler: async (args) => {
    const name = String(args.name);
    await withRepo(args, { writable: true }, (repo) => repo.untag(name));
    await print(`Removed tag ${name}\n`);
  },
});
