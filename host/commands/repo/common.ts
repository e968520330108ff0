// Shared plumbing of the `cfsboot repo …` subcommands: the global options
// and opening the repository they name. Every subcommand file (init, gc,
// pull, …) imports these, so the options mean the same everywhere.
//
//   cfsboot repo [--repo DIR | --system | --user] [--insecure] [--require-verity] CMD …
//
// - location: --repo DIR, --system (/sysroot/composefs), --user
//   ($HOME/.var/lib/composefs); default: system for root, user otherwise;
// - --insecure: do not require fs-verity even if the repository has it
//   (digests are then checked in userspace where the kernel has none);
// - --require-verity: refuse a repository that is insecure.

import type { Argv } from "yargs";

import { type OpenOptions, Repository, resolveRepoPath } from "../../repo.ts";

export interface RepoGlobalArgs {
  repo?: string;
  system?: boolean;
  user?: boolean;
  insecure?: boolean;
  "require-verity"?: boolean;
}

/** Adds the global options (used by the `repo` command's builder). */
export function repoGlobalOptions<T>(y: Argv<T>): Argv<T & RepoGlobalArgs> {
  return y
    .option("repo", { type: "string", describe: "repository directory", global: true })
    .option("system", { type: "boolean", describe: "the system repository (/sysroot/composefs)", global: true })
    .option("user", { type: "boolean", describe: "the user repository ($HOME/.var/lib/composefs)", global: true })
    .option("insecure", { type: "boolean", describe: "do not require fs-verity", global: true })
    .option("require-verity", { type: "boolean", describe: "refuse a repository without fs-verity", global: true }) as unknown as Argv<T & RepoGlobalArgs>;
}

/** The repository directory the global options name. */
export function repoPath(args: RepoGlobalArgs): string {
  return resolveRepoPath({ repo: args.repo, system: args.system, user: args.user });
}

/** Open the repository the global options name (shared lock until closed). */
export function openRepo(args: RepoGlobalArgs, opts: Pick<OpenOptions, "writable"> = {}): Repository {
  return Repository.open(repoPath(args), {
    writable: opts.writable,
    insecure: args.insecure,
    requireVerity: args["require-verity"],
  });
}

/** Run `fn` with the repository open, and close it afterwards. */
export async function withRepo<T>(args: RepoGlobalArgs, opts: Pick<OpenOptions, "writable">, fn: (repo: Repository) => Promise<T> | T): Promise<T> {
  const repo = openRepo(args, opts);
  try {
    return await fn(repo);
  } finally {
    repo.close();
  }
}

/** Write text to stdout and wait until it is flushed (pipes included). */
export function print(text: string): Promise<void> {
  return new Promise((resolve, reject) => process.stdout.write(text, (e) => (e ? reject(e) : resolve())));
}

/**
 * A table as comfy-table's UTF8_FULL preset draws it (what cfsctl prints):
 * one space of padding, dashed lines between rows.
 */
export function utf8Table(header: string[], rows: string[][]): string {
  const width = header.map((h, i) => Math.max([...h].length, ...rows.map((r) => [...(r[i] ?? "")].length)));
  const line = (l: string, fill: string, mid: string, r: string) => l + width.map((w) => fill.repeat(w + 2)).join(mid) + r + "\n";
  const row = (cells: string[]) => "│" + cells.map((c, i) => ` ${c}${" ".repeat(width[i]! - [...c].length)} `).join("┆") + "│\n";
  let out = line("┌", "─", "┬", "┐") + row(header) + line("╞", "═", "╪", "╡");
  rows.forEach((r, i) => {
    if (i > 0) out += line("├", "╌", "┼", "┤");
    out += row(r);
  });
  return out + line("└", "─", "┴", "┘");
}
