// A cache entry is built by one process at a time: an O_EXCL lock file holding
// the builder's pid; a lock whose pid is gone is stale and taken over.

import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { dirname } from "node:path";

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

export async function withLock<T>(path: string, fn: () => Promise<T>, waitMs = 3_600_000): Promise<T> {
  mkdirSync(dirname(path), { recursive: true });
  const start = Date.now();
  for (;;) {
    try {
      const fd = openSync(path, "wx");
      writeSync(fd, String(process.pid));
      closeSync(fd);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      let pid = 0;
      try {
        pid = Number(readFileSync(path, "utf8"));
      } catch {
        continue;
      }
      if (!pid || !alive(pid)) {
        rmSync(path, { force: true });
        continue;
      }
      if (Date.now() - start > waitMs) throw new Error(`${path}: still locked by pid ${pid}`);
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(path, { force: true });
  }
}
