// `cfsboot gc [--dry-run] [host options]`: remove boot binaries, state
// directories, stale staged state, leftovers, `localhost/bootc-*` tags and
// repository objects no boot entry reaches (host/hostgc.ts); legacy
// unprefixed boot artifacts are migrated first. Problems are reported on
// stderr, not fatal.

import type { Argv } from "yargs";

import { defineCommand } from "../cli.ts";
import { writeStdout } from "../atomic.ts";
import { formatHostGcReport, hostGc, migratePrefixesQuietly } from "../hostgc.ts";
import { Repository } from "../repo.ts";
import { exists } from "../fsops.ts";
import { Host, type HostArgs, hostOptions, withLock, writableSysroot } from "../sysroot.ts";

interface Args extends HostArgs {
  "dry-run"?: boolean;
}

export const gcCommand = defineCommand<Args>({
  command: "gc",
  describe: "remove what no boot entry needs any more (boot binaries, state, repository objects)",
  builder: (y: Argv) => hostOptions(y).option("dry-run", { alias: "n", type: "boolean", describe: "only show what would be removed" }) as unknown as Argv<Args>,
  handler: async (args) => {
    const host = new Host(args);
    const ns = args["dry-run"] ? null : writableSysroot(host);
    if (ns !== null) return ns;
    await withLock(host, async () => {
      if (!args["dry-run"]) migratePrefixesQuietly(host);
      const repo = exists(`${host.repoPath}/meta.json`) ? Repository.open(host.repoPath, { writable: !args["dry-run"] }) : null;
      try {
        const r = await hostGc(host, repo, { dryRun: args["dry-run"] ?? false, prune: true });
        for (const p of r.problems) process.stderr.write(`cfsboot: warning: ${p}\n`);
        writeStdout(formatHostGcReport(r));
      } finally {
        repo?.close();
      }
    });
  },
});
