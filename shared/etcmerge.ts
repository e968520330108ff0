// The pure three-way /etc merge planner, and the pristine → current diff.
//
// Implements the "cfsboot" column of etc-merge.md §4 (36 rows) with the
// rules of §3 and the planner contract of §5. Compared with the peers
// (ostree `src/libostree/ostree-sysroot-deploy.c` `merge_configuration_from`,
// bootc `crates/etc-merge/src/lib.rs`): security.selinux is not a local
// change (row 7), content is always compared by SHA-256 (row 15), a local
// change wins when upstream did not change the path even across type changes
// (rows 29, 30), a directory removed upstream that still holds local files is
// re-created from the local node instead of failing (row 23, bootc#1924), a
// directory that became a symlink upstream is followed only when nothing
// below it changed locally (rows 31, 32, composefs-rs#335), a removal never
// descends into a symlink (row 19, bootc#2278), and every conflict is listed.
//
// Inputs are three snapshots (pristine O = the booted image's /etc, current C
// = the administrator's /etc, new N = the new image's /etc): maps from a path
// relative to /etc ("a", "a/b"; byte strings, no leading "/") to a node. /etc
// itself is not part of the maps. Special files (fifos, sockets, devices)
// are not nodes; the walker passes them separately and they are reported.
// Output: an ordered list of operations to apply to a fresh copy of N, or the
// list of conflicts. No I/O.

import { type BStr, bytesEqual, displayBstr } from "./bytes.ts";
import { CfsError } from "./errors.ts";

interface NodeBase {
  /** Permission bits (compared as mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  /** All xattrs; `security.selinux` is ignored when comparing. */
  xattrs: Map<BStr, Uint8Array>;
  /** Carried for the apply step; never compared. */
  mtime?: { sec: number; nsec: number };
}
export type EtcNode =
  | (NodeBase & { kind: "dir" })
  | (NodeBase & { kind: "file"; /** lower-case hex SHA-256 of the content */ sha256: string })
  | (NodeBase & { kind: "link"; target: Uint8Array });
export type EtcTree = Map<BStr, EtcNode>;

export interface SpecialFile {
  path: BStr;
  type: "fifo" | "socket" | "chr" | "blk";
}

export type Action =
  /** Remove N's node at the path (with its subtree; never following a symlink). */
  | { op: "remove"; path: BStr }
  /** Replace whatever N has at the path with C's node (a directory: C's metadata, children are separate actions). */
  | { op: "put-local"; path: BStr; kind: EtcNode["kind"] }
  /** Apply C's directory metadata to N's existing directory. */
  | { op: "meta-local"; path: BStr }
  /** Create a directory N no longer has from C's node, because local files below it are kept. */
  | { op: "mkdir-local"; path: BStr }
  /** Informational: changed locally in the same way as upstream; N's node stays. */
  | { op: "keep-new"; path: BStr };

export type ReportCode = "upstream-also-changed" | "orphaned-local" | "dropped-upstream" | "ignored-special";
export interface Report {
  path: BStr;
  code: ReportCode;
  detail: string;
}

export type ConflictReason = "file-now-directory" | "directory-now-file" | "parent-now-not-directory";
export interface Conflict {
  path: BStr;
  reason: ConflictReason;
  detail: string;
}

export interface Plan {
  actions: Action[];
  reports: Report[];
}

export type PlanResult = { plan: Plan } | { conflicts: Conflict[]; reports: Report[] };

// ---- comparing ---------------------------------------------------------------------

const SELINUX = "security.selinux";

function xattrsEqual(a: Map<BStr, Uint8Array>, b: Map<BStr, Uint8Array>): boolean {
  const ka = [...a.keys()].filter((k) => k !== SELINUX);
  const kb = [...b.keys()].filter((k) => k !== SELINUX);
  if (ka.length !== kb.length) return false;
  for (const k of ka) {
    const vb = b.get(k);
    if (vb === undefined || !bytesEqual(a.get(k)!, vb)) return false;
  }
  return true;
}

