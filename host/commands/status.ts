// `cfsboot status [--format=humanreadable|yaml|json] [--json] [--format-version=0|1]
//      [--booted] [-v] [--sysroot DIR --booted-cmdline FILE --esp DIR --boot-dir DIR]`
//
// bootc's BootcHost document (status.md): canonical JSON with --json or
// --format=json, YAML with --format=yaml, human-readable on a terminal and
// YAML otherwise. Takes no lock and writes nothing; problems (an entry
// without origin, an unreadable entry) are warnings on stderr, the document
// is still printed. Only the document goes to stdout.

import type { Argv } from "yargs";

import { CfsError } from "../../shared/errors.ts";
import { filterToBooted, hostToHuman, hostToJson, hostToYaml } from "../../shared/status.ts";
import { writeStdout } from "../atomic.ts";
import { defineCommand } from "../cli.ts";
import { hostStatus } from "../deployments.ts";
import { exists } from "../fsops.ts";
import { Repository } from "../repo.ts";
import { Host, type HostArgs, hostOptions } from "../sysroot.ts";

interface Args extends HostArgs {
  format?: string;
  json?: boolean;
  "format-version"?: number;
  booted?: boolean;
  verbose?: boolean;
}

export const statusCommand = defineCommand<Args>({
  command: "status",
  describe: "show the deployments (bootc's host document)",
  builder: (y: Argv) =>
    hostOptions(y)
      .option("format", { type: "string", describe: "humanreadable, yaml or json (default: human-readable on a terminal, else YAML)" })
      .option("json", { type: "boolean", describe: "same as --format=json" })
      .option("format-version", { type: "number", describe: "document version (0 and 1 both mean v1)" })
      .option("booted", { type: "boolean", describe: "only the booted deployment" })
      .option("verbose", { alias: "v", type: "boolean", describe: "more detail in the human-readable output" }) as unknown as Argv<Args>,
  handler: async (args) => {
    let format = args.format ?? (args.json ? "json" : process.stdout.isTTY ? "humanreadable" : "yaml");
    if (format === "human-readable") format = "humanreadable";
    if (!["humanreadable", "yaml", "json"].includes(format)) throw new CfsError("--format", `unknown format "${format}" (expected humanreadable, yaml or json)`);
    const fv = args["format-version"];
    if (fv !== undefined && fv !== 0 && fv !== 1) throw new CfsError("--format-version", `unsupported format version ${fv} (expected 0 or 1)`);
    const host = new Host(args);
    let repo: Repository | null = null;
    if (exists(`${host.repoPath}/meta.json`)) {
      try {
        repo = Repository.open(host.repoPath);
      } catch (e) {
        if (!(e instanceof CfsError)) throw e;
        process.stderr.write(`cfsboot: warning: ${e.message}\n`);
      }
    }
    try {
      const r = await hostStatus(host, repo);
      for (const w of r.warnings) process.stderr.write(`cfsboot: warning: ${w}\n`);
      const doc = args.booted ? filterToBooted(r.host) : r.host;
      writeStdout(format === "json" ? hostToJson(doc) : format === "yaml" ? hostToYaml(doc) : hostToHuman(doc, { verbose: args.verbose ?? false }));
    } finally {
      repo?.close();
    }
  },
});
