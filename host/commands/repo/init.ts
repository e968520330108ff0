// `cfsboot repo [--repo DIR|--system|--user] init [PATH] [--algorithm fsverity-sha512-12|fsverity-sha256-12]
//      [--erofs=v1|dual] [--insecure] [--require-verity]`
//
// Writes meta.json byte for byte as composefs-rs does (repository.md §3):
// default sha512 with V1 images only (`v1_erofs` read-only-compatible flag);
// `dual` = V1 and V2 images ({"default": 2, "extra": [1]}, no flag). fs-verity
// is enabled on meta.json unless --insecure; where the filesystem lacks
// fs-verity the repository is created insecure and says so (an error with
// --require-verity). An existing repository: same settings (or options
// left out) = no change; another algorithm = error; V1-only or V2-only →
// dual adds the other format, keeping the default; dual → v1 is refused.
// A directory with objects/ but no meta.json (an old-format repository) gets
// a meta.json for V2 images (what such repositories hold).
//
// Output as `cfsctl init`:
//   Initialized composefs repository at <path>
//     algorithm: fsverity-sha512-12
//     verity:    required

import { resolve } from "node:path";
import type { Argv } from "yargs";

import { algName } from "../../../shared/fsverity.ts";
import { CfsError } from "../../../shared/errors.ts";
import { defineCommand } from "../../cli.ts";
import { Repository } from "../../repo.ts";
import { type RepoGlobalArgs, print, repoPath } from "./common.ts";

interface Args extends RepoGlobalArgs {
  path?: string;
  algorithm?: string;
  erofs?: string;
}

const ALGORITHMS = ["fsverity-sha512-12", "fsverity-sha256-12"] as const;
const EROFS = ["v1", "dual"] as const;

export const initCommand = defineCommand<Args>({
  command: "init [path]",
  describe: "create a repository (or check/upgrade an existing one)",
  builder: (y: Argv) =>
    y
      .positional("path", { type: "string", describe: "repository directory (default: the --repo/--system/--user location)" })
      .option("algorithm", { type: "string", describe: "fs-verity algorithm: fsverity-sha512-12 (default) or fsverity-sha256-12" })
      .option("erofs", { type: "string", describe: "EROFS images: v1 (default) or dual (V1 and V2)" }) as unknown as Argv<Args>,
  handler: async (args) => {
    if (args.algorithm !== undefined && !(ALGORITHMS as readonly string[]).includes(args.algorithm)) {
      throw new CfsError("--algorithm", `unknown algorithm "${args.algorithm}" (expected ${ALGORITHMS.join(" or ")})`);
    }
    if (args.erofs !== undefined && !(EROFS as readonly string[]).includes(args.erofs)) {
      throw new CfsError("--erofs", `unknown value "${args.erofs}" (expected v1 or dual)`);
    }
    const path = args.path !== undefined ? resolve(args.path) : repoPath(args);
    const r = Repository.init(path, {
      algorithm: args.algorithm as (typeof ALGORITHMS)[number] | undefined,
      erofs: args.erofs as (typeof EROFS)[number] | undefined,
      insecure: args.insecure,
      requireVerity: args["require-verity"],
    });
    try {
      let out: string;
      switch (r.outcome) {
        case "created":
          out = `Initialized composefs repository at ${path}\n  algorithm: ${algName(r.repo.alg)}\n`;
          out += r.verity
            ? "  verity:    required\n"
            : r.degraded
              ? "  verity:    not required (insecure: the filesystem does not support fs-verity)\n"
              : "  verity:    not required (insecure)\n";
          break;
        case "unchanged":
          out = `Repository already initialized at ${path}\n`;
          break;
        case "dual":
          out = `Repository at ${path} now generates V1 and V2 EROFS images\n`;
          break;
        case "upgraded":
          out = `Upgraded legacy repository at ${path}\n  algorithm: ${algName(r.repo.alg)}\n  verity:    ${r.verity ? "required" : "not required (insecure)"}\n`;
          break;
      }
      await print(out);
    } finally {
      r.repo.close();
    }
  },
});
