// Repository integrity check (repository.md §11), with composefs-rs' error
// kinds and output formats (`cfsctl fsck`, `cfsctl fsck --json`).
//
// Phases:
//   0. meta.json re-read and parsed; algorithm compatible.
//   1. objects/XX/<rest>: name, open, digest = name. The digest is the
//      kernel's fs-verity measurement when the file has fs-verity; in an
//      insecure repository a file without it is hashed in userspace (by
//      the worker pool, in parallel); in a secure one that is an error.
//   2. streams/*: symlink, resolves, parses as a splitstream of this
//      algorithm, its stream section decodes (chunks in range, total size =
//      the header's), every object ref and named-ref target exists.
//   3. images/*: symlink, resolves to the object its name spells, parses as
//      a composefs EROFS under the strict rules, every object it refers to
//      exists.
//   4. refs/ trees: directories, links that resolve, nothing else.
// Read-only: nothing is changed. Takes no exclusive lock.

import { fstatSync, lstatSync, readdirSync, readlinkSync, statSync } from "node:fs";

import { bytesEqual, toHex } from "../shared/bytes.ts";
import { imageObjects } from "../shared/erofs/reader.ts";
import { describeError } from "../shared/errors.ts";
import { DIGEST_SIZE, algName } from "../shared/fsverity.ts";
import { REPO_META_FILENAME, parseRepoMeta } from "../shared/repometa.ts";
import { type SplitStreamInfo, parseSplitStream, readChunks } from "../shared/splitstream.ts";
import * as sys from "../shared/sys.ts";
import { DigestPool } from "./digest.ts";
import { progressBar } from "./progress.ts";
import { type Repository, TMP_SYMLINK_PREFIX, readFd } from "./repo.ts";

export type FsckErrorKind =
  | "object-invalid-name"
  | "object-open-failed"
  | "object-digest-mismatch"
  | "object-verity-failed"
  | "object-verity-missing"
  | "entry-not-symlink"
  | "broken-symlink"
  | "stat-failed"
  | "unexpected-file-type"
  | "stream-open-failed"
  | "missing-object-ref"
  | "stream-read-failed"
  | "missing-named-ref"
  | "object-check-failed"
  | "image-open-failed"
  | "image-read-failed"
  | "image-invalid"
  | "image-missing-object"
  | "metadata-parse-failed"
  | "metadata-algorithm-mismatch";

export interface FsckError {
  kind: FsckErrorKind;
  /** Repository-relative path (`meta.json` for metadata errors). */
  path: string;
  /** The text after the path, as composefs-rs prints it (may be empty). */
  detail: string;
}

export interface FsckReport {
  hasMetadata: boolean;
  objectsChecked: number;
  objectsCorrupted: number;
  streamsChecked: number;
  streamsCorrupted: number;
  imagesChecked: number;
  imagesCorrupted: number;
  brokenLinks: number;
  missingObjects: number;
  errors: FsckError[];
}

/** `fsck: <kind>: <path>: <detail>` (composefs-rs FsckError Display). */
export function fsckErrorText(e: FsckError): string {
  return e.detail === "" ? `fsck: ${e.kind}: ${e.path}` : `fsck: ${e.kind}: ${e.path}: ${e.detail}`;
}

export function fsckOk(r: FsckReport): boolean {
  return r.errors.length === 0;
}

/** The human report, exactly as `cfsctl fsck` prints it. */
export function formatFsckText(r: FsckReport): string {
  const metaError = r.errors.some((e) => e.kind === "metadata-parse-failed" || e.kind === "metadata-algorithm-mismatch");
  let out = `meta.json: ${metaError ? "error" : r.hasMetadata ? "ok" : "absent"}\n`;
  out += `objects: ${Math.max(0, r.objectsChecked - r.objectsCorrupted)}/${r.objectsChecked} ok\n`;
  out += `streams: ${Math.max(0, r.streamsChecked - r.streamsCorrupted)}/${r.streamsChecked} ok\n`;
  out += `images: ${Math.max(0, r.imagesChecked - r.imagesCorrupted)}/${r.imagesChecked} ok\n`;
  if (r.brokenLinks > 0) out += `broken symlinks: ${r.brokenLinks}\n`;
  if (r.missingObjects > 0) out += `missing objects: ${r.missingObjects}\n`;
  if (r.errors.length === 0) out += "status: ok\n";
  else {
    out += `status: ${r.errors.length} error(s)\n`;
    for (const e of r.errors) out += `  - ${fsckErrorText(e)}\n`;
  }
  return out;
}

