// The `bootc status` document (BootcHost), built from plain data, and its
// three renderings: canonical JSON, YAML, and the human-readable form.
//
// Follows bootc `crates/lib/src/spec.rs` (types, field order, omitted
// fields), `crates/lib/src/k8sapitypes.rs`, `crates/lib/src/status.rs`
// (`status`, the human-readable renderer `human_readable_output` and its
// helpers, `transport_to_string`), `crates/lib/src/bootc_composefs/status.rs`
// (`composefs_deployment_status_from`); canonical JSON per RFC 8785
// (canon-json); reference: status.md (all sections), bootc-composefs.md §8.
// Deliberate differences from upstream (status.md §6): `missingVerityAllowed`
// is per entry, rollbackQueued comes from the slot planner (bls.ts), a legacy
// image digest is reported with `sha256:`.

import YAML from "yaml";
import type { Bootloader, SlotPlan } from "./bls.ts";
import { CfsError } from "./errors.ts";
import { type ImageReference, type Origin, parseOstreeImageReference } from "./origin.ts";

// ---- the document ------------------------------------------------------------------

export const API_VERSION = "org.containers.bootc/v1";
export const KIND = "BootcHost";

export interface ImageStatus {
  image: ImageReference;
  version: string | null;
  /** RFC 3339 in UTC, `Z` suffix. */
  timestamp: string | null;
  imageDigest: string;
  architecture: string;
}

export interface BootEntryComposefs {
  verity: string;
  bootType: "Bls" | "Uki";
  bootloader: Bootloader | "none";
  bootDigest: string | null;
  missingVerityAllowed: boolean;
}

export interface BootEntryOstree {
  stateroot: string;
  checksum: string;
  deploySerial: number;
}

export interface BootEntry {
  image: ImageStatus | null;
  cachedUpdate: ImageStatus | null;
  incompatible: boolean;
  pinned: boolean;
  softRebootCapable: boolean;
  downloadOnly: boolean;
  store: "ostreeContainer" | null;
  ostree: BootEntryOstree | null;
  composefs: BootEntryComposefs | null;
}

export interface FilesystemOverlay {
  accessMode: "readOnly" | "readWrite";
  persistence: "transient" | "persistent";
}

export interface BootcHost {
  apiVersion: string;
  kind: string;
  metadata: { name: string; annotations?: Record<string, string>; labels?: Record<string, string>; namespace?: string };
  spec: { image: ImageReference | null; bootOrder: "default" | "rollback" };
  status: {
    staged: BootEntry | null;
    booted: BootEntry | null;
    rollback: BootEntry | null;
    /** Omitted from the output when empty. */
    otherDeployments: BootEntry[];
    rollbackQueued: boolean;
    type: "bootcHost" | null;
    usrOverlay: FilesystemOverlay | null;
    readOnly: boolean;
  };
}

/** The document of a host with nothing booted. */
export function defaultHost(): BootcHost {
  return {
    apiVersion: API_VERSION,
    kind: KIND,
    metadata: { name: "host" },
    spec: { image: null, bootOrder: "default" },
    status: { staged: null, booted: null, rollback: null, otherDeployments: [], rollbackQueued: false, type: null, usrOverlay: null, readOnly: false },
  };
}

// ---- timestamps ----------------------------------------------------------------------

/**
 * An RFC 3339 timestamp (an image config's `created`) converted to UTC and
 * written as chrono does: `YYYY-MM-DDTHH:MM:SSZ`, with 3, 6 or 9 fraction
 * digits only when the sub-second part is not zero. Null when unparsable.
 */
export function normalizeTimestamp(s: string): string | null {
  const m = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$/.exec(s);
  if (m === null) return null;
  const [y, mo, d, h, mi, se] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  if (mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || se > 59) return null;
  const daysIn = new Date(Date.UTC(y, mo, 0)).getUTCDate();
  if (d > daysIn) return null;
  let offsetMin = 0;
  const z = m[8]!;
  if (z !== "Z" && z !== "z") {
    const oh = Number(z.slice(1, 3));
    const om = Number(z.slice(4, 6));
    if (oh > 23 || om > 59) return null;
    offsetMin = (z[0] === "-" ? -1 : 1) * (oh * 60 + om);
  }
  const nanos = Number((m[7] ?? "").padEnd(9, "0").slice(0, 9) || "0");
  const t = new Date(Date.UTC(y, mo - 1, d, h, mi, se) - offsetMin * 60_000);
  const Y = t.getUTCFullYear();
  if (Y < 0 || Y > 9999) return null;
  const p2 = (n: number) => String(n).padStart(2, "0");
  let frac = "";
  if (nanos !== 0) {
    const digits = String(nanos).padStart(9, "0");
    frac = nanos % 1_000_000 === 0 ? `.${digits.slice(0, 3)}` : nanos % 1000 === 0 ? `.${digits.slice(0, 6)}` : `.${digits}`;
  }
  return `${String(Y).padStart(4, "0")}-${p2(t.getUTCMonth() + 1)}-${p2(t.getUTCDate())}T${p2(t.getUTCHours())}:${p2(t.getUTCMinutes())}:${p2(t.getUTCSeconds())}${frac}Z`;
}

