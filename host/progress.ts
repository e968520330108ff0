// Progress bars for long operations: shown on stderr when it is a terminal,
// nothing at all on a pipe or file (so scripts and tests see clean output).
//
//   mkcomposefs: digesting [██████░░░░░░] 812/1530 MiB 96.3 MiB/s ETA 7s
//   sealing: objects [████████░░░░] 10412/15873 objects 2310/s ETA 2s

import { SingleBar } from "cli-progress";

import { onInterrupt } from "./interrupt.ts";

export interface Progress {
  /** Set the current step's label and amounts (bytes, or items with unit "items"; total 0 = unknown). */
  update(label: string, done: number, total: number): void;
  stop(): void;
}

const NONE: Progress = { update() {}, stop() {} };

function mib(n: number): string {
  return (n / 1048576).toFixed(n >= 10 * 1048576 ? 0 : 1);
}

/** 7s, 3m05s, 1h02m; "--" when unknown. */
export function formatEta(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "--";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

export interface ProgressOptions {
  /** What `done`/`total` count: bytes (shown in MiB, default) or items named `unit` ("objects"). */
  unit?: "bytes" | string;
}

/**
 * Width of a bar that leaves `text` columns for the rest of the line on
 * this terminal (10–40): lines longer than the terminal are cut off by the
 * bar library, and the rate and ETA at the end would be lost.
 */
export function barSize(text: number): number {
  const cols = process.stderr.columns || 80;
  return Math.max(10, Math.min(40, cols - 1 - text));
}

/** A bar titled `title` on a TTY, with rate and ETA; a no-op elsewhere (or with CFSBOOT_NO_PROGRESS set). */
export function progressBar(title: string, opts: ProgressOptions = {}): Progress {
  if (!process.stderr.isTTY || process.env.CFSBOOT_NO_PROGRESS) return NONE;
  const bytes = (opts.unit ?? "bytes") === "bytes";
  let bar: SingleBar | null = null;
  let last = 0;
  let start = 0;
  let lastDone = 0;
  let unregister = (): void => {};
  const payload = (label: string, done: number, total: number) => {
    const secs = Math.max((Date.now() - start) / 1000, 0.001);
    const rate = done / secs;
    const settled = secs >= 0.5; // no rate from the first few chunks
    const eta = total > 0 && done > 0 && settled ? formatEta((total - done) / rate) : "--";
    return bytes
      ? { label, amount: `${mib(done)}/${total > 0 ? mib(total) : "?"} MiB`, rate: settled ? `${mib(rate)} MiB/s` : "-- MiB/s", etaText: eta }
      : { label, amount: `${done}/${total > 0 ? total : "?"} ${opts.unit}`, rate: settled ? `${Math.round(rate)}/s` : "--/s", etaText: eta };
  };
  return {
    update(label, done, total) {
      const now = Date.now();
      if (done < lastDone) start = now; // a new phase counts from zero again: rate and ETA restart
      lastDone = done;
      if (now - last < 100 && done < total) return;
      last = now;
      if (bar === null) {
        start = now;
        const p0 = payload(label, done, total);
        const text = `${title}: ${label} [] ${p0.amount} 0000.0 MiB/s ETA 00m00s`.length;
        bar = new SingleBar({ format: `${title}: {label} [{bar}] {amount} {rate} ETA {etaText}`, stream: process.stderr, hideCursor: true, clearOnComplete: true, barsize: barSize(text) });
        bar.start(Math.max(total, 1), done, payload(label, done, total));
        const b = bar;
        unregister = onInterrupt(() => b.stop()); // Ctrl-C: give the cursor back
      } else {
        bar.setTotal(Math.max(total, 1));
        bar.update(done, payload(label, done, total));
      }
    },
    stop() {
      bar?.stop();
      bar = null;
      unregister();
    },
  };
}
