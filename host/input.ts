// Reading a whole input file named on the command line (an image, a
// dumpfile, a manifest): only regular files and pipes are read. A directory
// or a device is refused before reading, so `/dev/zero` given as an image
// is an error instead of a read that never ends, and every failure is one
// `<path>: <what>` CfsError.

import { closeSync, fstatSync, openSync, readFileSync } from "node:fs";

import { CfsError, describeError } from "../shared/errors.ts";
import { fromNodeError as sysError } from "../shared/sys.ts";

/**
 * A plain Uint8Array over a Buffer's bytes, without copying (`new
 * Uint8Array(buffer)` copies, and fresh memory is expensive: 0.3–0.5 s of
 * CPU for a 30 MB dumpfile on the development machine).
 */
function view(b: Buffer): Uint8Array {
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/** Node's error as a CfsError naming `label` (errno errors as `<call> failed: <strerror> (E…)`). */
function fromNodeError(label: string, call: string, e: unknown): CfsError {
  try {
    return sysError(label, call, e);
  } catch {
    return new CfsError(label, `cannot read: ${describeError(e)}`); // e.g. larger than Node's 2 GiB read limit
  }
}

/** The bytes of `path` (`-` = stdin); `label` names it in errors (default: the path). */
export function readInputFile(path: string, label = path === "-" ? "stdin" : path): Uint8Array {
  if (path === "-") {
    try {
      return view(readFileSync(0));
    } catch (e) {
      throw fromNodeError(label, "read", e);
    }
  }
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (e) {
    throw fromNodeError(label, "read", e);
  }
  try {
    const st = fstatSync(fd);
    if (st.isDirectory()) throw new CfsError(label, "is a directory");
    if (!st.isFile() && !st.isFIFO() && !st.isSocket()) throw new CfsError(label, "not a regular file");
    return view(readFileSync(fd));
  } catch (e) {
    throw e instanceof CfsError ? e : fromNodeError(label, "read", e);
  } finally {
    closeSync(fd);
  }
}
