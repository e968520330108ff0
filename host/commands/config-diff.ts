// `cfsboot config-diff [host options]`: what the administrator changed in the
// booted deployment's /etc against its image's defaults, as bootc prints it
// (`Added "p"`, `Modified "p"`, `Removed "p"`, paths relative to /etc;
// coloured on a terminal). Reads only; a new directory is listed with its
// content, a removed one once. Ignored special files are reported on stderr.

import type { Argv } from "yargs";

import { formatReport } from "../../shared/etcmerge.ts";
import { writeStdout } from "../atomic.ts";
import { defineCommand } from "../cli.ts";
import { bootedConfigDiff, formatConfigDiff } from "../finalize.ts";
import { Host, type HostArgs, hostOptions } from "../sysroot.ts";

export const configDiffCommand = defineCommand<HostArgs>({
  command: "config-diff",
  describe: "show the local changes of /etc against the booted image's defaults",
  builder: (y: Argv) => hostOptions(y) as unknown as Argv<HostArgs>,
  handler: async (args) => {
    const host = new Host(args);
    const { diff, inputs } = bootedConfigDiff(host);
    for (const s of inputs.C.specials) process.stderr.write(`${formatReport({ path: s.path, code: "ignored-special", detail: `ignored special file (${s.type})` })}\n`);
    writeStdout(formatConfigDiff(diff, process.stdout.isTTY === true));
  },
});
