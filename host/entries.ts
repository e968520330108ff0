// The boot loader's view of the host: the entries in `loader/entries/` (and
// `loader/entries.staged/`), GRUB's `grub2/user.cfg[.staged]` for UKIs, their
// menu order and effective default, and the atomic ways to replace them.
//
// Reading is tolerant: an entry that cannot be parsed, names no deployment or
// names something that is not a deployment id is reported (`problems`) and
// skipped, never fatal, so `status` and `gc` keep working on a damaged ESP.
// Writing is all-or-nothing: a whole entry set is written into a temporary
// sibling directory (every file fsynced, then the directory), then renamed
// into place or exchanged with the old set by renameat2(RENAME_EXCHANGE)
// (host/fsops.ts `publish`); the staged set becomes live the same way. A
// loader directory is never half written.

import { readFileSync } from "node:fs";
import { dirname } from "node:path";

import {
  type BlsEntry,
  type Bootloader,
  type GrubMenuEntry,
  type NamedEntry,
  compareGrub,
  compareSystemdBoot,
  effectiveDefaultIndex,
  entryArtifact,
  entryDeploymentId,
  entryFileName,
  entryOsid,
  formatEntry,
  formatGrubUserCfg,
  grubMenuEntryId,
  parseCounter,
  parseGrubUserCfg,
  readEntry,
} from "../shared/bls.ts";
import { CfsError, describeError } from "../shared/errors.ts";
import { HEX_LENGTH } from "../shared/kargs.ts";
import { writeFileAtomic } from "./atomic.ts";
import { exchange, exists, fsyncDir, isLeftover, listDir, mkdirp, publish, removeAtomic, tempSibling, writeNewFile } from "./fsops.ts";
import { ALGORITHM, type Host, readLoaderEfiVar } from "./sysroot.ts";

/** One boot entry cfsboot understands. */
export interface LiveEntry extends NamedEntry {
  /** The deployment it boots (128 hex). */
  id: string;
  /** Kernel directory / UKI name without the `bootc_composefs-` prefix (differs from id for shared kernels). */
  artifact: string;
  /** The artifact carries the prefix (older installs did not). */
  prefixed: boolean;
  /** A Type 1 file, or a GRUB menuentry in user.cfg. */
  source: "bls" | "grub-menu";
  /** For GRUB menu entries. */
  menu?: GrubMenuEntry;
}

export interface EntryScan {
  entries: LiveEntry[];
  /** One line per entry that was skipped, naming the file and what is wrong. */
  problems: string[];
  /** The directory (or file) exists. */
  present: boolean;
  /** File names of the entries that were skipped (kept verbatim when the set is rewritten). */
  skipped: string[];
}

const isId = (s: string): boolean => s.length === HEX_LENGTH[ALGORITHM] && /^[0-9a-f]+$/.test(s);

/** Read every `*.conf` of a BLS entries directory. */
export function scanBlsDir(dir: string): EntryScan {
  const out: EntryScan = { entries: [], problems: [], present: exists(dir), skipped: [] };
  for (const name of listDir(dir)) {
    if (!name.endsWith(".conf") || name.startsWith(".")) continue;
    const path = `${dir}/${name}`;
    try {
      let text: string;
      try {
        text = readFileSync(Buffer.from(path, "latin1"), "utf8");
      } catch (e) {
        throw new CfsError(path, `cannot read: ${describeError(e)}`);
      }
      const entry = readEntry(text, path);
      const id = entryDeploymentId(entry, path, ALGORITHM);
      if (!isId(id)) throw new CfsError(path, `names "${id}", which is not a deployment id`);
      const art = entryArtifact(entry, path);
      out.entries.push({ fileName: name, entry, id, artifact: art.name, prefixed: art.prefixed, source: "bls" });
    } catch (e) {
      if (!(e instanceof CfsError)) throw e;
      out.problems.push(`${e.message}; entry skipped`);
      out.skipped.push(name);
    }
  }
  return out;
}