/** `cfsctl fsck --json`: the varlink reply (snake_case), pretty-printed, with a newline. */
export function formatFsckJson(r: FsckReport): string {
  const doc = {
    ok: fsckOk(r),
    has_metadata: r.hasMetadata,
    objects_checked: r.objectsChecked,
    objects_corrupted: r.objectsCorrupted,
    streams_checked: r.streamsChecked,
    streams_corrupted: r.streamsCorrupted,
    images_checked: r.imagesChecked,
    images_corrupted: r.imagesCorrupted,
    broken_links: r.brokenLinks,
    missing_objects: r.missingObjects,
    errors: r.errors.map(fsckErrorText),
  };
  return `${JSON.stringify(doc, null, 2)}\n`;
}

/** An error's text without the repository path it starts with (the report names it already). */
function detailOf(e: unknown, rel: string): string {
  let t = describeError(e);
  while (t.startsWith(`${rel}: `)) t = t.slice(rel.length + 2);
  return t;
}

function errnoText(e: unknown): string {
  if (e instanceof sys.SysError) return e.what;
  const err = e as NodeJS.ErrnoException;
  if (typeof err?.code === "string") return `${err.code}: ${String(err.message ?? "").split("\n")[0]}`;
  return describeError(e);
}

/** Run every phase. */
export async function runFsck(repo: Repository, opts: { metadataOnly?: boolean } = {}): Promise<FsckReport> {
  const r: FsckReport = {
    hasMetadata: false,
    objectsChecked: 0,
    objectsCorrupted: 0,
    streamsChecked: 0,
    streamsCorrupted: 0,
    imagesChecked: 0,
    imagesCorrupted: 0,
    brokenLinks: 0,
    missingObjects: 0,
    errors: [],
  };
  checkMetadata(repo, r);
  if (!opts.metadataOnly) await checkObjects(repo, r);
  await checkCategory(repo, "streams", r);
  await checkCategory(repo, "images", r);
  return r;
}

function checkMetadata(repo: Repository, r: FsckReport): void {
  let bytes: Uint8Array;
  try {
    const fd = sys.open(`${repo.path}/${REPO_META_FILENAME}`, sys.O_RDONLY);
    try {
      bytes = readFd(fd, REPO_META_FILENAME);
    } finally {
      sys.close(fd);
    }
  } catch (e) {
    const detail = sys.isErrno(e, "ENOENT") ? `${REPO_META_FILENAME} not found; expected because repository was opened successfully` : errnoText(e);
    r.errors.push({ kind: "metadata-parse-failed", path: REPO_META_FILENAME, detail });
    return;
  }
  r.hasMetadata = true;
  try {
    const meta = parseRepoMeta(bytes, REPO_META_FILENAME);
    if (meta.algorithm !== repo.alg) {
      r.errors.push({ kind: "metadata-algorithm-mismatch", path: REPO_META_FILENAME, detail: `expected ${algName(meta.algorithm)}, repository opened as ${repo.alg}` });
    }
  } catch (e) {
    r.errors.push({ kind: "metadata-parse-failed", path: REPO_META_FILENAME, detail: describeError(e).replace(/^meta\.json: /, "") });
  }
}

const WINDOW = 64;

