// The command line: parse argv with yargs, run one command, turn errors into
// one line on stderr and an exit status. Each command lives in its own file
// under host/commands/ and exports a yargs CommandModule built with
// `defineCommand` below.

import { fstatSync } from "node:fs";
import type { Argv, CommandModule } from "yargs";
import { CfsError } from "../shared/errors.ts";
import { fromNodeError, isatty } from "../shared/sys.ts";

import { RetryFullParse, type Tail, applyTail, splitTail } from "./cli-tail.ts";
import { type CommandEntry, commands } from "./commands/index.ts";
import { installInterruptHandlers } from "./interrupt.ts";
import yargs from "./yargs.ts";

/** Exit status requested by the command that ran (0 unless it set one). */
let exitStatus = 0;

export function setExitStatus(code: number): void {
  exitStatus = code;
}

/**
 * Node's own errors for a failed system call (fs, net): errno code, syscall
 * and usually the path. They are environment failures (EACCES, ENOSPC,
 * EROFS, …), not bugs, so they get the same one-line form as a CfsError.
 */
function systemErrorLine(e: unknown): string | null {
  const err = e as NodeJS.ErrnoException & { dest?: string; address?: string; port?: number };
  if (!(e instanceof Error) || typeof err.code !== "string" || !/^E[A-Z0-9]+$/.test(err.code) || typeof err.syscall !== "string") return null;
  const input = err.path ?? err.dest ?? (err.address !== undefined ? `${err.address}${err.port !== undefined ? `:${err.port}` : ""}` : err.syscall);
  try {
    return fromNodeError(input, err.syscall, e).message;
  } catch {
    return null;
  }
}

/** Print `cfsboot: <message>` for an error; a stack only for internal errors. */
export function reportError(e: unknown): void {
  if (e instanceof CfsError) {
    process.stderr.write(`cfsboot: ${oneLine(e.message)}\n`);
    return;
  }
  const sysLine = systemErrorLine(e);
  if (sysLine !== null) {
    process.stderr.write(`cfsboot: ${oneLine(sysLine)}\n`);
  } else {
    const msg = e instanceof Error ? e.message.split("\n")[0] : String(e);
    process.stderr.write(`cfsboot: internal error: ${msg}\n`);
  }
  if (process.env.CFSBOOT_DEBUG && e instanceof Error) process.stderr.write(`${e.stack}\n`);
}

/** Messages are one line: embedded newlines (a tool's stderr, a yargs list) become "; ". */
function oneLine(s: string): string {
  return s.trim().split(/\s*\n\s*/).join("; ");
}

/**
 * A yargs command whose async handler's CfsErrors become exit status 1.
 * `handler` may return a number to set the exit status.
 */
export function defineCommand<A>(spec: {
  command: string | readonly string[];
  describe: string | false;
  builder?: (y: Argv) => Argv<A>;
  handler: (args: A) => Promise<number | void> | number | void;
}): CommandModule {
  return {
    command: spec.command as string | string[],
    describe: spec.describe,
    builder: ((y: Argv) => valuesRequired((spec.builder ?? ((z: Argv) => z))(y) as Argv)) as CommandModule["builder"],
    handler: async (args: unknown) => {
      const code = await spec.handler(args as A);
      if (typeof code === "number") exitStatus = code;
    },
  };
}

/**
 * yargs turns a lone "-" (stdin/stdout) into "" or `true`; it is passed
 * through as this placeholder and restored by a middleware.
 */
const DASH = "\u0000-";

function restoreDash(args: Record<string, unknown>): void {
  for (const [k, v] of Object.entries(args)) {
    if (v === DASH) args[k] = "-";
    else if (Array.isArray(v)) args[k] = v.map((x) => (x === DASH ? "-" : x));
  }
}

/** What the last parse saw (captured before validation, for usage errors). */
let lastParsed: { positionals: string[]; command: string | undefined; arrays: Set<string>; aliases: Record<string, string[]> } | null = null;