// ---- building ------------------------------------------------------------------------

/** What the host tool knows about one deployment. */
export interface DeploymentInfo {
  origin: Origin;
  /**
   * From the repository's copy of the manifest and config: version =
   * annotation `org.opencontainers.image.version`, created = config
   * `created` (raw), architecture = config `architecture`, imageDigest =
   * origin `manifest_digest` (or the legacy .imginfo digest). Null when the
   * metadata could not be found.
   */
  image: { version: string | null; created: string | null; architecture: string; imageDigest: string } | null;
  /** From this deployment's own composefs karg (`?`). */
  missingVerityAllowed: boolean;
  softRebootCapable?: boolean;
}

export interface HostInput {
  slots: SlotPlan;
  deployments: ReadonlyMap<string, DeploymentInfo>;
  bootloader: Bootloader | "none";
  /** `finalization_locked` of the staged marker. */
  stagedLocked: boolean;
  usrOverlay?: FilesystemOverlay | null;
  readOnly?: boolean;
  /** cfsboot extensions; keys should start with `cfsboot.` (status.md §7). */
  annotations?: Record<string, string>;
}

export interface BuiltHost {
  host: BootcHost;
  /** One line per problem the host should log (e.g. a deployment without origin). */
  warnings: string[];
}

/** status.md §4 journal message id for a deployment without an origin file. */
export const NO_ORIGIN_MESSAGE_ID = "d264f924dadb4c31bff0412107d391fb";

/** Build the document (status.md §4) from the slot plan and per-deployment data. */
export function buildHost(o: HostInput): BuiltHost {
  const host = defaultHost();
  const warnings: string[] = [];
  if (o.annotations !== undefined && Object.keys(o.annotations).length > 0) host.metadata.annotations = { ...o.annotations };
  host.status.usrOverlay = o.usrOverlay ?? null;
  host.status.readOnly = o.readOnly ?? false;

  let bootType: BootEntryComposefs["bootType"] | null = null;
  const entryFor = (id: string): BootEntry | null => {
    const d = o.deployments.get(id);
    if (d === undefined) {
      warnings.push(`No origin file for deployment ${id}`);
      return null;
    }
    const bt = d.origin.bootType === "bls" ? "Bls" : "Uki";
    if (bootType !== null && bootType !== bt) throw new CfsError("boot entries", "Conflicting boot types");
    bootType = bt;
    let image: ImageStatus | null = null;
    if (d.origin.imageReference !== null) {
      const ref = parseOstreeImageReference(d.origin.imageReference, `origin of deployment ${id}: [origin] container-image-reference`);
      if (d.image === null) warnings.push(`No image metadata for deployment ${id}`);
      image = {
        image: ref,
        version: d.image?.version ?? null,
        timestamp: d.image?.created == null ? null : normalizeTimestamp(d.image.created),
        imageDigest: d.image?.imageDigest ?? d.origin.manifestDigest ?? "",
        architecture: d.image?.architecture ?? "",
      };
    }
    return {
      image,
      cachedUpdate: null,
      incompatible: false,
      pinned: false,
      softRebootCapable: d.softRebootCapable ?? false,
      downloadOnly: false,
      store: null,
      ostree: null,
      composefs: { verity: id, bootType: bt, bootloader: o.bootloader, bootDigest: d.origin.bootDigest, missingVerityAllowed: d.missingVerityAllowed },
    };
  };

  const s = o.slots;
  if (s.booted !== null) host.status.booted = entryFor(s.booted);
  if (host.status.booted !== null) host.status.booted.softRebootCapable = false;
  if (s.staged !== null) {
    host.status.staged = entryFor(s.staged);
    if (host.status.staged !== null) host.status.staged.downloadOnly = o.stagedLocked;
  }
  const rest = [s.rollback, ...s.others].filter((x): x is string => x !== null).map(entryFor).filter((e): e is BootEntry => e !== null);
  host.status.rollback = rest[0] ?? null;
  host.status.otherDeployments = rest.slice(1);
  host.status.rollbackQueued = s.rollbackQueued;
  host.spec.bootOrder = s.rollbackQueued ? "rollback" : "default";
  host.spec.image = host.status.staged?.image?.image ?? host.status.booted?.image?.image ?? null;
  return { host, warnings };
}