async function checkObjects(repo: Repository, r: FsckReport): Promise<void> {
  const restLen = DIGEST_SIZE[repo.alg] * 2 - 2;
  const nameRe = new RegExp(`^[0-9a-f]{${restLen}}$`);
  let dirs: string[] = [];
  try {
    dirs = readdirSync(`${repo.path}/objects`).filter((d) => /^[0-9a-f]{2}$/.test(d)).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw sys.fromNodeError(`${repo.path}/objects`, "readdir", e);
  }
  const pool = new DigestPool();
  const pending = new Set<Promise<void>>();
  const corrupt = (kind: FsckErrorKind, path: string, detail: string) => {
    r.objectsCorrupted++;
    r.errors.push({ kind, path, detail });
  };
  // On a terminal: a bar over the 256 object prefix directories (rate and ETA).
  const bar = progressBar("fsck", { unit: "prefix directories" });
  let dirsDone = 0;
  try {
    for (const xx of dirs) {
      bar.update(`${r.objectsChecked} objects checked`, dirsDone++, dirs.length);
      let names: string[];
      try {
        if (!lstatSync(`${repo.path}/objects/${xx}`).isDirectory()) continue;
        names = readdirSync(`${repo.path}/objects/${xx}`).sort();
      } catch (e) {
        r.errors.push({ kind: "stat-failed", path: `objects/${xx}`, detail: errnoText(e) });
        continue;
      }
      for (const n of names) {
        const rel = `objects/${xx}/${n}`;
        r.objectsChecked++;
        if (!nameRe.test(n)) {
          corrupt("object-invalid-name", rel, `not a ${repo.alg} object name`);
          continue;
        }
        const expected = xx + n;
        let fd: number;
        try {
          fd = sys.open(`${repo.path}/${rel}`, sys.O_RDONLY | sys.O_NOFOLLOW | sys.O_NONBLOCK);
        } catch (e) {
          corrupt("object-open-failed", rel, errnoText(e));
          continue;
        }
        let kernel: Uint8Array | null = null;
        try {
          const st = fstatSync(fd);
          if (!st.isFile()) {
            sys.close(fd);
            corrupt("object-open-failed", rel, "not a regular file");
            continue;
          }
          const m = sys.measureVerity(fd, rel);
          if (m !== null) {
            if (m.algorithm !== repo.alg) {
              sys.close(fd);
              corrupt("object-verity-failed", rel, `fs-verity algorithm ${String(m.algorithm)}, the repository uses ${repo.alg}`);
              continue;
            }
            kernel = m.digest;
          }
        } catch (e) {
          if (!sys.isVerityUnsupported(e)) {
            sys.close(fd);
            corrupt("object-verity-failed", rel, errnoText(e));
            continue;
          }
        }
        if (kernel !== null) {
          sys.close(fd);
          if (toHex(kernel) !== expected) corrupt("object-digest-mismatch", rel, `measured ${toHex(kernel)}`);
          continue;
        }
        if (repo.secure) {
          sys.close(fd);
          corrupt("object-verity-missing", rel, "");
          continue;
        }
        // Insecure: the userspace digest, in parallel.
        const p: Promise<void> = pool
          .digestFd(fd, repo.alg, undefined, rel)
          .then(
            (d) => {
              if (toHex(d.digest) !== expected) corrupt("object-digest-mismatch", rel, `measured ${toHex(d.digest)}`);
            },
            (e) => corrupt("object-verity-failed", rel, describeError(e)),
          )
          .finally(() => {
            sys.close(fd);
            pending.delete(p);
          });
        pending.add(p);
        if (pending.size >= WINDOW) await Promise.race(pending);
      }
    }
    await Promise.all(pending);
  } finally {
    bar.stop();
    await pool.close();
  }
}

/** Whether a path (following links) exists; "missing" or an error text. */
function statFollow(abs: string): "ok" | "missing" | string {
  try {
    statSync(abs);
    return "ok";
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return "missing";
    return errnoText(e);
  }
}

