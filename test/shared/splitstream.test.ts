// shared/splitstream.ts: the composefs-rs layout byte for byte (repository.md
// §7), round trips, tar layers reassembling to their diff_id, and reading
// streams written with other chunking / other zstd framing / other section
// order.

import { describe, expect, test } from "vitest";
import fc from "fast-check";
import * as zlib from "node:zlib";
import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";

import {
  CONTENT_TYPE, SplitStreamWriter, encodeSplitStream, parseSplitStream, collectChunks, reassemble, externalBlobRef,
  contentTypeName, type VerityAlgorithm,
} from "../../shared/splitstream.ts";
import { readTar, encodeTar, type TarWriteEntry } from "../../shared/tar.ts";
import { fsverityDigest } from "../../shared/fsverity.ts";
import { CfsError } from "../../shared/errors.ts";
import { canRun, hasTool } from "../helpers/env.ts";

const u64 = (b: Uint8Array, off: number) => new DataView(b.buffer, b.byteOffset).getBigUint64(off, true);
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

/** The splitting rules of composefs-rs tar.rs (repository.md §7.3), driven by shared/tar.ts events. */
async function splitTar(tar: Uint8Array, alg: VerityAlgorithm, objects: Map<string, Uint8Array>, chunk = 4096, limit?: number) {
  const w = new SplitStreamWriter({ algorithm: alg, contentType: CONTENT_TYPE.ociLayer, ...(limit ? { inlineChunkLimit: limit } : {}) });
  async function* src() {
    for (let i = 0; i < tar.length; i += chunk) yield tar.subarray(i, i + chunk);
  }
  let file: Uint8Array[] | null = null;
  const finishFile = () => {
    if (file === null) return;
    const content = new Uint8Array(Buffer.concat(file));
    const id = fsverityDigest(content, alg);
    objects.set(hex(id), content);
    w.writeExternal(id, content.length);
    file = null;
  };
  for await (const ev of readTar(src())) {
    if (ev.kind === "data" && file !== null) {
      file.push(ev.bytes.slice());
      continue;
    }
    // Any other event ends a large file's content (a 512-multiple has no padding).
    finishFile();
    if (ev.kind === "entry") {
      w.boundary();
      file = ev.entry.type === "regular" && ev.entry.size > 64 ? [] : null;
    }
    w.writeInline(ev.bytes);
    await w.drain();
  }
  finishFile();
  return { file: new Uint8Array(Buffer.concat(await w.finish())), stats: w.stats };
}

async function cat(file: Uint8Array, objects: Map<string, Uint8Array>, alg: VerityAlgorithm): Promise<Buffer> {
  const info = parseSplitStream(file, { algorithm: alg });
  const out: Uint8Array[] = [];
  for await (const b of reassemble(info, (id) => objects.get(hex(id))!)) out.push(b);
  return Buffer.concat(out);
}

