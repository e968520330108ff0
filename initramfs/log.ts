// The agent's log: one line per step with its duration, to the kernel log.
//
// In the initramfs the journal is not running yet when the agent starts;
// /dev/kmsg reaches both the console (depending on `loglevel=`) and, later,
// the journal of the booted system (`journalctl -k -b`). Each write() to
// /dev/kmsg is one record; a leading `<N>` sets the priority (facility user
// unless given). The kernel rate-limits each open /dev/kmsg file to 10
// records per 5 s (printk_devkmsg=ratelimit, the default), so the file is
// reopened every few lines.
//
// Destinations: "auto" = /dev/kmsg when it can be opened for writing, else
// stderr; "stderr"; or any other path, written in the kmsg format (tests).

import { closeSync, openSync, writeSync } from "node:fs";

/**
 * Write to an fd directly. process.stderr/stdout are Node streams whose
 * first use sets up the stream machinery: 25–70 ms here, more than all the
 * agent's mounting.
 */
export function writeFd(fd: number, text: string): void {
  const b = Buffer.from(text, "utf8");
  for (let off = 0, again = 0; off < b.byteLength; ) {
    try {
      off += writeSync(fd, b, off, b.byteLength - off);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "EAGAIN" && again++ < 10_000) continue;
      return; // nowhere left to report to
    }
  }
}

export const TAG = "cfsboot-setup-root";

/** Records written per open of /dev/kmsg before reopening (the kernel allows a burst of 10). */
const KMSG_BURST = 8;

const LEVEL = { err: 3, warning: 4, info: 6, debug: 7 } as const;
type Level = keyof typeof LEVEL;

export class Log {
  private fd: number | null = null;
  private written = 0;
  /** Every line logged, without prefix (for the caller's summary). */
  readonly lines: string[] = [];
  readonly dest: string;

  constructor(dest = "auto") {
    if (dest === "auto") {
      this.dest = "/dev/kmsg";
      if (!this.openDest()) this.dest = "stderr";
    } else {
      this.dest = dest;
      if (dest !== "stderr" && !this.openDest()) this.dest = "stderr";
    }
  }

  private openDest(): boolean {
    try {
      this.fd = openSync(this.dest, this.dest === "/dev/kmsg" ? "w" : "a");
      this.written = 0;
      return true;
    } catch {
      this.fd = null;
      return false;
    }
  }

  /** True when lines go to stderr (then the caller need not print the failure twice). */
  get toStderr(): boolean {
    return this.dest === "stderr";
  }

  write(level: Level, msg: string): void {
    this.lines.push(msg);
    if (this.dest === "stderr") {
      writeFd(2, `${TAG}: ${msg}\n`);
      return;
    }
    if (this.dest === "/dev/kmsg" && this.written >= KMSG_BURST) {
      this.close();
      this.openDest();
    }
    if (this.fd === null) {
      writeFd(2, `${TAG}: ${msg}\n`);
      return;
    }
    try {
      // kmsg records are limited to ~1 KiB of text; long ids make lines long but well below.
      writeSync(this.fd, `<${LEVEL[level]}>${TAG}: ${msg}\n`);
      this.written++;
    } catch {
      writeFd(2, `${TAG}: ${msg}\n`);
    }
  }

  info(msg: string): void {
    this.write("info", msg);
  }

  warn(msg: string): void {
    this.write("warning", msg);
  }

  error(msg: string): void {
    this.write("err", msg);
  }

  close(): void {
    if (this.fd !== null) {
      try {
        closeSync(this.fd);
      } catch {
        // nothing to do
      }
      this.fd = null;
    }
  }
}

/** Milliseconds with one decimal. */
export function ms(t: number): string {
  return `${t < 10 ? t.toFixed(2) : t.toFixed(1)} ms`;
}
