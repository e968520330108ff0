// shared/dumpfile.ts writer: exact output, and parse ∘ write = identity on
// generated trees (fast-check).

import fc from "fast-check";
import { readFileSync } from "node:fs";
import { describe, expect, test } from "vitest";
import { bstr } from "../../shared/bytes.ts";
import {
  escapeField,
  formatDumpLine,
  formatRustHardlinkLine,
  joinDumpLines,
  nodeDumpFields,
  parseDumpfile,
  writeDumpfile,
  writeDumpfileChunks,
} from "../../shared/dumpfile.ts";
import { externalFile, inlineFile, makeDir, makeLeaf, sparseFile, type Dir, type Leaf } from "../../shared/tree.ts";
import { arbTree } from "../helpers/arbitrary-tree.ts";
import { vectorsDir } from "../helpers/env.ts";
import { diffTrees } from "../helpers/tree-compare.ts";

const text = (b: Uint8Array): string => Buffer.from(b).toString("latin1");
const bytes = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, "latin1"));

describe("escaping", () => {
  test("upstream escaping cases (dumpfile.md §8)", () => {
    expect(escapeField(bytes("foo=bar=baz"), "xattr")).toBe("foo\\x3dbar\\x3dbaz");
    expect(escapeField(bytes("foo=bar=baz"), "optional")).toBe("foo=bar=baz");
    expect(escapeField(new Uint8Array([1, 2]), "xattr")).toBe("\\x01\\x02");
    expect(escapeField(bytes("-"), "xattr")).toBe("-");
    expect(escapeField(bytes("-"), "optional")).toBe("\\x2d");
    expect(escapeField(bytes(""), "optional")).toBe("-");
    expect(escapeField(null, "optional")).toBe("-");
    expect(escapeField(bytes(""), "xattr")).toBe("");
    for (const s of ["foo!bar", "hello-world", "--", "-x"]) expect(escapeField(s, "optional")).toBe(s);
    expect(escapeField("a b\\c\n\r\t\x00\x7f\xff", "optional")).toBe("a\\x20b\\\\c\\n\\r\\t\\x00\\x7f\\xff");
  });

  test("every byte escapes and unescapes to itself, in paths, contents and xattrs", () => {
    const all = new Uint8Array(256).map((_, i) => i);
    const name = bstr(all.filter((b) => b !== 0 && b !== 0x2f));
    const root = makeDir({ mode: 0o755 });
    root.entries.set(name, makeLeaf(inlineFile(all), { xattrs: new Map([[bstr(all.subarray(1)), all]]) }));
    const back = parseDumpfile(writeDumpfile(root), { mode: "strict" });
    expect(diffTrees(root, back)).toEqual([]);
    // Only printable ASCII in the output, one line per entry.
    const out = text(writeDumpfile(root));
    expect(out).toMatch(/^[\x21-\x7e \n]*$/);
    expect(out.split("\n").length).toBe(3);
  });
});

