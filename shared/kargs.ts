// Kernel command line: splitting, parameters, the composefs karg, kargs.d.
//
// Follows (formats and behaviour, not code):
// - composefs-rs `crates/composefs-boot/src/cmdline.rs` — splitting, the
//   `composefs=` / `composefs.digest=` forms and their precedence;
// - bootc-dev/linux-kernel-cmdline `src/bytes.rs` — parameter equality (keys
//   compare with `-` == `_`, values dequoted), `add` (append unless an
//   identical parameter exists) and `remove_exact`;
// - bootc `crates/lib/src/bootc_kargs.rs` — `usr/lib/bootc/kargs.d/*.toml`
//   and the upgrade diff;
// - reference: bootc-composefs.md §1, initramfs.md §3 step 1.
//
// Pure: strings in, values out. Every expected failure is a CfsError naming
// the karg or file (and line) it is about.

import { parse as parseToml, TomlError } from "smol-toml";
import { CfsError } from "./errors.ts";

// ---- splitting and joining -----------------------------------------------------

const isSpace = (c: string): boolean => c === " " || c === "\t" || c === "\n" || c === "\r" || c === "\f" || c === "\v";

/**
 * Split a command line the way the kernel does: on ASCII whitespace outside
 * double quotes; a `"` toggles quoting; there is no escaping; quotes stay
 * part of the token. Empty tokens are dropped.
 */
export function splitCmdline(cmdline: string): string[] {
  const out: string[] = [];
  let cur = "";
  let quoted = false;
  for (const c of cmdline) {
    if (c === '"') quoted = !quoted;
    if (!quoted && isSpace(c)) {
      if (cur !== "") out.push(cur);
      cur = "";
    } else {
      cur += c;
    }
  }
  if (cur !== "") out.push(cur);
  return out;
}

/** True when `token` survives a join + split unchanged (one token, no NUL/newline). */
function roundTrips(token: string): boolean {
  const t = splitCmdline(token);
  return t.length === 1 && t[0] === token && !/[\0\n\r]/.test(token);
}

/**
 * Join arguments with single spaces. An argument with whitespace outside
 * quotes is quoted (`key="a b"`, or `"a b"` without `=`); one that cannot be
 * represented on a kernel command line is refused.
 */
export function joinCmdline(args: readonly string[]): string {
  return args
    .map((a) => {
      if (a === "") throw new CfsError("kernel argument", "empty argument");
      if (roundTrips(a)) return a;
      if (!a.includes('"') && !/[\0\n\r]/.test(a)) {
        const eq = a.indexOf("=");
        const quoted = eq > 0 ? `${a.slice(0, eq + 1)}"${a.slice(eq + 1)}"` : `"${a}"`;
        if (roundTrips(quoted)) return quoted;
      }
      throw new CfsError(`kernel argument ${JSON.stringify(a)}`, "cannot be written on a kernel command line");
    })
    .join(" ");
}

// ---- parameters ------------------------------------------------------------------

export interface Param {
  /** The token as it appears on the command line (quotes included). */
  raw: string;
  /** Key, with only a leading `"` removed (the kernel's own rule). */
  key: string;
  /** Dequoted value, or null for a flag without `=`. */
  value: string | null;
}

/** Parse one token into key and value (linux-kernel-cmdline semantics). */
export function parseParam(raw: string): Param {
  let s = raw.startsWith('"') ? raw.slice(1) : raw;
  if (s.endsWith('"')) s = s.slice(0, -1);
  const eq = s.indexOf("=");
  if (eq < 0) return { raw, key: s, value: null };
  let value = s.slice(eq + 1);
  if (value.startsWith('"')) value = value.slice(1);
  return { raw, key: s.slice(0, eq), value };
}

const canonKey = (k: string): string => k.replaceAll("-", "_");

/** Keys compare with `-` and `_` equivalent; values compare dequoted and exactly. */
export function paramEquals(a: string | Param, b: string | Param): boolean {
  const pa = typeof a === "string" ? parseParam(a) : a;
  const pb = typeof b === "string" ? parseParam(b) : b;
  return canonKey(pa.key) === canonKey(pb.key) && pa.value === pb.value;
}

/** The first parameter with this key (`-`/`_` equivalent), or null. */
export function findParam(args: readonly string[], key: string): Param | null {
  const k = canonKey(key);
  for (const a of args) {
    const p = parseParam(a);
    if (canonKey(p.key) === k) return p;
  }
  return null;
}

