// The EROFS reader against the test vectors: every image written from a
// vector dumpfile (and the pinned V2 images) dumps exactly as C
// `composefs-info dump` printed it, and reads back as the tree it was
// written from.

import { readFileSync } from "node:fs";
import { gunzipSync } from "node:zlib";
import { describe, expect, test } from "vitest";
import { parseDumpfile } from "../../shared/dumpfile.ts";
import { cDump } from "../../shared/erofs/cdump.ts";
import { imageObjects, loadImageC, readImage } from "../../shared/erofs/reader.ts";
import { chooseVersion, writeErofs } from "../../shared/erofs/writer.ts";
import { toHex } from "../../shared/bytes.ts";
import { vectorsDir } from "../helpers/env.ts";
import { expectedReadBack, readBackDiffOptions } from "../helpers/image-expect.ts";
import { diffTrees } from "../helpers/tree-compare.ts";

function readVector(path: string): Uint8Array {
  const b = readFileSync(path);
  return new Uint8Array(path.endsWith(".gz") ? gunzipSync(b) : b);
}

function tsv(path: string): Record<string, string>[] {
  const [head, ...rows] = readFileSync(path, "utf8").trimEnd().split("\n");
  const cols = head!.split("\t");
  return rows.map((r) => Object.fromEntries(r.split("\t").map((v, i) => [cols[i]!, v])));
}

/** Equal texts, or the first differing line (a readable failure for multi-MB dumps). */
function expectSameText(actual: Uint8Array, expected: Uint8Array): void {
  if (Buffer.from(actual).equals(Buffer.from(expected))) return;
  const a = Buffer.from(actual).toString("latin1").split("\n");
  const e = Buffer.from(expected).toString("latin1").split("\n");
  const i = a.findIndex((l, k) => l !== e[k]);
  const at = i === -1 ? Math.min(a.length, e.length) : i;
  expect({ line: at + 1, text: a[at] }).toEqual({ line: at + 1, text: e[at] });
  expect(a.length).toBe(e.length);
}

function versionFor(flags: string, tree: ReturnType<typeof parseDumpfile>): 0 | 1 {
  if (flags === "-") return chooseVersion(tree);
  const min = /--min-version=(\d)/.exec(flags);
  const max = /--max-version=(\d)/.exec(flags);
  return chooseVersion(tree, min ? Number(min[1]) : undefined, max ? Number(max[1]) : undefined);
}

interface Row {
  dir: string;
  input: string;
  flags: string;
  version: number;
  canonical: string;
}

const rows: Row[] = [
  ...tsv(`${vectorsDir}/erofs-v1/expected.tsv`).map((r) => ({
    dir: "erofs-v1", input: `${r.name}.dump`, flags: r.flags!, version: Number(r.composefs_version), canonical: r.canonical_dump!,
  })),
  ...tsv(`${vectorsDir}/c-assets/expected.tsv`).map((r) => ({
    dir: "c-assets", input: r.name!, flags: r.flags!, version: Number(r.composefs_version), canonical: r.canonical_dump!,
  })),
];

describe("composefs-info dump of images written from the vector dumpfiles", () => {
  test("all vector rows are present", () => {
    expect(rows.filter((r) => r.dir === "erofs-v1").length).toBe(99);
    expect(rows.filter((r) => r.dir === "c-assets").length).toBe(14);
  });

  test.each(rows.map((r) => [`${r.dir}/${r.input} ${r.flags}`, r] as const))("%s", (_label, r) => {
    const tree = parseDumpfile(readVector(`${vectorsDir}/${r.dir}/${r.input}`), { mode: "c" });
    const version = versionFor(r.flags, tree);
    expect(version).toBe(r.version);
    const image = writeErofs(tree, { version });
    const t0 = performance.now();
    const dump = cDump(loadImageC(image, { name: r.input }));
    const ms = performance.now() - t0;
    if (r.input.startsWith("cs9-x86_64-developer")) {
      process.stderr.write(`composefs-info dump of ${r.input} (${image.byteLength} bytes image): ${ms.toFixed(0)} ms\n`);
    }
    expectSameText(dump, readVector(`${vectorsDir}/${r.dir}/${r.canonical}`));

    // The tree reader gives back the tree the image was written from.
    const back = readImage(image, { name: r.input });
    expect(back.version).toBe(version);
    expect(diffTrees(expectedReadBack(tree, version), back.root, readBackDiffOptions(version))).toEqual([]);
  });
});

describe("erofs-v2 vectors", () => {
  const dir = `${vectorsDir}/erofs-v2`;

  test.each(["empty", "simple"])("%s.v2.img dumps as %s.v2.canonical.dump and reads back strictly", (name) => {
    const image = readVector(`${dir}/${name}.v2.img`);
    expectSameText(cDump(loadImageC(image)), readVector(`${dir}/${name}.v2.canonical.dump`));
    const back = readImage(image, { strict: true, name: `${name}.v2.img` });
    expect(back.version).toBe(2);
    const tree = parseDumpfile(readVector(`${dir}/${name}.dump`));
    expect(diffTrees(tree, back.root)).toEqual([]);
  });

  test("simple.v2.img references the one external object", () => {
    const objs = imageObjects(readVector(`${dir}/simple.v2.img`), { strict: true });
    expect(objs.ids).toEqual(["5a".repeat(32)]);
    expect(objs.payloads).toEqual([`5a/${"5a".repeat(31)}`]);
  });

  const built = tsv(`${dir}/expected.tsv`).map((r) => [r.name!, r] as const);
  test.each(built)("%s: written, dumped and read back", (label, r) => {
    const version = ({ V0: 0, V1: 1, V2: 2 } as const)[r.erofs_format as "V0" | "V1" | "V2"];
    const tree = parseDumpfile(readVector(`${dir}/${r.dumpfile}`));
    const image = writeErofs(tree, { version });
    const base = r.dumpfile!.replace(/\.dump$/, "");
    expectSameText(cDump(loadImageC(image)), readVector(`${dir}/${base}.v${version}.canonical.dump`));
    const back = readImage(image, { strict: true, name: label });
    expect(diffTrees(expectedReadBack(tree, version), back.root, readBackDiffOptions(version))).toEqual([]);
    if (version === 2) expect(toHex(image)).toBe(toHex(readVector(`${dir}/${base}.v2.img`)));
  });
});

test("NodeInfo: stored sizes, nlink and xattrs in on-disk order (a16 root, V1)", () => {
  const tree = parseDumpfile(readVector(`${vectorsDir}/erofs-v1/a16-whiteout-selinux.dump`), { mode: "c" });
  const back = readImage(writeErofs(tree, { version: 1 }), { info: true });
  const root = back.info!.get(back.root)!;
  expect(root.size).toBe(4096n);
  expect(root.nlink).toBe(2);
  expect(root.rawXattrs.map((x) => [x.name, Buffer.from(x.value).toString("latin1"), x.shared])).toEqual([
    ["trusted.overlay.opaque", "y", false],
    ["trusted.overlay.overlay.opaque", "x", false],
    ["trusted.overlay.overlay.whiteouts", "", false],
    ["user.a", "b", false],
    ["user.overlay.opaque", "x", false],
    ["user.overlay.whiteouts", "", false],
    ["security.selinux", "system_u:object_r:root_t:s0\0", true],
  ]);
  // The tree itself has only the user's xattrs.
  expect([...back.root.stat.xattrs.keys()].sort()).toEqual(["security.selinux", "user.a"]);
});
