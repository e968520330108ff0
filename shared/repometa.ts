// The repository's `meta.json`: parse, validate, format.
//
// Follows composefs-rs `crates/composefs/src/repository.rs` (`RepoMetadata`,
// `FeatureFlags::check`, `format_config`, `new_with_formats`, `to_json`) and
// `erofs/format.rs` (`FormatConfig`); reference: repository.md §3.
//
//   {
//     "version": 1,
//     "algorithm": "fsverity-sha512-12",
//     "features": {
//       "compatible": [],
//       "read-only-compatible": [
//         "v1_erofs"
//       ],
//       "incompatible": []
//     },
//     "erofs_formats": {
//       "default": 1
//     }
//   }
//
// Rules (both the host tool and the initramfs agent use this module):
// - `version` greater than REPO_FORMAT_VERSION → refused;
// - an unknown `incompatible` feature → refused;
// - an unknown `read-only-compatible` feature → the repository may be read
//   but not written (`openMode` says "ro");
// - unknown `compatible` features and unknown top-level fields are ignored
//   (serde's default; they are not written back);
// - missing `features` or feature arrays are empty; a missing
//   `erofs_formats` is `{"default": 2}` (repositories made before the field
//   existed), and `effectiveFormats` applies the `v1_erofs` fallback.
//
// `formatRepoMeta` writes the exact bytes serde_json's pretty printer does
// (2-space indent, `": "`, empty arrays as `[]`, `extra` omitted when empty,
// one trailing newline), so a repository initialised by cfsboot is
// byte-identical to one initialised by `cfsctl init`.
//
// Pure: bytes in, values out. Whether the repository is *secure* is not in
// the file: it is whether meta.json itself has fs-verity (repository.md §3.4),
// which the caller measures.

import { CfsError } from "./errors.ts";
import { type HashAlg, algName, parseAlgName } from "./fsverity.ts";

/** The repository format version this code understands. */
export const REPO_FORMAT_VERSION = 1;

/** The file name inside the repository directory. */
export const REPO_META_FILENAME = "meta.json";

/** The read-only-compatible flag written when the default EROFS format is V1. */
export const FEATURE_V1_EROFS = "v1_erofs";

/** Feature flags this code understands, per class. */
export const KNOWN_FEATURES: Readonly<{ compatible: readonly string[]; readOnlyCompatible: readonly string[]; incompatible: readonly string[] }> = {
  compatible: [],
  readOnlyCompatible: [FEATURE_V1_EROFS],
  incompatible: [],
};

/** composefs EROFS format versions (erofs.md): 0/1 = C mkcomposefs compatible, 2 = legacy composefs-rs. */
export type ErofsVersion = 0 | 1 | 2;

export interface ErofsFormats {
  /** The version new images are written in; it gets the named refs. */
  default: ErofsVersion;
  /** Further versions generated alongside, sorted, without duplicates. */
  extra: ErofsVersion[];
}

export interface RepoFeatures {
  compatible: string[];
  readOnlyCompatible: string[];
  incompatible: string[];
}

export interface RepoMeta {
  /** Repository format version (≤ REPO_FORMAT_VERSION after parsing). */
  version: number;
  /** The fs-verity hash of every object (block size 4096). */
  algorithm: HashAlg;
  features: RepoFeatures;
  /** As stored; `{default: 2, extra: []}` when the field is absent. Use `effectiveFormats`. */
  erofsFormats: ErofsFormats;
}

/** What a caller may do with a repository: read and write, or only read. */
export type OpenMode = "rw" | "ro";

const LEGACY_FORMATS: ErofsFormats = { default: 2, extra: [] };

function sortedFormats(default_: ErofsVersion, extra: readonly ErofsVersion[]): ErofsFormats {
  return { default: default_, extra: [...new Set(extra)].sort((a, b) => a - b) };
}

/**
 * Metadata for a new repository (`cfsctl init`): version 1, no features
 * except `v1_erofs` when the default format is V1. Default format: V1.
 */
export function newRepoMeta(algorithm: HashAlg, formats: ErofsVersion | { default: ErofsVersion; extra?: readonly ErofsVersion[] } = 1): RepoMeta {
  const f = typeof formats === "number" ? sortedFormats(formats, []) : sortedFormats(formats.default, formats.extra ?? []);
  return {
    version: REPO_FORMAT_VERSION,
    algorithm,
    features: { compatible: [], readOnlyCompatible: f.default === 1 ? [FEATURE_V1_EROFS] : [], incompatible: [] },
    erofsFormats: f,
  };
}

