// Host garbage collection (bootc-composefs.md §7, with repairs instead of
// failures) and the legacy prefix migration (§9).
//
// Live = every deployment a live boot entry names, plus the staged one when
// the staged state is valid (marker + staged entry). Removed:
//   - `bootc_composefs-*` kernel directories and UKIs (with `.efi.extra.d`)
//     no entry uses (unprefixed names and global addons are never touched;
//     the booted deployment's are never removed);
//   - state directories no live deployment has (never the booted one);
//   - a staged marker or staged entry set that is not a valid staged state;
//   - leftovers of interrupted commands (`.NAME.tmp-*`, `.NAME.trash-*`);
//   - `localhost/bootc-*` tags of images no live deployment uses (a missing
//     tag of a live deployment is re-created; other tags are never touched);
//   - with `prune`, repository objects nothing reaches (repo gc with every
//     live id as an extra root).
// Reported, not removed: entries whose deployment has no state directory
// (removing a boot entry is not a repair gc should make on its own).

import { readFileSync } from "node:fs";

import { ARTIFACT_PREFIX, type NamedEntry, entryFileName, entryOsid, parseEntryFileName } from "../shared/bls.ts";
import { CfsError, describeError } from "../shared/errors.ts";
import { type HostState, findManifestForId, listStateDirs, loadHostState, removeStagedMarker, stateLeftovers, writeOriginFile } from "./deployments.ts";
import { type LiveEntry, carrySkipped, loaderLeftovers, removeStaged, writeEntrySet } from "./entries.ts";
import { exists, fsyncDir, isDirectory, isLeftover, listDir, mkdirp, publish, removeAtomic, removeTree, tempSibling, writeNewFile } from "./fsops.ts";
import { bootcTag } from "./deploy.ts";
import type { GcReport } from "./repo-gc.ts";
import type { Repository } from "./repo.ts";
import type { Host } from "./sysroot.ts";

export interface HostGcReport {
  dryRun: boolean;
  removedKernelDirs: string[];
  removedUkis: string[];
  removedStateDirs: string[];
  removedLeftovers: string[];
  removedTags: string[];
  addedTags: string[];
  /** Staged marker / staged entries that did not form a valid staged deployment. */
  removedStaged: string[];
  /** Origins that got their manifest_digest back (legacy deployments). */
  migratedOrigins: string[];
  /** Reported problems (entries without state, unreadable entries, …). */
  problems: string[];
  repo: GcReport | null;
}

/** Entries that keep artifacts alive: live, and the staged set when valid. */
function liveEntries(st: HostState): LiveEntry[] {
  return [...st.loader.menu, ...(st.stagedValid ? st.loader.staged : [])];
}

export function liveIds(st: HostState): string[] {
  return [...new Set(liveEntries(st).map((e) => e.id))];
}

/** Text of entry files cfsboot could not parse (their artifacts are kept to be safe). */
function skippedText(st: HostState): string {
  return carrySkipped(st.loader).map((c) => Buffer.from(c.bytes).toString("latin1")).join("\n");
}

/**
 * `binariesOnly`: stop after leftovers and boot binaries (what finalize runs
 * at shutdown, as bootc does; state, tags and objects wait for the next gc).
 */
