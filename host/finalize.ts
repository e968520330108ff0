// `finalize-staged`: the staged deployment becomes the default at shutdown,
// after the administrator's /etc changes were carried into it
// (finalize-and-boot-counting.md §3, etc-merge.md §6-§9); `config-diff`; the
// boot-time report of a failed finalize (§4).
//
// Order (each step durable before the next; the entry exchange is the
// commit point):
//   1  host lock; no staged marker → nothing; the marker names a deployment
//      that is already live (a finalize that committed and was interrupted
//      before cleaning up) → remove the marker and stale staged entries;
//      `finalization_locked` → nothing.
//   2  start message (journal, MESSAGE_ID).
//   3  the plan, recomputed from scratch: O = the booted image's /etc and
//      N = the staged image's /etc, both read from their EROFS images in the
//      repository (no mount); C = the live /etc (fd walk, never following a
//      symlink). Conflicts → nothing is written, failure stamp, exit 1.
//   4  the result is built in `state/deploy/<id>/.etc.tmp-XXXXXXXX` (a fresh
//      copy of N from the image, then the plan; or, for an overlay /etc, an
//      upper directory holding only the differences from N), synced, and
//      exchanged with `state/deploy/<id>/etc` by renameat2(RENAME_EXCHANGE);
//      the old tree is removed. Because N and the copy come from the image,
//      a re-run after any interruption computes and builds the same result.
//      `.updated` is left out of /etc and removed from the shared /var.
//   5  the booted entry's name in the staged set follows its current
//      counter state (never rename an entry being counted, §6.3).
//   6  staged entries ↔ live entries (RENAME_EXCHANGE): commit.
//   7  marker and failure stamp removed; boot binaries no entry uses removed.
// A crash anywhere before 6 leaves the old default with an untouched live
// /etc; after 6 the new default with its complete merged /etc.
// Any failure in 3-6 writes the error as one line to
// `state/finalize-failure.stamp` (shown by `status`, reported once at the
// next boot by `cfsboot boot-complete`).

import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, readFileSync, renameSync } from "node:fs";
import { basename, dirname } from "node:path";

import { type NamedEntry, entryFileName, entryOsid, parseCounter, withoutCounter } from "../shared/bls.ts";
import type { BStr } from "../shared/bytes.ts";
import { CfsError, describeError } from "../shared/errors.ts";
import {
  type ConfigDiff,
  type EtcTree,
  type Plan,
  configDiff,
  conflictSummary,
  formatConflict,
  formatReport,
  mergeSummary,
} from "../shared/etcmerge.ts";
import * as sys from "../shared/sys.ts";
import { writeFileAtomic } from "./atomic.ts";
import { type HostState, loadHostState, removeStagedMarker } from "./deployments.ts";
import { commitStaged, removeStaged, writeEntrySet } from "./entries.ts";
import { applyPlanToCopy, writeOverlayUpper } from "./etc-apply.ts";
import { type MergeInputs, formatCounts, mergeCounts, mergeInputs, planMerge } from "./etc-inputs.ts";
import { exchange, exists, isLeftover, listDir, mkdirp, removeAtomic, removeTree, tempSibling } from "./fsops.ts";
import { hostGc } from "./hostgc.ts";
import { writeTree } from "./materialize.ts";
import { Repository } from "./repo.ts";
import { FINALIZE_UNIT } from "./stage.ts";
import { type Host, withLock } from "./sysroot.ts";

export { FINALIZE_UNIT };
export { type MergeInputs, mergeInputs, planMerge, withoutUpdated } from "./etc-inputs.ts";

// Journal message ids of cfsboot's own (128-bit, 32 hex digits).
export const MESSAGE_ID = {
  finalizeStart: "8f3c2a61d94b4e0e9a57c1b6e2d07f13",
  etcMerge: "c5e1f04b7a2d48d39b6e8a0f1c3d5e27",
  finalizeDone: "2b7d9e4c16a84f5fb0c3e8d1a9f60c42",
  finalizeFailed: "e04a6c8d3b1f4792a5d8c7e6b2f19a30",
} as const;

/** Where `boot-complete` moves the stamp once reported (status keeps showing it): `<stamp>.reported`. */
export const reportedStampPath = (host: Host): string => `${host.failureStampPath}.reported`;

export type Log = (line: string, fields?: Record<string, string | number>) => void;

/**
 * A logger: on a booted host under systemd (JOURNAL_STREAM set) structured
 * journal entries through `logger --journald` when a message id is given,
 * else one line on stderr (which the journal gets too).
 */