/** `--booted`: staged and rollback become null; otherDeployments stays (as upstream). */
export function filterToBooted(h: BootcHost): BootcHost {
  return { ...h, status: { ...h.status, staged: null, rollback: null } };
}

// ---- serialisation -------------------------------------------------------------------

function imageRefValue(r: ImageReference): Record<string, unknown> {
  const out: Record<string, unknown> = { image: r.image, transport: r.transport };
  if (r.signature !== undefined) out.signature = r.signature;
  return out;
}

function imageStatusValue(i: ImageStatus | null): Record<string, unknown> | null {
  if (i === null) return null;
  return { image: imageRefValue(i.image), version: i.version, timestamp: i.timestamp, imageDigest: i.imageDigest, architecture: i.architecture };
}

function entryValue(e: BootEntry | null): Record<string, unknown> | null {
  if (e === null) return null;
  return {
    image: imageStatusValue(e.image),
    cachedUpdate: imageStatusValue(e.cachedUpdate),
    incompatible: e.incompatible,
    pinned: e.pinned,
    softRebootCapable: e.softRebootCapable,
    downloadOnly: e.downloadOnly,
    store: e.store,
    ostree: e.ostree === null ? null : { stateroot: e.ostree.stateroot, checksum: e.ostree.checksum, deploySerial: e.ostree.deploySerial },
    composefs:
      e.composefs === null
        ? null
        : { verity: e.composefs.verity, bootType: e.composefs.bootType, bootloader: e.composefs.bootloader, bootDigest: e.composefs.bootDigest, missingVerityAllowed: e.composefs.missingVerityAllowed },
  };
}

