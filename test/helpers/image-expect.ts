// What reading an EROFS image back should give for a tree it was written
// from: the tree minus what the format cannot keep (erofs.md §1, §6.4).
//
//   import { expectedReadBack, readBackDiffOptions } from "../helpers/image-expect.ts";
//   expect(diffTrees(expectedReadBack(tree, v), readImage(img).root, readBackDiffOptions(v))).toEqual([]);
//
// - V2: mtime nanoseconds are written as 0 (compared with ignoreNsec).
// - V0/V1: a directory holding whiteouts gets the markers
//   trusted.overlay.overlay.whiteouts / user.overlay.whiteouts (V1 also
//   trusted.overlay.overlay.opaque=x / user.overlay.opaque=x), replacing a
//   user's xattrs of those names, and escaped whiteouts carry
//   trusted.overlay.overlay.whiteout / user.overlay.whiteout; the reader
//   drops the markers, so the user's xattrs of those names are gone too.

import type { BStr } from "../../shared/bytes.ts";
import { cloneTree, type Dir, isWhiteout } from "../../shared/tree.ts";
import type { DiffOptions } from "./tree-compare.ts";

const DIR_MARKERS: BStr[] = ["trusted.overlay.whiteouts", "user.overlay.whiteouts"];
const V1_DIR_MARKERS: BStr[] = ["trusted.overlay.opaque", "user.overlay.opaque"];
const LEAF_MARKERS: BStr[] = ["trusted.overlay.whiteout", "user.overlay.whiteout"];

export function expectedReadBack(tree: Dir, version: 0 | 1 | 2): Dir {
  const out = cloneTree(tree);
  if (version === 2) return out;
  const stack: Dir[] = [out];
  while (stack.length > 0) {
    const dir = stack.pop()!;
    let whiteouts = false;
    for (const child of dir.entries.values()) {
      if (child.kind === "dir") stack.push(child);
      else if (isWhiteout(child)) {
        whiteouts = true;
        for (const k of LEAF_MARKERS) child.stat.xattrs.delete(k);
      }
    }
    if (whiteouts) {
      for (const k of DIR_MARKERS) dir.stat.xattrs.delete(k);
      if (version === 1) for (const k of V1_DIR_MARKERS) dir.stat.xattrs.delete(k);
    }
  }
  return out;
}

export function readBackDiffOptions(version: 0 | 1 | 2): DiffOptions {
  return version === 2 ? { ignoreNsec: true } : {};
}