describe("writer output", () => {
  test("a tree written composefs-rs style, byte for byte", () => {
    const root = makeDir({ mode: 0o755, mtimeSec: 1, mtimeNsec: 500_000_000 });
    const d = makeDir({ mode: 0o700, uid: 1000, gid: 1000, xattrs: new Map([["user.b", bytes("2")], ["trusted.a", bytes("")], ["user.a", bytes("x=y")]]) });
    root.entries.set("d", d);
    d.entries.set("sub", makeDir({ mode: 0o755 }));
    const shared = makeLeaf(inlineFile(bytes("hi\n")), { mode: 0o644, mtimeSec: 1, mtimeNsec: 5 });
    root.entries.set("a", shared);
    d.entries.set("link", shared);
    const digest = new Uint8Array(32).fill(0x5a);
    root.entries.set("ext", makeLeaf(externalFile(digest, 1234n), { mode: 0o4755 }));
    root.entries.set("sparse", makeLeaf(sparseFile(9n), { mode: 0o644 }));
    root.entries.set("empty", makeLeaf(inlineFile(new Uint8Array(0)), { mode: 0o644 }));
    root.entries.set("dash", makeLeaf(inlineFile(bytes("-")), { mode: 0o644 }));
    root.entries.set("sym", makeLeaf({ type: "symlink", target: bytes("../a b") }, { mode: 0o777 }));
    root.entries.set("chr", makeLeaf({ type: "chr", rdev: 0x0103 }, { mode: 0o666 }));
    root.entries.set("wh", makeLeaf({ type: "chr", rdev: 0 }, { mode: 0 }));
    root.entries.set("fifo", makeLeaf({ type: "fifo" }, { mode: 0o644 }));
    root.entries.set("sock", makeLeaf({ type: "socket" }, { mode: 0o755 }));
    const z = "5a".repeat(32);
    expect(text(writeDumpfile(root))).toBe(
      [
        "/ 0 40755 3 0 0 0 1.500000000 - - -",
        "/a 3 100644 2 0 0 0 1.5 - hi\\n -",
        "/chr 0 20666 1 0 0 259 0.0 - - -",
        "/d 0 40700 3 1000 1000 0 0.0 - - - trusted.a= user.a=x\\x3dy user.b=2",
        "/d/link 0 @120000 - - - - 0.0 /a - -",
        "/d/sub 0 40755 2 0 0 0 0.0 - - -",
        "/dash 1 100644 1 0 0 0 0.0 - \\x2d -",
        "/empty 0 100644 1 0 0 0 0.0 - - -",
        `/ext 1234 104755 1 0 0 0 0.0 5a/${z.slice(2)} - ${z}`,
        "/fifo 0 10644 1 0 0 0 0.0 - - -",
        "/sock 0 140755 1 0 0 0 0.0 - - -",
        "/sparse 9 100644 1 0 0 0 0.0 - - -",
        "/sym 6 120777 1 0 0 0 0.0 ../a\\x20b - -",
        "/wh 0 20000 1 0 0 0 0.0 - - -",
        "",
      ].join("\n"),
    );
    expect(diffTrees(root, parseDumpfile(writeDumpfile(root), { mode: "strict" }))).toEqual([]);
  });

  test("an explicit leaf.nlink is what NLINK says; hardlink lines are still per reference", () => {
    const root = makeDir({ mode: 0o755 });
    const leaf: Leaf = { ...makeLeaf(inlineFile(bytes("x")), { mode: 0o644 }), nlink: 7 };
    root.entries.set("a", leaf);
    root.entries.set("b", leaf);
    const out = text(writeDumpfile(root));
    expect(out).toBe("/ 0 40755 2 0 0 0 0.0 - - -\n/a 1 100644 7 0 0 0 0.0 - x -\n/b 0 @120000 - - - - 0.0 /a - -\n");
    const back = parseDumpfile(bytes(out), { mode: "c" });
    expect(diffTrees(root, back)).toEqual([]);
  });

  test("composefs-rs's own dumpfiles come out byte for byte (erofs-v2/simple, empty)", () => {
    for (const name of ["simple", "empty"]) {
      const input = new Uint8Array(readFileSync(`${vectorsDir}/erofs-v2/${name}.dump`));
      expect(text(writeDumpfile(parseDumpfile(input, { mode: "strict" })))).toBe(text(input));
    }
  });

  test("writeDumpfileChunks joins to writeDumpfile; every line ends with \\n", () => {
    const input = new Uint8Array(readFileSync(`${vectorsDir}/erofs-v1/a21-big-dirs.dump`));
    const tree = parseDumpfile(input, { mode: "c" });
    const whole = writeDumpfile(tree);
    const chunks = writeDumpfileChunks(tree);
    expect(Buffer.concat(chunks).equals(Buffer.from(whole))).toBe(true);
    expect(whole[whole.length - 1]).toBe(0x0a);
    expect(text(whole).split("\n").length - 1).toBe(text(input).trimEnd().split("\n").length);
  });

  test("formatDumpLine prints C composefs-info style hardlink lines", () => {
    const leaf = makeLeaf(externalFile(new Uint8Array(32).fill(0x35), 259n), {
      mode: 0o644, uid: 1000, gid: 1000, mtimeSec: 1695368732, mtimeNsec: 385062094,
      xattrs: new Map([["security.selinux", bytes("unconfined_u:object_r:unlabeled_t:s0\0")]]),
    });
    const fields = nodeDumpFields(leaf, "/a-dir/a-file", 1);
    const hex = "35".repeat(32);
    const sel = "security.selinux=unconfined_u:object_r:unlabeled_t:s0\\x00";
    expect(formatDumpLine(fields)).toBe(`/a-dir/a-file 259 100644 1 1000 1000 0 1695368732.385062094 35/${hex.slice(2)} - ${hex} ${sel}`);
    expect(formatDumpLine({ ...fields, path: "/a-hardlink", hardlink: true, payload: "/a-dir/a-file" }))
      .toBe(`/a-hardlink 259 @100644 1 1000 1000 0 1695368732.385062094 /a-dir/a-file - ${hex} ${sel}`);
    // A directory with the image's size and xattrs in a given order.
    const dir = makeDir({ mode: 0o755, xattrs: new Map([["user.b", bytes("1")], ["trusted.a", bytes("2")]]) });
    expect(formatDumpLine({ ...nodeDumpFields(dir, "/", 4), size: 4096, xattrs: [["user.b", bytes("1")], ["trusted.a", bytes("2")]] }))
      .toBe("/ 4096 40755 4 0 0 0 0.0 - - - user.b=1 trusted.a=2");
    expect(formatRustHardlinkLine("/x y", "/-")).toBe("/x\\x20y 0 @120000 - - - - 0.0 /- - -");
    expect(text(joinDumpLines(["a", "b"]))).toBe("a\nb\n");
    // The C-style lines parse back (only @ and PAYLOAD matter on the hardlink line).
    const dump = joinDumpLines([
      "/ 0 40755 3 0 0 0 0.0 - - -",
      "/a-dir 0 40755 2 0 0 0 0.0 - - -",
      formatDumpLine(fields),
      formatDumpLine({ ...fields, path: "/a-hardlink", hardlink: true, payload: "/a-dir/a-file" }),
    ]);
    for (const mode of ["c", "strict"] as const) {
      const t = parseDumpfile(dump, { mode });
      expect((t.entries.get("a-dir") as Dir).entries.get("a-file")).toBe(t.entries.get("a-hardlink"));
    }
  });
});

describe("round trips (fast-check)", () => {
  const check = (root: Dir): void => {
    const out = writeDumpfile(root);
    for (const mode of ["strict", "c", "c-strict"] as const) {
      const back = parseDumpfile(out, { mode });
      expect(diffTrees(root, back)).toEqual([]);
      // Writing the parsed tree gives the same bytes (a fixpoint).
      expect(Buffer.from(writeDumpfile(back)).equals(Buffer.from(out))).toBe(true);
    }
  };

  test("small trees", () => {
    fc.assert(fc.property(arbTree({ size: "small" }), check), { numRuns: 300 });
  });

  test("medium trees, sha512 digests", () => {
    fc.assert(fc.property(arbTree({ size: "medium", digestSize: 64 }), (root) => {
      const out = writeDumpfile(root);
      const back = parseDumpfile(out, { mode: "strict" });
      expect(diffTrees(root, back)).toEqual([]);
      expect(Buffer.from(writeDumpfile(back)).equals(Buffer.from(out))).toBe(true);
    }), { numRuns: 60 });
  });

  test("large trees", () => {
    fc.assert(fc.property(arbTree({ size: "large" }), check), { numRuns: 8 });
  });
});