// ---- parsing ----------------------------------------------------------------------

const fatalUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "object") return "an object";
  if (typeof v === "string") return `the string ${JSON.stringify(v)}`;
  return `${typeof v} ${JSON.stringify(v)}`;
}

function u32(v: unknown, input: string, field: string): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw new CfsError(`${input}: field ${field}`, `expected an unsigned 32-bit integer, found ${typeName(v)}`);
  }
  return v;
}

function strings(v: unknown, input: string, field: string): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw new CfsError(`${input}: field ${field}`, `expected an array of strings, found ${typeName(v)}`);
  return v.map((s, i) => {
    if (typeof s !== "string") throw new CfsError(`${input}: field ${field}[${i}]`, `expected a string, found ${typeName(s)}`);
    return s;
  });
}

function erofsVersion(v: unknown, input: string, field: string): ErofsVersion {
  if (v === 0 || v === 1 || v === 2) return v;
  throw new CfsError(`${input}: field ${field}`, `unknown EROFS format version ${typeName(v)} (expected 0, 1 or 2)`);
}

/**
 * Parse and check `meta.json`. `input` names the file in errors (e.g.
 * `/sysroot/composefs/meta.json`). Refuses: invalid UTF-8 or JSON, wrong
 * field types, an unknown algorithm, `version` > 1, unknown incompatible
 * features. Unknown read-only-compatible features parse (see `openMode`).
 */
export function parseRepoMeta(data: Uint8Array | string, input: string): RepoMeta {
  let text: string;
  if (typeof data === "string") {
    text = data;
  } else {
    try {
      text = fatalUtf8.decode(data);
    } catch {
      throw new CfsError(input, "not valid UTF-8");
    }
  }
  if (text.trim() === "") throw new CfsError(input, "empty file (expected the repository's JSON metadata)");
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    const msg = e instanceof Error ? e.message.replace(/^JSON Parse error: /, "") : String(e);
    throw new CfsError(input, `not valid JSON: ${msg}`);
  }
  if (!isObject(doc)) throw new CfsError(input, `expected a JSON object, found ${typeName(doc)}`);

  if (doc.version === undefined) throw new CfsError(input, "missing field version");
  const version = u32(doc.version, input, "version");
  if (version > REPO_FORMAT_VERSION) {
    throw new CfsError(`${input}: field version`, `unsupported repository format version ${version} (this cfsboot supports up to ${REPO_FORMAT_VERSION})`);
  }

  if (doc.algorithm === undefined) throw new CfsError(input, "missing field algorithm");
  if (typeof doc.algorithm !== "string") throw new CfsError(`${input}: field algorithm`, `expected a string, found ${typeName(doc.algorithm)}`);
  let algorithm: HashAlg;
  try {
    algorithm = parseAlgName(doc.algorithm);
  } catch (e) {
    if (e instanceof CfsError) throw new CfsError(`${input}: field algorithm`, `${JSON.stringify(doc.algorithm)}: ${e.what}`);
    throw e;
  }

  const features: RepoFeatures = { compatible: [], readOnlyCompatible: [], incompatible: [] };
  if (doc.features !== undefined) {
    if (!isObject(doc.features)) throw new CfsError(`${input}: field features`, `expected an object, found ${typeName(doc.features)}`);
    features.compatible = strings(doc.features.compatible, input, "features.compatible");
    features.readOnlyCompatible = strings(doc.features["read-only-compatible"], input, "features.read-only-compatible");
    features.incompatible = strings(doc.features.incompatible, input, "features.incompatible");
  }
  const unknownIncompat = features.incompatible.filter((f) => !KNOWN_FEATURES.incompatible.includes(f));
  if (unknownIncompat.length > 0) {
    throw new CfsError(
      `${input}: field features.incompatible`,
      `repository requires unknown incompatible feature${unknownIncompat.length > 1 ? "s" : ""} ${unknownIncompat.map((f) => JSON.stringify(f)).join(", ")} (a newer tool wrote it; refusing to use it)`,
    );
  }

  let erofsFormats = LEGACY_FORMATS;
  if (doc.erofs_formats !== undefined) {
    const ef = doc.erofs_formats;
    if (!isObject(ef)) throw new CfsError(`${input}: field erofs_formats`, `expected an object, found ${typeName(ef)}`);
    if (ef.default === undefined) throw new CfsError(`${input}: field erofs_formats`, "missing field default");
    const def = erofsVersion(ef.default, input, "erofs_formats.default");
    let extra: ErofsVersion[] = [];
    if (ef.extra !== undefined) {
      if (!Array.isArray(ef.extra)) throw new CfsError(`${input}: field erofs_formats.extra`, `expected an array, found ${typeName(ef.extra)}`);
      extra = ef.extra.map((v, i) => erofsVersion(v, input, `erofs_formats.extra[${i}]`));
    }
    erofsFormats = sortedFormats(def, extra);
  }
  return { version, algorithm, features, erofsFormats };
}

