// Deployment metadata: the `.origin` INI, the legacy `.imginfo` JSON, the
// staged-deployment marker, and image references as bootc writes them.
//
// Follows bootc `crates/lib/src/bootc_composefs/state.rs`
// (`write_composefs_state`, `read_origin`), `bootc_composefs/status.rs`
// (`StagedDeployment`, `get_imginfo`), `composefs_consts.rs` (section and key
// names), the `tini` 1.3 INI writer bootc uses (`[section]`, `key = value`,
// a blank line after every section), `crates/ostree-ext/src/container/mod.rs`
// (`OstreeImageReference`) and containers-image-proxy's transport names;
// reference: bootc-composefs.md §2, §3, status.md §4.
//
// Reading uses the `ini` package, after a line check that turns malformed
// lines into errors naming the file and line (bootc's reader refuses them too).

import { createHash } from "node:crypto";
import ini from "ini";
import { CfsError } from "./errors.ts";
import { type DigestAlgorithm, parseDigestHex } from "./kargs.ts";

// ---- image references -------------------------------------------------------------

export type Transport = "registry" | "oci" | "oci-archive" | "docker-archive" | "containers-storage" | "dir" | "docker-daemon";
const TRANSPORTS: readonly Transport[] = ["registry", "oci", "oci-archive", "docker-archive", "containers-storage", "dir", "docker-daemon"];

/** How the image signature is checked (bootc `ImageSignature`); absent = none. */
export type ImageSignature = { ostreeRemote: string } | "containerPolicy" | "insecure";

/** bootc's `ImageReference`: image name and transport, as `status` shows them. */
export interface ImageReference {
  image: string;
  transport: Transport;
  signature?: ImageSignature;
}

/** `docker://x`, `registry:x`, `oci:/p`, … → transport and name. */
export function parseTransportRef(ref: string, input = `image reference ${JSON.stringify(ref)}`): { transport: Transport; image: string } {
  if (ref.startsWith("docker://")) return { transport: "registry", image: nonEmpty(ref.slice("docker://".length), input) };
  const colon = ref.indexOf(":");
  if (colon < 0) throw new CfsError(input, "missing the transport (e.g. docker://, oci:, containers-storage:)");
  const t = ref.slice(0, colon);
  if (!(TRANSPORTS as readonly string[]).includes(t)) throw new CfsError(input, `unknown transport '${t}'`);
  return { transport: t as Transport, image: nonEmpty(ref.slice(colon + 1), input) };
}

function nonEmpty(s: string, input: string): string {
  if (s === "") throw new CfsError(input, "empty image name");
  return s;
}

/** The image-proxy spelling: `docker://<name>` for registries, else `<transport>:<name>`. */
export function formatTransportRef(r: { transport: Transport; image: string }): string {
  return r.transport === "registry" ? `docker://${r.image}` : `${r.transport}:${r.image}`;
}

/**
 * Parse an ostree-style reference from an origin
 * (`ostree-unverified-image:docker://…`, `ostree-unverified-registry:…`,
 * `ostree-image-signed:…`, `ostree-remote-image:<remote>:…`,
 * `ostree-remote-registry:<remote>:…`) into bootc's ImageReference. An
 * unverified reference has no signature (bootc maps "allow insecure" to none).
 */
export function parseOstreeImageReference(s: string, input = `image reference ${JSON.stringify(s)}`): ImageReference {
  const colon = s.indexOf(":");
  if (colon < 0) throw new CfsError(input, "missing ':'");
  const scheme = s.slice(0, colon);
  const rest = s.slice(colon + 1);
  const remoteSplit = (): [string, string] => {
    const c = rest.indexOf(":");
    if (c < 0) throw new CfsError(input, "missing the remote name");
    return [rest.slice(0, c), rest.slice(c + 1)];
  };
  switch (scheme) {
    case "ostree-unverified-image":
      return parseTransportRef(rest, input);
    case "ostree-unverified-registry":
      return { transport: "registry", image: nonEmpty(rest, input) };
    case "ostree-image-signed":
      return { ...parseTransportRef(rest, input), signature: "containerPolicy" };
    case "ostree-remote-image": {
      const [remote, r] = remoteSplit();
      return { ...parseTransportRef(r, input), signature: { ostreeRemote: remote } };
    }
    case "ostree-remote-registry": {
      const [remote, r] = remoteSplit();
      return { transport: "registry", image: nonEmpty(r, input), signature: { ostreeRemote: remote } };
    }
    default:
      throw new CfsError(input, `unknown reference scheme '${scheme}'`);
  }
}

