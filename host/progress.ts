// Progress bars for long operations: shown on stderr when it is a terminal,
// nothing at all on a pipe or file (so scripts and tests see clean output).

import { SingleBar } from "cli-progress";

export interface Progress {
  /** Set the current step's label and byte counts (total 0 = unknown). */
  update(label: string, done: number, total: number): void;
  stop(): void;
}

const NONE: Progress = { update() {}, stop() {} };

function mib(n: number): string {
  return (n / 1048576).toFixed(n >= 10 * 1048576 ? 0 : 1);
}

/** A bar titled `title` on a TTY; a no-op elsewhere (or with CFSBOOT_NO_PROGRESS set). */
export function progressBar(title: string): Progress {
  if (!process.stderr.isTTY || process.env.CFSBOOT_NO_PROGRESS) return NONE;
  let bar: SingleBar | null = null;
  let last = 0;
  return {
    update(label, done, total) {
      const now = Date.now();
      if (now - last < 100 && done < total) return;
      last = now;
      if (bar === null) {
        bar = new SingleBar(
          { format: `${title}: {label} [{bar}] {doneMiB}/{totalMiB} MiB`, stream: process.stderr, hideCursor: true, clearOnComplete: true },
        );
        bar.start(Math.max(total, 1), done, { label, doneMiB: mib(done), totalMiB: mib(total) });
      } else {
        bar.setTotal(Math.max(total, 1));
        bar.update(done, { label, doneMiB: mib(done), totalMiB: mib(total) });
      }
    },
    stop() {
      bar?.stop();
      bar = null;
    },
  };
}
