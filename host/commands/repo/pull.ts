// `cfsboot repo pull IMGREF [NAME] [--bootable] [--authfile F] [--cert-dir D]
// [--tls-verify=false] [--creds USER:PASS] [--quiet]` (cfsctl oci pull):
// pull an image into the repository (host/pull.ts) and print cfsctl's lines
//
//   manifest sha256:…
//   config   sha256:…
//   verity   <manifest splitstream object id>
//   tagged   <NAME, default IMGREF>
//   objects  N new + M already present objects; … stored, … inlined
//   Boot image: <hex>          (with --bootable)
//
// IMGREF: docker://HOST[:PORT]/NAME[:TAG|@DIGEST], oci:DIR[:REF],
// oci-archive:FILE[:REF], containers-storage:[SPEC]NAME. Progress bars per
// layer on a terminal (stderr); --quiet prints nothing but errors.

import type { Argv } from "yargs";

import { CfsError } from "../../../shared/errors.ts";
import { defineCommand } from "../../cli.ts";
import { formatPullResult, pullImage, type PullOptions } from "../../pull.ts";
import { type RepoGlobalArgs, print, withRepo } from "./common.ts";

interface Args extends RepoGlobalArgs {
  imgref: string;
  name?: string;
  bootable: boolean;
  authfile?: string;
  "cert-dir"?: string;
  "tls-verify": boolean;
  creds?: string;
  quiet: boolean;
}

/** --creds USER[:PASSWORD] */
export function parseCreds(s: string): { username: string; password: string } {
  const i = s.indexOf(":");
  if (i <= 0) throw new CfsError("--creds", 'expected "USER:PASSWORD"');
  return { username: s.slice(0, i), password: s.slice(i + 1) };
}

export const pullCommand = defineCommand<Args>({
  command: "pull <imgref> [name]",
  describe: "pull an OCI image (docker://, oci:, oci-archive:, containers-storage:) and generate its EROFS images",
  builder: (y: Argv) =>
    y
      .positional("imgref", { type: "string", describe: "image reference with transport" })
      .positional("name", { type: "string", describe: "tag name (default: IMGREF)" })
      .option("bootable", { type: "boolean", default: false, describe: "also generate the boot image (composefs.image.boot)" })
      .option("authfile", { type: "string", describe: "containers auth.json (default $REGISTRY_AUTH_FILE, then the usual places)" })
      .option("cert-dir", { type: "string", describe: "directory of CA certificates (*.crt) and client certificate (*.cert/*.key)" })
      .option("tls-verify", { type: "boolean", default: true, describe: "verify the registry's TLS certificate (--tls-verify=false to skip)" })
      .option("creds", { type: "string", describe: "USER:PASSWORD for the registry" })
      .option("quiet", { alias: "q", type: "boolean", default: false, describe: "print nothing but errors" }) as unknown as Argv<Args>,
  handler: async (args) => {
    const opts: PullOptions = { bootable: args.bootable, tlsVerify: args["tls-verify"], progress: !args.quiet && process.stderr.isTTY === true };
    if (args.name !== undefined) opts.tag = String(args.name);
    if (args.authfile !== undefined) opts.authFile = args.authfile;
    if (args["cert-dir"] !== undefined) opts.certDir = args["cert-dir"];
    if (args.creds !== undefined) opts.credentials = parseCreds(args.creds);
    const r = await withRepo(args, { writable: true }, (repo) => pullImage(repo, String(args.imgref), opts));
    if (!args.quiet) await print(formatPullResult(r));
  },
});
