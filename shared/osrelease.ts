// os-release(5) parsing and bootc's naming rules derived from it.
//
// Follows composefs-rs `crates/composefs-boot/src/os_release.rs` (the dequote
// rules and the PRETTY_NAME/NAME/ID and VERSION_ID/VERSION fallbacks) and
// bootc `crates/lib/src/bootc_composefs/boot.rs` `parse_os_release` (osid =
// ID, default "bootc"); reference: bootc-composefs.md §4.2, §4.3.
//
// Value syntax (shell-like subset): unquoted text is literal; "…" takes the
// next character literally after a backslash; '…' is fully literal; quoted
// and unquoted pieces concatenate. An unterminated quote makes the value
// invalid: it is reported and treated as absent (composefs-rs does the same).

export interface OsRelease {
  /** Key → dequoted value. A key given twice keeps its last value. */
  values: Map<string, string>;
  /** Lines that could not be understood (1-based), for warnings. */
  invalid: { line: number; text: string; why: string }[];
}

/** Dequote one value, or null when a quote is not closed. */
export function dequoteOsReleaseValue(raw: string): string | null {
  const s = raw.trim();
  let out = "";
  let i = 0;
  while (i < s.length) {
    const c = s[i]!;
    if (c === '"') {
      i++;
      for (;;) {
        if (i >= s.length) return null;
        const d = s[i]!;
        if (d === '"') {
          i++;
          break;
        }
        if (d === "\\") {
          if (i + 1 >= s.length) return null;
          out += s[i + 1]!;
          i += 2;
          continue;
        }
        out += d;
        i++;
      }
    } else if (c === "'") {
      const end = s.indexOf("'", i + 1);
      if (end < 0) return null;
      out += s.slice(i + 1, end);
      i = end + 1;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

export function parseOsRelease(text: string): OsRelease {
  const values = new Map<string, string>();
  const invalid: OsRelease["invalid"] = [];
  text.split("\n").forEach((line0, idx) => {
    const line = line0.replace(/\r$/, "");
    const t = line.trim();
    if (t === "" || t.startsWith("#")) return;
    const eq = line.indexOf("=");
    if (eq < 0) {
      invalid.push({ line: idx + 1, text: line, why: "no '='" });
      return;
    }
    const key = line.slice(0, eq).trim();
    const value = dequoteOsReleaseValue(line.slice(eq + 1));
    if (key === "" || value === null) {
      invalid.push({ line: idx + 1, text: line, why: key === "" ? "empty key" : "unterminated quote" });
      return;
    }
    values.set(key, value);
  });
  return { values, invalid };
}

/** The first of `keys` that is present. */
export function osReleaseValue(os: OsRelease | null, keys: readonly string[]): string | null {
  if (os === null) return null;
  for (const k of keys) {
    const v = os.values.get(k);
    if (v !== undefined) return v;
  }
  return null;
}

/** PRETTY_NAME, NAME or ID, whichever comes first. */
export const osPrettyName = (os: OsRelease | null): string | null => osReleaseValue(os, ["PRETTY_NAME", "NAME", "ID"]);
/** VERSION_ID or VERSION, whichever comes first. */
export const osVersion = (os: OsRelease | null): string | null => osReleaseValue(os, ["VERSION_ID", "VERSION"]);
/** bootc's osid: ID, else "bootc" (also without an os-release file). */
export const osId = (os: OsRelease | null): string => osReleaseValue(os, ["ID"]) ?? "bootc";

/**
 * BLS Type 1 entry title and version for a deployment: title = PRETTY_NAME |
 * NAME | ID | the deployment id; version = VERSION_ID | VERSION | the id.
 */
export function blsTitleVersion(os: OsRelease | null, deploymentId: string): { title: string; version: string; osid: string } {
  return { title: osPrettyName(os) ?? deploymentId, version: osVersion(os) ?? deploymentId, osid: osId(os) };
}

/**
 * The Boot Loader Specification label of a UKI (from its `.osrel`): the
 * pretty name, then " <version>" when a version exists; null without a name.
 */
export function bootLabel(os: OsRelease | null): string | null {
  const name = osPrettyName(os);
  if (name === null) return null;
  const v = osVersion(os);
  return v === null ? name : `${name} ${v}`;
}