/** The document as a plain value in serde field order, optional fields omitted as bootc omits them. */
export function hostValue(h: BootcHost): Record<string, unknown> {
  const metadata: Record<string, unknown> = {};
  const sorted = (m: Record<string, string>) => Object.fromEntries(Object.entries(m).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  if (h.metadata.annotations !== undefined) metadata.annotations = sorted(h.metadata.annotations);
  if (h.metadata.labels !== undefined) metadata.labels = sorted(h.metadata.labels);
  metadata.name = h.metadata.name;
  if (h.metadata.namespace !== undefined) metadata.namespace = h.metadata.namespace;
  const status: Record<string, unknown> = { staged: entryValue(h.status.staged), booted: entryValue(h.status.booted), rollback: entryValue(h.status.rollback) };
  if (h.status.otherDeployments.length > 0) status.otherDeployments = h.status.otherDeployments.map(entryValue);
  Object.assign(status, { rollbackQueued: h.status.rollbackQueued, type: h.status.type, usrOverlay: h.status.usrOverlay === null ? null : { accessMode: h.status.usrOverlay.accessMode, persistence: h.status.usrOverlay.persistence }, readOnly: h.status.readOnly });
  return {
    apiVersion: h.apiVersion,
    kind: h.kind,
    metadata,
    spec: { image: h.spec.image === null ? null : imageRefValue(h.spec.image), bootOrder: h.spec.bootOrder },
    status,
  };
}

/**
 * RFC 8785 canonical JSON of a value made of strings, booleans, null,
 * integers, arrays and objects: object keys sorted by UTF-16 code units, no
 * whitespace. No trailing newline (as bootc).
 */
export function canonicalJson(v: unknown): string {
  if (v === null || typeof v === "boolean" || typeof v === "string") return JSON.stringify(v);
  if (typeof v === "number") {
    if (!Number.isFinite(v)) throw new CfsError("status document", "non-finite number");
    return JSON.stringify(v);
  }
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  if (typeof v === "object") {
    const o = v as Record<string, unknown>;
    const keys = Object.keys(o).filter((k) => o[k] !== undefined).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(",")}}`;
  }
  throw new CfsError("status document", `cannot serialise a ${typeof v}`);
}

/** `status --format=json`. */
export function hostToJson(h: BootcHost): string {
  return canonicalJson(hostValue(h));
}

/** `status --format=yaml` (and the default on a pipe): serde_yaml's layout, fields in serde order. */
export function hostToYaml(h: BootcHost): string {
  return YAML.stringify(hostValue(h), { lineWidth: 0, indentSeq: false, singleQuote: true, version: "1.2", aliasDuplicateObjects: false });
}

// ---- reading ------------------------------------------------------------------------

/**
 * Read a status document (JSON or YAML, any apiVersion, fields of older
 * versions missing). Missing optional fields take their defaults; a value of
 * the wrong type is an error naming the field.
 */
export function parseHostDocument(text: string, input = "status document"): BootcHost {
  let doc: unknown;
  try {
    doc = YAML.parse(text, { version: "1.2" });
  } catch (e) {
    throw new CfsError(input, `not YAML/JSON: ${e instanceof Error ? e.message.split("\n")[0] : String(e)}`);
  }
  const obj = (v: unknown, f: string): Record<string, unknown> => {
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw new CfsError(`${input}: field ${f}`, "not an object");
    return v as Record<string, unknown>;
  };
  const str = (v: unknown, f: string): string => {
    if (typeof v !== "string") throw new CfsError(`${input}: field ${f}`, "not a string");
    return v;
  };
  const optStr = (v: unknown, f: string): string | null => (v === undefined || v === null ? null : str(v, f));
  const bool = (v: unknown, f: string): boolean => {
    if (v === undefined || v === null) return false;
    if (typeof v !== "boolean") throw new CfsError(`${input}: field ${f}`, "not a boolean");
    return v;
  };
  const ref = (v: unknown, f: string): ImageReference => {
    const o = obj(v, f);
    const r: ImageReference = { image: str(o.image, `${f}.image`), transport: str(o.transport, `${f}.transport`) as ImageReference["transport"] };
    if (o.signature !== undefined && o.signature !== null) r.signature = o.signature as ImageReference["signature"];
    return r;
  };
  const imageStatus = (v: unknown, f: string): ImageStatus | null => {
    if (v === undefined || v === null) return null;
    const o = obj(v, f);
    const ts = o.timestamp instanceof Date ? o.timestamp.toISOString() : optStr(o.timestamp, `${f}.timestamp`);
    return { image: ref(o.image, `${f}.image`), version: optStr(o.version, `${f}.version`), timestamp: ts, imageDigest: str(o.imageDigest, `${f}.imageDigest`), architecture: str(o.architecture, `${f}.architecture`) };
  };
  const entry = (v: unknown, f: string): BootEntry | null => {
    if (v === undefined || v === null) return null;
    const o = obj(v, f);
    let ostree: BootEntryOstree | null = null;
    if (o.ostree !== undefined && o.ostree !== null) {
      const t = obj(o.ostree, `${f}.ostree`);
      ostree = { stateroot: str(t.stateroot, `${f}.ostree.stateroot`), checksum: str(t.checksum, `${f}.ostree.checksum`), deploySerial: Number(t.deploySerial) };
    }
    let composefs: BootEntryComposefs | null = null;
    if (o.composefs !== undefined && o.composefs !== null) {
      const c = obj(o.composefs, `${f}.composefs`);
      composefs = {
        verity: str(c.verity, `${f}.composefs.verity`),
        bootType: str(c.bootType, `${f}.composefs.bootType`) as BootEntryComposefs["bootType"],
        bootloader: str(c.bootloader, `${f}.composefs.bootloader`) as BootEntryComposefs["bootloader"],
        bootDigest: optStr(c.bootDigest, `${f}.composefs.bootDigest`),
        missingVerityAllowed: bool(c.missingVerityAllowed, `${f}.composefs.missingVerityAllowed`),
      };
    }
    return {
      image: imageStatus(o.image, `${f}.image`),
      cachedUpdate: imageStatus(o.cachedUpdate, `${f}.cachedUpdate`),
      incompatible: bool(o.incompatible, `${f}.incompatible`),
      pinned: bool(o.pinned, `${f}.pinned`),
      softRebootCapable: bool(o.softRebootCapable, `${f}.softRebootCapable`),
      downloadOnly: bool(o.downloadOnly, `${f}.downloadOnly`),
      store: o.store === "ostreeContainer" ? "ostreeContainer" : null,
      ostree,
      composefs,
    };
  };
  const top = obj(doc, "(top level)");
  const h = defaultHost();
  h.apiVersion = str(top.apiVersion, "apiVersion");
  h.kind = str(top.kind, "kind");
  if (top.metadata !== undefined && top.metadata !== null) {
    const m = obj(top.metadata, "metadata");
    h.metadata = { name: optStr(m.name, "metadata.name") ?? "host" };
    if (m.annotations !== undefined && m.annotations !== null) h.metadata.annotations = obj(m.annotations, "metadata.annotations") as Record<string, string>;
  }
  if (top.spec !== undefined && top.spec !== null) {
    const s = obj(top.spec, "spec");
    h.spec.image = s.image === undefined || s.image === null ? null : ref(s.image, "spec.image");
    h.spec.bootOrder = s.bootOrder === "rollback" ? "rollback" : "default";
  }
  if (top.status !== undefined && top.status !== null) {
    const s = obj(top.status, "status");
    h.status.staged = entry(s.staged, "status.staged");
    h.status.booted = entry(s.booted, "status.booted");
    h.status.rollback = entry(s.rollback, "status.rollback");
    if (s.otherDeployments !== undefined && s.otherDeployments !== null) {
      if (!Array.isArray(s.otherDeployments)) throw new CfsError(`${input}: field status.otherDeployments`, "not an array");
      h.status.otherDeployments = s.otherDeployments.map((e, i) => entry(e, `status.otherDeployments[${i}]`)!).filter((e) => e !== null);
    }
    h.status.rollbackQueued = bool(s.rollbackQueued, "status.rollbackQueued");
    h.status.type = s.type === "bootcHost" ? "bootcHost" : null;
    if (s.usrOverlay !== undefined && s.usrOverlay !== null) {
      const u = obj(s.usrOverlay, "status.usrOverlay");
      h.status.usrOverlay = { accessMode: str(u.accessMode, "status.usrOverlay.accessMode") as FilesystemOverlay["accessMode"], persistence: str(u.persistence, "status.usrOverlay.persistence") as FilesystemOverlay["persistence"] };
    }
    h.status.readOnly = bool(s.readOnly, "status.readOnly");
  }
  return h;
}

// ---- human-readable ---------------------------------------------------------------------

type Slot = "staged" | "booted" | "rollback" | null;

const BLACK_CIRCLE = "●";

/** Right-align a row name to the prefix width, then ": ". */
function rowName(name: string, width: number): string {
  return `${" ".repeat(Math.max(0, width - [...name].length))}${name}: `;
}

/** Seconds precision, as bootc shows timestamps on a terminal. */
function humanTimestamp(ts: string): string {
  return ts.replace(/\.\d+Z$/, "Z");
}

function overlayText(o: FilesystemOverlay): string {
  return `${o.persistence}, ${o.accessMode === "readOnly" ? "read-only" : "read/write"}`;
}

function renderImageSlot(out: string[], slot: Slot, e: BootEntry, img: ImageStatus, h: BootcHost, verbose: boolean): void {
  const ref = img.image.transport === "registry" ? img.image.image : `${img.image.transport}:${img.image.image}`;
  const prefix = slot === "staged" ? "  Staged image" : slot === "booted" ? `${BLACK_CIRCLE} Booted image` : slot === "rollback" ? "  Rollback image" : "   Other image";
  const w = [...prefix].length;
  const row = (name: string, value: string) => out.push(`${rowName(name, w)}${value}\n`);
  out.push(`${prefix}: ${ref}\n`);
  row("Digest", `${img.imageDigest} (${img.architecture})`);
  if (e.composefs !== null) row("Verity", e.composefs.verity);
  const ts = img.timestamp === null ? null : humanTimestamp(img.timestamp);
  if (img.version !== null) row("Version", ts === null ? img.version : `${img.version} (${ts})`);
  else if (ts !== null) row("Timestamp", ts);
  if (e.pinned) row("Pinned", "yes");
  if (e.cachedUpdate !== null && e.cachedUpdate.imageDigest !== img.imageDigest) {
    const c = e.cachedUpdate;
    if (c.version !== null) row("UpdateVersion", c.timestamp === null ? c.version : `${c.version} (${humanTimestamp(c.timestamp)})`);
    else row("Update", "Available");
    row("UpdateDigest", c.imageDigest);
  }
  if (slot === "booted" && h.status.usrOverlay !== null) row("/usr overlay", overlayText(h.status.usrOverlay));
  if (verbose) {
    if (e.ostree !== null) {
      row("StateRoot", e.ostree.stateroot);
      row("Deploy serial", String(e.ostree.deploySerial));
      row("Staged", slot === "staged" ? "yes" : "no");
      row("Commit", e.ostree.checksum);
    }
    const sig = img.image.signature;
    if (sig !== undefined) row("Signature", typeof sig === "object" ? `ostree-remote:${sig.ostreeRemote}` : sig === "containerPolicy" ? "container-policy" : "insecure");
    row("Soft-reboot", e.softRebootCapable ? "yes" : "no");
    if (e.composefs !== null) row("FsVerity", e.composefs.missingVerityAllowed ? "Not Enforced" : "Enforced");
    if (slot === "staged") row("Download-only", e.downloadOnly ? "yes" : "no");
  }
}

/** A composefs entry without image data; bootc pads by the prefix's UTF-8 byte length (kept). */
function renderComposefsSlot(out: string[], slot: Slot, e: BootEntry): void {
  const prefix = slot === "staged" ? "  Staged composefs" : slot === "booted" ? `${BLACK_CIRCLE} Booted composefs` : slot === "rollback" ? "  Rollback composefs" : "   Other composefs";
  out.push(`${prefix}\n`);
  out.push(`${rowName("Commit", Buffer.byteLength(prefix))}${e.composefs!.verity}\n`);
}

function renderOstreeSlot(out: string[], slot: Slot, e: BootEntry, h: BootcHost, verbose: boolean): void {
  const prefix = slot === "staged" ? "  Staged ostree" : slot === "booted" ? `${BLACK_CIRCLE} Booted ostree` : slot === "rollback" ? "  Rollback ostree" : " Other ostree";
  const w = Buffer.byteLength(prefix);
  const row = (name: string, value: string) => out.push(`${rowName(name, w)}${value}\n`);
  out.push(`${prefix}\n`);
  row("Commit", e.ostree!.checksum);
  if (e.pinned) row("Pinned", "yes");
  if (slot === "booted" && h.status.usrOverlay !== null) row("/usr overlay", overlayText(h.status.usrOverlay));
  if (verbose) {
    row("StateRoot", e.ostree!.stateroot);
    row("Deploy serial", String(e.ostree!.deploySerial));
    row("Staged", slot === "staged" ? "yes" : "no");
    row("Soft-reboot", e.softRebootCapable ? "yes" : "no");
    if (slot === "staged") row("Download-only", e.downloadOnly ? "yes" : "no");
  }
}

/**
 * The human-readable status bootc prints on a terminal: staged, booted and
 * rollback (blank line between), then the other deployments; "System is not
 * deployed via bootc." when nothing is booted. Difference from upstream:
 * other deployments without image data are shown as composefs entries
 * (upstream prints only a blank line for them). With `verbose`, cfsboot's
 * `cfsboot.*` annotations follow as a last block.
 */
export function hostToHuman(h: BootcHost, o: { verbose?: boolean } = {}): string {
  const verbose = o.verbose ?? false;
  if (h.status.booted === null) return "System is not deployed via bootc.\n";
  const out: string[] = [];
  const render = (slot: Slot, e: BootEntry): void => {
    if (e.image !== null) renderImageSlot(out, slot, e, e.image, h, verbose);
    else if (e.ostree !== null) renderOstreeSlot(out, slot, e, h, verbose);
    else if (e.composefs !== null) renderComposefsSlot(out, slot, e);
    else if (slot !== null) out.push(`Current ${slot} state is unknown\n`);
  };
  let first = true;
  for (const [slot, e] of [["staged", h.status.staged], ["booted", h.status.booted], ["rollback", h.status.rollback]] as const) {
    if (e === null) continue;
    if (!first) out.push("\n");
    first = false;
    render(slot, e);
  }
  for (const e of h.status.otherDeployments) {
    out.push("\n");
    render(null, e);
  }
  const ann = Object.entries(h.metadata.annotations ?? {}).filter(([k]) => k.startsWith("cfsboot."));
  if (verbose && ann.length > 0) {
    out.push("\n");
    const w = Math.max(...ann.map(([k]) => k.length - "cfsboot.".length));
    for (const [k, v] of ann) out.push(`${rowName(k.slice("cfsboot.".length), w)}${v}\n`);
  }
  return out.join("");
}
