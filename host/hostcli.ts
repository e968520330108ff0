// Command-line plumbing shared by the host commands (install, status,
// upgrade, switch, rollback, gc): registry options and output.
//
//   --authfile FILE     containers auth.json (default: $REGISTRY_AUTH_FILE, else bootc's
//                       /etc/ostree/auth.json lookup for root, else the containers lookup)
//   --cert-dir DIR      CA certificates (*.crt) and client certificate (*.cert/*.key)
//   --tls-verify=false  do not verify the registry's certificate
//   --unified-storage   pull with podman into composefs/bootc/storage, import from there
//   -q, --quiet         no progress bars (bootc's spelling; as `repo pull --quiet`)

import type { Argv } from "yargs";

import { writeStdout } from "./atomic.ts";
import { bootcAuthFile } from "./registry.ts";
import type { SourceOptions } from "./pull.ts";

export interface SourceArgs {
  authfile?: string;
  "cert-dir"?: string;
  "tls-verify"?: boolean;
  "unified-storage"?: boolean;
  quiet?: boolean;
}

export function sourceOptions<T>(y: Argv<T>): Argv<T & SourceArgs> {
  return y
    .option("authfile", { type: "string", describe: "containers auth.json for the registry" })
    .option("cert-dir", { type: "string", describe: "directory of CA certificates (*.crt) and client certificate (*.cert/*.key)" })
    .option("tls-verify", { type: "boolean", describe: "verify the registry's TLS certificate (--tls-verify=false to skip)" })
    .option("unified-storage", { type: "boolean", describe: "pull registry images with podman into <sysroot>/composefs/bootc/storage and import them from there" })
    .option("quiet", { alias: "q", type: "boolean", describe: "show no progress bars" }) as unknown as Argv<T & SourceArgs>;
}

/** What both `install to-filesystem` and `install to-disk` take. */
export interface InstallArgs extends SourceArgs {
  "source-imgref": string;
  bootloader: string;
  karg?: string | string[];
  "composefs-insecure"?: boolean;
  "allow-missing-verity"?: boolean;
  erofs: string;
}

/** The options of `install to-filesystem` and `install to-disk` that mean the same in both. */
export function installOptions<T>(y: Argv<T>, bootloaderHelp: string): Argv<T & InstallArgs> {
  return sourceOptions(y)
    .option("source-imgref", { type: "string", demandOption: true, describe: "image to install (docker://…, oci:…, oci-archive:…, containers-storage:…)" })
    .option("bootloader", { type: "string", default: "systemd", describe: bootloaderHelp })
    .option("karg", { type: "string", array: true, nargs: 1, describe: "an extra kernel argument (repeatable)" })
    .option("composefs-insecure", { type: "boolean", describe: "do not require fs-verity (karg composefs…=?…)" })
    .option("allow-missing-verity", { type: "boolean", describe: "same as --composefs-insecure (bootc's name)" })
    .option("erofs", { type: "string", default: "v1", describe: "EROFS images of the repository: v1 or dual (V1 and V2)" }) as unknown as Argv<T & InstallArgs>;
}

export function sourceFrom(args: SourceArgs): SourceOptions {
  const o: SourceOptions = {};
  const auth = args.authfile ?? (process.env.REGISTRY_AUTH_FILE ? undefined : (bootcAuthFile() ?? undefined));
  if (auth !== undefined) o.authFile = auth;
  if (args["cert-dir"] !== undefined) o.certDir = args["cert-dir"];
  if (args["tls-verify"] !== undefined) o.tlsVerify = args["tls-verify"];
  if (args["unified-storage"]) o.unifiedStorage = true;
  // Every progress bar (host/progress.ts, the pull's) is off with CFSBOOT_NO_PROGRESS.
  if (args.quiet) process.env.CFSBOOT_NO_PROGRESS = "1";
  return o;
}

/** Write text to stdout and wait until it is flushed. */
export function print(text: string): Promise<void> {
  return new Promise((resolve, reject) => process.stdout.write(text, (e) => (e ? reject(e) : resolve())));
}

/** One line on stdout, written at once (handles a non-blocking pipe). */
export function outLine(line: string): void {
  writeStdout(`${line}\n`);
}