/** Append `arg` unless an identical parameter is already present (bootc `Cmdline::add`). */
export function addArg(args: readonly string[], arg: string): string[] {
  if (args.some((a) => paramEquals(a, arg))) return [...args];
  return [...args, arg];
}

/** Remove every parameter identical to `arg` (bootc `Cmdline::remove_exact`). */
export function removeArg(args: readonly string[], arg: string): string[] {
  return args.filter((a) => !paramEquals(a, arg));
}

/** Remove every parameter with this key (`-`/`_` equivalent). */
export function removeKey(args: readonly string[], key: string): string[] {
  const k = canonKey(key);
  return args.filter((a) => canonKey(parseParam(a).key) !== k);
}

/**
 * Drop the arguments a boot loader adds by itself, so that command lines read
 * from /proc/cmdline compare with the ones written into entries:
 * systemd-boot prepends `initrd=\<path>` for each initrd of a Type 1 entry,
 * GRUB prepends `BOOT_IMAGE=<path>`.
 */
export function withoutLoaderArgs(args: readonly string[]): string[] {
  return args.filter((a) => {
    const p = parseParam(a);
    if (p.key === "initrd" && p.value !== null && p.value.startsWith("\\")) return false;
    if (p.key === "BOOT_IMAGE") return false;
    return true;
  });
}

// ---- the composefs karg ---------------------------------------------------------------

export type DigestAlgorithm = "sha256" | "sha512";

export const HEX_LENGTH: Record<DigestAlgorithm, number> = { sha256: 64, sha512: 128 };

/** What names the image to boot. `version` 1 = V0/V1 (C-compatible) EROFS, 2 = V2. */
export interface ComposefsKarg {
  version: 1 | 2;
  algorithm: DigestAlgorithm;
  /** Lower-case hex of the image's fs-verity digest. */
  digest: string;
  /** `?` given: fs-verity is optional for this boot. */
  insecure: boolean;
  /** The spelling: `composefs=` (V2 only) or `composefs.digest=`. */
  form: "composefs" | "composefs.digest";
}

const KEY_V2 = "composefs=";
const KEY_DIGEST = "composefs.digest=";

/**
 * Validate a bare hex digest (a deployment id, a mount source, a user
 * argument) for `algorithm`. Upper case is accepted and returned lower-cased.
 */
export function parseDigestHex(hex: string, algorithm: DigestAlgorithm, input: string): string {
  const want = HEX_LENGTH[algorithm];
  if (!/^[0-9a-fA-F]*$/.test(hex)) throw new CfsError(input, `not a hex digest: ${JSON.stringify(hex)}`);
  if (hex.length !== want) {
    throw new CfsError(input, `expected ${want} hex digits for ${algorithm}, got ${hex.length}`);
  }
  return hex.toLowerCase();
}

interface Descriptor {
  version: 1 | 2;
  algorithm: DigestAlgorithm;
  hex: string;
}

/** `v1-sha512-12:<hex>` → descriptor; errors name the karg token. */
function parseDescriptor(value: string, token: string): Descriptor {
  const colon = value.indexOf(":");
  if (colon < 0) throw new CfsError(token, "expected '<version>-<hash>-<blocksize>:<hex>'");
  const desc = value.slice(0, colon);
  const hex = value.slice(colon + 1);
  const parts = desc.split("-");
  if (parts.length !== 3) throw new CfsError(token, `expected 'v<N>-<hash>-<blocksize>', got '${desc}'`);
  const [v, hash, lg] = parts as [string, string, string];
  if (!/^v[0-9]+$/.test(v)) throw new CfsError(token, `expected a format version 'v<N>', got '${v}'`);
  if (v !== "v1" && v !== "v2") throw new CfsError(token, `unsupported format version '${v}'`);
  if (hash !== "sha256" && hash !== "sha512") throw new CfsError(token, `unsupported hash '${hash}'`);
  if (lg !== "12") throw new CfsError(token, `unsupported block size '${lg}' (only 12, 4096 bytes, is supported)`);
  return { version: v === "v1" ? 1 : 2, algorithm: hash, hex };
}

/**
 * Find the image named on a command line, with composefs-rs precedence for a
 * repository using `algorithm`:
 *   1. the first `composefs.digest=[?]vN-<alg>-12:<hex>` whose hash is
 *      `algorithm` (tokens with another hash are skipped; an unknown version
 *      or a malformed value is an error, even when it would be skipped);
 *   2. otherwise the first `composefs=[?]<hex>` (a V2 image).
 * The hex must have the algorithm's length. Tokens of the same kind that
 * disagree (two `composefs=` with different digests, or two
 * `composefs.digest=` with the same version and hash) are an error.
 * Returns null when no composefs karg is present.
 */
