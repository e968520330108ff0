// Snapshots of an /etc for the three-way merge planner (shared/etcmerge.ts):
// from an image tree (pristine and new: read through the EROFS reader, no
// mount) and from a live directory (current). Paths are relative to /etc,
// byte strings, without a leading "/". Nothing follows a symlink: the live
// walk uses lstat-style statx, readlink and l*xattr. Regular files are
// compared by the SHA-256 of their bytes, whatever their fs-verity state
// (bootc-composefs.md §11 #6).

import { createHash } from "node:crypto";
import { closeSync, openSync, readSync, readlinkSync } from "node:fs";

import type { BStr } from "../shared/bytes.ts";
import { CfsError } from "../shared/errors.ts";
import type { EtcNode, EtcTree, SpecialFile } from "../shared/etcmerge.ts";
import * as sys from "../shared/sys.ts";
import type { Dir } from "../shared/tree.ts";
import { bp, fsErr, listDir } from "./fsops.ts";
import { type ContentSource, leafBytes } from "./materialize.ts";

export interface EtcSnapshot {
  tree: EtcTree;
  specials: SpecialFile[];
}

const sha256 = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

/** The snapshot of an image's /etc directory node. `label` names the image in errors. */
export function etcFromImage(etc: Dir | null, src: ContentSource, label: string): EtcSnapshot {
  const tree: EtcTree = new Map();
  const specials: SpecialFile[] = [];
  if (etc === null) return { tree, specials };
  const walk = (d: Dir, prefix: BStr): void => {
    for (const [name, node] of d.entries) {
      const p = prefix === "" ? name : `${prefix}/${name}`;
      const base = { mode: node.stat.mode & 0o7777, uid: node.stat.uid, gid: node.stat.gid, xattrs: new Map(node.stat.xattrs), mtime: { sec: node.stat.mtimeSec, nsec: node.stat.mtimeNsec } };
      if (node.kind === "dir") {
        tree.set(p, { ...base, kind: "dir" });
        walk(node, p);
        continue;
      }
      const c = node.content;
      if (c.type === "regular") tree.set(p, { ...base, kind: "file", sha256: sha256(leafBytes(src, node, `${label}: /etc/${p}`)) });
      else if (c.type === "symlink") tree.set(p, { ...base, kind: "link", target: c.target });
      else specials.push({ path: p, type: c.type });
    }
  };
  walk(etc, "");
  return { tree, specials };
}

function fileSha256(path: BStr): string {
  const h = createHash("sha256");
  let fd: number;
  try {
    fd = openSync(bp(path), "r");
  } catch (e) {
    throw fsErr(path, "open", e);
  }
  try {
    const buf = new Uint8Array(1 << 20);
    for (;;) {
      const n = readSync(fd, buf, 0, buf.byteLength, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
    }
  } catch (e) {
    throw fsErr(path, "read", e);
  } finally {
    closeSync(fd);
  }
  return h.digest("hex");
}

/** The snapshot of a live /etc directory (absent → empty). */
export function etcFromDisk(root: BStr): EtcSnapshot {
  const tree: EtcTree = new Map();
  const specials: SpecialFile[] = [];
  let rootSt: sys.Statx;
  try {
    rootSt = sys.statx(root);
  } catch (e) {
    if (sys.isErrno(e, "ENOENT")) return { tree, specials };
    throw e;
  }
  if ((rootSt.mode & 0o170000) !== 0o040000) throw new CfsError(root, "not a directory");
  const stack: BStr[] = [""];
  while (stack.length > 0) {
    const rel = stack.pop()!;
    const dir = rel === "" ? root : `${root}/${rel}`;
    for (const name of listDir(dir)) {
      const p = rel === "" ? name : `${rel}/${name}`;
      const abs = `${root}/${p}`;
      const st = sys.statx(abs);
      const type = st.mode & 0o170000;
      const base = { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, xattrs: sys.readXattrs(abs), mtime: { sec: st.mtimeSec, nsec: st.mtimeNsec } };
      let node: EtcNode | null = null;
      if (type === 0o040000) {
        node = { ...base, kind: "dir" };
        stack.push(p);
      } else if (type === 0o100000) node = { ...base, kind: "file", sha256: fileSha256(abs) };
      else if (type === 0o120000) {
        let target: Buffer;
        try {
          target = readlinkSync(bp(abs), { encoding: "buffer" }) as Buffer;
        } catch (e) {
          throw fsErr(abs, "readlink", e);
        }
        node = { ...base, kind: "link", target: new Uint8Array(target) };
      } else {
        specials.push({ path: p, type: type === 0o010000 ? "fifo" : type === 0o140000 ? "socket" : type === 0o020000 ? "chr" : "blk" });
      }
      if (node !== null) tree.set(p, node);
    }
  }
  return { tree, specials };
}
