// Garbage collection of a composefs repository (repository.md §10), with
// cfsboot's fixes (§13): stale temporaries are removed after a threshold,
// dangling refs do not abort the collection, and nothing is deleted before
// the whole plan is known (a bad name or an unreadable root aborts first).
//
// Live set:
//   1. image roots: every `images/refs/**` link (through its first-level
//      `images/<hex>` entry) and every `images/<name>` in `extraRoots`: the
//      image object and every object its EROFS refers to;
//   2. stream roots: every `streams/refs/**` link (through its first-level
//      `streams/<id>` entry) and every `streams/<name>` in `extraRoots`: the
//      stream object, its object refs, every named-ref target, and —
//      matched by object id through the `streams/*` links — the streams those
//      targets are (walked once each). A named-ref target that is an image
//      this repository made (`images/<hex>` exists) has its EROFS references
//      walked too (more conservative than composefs-rs, which relies on the
//      layers keeping the same objects alive).
// Everything in objects/00..ff that is not live is deleted; then broken
// links in images/, streams/ and their refs/ trees are removed.
//
// Locking: an exclusive lock for a real run (waits for every pull and
// mount), downgraded to shared afterwards; a dry run (`-n`) keeps the shared
// lock and deletes nothing.

import { lstatSync, readdirSync, readlinkSync, unlinkSync } from "node:fs";
import { dirname, resolve as resolvePath } from "node:path";

import { toHex } from "../shared/bytes.ts";
import { imageObjects } from "../shared/erofs/reader.ts";
import { CfsError, describeError } from "../shared/errors.ts";
import { DIGEST_SIZE } from "../shared/fsverity.ts";
import { parseSplitStream } from "../shared/splitstream.ts";
import * as sys from "../shared/sys.ts";
import { type Repository, TMP_OBJECT_PREFIX, TMP_SYMLINK_PREFIX, readFd } from "./repo.ts";

export interface GcOptions {
  /** Only report; delete nothing (shared lock). */
  dryRun?: boolean;
  /** Extra roots: names of `images/<name>` or `streams/<name>` entries. */
  extraRoots?: readonly string[];
  /** Temporaries (`objects/.tmp-*`, `.symlink-*`) older than this are removed (default 1 hour). */
  tmpMaxAgeMs?: number;
  /** Where "waiting for the lock" is reported. */
  onWait?: (message: string) => void;
}

export interface GcReport {
  dryRun: boolean;
  objectsRemoved: number;
  bytesFreed: number;
  imagesPruned: number;
  streamsPruned: number;
  /** Stale temporaries removed. */
  tmpRemoved: number;
  /** Repository-relative paths of the objects removed (or that would be), sorted. */
  removedObjects: string[];
  /** Repository-relative paths of the links pruned (or that would be). */
  prunedLinks: string[];
  /** Repository-relative paths of the stale temporaries removed (or that would be). */
  removedTemporaries: string[];
}

export const DEFAULT_TMP_MAX_AGE_MS = 60 * 60 * 1000;

