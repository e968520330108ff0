// host/atomic.ts: complete-or-absent output files, and "-" for stdout.

import { spawnSync } from "node:child_process";
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { openAtomic, writeFileAtomic } from "../../host/atomic.ts";
import { projectRoot } from "../helpers/env.ts";

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "cfsboot-atomic-"));
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("writeFileAtomic / openAtomic", () => {
  test("creates, then replaces with a new inode; no temporary file is left", () => {
    const f = join(dir, "out");
    writeFileAtomic(f, "first");
    const ino = lstatSync(f).ino;
    writeFileAtomic(f, new Uint8Array([1, 2, 3]), { mode: 0o600 });
    expect([...readFileSync(f)]).toEqual([1, 2, 3]);
    expect(lstatSync(f).ino).not.toBe(ino);
    expect(lstatSync(f).mode & 0o777).toBe(0o600 & ~process.umask());
    expect(readdirSync(dir)).toEqual(["out"]);
  });

  test("nothing is visible at the path until commit; abort leaves the old file", () => {
    const f = join(dir, "staged");
    writeFileSync(f, "old");
    const a = openAtomic(f);
    a.write(new TextEncoder().encode("new content"));
    expect(readFileSync(f, "utf8")).toBe("old");
    a.abort();
    expect(readFileSync(f, "utf8")).toBe("old");
    expect(readdirSync(dir).filter((n) => n.startsWith(".staged"))).toEqual([]);
    const b = openAtomic(f);
    b.write(new TextEncoder().encode("new content"));
    b.commit();
    expect(readFileSync(f, "utf8")).toBe("new content");
  });

  test("a missing directory is one error naming the output path", () => {
    expect(() => writeFileAtomic(join(dir, "no/such/out"), "x")).toThrow(
      `${join(dir, "no/such/out")}: open failed: No such file or directory (ENOENT)`,
    );
  });

  test("renaming over a directory fails and removes the temporary file", () => {
    const d = join(dir, "adir");
    mkdirSync(d);
    writeFileSync(join(d, "keep"), "");
    expect(() => writeFileAtomic(d, "x")).toThrow(/rename failed: .*\((EISDIR|ENOTEMPTY|EEXIST)\)/);
    expect(readdirSync(dir).filter((n) => n.includes(".tmp-"))).toEqual([]);
  });
});

describe("writeOutput", () => {
  test('"-" writes everything to stdout, even a large buffer through a pipe', () => {
    const script = join(dir, "w.ts");
    writeFileSync(
      script,
      `import { writeOutput } from ${JSON.stringify(join(projectRoot, "host/atomic.ts"))};
const data = new Uint8Array(8 << 20).map((_, i) => i % 251);
writeOutput("-", data, { binary: true });
`,
    );
    const r = spawnSync(process.execPath, [script], { maxBuffer: 1 << 26 });
    expect(r.status, r.stderr.toString()).toBe(0);
    expect(r.stdout.byteLength).toBe(8 << 20);
    expect(r.stdout[1000]).toBe(1000 % 251);
  });
});
