// The inputs of an /etc merge as the host finds them (etc-merge.md §1, §9):
// pristine O = the booted image's /etc and new N = the new image's /etc,
// both read from their EROFS images in the repository (no mount); current
// C = the booted deployment's live /etc according to how its agent mounts
// it (bind: the state directory's etc, or /etc when really booted; overlay:
// image /etc + the persistent upper; transient/none: nothing local, C = O).
// `.updated` never takes part. Used by staging (conflict check) and by
// finalize (the merge itself), so both decide from the same trees.

import type { BStr } from "../shared/bytes.ts";
import { readImage } from "../shared/erofs/reader.ts";
import { CfsError, describeError } from "../shared/errors.ts";
import { type Conflict, type EtcTree, type Plan, type Report, applyPlan, nodesEqual, planEtcMerge } from "../shared/etcmerge.ts";
import { type MountType, SETUP_ROOT_CONF_PATH, effectiveMounts, parseSetupRootConf } from "../shared/setuprootconf.ts";
import * as sys from "../shared/sys.ts";
import { type Dir, lookup } from "../shared/tree.ts";
import { treeFile } from "./deploy.ts";
import { type EtcSnapshot, etcFromDisk, etcFromImage } from "./etcsnap.ts";
import { type ContentSource, repoContent } from "./materialize.ts";
import type { Repository } from "./repo.ts";
import { ALGORITHM, type Host } from "./sysroot.ts";

// ---- the /etc mount modes (etc-merge.md §9) ----------------------------------------------

/** How the agent of an image mounts /etc (its setup-root-conf.toml; default bind). */
export function imageEtcMode(tree: Dir, content: ContentSource, label: string, cmdline: readonly string[]): MountType {
  const bytes = treeFile(tree, SETUP_ROOT_CONF_PATH.slice(1), content, label);
  const conf = bytes === null ? null : parseSetupRootConf(Buffer.from(bytes).toString("utf8"), `${label}: ${SETUP_ROOT_CONF_PATH}`);
  return effectiveMounts(conf, cmdline).etc;
}

const etcOf = (t: Dir): Dir | null => {
  const n = lookup(t, "/etc");
  return n !== undefined && n.kind === "dir" ? n : null;
};

/** `.updated` (systemd's ConditionNeedsUpdate stamp) never takes part in the merge. */
export function withoutUpdated(s: EtcSnapshot): EtcSnapshot {
  if (!s.tree.has(".updated") && !s.specials.some((x) => x.path === ".updated")) return s;
  const tree: EtcTree = new Map();
  for (const [p, n] of s.tree) if (p !== ".updated" && !p.startsWith(".updated/")) tree.set(p, n);
  return { tree, specials: s.specials.filter((x) => x.path !== ".updated" && !x.path.startsWith(".updated/")) };
}

/**
 * The live /etc of an overlay-mode deployment in a directory host: the
 * image's /etc (O) with the persistent upper laid over it, read the way
 * overlayfs does (a character device 0:0 is a whiteout, `trusted.overlay.opaque`
 * hides the lower directory's content; overlay xattrs are not part of a node).
 */
export function overlayView(lower: EtcSnapshot, upperRoot: BStr): EtcSnapshot {
  const up = etcFromDisk(upperRoot);
  const tree: EtcTree = new Map(lower.tree);
  const dropBelow = (p: BStr): void => {
    for (const k of [...tree.keys()]) if (k.startsWith(`${p}/`)) tree.delete(k);
  };
  const whiteouts = new Set<BStr>();
  for (const s of up.specials) {
    if (s.type !== "chr") continue;
    const st = sys.statx(`${upperRoot}/${s.path}`);
    if (st.rdevMajor === 0 && st.rdevMinor === 0) whiteouts.add(s.path);
  }
  const depth = (p: BStr): number => p.split("/").length;
  const paths = [...new Set([...up.tree.keys(), ...whiteouts])].sort((a, b) => depth(a) - depth(b) || (a < b ? -1 : a > b ? 1 : 0));
  for (const p of paths) {
    if (whiteouts.has(p)) {
      tree.delete(p);
      dropBelow(p);
      continue;
    }
    const n = up.tree.get(p)!;
    for (const k of n.xattrs.keys()) {
      if (k === "trusted.overlay.redirect" || k === "trusted.overlay.metacopy") {
        throw new CfsError(`${upperRoot}/${p}`, `has ${k}: redirected or metadata-only copy-ups are not supported in a persistent /etc upper`);
      }
    }
    const opaque = n.xattrs.get("trusted.overlay.opaque");
    const xattrs = new Map([...n.xattrs].filter(([k]) => !k.startsWith("trusted.overlay.")));
    const below = tree.get(p);
    if (n.kind !== "dir" || below?.kind !== "dir" || (opaque !== undefined && Buffer.from(opaque).toString() === "y")) dropBelow(p);
    tree.set(p, { ...n, xattrs });
  }
  return { tree, specials: up.specials.filter((s) => !whiteouts.has(s.path)) };
}