/** Metadata equality: mode bits, owner, xattrs except security.selinux (mtime ignored). */
function metaEqual(a: EtcNode, b: EtcNode): boolean {
  return (a.mode & 0o7777) === (b.mode & 0o7777) && a.uid === b.uid && a.gid === b.gid && xattrsEqual(a.xattrs, b.xattrs);
}

/** Node equality of etc-merge.md §2; an absent node equals only an absent node. */
export function nodesEqual(a: EtcNode | undefined, b: EtcNode | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  if (a.kind !== b.kind || !metaEqual(a, b)) return false;
  if (a.kind === "file") return a.sha256 === (b as typeof a).sha256;
  if (a.kind === "link") return bytesEqual(a.target, (b as typeof a).target);
  return true;
}

// ---- paths ---------------------------------------------------------------------------

const parts = (p: BStr): BStr[] => p.split("/");

/** Parent before child, then byte order by component. */
export function comparePaths(a: BStr, b: BStr): number {
  const pa = parts(a);
  const pb = parts(b);
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    if (pa[i] !== pb[i]) return pa[i]! < pb[i]! ? -1 : 1;
  }
  return pa.length - pb.length;
}

function parentOf(p: BStr): BStr | null {
  const i = p.lastIndexOf("/");
  return i < 0 ? null : p.slice(0, i);
}

function ancestorsOf(p: BStr): BStr[] {
  const out: BStr[] = [];
  for (let a = parentOf(p); a !== null; a = parentOf(a)) out.push(a);
  return out;
}

const show = (p: BStr): string => `/etc/${displayBstr(p)}`;
const kindWord = (n: EtcNode): string => (n.kind === "dir" ? "directory" : n.kind === "link" ? "symlink" : "file");

/**
 * Check a snapshot: every path is relative and normalised, every parent is
 * present and a directory, file hashes are SHA-256 hex. `name` names the tree.
 */
export function validateTree(t: EtcTree, name: string): void {
  for (const [p, n] of t) {
    const at = `${name} /etc`;
    if (p === "" || p.startsWith("/") || p.endsWith("/") || parts(p).some((c) => c === "" || c === "." || c === "..")) {
      throw new CfsError(at, `path ${JSON.stringify(displayBstr(p))} is not a normalised relative path`);
    }
    if (p.includes("\0")) throw new CfsError(at, `path ${JSON.stringify(displayBstr(p))} contains NUL`);
    const parent = parentOf(p);
    if (parent !== null) {
      const pn = t.get(parent);
      if (pn === undefined) throw new CfsError(at, `${show(p)} has no parent entry`);
      if (pn.kind !== "dir") throw new CfsError(at, `${show(p)} is below ${show(parent)}, which is a ${kindWord(pn)}`);
    }
    if (n.kind === "file" && !/^[0-9a-f]{64}$/.test(n.sha256)) throw new CfsError(at, `${show(p)}: content hash is not SHA-256 hex`);
    if (n.kind !== "dir" && n.kind !== "file" && n.kind !== "link") throw new CfsError(at, `${show(p)}: unknown node kind`);
  }
}

// ---- the planner -----------------------------------------------------------------------

interface Decision {
  /** Where the result node comes from. */
  src: "new" | "current" | "orphan";
  node: EtcNode | undefined;
}

/**
 * Plan the merge of the administrator's changes (O → C) into N.
 * Returns the plan, or every conflict (sorted by path) when the merge must be
 * refused. Reports (sorted by path) are returned in both cases. Deterministic:
 * the result depends only on the contents of the maps, not their order.
 */
