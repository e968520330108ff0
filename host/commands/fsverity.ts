// `cfsboot fsverity digest [--hash-alg=sha256|sha512] [--compact] FILE…`
//
// Output is byte-identical to fsverity-utils' `fsverity digest`:
// `<alg>:<hex> <path as given>` per file, or only `<hex>` with --compact.
// Like `fsverity digest`, the first file that cannot be digested stops the
// command: the files before it are printed, then one error line, exit 1.
// Files are hashed in parallel (all cores; a large file is split across them).

import type { Argv } from "yargs";
import { defineCommand } from "../cli.ts";
import { CfsError } from "../../shared/errors.ts";
import { toHex } from "../../shared/bytes.ts";
import { HASH_ALGS, isHashAlg } from "../../shared/fsverity.ts";
import { writeStdout } from "../atomic.ts";
import { digestPaths, measureFileHex } from "../digest.ts";

export { digestPaths, measureFileHex };

interface DigestArgs {
  files: string[];
  "hash-alg": string;
  "block-size": number;
  compact: boolean;
}

const digestCommand = defineCommand<DigestArgs>({
  command: "digest <files..>",
  describe: "print the fs-verity digest of files (same output as `fsverity digest`)",
  builder: (y: Argv) =>
    y
      .positional("files", { type: "string", array: true, describe: "regular files" })
      .option("hash-alg", { type: "string", default: "sha256", describe: `hash algorithm: ${HASH_ALGS.join(" or ")}` })
      .option("block-size", { type: "number", default: 4096, describe: "Merkle tree block size (only 4096)" })
      .option("compact", { type: "boolean", default: false, describe: "print only the hex digest" }) as unknown as Argv<DigestArgs>,
  handler: async (args) => {
    if (args["block-size"] !== 4096) {
      throw new CfsError(`--block-size=${args["block-size"]}`, "unsupported block size (only 4096 is supported)");
    }
    const alg = args["hash-alg"];
    if (!isHashAlg(alg)) throw new CfsError(`--hash-alg=${alg}`, "unknown hash algorithm (expected sha256 or sha512)");
    let out = "";
    try {
      await digestPaths(args.files.map(String), alg, (path, d) => {
        out += args.compact ? `${toHex(d.digest)}\n` : `${alg}:${toHex(d.digest)} ${path}\n`;
        if (out.length >= 65536) {
          writeStdout(out);
          out = "";
        }
      });
    } finally {
      if (out) writeStdout(out);
    }
  },
});

export const fsverityCommand = defineCommand<object>({
  command: "fsverity <command>",
  describe: "fs-verity digests computed in userspace",
  builder: (y: Argv) => y.command(digestCommand).demandCommand(1) as unknown as Argv<object>,
  handler: () => {},
});