// ---- the merge inputs -------------------------------------------------------------------

export interface MergeInputs {
  O: EtcSnapshot;
  C: EtcSnapshot;
  N: EtcSnapshot;
  /** Where C's nodes are on disk (the live /etc, or the booted overlay's upper). */
  currentRoot: BStr;
  bootedMode: MountType;
  newMode: MountType;
  /** The new image's /etc directory (for the fresh copy) and where its content is. */
  newEtc: Dir | null;
  content: ContentSource;
  newLabel: string;
}

function readDeploymentImage(repo: Repository, id: string, what: string): Dir {
  try {
    return readImage(repo.openImage(id), { name: `images/${id}`, algorithm: ALGORITHM }).root;
  } catch (e) {
    throw new CfsError(`${what} deployment ${id}`, `cannot read its image from the repository: ${describeError(e)}`);
  }
}

/** Gather O, C and N for a merge of the booted deployment's /etc into `newId`. */
export function mergeInputs(host: Host, repo: Repository, bootedId: string, newId: string, cmdlines: { booted: readonly string[]; next: readonly string[] }): MergeInputs {
  const content = repoContent(repo);
  const bootedTree = readDeploymentImage(repo, bootedId, "booted");
  const newTree = newId === bootedId ? bootedTree : readDeploymentImage(repo, newId, "new");
  const bootedLabel = `booted image ${bootedId}`;
  const newLabel = `image ${newId}`;
  const bootedMode = imageEtcMode(bootedTree, content, bootedLabel, cmdlines.booted);
  const newMode = imageEtcMode(newTree, content, newLabel, cmdlines.next);
  const O = withoutUpdated(etcFromImage(etcOf(bootedTree), content, bootedLabel));
  const N = withoutUpdated(etcFromImage(etcOf(newTree), content, newLabel));
  let C: EtcSnapshot;
  let currentRoot = host.liveEtc(bootedId);
  if (bootedMode === "transient" || bootedMode === "none") {
    // Nothing the administrator did survives a reboot: no local change to carry.
    C = O;
  } else if (bootedMode === "overlay" && currentRoot !== "/etc") {
    currentRoot = `${host.stateDir(bootedId)}/etc/upper`;
    C = withoutUpdated(overlayView(O, currentRoot));
  } else {
    C = withoutUpdated(etcFromDisk(currentRoot));
  }
  return { O, C, N, currentRoot, bootedMode, newMode, newEtc: etcOf(newTree), content, newLabel };
}

export type MergeOutcome = { plan: Plan; result: EtcTree } | { conflicts: Conflict[]; reports: Report[] };

export function planMerge(i: MergeInputs): MergeOutcome {
  const r = planEtcMerge(i.O.tree, i.C.tree, i.N.tree, { specials: i.C.specials });
  if ("conflicts" in r) return r;
  return { plan: r.plan, result: applyPlan(r.plan, i.C.tree, i.N.tree) };
}

export interface MergeCounts {
  /** Local nodes carried into the result (files, links, directories, metadata). */
  keptLocal: number;
  /** Local deletions kept. */
  deletions: number;
  /** Upstream changes taken (the path follows the new image). */
  takenDefaults: number;
  reports: number;
}

export function mergeCounts(i: Pick<MergeInputs, "O" | "N">, plan: Plan, result: EtcTree): MergeCounts {
  let keptLocal = 0;
  let deletions = 0;
  for (const a of plan.actions) {
    if (a.op === "remove") deletions++;
    else if (a.op !== "keep-new") keptLocal++;
  }
  let takenDefaults = 0;
  for (const p of new Set([...i.O.tree.keys(), ...i.N.tree.keys()])) {
    if (!nodesEqual(i.O.tree.get(p), i.N.tree.get(p)) && nodesEqual(result.get(p), i.N.tree.get(p))) takenDefaults++;
  }
  return { keptLocal, deletions, takenDefaults, reports: plan.reports.length };
}

export function formatCounts(c: MergeCounts): string {
  const s = (n: number, w: string): string => `${n} ${w}${n === 1 ? "" : "s"}`;
  return `etc merge: kept ${s(c.keptLocal, "local change")} and ${s(c.deletions, "local deletion")}, took ${s(c.takenDefaults, "new default")}, ${s(c.reports, "report")}`;
}