// ---- policy ---------------------------------------------------------------------------

/** Features of `meta` this code does not know, per class (incompatible is always empty after parsing). */
export function unknownFeatures(meta: RepoMeta): RepoFeatures {
  return {
    compatible: meta.features.compatible.filter((f) => !KNOWN_FEATURES.compatible.includes(f)),
    readOnlyCompatible: meta.features.readOnlyCompatible.filter((f) => !KNOWN_FEATURES.readOnlyCompatible.includes(f)),
    incompatible: meta.features.incompatible.filter((f) => !KNOWN_FEATURES.incompatible.includes(f)),
  };
}

/** "ro" when the repository has read-only-compatible features this code does not know. */
export function openMode(meta: RepoMeta): OpenMode {
  return unknownFeatures(meta).readOnlyCompatible.length > 0 ? "ro" : "rw";
}

/**
 * Refuse a write to a repository opened read-only: names the unknown
 * features. `input` is the repository path.
 */
export function requireWritable(meta: RepoMeta, input: string): void {
  const unknown = unknownFeatures(meta).readOnlyCompatible;
  if (unknown.length > 0) {
    throw new CfsError(input, `repository is read-only for this cfsboot: unknown read-only-compatible feature${unknown.length > 1 ? "s" : ""} ${unknown.map((f) => JSON.stringify(f)).join(", ")}`);
  }
}

/** Refuse a repository whose algorithm is not `expected` (e.g. a karg's or a `--hash` option's). */
export function requireAlgorithm(meta: RepoMeta, expected: HashAlg, input: string): void {
  if (meta.algorithm !== expected) {
    throw new CfsError(input, `repository algorithm ${algName(meta.algorithm)} does not match expected ${algName(expected)}`);
  }
}

/**
 * The EROFS formats the repository produces (composefs-rs `format_config`):
 * `erofs_formats` when it differs from `{"default": 2}`; otherwise V1 when
 * `read-only-compatible` lists `v1_erofs`; otherwise V2.
 */
export function effectiveFormats(meta: RepoMeta): ErofsFormats {
  const f = meta.erofsFormats;
  if (f.default !== 2 || f.extra.length > 0) return { default: f.default, extra: [...f.extra] };
  if (meta.features.readOnlyCompatible.includes(FEATURE_V1_EROFS)) return { default: 1, extra: [] };
  return { default: 2, extra: [] };
}

/** Every version `effectiveFormats` yields, default first then the extras (without a duplicate of the default). */
export function formatVersions(meta: RepoMeta): ErofsVersion[] {
  const f = effectiveFormats(meta);
  return [f.default, ...f.extra.filter((v) => v !== f.default)];
}

// ---- formatting -----------------------------------------------------------------------

/** The exact bytes `cfsctl`/composefs-rs write for this metadata (serde_json pretty + "\n"). */
export function formatRepoMeta(meta: RepoMeta): Uint8Array {
  const formats: { default: number; extra?: number[] } = { default: meta.erofsFormats.default };
  const extra = [...new Set(meta.erofsFormats.extra)].sort((a, b) => a - b);
  if (extra.length > 0) formats.extra = extra;
  const doc = {
    version: meta.version,
    algorithm: algName(meta.algorithm),
    features: {
      compatible: meta.features.compatible,
      "read-only-compatible": meta.features.readOnlyCompatible,
      incompatible: meta.features.incompatible,
    },
    erofs_formats: formats,
  };
  // JSON.stringify's indented output equals serde_json's PrettyFormatter for
  // these value kinds (objects, arrays of strings/integers, strings, integers).
  return new TextEncoder().encode(`${JSON.stringify(doc, null, 2)}\n`);
}

/** Same configuration (what `init` compares against an existing meta.json). */
export function sameRepoMeta(a: RepoMeta, b: RepoMeta): boolean {
  const x = formatRepoMeta(a);
  const y = formatRepoMeta(b);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}