export function makeLog(host: Host): (messageId: string | null) => Log {
  const journald = !host.directory && process.env.JOURNAL_STREAM !== undefined;
  return (messageId) => (line, fields = {}) => {
    if (journald && messageId !== null) {
      const body = [`MESSAGE_ID=${messageId}`, `MESSAGE=${line}`, "SYSLOG_IDENTIFIER=cfsboot", "PRIORITY=6", ...Object.entries(fields).map(([k, v]) => `${k}=${v}`)].join("\n");
      const r = spawnSync("logger", ["--journald"], { input: `${body}\n`, stdio: ["pipe", "ignore", "ignore"] });
      if (r.status === 0) return;
    }
    process.stderr.write(`${line}\n`);
  };
}

// ---- building the result ------------------------------------------------------------------

/** Remove leftovers of an interrupted merge in a state directory. */
function cleanLeftovers(stateDir: string): void {
  // `.etc.tmp-X` (a tree being built, or the old one after the exchange) and `..etc.tmp-X.trash-Y` (being removed)
  for (const n of listDir(stateDir)) if (isLeftover(n) && n.replace(/^\.+/, "").startsWith("etc.")) removeTree(`${stateDir}/${n}`);
}

/** CFSBOOT_TIMING=1: phase times on stderr. */
function timer(): (phase: string) => void {
  let t = performance.now();
  const on = process.env.CFSBOOT_TIMING === "1";
  return (phase) => {
    const now = performance.now();
    if (on) process.stderr.write(`timing: ${phase} ${(now - t).toFixed(0)} ms\n`);
    t = now;
  };
}

/**
 * Build the merged /etc of a deployment beside its `etc` and exchange them.
 * Bind: a full tree; overlay: `upper/` (+ an empty `work/`). The replaced
 * tree is moved out of the state directory to `state/deploy/.<id>-etc.trash-X`
 * (a leftover every gc removes) and its path returned, so that deleting its
 * files need not delay the commit. transient/none: nothing (returns null).
 */
export function buildAndSwap(stateDir: string, i: MergeInputs, plan: Plan, result: EtcTree): string | null {
  if (i.newMode === "transient" || i.newMode === "none") return null;
  const lap = timer();
  cleanLeftovers(stateDir);
  const final = `${stateDir}/etc`;
  const fresh = tempSibling(final);
  const label = `${i.newLabel}: /etc`;
  mkdirSync(fresh, { mode: 0o700 });
  try {
    if (i.newMode === "bind") {
      if (i.newEtc !== null) writeTree(i.newEtc, fresh, i.content, label, { skipTop: new Set([".updated"]), noFsync: true });
      else chmodSync(fresh, 0o755);
      lap("copy of the new /etc");
      applyPlanToCopy(fresh, plan, i.C.tree, i.currentRoot, result);
      lap("local changes applied");
    } else {
      chmodSync(fresh, 0o755);
      mkdirSync(`${fresh}/upper`, { mode: 0o755 });
      mkdirSync(`${fresh}/work`, { mode: 0o700 });
      if (i.newEtc !== null) {
        // The merged /etc takes the upper root's attributes: give it the image /etc's.
        const s = i.newEtc.stat;
        sys.fchownat(sys.AT_FDCWD, `${fresh}/upper`, s.uid, s.gid, 0);
        chmodSync(`${fresh}/upper`, s.mode & 0o7777);
      }
      writeOverlayUpper(`${fresh}/upper`, i.C.tree, i.currentRoot, i.N.tree, result);
      lap("overlay upper written");
    }
    // Everything written so far is durable before the exchange.
    const fd = sys.open(stateDir, sys.O_RDONLY | sys.O_DIRECTORY);
    try {
      sys.syncfs(fd, stateDir);
    } finally {
      sys.close(fd);
    }
    lap("syncfs");
    if (exists(final)) {
      exchange(fresh, final); // `fresh` now names the old tree
    } else {
      sys.renameat2(sys.AT_FDCWD, fresh, sys.AT_FDCWD, final, sys.RENAME_NOREPLACE);
      sys.fsyncPath(stateDir);
      return "";
    }
  } catch (e) {
    removeTree(fresh);
    throw e;
  }
  const deployDir = dirname(stateDir);
  const trash = `${deployDir}/.${basename(stateDir)}-etc.trash-${randomBytes(4).toString("hex")}`;
  sys.renameat2(sys.AT_FDCWD, fresh, sys.AT_FDCWD, trash, sys.RENAME_NOREPLACE);
  sys.fsyncPath(stateDir);
  sys.fsyncPath(deployDir);
  lap("exchange");
  return trash;
}

// ---- boot entries -----------------------------------------------------------------------------

/**
 * The staged entry set with the booted entry named as its live file is now
 * (finalize-and-boot-counting.md §6.3): still counted (boot not blessed) →
 * its exact live name; blessed since staging → re-keyed without a counter.
 * Returns null when nothing must change.
 */
