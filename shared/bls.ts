// Boot entries: BLS Type 1 files, their order, boot counting, bootc's naming
// rules, GRUB's user.cfg for UKIs, and the pure planners for slots, staging
// and rollback.
//
// Follows (formats and behaviour, not code):
// - UAPI Boot Loader Specification ("Type #1", "Boot counting", "Sorting") and
//   the UAPI version format specification; systemd `src/fundamental/
//   string-util-fundamental.c` `strverscmp_improved` and `src/boot/boot.c`
//   (`boot_entry_compare`, counter parsing, default selection);
// - bootc `crates/lib/src/parsers/bls_config.rs` (keys and writing order),
//   `crates/lib/src/parsers/grub_menuconfig.rs` and `bootc_composefs/boot.rs`
//   (`type1_entry_conf_file_name`, sort keys, the user.cfg header),
//   `bootc_composefs/status.rs` (slots), `bootc_composefs/rollback.rs`;
// - reference: bootc-composefs.md §4, status.md §4, finalize-and-boot-counting.md
//   §5-§6. Upstream bugs not copied: rollbackQueued inversions (bootc-composefs.md
//   §11 #3) and the hard-coded `bootc` osid / two-entry assumption of rollback
//   (§11 #5).
//
// Pure: text in, values out.

import { CfsError } from "./errors.ts";
import { type DigestAlgorithm, parseComposefsKarg } from "./kargs.ts";

// ---- UAPI version comparison --------------------------------------------------------

const isDigit = (c: string): boolean => c >= "0" && c <= "9";
const isAlpha = (c: string): boolean => (c >= "a" && c <= "z") || (c >= "A" && c <= "Z");
const isVersionChar = (c: string): boolean => isDigit(c) || isAlpha(c) || c === "~" || c === "-" || c === "^" || c === ".";
const cmp = (a: number, b: number): number => (a < b ? -1 : a > b ? 1 : 0);
const strcmp = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/**
 * Compare two version strings with the UAPI version format rules (systemd's
 * `strverscmp_improved`): segments are numeric or alphabetic, optionally
 * prefixed by `~` (pre-release, oldest), `-` (version/release separator),
 * `^` (patch release) or `.` (point release); numeric segments compare by
 * value (leading zeros ignored) and are newer than alphabetic ones; more
 * segments are newer (except after `~`); other characters only separate
 * segments. Returns < 0, 0 or > 0.
 */
export function compareVersions(a: string, b: string): number {
  let i = 0;
  let j = 0;
  const code = (s: string, k: number): number => (k < s.length ? s.charCodeAt(k) : 0);
  const ch = (s: string, k: number): string => (k < s.length ? s[k]! : "");
  for (;;) {
    while (i < a.length && !isVersionChar(a[i]!)) i++;
    while (j < b.length && !isVersionChar(b[j]!)) j++;
    // '~': a pre-release is older than anything else, even the end.
    if (ch(a, i) === "~" || ch(b, j) === "~") {
      const r = cmp(ch(a, i) !== "~" ? 1 : 0, ch(b, j) !== "~" ? 1 : 0);
      if (r !== 0) return r;
      i++;
      j++;
    }
    // One string ended: the longer one is newer.
    if (i >= a.length || j >= b.length) return cmp(code(a, i), code(b, j));
    // '-' (release separator), '^' (patch), '.' (point release): the string
    // with the prefix is older.
    for (const prefix of ["-", "^", "."]) {
      if (ch(a, i) === prefix || ch(b, j) === prefix) {
        const r = cmp(ch(a, i) !== prefix ? 1 : 0, ch(b, j) !== prefix ? 1 : 0);
        if (r !== 0) return r;
        i++;
        j++;
      }
    }
    if (isDigit(ch(a, i)) || isDigit(ch(b, j))) {
      let ea = i;
      let eb = j;
      while (ea < a.length && isDigit(a[ea]!)) ea++;
      while (eb < b.length && isDigit(b[eb]!)) eb++;
      // A numeric segment is newer than a non-numeric one.
      const r = cmp(ea > i ? 1 : 0, eb > j ? 1 : 0);
      if (r !== 0) return r;
      while (i < ea && a[i] === "0") i++;
      while (j < eb && b[j] === "0") j++;
      const r2 = cmp(ea - i, eb - j);
      if (r2 !== 0) return r2;
      const r3 = strcmp(a.slice(i, ea), b.slice(j, eb));
      if (r3 !== 0) return r3;
      i = ea;
      j = eb;
    } else {
      let ea = i;
      let eb = j;
      while (ea < a.length && isAlpha(a[ea]!)) ea++;
      while (eb < b.length && isAlpha(b[eb]!)) eb++;
      const n = Math.min(ea - i, eb - j);
      const r = strcmp(a.slice(i, i + n), b.slice(j, j + n));
      if (r !== 0) return r;
      const r2 = cmp(ea - i, eb - j);
      if (r2 !== 0) return r2;
      i = ea;
      j = eb;
    }
  }
}