async function checkCategory(repo: Repository, category: "streams" | "images", r: FsckReport): Promise<void> {
  const isStreams = category === "streams";
  let ents;
  try {
    ents = readdirSync(`${repo.path}/${category}`, { withFileTypes: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
    throw sys.fromNodeError(`${repo.path}/${category}`, "readdir", e);
  }
  const bad = () => (isStreams ? r.streamsCorrupted++ : r.imagesCorrupted++);
  for (const ent of ents.sort((a, b) => (String(a.name) < String(b.name) ? -1 : 1))) {
    const name = String(ent.name);
    if (name === "refs" || name.startsWith(TMP_SYMLINK_PREFIX)) continue;
    const rel = `${category}/${name}`;
    if (isStreams) r.streamsChecked++;
    else r.imagesChecked++;
    if (!ent.isSymbolicLink()) {
      bad();
      r.errors.push({ kind: "entry-not-symlink", path: rel, detail: "" });
      continue;
    }
    const st = statFollow(`${repo.path}/${rel}`);
    if (st === "missing") {
      r.brokenLinks++;
      bad();
      r.errors.push({ kind: "broken-symlink", path: rel, detail: "" });
      continue;
    }
    if (st !== "ok") {
      r.errors.push({ kind: "stat-failed", path: rel, detail: st });
      continue;
    }
    if (isStreams) await checkStream(repo, name, r);
    else checkImage(repo, name, r);
  }
  checkRefs(repo, `${category}/refs`, r);
}

function objectState(repo: Repository, id: Uint8Array): { ok: true; size: number } | { ok: false; missing: boolean; detail: string } {
  try {
    const st = lstatSync(repo.objectPath(id));
    if (!st.isFile()) return { ok: false, missing: false, detail: "not a regular file" };
    return { ok: true, size: st.size };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return { ok: false, missing: true, detail: "" };
    return { ok: false, missing: false, detail: errnoText(e) };
  }
}

async function checkStream(repo: Repository, name: string, r: FsckReport): Promise<void> {
  const rel = `streams/${name}`;
  let info: SplitStreamInfo;
  try {
    const text = readlinkSync(`${repo.path}/${rel}`);
    if (!text.startsWith("../") || repo.idFromLinkText(text) === null) throw new Error(`link text ${JSON.stringify(text)} does not name an object`);
    const fd = sys.open(`${repo.path}/${rel}`, sys.O_RDONLY);
    let bytes: Uint8Array;
    try {
      bytes = readFd(fd, rel);
    } finally {
      sys.close(fd);
    }
    info = parseSplitStream(bytes, { name: rel, algorithm: repo.alg });
  } catch (e) {
    r.streamsCorrupted++;
    r.errors.push({ kind: "stream-open-failed", path: rel, detail: detailOf(e, rel) });
    return;
  }
  const sizes: (number | null)[] = [];
  for (const id of info.objectRefs) {
    const s = objectState(repo, id);
    if (s.ok) sizes.push(s.size);
    else {
      sizes.push(null);
      if (s.missing) {
        r.missingObjects++;
        r.errors.push({ kind: "missing-object-ref", path: rel, detail: toHex(id) });
      } else r.errors.push({ kind: "object-check-failed", path: rel, detail: `${toHex(id)}: ${s.detail}` });
    }
  }
  // The stream section must decode: chunks in range and adding up to the header's size.
  try {
    let total = 0n;
    let unknown = false;
    for await (const c of readChunks(info, rel)) {
      if (c.kind === "inline") total += BigInt(c.bytes.length);
      else {
        const s = sizes[c.index];
        if (s === null || s === undefined) unknown = true;
        else total += BigInt(s);
      }
    }
    if (!unknown && total !== info.streamSize) throw new Error(`the chunks add up to ${total} bytes, the header says ${info.streamSize}`);
  } catch (e) {
    r.streamsCorrupted++;
    r.errors.push({ kind: "stream-read-failed", path: rel, detail: detailOf(e, rel) });
    return;
  }
  for (const [ref, id] of [...info.namedRefs].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
    const s = objectState(repo, id);
    if (s.ok) continue;
    if (s.missing) {
      r.missingObjects++;
      r.errors.push({ kind: "missing-named-ref", path: rel, detail: `ref ${ref}: ${toHex(id)}` });
    } else r.errors.push({ kind: "object-check-failed", path: rel, detail: `${toHex(id)}: checking named ref '${ref}': ${s.detail}` });
  }
}

function checkImage(repo: Repository, name: string, r: FsckReport): void {
  const rel = `images/${name}`;
  let bytes: Uint8Array;
  let fd: number;
  try {
    fd = sys.open(`${repo.path}/${rel}`, sys.O_RDONLY);
  } catch (e) {
    r.imagesCorrupted++;
    r.errors.push({ kind: "image-open-failed", path: rel, detail: errnoText(e) });
    return;
  }
  try {
    bytes = readFd(fd, rel);
  } catch (e) {
    r.imagesCorrupted++;
    r.errors.push({ kind: "image-read-failed", path: rel, detail: detailOf(e, rel) });
    return;
  } finally {
    sys.close(fd);
  }
  let ids: string[];
  try {
    const text = readlinkSync(`${repo.path}/${rel}`);
    const target = repo.idFromLinkText(text);
    if (repo.parseHexDigest(name) === null) throw new Error(`entry name is not a ${repo.alg} digest`);
    if (target === null || !bytesEqual(target, repo.parseHexDigest(name)!)) throw new Error(`links to ${JSON.stringify(text)}, not to the object its name spells`);
    ids = imageObjects(bytes, { name: rel, strict: true, algorithm: repo.alg }).ids;
  } catch (e) {
    r.imagesCorrupted++;
    r.errors.push({ kind: "image-invalid", path: rel, detail: detailOf(e, rel) });
    return;
  }
  for (const hex of ids) {
    const s = objectState(repo, repo.parseHexDigest(hex) ?? new Uint8Array(0));
    if (s.ok) continue;
    if (s.missing) {
      r.missingObjects++;
      r.errors.push({ kind: "image-missing-object", path: rel, detail: hex });
    } else r.errors.push({ kind: "object-check-failed", path: rel, detail: `${hex}: ${s.detail}` });
  }
}

function checkRefs(repo: Repository, rel: string, r: FsckReport): void {
  let ents;
  try {
    ents = readdirSync(`${repo.path}/${rel}`, { withFileTypes: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
    r.errors.push({ kind: "stat-failed", path: rel, detail: errnoText(e) });
    return;
  }
  for (const ent of ents.sort((a, b) => (String(a.name) < String(b.name) ? -1 : 1))) {
    const name = String(ent.name);
    const p = `${rel}/${name}`;
    if (ent.isDirectory()) checkRefs(repo, p, r);
    else if (ent.isSymbolicLink()) {
      if (name.startsWith(TMP_SYMLINK_PREFIX)) continue;
      const st = statFollow(`${repo.path}/${p}`);
      if (st === "missing") {
        r.brokenLinks++;
        r.errors.push({ kind: "broken-symlink", path: p, detail: "" });
      } else if (st !== "ok") r.errors.push({ kind: "stat-failed", path: p, detail: st });
    } else {
      r.errors.push({ kind: "unexpected-file-type", path: p, detail: ent.isFile() ? "regular file" : "special file" });
    }
  }
}
