// shared/layers.ts: overlay semantics of ordered layers (oci.md §3, §10) and
// refusal of hostile layers; layer splitstreams read back to the same entries.

import { describe, expect, test } from "vitest";
import { createHash } from "node:crypto";

import { bstr } from "../../shared/bytes.ts";
import { writeDumpfile } from "../../shared/dumpfile.ts";
import { LayerApplier, readLayerStream, type RegularSource } from "../../shared/layers.ts";
import { CONTENT_TYPE, encodeSplitStream, parseSplitStream } from "../../shared/splitstream.ts";
import { encodeTar, readTar, type TarEntry, type TarWriteEntry } from "../../shared/tar.ts";
import { lookup, type Dir } from "../../shared/tree.ts";

const fakeDigest = (data: Uint8Array) => new Uint8Array(createHash("sha512").update(data).digest());
const W = (path: string, type: TarWriteEntry["type"], extra: Partial<TarWriteEntry> = {}): TarWriteEntry => ({ path, type, mode: type === "dir" ? 0o755 : 0o644, mtimeSec: 1_700_000_000, ...extra });
const file = (path: string, text: string, extra: Partial<TarWriteEntry> = {}) => W(path, "regular", { data: new Uint8Array(Buffer.from(text)), ...extra });

/** Entries of a tar with their content sources (small inline, large by a digest of the content). */
async function items(tar: Uint8Array): Promise<{ entry: TarEntry; source?: RegularSource }[]> {
  const out: { entry: TarEntry; source?: RegularSource }[] = [];
  let cur: TarEntry | null = null;
  let data: Uint8Array[] = [];
  const flush = () => {
    if (cur === null) return;
    if (cur.type !== "regular") out.push({ entry: cur });
    else {
      const bytes = new Uint8Array(Buffer.concat(data));
      out.push({ entry: cur, source: bytes.length <= 64 ? { inline: bytes } : { digest: fakeDigest(bytes), size: bytes.length } });
    }
    cur = null;
    data = [];
  };
  for await (const ev of readTar([tar])) {
    if (ev.kind === "entry") {
      flush();
      cur = ev.entry;
    } else if (ev.kind === "data") data.push(ev.bytes.slice());
  }
  flush();
  return out;
}

async function build(layers: TarWriteEntry[][], limits = {}): Promise<Dir> {
  const ap = new LayerApplier(limits);
  for (const [i, l] of layers.entries()) {
    ap.startLayer(`layer ${i}`);
    for (const it of await items(encodeTar(l))) ap.apply(it.entry, it.source);
    ap.finishLayer();
  }
  return ap.root;
}

const names = (root: Dir, path: string) => {
  const d = lookup(root, path);
  return d?.kind === "dir" ? [...d.entries.keys()].sort() : null;
};

