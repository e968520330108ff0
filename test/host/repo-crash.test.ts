// kill -9 while objects are imported and a stream is written: the
// repository stays clean (fsck finds nothing: no partial object under a
// name, no stream without its objects), O_TMPFILE leaves no temporary, and
// running the same import again completes. With named temporaries (file
// systems without O_TMPFILE) a killed import may leave `objects/.tmp-object-*`
// behind: fsck ignores them and gc removes them once they are old enough.

import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { toHex } from "../../shared/bytes.ts";
import { fsverityDigest } from "../../shared/fsverity.ts";
import { Repository } from "../../host/repo.ts";
import { projectRoot } from "../helpers/env.ts";
import { bytesOf } from "../helpers/repo-fixture.ts";

const COUNT = 8;
const SIZES = [100, 4096, 70_000, 1_000_000, 3_000_000]; // what repo-writer.ts writes for object i (i % 5)

let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "cfsboot-repo-crash-"));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Run the writer; with `killAfter`, SIGKILL it `delayMs` after its `killAfter`-th object line. */
function writer(path: string, args: string[], kill?: { afterLines: number; delayMs: number }): Promise<{ out: string; killed: boolean }> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [`${projectRoot}test/helpers/repo-writer.ts`, path, "crash", String(COUNT), "--stream", "oci-layer-sha256:crash", ...args], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    let armed = false;
    c.stdout.on("data", (d) => {
      out += d;
      const lines = out.split("\n").filter((l) => /^\d+ /.test(l)).length;
      if (kill && !armed && out.includes("ready") && lines >= kill.afterLines) {
        armed = true;
        setTimeout(() => c.kill("SIGKILL"), kill.delayMs);
      }
    });
    c.stderr.on("data", (d) => (err += d));
    c.on("exit", (code, signal) => {
      if (signal === "SIGKILL") resolve({ out, killed: true });
      else if (code === 0) resolve({ out, killed: false });
      else reject(new Error(`writer failed (${code}): ${err}`));
    });
  });
}

async function expectClean(path: string): Promise<void> {
  const repo = Repository.open(path);
  try {
    const r = await repo.fsck();
    expect(r.errors.map((e) => `${e.kind} ${e.path} ${e.detail}`)).toEqual([]);
    // Every object there is complete: its name is its digest (fsck checked) and no stream dangles.
    const s = repo.hasStream("oci-layer-sha256:crash");
    if (s !== null) for (let i = 0; i < COUNT; i++) expect(repo.hasObject(fsverityDigest(bytesOf(`crash/${i}`, SIZES[i % 5]!), "sha512"))).toBe(true);
  } finally {
    repo.close();
  }
}

async function expectComplete(path: string): Promise<void> {
  const repo = Repository.open(path);
  try {
    const info = repo.openStream("oci-layer-sha256:crash");
    expect(info.objectRefs.map(toHex)).toEqual([...Array(COUNT).keys()].map((i) => toHex(fsverityDigest(bytesOf(`crash/${i}`, SIZES[i % 5]!), "sha512"))));
    expect(repo.listRefs("streams/refs").map((r) => r.name)).toEqual(["oci-layer-sha256:crash"]);
  } finally {
    repo.close();
  }
}

describe("kill -9 during import", () => {
  test("O_TMPFILE: at 6 points (before the first object … while the stream is linked), fsck clean, no temporaries, re-run completes", async () => {
    const points = [
      { afterLines: 0, delayMs: 5 },
      { afterLines: 1, delayMs: 0 },
      { afterLines: 3, delayMs: 3 },
      { afterLines: 4, delayMs: 20 },
      { afterLines: COUNT - 1, delayMs: 0 },
      { afterLines: COUNT, delayMs: 0 },
    ];
    let kills = 0;
    for (const [k, point] of points.entries()) {
      const path = join(dir, `tmpfile${k}`);
      Repository.init(path, { insecure: true }).repo.close();
      const r = await writer(path, [], point);
      if (r.killed) kills++;
      await expectClean(path);
      expect(readdirSync(`${path}/objects`).filter((f) => !/^[0-9a-f]{2}$/.test(f))).toEqual([]);
      const again = await writer(path, []);
      expect(again.out).toContain("done");
      await expectComplete(path);
      await expectClean(path);
    }
    // Most points must really have interrupted the writer.
    expect(kills).toBeGreaterThanOrEqual(4);
  });

  test("named temporaries: leftovers are ignored by fsck and removed by gc after the threshold", async () => {
    const path = join(dir, "named");
    Repository.init(path, { insecure: true }).repo.close();
    let leftovers = 0;
    for (const point of [{ afterLines: 2, delayMs: 2 }, { afterLines: 3, delayMs: 8 }, { afterLines: 4, delayMs: 1 }]) {
      await writer(path, ["--named"], point);
      leftovers = readdirSync(`${path}/objects`).filter((f) => f.startsWith(".tmp-object-")).length;
      await expectClean(path);
    }
    // A kill in the middle of an object leaves its named temporary behind.
    expect(leftovers).toBeGreaterThan(0);
    const again = await writer(path, ["--named"]);
    expect(again.out).toContain("done");
    await expectComplete(path);
    const repo = Repository.open(path);
    try {
      const fresh = await repo.gc({});
      expect(fresh.tmpRemoved).toBe(0); // younger than the threshold: kept
      const r = await repo.gc({ tmpMaxAgeMs: -1 });
      expect(r.tmpRemoved).toBe(leftovers);
      expect(r.objectsRemoved).toBe(0);
      expect(readdirSync(`${path}/objects`).filter((f) => f.startsWith("."))).toEqual([]);
    } finally {
      repo.close();
    }
    await expectComplete(path);
  });
});