// ---- Type 1 entries --------------------------------------------------------------

export interface BlsEntry {
  title: string | null;
  version: string | null;
  machineId: string | null;
  sortKey: string | null;
  linux: string | null;
  /** In file order; the key may repeat. */
  initrd: string[];
  efi: string | null;
  uki: string | null;
  /** The `options` lines joined with single spaces (the key may repeat). */
  options: string | null;
  /** Any other key (devicetree, architecture, …), in file order. */
  extra: [string, string][];
}

export function emptyEntry(): BlsEntry {
  return { title: null, version: null, machineId: null, sortKey: null, linux: null, initrd: [], efi: null, uki: null, options: null, extra: [] };
}

/** An entry parsed from a file, with what a strict reader must know about it. */
export interface ParsedEntry {
  entry: BlsEntry;
  /** Key → the lines (1-based) it appeared on. */
  lines: Map<string, number[]>;
  /** Lines with a key but no value (ignored, as systemd-boot does). */
  emptyValues: { line: number; key: string }[];
}

const SINGLE_KEYS: Record<string, keyof BlsEntry> = {
  title: "title",
  version: "version",
  "machine-id": "machineId",
  "sort-key": "sortKey",
  linux: "linux",
  efi: "efi",
  uki: "uki",
};

/**
 * Parse a BLS Type 1 entry leniently, like the boot loader: `key value` per
 * line, whitespace-separated; blank lines and `#` comments ignored; a
 * repeated single-valued key keeps its last value; `initrd` accumulates;
 * `options` lines concatenate. Use `validateEntry` for a strict check.
 */
export function parseEntry(text: string): ParsedEntry {
  const entry = emptyEntry();
  const lines = new Map<string, number[]>();
  const emptyValues: ParsedEntry["emptyValues"] = [];
  const options: string[] = [];
  text.split("\n").forEach((raw, idx) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const m = /^(\S+)(?:\s+([\s\S]*))?$/.exec(line)!;
    const key = m[1]!;
    const value = (m[2] ?? "").trim();
    if (value === "") {
      emptyValues.push({ line: idx + 1, key });
      return;
    }
    const seen = lines.get(key);
    if (seen === undefined) lines.set(key, [idx + 1]);
    else seen.push(idx + 1);
    const field = SINGLE_KEYS[key];
    if (field !== undefined) (entry as unknown as Record<string, string>)[field] = value;
    else if (key === "initrd") entry.initrd.push(value);
    else if (key === "options") options.push(value);
    else entry.extra.push([key, value]);
  });
  if (options.length > 0) entry.options = options.join(" ");
  return { entry, lines, emptyValues };
}

/**
 * Strict check of an entry cfsboot will act on. Errors name the file and
 * line: a key without value, a repeated single-valued key, a missing
 * `version`, and anything but exactly one of `linux`, `efi`, `uki`.
 */
export function validateEntry(parsed: ParsedEntry, fileName: string): BlsEntry {
  const at = (line: number) => `${fileName}: line ${line}`;
  const first = parsed.emptyValues[0];
  if (first !== undefined) throw new CfsError(at(first.line), `'${first.key}' has no value`);
  for (const key of Object.keys(SINGLE_KEYS)) {
    const l = parsed.lines.get(key);
    if (l !== undefined && l.length > 1) throw new CfsError(at(l[1]!), `'${key}' given again (first on line ${l[0]})`);
  }
  const e = parsed.entry;
  if (e.version === null) throw new CfsError(fileName, "missing 'version'");
  const kinds = (["linux", "efi", "uki"] as const).filter((k) => e[k] !== null);
  if (kinds.length === 0) throw new CfsError(fileName, "missing 'linux', 'efi' or 'uki'");
  if (kinds.length > 1) {
    const line = parsed.lines.get(kinds[1]!)![0]!;
    throw new CfsError(at(line), `'${kinds[0]}' and '${kinds[1]}' in one entry`);
  }
  if (kinds[0] !== "linux" && (e.initrd.length > 0 || e.options !== null)) {
    const key = e.initrd.length > 0 ? "initrd" : "options";
    throw new CfsError(at(parsed.lines.get(key)![0]!), `'${key}' in a '${kinds[0]}' entry`);
  }
  return e;
}

/** Parse and validate in one step. */
export function readEntry(text: string, fileName: string): BlsEntry {
  return validateEntry(parseEntry(text), fileName);
}