describe("layer semantics", () => {
  test("whiteouts and opaque directories remove lower content only as far as the marker says", async () => {
    const root = await build([
      [W("etc/", "dir"), file("etc/foo", "foo"), file("etc/bar", "bar"), W("usr/", "dir"), file("usr/a", "a"), W("usr/sub/", "dir"), file("usr/sub/b", "b")],
      [file("etc/.wh.foo", ""), file("usr/.wh..wh..opq", ""), file("usr/new", "new"), file("etc/.wh.nothing-here", "")],
    ]);
    expect(names(root, "/etc")).toEqual(["bar"]);
    expect(names(root, "/usr")).toEqual(["new"]);
  });

  test("a whiteout of a directory removes the subtree; the marker entries are never added", async () => {
    const root = await build([[W("a/", "dir"), W("a/b/", "dir"), file("a/b/c", "c")], [file("a/.wh.b", "")]]);
    expect(names(root, "/a")).toEqual([]);
  });

  test("a directory over a directory keeps the children and takes the new stat", async () => {
    const root = await build([[W("d/", "dir", { mode: 0o755 }), file("d/x", "x")], [W("d/", "dir", { mode: 0o700, mtimeSec: 5, uid: 7 })]]);
    const d = lookup(root, "/d")!;
    expect(names(root, "/d")).toEqual(["x"]);
    expect([d.stat.mode, d.stat.mtimeSec, d.stat.uid]).toEqual([0o700, 5, 7]);
  });

  test("a file over a directory replaces the subtree; a directory over a file replaces the file", async () => {
    const root = await build([[W("d/", "dir"), file("d/x", "x"), file("f", "f")], [file("d", "now a file"), W("f/", "dir")]]);
    expect(lookup(root, "/d")!.kind).toBe("leaf");
    expect(names(root, "/f")).toEqual([]);
  });

  test("a hardlink keeps the leaf its target had when it was made", async () => {
    const root = await build([[W("usr/", "dir"), file("usr/tool", "old tool")], [W("usr/tool2", "hardlink", { linkName: "usr/tool" }), file("usr/tool", "new tool")]]);
    const t2 = lookup(root, "/usr/tool2")!;
    const t = lookup(root, "/usr/tool")!;
    expect(t2).not.toBe(t);
    expect(t2.kind === "leaf" && t2.content.type === "regular" && bstr(t2.content.inline!)).toBe("old tool");
    // Hardlinks in one layer share the leaf (nlink 2 in the dumpfile).
    const r2 = await build([[W("a", "regular", { data: new Uint8Array(100) }), W("b", "hardlink", { linkName: "./a" })]]);
    expect(lookup(r2, "/a")).toBe(lookup(r2, "/b"));
  });

  test("PAX mtime fractions become nanoseconds (dumpfile 1234567890.500000000)", async () => {
    const root = await build([[W("usr/", "dir"), file("usr/t", "t", { mtimeSec: 1234567890, mtimeNsec: 500_000_000 })]]);
    expect(Buffer.from(writeDumpfile(root)).toString()).toContain("/usr/t 1 100644 1 0 0 0 1234567890.500000000 - t -");
  });

  test("devices, fifos, symlinks, xattrs and owners come through", async () => {
    const x = new Map([["security.capability", new Uint8Array([1, 2, 3])], ["user.a", new Uint8Array([0, 255])]]);
    const root = await build([[W("dev/", "dir"), W("dev/null", "chr", { devMajor: 1, devMinor: 3, mode: 0o666 }), W("dev/sda", "blk", { devMajor: 8, devMinor: 0 }), W("dev/p", "fifo"), W("dev/l", "symlink", { linkName: "../x/y", uid: 5, gid: 6 }), file("dev/x", "x", { xattrs: x })]]);
    const dump = Buffer.from(writeDumpfile(root)).toString();
    expect(dump).toContain("/dev/null 0 20666 1 0 0 259");
    expect(dump).toContain("/dev/sda 0 60644 1 0 0 2048");
    expect(dump).toContain("/dev/p 0 10644 1 0 0 0");
    expect(dump).toContain("/dev/l 6 120644 1 5 6 0 1700000000.0 ../x/y - -");
    expect(dump).toMatch(/\/dev\/x .* security\.capability=\\x01\\x02\\x03 user\.a=\\x00\\xff/);
  });

  test("the root entry only sets the root's stat", async () => {
    const root = await build([[W("./", "dir", { mode: 0o700, uid: 3 }), W("usr/", "dir")]]);
    expect([root.stat.mode, root.stat.uid]).toEqual([0o700, 3]);
    expect(names(root, "/")).toEqual(["usr"]);
  });
});