/** Read GRUB's user.cfg menu entries (UKIs). */
export function scanGrubCfg(path: string): EntryScan {
  const out: EntryScan = { entries: [], problems: [], present: exists(path), skipped: [] };
  if (!out.present) return out;
  let menus: GrubMenuEntry[];
  try {
    menus = parseGrubUserCfg(readFileSync(path, "utf8"), path);
  } catch (e) {
    if (!(e instanceof CfsError)) throw e;
    out.problems.push(`${e.message}; file skipped`);
    return out;
  }
  menus.forEach((m, i) => {
    try {
      const id = grubMenuEntryId(m, path);
      if (!isId(id)) throw new CfsError(path, `menuentry "${m.title}" names "${id}", which is not a deployment id`);
      const entry: BlsEntry = { title: m.title, version: null, machineId: null, sortKey: null, linux: null, initrd: [], efi: m.chainloader, uki: null, options: null, extra: [] };
      const art = entryArtifact(entry, path);
      out.entries.push({ fileName: `user.cfg#${i}`, entry, id, artifact: art.name, prefixed: art.prefixed, source: "grub-menu", menu: m });
    } catch (e) {
      if (!(e instanceof CfsError)) throw e;
      out.problems.push(`${e.message}; menuentry skipped`);
    }
  });
  return out;
}

/** `default` of systemd-boot's loader.conf, or null. */
export function loaderConfDefault(esp: string): string | null {
  let text: string;
  try {
    text = readFileSync(`${esp}/loader/loader.conf`, "utf8");
  } catch {
    return null;
  }
  let d: string | null = null;
  for (const line of text.split("\n")) {
    const m = /^\s*default\s+(\S.*?)\s*$/.exec(line);
    if (m) d = m[1]!;
  }
  return d;
}

export interface LoaderView {
  bootloader: Bootloader;
  /** Live entries in boot-menu order. */
  menu: LiveEntry[];
  /** Index in `menu` of what boots next without interaction (null: no entries). */
  defaultIndex: number | null;
  /** Staged entries (entries.staged or user.cfg.staged), in menu order. */
  staged: LiveEntry[];
  stagedPresent: boolean;
  problems: string[];
  /** Where Type 1 entry files live (live set). */
  entriesDir: string;
  /** Live entry files that were skipped (unreadable); rewriting the live set keeps them as they are. */
  skippedLive: string[];
}

export function sortForLoader(entries: readonly LiveEntry[], bootloader: Bootloader): LiveEntry[] {
  return [...entries].sort(bootloader === "systemd" ? compareSystemdBoot : compareGrub);
}

/** The boot loader's entries as the boot loader sees them. */
export function readLoader(host: Host): LoaderView {
  const b = host.bootloader;
  if (b === "none") throw new CfsError(host.root, "Bootloader was None: composefs deployments need a boot loader");
  const live = scanBlsDir(host.entriesDir);
  const staged = scanBlsDir(host.stagedEntriesDir);
  const problems = [...live.problems, ...staged.problems];
  let menu = sortForLoader(live.entries, b);
  let stagedMenu = sortForLoader(staged.entries, b);
  let stagedPresent = staged.present;
  if (b === "grub") {
    const cfg = scanGrubCfg(`${host.grubDir}/user.cfg`);
    const cfgStaged = scanGrubCfg(`${host.grubDir}/user.cfg.staged`);
    problems.push(...cfg.problems, ...cfgStaged.problems);
    menu = [...cfg.entries, ...menu];
    stagedMenu = [...cfgStaged.entries, ...stagedMenu];
    stagedPresent ||= cfgStaged.present;
  }
  let defaultIndex: number | null = menu.length === 0 ? null : 0;
  if (b === "systemd" && menu.length > 0) {
    const vars = host.directory ? {} : { oneShot: readLoaderEfiVar("LoaderEntryOneShot"), entryDefault: readLoaderEfiVar("LoaderEntryDefault") };
    defaultIndex = effectiveDefaultIndex(menu, { ...vars, loaderConfDefault: loaderConfDefault(host.esp) });
  }
  return { bootloader: b, menu, defaultIndex, staged: stagedMenu, stagedPresent, problems, entriesDir: host.entriesDir, skippedLive: live.skipped };
}

/**
 * GRUB (classic and grub-cc) ignores sort-key and orders BLS files by their
 * names, descending (an RPM name-version-release comparison in blscfg; byte
 * order in bootc's own code). bootc's names `bootc_<osid>-<version>-<p>.conf`
 * then put a rolled-back older version, or another OS, in the wrong place
 * (bootc#2221). When `intended` (best first) is not what GRUB would pick,
 * every file is renamed with the first entry's osid and a descending
 * two-digit rank before the version (`bootc_<osid>-<rank>.<version>-<p>.conf`),
 * which both comparisons order as intended. Contents are unchanged.
 */