function captureParse(args: Record<string, unknown>, y: unknown): void {
  const opts = (y as { getOptions?: () => { array?: string[]; alias?: Record<string, string[]> } } | undefined)?.getOptions?.();
  lastParsed = {
    positionals: Array.isArray(args._) ? args._.map(String) : [],
    // `repo <command>`: an unknown subcommand name lands in this positional.
    command: typeof args.command === "string" ? args.command : undefined,
    arrays: new Set(opts?.array ?? []),
    aliases: opts?.alias ?? {},
  };
}

/**
 * An option that takes one value given twice (`--sysroot A --sysroot B`)
 * arrives as an array: refuse it, as bootc (clap) does, instead of letting
 * an array reach code that expects a string. Options meant to repeat are
 * declared `array: true` (with `nargs: 1`).
 */
function refuseRepeats(args: Record<string, unknown>): void {
  if (lastParsed === null) return;
  const repeatable = new Set(lastParsed.arrays);
  for (const [k, names] of Object.entries(lastParsed.aliases)) if (names.some((n) => repeatable.has(n)) || repeatable.has(k)) for (const n of [k, ...names]) repeatable.add(n);
  for (const [k, v] of Object.entries(args)) {
    if (k === "_" || k === "$0" || k === "--" || !Array.isArray(v) || repeatable.has(k) || /[A-Z]/.test(k)) continue;
    throw new CfsError(k.length === 1 ? `-${k}` : `--${k}`, "given more than once (it takes one value)");
  }
}

interface UsageLike {
  getUsage?: () => [string, string][];
  getCommands?: () => [string, ...unknown[]][];
}

const flag = (name: string): string => (name.length === 1 ? `-${name}` : `--${name}`);

function listOf(items: string[]): string {
  return items.length <= 1 ? (items[0] ?? "") : `${items.slice(0, -1).join(", ")} or ${items[items.length - 1]}`;
}

/**
 * yargs' validation messages ("Not enough non-option arguments: got 0, need
 * at least 1", "Unknown argument: b", a two-line "Invalid values:" …) as
 * one `<input>: <what is wrong>` line naming the argument, with a pointer to
 * the command's --help.
 */