/** What cfsboot (like bootc) writes into an origin: always "unverified". */
export function formatOriginImageReference(r: { transport: Transport; image: string }): string {
  return `ostree-unverified-image:${formatTransportRef(r)}`;
}

// ---- .origin ---------------------------------------------------------------------

export type BootType = "bls" | "uki";

export interface Origin {
  /** `[origin] container-image-reference` as written (`ostree-unverified-image:…`), or null. */
  imageReference: string | null;
  /** `[boot] boot_type`. */
  bootType: BootType;
  /** `[boot] digest`: SHA-256 hex of vmlinuz ‖ initrd (or the UKI's .linux ‖ .initrd); null when absent (old UKI deployments). */
  bootDigest: string | null;
  /** `[image] manifest_digest` (`sha256:<hex>`); null for deployments older than bootc PR #2044. */
  manifestDigest: string | null;
  /** Any other keys, kept so a rewrite does not lose them: section → key → value. */
  extra: Map<string, Map<string, string>>;
}

const KNOWN: Record<string, readonly string[]> = {
  origin: ["container-image-reference"],
  boot: ["boot_type", "digest"],
  image: ["manifest_digest"],
};

/** Reject values the tini reader would not read back the same (it cuts at `;` and `#`). */
function checkIniValue(where: string, v: string): void {
  if (/[\n\r;#]/.test(v) || v.trim() !== v) throw new CfsError(where, `value ${JSON.stringify(v)} cannot be stored in an origin file`);
}

/**
 * The `.origin` text exactly as bootc writes it (tini's writer): sections in
 * the order origin, boot, image, then any extra sections; `key = value`; a
 * blank line after each section except the last, and one final newline.
 */
export function formatOrigin(o: Origin): string {
  const sections: [string, [string, string][]][] = [];
  const add = (sec: string, key: string, value: string | null): void => {
    if (value === null) return;
    checkIniValue(`origin [${sec}] ${key}`, value);
    let s = sections.find(([n]) => n === sec);
    if (s === undefined) {
      s = [sec, []];
      sections.push(s);
    }
    s[1].push([key, value]);
  };
  add("origin", "container-image-reference", o.imageReference);
  add("boot", "boot_type", o.bootType);
  add("boot", "digest", o.bootDigest);
  add("image", "manifest_digest", o.manifestDigest);
  for (const [sec, kv] of o.extra) for (const [k, v] of kv) add(sec, k, v);
  const items: string[] = [];
  for (const [name, kv] of sections) {
    items.push(`[${name}]`);
    for (const [k, v] of kv) items.push(`${k} = ${v}`);
    items.push("");
  }
  return items.join("\n");
}

/**
 * Read an origin tolerantly: `key=value` or `key = value`, blank lines and
 * `;`/`#` comments anywhere; a repeated section continues it. Errors name the
 * file (and line): a line that is neither a section, a comment nor
 * `key = value`; a missing `[boot] boot_type`; an unknown boot type; a
 * malformed boot digest or manifest digest.
 */
export function parseOrigin(text: string, fileName: string): Origin {
  let section: string | null = null;
  text.split("\n").forEach((raw, idx) => {
    const line = raw.split(/[;#]/)[0]!.trim();
    if (line === "") return;
    const at = `${fileName}: line ${idx + 1}`;
    if (line.startsWith("[")) {
      if (!line.endsWith("]") || line.slice(1, -1).trim() === "") throw new CfsError(at, "malformed section header");
      section = line.slice(1, -1).trim();
      return;
    }
    const eq = line.indexOf("=");
    if (eq < 0) throw new CfsError(at, "expected 'key = value'");
    if (line.slice(0, eq).trim() === "") throw new CfsError(at, "empty key");
    if (section === null) throw new CfsError(at, "key outside of any section");
  });
  const doc = ini.decode(text, { bracketedArray: false }) as Record<string, unknown>;
  const sectionOf = (name: string): Record<string, unknown> => {
    const s = doc[name];
    return typeof s === "object" && s !== null ? (s as Record<string, unknown>) : {};
  };
  const str = (sec: string, key: string): string | null => {
    const v = sectionOf(sec)[key];
    if (v === undefined || v === null) return null;
    return String(v);
  };
  const bootType = str("boot", "boot_type");
  if (bootType === null) throw new CfsError(fileName, "missing [boot] boot_type");
  if (bootType !== "bls" && bootType !== "uki") throw new CfsError(fileName, `unknown boot type '${bootType}' in [boot] boot_type (expected bls or uki)`);
  const bootDigest = str("boot", "digest");
  if (bootDigest !== null) parseDigestHex(bootDigest, "sha256", `${fileName}: [boot] digest`);
  const manifestDigest = str("image", "manifest_digest");
  if (manifestDigest !== null) parseOciDigest(manifestDigest, `${fileName}: [image] manifest_digest`);
  const extra = new Map<string, Map<string, string>>();
  for (const [sec, body] of Object.entries(doc)) {
    if (typeof body !== "object" || body === null) continue;
    for (const [k, v] of Object.entries(body as Record<string, unknown>)) {
      if (KNOWN[sec]?.includes(k)) continue;
      if (typeof v === "object") continue; // dotted names decode as nesting; not used by bootc
      let m = extra.get(sec);
      if (m === undefined) extra.set(sec, (m = new Map()));
      m.set(k, String(v));
    }
  }
  return { imageReference: str("origin", "container-image-reference"), bootType, bootDigest: bootDigest?.toLowerCase() ?? null, manifestDigest, extra };
}

/** `sha256:<64 hex>` (the only digest algorithm bootc stores). */
export function parseOciDigest(s: string, input: string): string {
  const m = /^sha256:([0-9a-f]{64})$/.exec(s);
  if (m === null) throw new CfsError(input, `not a sha256 digest: ${JSON.stringify(s)}`);
  return s;
}

// ---- legacy .imginfo --------------------------------------------------------------

export interface ImgInfo {
  config: Record<string, unknown>;
  manifest: Record<string, unknown>;
  /**
   * What upstream reports as imageDigest for such deployments: the bare hex
   * SHA-256 of the manifest as serde re-serialises it. The manifest in the
   * file was written by the same serialiser, so compact JSON of the parsed
   * object (key order kept) reproduces those bytes.
   */
  legacyDigestHex: string;
  /** What cfsboot reports: `sha256:` + legacyDigestHex (bootc-composefs.md §3.3). */
  imageDigest: string;
}

/** `<id>.imginfo`: JSON `{"config": <OCI config>, "manifest": <OCI manifest>}`. */
export function parseImgInfo(text: string, fileName: string): ImgInfo {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new CfsError(fileName, `not JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  const obj = (v: unknown, what: string): Record<string, unknown> => {
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw new CfsError(fileName, `field ${what} is not an object`);
    return v as Record<string, unknown>;
  };
  const top = obj(doc, "(top level)");
  const config = obj(top.config, "config");
  const manifest = obj(top.manifest, "manifest");
  const hex = createHash("sha256").update(JSON.stringify(manifest)).digest("hex");
  return { config, manifest, legacyDigestHex: hex, imageDigest: `sha256:${hex}` };
}

// ---- the staged-deployment marker ---------------------------------------------------

export interface StagedMarker {
  deplId: string;
  /** true: download-only; the finalize unit will not apply it. */
  finalizationLocked: boolean;
}

/** `/run/composefs/staged-deployment`: canonical JSON (keys sorted, no whitespace). */
export function formatStagedMarker(m: StagedMarker, algorithm: DigestAlgorithm = "sha512"): string {
  const id = parseDigestHex(m.deplId, algorithm, "staged deployment id");
  return `{"depl_id":${JSON.stringify(id)},"finalization_locked":${m.finalizationLocked ? "true" : "false"}}`;
}

/**
 * Read the marker. Unknown keys are ignored; a missing `finalization_locked`
 * means false (markers of bootc versions without download-only mode).
 */
export function parseStagedMarker(text: string, fileName: string, algorithm: DigestAlgorithm = "sha512"): StagedMarker {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new CfsError(fileName, `not JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) throw new CfsError(fileName, "not a JSON object");
  const d = doc as Record<string, unknown>;
  if (typeof d.depl_id !== "string") throw new CfsError(`${fileName}: field depl_id`, "missing or not a string");
  const lock = d.finalization_locked;
  if (lock !== undefined && typeof lock !== "boolean") throw new CfsError(`${fileName}: field finalization_locked`, "not a boolean");
  return { deplId: parseDigestHex(d.depl_id, algorithm, `${fileName}: field depl_id`), finalizationLocked: lock === true };
}
