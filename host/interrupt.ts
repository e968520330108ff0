// Ctrl-C and SIGTERM in the middle of a command.
//
// Everything cfsboot writes is crash-safe (temporary names, renames,
// content-addressed objects), so stopping at any point leaves a consistent
// state; what a signal must not leave behind are the temporary files and
// work directories of the operation it interrupted. Code that creates one
// registers its removal with `onInterrupt` and unregisters it once the
// temporary is renamed into place or removed. On SIGINT or SIGTERM
// the CLI runs every registered cleanup (newest first), prints one line
// `cfsboot: interrupted (SIGTERM)` and exits with 128 + the signal number,
// as a shell reports a command killed by that signal.

import { rmSync } from "node:fs";

const cleanups = new Set<() => void>();

/** Run `fn` if the command is interrupted; returns the function that unregisters it. */
export function onInterrupt(fn: () => void): () => void {
  cleanups.add(fn);
  return () => {
    cleanups.delete(fn);
  };
}

/** Remove `path` (a temporary file or directory) if the command is interrupted. */
export function removeOnInterrupt(path: string): () => void {
  return onInterrupt(() => rmSync(path, { recursive: true, force: true }));
}

/** Run the registered cleanups now (newest first), ignoring their errors. */
export function runInterruptCleanups(): void {
  for (const fn of [...cleanups].reverse()) {
    try {
      fn();
    } catch {}
  }
  cleanups.clear();
}

/**
 * Let a signal that arrived during a synchronous stretch (a spawned tool, a
 * copy loop) be handled now, before the caller commits its result: call it
 * right before renaming a finished output into place. A signal handler only
 * runs when the event loop turns.
 */
export async function checkpoint(): Promise<void> {
  await new Promise((r) => setTimeout(r, 1));
  await new Promise((r) => setImmediate(r));
}

// Not SIGHUP: a command started under nohup must keep ignoring it.
const SIGNALS: Record<string, number> = { SIGINT: 2, SIGTERM: 15 };

let installed = false;

/** Install the handlers (the CLI does, once). */
export function installInterruptHandlers(): void {
  if (installed) return;
  installed = true;
  for (const [name, num] of Object.entries(SIGNALS)) {
    process.on(name as NodeJS.Signals, () => {
      runInterruptCleanups();
      try {
        process.stderr.write(`cfsboot: interrupted (${name})\n`);
      } catch {}
      process.exit(128 + num);
    });
  }
}