export function parseComposefsKarg(cmdline: string | readonly string[], algorithm: DigestAlgorithm): ComposefsKarg | null {
  const tokens = typeof cmdline === "string" ? splitCmdline(cmdline) : cmdline;
  let chosen: ComposefsKarg | null = null;
  const seen = new Map<string, { karg: ComposefsKarg; token: string }>();
  const remember = (kind: string, karg: ComposefsKarg, token: string): void => {
    const prev = seen.get(kind);
    if (prev === undefined) {
      seen.set(kind, { karg, token });
    } else if (prev.karg.digest !== karg.digest || prev.karg.insecure !== karg.insecure) {
      throw new CfsError(token, `conflicts with ${prev.token}`);
    }
  };

  for (const token of tokens) {
    if (!token.startsWith(KEY_DIGEST)) continue;
    let value = token.slice(KEY_DIGEST.length);
    const insecure = value.startsWith("?");
    if (insecure) value = value.slice(1);
    const d = parseDescriptor(value, token);
    if (d.algorithm !== algorithm) continue;
    const digest = parseDigestHex(d.hex, algorithm, token);
    const karg: ComposefsKarg = { version: d.version, algorithm, digest, insecure, form: "composefs.digest" };
    remember(`digest-v${d.version}`, karg, token);
    chosen ??= karg;
  }
  if (chosen !== null) return chosen;

  for (const token of tokens) {
    if (!token.startsWith(KEY_V2)) continue;
    let value = token.slice(KEY_V2.length);
    const insecure = value.startsWith("?");
    if (insecure) value = value.slice(1);
    const digest = parseDigestHex(value, algorithm, token);
    const karg: ComposefsKarg = { version: 2, algorithm, digest, insecure, form: "composefs" };
    remember("v2", karg, token);
    chosen ??= karg;
  }
  return chosen;
}

/**
 * The karg for an image: `composefs.digest=[?]v1-<alg>-12:<hex>` for V0/V1
 * images, `composefs=[?]<hex>` for V2 images (composefs-rs
 * `make_cmdline_composefs`).
 */
export function formatComposefsKarg(k: { version: 1 | 2; algorithm: DigestAlgorithm; digest: string; insecure: boolean }): string {
  const digest = parseDigestHex(k.digest, k.algorithm, "composefs digest");
  const q = k.insecure ? "?" : "";
  return k.version === 1 ? `${KEY_DIGEST}${q}v1-${k.algorithm}-12:${digest}` : `${KEY_V2}${q}${digest}`;
}

const isComposefsToken = (t: string): boolean => t.startsWith(KEY_V2) || t.startsWith(KEY_DIGEST);

/**
 * Replace whichever composefs karg(s) are present with `karg` (at the place of
 * the first one; every other `composefs=`/`composefs.digest=` token is
 * removed), or append it when none is present.
 */
export function setComposefsKarg(args: readonly string[], karg: string): string[] {
  if (!isComposefsToken(karg)) throw new CfsError(karg, "not a composefs karg");
  const out: string[] = [];
  let placed = false;
  for (const a of args) {
    if (isComposefsToken(a)) {
      if (!placed) out.push(karg);
      placed = true;
    } else {
      out.push(a);
    }
  }
  if (!placed) out.push(karg);
  return out;
}

/** Every argument except the composefs ones (for "equal ignoring composefs=" comparisons). */
export function withoutComposefsKargs(args: readonly string[]): string[] {
  return args.filter((a) => !isComposefsToken(a));
}

/**
 * The source of the `/` mount on a composefs-booted host: `composefs:<hex>`
 * (normal boot) or `transient:composefs=<hex>` (transient root). Anything else
 * is an error ("Root not mounted using composefs").
 */
export function parseRootMountSource(source: string, algorithm: DigestAlgorithm): { digest: string; transient: boolean } {
  let hex: string;
  let transient: boolean;
  if (source.startsWith("composefs:")) {
    hex = source.slice("composefs:".length);
    transient = false;
  } else if (source.startsWith("transient:composefs=")) {
    hex = source.slice("transient:composefs=".length);
    transient = true;
  } else {
    throw new CfsError(`root mount source ${JSON.stringify(source)}`, "root not mounted using composefs");
  }
  return { digest: parseDigestHex(hex, algorithm, `root mount source ${JSON.stringify(source)}`), transient };
}

// ---- kargs.d -------------------------------------------------------------------

/** Where images ship their kernel arguments. */
export const KARGS_D = "usr/lib/bootc/kargs.d";

