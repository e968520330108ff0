// OCI layers → filesystem tree (oci.md §3), pure.
//
// `LayerApplier` applies the tar entries of ordered layers (bottom first) to
// one tree, with overlay semantics:
//
//   - `.wh.<name>` removes <name> from the entry's directory (a directory with
//     everything below it); `.wh..wh..opq` removes every current child of the
//     directory (those a lower layer put there and, as composefs-rs does,
//     those this layer already added). Whiteout entries themselves are never
//     added.
//   - a directory over an existing directory replaces only its stat (merge);
//     anything else replaces what was there (a whole subtree included).
//   - a hardlink names the leaf found at its target path at that moment; it
//     keeps that leaf when the target is later replaced or removed.
//   - the root entry ("/", "./") must be a directory and only sets the root's
//     stat (the OCI transform overwrites it from /usr anyway).
//
// Regular files ≤ 64 bytes are inline; larger ones are External objects whose
// digest the importer computed (passed in with the entry).
//
// Hostile layers fail with a CfsError naming the layer and the archive offset:
// `..` components (already refused by shared/tar.ts), a parent that is
// missing or is not a directory (a symlink is never followed), a hardlink to
// a missing path, to a directory or to itself, the same path twice in one
// layer (except a directory listed twice), names over 255 bytes, trees deeper
// than the EROFS reader accepts, absurd sizes, too many nodes.
//
// `readLayerStream` turns a stored layer (a splitstream: tar headers inline,
// file contents as object references) back into entries without reading any
// object, which is how trees are built from the repository.

import { bytesOf, displayBstr, type BStr } from "./bytes.ts";
import { CfsError } from "./errors.ts";
import { MAX_DEPTH } from "./erofs/reader.ts";
import { readChunks, type SplitStreamInfo } from "./splitstream.ts";
import { TarReader, type TarEntry } from "./tar.ts";
import {
  externalFile,
  inlineFile,
  makeDir,
  makeLeaf,
  makeStat,
  type Dir,
  type Leaf,
  type LeafContent,
  type Node,
  type Regular,
  type Stat,
} from "./tree.ts";

/** Files of at most this many bytes are stored inline (composefs-rs INLINE_CONTENT_MAX). */
export const INLINE_MAX = 64;
/** Longest file name (a path component), as Linux NAME_MAX. */
export const NAME_MAX = 255;
/** Longest symlink target the EROFS writer accepts. */
export const SYMLINK_MAX = 4095;

export const WHITEOUT_PREFIX = ".wh.";
export const OPAQUE_MARKER = ".wh..wh..opq";

export interface LayerLimits {
  /** Largest regular file accepted (default 1 TiB). */
  maxFileSize?: number;
  /** Most nodes (directories + leaves) the tree may hold at once (default 10 million). */
  maxNodes?: number;
  /** Deepest path accepted, in components (default: the EROFS reader's limit). */
  maxDepth?: number;
}

export const DEFAULT_MAX_FILE_SIZE = 2 ** 40;
export const DEFAULT_MAX_NODES = 10_000_000;

/** The content a regular tar entry becomes: inline bytes, or an object of `size` bytes. */
export type RegularSource = { inline: Uint8Array } | { digest: Uint8Array; size: number | bigint };

function show(path: BStr): string {
  return displayBstr(path);
}

function parentOf(path: BStr): BStr {
  const i = path.lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}

function countNodes(node: Node, seen: Set<Leaf>): number {
  if (node.kind === "leaf") {
    if (seen.has(node)) return 0;
    seen.add(node);
    return 1;
  }
  let n = 1;
  const stack: Dir[] = [node];
  while (stack.length > 0) {
    const d = stack.pop()!;
    for (const c of d.entries.values()) {
      if (c.kind === "dir") {
        n++;
        stack.push(c);
      } else if (!seen.has(c)) {
        seen.add(c);
        n++;
      }
    }
  }
  return n;
}

export class LayerApplier {
  readonly root: Dir;
  private readonly maxFileSize: number;
  private readonly maxNodes: number;
  private readonly maxDepth: number;
  private layer = "layer";
  /** Paths this layer wrote, with the archive offset of the entry and whether it was a directory. */
  private added = new Map<BStr, { offset: number; dir: boolean }>();
  /** Upper bound of the live nodes (dirs + leaves); recounted exactly when it hits the limit. */
  private nodes = 1;

