// TarReader with a caller that reuses its chunk buffer (as the layer import
// does: decompressed output goes to one buffer, copyPending() after each
// chunk). Extension headers consumed from one chunk whose entry header comes
// in the next must survive the buffer being overwritten: seen as "invalid PAX
// mtime value" with garbage at a chunk boundary when pulling a 340 MB rootfs
// layer (posix tar, PAX mtimes and xattrs) in the VM tests.

import { describe, expect, it } from "vitest";
import { TarReader, encodeTarEntry, tarEndMarker } from "../../shared/tar.ts";

function archive(): Uint8Array {
  const parts: Uint8Array[] = [];
  for (let i = 0; i < 40; i++) {
    parts.push(...encodeTarEntry({
      path: `usr/share/f${i}-${"n".repeat(i * 7)}`,
      type: "regular",
      mode: 0o644,
      mtimeSec: 1_700_000_000 + i,
      mtimeNsec: 123_000_000 + i,
      data: new Uint8Array(i * 97).fill(i),
      xattrs: new Map([["user.k", new Uint8Array([i, i + 1])]]),
    }, "pax"));
  }
  parts.push(tarEndMarker());
  return new Uint8Array(Buffer.concat(parts));
}

function readWithReusedBuffer(tar: Uint8Array, chunk: number): Array<{ path: string; sec: bigint | number; nsec: number; size: number }> {
  const r = new TarReader({ name: "layer" });
  const buf = new Uint8Array(chunk);
  const out: Array<{ path: string; sec: bigint | number; nsec: number; size: number }> = [];
  for (let off = 0; off < tar.length; off += chunk) {
    const n = Math.min(chunk, tar.length - off);
    buf.set(tar.subarray(off, off + n));
    r.push(buf.subarray(0, n));
    for (let ev = r.next(); ev !== null; ev = r.next()) {
      if (ev.kind === "entry") out.push({ path: ev.entry.path, sec: ev.entry.mtimeSec, nsec: ev.entry.mtimeNsec, size: ev.entry.size });
    }
    r.copyPending();
    buf.fill(0xa5); // the next chunk overwrites it; make any stale view visible
  }
  r.end();
  for (let ev = r.next(); ev !== null; ev = r.next()) {
    if (ev.kind === "entry") out.push({ path: ev.entry.path, sec: ev.entry.mtimeSec, nsec: ev.entry.mtimeNsec, size: ev.entry.size });
  }
  expect(r.done).toBe(true);
  return out;
}

describe("TarReader.copyPending with one reused chunk buffer", () => {
  const tar = archive();
  const want = readWithReusedBuffer(tar, tar.length + 512);

  it("reads the archive whole (reference)", () => {
    expect(want.length).toBe(40);
    expect(want[3]).toMatchObject({ path: `/usr/share/f3-${"n".repeat(21)}`, nsec: 123_000_003, size: 291 });
  });

  // Every chunk size that is a multiple of the block size puts some PAX header at a chunk's end.
  for (const chunk of [512, 1024, 1536, 4096, 4608]) {
    it(`chunks of ${chunk} bytes give the same entries (PAX names, mtimes, sizes)`, () => {
      expect(readWithReusedBuffer(tar, chunk)).toEqual(want);
    });
  }
});
