// What C `composefs-info` prints for an image (tools/composefs-info.c), from
// the C view of the image (`loadImageC` in reader.ts). Pure: nodes in,
// bytes out.
//
// - `cDump`: `composefs-info dump` — a dumpfile with the image's directory
//   sizes, stored nlink values, xattrs in the order C reads them (inline
//   entries, then shared ones), and C-style hardlink lines (`@` + the
//   target's real mode, every field copied from the target, PAYLOAD = the
//   target's path, which is its first depth-first occurrence).
// - `cList`: `composefs-info ls`.
// - `cPayloads`: the sorted, unique payloads `objects`/`missing-objects` print.

import type { BStr } from "../bytes.ts";
import { toHex } from "../bytes.ts";
import { escapeField } from "../dumpfile.ts";
import { S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from "../tree.ts";
import type { CNode } from "./reader.ts";

/** Path of a node built from its parents, as C `node_build_path` does ("" for the root). */
export function cNodePath(node: CNode): BStr {
  const parts: BStr[] = [];
  for (let n: CNode | null = node; n !== null && n.parent !== null; n = n.parent) parts.push(n.name);
  if (parts.length === 0) return "";
  parts.reverse();
  return "/" + parts.join("/");
}

/** PAYLOAD/CONTENT: absent → "-", exactly "-" → "\x2d", and (unlike dumpfile writers) empty → "". */
function optional(v: BStr | Uint8Array | null): string {
  if (v === null) return "-";
  if (v.length === 0) return "";
  return escapeField(v, "optional");
}

/** ` key=value` escaped; cached per value object (shared xattrs are one object per image). */
const xattrCache = new WeakMap<Uint8Array, { key: BStr; text: string }>();

function xattrText(key: BStr, value: Uint8Array): string {
  const hit = xattrCache.get(value);
  if (hit !== undefined && hit.key === key) return hit.text;
  const text = " " + escapeField(key, "xattr") + "=" + escapeField(value, "xattr");
  xattrCache.set(value, { key, text });
  return text;
}

interface Frame {
  node: CNode;
  path: BStr;
  i: number;
}

/** A path component escaped as in a dump path (ESCAPE_STANDARD: no lone-dash rule). */
function escapeName(name: BStr): string {
  return name === "-" ? "-" : escapeField(name, "optional");
}

/** `composefs-info dump`: one line per node, depth-first, children in name order. */
export function cDump(root: CNode): Uint8Array {
  const out = new Sink();
  // `escaped` is the escaped path (escaping works byte by byte, so a path's
  // escape is its parent's plus "/" plus the escaped name).
  const line = (node: CNode, escaped: string): void => {
    const t = node.linkTo ?? node;
    const hardlink = node.linkTo !== null ? cNodePath(t) : null;
    const content = t.content === null ? null : t.content.subarray(0, Number(t.size));
    let s = `${escaped} ${t.size} ${hardlink !== null ? "@" : ""}${t.mode.toString(8)} ${t.nlink} ${t.uid} ${t.gid} ${t.rdev} ${t.mtimeSec}.${t.mtimeNsec} ${optional(hardlink ?? t.payload)} ${optional(content)} ${t.digest === null ? "-" : toHex(t.digest)}`;
    for (const [k, v] of t.xattrs) s += xattrText(k, v);
    out.push(s + "\n");
  };
  line(root, "/");
  const stack: Frame[] = [{ node: root, path: "", i: 0 }];
  while (stack.length > 0) {
    const f = stack[stack.length - 1]!;
    const child = f.node.children[f.i++];
    if (child === undefined) {
      stack.pop();
      continue;
    }
    const path = `${f.path}/${escapeName(child.name)}`;
    line(child, path);
    if (child.children.length > 0) stack.push({ node: child, path, i: 0 });
  }
  return out.bytes();
}

// `ls` escapes paths keeping spaces (isprint), everything else like the dump.
const LS_PLAIN = /^[\x20-\x5b\x5d-\x7e]*$/;

function escapeKeepSpace(s: BStr): string {
  if (LS_PLAIN.test(s)) return s;
  let r = "";
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x5c) r += "\\\\";
    else if (c === 0x0a) r += "\\n";
    else if (c === 0x0d) r += "\\r";
    else if (c === 0x09) r += "\\t";
    else if (c >= 0x20 && c <= 0x7e) r += s[i];
    else r += (c < 16 ? "\\x0" : "\\x") + c.toString(16);
  }
  return r;
}

/** Payload escaping of `ls` (ESCAPE_STANDARD without the lone-dash rule). */
function escapeStandard(s: BStr): string {
  return s === "-" ? "-" : s.length === 0 ? "" : escapeField(s, "optional");
}

/** `composefs-info ls`: every path below the root, with `/`, `-> target` or `@ payload`. */
export function cList(root: CNode): Uint8Array {
  const out: string[] = [];
  const stack: Frame[] = [{ node: root, path: "", i: 0 }];
  while (stack.length > 0) {
    const f = stack[stack.length - 1]!;
    const child = f.node.children[f.i++];
    if (child === undefined) {
      stack.pop();
      continue;
    }
    const path = f.path + "/" + child.name;
    // Hardlink nodes have mode 0 and no payload in C: only the path is printed.
    const type = child.mode & S_IFMT;
    let s = escapeKeepSpace(path);
    if (type === S_IFDIR) s += "/\t";
    else if (type === S_IFLNK) s += "\t-> " + escapeStandard(child.payload ?? "");
    else if (type === S_IFREG && child.payload !== null) s += "\t@ " + escapeStandard(child.payload);
    out.push(s + "\n");
    if (child.children.length > 0) stack.push({ node: child, path, i: 0 });
  }
  return latin1Bytes(out.join(""));
}

/** Payloads of regular files (hardlinks counted once), unique, in byte order. */
export function cPayloads(root: CNode): BStr[] {
  const set = new Set<BStr>();
  const stack: CNode[] = [root];
  while (stack.length > 0) {
    const n = stack.pop()!;
    if ((n.mode & S_IFMT) === S_IFREG && n.payload !== null) set.add(n.payload);
    for (const c of n.children) stack.push(c);
  }
  return [...set].sort();
}

function latin1Bytes(s: string): Uint8Array {
  const b = Buffer.from(s, "latin1");
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

type LatinWriteBuffer = Buffer & { latin1Write(s: string, offset: number): number };

/** Output buffer taking byte strings (each char one byte). */
class Sink {
  private buf = Buffer.allocUnsafe(1 << 14) as LatinWriteBuffer;
  private len = 0;
  push(s: string): void {
    if (this.len + s.length > this.buf.length) {
      const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.len + s.length)) as LatinWriteBuffer;
      this.buf.copy(next, 0, 0, this.len);
      this.buf = next;
    }
    this.len += this.buf.latin1Write(s, this.len);
  }
  bytes(): Uint8Array {
    return new Uint8Array(this.buf.buffer, this.buf.byteOffset, this.len);
  }
}
