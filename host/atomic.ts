// Atomic file output, used by every command that writes a file.
//
// A file is written to a temporary name in the same directory, flushed with
// fsync, renamed over the destination and the directory is fsynced, so a
// reader sees either the old file or the complete new one, never a part;
// after a crash the new file is either complete or absent. A failure removes
// the temporary file and leaves the destination untouched.

import { closeSync, fstatSync, openSync, renameSync, unlinkSync, writeSync } from "node:fs";
import { basename, dirname } from "node:path";

import { CfsError } from "../shared/errors.ts";
import { fromNodeError, fsync, fsyncPath, isatty } from "../shared/sys.ts";
import { removeOnInterrupt } from "./interrupt.ts";


function writeAll(fd: number, data: Uint8Array, path: string): void {
  let off = 0;
  while (off < data.byteLength) {
    let n: number;
    try {
      n = writeSync(fd, data, off, data.byteLength - off);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "EAGAIN") {
        // stdout may be a non-blocking pipe: wait until it drains.
        Bun.sleepSync(1);
        continue;
      }
      throw fromNodeError(path, "write", e);
    }
    off += n;
  }
}

/** A temporary file next to `path`: `.NAME.tmp-XXXXXX`, created exclusively. */
function createTemp(path: string, mode: number): { tmp: string; fd: number } {
  const dir = dirname(path);
  for (let i = 0; ; i++) {
    const tmp = `${dir}/.${basename(path)}.tmp-${Buffer.from(crypto.getRandomValues(new Uint8Array(6))).toString("hex")}`;
    try {
      return { tmp, fd: openSync(tmp, "wx", mode) };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "EEXIST" && i < 10) continue;
      throw fromNodeError(path, "open", e);
    }
  }
}

/** An output file being written; nothing is visible at `path` until commit(). */
export interface AtomicFile {
  readonly path: string;
  write(data: Uint8Array): void;
  /** fsync, rename into place, fsync the directory. */
  commit(): void;
  /** Remove the temporary file (no-op after commit). */
  abort(): void;
}

export function openAtomic(path: string, opts: { mode?: number } = {}): AtomicFile {
  const { tmp, fd } = createTemp(path, opts.mode ?? 0o644);
  const unregister = removeOnInterrupt(tmp); // Ctrl-C/SIGTERM before commit: no temporary left
  let done = false;
  return {
    path,
    write(data) {
      writeAll(fd, data, path);
    },
    commit() {
      if (done) return;
      try {
        fsync(fd, path);
        closeSync(fd);
        done = true;
        renameSync(tmp, path);
        unregister();
      } catch (e) {
        this.abort();
        throw fromNodeError(path, "rename", e);
      }
      fsyncPath(dirname(path));
    },
    abort() {
      if (!done) {
        done = true;
        try {
          closeSync(fd);
        } catch {}
      }
      try {
        unlinkSync(tmp);
      } catch {}
      unregister();
    },
  };
}

/** Write `data` to `path` atomically (temp in same dir, fsync, rename, fsync dir). */
export function writeFileAtomic(path: string, data: Uint8Array | string, opts: { mode?: number } = {}): void {
  const f = openAtomic(path, opts);
  try {
    f.write(typeof data === "string" ? Buffer.from(data, "utf8") : data);
  } catch (e) {
    f.abort();
    throw e;
  }
  f.commit();
}

/** Write all of `data` to standard output (handles a non-blocking pipe). */
export function writeStdout(data: Uint8Array | string): void {
  writeAll(1, typeof data === "string" ? Buffer.from(data, "utf8") : data, "stdout");
}

/**
 * Write `data` to `path`, or to standard output when `path` is "-".
 * With `binary`, refuses a terminal on stdout (as C mkcomposefs does).
 */
export function writeOutput(path: string, data: Uint8Array | string, opts: { binary?: boolean; mode?: number } = {}): void {
  if (path === "-") {
    if (opts.binary && isTerminal(1)) throw new CfsError("stdout", "is a terminal; refusing to write binary data to it");
    writeStdout(data);
  } else {
    writeFileAtomic(path, data, opts);
  }
}

function isTerminal(fd: number): boolean {
  try {
    return fstatSync(fd).isCharacterDevice() && isatty(fd);
  } catch {
    return false;
  }
}