export function orderForGrub(intended: readonly NamedEntry[], bootloader: Bootloader): NamedEntry[] {
  if (bootloader === "systemd" || intended.length < 2) return [...intended];
  const names = (es: readonly NamedEntry[]) => es.map((e) => e.fileName).join("\n");
  if (names(sortForLoaderNamed(intended, bootloader)) === names(intended)) return [...intended];
  const osid = entryOsid(intended[0]!, "bootc");
  const n = intended.length;
  const out = intended.map((e, i) => {
    const counter = parseCounter(e.fileName)?.text ?? "";
    const rank = String(n - i).padStart(2, "0");
    return { fileName: entryFileName(osid, `${rank}.${e.entry.version ?? "0"}`, i === 0 ? "primary" : "secondary", counter), entry: e.entry };
  });
  if (names(sortForLoaderNamed(out, bootloader)) !== names(out)) throw new CfsError("boot entries", "cannot name the entries so that GRUB boots them in the intended order");
  return out;
}

function sortForLoaderNamed(entries: readonly NamedEntry[], bootloader: Bootloader): NamedEntry[] {
  return [...entries].sort(bootloader === "systemd" ? compareSystemdBoot : compareGrub);
}

// ---- writing ----------------------------------------------------------------------------

/**
 * Write a complete entry set to `dir` (replacing any old set atomically).
 * `carry`: files copied byte for byte (entries cfsboot could not read).
 */
export function writeEntrySet(dir: string, entries: readonly NamedEntry[], carry: readonly { fileName: string; bytes: Uint8Array }[] = []): void {
  const names = new Set<string>();
  for (const e of [...entries, ...carry]) {
    if (names.has(e.fileName)) throw new CfsError(e.fileName, "two boot entries with the same file name");
    names.add(e.fileName);
  }
  mkdirp(dirname(dir), 0o755);
  const tmp = tempSibling(dir);
  mkdirp(tmp, 0o755);
  try {
    for (const e of entries) writeNewFile(`${tmp}/${e.fileName}`, formatEntry(e.entry));
    for (const c of carry) writeNewFile(`${tmp}/${c.fileName}`, c.bytes);
    fsyncDir(tmp);
    publish(tmp, dir);
  } catch (e) {
    removeAtomic(tmp);
    throw e;
  }
}

/** The raw bytes of live entry files that were skipped, to carry them over a rewrite. */
export function carrySkipped(view: LoaderView): { fileName: string; bytes: Uint8Array }[] {
  const out: { fileName: string; bytes: Uint8Array }[] = [];
  for (const f of view.skippedLive) {
    try {
      out.push({ fileName: f, bytes: new Uint8Array(readFileSync(Buffer.from(`${view.entriesDir}/${f}`, "latin1"))) });
    } catch {}
  }
  return out;
}

/** Remove the staged set (entries.staged and user.cfg.staged). */
export function removeStaged(host: Host): void {
  removeAtomic(host.stagedEntriesDir);
  if (host.bootloader === "grub") removeAtomic(`${host.grubDir}/user.cfg.staged`);
}

/**
 * Make the staged set live: exchange `entries.staged` with `entries` (or
 * rename it when there is no live set), then drop the old set; the same for
 * GRUB's user.cfg.staged. The exchange is the commit point.
 */
export function commitStaged(host: Host): void {
  const staged = host.stagedEntriesDir;
  const live = host.entriesDir;
  if (exists(staged)) {
    if (exists(live)) {
      exchange(staged, live);
      removeAtomic(staged);
    } else {
      publish(staged, live);
    }
  }
  if (host.bootloader === "grub") {
    const s = `${host.grubDir}/user.cfg.staged`;
    const l = `${host.grubDir}/user.cfg`;
    if (exists(s)) {
      if (exists(l)) {
        exchange(s, l);
        removeAtomic(s);
      } else publish(s, l);
    }
  }
}

/** Write GRUB's user.cfg (or user.cfg.staged) atomically. */
export function writeGrubCfg(path: string, menus: readonly GrubMenuEntry[]): void {
  mkdirp(dirname(path), 0o755);
  writeFileAtomic(path, formatGrubUserCfg(menus));
}

/** Leftover temporaries of interrupted writes in the loader directory. */
export function loaderLeftovers(host: Host): string[] {
  const dirs = [`${host.loaderRoot}/loader`];
  if (host.bootloader === "grub") dirs.push(host.grubDir);
  const out: string[] = [];
  for (const d of dirs) for (const n of listDir(d)) if (isLeftover(n) || /^\..*\.tmp-[0-9a-f]{12}$/.test(n)) out.push(`${d}/${n}`);
  return out;
}
