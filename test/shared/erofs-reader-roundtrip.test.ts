// Property: tree → image (V0, V1, V2) → reader → the same tree, minus what
// the format cannot keep (test/helpers/image-expect.ts). Also: strict
// validation accepts every image the writer produces, the C view loads it,
// and the object references are exactly the external files' digests.

import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { toHex } from "../../shared/bytes.ts";
import { cDump } from "../../shared/erofs/cdump.ts";
import { imageObjects, loadImageC, readImage } from "../../shared/erofs/reader.ts";
import { writeErofs } from "../../shared/erofs/writer.ts";
import { type Dir, isWhiteout, walk } from "../../shared/tree.ts";
import { arbTree } from "../helpers/arbitrary-tree.ts";
import { expectedReadBack, readBackDiffOptions } from "../helpers/image-expect.ts";
import { diffTrees } from "../helpers/tree-compare.ts";

function externalDigests(root: Dir): string[] {
  const out = new Set<string>();
  for (const e of walk(root)) {
    if (e.node.kind === "leaf" && e.node.content.type === "regular" && e.node.content.digest !== null) {
      out.add(toHex(e.node.content.digest));
    }
  }
  return [...out].sort();
}

function roundTrip(tree: Dir, version: 0 | 1 | 2): void {
  const image = writeErofs(tree, { version });
  const back = readImage(image, { strict: true, info: true });
  expect(back.version).toBe(version);
  expect(diffTrees(expectedReadBack(tree, version), back.root, readBackDiffOptions(version))).toEqual([]);
  // Non-strict reading gives the same tree.
  expect(diffTrees(back.root, readImage(image).root)).toEqual([]);
  expect(imageObjects(image).ids).toEqual(externalDigests(tree));
  // The C view loads it and prints one line per path (hardlinks included,
  // stubs not; C also skips the native whiteouts of V2 images).
  const lines = Buffer.from(cDump(loadImageC(image))).toString("latin1").split("\n").length - 1;
  const paths = [...walk(tree)].filter((e) => !(version === 2 && isWhiteout(e.node)));
  expect(lines).toBe(paths.length);
}

describe.each([0, 1, 2] as const)("V%i images read back as the tree they were written from", (version) => {
  const mtimeNsec = version !== 2;
  test("small trees", () => {
    fc.assert(fc.property(arbTree({ size: "small", mtimeNsec }), (t) => roundTrip(t, version)), { numRuns: 250 });
  });
  test("medium trees", () => {
    fc.assert(fc.property(arbTree({ size: "medium", mtimeNsec }), (t) => roundTrip(t, version)), { numRuns: 60 });
  });
  test("sha512 digests and unknown xattr prefixes", () => {
    fc.assert(
      fc.property(arbTree({ size: "small", digestSize: 64, unknownXattrPrefixes: true, mtimeNsec }), (t) => roundTrip(t, version)),
      { numRuns: 60 },
    );
  });
});