/**
 * Serialise an entry in bootc's key order: title, version, linux | efi |
 * uki, initrd…, options, machine-id, sort-key, then the other keys. Every
 * line ends with a newline. parseEntry(formatEntry(e)) gives e back.
 */
export function formatEntry(e: BlsEntry): string {
  const out: string[] = [];
  const put = (key: string, value: string | null): void => {
    if (value === null) return;
    if (/[\n\r]/.test(value) || value.trim() !== value || value === "") {
      throw new CfsError(`boot entry key '${key}'`, `value ${JSON.stringify(value)} cannot be written on one line`);
    }
    out.push(`${key} ${value}\n`);
  };
  put("title", e.title);
  put("version", e.version);
  put("linux", e.linux);
  put("efi", e.efi);
  put("uki", e.uki);
  for (const i of e.initrd) put("initrd", i);
  put("options", e.options);
  put("machine-id", e.machineId);
  put("sort-key", e.sortKey);
  for (const [k, v] of e.extra) {
    if (!/^\S+$/.test(k) || k.startsWith("#") || k in SINGLE_KEYS || k === "initrd" || k === "options") {
      throw new CfsError(`boot entry key ${JSON.stringify(k)}`, "not a valid extra key");
    }
    put(k, v);
  }
  return out.join("");
}

// ---- boot counting ----------------------------------------------------------------

export interface Counter {
  /** The name without the counter and suffix (`bootc_x-1-1` of `bootc_x-1-1+2-1.conf`). */
  base: string;
  left: number;
  /** null when the name has no `-DONE` part. */
  done: number | null;
  /** The suffix as written (`conf`, `efi`, any case). */
  suffix: string;
  /** The counter exactly as written, e.g. `+3` or `+0-3`. */
  text: string;
}

const COUNTER_RE = /^(.*)\+([0-9]+)(?:-([0-9]+))?\.(conf|efi)$/i;

/** The boot counter of a file name (`name+LEFT[-DONE].conf|efi`), or null when not counted. */
export function parseCounter(fileName: string): Counter | null {
  const m = COUNTER_RE.exec(fileName);
  if (m === null) return null;
  const left = Number(m[2]);
  const done = m[3] === undefined ? null : Number(m[3]);
  if (!Number.isSafeInteger(left) || (done !== null && !Number.isSafeInteger(done))) return null;
  return { base: m[1]!, left, done, suffix: m[4]!, text: fileName.slice(m[1]!.length, fileName.length - m[4]!.length - 1) };
}

/** `base+LEFT[-DONE].suffix`. */
export function formatCounterName(base: string, left: number, done: number | null, suffix = "conf"): string {
  return `${base}+${left}${done === null ? "" : `-${done}`}.${suffix}`;
}

/** The file name with any counter removed (`x+1-2.conf` → `x.conf`). */
export function withoutCounter(fileName: string): string {
  const c = parseCounter(fileName);
  return c === null ? fileName : `${c.base}.${c.suffix}`;
}

/** good (no counter), indeterminate (tries left), bad (none left). */
export function counterState(fileName: string): "good" | "indeterminate" | "bad" {
  const c = parseCounter(fileName);
  return c === null ? "good" : c.left > 0 ? "indeterminate" : "bad";
}

// ---- bootc's naming rules -----------------------------------------------------------

export type Priority = "primary" | "secondary";
export type Bootloader = "grub" | "grub-cc" | "systemd";

/** Directory and file-name prefix of every boot artifact cfsboot (and bootc) owns. */
export const ARTIFACT_PREFIX = "bootc_composefs-";
/** Where UKIs live on the ESP (relative to its root). */
export const UKI_DIR = "EFI/Linux/bootc";

function checkNamePart(what: string, s: string): void {
  if (s === "" || s.includes("/") || s.includes("\0") || /[\n\r]/.test(s)) {
    throw new CfsError(`${what} ${JSON.stringify(s)}`, "cannot be used in a boot entry file name");
  }
}

/**
 * `bootc_<osid with '-' → '_'>-<version>-<1|0>.conf` (1 = primary), with an
 * optional boot counter text (`+3`) before `.conf`.
 */
export function entryFileName(osid: string, version: string, priority: Priority, counter = ""): string {
  checkNamePart("osid", osid);
  checkNamePart("version", version);
  if (counter !== "" && !/^\+[0-9]+(-[0-9]+)?$/.test(counter)) throw new CfsError(`boot counter ${JSON.stringify(counter)}`, "not of the form +LEFT[-DONE]");
  return `bootc_${osid.replaceAll("-", "_")}-${version}-${priority === "primary" ? "1" : "0"}${counter}.conf`;
}