  constructor(limits: LayerLimits = {}) {
    this.root = makeDir();
    this.maxFileSize = limits.maxFileSize ?? DEFAULT_MAX_FILE_SIZE;
    this.maxNodes = limits.maxNodes ?? DEFAULT_MAX_NODES;
    this.maxDepth = limits.maxDepth ?? MAX_DEPTH;
  }

  /** Start the next layer; `name` prefixes error messages (e.g. "layer sha256:…"). */
  startLayer(name: string): void {
    this.layer = name;
    this.added = new Map();
  }

  finishLayer(): void {
    this.added = new Map();
  }

  private fail(e: TarEntry, what: string): never {
    throw new CfsError(`${this.layer}: offset ${e.offset}`, `${show(e.path)}: ${what}`);
  }

  /** The directory at `path`, walking only through directories (never symlinks). */
  private dirAt(e: TarEntry, path: BStr, role: string): Dir {
    let dir = this.root;
    if (path === "/") return dir;
    let at = "";
    for (const part of path.slice(1).split("/")) {
      at += "/" + part;
      const next = dir.entries.get(part);
      if (next === undefined) this.fail(e, `${role} ${show(at)} does not exist`);
      if (next.kind !== "dir") {
        const t = next.content.type === "symlink" ? "a symlink (not followed)" : "not a directory";
        this.fail(e, `${role} ${show(at)} is ${t}`);
      }
      dir = next;
    }
    return dir;
  }

  private stat(e: TarEntry): Stat {
    return makeStat({ mode: e.mode, uid: e.uid, gid: e.gid, mtimeSec: e.mtimeSec, mtimeNsec: e.mtimeNsec, xattrs: e.xattrs });
  }

  private grow(e: TarEntry): void {
    if (++this.nodes <= this.maxNodes) return;
    this.nodes = countNodes(this.root, new Set());
    if (this.nodes > this.maxNodes) this.fail(e, `the image has more than ${this.maxNodes} files`);
  }

  /**
   * Apply one entry. Regular entries need `source`: their inline bytes, or
   * the digest of the object holding their content.
   */
  apply(e: TarEntry, source?: RegularSource): void {
    const path = e.path;
    if (path === "/") {
      if (e.type !== "dir") this.fail(e, `the root entry must be a directory, not a ${e.type}`);
      this.root.stat = this.stat(e);
      return;
    }
    const slash = path.lastIndexOf("/");
    const name = path.slice(slash + 1);
    if (name.length > NAME_MAX) this.fail(e, `file name longer than ${NAME_MAX} bytes`);
    const depth = path.split("/").length - 1;
    if (depth > this.maxDepth) this.fail(e, `nested deeper than ${this.maxDepth} directories`);
    const dir = this.dirAt(e, parentOf(path), "parent");

    if (name.startsWith(WHITEOUT_PREFIX)) {
      if (name === OPAQUE_MARKER) {
        dir.entries.clear();
      } else {
        dir.entries.delete(name.slice(WHITEOUT_PREFIX.length));
      }
      return;
    }

    const first = this.added.get(path);
    if (first !== undefined && !(first.dir && e.type === "dir")) {
      this.fail(e, `duplicate entry in the same layer (first at offset ${first.offset})`);
    }
    this.added.set(path, { offset: e.offset, dir: e.type === "dir" });
    const existing = dir.entries.get(name);

    let node: Node;
    switch (e.type) {
      case "dir": {
        if (existing !== undefined && existing.kind === "dir") {
          existing.stat = this.stat(e);
          return;
        }
        node = makeDir(this.stat(e));
        break;
      }
      case "hardlink": {
        const target = e.linkPath!;
        if (target === path) this.fail(e, "hardlink to itself");
        const tdir = this.dirAt(e, parentOf(target), "hardlink target's directory");
        const leaf = tdir.entries.get(target.slice(target.lastIndexOf("/") + 1));
        if (leaf === undefined) this.fail(e, `hardlink target ${show(target)} does not exist`);
        if (leaf.kind === "dir") this.fail(e, `hardlink target ${show(target)} is a directory`);
        // Hardlink entries carry no stat of their own: the link shares the leaf.
        dir.entries.set(name, leaf);
        if (existing === undefined) this.grow(e);
        return;
      }
      case "regular": {
        if (e.size > this.maxFileSize) this.fail(e, `file of ${e.size} bytes exceeds the limit of ${this.maxFileSize} bytes`);
        if (source === undefined) throw new Error(`LayerApplier.apply: no content for regular entry ${path}`);
        let content: Regular;
        if ("inline" in source) {
          if (source.inline.length !== e.size || e.size > INLINE_MAX) {
            this.fail(e, `inline content of ${source.inline.length} bytes for a ${e.size}-byte file`);
          }
          content = inlineFile(source.inline);
        } else {
          if (BigInt(source.size) !== BigInt(e.size) || e.size <= INLINE_MAX) {
            this.fail(e, `external content of ${source.size} bytes for a ${e.size}-byte file`);
          }
          content = externalFile(source.digest, BigInt(e.size));
        }
        node = makeLeaf(content, this.stat(e));
        break;
      }
      case "symlink": {
        if (e.linkName.length > SYMLINK_MAX) this.fail(e, `symlink target longer than ${SYMLINK_MAX} bytes`);
        node = makeLeaf({ type: "symlink", target: bytesOf(e.linkName) }, this.stat(e));
        break;
      }
      case "chr":
      case "blk":
        node = makeLeaf({ type: e.type, rdev: e.rdev } as LeafContent, this.stat(e));
        break;
      case "fifo":
        node = makeLeaf({ type: "fifo" }, this.stat(e));
        break;
    }
    dir.entries.set(name, node);
    this.grow(e);
  }
}

