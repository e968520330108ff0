// `cfsboot switch IMGREF [--transport registry|oci|oci-archive|containers-storage]
//      [--apply] [host options] [registry options]`
//
// As upgrade, for another image: the same reference as the current one →
// "Image specification is unchanged."; an image whose boot image (fs-verity
// digest) equals an existing deployment's is refused naming it.

import type { Argv } from "yargs";

import { defineCommand } from "../cli.ts";
import { normalizeImgref } from "../deploy.ts";
import { type SourceArgs, outLine, sourceFrom, sourceOptions } from "../hostcli.ts";
import { upgradeOrSwitch } from "../stage.ts";
import { Host, type HostArgs, hostOptions, writableSysroot } from "../sysroot.ts";

interface Args extends HostArgs, SourceArgs {
  imgref: string;
  transport?: string;
  apply?: boolean;
}

export const switchCommand = defineCommand<Args>({
  command: "switch <imgref>",
  describe: "stage another image for the next boot",
  builder: (y: Argv) =>
    sourceOptions(hostOptions(y))
      .positional("imgref", { type: "string", describe: "image reference (docker://…, oci:…, or a registry name)" })
      .option("transport", { type: "string", describe: "transport of a reference without one (default registry)" })
      .option("apply", { type: "boolean", describe: "reboot after staging" }) as unknown as Argv<Args>,
  handler: async (args) => {
    const host = new Host(args);
    const ns = writableSysroot(host);
    if (ns !== null) return ns;
    return upgradeOrSwitch(host, { mode: "switch", target: normalizeImgref(String(args.imgref), args.transport), apply: args.apply ?? false, source: sourceFrom(args), out: outLine });
  },
});