/** Parts of a bootc entry file name (counter allowed), or null for other names. */
export function parseEntryFileName(fileName: string): { osid: string; version: string; priority: Priority; counter: string } | null {
  const c = parseCounter(fileName);
  const plain = c === null ? fileName : `${c.base}.${c.suffix}`;
  const m = /^bootc_([^-]+)-(.+)-([01])\.conf$/.exec(plain);
  if (m === null) return null;
  return { osid: m[1]!, version: m[2]!, priority: m[3] === "1" ? "primary" : "secondary", counter: c?.text ?? "" };
}

/** `bootc-<osid>-0` (primary) or `bootc-<osid>-1` (secondary); osid keeps its hyphens. */
export function sortKeyFor(osid: string, priority: Priority): string {
  return `bootc-${osid}-${priority === "primary" ? "0" : "1"}`;
}

/** osid and rank of a `bootc-<osid>-<n>` sort key, or null. */
export function parseSortKey(sortKey: string): { osid: string; rank: number } | null {
  const m = /^bootc-(.+)-([0-9]+)$/.exec(sortKey);
  return m === null ? null : { osid: m[1]!, rank: Number(m[2]) };
}

/**
 * The path written in a Type 1 entry for the kernel directory of `artifact`
 * (a deployment id, or the id whose kernel is shared).
 */
export function kernelDirInEntry(bootloader: Bootloader, artifact: string, bootIsSeparateMount: boolean): string {
  if (bootloader === "grub") return bootIsSeparateMount ? `/${ARTIFACT_PREFIX}${artifact}` : `/boot/${ARTIFACT_PREFIX}${artifact}`;
  return `/EFI/Linux/${ARTIFACT_PREFIX}${artifact}`;
}

/** The path written in entries and menus for a deployment's UKI. */
export function ukiPathInEntry(id: string): string {
  return `/${UKI_DIR}/${ARTIFACT_PREFIX}${id}.efi`;
}

/** A Type 1 entry as cfsboot writes it (sort-key set by the planners). */
export function makeType1Entry(o: { title: string; version: string; kernelDir: string; options: string; machineId?: string | null; sortKey?: string | null }): BlsEntry {
  return { ...emptyEntry(), title: o.title, version: o.version, linux: `${o.kernelDir}/vmlinuz`, initrd: [`${o.kernelDir}/initrd`], options: o.options, machineId: o.machineId ?? null, sortKey: o.sortKey ?? null };
}

/**
 * A BLS entry for a UKI (systemd-boot, grub-cc). `useUkiKey`: write `uki`
 * (systemd ≥ 258, not grub-cc) instead of `efi`. systemd-boot counts boots
 * only for `uki` entries.
 */
export function makeUkiEntry(o: { title: string; version: string; id: string; useUkiKey: boolean; sortKey?: string | null }): BlsEntry {
  const path = ukiPathInEntry(o.id);
  return { ...emptyEntry(), title: o.title, version: o.version, uki: o.useUkiKey ? path : null, efi: o.useUkiKey ? null : path, sortKey: o.sortKey ?? null };
}

function lastComponent(path: string): string {
  const parts = path.split("/").filter((p) => p !== "");
  return parts[parts.length - 1] ?? "";
}

/**
 * The deployment an entry boots: for Type 1 its composefs karg (composefs-rs
 * rules), for a UKI entry the UKI's file name without the prefix and `.efi`.
 */
export function entryDeploymentId(e: BlsEntry, fileName: string, algorithm: DigestAlgorithm = "sha512"): string {
  const efi = e.uki ?? e.efi;
  if (efi !== null) {
    const name = lastComponent(efi);
    if (!name.endsWith(".efi")) throw new CfsError(fileName, `UKI path ${JSON.stringify(efi)} does not end with .efi`);
    const stem = name.slice(0, -4);
    return stem.startsWith(ARTIFACT_PREFIX) ? stem.slice(ARTIFACT_PREFIX.length) : stem;
  }
  if (e.options === null) throw new CfsError(fileName, "no 'options' (no composefs karg)");
  let karg;
  try {
    karg = parseComposefsKarg(e.options, algorithm);
  } catch (err) {
    if (err instanceof CfsError) throw err.within(fileName);
    throw err;
  }
  if (karg === null) throw new CfsError(fileName, "no composefs karg in 'options'");
  return karg.digest;
}

/**
 * The boot artifact an entry uses (what GC keeps): the kernel directory name
 * (Type 1) or UKI name, without the `bootc_composefs-` prefix. `prefixed`
 * tells whether the prefix was there (older installs wrote plain names).
 */
