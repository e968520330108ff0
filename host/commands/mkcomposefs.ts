// `cfsboot mkcomposefs [OPTIONS] SOURCE IMAGE|-` — the C `mkcomposefs`
// contract (composefs tools/mkcomposefs.c), also reachable as a `mkcomposefs`
// link to the executable.
//
//   SOURCE        a directory, or with --from-file a dumpfile (`-` = stdin;
//                 parsed as C does, stricter with CFS_PARSE_STRICT set)
//   IMAGE         the image file (written atomically), `-` = stdout (never a
//                 terminal); omitted with --print-digest-only
//   --digest-store=DIR   copy files > 64 bytes into DIR/XX/<rest> (directory
//                 SOURCE only, as in C), fs-verity enabled where supported
//   --print-digest       print the image's fs-verity sha256 after writing it
//   --print-digest-only  print it and write no image
//   --use-epoch / --skip-devices / --skip-xattrs / --user-xattrs
//   --min-version=N / --max-version=N   format version, C semantics (only one
//                 given: the other is 0; max raised to min; V1 when the tree
//                 has a whiteout and max allows it). 2 = the composefs-rs V2
//                 format, which C cannot write.
//   --threads=N   digest workers (default: the CPU count)
//   --no-hardlinks   break hardlinks as C mkcomposefs does (by default files
//                 sharing an inode stay hardlinked in the image)
//
// Any failure: one line `cfsboot: <input>: <what>`, exit 1, no image file.

import { availableParallelism } from "node:os";
import type { Argv } from "yargs";

import { bstrFromUtf8, toHex } from "../../shared/bytes.ts";
import { CfsError, rethrowWithin } from "../../shared/errors.ts";
import { parseDumpfile } from "../../shared/dumpfile.ts";
import { chooseVersion, writeErofs } from "../../shared/erofs/writer.ts";
import { fsverityDigest } from "../../shared/fsverity.ts";
import type { Dir } from "../../shared/tree.ts";
import { writeOutput, writeStdout } from "../atomic.ts";
import { readInputFile } from "../input.ts";
import { checkpoint } from "../interrupt.ts";
import { defineCommand } from "../cli.ts";
import { DigestPool } from "../digest.ts";
import { fillDigestStore, scanDirectory } from "../scan.ts";
import { progressBar } from "../progress.ts";
import { phaseTimer, threadCpuReport } from "../timing.ts";

interface Args {
  source: string;
  image?: string;
  "from-file": boolean;
  "digest-store"?: string;
  "print-digest": boolean;
  "print-digest-only": boolean;
  "use-epoch": boolean;
  "skip-devices": boolean;
  "skip-xattrs": boolean;
  "user-xattrs": boolean;
  "min-version"?: string;
  "max-version"?: string;
  threads?: string;
  hardlinks: boolean;
}

/** A C-style integer option value (strtol with nothing left over). */
function parseIntOption(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const v = String(value);
  if (!/^[+-]?\d+$/.test(v.trim()) || v.trim() !== v) throw new CfsError(flag, `invalid value "${v}" (expected an integer)`);
  return Number(v);
}

/**
 * The image version for `--min-version`/`--max-version` (C semantics, plus 2).
 */
export function resolveVersion(root: Dir, min: number | undefined, max: number | undefined): 0 | 1 | 2 {
  for (const [flag, v] of [["--min-version", min], ["--max-version", max]] as const) {
    if (v !== undefined && (v < 0 || v > 2)) throw new CfsError(flag, `unsupported format version ${v} (0, 1 or 2)`);
  }
  if (min === undefined && max === undefined) return chooseVersion(root);
  const lo = min ?? 0;
  const hi = Math.max(max ?? 0, lo);
  if (lo === 2) return 2;
  return chooseVersion(root, lo, Math.min(hi, 1));
}

function readSource(source: string): Uint8Array {
  return readInputFile(source, source === "-" ? "stdin" : bstrFromUtf8(source));
}

