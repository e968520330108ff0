// `cfsboot upgrade [--check] [--apply] [--download-only] [host options] [registry options]`
//
// Fetch the booted image's reference again (or a staged switch's): same
// image → "No changes in: <ref>"; --check prints what would change and how
// many bytes a pull would download (manifest and config only); otherwise
// pull and stage (host/stage.ts), start cfsboot-finalize-staged.service (not
// on a host in a directory), and with --apply reboot.

import type { Argv } from "yargs";

import { defineCommand } from "../cli.ts";
import { type SourceArgs, outLine, sourceFrom, sourceOptions } from "../hostcli.ts";
import { upgradeOrSwitch } from "../stage.ts";
import { Host, type HostArgs, hostOptions, writableSysroot } from "../sysroot.ts";

interface Args extends HostArgs, SourceArgs {
  check?: boolean;
  apply?: boolean;
  "download-only"?: boolean;
}

export const upgradeCommand = defineCommand<Args>({
  command: ["upgrade", "update"],
  describe: "stage the newest version of the booted image for the next boot",
  builder: (y: Argv) =>
    sourceOptions(hostOptions(y))
      .option("check", { type: "boolean", describe: "only check: fetch manifest and config, print what would change" })
      .option("apply", { type: "boolean", describe: "reboot after staging" })
      .option("download-only", { type: "boolean", describe: "stage, but do not apply at shutdown (finalization locked)" })
      .conflicts("check", "apply") as unknown as Argv<Args>,
  handler: async (args) => {
    const host = new Host(args);
    const ns = args.check ? null : writableSysroot(host);
    if (ns !== null) return ns;
    return upgradeOrSwitch(host, { mode: "upgrade", check: args.check ?? false, apply: args.apply ?? false, downloadOnly: args["download-only"] ?? false, source: sourceFrom(args), out: outLine });
  },
});