export interface KargsFile {
  kargs: string[];
  /** Rust architecture names, or null when the file applies everywhere. */
  matchArchitectures: string[] | null;
}

/** The line a TOML key is defined on (1-based), for error messages. */
function lineOfKey(text: string, key: string): number | null {
  const lines = text.split("\n");
  const re = new RegExp(`^\\s*(?:${key.replace(/[.*+?^${}()|[\]\\-]/g, "\\$&")}|"${key}")\\s*=`);
  for (let i = 0; i < lines.length; i++) if (re.test(lines[i]!)) return i + 1;
  return null;
}

function tomlError(fileName: string, e: unknown): CfsError {
  if (e instanceof TomlError) {
    const first = e.message.split("\n")[0]!.replace(/^Invalid TOML document: /, "");
    return new CfsError(`${fileName}: line ${e.line}`, first);
  }
  return new CfsError(fileName, e instanceof Error ? e.message : String(e));
}

/**
 * Parse one kargs.d file (bootc format):
 *   kargs = ["rw", "console=ttyS0"]
 *   match-architectures = ["x86_64", "aarch64"]   # optional
 * `kargs` is required; any other key is an error naming the file.
 */
export function parseKargsToml(text: string, fileName: string): KargsFile {
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(text) as Record<string, unknown>;
  } catch (e) {
    throw tomlError(fileName, e);
  }
  const at = (key: string): string => {
    const line = lineOfKey(text, key);
    return line === null ? fileName : `${fileName}: line ${line}`;
  };
  for (const key of Object.keys(doc)) {
    if (key !== "kargs" && key !== "match-architectures") throw new CfsError(at(key), `unknown key '${key}'`);
  }
  const strings = (key: string): string[] | null => {
    const v = doc[key];
    if (v === undefined) return null;
    if (!Array.isArray(v) || !v.every((x) => typeof x === "string")) {
      throw new CfsError(at(key), `'${key}' must be an array of strings`);
    }
    return v as string[];
  };
  const kargs = strings("kargs");
  if (kargs === null) throw new CfsError(fileName, "missing key 'kargs'");
  return { kargs, matchArchitectures: strings("match-architectures") };
}

/** Node's `process.arch` → Rust's `std::env::consts::ARCH` (the names kargs.d uses). */
export function rustArch(nodeArch: string): string {
  const map: Record<string, string> = {
    x64: "x86_64",
    arm64: "aarch64",
    arm: "arm",
    ia32: "x86",
    s390x: "s390x",
    ppc64: "powerpc64",
    riscv64: "riscv64",
    loong64: "loongarch64",
    mips: "mips",
    mipsel: "mips",
  };
  return map[nodeArch] ?? nodeArch;
}

/**
 * The combined kernel arguments of a kargs.d directory for `arch` (a Rust
 * architecture name): files ending in `.toml`, in byte order of their names,
 * skipping files whose `match-architectures` excludes `arch`. Like bootc the
 * strings are joined and re-split, so one string may hold several arguments,
 * and an argument already collected is not added twice.
 */
export function kargsFromFiles(files: readonly { name: string; text: string }[], arch: string): string[] {
  let out: string[] = [];
  const sorted = files.filter((f) => f.name.endsWith(".toml") && f.name.length > ".toml".length).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const f of sorted) {
    const parsed = parseKargsToml(f.text, f.name);
    if (parsed.matchArchitectures !== null && !parsed.matchArchitectures.includes(arch)) continue;
    for (const a of splitCmdline(parsed.kargs.join(" "))) out = addArg(out, a);
  }
  return out;
}

export interface KargsDiff {
  /** In the old kargs.d set, not in the new one (exact parameter comparison). */
  removed: string[];
  /** In the new kargs.d set, not in the old one. */
  added: string[];
}

/** The upgrade diff between the running root's kargs.d set and the target's. */
export function kargsDiff(oldSet: readonly string[], newSet: readonly string[]): KargsDiff {
  return {
    removed: oldSet.filter((o) => !newSet.some((n) => paramEquals(o, n))),
    added: newSet.filter((n) => !oldSet.some((o) => paramEquals(o, n))),
  };
}

/**
 * Apply a kargs.d diff to a command line: remove each removed argument by
 * exact match, then append each added one unless an identical one is present.
 * Arguments the user added are untouched. At install the old set is empty.
 */
export function applyKargsDiff(args: readonly string[], diff: KargsDiff): string[] {
  let out = [...args];
  for (const r of diff.removed) out = removeArg(out, r);
  for (const a of diff.added) out = addArg(out, a);
  return out;
}