export function planEtcMerge(O: EtcTree, C: EtcTree, N: EtcTree, opts: { specials?: readonly SpecialFile[] } = {}): PlanResult {
  validateTree(O, "pristine");
  validateTree(C, "current");
  validateTree(N, "new");
  const paths = [...new Set([...O.keys(), ...C.keys(), ...N.keys()])].sort(comparePaths);
  const reports: Report[] = [];
  const conflicts = new Map<BStr, Conflict>();
  const result = new Map<BStr, Decision>();
  const local = (p: BStr): boolean => !nodesEqual(O.get(p), C.get(p));

  // 1. Per path (§3).
  for (const p of paths) {
    const o = O.get(p);
    const c = C.get(p);
    const n = N.get(p);
    const isLocal = !nodesEqual(o, c);
    const isUpstream = !nodesEqual(o, n);
    if (!isLocal) result.set(p, { src: "new", node: n });
    else if (!isUpstream) result.set(p, { src: "current", node: c });
    else if (nodesEqual(c, n)) result.set(p, { src: "new", node: n });
    else if (c !== undefined && n !== undefined && (c.kind === "dir") !== (n.kind === "dir")) {
      conflicts.set(
        p,
        c.kind === "dir"
          ? { path: p, reason: "directory-now-file", detail: `locally modified directory, but the new image has a ${kindWord(n)} here` }
          : { path: p, reason: "file-now-directory", detail: `locally modified ${kindWord(c)}, but the new image has a directory here` },
      );
      result.set(p, { src: "current", node: c });
    } else {
      result.set(p, { src: "current", node: c });
      const detail =
        n === undefined ? "kept local version; the new image removed it" : c === undefined ? "kept local deletion; the new image changed it" : "kept local version; the new image also changed it";
      reports.push({ path: p, code: "upstream-also-changed", detail });
    }
  }

  // 2. Ancestors of kept local nodes must stay directories (§3, rows 12, 23, 32).
  for (const p of paths) {
    const d = result.get(p)!;
    if (d.src !== "current" || d.node === undefined || conflicts.has(p)) continue;
    for (const a of ancestorsOf(p)) {
      if (conflicts.has(a)) break;
      const da = result.get(a)!;
      if (da.node === undefined) {
        const ca = C.get(a)!; // C is well-formed: a kept C node has C directories above it
        result.set(a, { src: "orphan", node: ca });
        reports.push({ path: a, code: "orphaned-local", detail: "orphaned local config kept; the new image removed this directory" });
      } else if (da.node.kind !== "dir") {
        conflicts.set(a, { path: a, reason: "parent-now-not-directory", detail: `local changes below it, but the new image replaced the directory with a ${kindWord(da.node)}` });
        break;
      }
    }
  }

  // 3. Below a result that is absent or not a directory nothing of N survives
  //    (rows 24, 30, 33, 34). Parents come first, so one pass suffices.
  for (const p of paths) {
    const d = result.get(p)!;
    const blocked = ancestorsOf(p).some((a) => {
      const r = result.get(a)!.node;
      return r === undefined || r.kind !== "dir";
    });
    if (!blocked) continue;
    if (d.src !== "new") continue; // a kept local node here was made a conflict in step 2
    if (d.node !== undefined && O.get(p) === undefined) reports.push({ path: p, code: "dropped-upstream", detail: "dropped upstream addition" });
    result.set(p, { src: "new", node: undefined });
  }

  for (const s of opts.specials ?? []) reports.push({ path: s.path, code: "ignored-special", detail: `ignored special file (${s.type})` });
  const sortedReports = reports.sort((a, b) => comparePaths(a.path, b.path) || (a.code < b.code ? -1 : a.code > b.code ? 1 : 0));
  if (conflicts.size > 0) return { conflicts: [...conflicts.values()].sort((a, b) => comparePaths(a.path, b.path)), reports: sortedReports };

  // 4. Operations on a fresh copy of N, parents first.
  const actions: Action[] = [];
  const wiped: BStr[] = [];
  const isWiped = (p: BStr): boolean => ancestorsOf(p).some((a) => wiped.includes(a));
  for (const p of paths) {
    const d = result.get(p)!;
    const n = isWiped(p) ? undefined : N.get(p);
    if (d.node === undefined) {
      if (n !== undefined) {
        actions.push({ op: "remove", path: p });
        wiped.push(p);
      }
      continue;
    }
    if (d.src === "new") {
      if (local(p)) actions.push({ op: "keep-new", path: p });
      continue;
    }
    if (d.src === "orphan") {
      actions.push({ op: "mkdir-local", path: p });
      continue;
    }
    if (d.node.kind === "dir" && n !== undefined && n.kind === "dir") {
      actions.push({ op: "meta-local", path: p });
      continue;
    }
    actions.push({ op: "put-local", path: p, kind: d.node.kind });
    if (n !== undefined && n.kind === "dir") wiped.push(p);
  }
  return { plan: { actions, reports: sortedReports } };
}

