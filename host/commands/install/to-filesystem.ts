// `cfsboot install to-filesystem --source-imgref IMGREF [--bootloader systemd|grub|none]
//      [--karg K]… [--composefs-insecure|--allow-missing-verity] [--erofs=v1|dual]
//      [--esp DIR] [--boot-dir DIR] [--root-mount-spec SPEC] TARGET`
//
// TARGET is the physical root (a mounted filesystem, or any directory for a
// host in a directory). See host/install.ts for the steps. Prints the
// deployment id and the entry written.

import { resolve } from "node:path";
import type { Argv } from "yargs";

import { CfsError } from "../../../shared/errors.ts";
import { defineCommand } from "../../cli.ts";
import { normalizeImgref } from "../../deploy.ts";
import { type InstallArgs, installOptions, outLine, sourceFrom } from "../../hostcli.ts";
import { installToFilesystem } from "../../install.ts";

interface Args extends InstallArgs {
  target: string;
  esp?: string;
  "boot-dir"?: string;
  "root-mount-spec"?: string;
  sysroot?: string;
  "booted-cmdline"?: string;
}

export const toFilesystemCommand = defineCommand<Args>({
  command: "to-filesystem <target>",
  describe: "install an image into an existing root filesystem (or a directory)",
  builder: (y: Argv) =>
    installOptions(
      y
        .positional("target", { type: "string", describe: "the physical root to install to" })
        .option("esp", { type: "string", describe: "the EFI system partition directory (default TARGET/boot/efi)" })
        .option("boot-dir", { type: "string", describe: "boot directory for GRUB (default TARGET/boot)" })
        .option("root-mount-spec", { type: "string", describe: 'root= value (default: UUID of TARGET when it is a mount; "" for none)' })
        .option("sysroot", { type: "string", describe: "the same as TARGET (accepted as every host command takes it; must not differ)" })
        .option("booted-cmdline", { type: "string", describe: "accepted as every host command takes it (unused: nothing is booted yet)" }),
      "systemd (systemd-boot on the ESP), grub (entries in the boot directory) or none",
    ) as unknown as Argv<Args>,
  handler: async (args) => {
    if (args.sysroot !== undefined && resolve(args.sysroot) !== resolve(String(args.target))) {
      throw new CfsError(`--sysroot ${args.sysroot}`, `differs from TARGET ${String(args.target)} (install writes to TARGET)`);
    }
    const bl = args.bootloader;
    if (bl !== "systemd" && bl !== "grub" && bl !== "none") throw new CfsError("--bootloader", `unknown boot loader "${bl}" (expected systemd, grub or none)`);
    if (args.erofs !== "v1" && args.erofs !== "dual") throw new CfsError("--erofs", `unknown value "${args.erofs}" (expected v1 or dual)`);
    const r = await installToFilesystem({
      target: String(args.target),
      sourceImgref: normalizeImgref(String(args["source-imgref"])),
      bootloader: bl,
      kargs: (args.karg === undefined ? [] : Array.isArray(args.karg) ? args.karg : [args.karg]).map(String),
      insecure: !!(args["composefs-insecure"] || args["allow-missing-verity"]),
      erofs: args.erofs,
      ...(args.esp !== undefined ? { esp: args.esp } : {}),
      ...(args["boot-dir"] !== undefined ? { bootDir: args["boot-dir"] } : {}),
      ...(args["root-mount-spec"] !== undefined ? { rootMountSpec: args["root-mount-spec"] } : {}),
      source: sourceFrom(args),
      ...(process.stderr.isTTY ? { log: (l: string) => process.stderr.write(`${l}\n`) } : {}),
    });
    outLine(`Installed deployment ${r.id}`);
    outLine(`  Image: ${r.manifestDigest}`);
    outLine(`  Boot entry: ${r.entryFile}`);
  },
});