export function reconcileBootedName(st: HostState): NamedEntry[] | null {
  const live = st.bootedEntry;
  if (live === null || live.source !== "bls" || st.loader.bootloader !== "systemd") return null;
  const staged = st.loader.staged;
  const mine = staged.find((e) => e.id === live.id);
  if (mine === undefined) return null;
  const counter = parseCounter(live.fileName);
  const counted = counter !== null && counter.left > 0;
  let want: string;
  if (counted) want = live.fileName;
  else {
    const stagedCounter = parseCounter(mine.fileName);
    if (stagedCounter === null || stagedCounter.text === counter?.text) return null;
    const version = mine.entry.version ?? live.entry.version;
    if (version === null) return null;
    want = entryFileName(entryOsid(mine, "bootc"), version, "secondary", counter?.text ?? "");
  }
  if (want === mine.fileName) return null;
  const others = staged.filter((e) => e !== mine);
  if (others.some((e) => e.fileName === want || withoutCounter(e.fileName) === withoutCounter(want))) return null;
  return [...others.map((e) => ({ fileName: e.fileName, entry: e.entry })), { fileName: want, entry: mine.entry }];
}

// ---- the failure stamp ------------------------------------------------------------------------

function stampText(e: unknown): string {
  return (e instanceof CfsError ? e.message : describeError(e)).replace(/\s*\n\s*/g, "; ");
}

/** Record a failed finalize (one line, atomically). */
export function writeFailureStamp(host: Host, message: string): void {
  mkdirp(host.statePath, 0o755);
  writeFileAtomic(host.failureStampPath, `${message}\n`);
}

function clearFailureStamp(host: Host): void {
  removeAtomic(host.failureStampPath);
  removeAtomic(reportedStampPath(host));
}

/**
 * Report a failed finalize of the previous boot once: returns the message
 * (and moves the stamp aside, where `status` still finds it) or null.
 */
export function takeFailureStamp(host: Host): string | null {
  let text: string;
  try {
    text = readFileSync(host.failureStampPath, "utf8").trim();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw sys.fromNodeError(host.failureStampPath, "read", e);
  }
  renameSync(host.failureStampPath, reportedStampPath(host));
  sys.fsyncPath(host.statePath);
  return text === "" ? "(no message)" : text;
}

/** The last finalize error: the stamp, or the one boot-complete already reported; null when none. */
export function lastFinalizeError(host: Host): string | null {
  for (const p of [host.failureStampPath, reportedStampPath(host)]) {
    try {
      const t = readFileSync(p, "utf8").trim();
      if (t !== "") return t;
    } catch {}
  }
  return null;
}

// ---- finalize ---------------------------------------------------------------------------------

export interface FinalizeResult {
  status: "nothing" | "locked" | "done" | "cleaned";
  id: string | null;
}

/** Leftovers (the replaced /etc among them) and boot binaries no entry uses; problems are only reported. */
async function collectBootBinaries(host: Host, log: Log): Promise<void> {
  try {
    const r = await hostGc(host, null, { binariesOnly: true });
    for (const p of [...r.removedKernelDirs, ...r.removedUkis]) log(`Removed unused boot binaries ${p}`);
  } catch (e) {
    log(`cfsboot: warning: gc of boot binaries after finalize: ${describeError(e)}`);
  }
}