/** First-level links of `images/` or `streams/`: name → object hex (from the link text). */
function firstLevel(repo: Repository, category: "images" | "streams"): Map<string, string> {
  const out = new Map<string, string>();
  let ents;
  try {
    ents = readdirSync(`${repo.path}/${category}`, { withFileTypes: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return out;
    throw sys.fromNodeError(`${repo.path}/${category}`, "readdir", e);
  }
  for (const ent of ents) {
    const name = String(ent.name);
    if (name === "refs" || name.startsWith(TMP_SYMLINK_PREFIX)) continue;
    if (!ent.isSymbolicLink()) throw new CfsError(`${repo.path}/${category}/${name}`, "not a symlink (the repository is damaged; run `cfsboot repo fsck`)");
    const text = readlinkSync(`${repo.path}/${category}/${name}`);
    const id = repo.idFromLinkText(text);
    if (id === null) throw new CfsError(`${repo.path}/${category}/${name}`, `link text ${JSON.stringify(text)} does not name an object (the repository is damaged; run \`cfsboot repo fsck\`)`);
    out.set(name, toHex(id));
  }
  return out;
}

/** First-level entry names the `refs/**` links of a category point at (their basenames). */
function refTargets(repo: Repository, category: "images" | "streams"): string[] {
  return repo.listRefs(`${category}/refs`).map((r) => r.text.split("/").pop()!);
}

/** Plan and (unless dry run) carry out a collection. */
export async function runGc(repo: Repository, opts: GcOptions = {}): Promise<GcReport> {
  const dryRun = opts.dryRun ?? false;
  if (!dryRun) {
    repo.requireWritable();
    repo.lockExclusive(opts.onWait);
  }
  try {
    return collect(repo, dryRun, opts);
  } finally {
    if (!dryRun) repo.lockShared();
  }
}

function collect(repo: Repository, dryRun: boolean, opts: GcOptions): GcReport {
  const extra = new Set(opts.extraRoots ?? []);
  const live = new Set<string>();

  const images = firstLevel(repo, "images");
  const imageIds = new Set(images.values());
  const walkedImages = new Set<string>();
  const walkImage = (hex: string, what: string) => {
    live.add(hex);
    if (walkedImages.has(hex)) return;
    walkedImages.add(hex);
    if (!repo.hasObject(hex)) return; // a dangling root: nothing to keep
    let bytes: Uint8Array;
    let ids: string[];
    try {
      const fd = sys.open(repo.objectPath(hex), sys.O_RDONLY | sys.O_NOFOLLOW);
      try {
        bytes = readFd(fd, repo.objectPath(hex));
      } finally {
        sys.close(fd);
      }
      ids = imageObjects(bytes, { name: what, algorithm: repo.alg }).ids;
    } catch (e) {
      throw new CfsError(what, `cannot read the image, so its objects are unknown; nothing was removed (run \`cfsboot repo fsck\`): ${describeError(e)}`);
    }
    for (const id of ids) live.add(id);
  };

  const imageRoots = new Set<string>();
  for (const t of refTargets(repo, "images")) if (images.has(t)) imageRoots.add(t);
  for (const n of extra) if (images.has(n)) imageRoots.add(n);
  for (const name of [...imageRoots].sort()) walkImage(images.get(name)!, `images/${name}`);

  const streams = firstLevel(repo, "streams");
  const byId = new Map<string, string>();
  for (const [name, hex] of [...streams].sort((a, b) => (a[0] < b[0] ? -1 : 1))) if (!byId.has(hex)) byId.set(hex, name);
  const walked = new Set<string>();
  const walkStream = (name: string) => {
    if (walked.has(name)) return;
    walked.add(name);
    const hex = streams.get(name)!;
    live.add(hex);
    if (!repo.hasObject(hex)) return;
    let info;
    try {
      const fd = sys.open(repo.objectPath(hex), sys.O_RDONLY | sys.O_NOFOLLOW);
      let bytes: Uint8Array;
      try {
        bytes = readFd(fd, repo.objectPath(hex));
      } finally {
        sys.close(fd);
      }
      info = parseSplitStream(bytes, { name: `streams/${name}`, algorithm: repo.alg });
    } catch (e) {
      throw new CfsError(`streams/${name}`, `cannot read the stream, so its references are unknown; nothing was removed (run \`cfsboot repo fsck\`): ${describeError(e)}`);
    }
    for (const id of info.objectRefs) live.add(toHex(id));
    for (const [ref, id] of [...info.namedRefs].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
      const t = toHex(id);
      live.add(t);
      const sname = byId.get(t);
      if (sname !== undefined) walkStream(sname);
      else if (imageIds.has(t)) walkImage(t, `streams/${name}: ${ref}`);
    }
  };
  const streamRoots = new Set<string>();
  for (const t of refTargets(repo, "streams")) if (streams.has(t)) streamRoots.add(t);
  for (const n of extra) if (streams.has(n)) streamRoots.add(n);
  for (const name of [...streamRoots].sort()) walkStream(name);

  // The plan: every dead object (names checked before anything is deleted).
  const restLen = DIGEST_SIZE[repo.alg] * 2 - 2;
  const nameRe = new RegExp(`^[0-9a-f]{${restLen}}$`);
  const doomed: { rel: string; size: number }[] = [];
  const removedTemporaries: string[] = [];
  const now = Date.now();
  const maxAge = opts.tmpMaxAgeMs ?? DEFAULT_TMP_MAX_AGE_MS;
  const stale = (abs: string): boolean => {
    try {
      return now - lstatSync(abs).mtimeMs > maxAge;
    } catch {
      return false;
    }
  };
  let topLevel: string[] = [];
  try {
    topLevel = readdirSync(`${repo.path}/objects`);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw sys.fromNodeError(`${repo.path}/objects`, "readdir", e);
  }
  for (const xx of topLevel.sort()) {
    if (xx.startsWith(".tmp-")) {
      if (stale(`${repo.path}/objects/${xx}`)) removedTemporaries.push(`objects/${xx}`);
      continue;
    }
    if (!/^[0-9a-f]{2}$/.test(xx)) continue;
    const dir = `${repo.path}/objects/${xx}`;
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOTDIR") continue;
      throw sys.fromNodeError(dir, "readdir", e);
    }
    for (const n of names.sort()) {
      if (!nameRe.test(n)) throw new CfsError(`${dir}/${n}`, `not an object name of this ${repo.alg} repository; nothing was removed (run \`cfsboot repo fsck\`)`);
      if (live.has(xx + n)) continue;
      let size = 0;
      try {
        size = lstatSync(`${dir}/${n}`).size;
      } catch {}
      doomed.push({ rel: `objects/${xx}/${n}`, size });
    }
  }
  const doomedSet = new Set(doomed.map((d) => `${repo.path}/${d.rel}`));

  // Stale link temporaries (a crash between symlink() and rename()).
  for (const rel of linkTemporaries(repo)) if (stale(`${repo.path}/${rel}`)) removedTemporaries.push(rel);
  for (const n of safeReaddir(repo.path)) if (n.startsWith(".meta.json.tmp-") && stale(`${repo.path}/${n}`)) removedTemporaries.push(n);
  const tmpSet = new Set(removedTemporaries.map((r) => `${repo.path}/${r}`));

  // Carry out.
  let bytesFreed = 0;
  for (const d of doomed) {
    bytesFreed += d.size;
    if (!dryRun) unlinkQuiet(`${repo.path}/${d.rel}`);
  }
  if (!dryRun) for (const rel of removedTemporaries) unlinkQuiet(`${repo.path}/${rel}`);

  // Broken links: first level, then the refs trees (a ref through a pruned entry is broken too).
  const gone = (abs: string) => doomedSet.has(abs) || tmpSet.has(abs);
  const prunedLinks: string[] = [];
  const counts = { images: 0, streams: 0 };
  for (const category of ["images", "streams"] as const) {
    const pruned = new Set<string>();
    const check = (rel: string) => {
      const abs = `${repo.path}/${rel}`;
      if (tmpSet.has(abs)) return;
      if (resolves(abs, (p) => gone(p) || pruned.has(p))) return;
      pruned.add(abs);
      prunedLinks.push(rel);
      counts[category]++;
      if (!dryRun) unlinkQuiet(abs);
    };
    for (const n of safeReaddir(`${repo.path}/${category}`).sort()) {
      if (n === "refs") continue;
      let st;
      try {
        st = lstatSync(`${repo.path}/${category}/${n}`);
      } catch {
        continue;
      }
      if (st.isSymbolicLink()) check(`${category}/${n}`);
    }
    for (const r of repo.listRefs(`${category}/refs`)) check(`${category}/refs/${r.name}`);
  }

  return {
    dryRun,
    objectsRemoved: doomed.length,
    bytesFreed,
    imagesPruned: counts.images,
    streamsPruned: counts.streams,
    tmpRemoved: removedTemporaries.length,
    removedObjects: doomed.map((d) => d.rel),
    prunedLinks,
    removedTemporaries,
  };
}

/**
 * Whether the link at `abs` resolves to an existing file, treating paths
 * for which `gone` is true as absent (what a dry run predicts).
 */
function resolves(abs: string, gone: (p: string) => boolean): boolean {
  let p = abs;
  for (let hops = 0; hops < 40; hops++) {
    if (gone(p)) return false;
    let st;
    try {
      st = lstatSync(p);
    } catch {
      return false;
    }
    if (!st.isSymbolicLink()) return true;
    p = resolvePath(dirname(p), readlinkSync(p));
  }
  return false;
}

/** `.symlink-*` temporaries in images/, streams/ and their refs trees. */
function linkTemporaries(repo: Repository): string[] {
  const out: string[] = [];
  const walk = (rel: string, depth: number) => {
    for (const n of safeReaddir(`${repo.path}/${rel}`)) {
      const r = `${rel}/${n}`;
      if (n.startsWith(TMP_SYMLINK_PREFIX)) out.push(r);
      else if (depth > 0 && isDirNoFollow(`${repo.path}/${r}`)) walk(r, depth - 1);
    }
  };
  for (const c of ["images", "streams"]) {
    walk(c, 0);
    walk(`${c}/refs`, 64);
  }
  return out;
}

function isDirNoFollow(p: string): boolean {
  try {
    return lstatSync(p).isDirectory();
  } catch {
    return false;
  }
}

function safeReaddir(p: string): string[] {
  try {
    return readdirSync(p);
  } catch {
    return [];
  }
}

function unlinkQuiet(p: string): void {
  try {
    unlinkSync(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw sys.fromNodeError(p, "unlink", e);
  }
}

/** cfsctl's summary lines (plus the list of paths for a dry run). */
export function formatGcReport(r: GcReport): string {
  let out = "";
  if (r.dryRun) {
    out += "Dry run (no files deleted):\n";
    for (const p of r.removedObjects) out += `would remove ${p}\n`;
    for (const p of r.prunedLinks) out += `would prune ${p}\n`;
    for (const p of r.removedTemporaries) out += `would remove stale temporary ${p}\n`;
  }
  out += `Objects: ${r.objectsRemoved} removed (${r.bytesFreed} bytes)\n`;
  if (r.imagesPruned > 0 || r.streamsPruned > 0) out += `Pruned symlinks: ${r.imagesPruned} images, ${r.streamsPruned} streams\n`;
  if (r.tmpRemoved > 0) out += `Stale temporaries: ${r.tmpRemoved} removed\n`;
  return out;
}
