// Durable, crash-safe directory operations for the host's state (deployment
// directories, kernel directories, loader entry sets):
//
// - a directory is built under a temporary name in its final parent
//   (`.NAME.tmp-XXXXXXXX`), every file and directory in it fsynced, then
//   renamed into place (or exchanged with the old one by
//   renameat2(RENAME_EXCHANGE)) and the parent fsynced: readers see the old
//   directory or the complete new one, never a mix;
// - a directory is removed by first renaming it to `.NAME.trash-XXXXXXXX`
//   (atomic: the name disappears at once), then deleting the trash; trash and
//   temporaries left by a crash are recognised by `isLeftover` and removed by
//   the next gc;
// - paths are byte strings (BStr, latin1): every Node fs call gets a Buffer.

import { randomBytes } from "node:crypto";
import { closeSync, fsyncSync, lstatSync, mkdirSync, openSync, readdirSync, rmSync, writeSync } from "node:fs";
import { basename, dirname } from "node:path";

import type { BStr } from "../shared/bytes.ts";
import { CfsError } from "../shared/errors.ts";
import * as sys from "../shared/sys.ts";

/** A byte-string path as a Buffer for Node's fs. */
export const bp = (p: BStr): Buffer => Buffer.from(p, "latin1");

/** Node error → CfsError about `path`. */
export function fsErr(path: BStr, call: string, e: unknown): CfsError {
  return sys.fromNodeError(path, call, e);
}

export function exists(path: BStr): boolean {
  try {
    lstatSync(bp(path));
    return true;
  } catch {
    return false;
  }
}

export function isDirectory(path: BStr): boolean {
  try {
    return lstatSync(bp(path)).isDirectory();
  } catch {
    return false;
  }
}

/** mkdir -p; each directory created gets `mode`. */
export function mkdirp(path: BStr, mode = 0o755): void {
  try {
    mkdirSync(bp(path), { recursive: true, mode });
  } catch (e) {
    throw fsErr(path, "mkdir", e);
  }
}

/** Names in a directory (byte strings, sorted); [] when it does not exist. */
export function listDir(path: BStr): BStr[] {
  try {
    return (readdirSync(bp(path), { encoding: "buffer" }) as Buffer[]).map((b) => b.toString("latin1")).sort();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return [];
    throw fsErr(path, "readdir", e);
  }
}

export function fsyncDir(path: BStr): void {
  sys.fsyncPath(path);
}

const rand = (): string => randomBytes(4).toString("hex");

/** A fresh temporary name next to `final`: `<dir>/.<name>.tmp-XXXXXXXX`. */
export function tempSibling(final: BStr): BStr {
  return `${dirname(final)}/.${basename(final)}.tmp-${rand()}`;
}

/** `.NAME.tmp-XXXXXXXX` and `.NAME.trash-XXXXXXXX` left behind by an interrupted command. */
export function isLeftover(name: BStr): boolean {
  return /^\..+\.(tmp|trash)-[0-9a-f]{8}$/.test(name);
}

/** Remove a file or a whole tree without following symlinks (no error when absent). */
export function removeTree(path: BStr): void {
  try {
    rmSync(bp(path), { recursive: true, force: true });
  } catch (e) {
    throw fsErr(path, "remove", e);
  }
}

/**
 * Remove a directory (or file) so that it vanishes atomically: rename to a
 * trash name, fsync the parent, then delete the trash.
 */
export function removeAtomic(path: BStr): void {
  if (!exists(path)) return;
  const trash = `${dirname(path)}/.${basename(path)}.trash-${rand()}`;
  try {
    sys.renameat2(sys.AT_FDCWD, path, sys.AT_FDCWD, trash, sys.RENAME_NOREPLACE);
  } catch (e) {
    if (sys.isErrno(e, "ENOENT")) return;
    throw e;
  }
  fsyncDir(dirname(path));
  removeTree(trash);
}

/**
 * Put the finished directory (or file) `tmp` at `final`: a plain rename when
 * `final` does not exist, otherwise an atomic exchange followed by removal of
 * the old content. The parent is fsynced.
 */
export function publish(tmp: BStr, final: BStr): void {
  try {
    sys.renameat2(sys.AT_FDCWD, tmp, sys.AT_FDCWD, final, sys.RENAME_NOREPLACE);
    fsyncDir(dirname(final));
    return;
  } catch (e) {
    if (!sys.isErrno(e, "EEXIST", "ENOTEMPTY")) throw e;
  }
  exchange(tmp, final);
  // `tmp` now holds the old content.
  const trash = `${dirname(final)}/.${basename(final)}.trash-${rand()}`;
  sys.renameat2(sys.AT_FDCWD, tmp, sys.AT_FDCWD, trash, sys.RENAME_NOREPLACE);
  fsyncDir(dirname(final));
  removeTree(trash);
}

/** renameat2(RENAME_EXCHANGE): both names must exist; swaps them atomically. */
export function exchange(a: BStr, b: BStr): void {
  sys.renameat2(sys.AT_FDCWD, a, sys.AT_FDCWD, b, sys.RENAME_EXCHANGE);
  fsyncDir(dirname(b));
  if (dirname(a) !== dirname(b)) fsyncDir(dirname(a));
}

/** Create a new file (it must not exist), write `data`, fsync. For files inside a temporary directory. */
export function writeNewFile(path: BStr, data: Uint8Array | string, mode = 0o644): void {
  let fd: number;
  try {
    fd = openSync(bp(path), "wx", mode);
  } catch (e) {
    throw fsErr(path, "open", e);
  }
  try {
    const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : data;
    let off = 0;
    while (off < bytes.byteLength) off += writeSync(fd, bytes, off, bytes.byteLength - off);
    fsyncSync(fd);
  } catch (e) {
    throw fsErr(path, "write", e);
  } finally {
    closeSync(fd);
  }
}

/** fsync every file and directory below `root` (directories after their content). */
export function fsyncTree(root: BStr): void {
  const st = lstatSync(bp(root));
  if (st.isSymbolicLink()) return;
  if (st.isDirectory()) {
    for (const name of listDir(root)) fsyncTree(`${root}/${name}`);
  } else if (!st.isFile()) {
    return;
  }
  let fd: number;
  try {
    fd = openSync(bp(root), "r");
  } catch (e) {
    throw fsErr(root, "open", e);
  }
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