export async function finalizeStaged(host: Host): Promise<FinalizeResult> {
  const logFor = makeLog(host);
  const log = logFor(null);
  return withLock(host, async () => {
    const st = loadHostState(host);
    for (const p of st.problems) log(`cfsboot: warning: ${p}`);
    const marker = st.marker;
    if (marker === null) {
      log("No staged deployment");
      return { status: "nothing", id: null };
    }
    const id = marker.deplId;
    if (st.loader.menu.some((e) => e.id === id)) {
      // Committed by an earlier run that did not get to clean up.
      removeStaged(host);
      removeStagedMarker(host);
      clearFailureStamp(host);
      log(`Staged deployment ${id} is already the default; removed the leftover staged state`);
      await collectBootBinaries(host, log);
      return { status: "cleaned", id };
    }
    if (!st.stagedValid) {
      log(`No staged deployment (the marker names ${id}, which has no staged boot entry)`);
      return { status: "nothing", id: null };
    }
    if (marker.finalizationLocked) {
      log("Staged deployment is marked download only. Won't finalize");
      return { status: "locked", id };
    }
    logFor(MESSAGE_ID.finalizeStart)(`Finalizing staged deployment ${id}`, { CFSBOOT_DEPLOYMENT: id });
    let oldTree: string | null = null;
    try {
      if (st.booted === null) throw new CfsError(host.directory ? "--booted-cmdline" : "/proc/cmdline", "not booted into a composefs deployment: cannot tell whose /etc to merge");
      if (!exists(host.stateDir(id))) throw new CfsError(host.stateDir(id), "missing: the staged deployment has no state directory");
      const repo = Repository.open(host.repoPath);
      try {
        const nextCmdline = (st.stagedEntry!.entry.options ?? "").split(/\s+/).filter((x) => x !== "");
        const lap = timer();
        const i = mergeInputs(host, repo, st.booted.id, id, { booted: st.booted.cmdline, next: nextCmdline });
        lap("snapshots of the three /etc trees");
        const m = planMerge(i);
        lap("plan");
        if ("conflicts" in m) {
          for (const c of m.conflicts) log(formatConflict(c));
          throw new CfsError("/etc", `${conflictSummary(m.conflicts.length, true)}: ${m.conflicts.map((c) => `/etc/${c.path} (${c.reason})`).join(", ")}`);
        }
        if (i.newMode === "transient" || i.newMode === "none") {
          log(`etc merge: the new deployment mounts ${i.newMode === "none" ? "the image's /etc" : "a transient /etc"}; local changes are not carried into it`);
        } else {
          oldTree = buildAndSwap(host.stateDir(id), i, m.plan, m.result);
          const diff = configDiff(i.O.tree, i.C.tree);
          const counts = mergeCounts(i, m.plan, m.result);
          logFor(MESSAGE_ID.etcMerge)(mergeSummary(diff), {
            CFSBOOT_ETC_MODIFIED: diff.modified.length,
            CFSBOOT_ETC_REMOVED: diff.removed.length,
            CFSBOOT_ETC_ADDED: diff.added.length,
            CFSBOOT_ETC_KEPT_LOCAL: counts.keptLocal,
            CFSBOOT_ETC_DELETIONS: counts.deletions,
            CFSBOOT_ETC_TAKEN_DEFAULTS: counts.takenDefaults,
          });
          log(formatCounts(counts));
          for (const r of m.plan.reports) log(formatReport(r));
        }
        // ConditionNeedsUpdate=/var units run on the first boot of the new deployment.
        removeAtomic(`${host.varPath}/.updated`);

        const renamed = reconcileBootedName(st);
        if (renamed !== null) writeEntrySet(host.stagedEntriesDir, renamed);
        commitStaged(host);
        lap("entries exchanged");
      } finally {
        repo.close();
      }
    } catch (e) {
      const msg = stampText(e);
      try {
        writeFailureStamp(host, msg);
      } catch (e2) {
        log(`cfsboot: cannot write ${host.failureStampPath}: ${describeError(e2)}`);
      }
      logFor(MESSAGE_ID.finalizeFailed)(`cfsboot: finalizing ${id} failed; the current default stays`, { CFSBOOT_DEPLOYMENT: id });
      throw e;
    }
    // Committed: the new deployment is the default.
    removeStagedMarker(host);
    clearFailureStamp(host);
    if (oldTree !== null && oldTree !== "") removeTree(oldTree); // else the next gc removes it
    await collectBootBinaries(host, log);
    logFor(MESSAGE_ID.finalizeDone)(`Bootloader updated; staged deployment ${id} is the default`, { CFSBOOT_DEPLOYMENT: id });
    return { status: "done", id };
  });
}

// ---- config-diff -------------------------------------------------------------------------------

export interface ConfigDiffResult {
  diff: ConfigDiff;
  inputs: MergeInputs;
}

/** The booted deployment's local /etc changes (pristine = its image's /etc). */
export function bootedConfigDiff(host: Host): ConfigDiffResult {
  const booted = host.booted();
  if (booted === null) throw new CfsError(host.directory ? "--booted-cmdline" : "/proc/cmdline", "not booted into a composefs deployment (no composefs karg)");
  const repo = Repository.open(host.repoPath);
  try {
    const i = mergeInputs(host, repo, booted.id, booted.id, { booted: booted.cmdline, next: booted.cmdline });
    return { diff: configDiff(i.O.tree, i.C.tree), inputs: i };
  } finally {
    repo.close();
  }
}

/** bootc's config-diff lines: `Added "p"`, `Modified "p"`, `Removed "p"` (colours on a terminal). */
export function formatConfigDiff(d: ConfigDiff, color: boolean): string {
  const q = (p: BStr): string => JSON.stringify(Buffer.from(p, "latin1").toString("utf8"));
  const c = (code: number, s: string): string => (color ? `\x1b[${code}m${s}\x1b[39m` : s);
  return [...d.added.map((p) => `${c(32, "Added")} ${q(p)}\n`), ...d.modified.map((p) => `${c(36, "Modified")} ${q(p)}\n`), ...d.removed.map((p) => `${c(31, "Removed")} ${q(p)}\n`)].join("");
}
