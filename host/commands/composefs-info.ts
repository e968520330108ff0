// `cfsboot composefs-info ls|dump|objects|missing-objects [--basedir=DIR] [--filter=NAME…] IMAGE…`
// `cfsboot composefs-info measure-file FILE…`
//
// Same output as C composefs-info (tools/composefs-info.c), also reachable
// as `composefs-info` through the multi-call link:
// - ls: every path below the root, `/\t` after directories, `\t-> TARGET`
//   after symlinks, `\t@ PAYLOAD` after external files;
// - dump: the image as a C-style dumpfile (shared/erofs/cdump.ts);
// - objects: the payloads (object paths) of all images, sorted and unique;
// - missing-objects: those of them that do not exist below --basedir
//   (without --basedir every object counts as missing, as with C);
// - measure-file: the fs-verity sha256 digest of each file, in hex.
// `ls` and `dump` print each image as soon as it is read; the first image
// that cannot be read stops the command (exit 1) after the earlier output.

import { statSync } from "node:fs";
import { join } from "node:path";
import type { Argv } from "yargs";
import { bstrFromUtf8, type BStr } from "../../shared/bytes.ts";
import { cDump, cList, cPayloads } from "../../shared/erofs/cdump.ts";
import { type CNode, loadImageC } from "../../shared/erofs/reader.ts";
import { CfsError, describeError } from "../../shared/errors.ts";
import { defineCommand } from "../cli.ts";
import { readInputFile } from "../input.ts";
import { measureFileHex } from "./fsverity.ts";

const ACTIONS = ["ls", "dump", "objects", "missing-objects", "measure-file"] as const;
type Action = (typeof ACTIONS)[number];

interface InfoArgs {
  action: Action;
  paths: string[];
  basedir?: string;
  filter?: string | string[];
}

function writeOut(data: Uint8Array | string): Promise<void> {
  return new Promise((resolve, reject) => {
    process.stdout.write(data, (err) => (err ? reject(err) : resolve()));
  });
}

function readImageFile(path: string): Uint8Array {
  return readInputFile(path);
}

function exists(basedir: string, payload: BStr): boolean {
  // C: fstatat(basedir, payload without leading "/", AT_EMPTY_PATH), following symlinks.
  const rel = payload.replace(/^\/+/, "");
  try {
    statSync(join(basedir, Buffer.from(rel, "latin1").toString()));
    return true;
  } catch {
    return false;
  }
}

export const composefsInfoCommand = defineCommand<InfoArgs>({
  command: "composefs-info <action> [paths..]",
  describe: "inspect composefs images like C composefs-info (ls, dump, objects, missing-objects, measure-file)",
  builder: (y: Argv) =>
    y
      .positional("action", { choices: ACTIONS, describe: "what to print" })
      .positional("paths", { type: "string", array: true, describe: "images (files for measure-file)" })
      .option("basedir", { type: "string", describe: "object store for missing-objects" })
      // Not `array: true`, which would swallow the image paths after it; repeated options collect anyway.
      .option("filter", { type: "string", array: true, nargs: 1, describe: "only this top-level name (repeatable)" }) as unknown as Argv<InfoArgs>,
  handler: async (args) => {
    const paths = (args.paths ?? []).map(String);
    if (args.action === "measure-file") {
      if (paths.length === 0) throw new CfsError("composefs-info measure-file", "no files specified");
      for (const p of paths) {
        let hex: string;
        try {
          hex = await measureFileHex(p);
        } catch (e) {
          if (e instanceof CfsError) throw e;
          throw new CfsError(p, `failed to measure: ${describeError(e)}`);
        }
        await writeOut(hex + "\n");
      }
      return;
    }
    if (args.basedir !== undefined) {
      let ok = false;
      try {
        ok = statSync(args.basedir).isDirectory();
      } catch {
        // reported below
      }
      if (!ok) throw new CfsError(args.basedir, "cannot open basedir: not a directory");
    }
    if (paths.length === 0) throw new CfsError(`composefs-info ${args.action}`, "no image path specified");
    let filter: Set<BStr> | undefined;
    if (args.filter !== undefined) {
      filter = new Set();
      for (const f of [args.filter].flat().map(String)) {
        if (f.includes("/")) throw new CfsError(`--filter=${f}`, "filter must be a single name");
        filter.add(bstrFromUtf8(f));
      }
    }
    const load = (path: string): CNode => {
      const bytes = readImageFile(path);
      return loadImageC(bytes, filter ? { name: path, filter } : { name: path });
    };
    if (args.action === "ls" || args.action === "dump") {
      for (const p of paths) {
        const root = load(p);
        await writeOut(args.action === "ls" ? cList(root) : cDump(root));
      }
      return;
    }
    const payloads = new Set<BStr>();
    for (const p of paths) {
      for (const payload of cPayloads(load(p))) {
        if (args.action === "missing-objects" && args.basedir !== undefined && exists(args.basedir, payload)) continue;
        payloads.add(payload);
      }
    }
    const sorted = [...payloads].sort();
    await writeOut(Buffer.from(sorted.map((s) => s + "\n").join(""), "latin1"));
  },
});
