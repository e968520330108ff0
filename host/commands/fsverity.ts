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
import { HASH_ALGS, isHashAlg, type HashAlg } from "../../shared/fsverity.ts";
import { DigestPool, digestFile, type FileDigest } from "../digest.ts";

/**
 * Digests `paths` (in parallel) and calls `each` in the order given. The
 * first failure is thrown after `each` ran for every file before it; later
 * files are not reported.
 */
export async function digestPaths(
  paths: readonly string[],
  alg: HashAlg,
  each: (path: string, d: FileDigest) => void,
): Promise<void> {
  if (paths.length === 1) {
    each(paths[0]!, await digestFile(paths[0]!, alg));
    return;
  }
  const pool = new DigestPool();
  try {
    const pending = paths.map((p) => pool.digestFile(p, alg));
    for (const p of pending) p.catch(() => {}); // consumed below, in order
    for (let i = 0; i < paths.length; i++) each(paths[i]!, await pending[i]!);
  } finally {
    await pool.close();
  }
}

/** `composefs-info measure-file`: the bare lowercase hex fs-verity digest of a file. */
export async function measureFileHex(path: string, alg: HashAlg = "sha256"): Promise<string> {
  return toHex((await digestFile(path, alg)).digest);
}

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
          process.stdout.write(out);
          out = "";
        }
      });
    } finally {
      if (out) process.stdout.write(out);
    }
  },
});

export const fsverityCommand = defineCommand<object>({
  command: "fsverity <command>",
  describe: "fs-verity digests computed in userspace",
  builder: (y: Argv) => y.command(digestCommand).demandCommand(1) as unknown as Argv<object>,
  handler: () => {},
});