export function entryArtifact(e: BlsEntry, fileName: string): { name: string; prefixed: boolean } {
  const efi = e.uki ?? e.efi;
  let name: string;
  if (efi !== null) {
    const f = lastComponent(efi);
    if (!f.endsWith(".efi")) throw new CfsError(fileName, `UKI path ${JSON.stringify(efi)} does not end with .efi`);
    name = f.slice(0, -4);
  } else if (e.linux !== null) {
    const parts = e.linux.split("/").filter((p) => p !== "");
    if (parts.length < 2) throw new CfsError(fileName, `kernel path ${JSON.stringify(e.linux)} has no directory`);
    name = parts[parts.length - 2]!;
  } else {
    throw new CfsError(fileName, "no 'linux', 'efi' or 'uki'");
  }
  return name.startsWith(ARTIFACT_PREFIX) ? { name: name.slice(ARTIFACT_PREFIX.length), prefixed: true } : { name, prefixed: false };
}

// ---- order --------------------------------------------------------------------------

export interface NamedEntry {
  fileName: string;
  entry: BlsEntry;
}

const nullsFirst = (a: string | null, b: string | null): number => (a === null ? (b === null ? 0 : -1) : b === null ? 1 : strcmp(a, b));

/**
 * systemd-boot's menu order ("best first"): bad entries (no tries left) last;
 * entries with a sort-key before those without; sort-key ascending, then
 * machine-id ascending, then version descending (UAPI comparison); then the
 * entry id (file name without counter and suffix) descending; then more
 * tries left, then fewer tries done.
 */
export function compareSystemdBoot(a: NamedEntry, b: NamedEntry): number {
  const ca = parseCounter(a.fileName);
  const cb = parseCounter(b.fileName);
  const badA = ca !== null && ca.left === 0;
  const badB = cb !== null && cb.left === 0;
  if (badA !== badB) return badA ? 1 : -1;
  const ka = a.entry.sortKey;
  const kb = b.entry.sortKey;
  if ((ka === null) !== (kb === null)) return ka === null ? 1 : -1;
  if (ka !== null && kb !== null) {
    const r = strcmp(ka, kb);
    if (r !== 0) return r;
    const r2 = nullsFirst(a.entry.machineId, b.entry.machineId);
    if (r2 !== 0) return r2;
    const r3 = compareVersions(b.entry.version ?? "", a.entry.version ?? "");
    if (r3 !== 0) return r3;
  }
  const ida = (ca === null ? a.fileName.replace(/\.(conf|efi)$/i, "") : ca.base).toLowerCase();
  const idb = (cb === null ? b.fileName.replace(/\.(conf|efi)$/i, "") : cb.base).toLowerCase();
  const r4 = compareVersions(idb, ida);
  if (r4 !== 0) return r4;
  const leftA = ca === null ? Infinity : ca.left;
  const leftB = cb === null ? Infinity : cb.left;
  if (leftA !== leftB) return leftA > leftB ? -1 : 1;
  const doneA = ca?.done ?? 0;
  const doneB = cb?.done ?? 0;
  if (doneA !== doneB) return doneA < doneB ? -1 : 1;
  return strcmp(a.fileName, b.fileName);
}

/**
 * GRUB (classic and grub-cc) ignores sort-key; bootc decides which entry GRUB
 * boots by comparing file names (counter removed) byte-wise, descending.
 */
export function compareGrub(a: NamedEntry, b: NamedEntry): number {
  const r = strcmp(withoutCounter(b.fileName), withoutCounter(a.fileName));
  return r !== 0 ? r : strcmp(b.fileName, a.fileName);
}

/** Entries in boot-menu order for a boot loader (a new array). */
export function sortEntries(entries: readonly NamedEntry[], bootloader: Bootloader): NamedEntry[] {
  return [...entries].sort(bootloader === "systemd" ? compareSystemdBoot : compareGrub);
}

