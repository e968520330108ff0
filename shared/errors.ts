// The one error type of cfsboot.
//
// Every expected failure (bad input, a refused operation, a failed syscall)
// is a CfsError naming the input it is about and what is wrong with it. The
// command line prints `cfsboot: <input>: <what>` on one line and exits 1; it
// never prints a stack trace for a CfsError. Anything else that escapes is a
// bug and is reported as an internal error.

export class CfsError extends Error {
  /** The input the error is about: a path, `line 12`, a karg, an image ref. */
  readonly input: string;
  /** What is wrong with it, as a short lower-case sentence fragment. */
  readonly what: string;

  constructor(input: string, what: string, options?: { cause?: unknown }) {
    super(printable(input === "" ? what : `${input}: ${what}`), options);
    this.name = "CfsError";
    this.input = input;
    this.what = what;
  }

  /** The same error with more context in front of the input, e.g. a file name before `line 3`. */
  within(outer: string): CfsError {
    const input = this.input === "" ? outer : `${outer}: ${this.input}`;
    return new CfsError(input, this.what, { cause: this.cause });
  }
}

/**
 * Control characters (from garbage input echoed in a message: a JSON parser
 * quoting a byte, a file name) as `\xNN`, so a message stays one readable
 * line on a terminal. Newlines and tabs are left to the printer.
 */
function printable(s: string): string {
  // eslint-disable-next-line no-control-regex
  const t = s.replace(/[\x00-\x08\x0b-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
  // A message quoting a whole garbage file stays a line, not a screenful.
  return t.length > MAX_MESSAGE ? `${t.slice(0, MAX_MESSAGE)}… (${t.length - MAX_MESSAGE} more characters)` : t;
}

const MAX_MESSAGE = 1000;

/** `s` as one printable line of at most `max` characters (for text read from a file into a message). */
export function oneLineText(s: string, max = 500): string {
  const t = printable(s.trim().split(/\s*\n\s*/).join("; "));
  return t.length > max ? `${t.slice(0, max)}…` : t;
}

/** Re-throw `e` as a CfsError located inside `outer` (a file name, an image). */
export function rethrowWithin(outer: string, e: unknown): never {
  if (e instanceof CfsError) throw e.within(outer);
  throw e;
}

/** A one-line description of any thrown value (for CfsError: its message). */
export function describeError(e: unknown): string {
  if (e instanceof CfsError) return e.message;
  if (e instanceof Error) return e.message.split("\n")[0] ?? String(e);
  return String(e);
}
