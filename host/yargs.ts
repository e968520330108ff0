// yargs with a start-up-friendly platform shim.
//
// The `yargs` package entry binds yargs to its platform shim
// (yargs/lib/platform-shims/esm.mjs), whose evaluation reads
// `process.stdout.columns`, which creates Bun's process.stdout stream (~20 ms
// of CPU in the compiled executable, most of yargs' load time), and imports
// node:assert, node:util and node:url. Every yargs instance also guesses a
// --version at construction by walking up from the current directory for a
// package.json: readdir of every ancestor, and, when none is found, a failed
// node:assert assertion (AssertionError + util.inspect: milliseconds).
//
// This module builds the same yargs (its own YargsFactory, the same parser
// and messages) with a shim that does only what a parse needs and hands
// everything that only --help uses (cliui, string-width, the terminal width,
// util.inspect) to the stock shim, loaded on first use. So `--help` output
// is the stock output, and a normal run never creates process.stdout or
// loads node:assert. No version is guessed (cfsboot has no --version);
// messages are yargs' English, as in the compiled executable, where yargs'
// locale files do not exist (y18n is replaced by the 30 lines it does then).
//
// yargs-parser is built from its modules the same way, without loading
// node:util (see `parser`). The paths into node_modules are files of the
// published packages (yargs pinned in package.json, yargs-parser its
// dependency); test/host/yargs-shim.test.ts checks that the shim has every
// member of the stock one, the same parser modules, and the same results.

import { readFileSync, readdirSync } from "node:fs";
import { basename, dirname, extname, join, normalize, relative, resolve } from "node:path";
import type { Argv } from "yargs";
// @ts-expect-error: yargs-parser publishes no types for its modules (only for its entry)
import { YargsParser } from "../node_modules/yargs-parser/build/lib/yargs-parser.js";
// @ts-expect-error: as above
import { camelCase, decamelize, looksLikeNumber } from "../node_modules/yargs-parser/build/lib/string-utils.js";
// @ts-expect-error: yargs publishes no types for its factory module (its API is that of the package entry)
import { YargsFactory } from "../node_modules/yargs/build/lib/yargs-factory.js";

type StockShim = {
  cliui: unknown;
  stringWidth: unknown;
  inspect: unknown;
  process: { stdColumns: number | null };
  require: unknown;
  getCallerFile: () => string;
};

let stockShim: StockShim | undefined;
/** The stock shim, for what only help output and commandDir() use. */
function stock(): StockShim {
  // require(), not import(): shim members are read synchronously. Bun's require()
  // loads ES modules, and its bundler evaluates a required module on first use.
  return (stockShim ??= (require("../node_modules/yargs/lib/platform-shims/esm.mjs") as { default: StockShim }).default);
}

class AssertionFailed extends Error {}

/** util.format, loaded when a message has arguments (loading it costs milliseconds). */
function format(str: string, args: unknown[]): string {
  return args.length === 0 ? str : process.getBuiltinModule("node:util").format(str, ...args);
}

/**
 * y18n's interface without locale files: its English (the message keys),
 * what y18n gives yargs in the compiled executable, where yargs' locale
 * directory does not exist. `updateLocale` (yargs' updateStrings) still
 * replaces strings. Formatting as y18n's: util.format, and `__n` adds the
 * quantity for a `%d`.
 */
function englishY18n() {
  const strings = new Map<string, string | { one: string; other: string }>();
  let locale = "en";
  return {
    __(str: string, ...args: unknown[]): string {
      const s = strings.get(str);
      return format(typeof s === "string" ? s : str, args);
    },
    __n(singular: string, plural: string, quantity: number, ...args: unknown[]): string {
      const s = strings.get(singular);
      const str = typeof s === "object" ? s[quantity === 1 ? "one" : "other"] : quantity === 1 ? singular : plural;
      return format(str, str.includes("%d") ? [quantity, ...args] : args);
    },
    setLocale(l: string): void {
      locale = l;
    },
    getLocale(): string {
      return locale;
    },
    updateLocale(obj: Record<string, string | { one: string; other: string }>): void {
      for (const [k, v] of Object.entries(obj)) strings.set(k, v);
    },
    locale,
  };
}

type ParserResult = { argv: Record<string, unknown> };
type ParserInstance = { parse(args: string[], opts?: unknown): ParserResult };

/**
 * yargs-parser as its entry module builds it, except that util.format (for
 * its own messages; yargs passes its own) is loaded when first called: the
 * entry reads it at import, which loads node:util (~15 ms of CPU in the
 * compiled executable). Config files (`.config()`, unused by cfsboot) may be
 * JSON only, as with the entry in an ES module.
 */
const parser = new YargsParser({
  cwd: () => process.cwd(),
  env: () => process.env,
  format: (...args: unknown[]) => process.getBuiltinModule("node:util").format(...args),
  normalize,
  resolve,
  require: (path: string) => {
    if (/\.json$/.test(path)) return JSON.parse(readFileSync(path, "utf8"));
    throw new Error("only .json config files are supported");
  },
}) as ParserInstance;

function Parser(args: string[], opts?: unknown): Record<string, unknown> {
  return parser.parse(args.slice(), opts).argv;
}
Parser.detailed = (args: string[], opts?: unknown): ParserResult => parser.parse(args.slice(), opts);
Parser.camelCase = camelCase as (s: string) => string;
Parser.decamelize = decamelize as (s: string, join?: string) => string;
Parser.looksLikeNumber = looksLikeNumber as (x: unknown) => boolean;

/** The shim yargs calls; the member set is the stock shim's. */
export const shim = {
  assert: {
    notStrictEqual(actual: unknown, expected: unknown, message?: string | Error): void {
      if (actual === expected) throw message instanceof Error ? message : new AssertionFailed(message ?? `expected a value other than ${String(expected)}`);
    },
    strictEqual(actual: unknown, expected: unknown, message?: string | Error): void {
      if (actual !== expected) throw message instanceof Error ? message : new AssertionFailed(message ?? `expected ${String(expected)}, got ${String(actual)}`);
    },
  },
  get cliui() {
    return stock().cliui;
  },
  /** Finds no package.json: cfsboot takes no configuration from the current directory's ancestors. */
  findUp: (): undefined => undefined,
  getEnv: (key: string): string | undefined => process.env[key],
  get inspect() {
    return stock().inspect;
  },
  getProcessArgvBin: (): string | undefined => process.argv[1],
  mainFilename: "/",
  Parser,
  path: { basename, dirname, extname, relative, resolve, join },
  process: {
    argv: (): string[] => process.argv,
    cwd: (): string => process.cwd(),
    emitWarning: (warning: string, type?: string): void => process.emitWarning(warning, type),
    execPath: (): string => process.execPath,
    exit: (code?: number): never => process.exit(code),
    nextTick: (f: () => void): void => process.nextTick(f),
    get stdColumns(): number | null {
      return stock().process.stdColumns;
    },
  },
  readFileSync,
  readdirSync,
  get require() {
    return stock().require;
  },
  getCallerFile: (): string => stock().getCallerFile(),
  get stringWidth() {
    return stock().stringWidth;
  },
  y18n: englishY18n(),
};

/** `yargs(args)`, as the package's default export. */
const factory = YargsFactory(shim) as (args: readonly string[]) => Argv;

export default function yargs(args: readonly string[]): Argv {
  return factory(args);
}
