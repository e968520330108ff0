// `cfsboot container ukify [--rootfs DIR] [--format=1|2]
// [--allow-missing-verity|--composefs-insecure] [--karg K]… [--kernel-dir D]
// [--write-dumpfile-to F] [--uki-builder auto|ukify|objcopy] [--stub FILE]
// [--no-v2-compat-karg] -- --output UKI [UKIFY_ARGS…]` (bootc `container
// ukify`): a UKI whose .cmdline names the rootfs's own boot image
// (host/ukify.ts). Uses `ukify build` where installed, otherwise objcopy with
// the systemd stub (the rootfs's, else the host's); UKIFY_ARGS other than
// --output need ukify.

import type { Argv } from "yargs";

import { parseXattrFiltering } from "../../../shared/transform.ts";
import { defineCommand } from "../../cli.ts";
import { parseFormat } from "../../composefs-digest.ts";
import { buildSealedUki } from "../../ukify.ts";

interface Args {
  rootfs: string;
  format: string;
  "allow-missing-verity": boolean;
  karg?: string[];
  "kernel-dir"?: string;
  "write-dumpfile-to"?: string;
  "uki-builder": "auto" | "ukify" | "objcopy";
  stub?: string;
  "v2-compat-karg": boolean;
  xattrs: string;
  "--"?: string[];
  _: (string | number)[];
}

export const ukifyCommand = defineCommand<Args>({
  command: "ukify",
  describe: "build a sealed UKI for a container root (-- --output FILE [ukify args])",
  builder: (y: Argv) =>
    y
      .parserConfiguration({ "populate--": true })
      .option("rootfs", { type: "string", default: "/target", describe: "the container root" })
      .option("format", { type: "string", default: "1", choices: ["1", "2"], describe: "EROFS format the karg names: 1 (composefs.digest=v1-…) or 2 (composefs=)" })
      .option("allow-missing-verity", { alias: "composefs-insecure", type: "boolean", default: false, describe: "insecure karg (composefs…=?…): fs-verity not required" })
      .option("karg", { type: "string", array: true, describe: "extra kernel argument (repeatable)" })
      .option("kernel-dir", { type: "string", describe: "directory <kver> holding vmlinuz and initramfs.img (default: the rootfs's usr/lib/modules/<kver>)" })
      .option("write-dumpfile-to", { type: "string", describe: "also write the dumpfile of the boot tree to FILE" })
      .option("uki-builder", { type: "string", default: "auto", choices: ["auto", "ukify", "objcopy"], describe: "ukify, objcopy + systemd stub, or ukify when installed" })
      .option("stub", { type: "string", describe: "systemd stub (default: the rootfs's, then the host's linux<arch>.efi.stub)" })
      .option("v2-compat-karg", { type: "boolean", default: true, describe: "format 1: also write composefs=<V2 id> for tools that only know composefs=" })
      .option("xattrs", { type: "string", default: "allowlist-only", describe: "xattr filtering: allowlist-only or keep-user-xattrs" }) as unknown as Argv<Args>,
  handler: async (args) => {
    const ukifyArgs = (args["--"] ?? []).map(String);
    await buildSealedUki({
      rootfs: String(args.rootfs),
      format: parseFormat(args.format),
      insecure: args["allow-missing-verity"],
      kargs: (args.karg ?? []).map(String),
      ...(args["kernel-dir"] !== undefined ? { kernelDir: args["kernel-dir"] } : {}),
      ...(args["write-dumpfile-to"] !== undefined ? { dumpfile: args["write-dumpfile-to"] } : {}),
      builder: args["uki-builder"],
      ...(args.stub !== undefined ? { stub: args.stub } : {}),
      ukifyArgs,
      v2CompatKarg: args["v2-compat-karg"],
      xattrs: parseXattrFiltering(args.xattrs),
    });
  },
});