/**
 * Apply a plan to (a copy of) N in memory: the tree the real apply step must
 * produce on disk. Pure; used by tests and previews.
 */
export function applyPlan(plan: Plan, C: EtcTree, N: EtcTree): EtcTree {
  const out: EtcTree = new Map(N);
  const dropSubtree = (p: BStr): void => {
    for (const k of [...out.keys()]) if (k.startsWith(`${p}/`)) out.delete(k);
  };
  const put = (p: BStr): void => {
    const c = C.get(p);
    if (c === undefined) throw new CfsError(show(p), "plan refers to a node the current tree lacks");
    const parent = parentOf(p);
    if (parent !== null && out.get(parent)?.kind !== "dir") throw new CfsError(show(p), "plan writes below something that is not a directory");
    const before = out.get(p);
    if (before !== undefined && before.kind === "dir" && c.kind !== "dir") dropSubtree(p);
    out.set(p, c);
  };
  for (const a of plan.actions) {
    switch (a.op) {
      case "remove":
        out.delete(a.path);
        dropSubtree(a.path);
        break;
      case "put-local":
      case "meta-local":
      case "mkdir-local":
        put(a.path);
        break;
      case "keep-new":
        break;
    }
  }
  return out;
}

// ---- config-diff --------------------------------------------------------------------

export interface ConfigDiff {
  /** In C, not in O (a new directory is listed with all its descendants). */
  added: BStr[];
  /** In both, different (content, target, type, mode, owner, xattrs except security.selinux). */
  modified: BStr[];
  /** In O, not in C (a removed directory is listed once). */
  removed: BStr[];
}

/** The administrator's changes: pristine vs current (`cfsboot config-diff`). */
export function configDiff(O: EtcTree, C: EtcTree): ConfigDiff {
  validateTree(O, "pristine");
  validateTree(C, "current");
  const added: BStr[] = [];
  const modified: BStr[] = [];
  const removed: BStr[] = [];
  for (const p of [...new Set([...O.keys(), ...C.keys()])].sort(comparePaths)) {
    const o = O.get(p);
    const c = C.get(p);
    if (o === undefined) added.push(p);
    else if (c === undefined) {
      const parent = parentOf(p);
      if (parent === null || C.get(parent)?.kind === "dir") removed.push(p);
    } else if (!nodesEqual(o, c)) modified.push(p);
  }
  return { added, modified, removed };
}

// ---- messages (etc-merge.md §10) ------------------------------------------------------

export function formatConflict(c: Conflict): string {
  return `etc merge conflict: ${show(c.path)}: ${c.detail}`;
}

export function formatReport(r: Report): string {
  return `etc merge: ${show(r.path)}: ${r.detail}`;
}

/** The last line after conflicts; contains the phrase bootc's tests look for. */
export function conflictSummary(n: number, atFinalize = false): string {
  return `Merge conflicts found in etc (${n} path${n === 1 ? "" : "s"}); ${atFinalize ? "the staged deployment was not finalized" : "nothing was staged"}`;
}

/** Journal summary, ostree style. */
export function mergeSummary(d: ConfigDiff): string {
  return `Copying /etc changes: ${d.modified.length} modified, ${d.removed.length} removed, ${d.added.length} added`;
}
