// `cfsboot install to-disk --source-imgref IMGREF [--karg K]…
//      [--composefs-insecure|--allow-missing-verity] [--erofs=v1|dual]
//      [--size SIZE] [--esp-size SIZE] [--wipe] [--method staging|mount]
//      [--disk-uuid U] [--esp-partuuid U] [--root-partuuid U] [--root-fs-uuid U]
//      [--esp-volume-id XXXXXXXX] [--bootloader systemd] DEVICE|FILE`
//
// A GPT disk (ESP with systemd-boot, ext4 root with -O verity) holding a
// composefs host that boots IMGREF (host/install-disk.ts). FILE is created
// (or replaced with --wipe) as a sparse raw image; DEVICE needs --wipe.
// Without --composefs-insecure the kernel must support fs-verity on ext4.

import type { Argv } from "yargs";

import { CfsError } from "../../../shared/errors.ts";
import { defineCommand } from "../../cli.ts";
import { normalizeImgref } from "../../deploy.ts";
import { espUuidOf } from "../../disk.ts";
import { type InstallArgs, installOptions, outLine, sourceFrom } from "../../hostcli.ts";
import { type DiskMethod, installToDisk } from "../../install-disk.ts";
import { reexecInMountNamespace } from "../../tools.ts";

interface Args extends InstallArgs {
  device: string;
  size?: string;
  "esp-size"?: string;
  wipe: boolean;
  method?: string;
  "disk-uuid"?: string;
  "esp-partuuid"?: string;
  "root-partuuid"?: string;
  "root-fs-uuid"?: string;
  "esp-volume-id"?: string;
}

/** `4G`, `512M`, `1.5G`, `1073741824` → bytes (binary units). */
export function parseSize(s: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]i?B?)?$/i.exec(s.trim());
  if (m === null) throw new CfsError(`${what} ${JSON.stringify(s)}`, "expected a size such as 4G, 512M or a number of bytes");
  const mult: Record<string, number> = { "": 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };
  const unit = (m[2] ?? "").toUpperCase().replace(/I?B$/, "");
  const n = Math.round(Number(m[1]) * mult[unit]!);
  if (!Number.isSafeInteger(n)) throw new CfsError(`${what} ${JSON.stringify(s)}`, "too large (at most 8 PiB)");
  return n;
}

export const toDiskCommand = defineCommand<Args>({
  command: "to-disk <device>",
  describe: "install an image to a whole disk or a raw disk image file (GPT, ESP, ext4 root)",
  builder: (y: Argv) =>
    installOptions(
      y
        .positional("device", { type: "string", describe: "block device or image file" })
        .option("size", { type: "string", describe: "size of a new image file (default: ESP + room for the installed tree)" })
        .option("esp-size", { type: "string", default: "512M", describe: "size of the EFI system partition" })
        .option("wipe", { type: "boolean", default: false, describe: "erase a device, or replace an existing image file" })
        .option("method", { type: "string", choices: ["staging", "mount"], describe: "staging (no mounts; default with --composefs-insecure) or mount (loop device; default otherwise)" })
        .option("disk-uuid", { type: "string", describe: "GPT disk GUID (default random)" })
        .option("esp-partuuid", { type: "string", describe: "ESP partition UUID (default random)" })
        .option("root-partuuid", { type: "string", describe: "root partition UUID (default random)" })
        .option("root-fs-uuid", { type: "string", describe: "ext4 UUID, used in root=UUID=… (default random)" })
        .option("esp-volume-id", { type: "string", describe: "FAT volume id, 8 hex digits (default random)" }),
      "systemd (the only one to-disk installs)",
    ) as unknown as Argv<Args>,
  handler: async (args) => {
    if (args.erofs !== "v1" && args.erofs !== "dual") throw new CfsError("--erofs", `unknown value "${args.erofs}" (expected v1 or dual)`);
    const insecure = !!(args["composefs-insecure"] || args["allow-missing-verity"]);
    const method = (args.method ?? (insecure ? "staging" : "mount")) as DiskMethod;
    if (method === "mount") {
      const status = reexecInMountNamespace();
      if (status !== null) return status;
    }
    const ids: Record<string, string> = {};
    if (args["disk-uuid"] !== undefined) ids.diskGuid = args["disk-uuid"];
    if (args["esp-partuuid"] !== undefined) ids.espPartUuid = args["esp-partuuid"];
    if (args["root-partuuid"] !== undefined) ids.rootPartUuid = args["root-partuuid"];
    if (args["root-fs-uuid"] !== undefined) ids.rootFsUuid = args["root-fs-uuid"];
    if (args["esp-volume-id"] !== undefined) ids.espVolumeId = args["esp-volume-id"];
    const r = await installToDisk({
      device: String(args.device),
      sourceImgref: normalizeImgref(String(args["source-imgref"])),
      bootloader: args.bootloader as "systemd",
      kargs: (args.karg === undefined ? [] : Array.isArray(args.karg) ? args.karg : [args.karg]).map(String),
      insecure,
      erofs: args.erofs,
      ...(args.size !== undefined ? { size: parseSize(args.size, "--size") } : {}),
      espSize: parseSize(args["esp-size"] ?? "512M", "--esp-size"),
      wipe: args.wipe,
      method,
      ids,
      source: sourceFrom(args),
      ...(process.stderr.isTTY ? { log: (l: string) => process.stderr.write(`${l}\n`) } : {}),
    });
    outLine(`Installed deployment ${r.id}`);
    outLine(`  Image: ${r.manifestDigest}`);
    outLine(`  Disk: ${r.device} (${Math.round(r.layout.size / 1048576)} MiB, GPT ${r.ids.diskGuid})`);
    outLine(`  ESP: offset ${r.layout.espOffset}, ${r.layout.espSize / 1048576} MiB, PARTUUID=${r.ids.espPartUuid}, UUID=${espUuidOf(r.ids.espVolumeId)}`);
    outLine(`  Root: offset ${r.layout.rootOffset}, ${r.layout.rootSize / 1048576} MiB, PARTUUID=${r.ids.rootPartUuid}, UUID=${r.ids.rootFsUuid}`);
    outLine(`  Boot entry: ${r.entryFile.replace(/^.*\/esp\//, "/")}`);
  },
});