/** One entry of a stored layer with the content its regular file has. */
export interface LayerItem {
  entry: TarEntry;
  source?: RegularSource;
}

/**
 * Read a layer splitstream (repository.md §7.3) back into tar entries. File
 * contents stored as objects are not read: their digests come from the
 * stream's object references and their sizes from the tar headers. Small
 * files' bytes are inline. Throws when the stream does not have the shape
 * composefs writers produce (an external chunk anywhere but as the whole
 * content of a regular file > 64 bytes).
 */
export async function* readLayerStream(info: SplitStreamInfo, name = "layer"): AsyncGenerator<LayerItem> {
  const r = new TarReader({ name });
  let current: TarEntry | null = null;
  let inline: Uint8Array[] = [];
  let got = 0;
  let external: Uint8Array | null = null;
  const finishEntry = (): LayerItem | null => {
    const e = current;
    if (e === null) return null;
    current = null;
    if (e.type !== "regular") return { entry: e };
    if (external !== null) {
      const item = { entry: e, source: { digest: external, size: e.size } };
      external = null;
      return item;
    }
    if (e.size > INLINE_MAX) {
      throw new CfsError(`${name}: offset ${e.offset}`, `${show(e.path)}: a ${e.size}-byte file stored inline (expected an object reference)`);
    }
    const data = inline.length === 1 ? inline[0]! : new Uint8Array(Buffer.concat(inline));
    inline = [];
    return { entry: e, source: { inline: data.slice() } };
  };
  const drain = function* (): Generator<LayerItem> {
    for (let ev = r.next(); ev !== null; ev = r.next()) {
      if (ev.kind === "entry") {
        const done = finishEntry();
        if (done !== null) yield done;
        current = ev.entry;
        got = 0;
        if (ev.entry.size === 0) {
          const d = finishEntry();
          if (d !== null) yield d;
        }
      } else if (ev.kind === "data") {
        if (current !== null && current.size > INLINE_MAX) {
          throw new CfsError(`${name}: offset ${ev.offset}`, `${show(current.path)}: a ${current.size}-byte file stored inline (expected an object reference)`);
        }
        inline.push(ev.bytes);
        got += ev.bytes.length;
        if (current !== null && got === current.size) {
          const d = finishEntry();
          if (d !== null) yield d;
        }
      } else {
        const done = finishEntry();
        if (done !== null) yield done;
      }
    }
  };
  for await (const c of readChunks(info, name)) {
    if (c.kind === "inline") {
      r.push(c.bytes);
      yield* drain();
      continue;
    }
    // An external chunk: the whole content of the entry just read.
    const e = current as TarEntry | null;
    if (e === null || e.type !== "regular" || got !== 0 || e.size <= INLINE_MAX || external !== null) {
      throw new CfsError(`${name}: offset ${r.offset}`, "object reference where the tar stream has no file content to replace");
    }
    external = c.id;
    const left = r.discardPayload();
    if (left < e.size) throw new CfsError(`${name}: offset ${r.offset}`, "object reference after part of a file's content");
    r.skipped(e.size);
    const d = finishEntry();
    if (d !== null) yield d;
  }
  r.end();
  yield* drain();
  const d = finishEntry();
  if (d !== null) yield d;
  if (!r.done) throw new CfsError(name, "layer stream ends inside the tar archive");
}
