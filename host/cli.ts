// The command line: parse argv with yargs, run one command, turn errors into
// one line on stderr and an exit status. Each command lives in its own file
// under host/commands/ and exports a yargs CommandModule built with
// `defineCommand` below.

import yargs, { type Argv, type CommandModule } from "yargs";
import { CfsError } from "../shared/errors.ts";

import { commands } from "./commands/index.ts";

/** Exit status requested by the command that ran (0 unless it set one). */
let exitStatus = 0;

export function setExitStatus(code: number): void {
  exitStatus = code;
}

/** Print `cfsboot: <message>` for an error; a stack only for internal errors. */
export function reportError(e: unknown): void {
  if (e instanceof CfsError) {
    process.stderr.write(`cfsboot: ${e.message}\n`);
  } else {
    const msg = e instanceof Error ? e.message.split("\n")[0] : String(e);
    process.stderr.write(`cfsboot: internal error: ${msg}\n`);
    if (process.env.CFSBOOT_DEBUG && e instanceof Error) process.stderr.write(`${e.stack}\n`);
  }
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
    builder: (spec.builder ?? ((y: Argv) => y)) as CommandModule["builder"],
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

export async function runCli(argv: string[]): Promise<number> {
  exitStatus = 0;
  let parser = yargs(argv.map((a) => (a === "-" ? DASH : a)))
    .middleware(restoreDash, true)
    .scriptName("cfsboot")
    .strict()
    .demandCommand(1, "a command is required (see --help)")
    .recommendCommands()
    .help()
    .version(false)
    .wrap(Math.min(110, process.stdout.columns ?? 100))
    .exitProcess(false)
    .fail((msg: string | undefined, err: Error | undefined) => {
      throw err ?? new CfsError("usage", msg ?? "invalid arguments");
    });
  for (const c of commands) parser = parser.command(c);
  try {
    await parser.parseAsync();
  } catch (e) {
    reportError(e);
    return 1;
  }
  return exitStatus;
}
