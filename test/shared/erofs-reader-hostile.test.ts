// Hand-made hostile images (patched writer output): directory cycles, nids
// past the end, excessive nesting, inodes sharing data, bad superblocks.
// Each must give a CfsError naming the image and the offset — or, for the
// C view of a cycle, what C prints (a hardlink line), and never a hang.

import { describe, expect, test } from "vitest";
import { cDump } from "../../shared/erofs/cdump.ts";
import { ErofsImage, loadImageC, readImage } from "../../shared/erofs/reader.ts";
import { writeErofs } from "../../shared/erofs/writer.ts";
import { CfsError } from "../../shared/errors.ts";
import { type Dir, externalFile, inlineFile, lookup, makeDir, makeLeaf } from "../../shared/tree.ts";

function errorOf(f: () => unknown): CfsError {
  try {
    f();
  } catch (e) {
    if (e instanceof CfsError) return e;
    throw e;
  }
  throw new Error("expected a CfsError");
}

/** nid of the inode at `path`, from the reader's per-node facts. */
function nidOf(image: Uint8Array, path: string): number {
  const { root, info } = readImage(image, { info: true });
  return info!.get(lookup(root, path)!)!.nid;
}

function setU32(image: Uint8Array, off: number, v: number): void {
  new DataView(image.buffer, image.byteOffset).setUint32(off, v, true);
}

describe.each([0, 2] as const)("V%i", (version) => {
  test("a directory entry pointing at an ancestor (a cycle)", () => {
    const root = makeDir({ mode: 0o755 });
    const d = makeDir({ mode: 0o755 });
    const e = makeDir({ mode: 0o755 });
    d.entries.set("e", e);
    root.entries.set("d", d);
    const image = writeErofs(root, { version });
    const img = new ErofsImage(image);
    const dNid = nidOf(image, "/d");
    const ent = img.dirents(img.inode(dNid, 0)).find((x) => x.name === "e")!;
    setU32(image, ent.offset, dNid); // d/e → d
    const err = errorOf(() => readImage(image, { name: "cyc.img" }));
    expect(err.message).toBe(`cyc.img: offset ${ent.offset}: entry "e": directory nid ${dNid} is reachable twice (a directory cycle or hardlink)`);
    // C resolves a second reference to an inode as a hardlink: one line, no loop.
    const dump = Buffer.from(cDump(loadImageC(image))).toString("latin1");
    expect(dump).toContain("\n/d/e 40 @40755 3 0 0 0 0.0 /d - -\n");
    expect(dump.split("\n").filter((l) => l.startsWith("/d/e")).length).toBe(1);
  });

  test("a nid past the end of the image", () => {
    const root = makeDir();
    root.entries.set("f", makeLeaf(inlineFile(new Uint8Array([1, 2, 3]))));
    const image = writeErofs(root, { version });
    const img = new ErofsImage(image);
    const ent = img.dirents(img.inode(img.sb.rootNid, 0)).find((x) => x.name === "f")!;
    setU32(image, ent.offset, 0x7fffffff);
    for (const f of [() => readImage(image, { name: "nid.img" }), () => loadImageC(image, { name: "nid.img" })]) {
      expect(errorOf(f).message).toBe(`nid.img: offset ${ent.offset}: inode nid ${0x7fffffff} (offset ${0x7fffffff * 32}) is past the end of the image`);
    }
  });

  test("inodes claiming the same data (no amplification)", () => {
    const root = makeDir();
    const files = [0, 1, 2].map(() => makeLeaf(inlineFile(new Uint8Array(3000).fill(0x61))));
    files.forEach((f, i) => root.entries.set(`f${i}`, f));
    const image = writeErofs(root, { version });
    const img = new ErofsImage(image);
    // Every file: FLAT_PLAIN from block 0 with the size of the whole image.
    const nids = [0, 1, 2].map((i) => nidOf(image, `/f${i}`));
    for (const nid of nids) {
      const ino = img.inode(nid, 0);
      const dv = new DataView(image.buffer, image.byteOffset);
      dv.setUint16(ino.offset, ino.extended ? 1 : 0, true);
      if (ino.extended) dv.setBigUint64(ino.offset + 8, BigInt(image.length), true);
      else dv.setUint32(ino.offset + 8, image.length, true);
      dv.setUint32(ino.offset + 16, 0, true);
    }
    const err = errorOf(() => readImage(image, { name: "amp.img" }));
    expect(err.what).toBe("inodes share data bytes (the data read exceeds the image size)");
  });
});