export function usageError(msg: string, usage: UsageLike | undefined, argv: readonly string[]): CfsError {
  const usageLine = usage?.getUsage?.()[0]?.[0] ?? "";
  const words = usageLine.replace(/^\$0\s*/, "").split(/\s+/).filter((w) => w !== "");
  const path = words.filter((w) => !/^[<[]/.test(w));
  const required = words.filter((w) => /^<[^>]+>$/.test(w)).map((w) => w.slice(1, -1).replace(/\.\.$/, ""));
  const positionalNames = new Set(words.filter((w) => /^[<[]/.test(w)).map((w) => w.replace(/^[<[]|[>\]]$/g, "").replace(/\.\.$/, "")));
  const subcommands = (usage?.getCommands?.() ?? []).map((c) => String(c[0]).split(/\s+/)[0]!).filter((c) => c !== "" && c !== "$0");
  const cmd = path.join(" ");
  const see = `see cfsboot ${cmd === "" ? "" : `${cmd} `}--help`;
  // The word after the command path: a subcommand's positional, else the next plain word
  // (at the top level there are no options taking values, so the first word of argv).
  const extra = lastParsed?.command ?? lastParsed?.positionals[path.length] ?? (cmd === "" ? argv.find((a) => !a.startsWith("-")) : undefined);
  const givenAsOption = (name: string): boolean => argv.some((a) => a === flag(name) || a.startsWith(`${flag(name)}=`) || a === `--no-${name}`);
  const unknownCommand = (token: string, hint = ""): CfsError =>
    new CfsError(cmd === "" ? token : `${cmd} ${token}`, `unknown command${hint} (${subcommands.length > 0 ? `commands: ${subcommands.join(", ")}; ` : ""}${see})`);

  let m: RegExpMatchArray | null;
  if ((m = /^Unknown arguments?: (.*)$/s.exec(msg))) {
    const names = m[1]!.split(", ");
    const options = names.filter(givenAsOption);
    // `--no-frob` reaches yargs as the negation of "frob": name the option as it was typed.
    const typed = (n: string): string => (argv.some((a) => a === flag(n) || a.startsWith(`${flag(n)}=`)) ? flag(n) : `--no-${n}`);
    if (options.length > 0) return new CfsError(options.map(typed).join(", "), `unknown option${options.length > 1 ? "s" : ""} (${see})`);
    if (subcommands.length > 0 && extra !== undefined && names.includes(extra)) return unknownCommand(extra);
    return new CfsError(names.join(" "), `unexpected argument${names.length > 1 ? "s" : ""} (${see})`);
  }
  if ((m = /^Did you mean (.*)\?$/s.exec(msg))) return new CfsError(cmd === "" ? (extra ?? "") : `${cmd} ${extra ?? ""}`, `unknown command (did you mean ${m[1]}? ${see})`);
  if ((m = /^Missing required arguments?: (.*)$/s.exec(msg))) {
    const names = m[1]!.split(", ");
    const opts = names.filter((n) => !positionalNames.has(n));
    if (opts.length > 0) return new CfsError(opts.map(flag).join(", "), `required option${opts.length > 1 ? "s" : ""} missing (${see})`);
    return new CfsError(cmd || "cfsboot", `missing argument ${names.map((n) => n.toUpperCase()).join(" ")} (${see})`);
  }
  if ((m = /^Not enough arguments following: (.*)$/s.exec(msg))) return new CfsError(flag(m[1]!), `missing value (${see})`);
  if ((m = /^Arguments (\S+) and (\S+) are mutually exclusive$/s.exec(msg))) return new CfsError(`${flag(m[1]!)}, ${flag(m[2]!)}`, `cannot be used together (${see})`);
  if ((m = /^Invalid values?:\s*Argument: ([^,]+), Given: (.*?), Choices: (.*)$/s.exec(msg))) {
    const name = m[1]!;
    const given = m[2]!.replace(/^"(.*)"$/, "$1");
    const choices = m[3]!.split(/,\s*/).map((c) => c.replace(/^"(.*)"$/, "$1"));
    if (positionalNames.has(name)) return new CfsError(given, `invalid ${name} (expected ${listOf(choices)}; ${see})`);
    return new CfsError(`${flag(name)}=${given}`, `invalid value (expected ${listOf(choices)})`);
  }
  if ((m = /^Not enough non-option arguments: got (\d+), need at least (\d+)$/s.exec(msg)) || subcommands.length > 0) {
    if (subcommands.length > 0) {
      if (extra !== undefined && !subcommands.includes(extra)) return unknownCommand(extra);
      return new CfsError(cmd, `missing command (commands: ${subcommands.join(", ")}; ${see})`);
    }
    const got = Number(m?.[1] ?? 0);
    const missing = required.slice(got).map((n) => n.toUpperCase());
    return new CfsError(cmd || "cfsboot", `missing argument${missing.length > 1 ? "s" : ""} ${missing.join(" ") || "(see usage)"} (${see})`);
  }
  if ((m = /^Too many non-option arguments: got (\d+), maximum of (\d+)$/s.exec(msg))) {
    const token = lastParsed?.positionals[path.length + Number(m[2])];
    return new CfsError(token ?? cmd, `unexpected argument (${see})`);
  }
  return new CfsError(cmd || "usage", `${oneLine(msg)} (${see})`);
}

/**
 * Every string and number option of a command needs a value: `--sysroot`
 * at the end or followed by another option is an error, never "" (which
 * would resolve to the current directory).
 */
function valuesRequired(y: Argv): Argv {
  const o = (y as unknown as { getOptions?: () => { string?: string[]; number?: string[]; key?: Record<string, unknown> } }).getOptions?.();
  if (o === undefined) return y;
  const keys = [...new Set([...(o.string ?? []), ...(o.number ?? [])])].filter((k) => o.key?.[k] !== undefined);
  return keys.length > 0 ? y.requiresArg(keys) : y;
}

/**
 * The command modules a parse of `argv` needs: only the invoked command's
 * when the first word names one (yargs then dispatches to it whatever else
 * is registered), else all of them (top-level --help, a missing or unknown
 * command: the messages list every command). Loading one command instead of
 * all saves most of the start-up (its imports are all a run pays for).
 */
async function commandsFor(argv: readonly string[], all: readonly CommandEntry[] = commands): Promise<CommandModule[]> {
  const first = argv[0];
  const hit = first === undefined ? undefined : all.find((c) => c.names.includes(first));
  return Promise.all((hit ? [hit] : all).map((c) => c.load()));
}

/**
 * The terminal width for help text. Only a terminal has one, and asking
 * `process.stdout` creates Bun's stdout stream (~20 ms of CPU), so it is
 * asked only when fd 1 is a terminal.
 */
function terminalColumns(): number | undefined {
  try {
    return fstatSync(1).isCharacterDevice() && isatty(1) ? process.stdout.columns : undefined;
  } catch {
    return undefined;
  }
}

/**
 * yargs renders the whole help text of the command it runs right after
 * starting the handler, in case the handler asks for it (`showHelp()` inside
 * a handler; cfsboot never does): string widths, wrapping, 20–40 ms of CPU
 * per run. Failures do not use it (the .fail() handler below reports them).
 */
function skipHelpCache(parser: Argv): void {
  const usage = (parser as unknown as { getInternalMethods?: () => { getUsageInstance?: () => { cacheHelpMessage?: () => void } } }).getInternalMethods?.().getUsageInstance?.();
  if (usage?.cacheHelpMessage) usage.cacheHelpMessage = () => {};
}

export async function runCli(argv: string[]): Promise<number> {
  exitStatus = 0;
  installInterruptHandlers();
  try {
    const modules = await commandsFor(argv);
    // A long FILE… list: first a parse without most of it (host/cli-tail.ts).
    const tail = splitTail(argv);
    if (tail !== null) {
      try {
        await parse(argv, modules, tail);
        return exitStatus;
      } catch (e) {
        if (!(e instanceof RetryFullParse)) throw e;
      }
    }
    await parse(argv, modules, null);
  } catch (e) {
    reportError(e);
    return 1;
  }
  return exitStatus;
}

/** Parses `argv` (its `tail` left to applyTail) and runs the command. */
async function parse(argv: string[], modules: readonly CommandModule[], tail: Tail | null): Promise<void> {
  exitStatus = 0;
  lastParsed = null;
  let tailDone = tail === null;
  let parser = yargs((tail?.head ?? argv).map((a) => (a === "-" ? DASH : a)))
    .middleware(((args: Record<string, unknown>, y: unknown) => {
      restoreDash(args);
      captureParse(args, y);
      if (!tailDone) {
        if (!applyTail(args, y, tail!)) throw new RetryFullParse();
        tailDone = true;
      }
    }) as unknown as (args: Record<string, unknown>) => void, true)
    .middleware(refuseRepeats, true)
    .scriptName("cfsboot")
    .strict()
    .demandCommand(1, "a command is required (see --help)")
    .recommendCommands()
    .help()
    .version(false)
    .wrap(Math.min(110, terminalColumns() ?? 100))
    .exitProcess(false)
    .fail((msg: string | undefined, err: Error | undefined, usage: unknown) => {
      // The shortened parse failed: the message could name the wrong words.
      if (!tailDone) throw new RetryFullParse();
      // yargs-parser's own complaints arrive as errors ("Not enough arguments following: x").
      if (err !== undefined && !(err instanceof CfsError) && /^Not enough arguments following: /.test(err.message)) throw usageError(err.message, usage as UsageLike, argv);
      throw err ?? usageError(msg ?? "invalid arguments", usage as UsageLike, argv);
    });
  skipHelpCache(parser);
  for (const c of modules) parser = parser.command(c);
  await parser.parseAsync();
}