/** A glob as systemd-boot matches `default` patterns (`*`, `?`, `[...]`). */
function globToRegExp(glob: string): RegExp {
  let re = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === "*") re += ".*";
    else if (c === "?") re += ".";
    else if (c === "[") {
      const end = glob.indexOf("]", i + 2);
      if (end < 0) re += "\\[";
      else {
        let body = glob.slice(i + 1, end);
        if (body.startsWith("!")) body = "^" + body.slice(1);
        re += `[${body.replace(/\\/g, "\\\\")}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\/]/g, "\\$&");
  }
  return new RegExp(`^${re}$`, "i");
}

/**
 * The entry systemd-boot boots without user interaction, from entries in menu
 * order: `LoaderEntryOneShot`, else `LoaderEntryDefault`, else loader.conf
 * `default` (globs matched against file names), else the first entry. An
 * unmatched setting falls through to the next. Returns an index, or null for
 * no entries. (`@saved` needs the last booted entry and is not resolved.)
 */
export function effectiveDefaultIndex(
  sorted: readonly NamedEntry[],
  settings: { oneShot?: string | null; entryDefault?: string | null; loaderConfDefault?: string | null } = {},
): number | null {
  if (sorted.length === 0) return null;
  for (const pattern of [settings.oneShot, settings.entryDefault, settings.loaderConfDefault]) {
    if (pattern === null || pattern === undefined || pattern === "" || pattern.startsWith("@")) continue;
    const re = globToRegExp(pattern);
    const i = sorted.findIndex((e) => re.test(e.fileName) || re.test(e.fileName.replace(/\.conf$/i, "")));
    if (i >= 0) return i;
  }
  return 0;
}

// ---- slots --------------------------------------------------------------------------

export interface SlotPlan {
  /** Distinct deployment ids of the live entries, in boot-menu order. */
  order: string[];
  /** What the boot loader boots next without interaction. */
  default: string | null;
  booted: string | null;
  staged: string | null;
  rollback: string | null;
  /** The rest of `order`, in menu order. */
  others: string[];
  /** The default entry is not the booted deployment. */
  rollbackQueued: boolean;
}

/**
 * Assign slots (status.md §4): booted = the running deployment if an entry
 * names it; staged = the id in the staged marker if a live or staged entry
 * names it; rollback = the first remaining id of the live menu; the others
 * follow in menu order. rollbackQueued = (default ≠ booted), the same rule
 * for every boot loader and boot type (upstream gets it inverted for GRUB
 * Type 1 and for systemd-boot UKIs).
 *
 * `menu`: live entry ids in menu order (duplicates allowed: shared names);
 * `defaultIndex`: index in `menu` of the effective default (default 0);
 * `stagedMenu`: ids of the staged entries.
 */
export function planSlots(o: {
  menu: readonly string[];
  defaultIndex?: number | null;
  stagedMenu?: readonly string[];
  bootedId: string | null;
  stagedId: string | null;
}): SlotPlan {
  const order = [...new Set(o.menu)];
  const known = new Set([...o.menu, ...(o.stagedMenu ?? [])]);
  const booted = o.bootedId !== null && known.has(o.bootedId) ? o.bootedId : null;
  const staged = o.stagedId !== null && o.stagedId !== booted && known.has(o.stagedId) ? o.stagedId : null;
  const rest = order.filter((id) => id !== booted && id !== staged);
  const di = o.defaultIndex ?? 0;
  const def = o.menu[di] ?? null;
  return {
    order,
    default: def,
    booted,
    staged,
    rollback: rest[0] ?? null,
    others: rest.slice(1),
    rollbackQueued: booted !== null && def !== null && def !== booted,
  };
}

// ---- staging and rollback planners ----------------------------------------------------

/** osid of an entry: from its `bootc-<osid>-<n>` sort key, else its file name, else `fallback`. */
export function entryOsid(e: NamedEntry, fallback: string): string {
  const sk = e.entry.sortKey === null ? null : parseSortKey(e.entry.sortKey);
  if (sk !== null) return sk.osid;
  return parseEntryFileName(e.fileName)?.osid ?? fallback;
}

/**
 * The staged entry set of an upgrade/switch (bootc-composefs.md §4.2): the
 * new entry as primary, and the booted entry re-keyed as secondary with the
 * new image's osid. A boot counter on the booted entry's name is kept; with
 * `keepBootedFileName` (boot not blessed yet, finalize-and-boot-counting.md
 * §6.3) the booted entry keeps its exact file name. `newTries` puts a
 * counter (`+N`) on the new entry.
 */
export function planStagedEntries(o: { newEntry: BlsEntry; osid: string; booted: NamedEntry; keepBootedFileName?: boolean; newTries?: number | null }): NamedEntry[] {
  if (o.newEntry.version === null) throw new CfsError("new boot entry", "missing 'version'");
  const counter = o.newTries === null || o.newTries === undefined ? "" : `+${o.newTries}`;
  const primary: NamedEntry = {
    fileName: entryFileName(o.osid, o.newEntry.version, "primary", counter),
    entry: { ...o.newEntry, sortKey: sortKeyFor(o.osid, "primary") },
  };
  const bootedVersion = o.booted.entry.version;
  if (bootedVersion === null) throw new CfsError(o.booted.fileName, "missing 'version'");
  const keptCounter = parseCounter(o.booted.fileName)?.text ?? "";
  const secondary: NamedEntry = {
    fileName: o.keepBootedFileName ? o.booted.fileName : entryFileName(o.osid, bootedVersion, "secondary", keptCounter),
    entry: { ...o.booted.entry, sortKey: sortKeyFor(o.osid, "secondary") },
  };
  if (secondary.fileName === primary.fileName) throw new CfsError(primary.fileName, "new and booted entries would have the same file name");
  return [primary, secondary];
}

export interface RollbackPlan {
  /** The deployment that becomes the default. */
  target: string;
  /** true: the rollback was queued and is being reverted (booted becomes default again). */
  reverting: boolean;
  /** The complete new entry set (written to entries.staged, then exchanged). */
  entries: NamedEntry[];
}

/**
 * Rollback for BLS entries (Type 1 and systemd-boot UKI entries), for any
 * number of entries (upstream asserts exactly two). If the default is not the
 * booted deployment (rollback queued) the booted one becomes primary again;
 * otherwise the first other deployment in menu order does. The previous
 * default becomes secondary; every remaining entry is ranked after it
 * (sort-key `bootc-<osid>-2`, file name priority 0). Each entry keeps its own
 * osid (upstream hard-codes `bootc`) and its boot counter text; names in
 * `keepFileNames` are not renamed. Secondary file names that would collide
 * get `.<first 8 hex of the id>` appended to the version part.
 */
export function planRollback(o: {
  sorted: readonly NamedEntry[];
  defaultIndex?: number | null;
  bootedId: string;
  algorithm?: DigestAlgorithm;
  fallbackOsid?: string;
  keepFileNames?: ReadonlySet<string>;
}): RollbackPlan {
  const alg = o.algorithm ?? "sha512";
  const withIds = o.sorted.map((e) => ({ e, id: entryDeploymentId(e.entry, e.fileName, alg) }));
  if (!withIds.some((x) => x.id === o.bootedId)) throw new CfsError(`deployment ${o.bootedId}`, "the booted deployment has no boot entry");
  const def = withIds[o.defaultIndex ?? 0]!;
  const reverting = def.id !== o.bootedId;
  const targetId = reverting ? o.bootedId : withIds.find((x) => x.id !== o.bootedId)?.id;
  if (targetId === undefined) throw new CfsError("rollback", "no rollback available");
  const secondId = reverting ? def.id : o.bootedId;
  const rank = (id: string): number => (id === targetId ? 0 : id === secondId ? 1 : 2);
  const ordered = [...withIds].sort((a, b) => rank(a.id) - rank(b.id));
  const used = new Set<string>();
  const entries: NamedEntry[] = [];
  for (const { e, id } of ordered) {
    const r = rank(id);
    const osid = entryOsid(e, o.fallbackOsid ?? "bootc");
    const version = e.entry.version;
    if (version === null) throw new CfsError(e.fileName, "missing 'version'");
    const counter = parseCounter(e.fileName)?.text ?? "";
    const sortKey = `bootc-${osid}-${r}`;
    let fileName: string;
    if (o.keepFileNames?.has(e.fileName)) fileName = e.fileName;
    else {
      fileName = entryFileName(osid, version, r === 0 ? "primary" : "secondary", counter);
      if (used.has(fileName)) fileName = entryFileName(osid, `${version}.${id.slice(0, 8)}`, r === 0 ? "primary" : "secondary", counter);
    }
    if (used.has(fileName)) throw new CfsError(fileName, "two boot entries would have the same file name");
    used.add(fileName);
    entries.push({ fileName, entry: { ...e.entry, sortKey } });
  }
  return { target: targetId, reverting, entries };
}

// ---- GRUB user.cfg (UKIs with GRUB classic) --------------------------------------------

export interface GrubMenuEntry {
  title: string;
  insmod: string[];
  search: string;
  chainloader: string;
  /** Other commands in the body, in order (value "" for a bare word). */
  extra: [string, string][];
}

/** The start of grub2/user.cfg: sources the file holding the ESP's UUID. */
export const GRUB_USER_CFG_HEADER = "\nif [ -f ${config_directory}/efiuuid.cfg ]; then\n        source ${config_directory}/efiuuid.cfg\nfi\n";

/** grub2/efiuuid.cfg: `set EFI_PART_UUID="<uuid>"`, no trailing newline. */
export function formatEfiUuidCfg(uuid: string): string {
  if (!/^[0-9A-Za-z-]+$/.test(uuid)) throw new CfsError(`ESP UUID ${JSON.stringify(uuid)}`, "not a filesystem UUID");
  return `set EFI_PART_UUID="${uuid}"`;
}

/** The menu entry bootc writes for a UKI: `<label>: (<id>)`, chainloading it from the ESP. */
export function grubMenuEntryForUki(label: string, id: string): GrubMenuEntry {
  return {
    title: `${label}: (${id})`,
    insmod: ["fat", "chain"],
    search: '--no-floppy --set=root --fs-uuid "${EFI_PART_UUID}"',
    chainloader: ukiPathInEntry(id),
    extra: [],
  };
}

const escapeGrub = (s: string): string => s.replace(/[\\"$]/g, (c) => `\\${c}`);

export function formatGrubMenuEntry(e: GrubMenuEntry): string {
  if (e.title === "") throw new CfsError("GRUB menu entry", "empty title");
  const body: string[] = [];
  for (const v of [e.title, e.search, e.chainloader, ...e.insmod, ...e.extra.flat()]) {
    if (/[\n\r]/.test(v)) throw new CfsError("GRUB menu entry", `value ${JSON.stringify(v)} spans lines`);
  }
  for (const m of e.insmod) body.push(`insmod ${m}\n`);
  body.push(`search ${e.search}\n`);
  body.push(`chainloader ${e.chainloader}\n`);
  for (const [k, v] of e.extra) body.push(v === "" ? `${k}\n` : `${k} ${v}\n`);
  return `menuentry "${escapeGrub(e.title)}" {\n${body.join("")}}\n`;
}

/** user.cfg (or user.cfg.staged): header, then the entries in menu order (GRUB boots the first). */
export function formatGrubUserCfg(entries: readonly GrubMenuEntry[]): string {
  return GRUB_USER_CFG_HEADER + entries.map(formatGrubMenuEntry).join("");
}

/**
 * Parse the menu entries of a user.cfg. Text outside `menuentry` blocks is
 * skipped; nested `{}` in a body are allowed; `\x` in the title is unescaped.
 * Errors name the file and line.
 */
export function parseGrubUserCfg(text: string, fileName: string): GrubMenuEntry[] {
  const out: GrubMenuEntry[] = [];
  const lineAt = (pos: number): number => text.slice(0, pos).split("\n").length;
  const re = /(^|[\s;])menuentry\s+/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text)) !== null) {
    const start = m.index + m[1]!.length;
    let i = re.lastIndex;
    if (text[i] !== '"') throw new CfsError(`${fileName}: line ${lineAt(start)}`, "menuentry without a double-quoted title");
    i++;
    let title = "";
    while (i < text.length && text[i] !== '"') {
      if (text[i] === "\\" && i + 1 < text.length) {
        title += text[i + 1]!;
        i += 2;
      } else title += text[i++]!;
    }
    if (i >= text.length) throw new CfsError(`${fileName}: line ${lineAt(start)}`, "unterminated menuentry title");
    i++;
    while (i < text.length && /\s/.test(text[i]!)) i++;
    if (text[i] !== "{") throw new CfsError(`${fileName}: line ${lineAt(i)}`, "expected '{' after the menuentry title");
    const bodyStart = i + 1;
    let depth = 1;
    i = bodyStart;
    while (i < text.length && depth > 0) {
      const c = text[i]!;
      if (c === "\\") i += 2;
      else {
        if (c === "{") depth++;
        else if (c === "}") depth--;
        i++;
      }
    }
    if (depth > 0) throw new CfsError(`${fileName}: line ${lineAt(start)}`, "unterminated menuentry (missing '}')");
    const body = text.slice(bodyStart, i - 1);
    if (title === "") throw new CfsError(`${fileName}: line ${lineAt(start)}`, "menuentry with an empty title");
    const e: GrubMenuEntry = { title, insmod: [], search: "", chainloader: "", extra: [] };
    for (const raw of body.split("\n")) {
      const line = raw.trim();
      if (line === "" || line.startsWith("#")) continue;
      const sp = line.search(/\s/);
      const key = sp < 0 ? line : line.slice(0, sp);
      const value = sp < 0 ? "" : line.slice(sp).trim();
      if (key === "insmod") e.insmod.push(value);
      else if (key === "search") e.search = value;
      else if (key === "chainloader") e.chainloader = value;
      else e.extra.push([key, value]);
    }
    out.push(e);
    re.lastIndex = i;
  }
  return out;
}

/** The deployment a menu entry chainloads (the UKI's name without prefix and `.efi`). */
export function grubMenuEntryId(e: GrubMenuEntry, fileName: string): string {
  const name = lastComponent(e.chainloader);
  if (!name.endsWith(".efi")) throw new CfsError(fileName, `menuentry "${e.title}": chainloader ${JSON.stringify(e.chainloader)} does not end with .efi`);
  const stem = name.slice(0, -4);
  return stem.startsWith(ARTIFACT_PREFIX) ? stem.slice(ARTIFACT_PREFIX.length) : stem;
}