export async function hostGc(host: Host, repo: Repository | null, opts: { dryRun?: boolean; prune?: boolean; binariesOnly?: boolean } = {}): Promise<HostGcReport> {
  const dry = opts.dryRun ?? false;
  const r: HostGcReport = {
    dryRun: dry,
    removedKernelDirs: [],
    removedUkis: [],
    removedStateDirs: [],
    removedLeftovers: [],
    removedTags: [],
    addedTags: [],
    removedStaged: [],
    migratedOrigins: [],
    problems: [],
    repo: null,
  };
  const st = loadHostState(host);
  r.problems.push(...st.problems);
  const entries = liveEntries(st);
  const ids = new Set(entries.map((e) => e.id));
  const bootedId = st.booted?.id ?? null;
  const keepText = skippedText(st);
  const used = new Set(entries.map((e) => e.artifact));
  const bootedArtifacts = new Set(entries.filter((e) => e.id === bootedId).map((e) => e.artifact));
  const rm = (path: string, list: string[]): void => {
    list.push(path);
    if (!dry) removeAtomic(path);
  };

  // Leftovers first (they may hold old copies of anything below).
  const leftoverDirs = [host.deployPath];
  try {
    leftoverDirs.push(`${host.loaderRoot}/loader`, host.kernelBinDir);
    if (host.hasEsp()) leftoverDirs.push(host.ukiDir);
    if (host.bootloader === "grub") leftoverDirs.push(host.grubDir);
  } catch {}
  for (const d of new Set(leftoverDirs)) {
    for (const n of listDir(d)) {
      if (isLeftover(n) || /^\..*\.tmp-[0-9a-f]{12}$/.test(n)) {
        r.removedLeftovers.push(`${d}/${n}`);
        if (!dry) removeTree(`${d}/${n}`);
      }
    }
  }

  // Boot binaries.
  // The booted deployment keeps its binaries, tag and images even when its entry cannot be read
  // (a corrupted entry file must not make gc delete the running system's image).
  const unused = (name: string): boolean => !used.has(name) && !bootedArtifacts.has(name) && !keepText.includes(name) && name !== bootedId;
  for (const n of listDir(host.kernelBinDir)) {
    if (!n.startsWith(ARTIFACT_PREFIX) || !isDirectory(`${host.kernelBinDir}/${n}`)) continue;
    if (unused(n.slice(ARTIFACT_PREFIX.length))) rm(`${host.kernelBinDir}/${n}`, r.removedKernelDirs);
  }
  if (host.hasEsp()) {
    for (const n of listDir(host.ukiDir)) {
      if (!n.startsWith(ARTIFACT_PREFIX)) continue;
      const m = /^bootc_composefs-(.+?)\.efi(\.extra\.d)?$/.exec(n);
      if (m === null) continue;
      if (unused(m[1]!)) rm(`${host.ukiDir}/${n}`, r.removedUkis);
    }
  }

  if (opts.binariesOnly) return r;

  // Staged state that is not valid.
  if (!st.stagedValid) {
    if (st.marker !== null || exists(host.stagedMarkerPath)) {
      r.removedStaged.push(host.stagedMarkerPath);
      if (!dry) removeStagedMarker(host);
    }
    if (st.loader.stagedPresent) {
      r.removedStaged.push(host.stagedEntriesDir);
      if (!dry) removeStaged(host);
    }
  }

  // State directories.
  for (const id of listStateDirs(host)) {
    if (ids.has(id) || id === bootedId) continue;
    rm(host.stateDir(id), r.removedStateDirs);
  }
  for (const id of ids) {
    if (!exists(host.stateDir(id))) r.problems.push(`boot entry names deployment ${id}, which has no state directory (not removed)`);
  }

  // Tags and repository objects.
  if (repo !== null) {
    const liveManifests = new Set<string>();
    const liveIds = new Set(ids);
    if (bootedId !== null && exists(host.stateDir(bootedId))) liveIds.add(bootedId);
    for (const id of liveIds) {
      const o = st.origins.get(id)?.origin ?? null;
      let md = o?.manifestDigest ?? null;
      if (md === null) {
        md = findManifestForId(repo, id);
        if (md !== null && o !== null && exists(host.stateDir(id))) {
          r.migratedOrigins.push(host.originPath(id));
          if (!dry) writeOriginFile(host.stateDir(id), id, { ...o, manifestDigest: md });
        }
      }
      if (md === null) continue;
      liveManifests.add(md);
      const tag = bootcTag(md);
      if (repo.resolveTag(tag) === null && repo.hasStream(`oci-manifest-${md}`) !== null) {
        r.addedTags.push(tag);
        if (!dry) repo.tag(tag, md);
      }
    }
    for (const t of repo.listTags()) {
      if (!t.name.startsWith("localhost/bootc-")) continue;
      if (liveManifests.has(t.manifestDigest)) continue;
      r.removedTags.push(t.name);
      if (!dry) repo.untag(t.name);
    }
    if (opts.prune ?? true) {
      r.repo = await repo.gc({ dryRun: dry, extraRoots: [...liveIds] });
    }
  }
  return r;
}

export function formatHostGcReport(r: HostGcReport): string {
  const verb = r.dryRun ? "Would remove" : "Removed";
  const lines: string[] = [];
  for (const p of r.removedLeftovers) lines.push(`${verb} leftover ${p}`);
  for (const p of r.removedKernelDirs) lines.push(`${verb} kernel directory ${p}`);
  for (const p of r.removedUkis) lines.push(`${verb} UKI ${p}`);
  for (const p of r.removedStaged) lines.push(`${verb} stale staged state ${p}`);
  for (const p of r.removedStateDirs) lines.push(`${verb} state directory ${p}`);
  for (const t of r.removedTags) lines.push(`${verb} tag ${t}`);
  for (const t of r.addedTags) lines.push(`${r.dryRun ? "Would add" : "Added"} tag ${t}`);
  for (const o of r.migratedOrigins) lines.push(`${r.dryRun ? "Would add" : "Added"} [image] manifest_digest to ${o}`);
  if (r.repo !== null) {
    lines.push(`${verb} ${r.repo.objectsRemoved} repository objects (${r.repo.bytesFreed} bytes), ${r.repo.imagesPruned} images, ${r.repo.streamsPruned} streams`);
  }
  return lines.map((l) => `${l}\n`).join("");
}

