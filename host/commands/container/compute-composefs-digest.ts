// `cfsboot container compute-composefs-digest [--format=1|2]
// [--write-dumpfile-to FILE] [--xattrs MODE] [DIR|IMGREF]` (bootc
// `container compute-composefs-digest`): print the 128-hex deployment id
// (SHA-512 fs-verity digest of the boot EROFS) of a mounted container root
// (default /target; `/` is refused) or of an image reference (docker://,
// oci:, oci-archive:, containers-storage:), pulled into a temporary
// repository. --format=1 (default): V1 EROFS, the image
// `composefs.digest=v1-sha512-12:<hex>` names; --format=2: V2, `composefs=<hex>`.

import type { Argv } from "yargs";

import { parseXattrFiltering } from "../../../shared/transform.ts";
import { defineCommand } from "../../cli.ts";
import { computeComposefsDigest, parseFormat } from "../../composefs-digest.ts";
import type { SourceOptions } from "../../pull.ts";
import { parseCreds } from "../repo/pull.ts";
import { print } from "../repo/common.ts";

interface Args {
  target: string;
  format: string;
  "write-dumpfile-to"?: string;
  xattrs: string;
  authfile?: string;
  "cert-dir"?: string;
  "tls-verify": boolean;
  creds?: string;
}

/** Registry options shared by commands that take an image reference. */
export function sourceOptions(y: Argv): Argv {
  return y
    .option("authfile", { type: "string", describe: "containers auth.json for the registry" })
    .option("cert-dir", { type: "string", describe: "directory of CA certificates (*.crt) and client certificate (*.cert/*.key)" })
    .option("tls-verify", { type: "boolean", default: true, describe: "verify the registry's TLS certificate" })
    .option("creds", { type: "string", describe: "USER:PASSWORD for the registry" });
}

export function sourceOptionsFrom(args: { authfile?: string; "cert-dir"?: string; "tls-verify"?: boolean; creds?: string }): SourceOptions {
  const o: SourceOptions = {};
  if (args["tls-verify"] !== undefined) o.tlsVerify = args["tls-verify"];
  if (args.authfile !== undefined) o.authFile = args.authfile;
  if (args["cert-dir"] !== undefined) o.certDir = args["cert-dir"];
  if (args.creds !== undefined) o.credentials = parseCreds(args.creds);
  return o;
}

export const computeDigestCommand = defineCommand<Args>({
  command: "compute-composefs-digest [target]",
  describe: "print the composefs deployment id (boot image digest) of a directory or an image",
  builder: (y: Argv) =>
    sourceOptions(
      y
        .positional("target", { type: "string", default: "/target", describe: "a mounted container root, or an image reference (docker://, oci:, …)" })
        .option("format", { type: "string", default: "1", choices: ["1", "2"], describe: "EROFS format: 1 (V1, composefs.digest=v1-…) or 2 (V2, composefs=)" })
        .option("write-dumpfile-to", { type: "string", describe: "also write the dumpfile of the boot tree to FILE" })
        .option("xattrs", { type: "string", default: "allowlist-only", describe: "xattr filtering: allowlist-only or keep-user-xattrs" }),
    ) as unknown as Argv<Args>,
  handler: async (args) => {
    const r = await computeComposefsDigest(String(args.target), {
      format: parseFormat(args.format),
      xattrs: parseXattrFiltering(args.xattrs),
      ...(args["write-dumpfile-to"] !== undefined ? { dumpfile: args["write-dumpfile-to"] } : {}),
      ...sourceOptionsFrom(args),
      progress: process.stderr.isTTY === true,
    });
    await print(`${r.id}\n`);
  },
});