describe("layout", () => {
  test("header, info and sections are where composefs-rs puts them", async () => {
    const obj = fsverityDigest(new Uint8Array([1, 2, 3]), "sha256");
    const sref = fsverityDigest(new Uint8Array([9]), "sha256");
    const file = await encodeSplitStream({
      algorithm: "sha256",
      contentType: CONTENT_TYPE.ociConfig,
      chunks: [{ external: obj, size: 3 }],
      namedRefs: [["sha256:bb", sref], ["config:sha256:aa", sref]],
    });
    expect(Buffer.from(file.subarray(0, 11)).toString()).toBe("SplitStream");
    expect([file[11], file[12], file[13], file[14], file[15]]).toEqual([0, 0, 0, 1, 12]);
    expect([u64(file, 16), u64(file, 24)]).toEqual([32n, 112n]);
    // info: stream_refs, object_refs, stream, named_refs, content type, size
    expect([u64(file, 32), u64(file, 40)]).toEqual([112n, 144n]);
    expect([u64(file, 48), u64(file, 56)]).toEqual([144n, 176n]);
    const [nrs, nre] = [u64(file, 80), u64(file, 88)];
    const [sts, ste] = [u64(file, 64), u64(file, 72)];
    expect(nrs).toBe(176n);
    expect(sts).toBe(nre);
    expect(ste).toBe(BigInt(file.length));
    expect(Buffer.from(file.subarray(96, 104)).toString("latin1")).toBe("ociconfg");
    expect(u64(file, 104)).toBe(3n);
    expect(hex(file.subarray(112, 144))).toBe(hex(sref));
    expect(hex(file.subarray(144, 176))).toBe(hex(obj));
    // Named refs: sorted, NUL-terminated, one stream ref shared by both names.
    const names = zlib.zstdDecompressSync(file.subarray(Number(nrs), Number(nre))).toString("latin1");
    expect(names).toBe("0:config:sha256:aa\x000:sha256:bb\x00");
    // Stream: exactly one i64 0 (object_refs[0]).
    const stream = zlib.zstdDecompressSync(file.subarray(Number(sts), Number(ste)));
    expect(hex(stream)).toBe("0000000000000000");
    expect(contentTypeName(CONTENT_TYPE.ociLayer)).toBe("ocilayer");
    expect(CONTENT_TYPE.ociLayer).toBe(0x726579616c69636fn);
    expect(CONTENT_TYPE.ociBlob).toBe(0x626f6c625f69636fn);
  });

  test("compressed sections are single zstd frames an independent decoder accepts", async () => {
    if (!canRun(hasTool("zstd"), "zstd CLI is not installed")) return;
    const data = new Uint8Array(300_000).map((_, i) => (i * 31) & 0xff);
    const file = await encodeSplitStream({ algorithm: "sha512", contentType: CONTENT_TYPE.ociLayer, chunks: [{ inline: data }] });
    const info = parseSplitStream(file);
    const d = spawnSync("zstd", ["-dc"], { input: info.stream });
    expect(d.status).toBe(0);
    const raw = new Uint8Array(d.stdout);
    expect(new DataView(raw.buffer, raw.byteOffset).getBigInt64(0, true)).toBe(-300_000n);
    expect(Buffer.from(raw.subarray(8)).equals(Buffer.from(data))).toBe(true);
    expect(hex(info.stream.subarray(0, 4))).toBe("28b52ffd");
    const frames = spawnSync("sh", ["-c", "cat > /tmp/.cfs-ss-$$.zst && zstd -lv /tmp/.cfs-ss-$$.zst; rm -f /tmp/.cfs-ss-$$.zst"], { input: info.stream });
    expect(frames.stdout.toString()).toMatch(/# Zstandard Frames: 1\b/);
  });

  test("legacy (pre-repr(C)) header is read", async () => {
    const obj = fsverityDigest(new Uint8Array([7]), "sha512");
    const file = await encodeSplitStream({ algorithm: "sha512", contentType: CONTENT_TYPE.ociManifest, chunks: [{ external: obj, size: 1 }], legacyHeader: true });
    expect(Buffer.from(file.subarray(18, 29)).toString()).toBe("SplitStream");
    expect([u64(file, 0), u64(file, 8)]).toEqual([32n, 112n]);
    const info = parseSplitStream(file, { algorithm: "sha512", contentType: CONTENT_TYPE.ociManifest });
    expect(info.legacyHeader).toBe(true);
    expect(hex(await externalBlobRef(info))).toBe(hex(obj));
  });
});

describe("round trips", () => {
  const arbChunks = fc.array(
    fc.oneof(
      fc.uint8Array({ minLength: 1, maxLength: 3000 }).map((b) => ({ inline: b })),
      fc.uint8Array({ minLength: 65, maxLength: 5000 }).map((b) => ({ ext: b })),
    ),
    { maxLength: 20 },
  );

  test("any sequence of inline and external chunks reassembles; object refs are deduplicated in first-use order", async () => {
    await fc.assert(
      fc.asyncProperty(arbChunks, fc.constantFrom<VerityAlgorithm>("sha256", "sha512"), async (chunks, alg) => {
        const objects = new Map<string, Uint8Array>();
        const expected: Uint8Array[] = [];
        const order: string[] = [];
        const spec = chunks.map((c) => {
          if ("inline" in c) {
            expected.push(c.inline);
            return { inline: c.inline };
          }
          const id = fsverityDigest(c.ext, alg);
          objects.set(hex(id), c.ext);
          if (!order.includes(hex(id))) order.push(hex(id));
          expected.push(c.ext);
          return { external: id, size: c.ext.length };
        });
        const file = await encodeSplitStream({ algorithm: alg, contentType: CONTENT_TYPE.ociLayer, chunks: spec });
        const info = parseSplitStream(file, { algorithm: alg, contentType: CONTENT_TYPE.ociLayer });
        expect(info.objectRefs.map(hex)).toEqual(order);
        expect(info.streamSize).toBe(BigInt(expected.reduce((n, b) => n + b.length, 0)));
        expect((await cat(file, objects, alg)).equals(Buffer.concat(expected))).toBe(true);
        // Writers never emit two adjacent inline chunks.
        const got = await collectChunks(info);
        for (let i = 1; i < got.length; i++) expect(got[i - 1]!.kind === "inline" && got[i]!.kind === "inline").toBe(false);
      }),
      { numRuns: 60 },
    );
  });

  test("named refs: last call for a name wins, shared targets deduplicated", async () => {
    const a = fsverityDigest(new Uint8Array([1]), "sha256");
    const b = fsverityDigest(new Uint8Array([2]), "sha256");
    const w = new SplitStreamWriter({ algorithm: "sha256", contentType: CONTENT_TYPE.ociConfig });
    w.addNamedStreamRef("x", a);
    w.addNamedStreamRef("y", a);
    w.addNamedStreamRef("x", b);
    const info = parseSplitStream(new Uint8Array(Buffer.concat(await w.finish())));
    expect(info.streamRefs.map(hex)).toEqual([hex(a), hex(b)]);
    expect(hex(info.namedRefs.get("x")!)).toBe(hex(b));
    expect(hex(info.namedRefs.get("y")!)).toBe(hex(a));
  });
});

describe("tar layers", () => {
  const entries: TarWriteEntry[] = [
    { path: "usr/", type: "dir" },
    { path: "usr/tiny", type: "regular", data: new Uint8Array(64).fill(1) },
    { path: "usr/just-over", type: "regular", data: new Uint8Array(65).fill(2) },
    { path: "usr/block", type: "regular", data: new Uint8Array(512).fill(3) },
    { path: "usr/big", type: "regular", data: new Uint8Array(200_000).map((_, i) => i & 0xff), xattrs: new Map([["user.x", new Uint8Array([1])]]) },
    { path: "usr/dup", type: "regular", data: new Uint8Array(65).fill(2) },
    { path: "usr/l", type: "symlink", linkName: "big" },
    ...Array.from({ length: 300 }, (_, i): TarWriteEntry => ({ path: `usr/many/f${i}`, type: "regular", data: new Uint8Array(i % 90) })),
  ];
  const tar = encodeTar([{ path: "usr/many/", type: "dir" }, ...entries]);
  const padded = new Uint8Array(Math.ceil(tar.length / 10240) * 10240 + 10240);
  padded.set(tar);

  for (const [name, bytes] of [["plain", tar], ["record-padded", padded]] as const) {
    test(`${name}: concatenating the splitstream reproduces the tar (sha256 = diff_id); files > 64 bytes are objects`, async () => {
      const diffId = createHash("sha256").update(bytes).digest("hex");
      for (const [chunk, limit] of [[4096, undefined], [1000, 2048], [65536, 600]] as const) {
        const objects = new Map<string, Uint8Array>();
        const { file, stats } = await splitTar(bytes, "sha256", objects, chunk, limit);
        const info = parseSplitStream(file, { contentType: CONTENT_TYPE.ociLayer });
        expect(info.streamSize).toBe(BigInt(bytes.length));
        const out = await cat(file, objects, "sha256");
        expect(createHash("sha256").update(out).digest("hex")).toBe(diffId);
        const large = entries.filter((e) => (e.data?.length ?? 0) > 64);
        expect(stats.externalChunks).toBe(large.length);
        // Identical contents share one object (usr/dup, the zero-filled many/f*).
        expect(info.objectRefs.length).toBe(new Set(large.map((e) => hex(e.data!))).size);
        if (limit !== undefined) {
          // Long inline runs were cut, at entry boundaries only.
          const chunks = await collectChunks(info);
          expect(chunks.filter((c) => c.kind === "inline").length).toBeGreaterThan(large.length + 1);
        }
      }
    });
  }
});

describe("reading streams written differently", () => {
  /** A hand-made splitstream: arbitrary inline splits, one zstd frame per piece, sections in reverse order. */
  function rawSplitstream(pieces: ({ inline: Uint8Array } | { idx: number })[], refs: Uint8Array[], contentType: bigint, total: number): Uint8Array {
    const chunkBytes: Buffer[] = [];
    for (const p of pieces) {
      const h = Buffer.alloc(8);
      if ("inline" in p) {
        h.writeBigInt64LE(-BigInt(p.inline.length));
        chunkBytes.push(h, Buffer.from(p.inline));
      } else {
        h.writeBigInt64LE(BigInt(p.idx));
        chunkBytes.push(h);
      }
    }
    const all = Buffer.concat(chunkBytes);
    // Several frames (with content sizes), split at arbitrary byte positions.
    const frames: Buffer[] = [];
    for (let i = 0; i < all.length; i += 37) frames.push(zlib.zstdCompressSync(all.subarray(i, i + 37)));
    const stream = Buffer.concat(frames);
    const named = zlib.zstdCompressSync(Buffer.alloc(0));
    const objRefs = Buffer.concat(refs);
    // Order: header, info, stream, named refs, object refs, (empty) stream refs — not the writer's order.
    const stStart = 112, stEnd = stStart + stream.length;
    const nrStart = stEnd, nrEnd = nrStart + named.length;
    const orStart = nrEnd, orEnd = orStart + objRefs.length;
    const header = Buffer.alloc(32);
    header.write("SplitStream", 0, "latin1");
    header[14] = 1;
    header[15] = 12;
    header.writeBigUInt64LE(32n, 16);
    header.writeBigUInt64LE(112n, 24);
    const info = Buffer.alloc(80);
    const put = (o: number, s: number, e: number) => (info.writeBigUInt64LE(BigInt(s), o), info.writeBigUInt64LE(BigInt(e), o + 8));
    put(0, orEnd, orEnd);
    put(16, orStart, orEnd);
    put(32, stStart, stEnd);
    put(48, nrStart, nrEnd);
    info.writeBigUInt64LE(contentType, 64);
    info.writeBigUInt64LE(BigInt(total), 72);
    return new Uint8Array(Buffer.concat([header, info, stream, named, objRefs]));
  }

  test("adjacent inline chunks, multi-frame zstd and reordered sections", async () => {
    const tar = encodeTar([{ path: "a", type: "regular", data: new Uint8Array(1000).fill(5) }, { path: "b", type: "regular", data: new Uint8Array(10).fill(6) }]);
    const content = tar.subarray(512, 1512);
    const id = fsverityDigest(content, "sha256");
    const pieces = [
      { inline: tar.subarray(0, 100) }, { inline: tar.subarray(100, 512) }, { idx: 0 },
      ...Array.from({ length: 20 }, (_, i) => ({ inline: tar.subarray(1512 + i * ((tar.length - 1512) / 20), 1512 + (i + 1) * ((tar.length - 1512) / 20)) })),
    ];
    const file = rawSplitstream(pieces, [id], CONTENT_TYPE.ociLayer, tar.length);
    const out = await cat(file, new Map([[hex(id), content]]), "sha256");
    expect(out.equals(Buffer.from(tar))).toBe(true);
  });

  test("corrupt splitstreams fail with CfsErrors", async () => {
    const id = fsverityDigest(new Uint8Array(100), "sha256");
    const good = await encodeSplitStream({ algorithm: "sha256", contentType: CONTENT_TYPE.ociLayer, chunks: [{ inline: new Uint8Array(10) }, { external: id, size: 100 }] });
    const bad = (f: (b: Uint8Array) => void) => {
      const b = good.slice();
      f(b);
      return b;
    };
    const cases: [Uint8Array, RegExp, object?][] = [
      [bad((b) => (b[0] = 0x41)), /bad magic/],
      [bad((b) => (b[11] = 1)), /unsupported splitstream version 1/],
      [bad((b) => (b[15] = 16)), /block size/],
      [good, /uses sha256, repository uses sha512/, { algorithm: "sha512" }],
      [good, /content type ocilayer, expected ociconfg/, { contentType: CONTENT_TYPE.ociConfig }],
      [bad((b) => new DataView(b.buffer).setBigUint64(24, 99999n, true)), /beyond the end/],
      [good.subarray(0, 20), /too short/],
    ];
    for (const [b, re, opts] of cases) {
      expect(() => parseSplitStream(b, opts ?? {})).toThrow(re);
      try {
        parseSplitStream(b, opts ?? {});
      } catch (e) {
        expect(e).toBeInstanceOf(CfsError);
      }
    }
    // External index out of range and a truncated stream are found while reading chunks.
    const oob = rawSplitstream([{ idx: 3 }], [id], CONTENT_TYPE.ociLayer, 100);
    await expect(collectChunks(parseSplitStream(oob))).rejects.toThrow(/external reference 3 out of range/);
    const info = parseSplitStream(good);
    const cut = { ...info, stream: zlib.zstdCompressSync(zlib.zstdDecompressSync(info.stream).subarray(0, 12)) };
    await expect(collectChunks(cut)).rejects.toThrow(/stream ends inside an inline chunk/);
    // Reassembly checks the total size.
    const wrongSize = bad((b) => new DataView(b.buffer).setBigUint64(104, 5n, true));
    await expect(cat(wrongSize, new Map([[hex(id), new Uint8Array(100)]]), "sha256")).rejects.toThrow(/reassembled 110 bytes, the header says 5/);
  });
});
