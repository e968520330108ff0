// host/yargs.ts: yargs built with cfsboot's start-up-friendly platform shim
// behaves as the stock `yargs` package: same shim members, the same parser
// modules and parse results, the same English messages, and the same help
// and error output for a command set using what cfsboot's commands use
// (nested commands, variadic and choice positionals, typed, defaulted,
// required, array and conflicting options).

import stockYargs from "yargs";
import type { Argv } from "yargs";
import { describe, expect, test } from "vitest";
import ours, { shim } from "../../host/yargs.ts";

// The stock shim, as yargs' package entry uses it.
const stock = (await import("../../node_modules/yargs/lib/platform-shims/esm.mjs" as string)).default as Record<string, unknown> & {
  Parser: typeof shim.Parser;
  y18n: { __: (...a: unknown[]) => string; __n: (...a: unknown[]) => string };
  process: Record<string, unknown>;
};

describe("shim", () => {
  test("has every member of the stock shim (and process member)", () => {
    for (const k of Object.keys(stock)) expect(shim, k).toHaveProperty(k);
    for (const k of Object.keys(stock.process)) expect(shim.process, `process.${k}`).toHaveProperty(k);
    // help-only members are the stock ones
    expect(shim.cliui).toBe(stock.cliui);
    expect(shim.stringWidth).toBe(stock.stringWidth);
    expect(shim.process.stdColumns).toBe(stock.process.stdColumns);
  });

  test("the parser comes from the same yargs-parser modules", () => {
    expect(shim.Parser.camelCase).toBe(stock.Parser.camelCase);
    expect(shim.Parser.decamelize).toBe(stock.Parser.decamelize);
    expect(shim.Parser.looksLikeNumber).toBe(stock.Parser.looksLikeNumber);
  });

  test("parse results equal the stock parser's", () => {
    const opts = {
      string: ["sysroot", "files"],
      number: ["n"],
      boolean: ["json", "compact"],
      array: ["karg"],
      narg: { karg: 1 },
      alias: { n: ["count"], files: ["f"] },
      default: { compact: false },
      configuration: { "populate--": true, "strip-dashed": false },
    };
    const argvs = [
      [],
      ["a", "b", "--json"],
      ["--sysroot", "/x", "--sysroot=/y", "-n", "3", "--count", "4", "p", "12", "-0.5"],
      ["--karg", "a=1", "--karg", "b", "c", "--no-json", "--", "--x", "-"],
      ["-f", "one", "--files", "two", "--compact=false", "--unknown-thing", "v"],
      ["--n", "notanumber", "--json", "maybe", "-abc"],
    ];
    for (const a of argvs) expect(shim.Parser.detailed(a, opts), a.join(" ")).toEqual(stock.Parser.detailed(a, opts));
  });

  test("messages: the English y18n gives without locale files", () => {
    const { __, __n } = shim.y18n;
    expect(__("Show help")).toBe("Show help");
    expect(__("Unknown argument: %s", "x")).toBe("Unknown argument: x");
    expect(__("100% of %s", "a", "extra")).toBe("100% of a extra");
    expect(__n("Unknown argument: %s", "Unknown arguments: %s", 1, "a")).toBe("Unknown argument: a");
    expect(__n("Unknown argument: %s", "Unknown arguments: %s", 2, "a, b")).toBe("Unknown arguments: a, b");
    expect(__n("%d file", "%d files", 3)).toBe("3 files");
    // the same as yargs' own English locale file gives for these
    for (const [s, p, n, a] of [["Unknown argument: %s", "Unknown arguments: %s", 2, "a, b"], ["Missing required argument: %s", "Missing required arguments: %s", 1, "x"]] as const) {
      expect(__n(s, p, n, a)).toBe(stock.y18n.__n(s, p, n, a));
    }
  });
});

/** A command set like cfsboot's, on a yargs instance from `factory`. */
function program(factory: (a: readonly string[]) => Argv, args: string[]): Argv {
  const leaf = (y: Argv) =>
    y
      .positional("files", { type: "string", array: true, describe: "regular files" })
      .option("hash-alg", { type: "string", default: "sha256", choices: ["sha256", "sha512"], describe: "hash algorithm" })
      .option("block-size", { type: "number", default: 4096, describe: "Merkle tree block size (only 4096)" })
      .option("compact", { type: "boolean", default: false, describe: "print only the hex digest" })
      .option("karg", { type: "string", array: true, nargs: 1, describe: "kernel argument (repeatable)" })
      .option("sysroot", { type: "string", demandOption: false, describe: "physical root" })
      .option("json", { type: "boolean", conflicts: "compact", describe: "JSON output" });
  return factory(args)
    .scriptName("cfsboot")
    .strict()
    .demandCommand(1, "a command is required (see --help)")
    .recommendCommands()
    .help()
    .version(false)
    .wrap(100)
    .command("fsverity <command>", "fs-verity digests computed in userspace", (y: Argv) =>
      y.command("digest <files..>", "print the fs-verity digest of files", leaf, () => {}).demandCommand(1),
    )
    .command("info <action> [paths..]", "inspect images", (y: Argv) => y.positional("action", { choices: ["ls", "dump", "objects"] }).positional("paths", { type: "string" }), () => {})
    .command(["upgrade", "update"], "upgrade the host", (y: Argv) => y.option("check", { type: "boolean" }).option("apply", { type: "boolean" }), () => {})
    .command("mount <image> <mountpoint>", "mount an image", (y: Argv) => y.option("repo", { type: "string", demandOption: true }), () => {});
}

/** What a parse prints and fails with (yargs' parse callback collects the output). */
async function outcome(factory: (a: readonly string[]) => Argv, args: string[]) {
  const failures: string[] = [];
  const p = program(factory, args)
    .exitProcess(false)
    .fail((msg: string | undefined, err: Error | undefined) => {
      failures.push(msg ?? err?.message ?? "?");
    });
  let output = "";
  let argv: Record<string, unknown> = {};
  await p.parse(args, {}, (_err: Error | undefined, a: unknown, out: string) => {
    output = out;
    argv = { ...(a as Record<string, unknown>) };
  });
  delete argv.$0;
  return { failures, output, argv };
}

describe("same help, errors and parse results as stock yargs", () => {
  const cases = [
    ["--help"],
    [],
    ["fsverity", "--help"],
    ["fsverity", "digest", "--help"],
    ["fsverity", "digest", "a", "b", "--hash-alg=sha512", "--karg", "x=1", "--karg", "y"],
    ["fsverity", "digest"],
    ["fsverity", "digest", "a", "--hash-alg=md5"],
    ["fsverity", "digest", "a", "--bogus"],
    ["fsverity", "digest", "a", "--json", "--compact"],
    ["fsverity", "digets", "a"],
    ["fsverity"],
    ["fsverty"],
    ["info", "dump", "p1", "p2"],
    ["info", "frob"],
    ["info", "--help"],
    ["update", "--check"],
    ["mount", "img"],
    ["mount", "img", "mnt"],
    ["mount", "img", "mnt", "extra", "--repo", "r"],
  ];
  for (const args of cases) {
    test(`cfsboot ${args.join(" ")}`, async () => {
      const a = await outcome(ours, args);
      const b = await outcome(stockYargs as unknown as (a: readonly string[]) => Argv, args);
      expect(a).toEqual(b);
      expect(a.failures.length > 0 || a.output !== "" || Object.keys(a.argv).length > 1).toBe(true);
    });
  }
});