// ---- legacy prefix migration (bootc-composefs.md §9) ---------------------------------------------

/**
 * Rename boot artifacts written without the `bootc_composefs-` prefix, and
 * the entries naming them, idempotently and crash-safely: each unprefixed
 * kernel directory (or UKI) is first COPIED to its prefixed name, then the
 * rewritten entry set replaces the old one atomically, and only then is the
 * unprefixed original removed. After a crash either the old set (with its
 * unprefixed files) or the new set (with the prefixed copies) is live.
 * Returns what was migrated.
 */
export function migratePrefixes(host: Host, st: HostState): string[] {
  const live = st.loader.menu.filter((e) => e.source === "bls");
  const todo = live.filter((e) => !e.prefixed);
  if (todo.length === 0) return [];
  const done: string[] = [];
  const copied = new Set<string>();
  const bin = host.kernelBinDir;
  for (const e of todo) {
    if (copied.has(e.artifact)) continue;
    copied.add(e.artifact);
    const isUki = e.entry.uki !== null || e.entry.efi !== null;
    const from = isUki ? `${host.ukiDir}/${e.artifact}.efi` : `${bin}/${e.artifact}`;
    const to = isUki ? `${host.ukiDir}/${ARTIFACT_PREFIX}${e.artifact}.efi` : `${bin}/${ARTIFACT_PREFIX}${e.artifact}`;
    if (exists(to)) continue;
    if (!exists(from)) throw new CfsError(from, `boot entry ${e.fileName} uses it, but it does not exist`);
    const tmp = tempSibling(to);
    try {
      if (isUki) writeNewFile(tmp, new Uint8Array(readFileSync(from)));
      else {
        mkdirp(tmp, 0o755);
        for (const f of listDir(from)) writeNewFile(`${tmp}/${f}`, new Uint8Array(readFileSync(`${from}/${f}`)));
        fsyncDir(tmp);
      }
      publish(tmp, to);
    } catch (err) {
      removeAtomic(tmp);
      throw err;
    }
    done.push(`${from} -> ${to}`);
  }
  const names = new Set<string>();
  const next: NamedEntry[] = st.loader.menu
    .filter((e) => e.source === "bls")
    .map((e) => {
      const entry = { ...e.entry };
      if (!e.prefixed) {
        const rep = (p: string | null): string | null => (p === null ? null : p.replace(new RegExp(`(^|/)${e.artifact}(?=/|\\.efi$)`), `$1${ARTIFACT_PREFIX}${e.artifact}`));
        entry.linux = rep(entry.linux);
        entry.initrd = entry.initrd.map((i) => rep(i)!);
        entry.uki = rep(entry.uki);
        entry.efi = rep(entry.efi);
      }
      let fileName = e.fileName;
      if (parseEntryFileName(fileName) === null && entry.version !== null) {
        const counter = /\+[0-9]+(-[0-9]+)?(?=\.conf$)/i.exec(fileName)?.[0] ?? "";
        fileName = entryFileName(entryOsid(e, "bootc"), entry.version, e.id === st.booted?.id ? "primary" : "secondary", counter);
        if (names.has(fileName)) fileName = e.fileName;
      }
      names.add(fileName);
      return { fileName, entry };
    });
  writeEntrySet(host.entriesDir, next, carrySkipped(st.loader));
  for (const e of todo) {
    const isUki = e.entry.uki !== null || e.entry.efi !== null;
    const from = isUki ? `${host.ukiDir}/${e.artifact}.efi` : `${bin}/${e.artifact}`;
    if (exists(from)) removeAtomic(from);
  }
  return done;
}

/** Migrate prefixes, reporting instead of failing (run by mutating commands). */
export function migratePrefixesQuietly(host: Host): void {
  // A host that cannot be read (no boot loader recorded, bad --booted-cmdline, missing ESP) is the
  // command's own error, reported once by it, not a warning before it.
  const st = loadHostState(host);
  try {
    for (const m of migratePrefixes(host, st)) process.stderr.write(`cfsboot: migrated boot artifact ${m}\n`);
  } catch (e) {
    process.stderr.write(`cfsboot: warning: prefix migration: ${describeError(e)}\n`);
  }
}