test("nesting deeper than 2048 directories", () => {
  const root = makeDir();
  let d: Dir = root;
  for (let i = 0; i < 2100; i++) {
    const next = makeDir();
    d.entries.set("d", next);
    d = next;
  }
  const image = writeErofs(root, { version: 2 });
  expect(errorOf(() => readImage(image)).what).toBe("directories nested deeper than 2048 levels");
  expect(errorOf(() => loadImageC(image)).what).toBe("directories nested deeper than 2048 levels");
});

test("strict mode rejects superblock features composefs does not use", () => {
  const image = writeErofs(makeDir(), { version: 1 });
  const bad = image.slice();
  setU32(bad, 1024 + 80, 0x1); // feature_incompat: compression
  expect(errorOf(() => readImage(bad, { strict: true, name: "i" })).message).toBe("i: offset 1104: unsupported feature_incompat flags 0x00000001");
  expect(readImage(bad).root.entries.size).toBe(0); // C does not look at it either
  const ver = image.slice();
  setU32(ver, 12, 3);
  expect(errorOf(() => readImage(ver, { strict: true, name: "i" })).message).toBe("i: offset 12: unknown composefs_version 3 (expected 0, 1 or 2)");
  const magic = image.slice();
  setU32(magic, 1024, 0);
  for (const f of [() => readImage(magic, { name: "i" }), () => loadImageC(magic, { name: "i" })]) {
    expect(errorOf(f).message).toBe("i: offset 1024: bad EROFS superblock magic 0x00000000 (expected 0xe0f5e1e2)");
  }
});

test("strict mode checks nlink against the directory entries", () => {
  const root = makeDir();
  const leaf = makeLeaf(inlineFile(new Uint8Array([7])));
  root.entries.set("a", leaf);
  root.entries.set("b", leaf);
  const image = writeErofs(root, { version: 2 });
  const ino = new ErofsImage(image).inode(nidOf(image, "/a"), 0);
  new DataView(image.buffer, image.byteOffset).setUint32(ino.offset + 44, 5, true);
  expect(errorOf(() => readImage(image, { strict: true })).what).toBe(`inode nid ${ino.nid} has nlink 5 but 2 directory entries`);
  // Without strict the stored value is kept, like C does.
  const back = readImage(image).root;
  const a = back.entries.get("a")!;
  expect(a).toBe(back.entries.get("b"));
  expect(a.kind === "leaf" && a.nlink).toBe(5);
});

test("metacopy digests of another algorithm than the repository's", () => {
  const root = makeDir();
  const digest = new Uint8Array(64).fill(0xab);
  root.entries.set("f", makeLeaf(externalFile(digest, 100n)));
  const image = writeErofs(root, { version: 1 });
  const f = (o: Parameters<typeof readImage>[1]) => readImage(image, o).root.entries.get("f")!;
  const read = f({ strict: true, algorithm: "sha512" });
  expect(read.kind === "leaf" && read.content.type === "regular" && read.content.digest).toEqual(digest);
  expect(errorOf(() => f({ strict: true, algorithm: "sha256", name: "a.img" })).what).toMatch(/^inode nid \d+: sha512 metacopy digest in a sha256 repository$/);
  // Not strict: the digest is not taken (the redirect still names the object).
  const lax = f({ algorithm: "sha256" });
  expect(lax.kind === "leaf" && lax.content.type === "regular" && [lax.content.digest, lax.content.payload]).toEqual([null, `ab/${"ab".repeat(63)}`]);
});