describe("hostile layers are refused with the layer, offset and path", () => {
  const refused = async (layers: TarWriteEntry[][], pattern: RegExp, limits = {}) => {
    await expect(build(layers, limits)).rejects.toThrow(pattern);
  };
  test("a parent that is a symlink is never followed", () =>
    refused([[W("etc/", "dir"), W("lnk", "symlink", { linkName: "/etc" })], [file("lnk/passwd", "pwned")]], /layer 1: offset 0: \/lnk\/passwd: parent \/lnk is a symlink \(not followed\)/));
  test("a missing parent", () => refused([[file("a/b", "x")]], /\/a\/b: parent \/a does not exist/));
  test("a parent that is a file", () => refused([[file("a", "x"), file("a/b", "y")]], /parent \/a is not a directory/));
  test("a hardlink to a directory", () => refused([[W("d/", "dir"), W("h", "hardlink", { linkName: "d" })]], /hardlink target \/d is a directory/));
  test("a hardlink to a missing file", () => refused([[W("h", "hardlink", { linkName: "nope" })]], /hardlink target \/nope does not exist/));
  test("a hardlink through a symlink", () => refused([[W("d/", "dir"), file("d/f", "f"), W("s", "symlink", { linkName: "d" }), W("h", "hardlink", { linkName: "s/f" })]], /hardlink target's directory \/s is a symlink/));
  test("a hardlink to itself", () => refused([[file("a", "a")], [W("a", "hardlink", { linkName: "a" })]], /hardlink to itself/));
  test("the same path twice in one layer (a directory twice is fine)", async () => {
    await refused([[file("a", "1"), file("a", "2")]], /\/a: duplicate entry in the same layer \(first at offset 0\)/);
    await expect(build([[W("d/", "dir"), W("d/", "dir", { mode: 0o700 })]])).resolves.toBeDefined();
    // Across layers a replacement is normal.
    await expect(build([[file("a", "1")], [file("a", "2")]])).resolves.toBeDefined();
  });
  test("'..' components", () => refused([[W("d/", "dir"), file("d/../../etc/x", "x")]], /'\.\.' component/));
  test("a non-directory root entry", () => refused([[file("./", "")]], /root entry must be a directory/));
  test("names over 255 bytes", () => refused([[file("n".repeat(256), "x", { path: "n".repeat(256) })]], /longer than 255 bytes/));
  test("absurd sizes and node counts", async () => {
    await refused([[W("f", "regular", { data: new Uint8Array(5000) })]], /exceeds the limit of 4096 bytes/, { maxFileSize: 4096 });
    const many = [W("d/", "dir"), ...Array.from({ length: 30 }, (_, i) => file(`d/f${i}`, "x"))];
    await refused([many], /more than 20 files/, { maxNodes: 20 });
  });
  test("nested deeper than the EROFS limit", () => {
    const parts: TarWriteEntry[] = [];
    let p = "";
    for (let i = 0; i < 12; i++) parts.push(W((p += "d/"), "dir"));
    return refused([parts], /nested deeper than 10 directories/, { maxDepth: 10 });
  });
});

describe("layer splitstreams read back", () => {
  test("entries and contents from a splitstream equal those from the tar (no object is read)", async () => {
    const big = new Uint8Array(1024).map((_, i) => i * 7);
    const tar = encodeTar([W("usr/", "dir"), file("usr/s", "small"), W("usr/b1024", "regular", { data: big }), W("usr/b65", "regular", { data: big.subarray(0, 65) }), W("usr/e", "regular", { data: new Uint8Array(0) }), W("usr/l", "symlink", { linkName: "b65" }), W("usr/h", "hardlink", { linkName: "usr/b65" })]);
    const direct = await items(tar);
    // Split as the importer does: every payload > 64 bytes becomes an external chunk.
    const chunks: ({ inline: Uint8Array } | { external: Uint8Array; size: number })[] = [];
    let pending: { e: TarEntry; data: Uint8Array[] } | null = null;
    for await (const ev of readTar([tar])) {
      if (ev.kind === "entry") {
        chunks.push({ inline: ev.bytes });
        pending = ev.entry.type === "regular" && ev.entry.size > 64 ? { e: ev.entry, data: [] } : null;
      } else if (ev.kind === "data" && pending !== null) {
        pending.data.push(ev.bytes.slice());
        const got = pending.data.reduce((n, b) => n + b.length, 0);
        if (got === pending.e.size) {
          chunks.push({ external: fakeDigest(new Uint8Array(Buffer.concat(pending.data))), size: got });
          pending = null;
        }
      } else chunks.push({ inline: ev.bytes });
    }
    const file_ = await encodeSplitStream({ algorithm: "sha512", contentType: CONTENT_TYPE.ociLayer, chunks });
    const info = parseSplitStream(file_, { contentType: CONTENT_TYPE.ociLayer });
    const back: typeof direct = [];
    for await (const it of readLayerStream(info, "layer")) back.push(it);
    expect(back.map((b) => [b.entry.path, b.entry.type, b.source])).toEqual(direct.map((d) => [d.entry.path, d.entry.type, d.source]));
  });

  test("a large file stored inline is refused", async () => {
    const tar = encodeTar([W("f", "regular", { data: new Uint8Array(100) })]);
    const info = parseSplitStream(await encodeSplitStream({ algorithm: "sha512", contentType: CONTENT_TYPE.ociLayer, chunks: [{ inline: tar }] }));
    await expect((async () => {
      for await (const _ of readLayerStream(info, "layer x")) void _;
    })()).rejects.toThrow(/layer x: offset 512: \/f: a 100-byte file stored inline/);
  });
});
