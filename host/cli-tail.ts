// Long FILE… lists past yargs.
//
// yargs parses argv once per command level and re-parses a variadic
// positional's values as `--files v1 --files v2 …`, growing the array by
// concatenation: ~0.1 ms per argument and quadratic (2000 files: ~0.25 s of
// CPU). So when argv ends in a long run of plain words, host/cli.ts parses
// argv with the run cut to its first KEEP words, and appends the rest once
// yargs has filled the positionals, before validation and the handler:
// `applyTail`, from a middleware. That is only done when the result is the
// one a full parse gives: the invoked command's last positional is variadic
// and typed string (no number coercion, no coerce function), no option could
// have taken the words (no array option without nargs), and the last kept
// word ended up as that positional's last value. Otherwise, and whenever the
// shortened parse fails (its message could name the wrong words), argv is
// parsed again in full (cli.ts: `RetryFullParse`).

/** Runs of plain words from this length on are shortened. */
export const TAIL_MIN = 32;
/** Words of the run that the shortened parse keeps. */
export const KEEP = 8;

export interface Tail {
  /** argv with the run cut after its first KEEP words. */
  head: string[];
  /** The words left out, in order. */
  rest: string[];
  /** The last word kept: it must end the variadic positional. */
  lastKept: string;
}

/** Thrown to parse argv again in full. */
export class RetryFullParse extends Error {
  constructor() {
    super("retry the parse with every argument");
  }
}

const plain = (a: string): boolean => !a.startsWith("-");

/**
 * The run of plain words after which argv has no plain word (only options
 * without separate values can follow), when it is long; null otherwise or
 * when argv has a `--` (after it, everything is positional).
 */
export function splitTail(argv: readonly string[]): Tail | null {
  if (argv.includes("--")) return null;
  let end = argv.length - 1;
  while (end >= 0 && !plain(argv[end]!)) end--;
  if (end < 0) return null;
  let start = end;
  while (start > 0 && plain(argv[start - 1]!)) start--;
  if (end - start + 1 < TAIL_MIN) return null;
  const cut = start + KEEP;
  return { head: [...argv.slice(0, cut), ...argv.slice(end + 1)], rest: argv.slice(cut, end + 1), lastKept: argv[cut - 1]! };
}

interface YargsLike {
  getInternalMethods?: () => { getContext?: () => { fullCommands?: string[] } };
  getOptions?: () => {
    string?: string[];
    array?: string[];
    narg?: Record<string, number>;
    coerce?: Record<string, unknown>;
    alias?: Record<string, string[]>;
  };
}

const camel = (s: string): string => s.replace(/[-_]+(.)/g, (_, c: string) => c.toUpperCase());

/**
 * Appends `tail.rest` to the invoked command's variadic positional in
 * `args` (and its aliases) when that gives what a full parse would; false
 * (nothing changed) otherwise.
 */
export function applyTail(args: Record<string, unknown>, y: unknown, tail: Tail): boolean {
  const yy = y as YargsLike;
  const leaf = yy.getInternalMethods?.().getContext?.().fullCommands?.at(-1);
  const opts = yy.getOptions?.();
  if (typeof leaf !== "string" || opts === undefined) return false;
  const m = /[<[]([^<>[\]]+?)\.\.[>\]]\s*$/.exec(leaf);
  if (!m) return false;
  const key = m[1]!.split("|")[0]!;
  if (!(opts.string ?? []).includes(key) || opts.coerce?.[key] !== undefined) return false;
  if ((opts.array ?? []).some((k) => k !== key && !((opts.narg?.[k] ?? 0) >= 1))) return false;
  const values = args[key];
  if (!Array.isArray(values) || values.at(-1) !== tail.lastKept) return false;
  const names = new Set([key, camel(key), ...(opts.alias?.[key] ?? [])]);
  const done = new Set<unknown[]>();
  for (const k of names) {
    const v = args[k];
    if (!Array.isArray(v) || done.has(v)) continue;
    done.add(v);
    v.push(...tail.rest);
  }
  return true;
}