export const mkcomposefsCommand = defineCommand<Args>({
  command: "mkcomposefs <source> [image]",
  describe: "build a composefs image from a directory or a dumpfile (C mkcomposefs compatible)",
  builder: (y: Argv) =>
    y
      .positional("source", { type: "string", describe: "directory, or dumpfile with --from-file (- = stdin)" })
      .positional("image", { type: "string", describe: "image file to write (- = stdout)" })
      .option("from-file", { type: "boolean", default: false, describe: "SOURCE is a dumpfile" })
      .option("digest-store", { type: "string", describe: "copy file contents into DIR/XX/<rest>" })
      .option("print-digest", { type: "boolean", default: false, describe: "print the image's fs-verity digest" })
      .option("print-digest-only", { type: "boolean", default: false, describe: "print the digest, write no image" })
      .option("use-epoch", { type: "boolean", default: false, describe: "make all mtimes zero" })
      .option("skip-devices", { type: "boolean", default: false, describe: "leave out device nodes" })
      .option("skip-xattrs", { type: "boolean", default: false, describe: "store no xattrs" })
      .option("user-xattrs", { type: "boolean", default: false, describe: "store only user.* xattrs" })
      .option("min-version", { type: "string", describe: "lowest format version (default 0)" })
      .option("max-version", { type: "string", describe: "highest format version (default 1)" })
      .option("threads", { type: "string", describe: `digest threads (default ${availableParallelism()})` })
      .option("hardlinks", { type: "boolean", default: true, describe: "keep hardlinks (--no-hardlinks: break them, as C does)" })
      .strictOptions() as unknown as Argv<Args>,
  handler: async (args) => {
    const source = String(args.source);
    if (source === "") throw new CfsError("usage", "empty source path");
    const printDigest = args["print-digest"] || args["print-digest-only"];
    const image = args.image === undefined ? undefined : String(args.image);
    if (args["print-digest-only"] && image !== undefined) {
      throw new CfsError("usage", "cannot give an image path with --print-digest-only");
    }
    if (!args["print-digest-only"] && image === undefined) {
      throw new CfsError("usage", "no image path given (IMAGE, - for stdout, or --print-digest-only)");
    }
    if (args["skip-xattrs"] && args["user-xattrs"]) throw new CfsError("--user-xattrs", "conflicts with --skip-xattrs");
    const min = parseIntOption("--min-version", args["min-version"]);
    const max = parseIntOption("--max-version", args["max-version"]);
    const threads = parseIntOption("--threads", args.threads);
    if (threads !== undefined && threads <= 0) throw new CfsError("--threads", `invalid thread count ${threads}`);

    const lap = phaseTimer();
    let root: Dir;
    if (args["from-file"]) {
      const mode = process.env.CFS_PARSE_STRICT !== undefined ? "c-strict" : "c";
      const text = readSource(source);
      lap("read");
      try {
        root = parseDumpfile(text, { mode });
      } catch (e) {
        rethrowWithin(source === "-" ? "stdin" : source, e);
      }
      lap("parse");
    } else {
      const pool = new DigestPool({ workers: threads ?? availableParallelism() });
      const bar = progressBar("mkcomposefs");
      try {
        const scan = await scanDirectory(bstrFromUtf8(source), {
          useEpoch: args["use-epoch"],
          skipDevices: args["skip-devices"],
          skipXattrs: args["skip-xattrs"],
          userXattrs: args["user-xattrs"],
          hardlinks: args.hardlinks,
          pool,
          onProgress: (p) =>
            bar.update(p.phase === "walk" ? `scanning (${p.entries} entries), digesting` : "digesting", p.bytesDone, p.bytes),
        });
        lap("scan");
        if (process.env.CFSBOOT_TIMING) process.stderr.write(`threads: ${threadCpuReport()}\n`);
        if (args["digest-store"] !== undefined) {
          fillDigestStore(scan, args["digest-store"], {
            onProgress: (p) => bar.update("copying to store", p.bytesDone, p.bytes),
          });
          lap("store");
        }
        root = scan.root;
      } finally {
        bar.stop();
        await pool.close();
      }
    }

    // The scan's garbage is large next to the tree; free it before the writer allocates.
    Bun.gc(true);
    lap("gc");
    const version = resolveVersion(root, min, max);
    const bytes = writeErofs(root, { version, onPhase: (p) => lap(`erofs ${p}`) });
    await checkpoint(); // a signal during the synchronous store copy: no image appears
    if (image !== undefined) writeOutput(image, bytes, { binary: true });
    if (printDigest) writeStdout(`${toHex(fsverityDigest(bytes, "sha256"))}\n`);
    lap("output");
  },
});
