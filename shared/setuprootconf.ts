// `/usr/lib/composefs/setup-root-conf.toml`: how the initramfs agent mounts
// the root, /etc and /var.
//
// Follows bootc `crates/initramfs/src/lib.rs` (`MountType` with the aliases
// `root` = none and `volatile` = transient, `MountConfig`, `Config`, and the
// `systemd.volatile=` rule in `setup_root`) and composefs-rs
// `crates/composefs-setup-root/src/main.rs` (same schema without aliases,
// default /etc = overlay); reference: initramfs.md §2.1, prepare-root.md §2.2.
//
//   [root]  transient = false
//   [etc]   mount = "bind" | "overlay" | "transient" | "none"  (+ aliases), transient = false
//   [var]   mount = …, transient = false
//   [composefs] allow-unenforced-object-verity = false   (cfsboot extension)
//
// Precedence per directory: `mount` if given; else `transient = true` →
// transient; else the default (cfsboot, like bootc: bind for both). A file
// that does not parse, or a value of the wrong type, is an error naming the
// file and line. Unknown keys are ignored (neither upstream refuses them)
// and listed so the caller can warn.

import { parse as parseToml, TomlError } from "smol-toml";
import { CfsError } from "./errors.ts";
import { findParam } from "./kargs.ts";

export type MountType = "none" | "bind" | "overlay" | "transient";

export interface DirConf {
  mount: MountType | null;
  transient: boolean;
}

export interface SetupRootConf {
  root: { transient: boolean };
  etc: DirConf;
  var: DirConf;
  /**
   * cfsboot extension (bootc ignores the section). `allowUnenforcedObjectVerity`:
   * a sealed boot (karg without `?`) on a kernel whose overlayfs cannot
   * enforce per-file fs-verity (no `verity=require`, Linux < 6.6) is refused
   * unless this is true; then only the image itself is verified.
   */
  composefs: { allowUnenforcedObjectVerity: boolean };
  /** Keys that were ignored, as `section.key`. */
  unknownKeys: string[];
}

export const SETUP_ROOT_CONF_PATH = "/usr/lib/composefs/setup-root-conf.toml";

export function defaultSetupRootConf(): SetupRootConf {
  return {
    root: { transient: false },
    etc: { mount: null, transient: false },
    var: { mount: null, transient: false },
    composefs: { allowUnenforcedObjectVerity: false },
    unknownKeys: [],
  };
}

const MOUNT_NAMES: Record<string, MountType> = { none: "none", root: "none", bind: "bind", overlay: "overlay", transient: "transient", volatile: "transient" };

/** Line (1-based) of `key` inside `[section]`, or of the section header, for messages. */
function lineOf(text: string, section: string, key: string | null): number | null {
  const lines = text.split("\n");
  let cur = "";
  let header: number | null = null;
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!.trim();
    const h = /^\[\s*"?([^\]"]+)"?\s*\]/.exec(l);
    if (h !== null) {
      cur = h[1]!.trim();
      if (cur === section && header === null) header = i + 1;
      continue;
    }
    const k = /^"?([A-Za-z0-9_-]+)"?\s*=/.exec(l);
    if (k === null) continue;
    if (key !== null && cur === section && k[1] === key) return i + 1;
    // dotted or inline forms: `etc.mount = …` at top level, `etc = { … }`
    if (cur === "" && (k[1] === section || l.startsWith(`${section}.`))) return i + 1;
  }
  return header;
}

export function parseSetupRootConf(text: string, fileName: string): SetupRootConf {
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(text) as Record<string, unknown>;
  } catch (e) {
    if (e instanceof TomlError) {
      throw new CfsError(`${fileName}: line ${e.line}`, e.message.split("\n")[0]!.replace(/^Invalid TOML document: /, ""));
    }
    throw new CfsError(fileName, e instanceof Error ? e.message : String(e));
  }
  const conf = defaultSetupRootConf();
  const where = (section: string, key: string | null): string => {
    const l = lineOf(text, section, key);
    return l === null ? fileName : `${fileName}: line ${l}`;
  };
  const table = (name: string): Record<string, unknown> | null => {
    const t = doc[name];
    if (t === undefined) return null;
    if (typeof t !== "object" || t === null || Array.isArray(t) || t instanceof Date) throw new CfsError(where(name, null), `'${name}' must be a table`);
    return t as Record<string, unknown>;
  };
  const bool = (section: string, t: Record<string, unknown>, key: string): boolean => {
    const v = t[key];
    if (v === undefined) return false;
    if (typeof v !== "boolean") throw new CfsError(where(section, key), `[${section}] ${key} must be true or false`);
    return v;
  };
  for (const key of Object.keys(doc)) if (!["root", "etc", "var", "composefs"].includes(key)) conf.unknownKeys.push(key);

  const root = table("root");
  if (root !== null) {
    conf.root.transient = bool("root", root, "transient");
    for (const k of Object.keys(root)) if (k !== "transient") conf.unknownKeys.push(`root.${k}`);
  }
  const cfs = table("composefs");
  if (cfs !== null) {
    conf.composefs.allowUnenforcedObjectVerity = bool("composefs", cfs, "allow-unenforced-object-verity");
    for (const k of Object.keys(cfs)) if (k !== "allow-unenforced-object-verity") conf.unknownKeys.push(`composefs.${k}`);
  }
  for (const name of ["etc", "var"] as const) {
    const t = table(name);
    if (t === null) continue;
    const m = t.mount;
    if (m !== undefined) {
      const mt = typeof m === "string" ? MOUNT_NAMES[m] : undefined;
      if (mt === undefined) {
        throw new CfsError(where(name, "mount"), `[${name}] mount: unknown mount type ${JSON.stringify(m)} (expected none, bind, overlay or transient; aliases root, volatile)`);
      }
      conf[name].mount = mt;
    }
    conf[name].transient = bool(name, t, "transient");
    for (const k of Object.keys(t)) if (k !== "mount" && k !== "transient") conf.unknownKeys.push(`${name}.${k}`);
  }
  return conf;
}

export interface EffectiveMounts {
  /** A tmpfs overlay over the whole composefs root. */
  rootTransient: boolean;
  etc: MountType;
  var: MountType;
}

/**
 * The mount types the agent applies. `conf` null = no file (all defaults).
 * `systemd.volatile=state` or `=overlay` on the command line turns /var into
 * `none` (left for systemd's volatile /var) unless `[var]` sets `mount` or
 * `transient`.
 */
export function effectiveMounts(
  conf: SetupRootConf | null,
  cmdline: readonly string[],
  defaults: { etc: MountType; var: MountType } = { etc: "bind", var: "bind" },
): EffectiveMounts {
  const c = conf ?? defaultSetupRootConf();
  const pick = (d: DirConf, dflt: MountType): MountType => d.mount ?? (d.transient ? "transient" : dflt);
  let varType = pick(c.var, defaults.var);
  const volatile = findParam(cmdline, "systemd.volatile")?.value;
  if ((volatile === "state" || volatile === "overlay") && c.var.mount === null && !c.var.transient) varType = "none";
  return { rootTransient: c.root.transient, etc: pick(c.etc, defaults.etc), var: varType };
}
