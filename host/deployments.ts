// Deployments as the host sees them: state directories and their origins,
// the staged marker, the slot assignment (booted / staged / rollback /
// others) derived from the boot entries, and the `status` document
// (status.md §4). The boot entries are the source of truth: a deployment
// exists when an entry names it; a state directory no entry names is an
// orphan (gc removes it), an entry whose state directory or origin is
// missing is reported and skipped.
//
// "Staged" needs all of: the marker, an entry in the staged set naming the
// marker's id, and that id NOT being in the live set yet (after a finalize
// that committed but was interrupted before removing the marker, the id is
// live and nothing is staged any more).

import { readFileSync } from "node:fs";

import { type SlotPlan, planSlots } from "../shared/bls.ts";
import { CfsError, describeError } from "../shared/errors.ts";
import { parseComposefsKarg, withoutComposefsKargs, splitCmdline } from "../shared/kargs.ts";
import { parseManifestDocument, parseImageConfig } from "../shared/oci.ts";
import { type Origin, type StagedMarker, formatOrigin, formatStagedMarker, parseImgInfo, parseOrigin, parseStagedMarker } from "../shared/origin.ts";
import { ukiCmdline } from "../shared/pe.ts";
import { type BuiltHost, type DeploymentInfo, NO_ORIGIN_MESSAGE_ID, buildHost, defaultHost } from "../shared/status.ts";
import { writeFileAtomic } from "./atomic.ts";
import { type LiveEntry, type LoaderView, readLoader } from "./entries.ts";
import { exists, isLeftover, listDir, mkdirp, removeAtomic } from "./fsops.ts";
import type { Repository } from "./repo.ts";
import { ALGORITHM, type BootedInfo, type Host } from "./sysroot.ts";

// ---- origins ----------------------------------------------------------------------------

export interface OriginRead {
  origin: Origin | null;
  /** Why there is no usable origin (missing file, parse error), for reports. */
  error: string | null;
}

export function readOriginOf(host: Host, id: string): OriginRead {
  const path = host.originPath(id);
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return { origin: null, error: `No origin file for deployment ${id}` };
    return { origin: null, error: `${path}: cannot read: ${describeError(e)}` };
  }
  try {
    return { origin: parseOrigin(text, path), error: null };
  } catch (e) {
    if (!(e instanceof CfsError)) throw e;
    return { origin: null, error: e.message };
  }
}

/** Write `<dir>/<id>.origin` atomically (mode 0644). */
export function writeOriginFile(dir: string, id: string, origin: Origin): void {
  writeFileAtomic(`${dir}/${id}.origin`, formatOrigin(origin), { mode: 0o644 });
}

/** Deployment ids that have a state directory (leftover temporaries excluded). */
export function listStateDirs(host: Host): string[] {
  return listDir(host.deployPath).filter((n) => !n.startsWith(".") && /^[0-9a-f]{128}$/.test(n));
}

/** Leftovers of interrupted writes under state/deploy. */
export function stateLeftovers(host: Host): string[] {
  return listDir(host.deployPath).filter((n) => isLeftover(n)).map((n) => `${host.deployPath}/${n}`);
}

// ---- the staged marker --------------------------------------------------------------------

export interface MarkerRead {
  marker: StagedMarker | null;
  error: string | null;
}

export function readStagedMarker(host: Host): MarkerRead {
  let text: string;
  try {
    text = readFileSync(host.stagedMarkerPath, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return { marker: null, error: null };
    return { marker: null, error: `${host.stagedMarkerPath}: cannot read: ${describeError(e)}` };
  }
  try {
    return { marker: parseStagedMarker(text, host.stagedMarkerPath, ALGORITHM), error: null };
  } catch (e) {
    if (!(e instanceof CfsError)) throw e;
    return { marker: null, error: `${e.message}; marker ignored` };
  }
}

export function writeStagedMarker(host: Host, m: StagedMarker): void {
  mkdirp(host.runDir, 0o755);
  writeFileAtomic(host.stagedMarkerPath, formatStagedMarker(m, ALGORITHM));
}

export function removeStagedMarker(host: Host): void {
  removeAtomic(host.stagedMarkerPath);
}

// ---- the host state -------------------------------------------------------------------------

export interface HostState {
  host: Host;
  loader: LoaderView;
  booted: BootedInfo | null;
  /** The booted deployment's live entry (null when not booted or no entry names it). */
  bootedEntry: LiveEntry | null;
  marker: StagedMarker | null;
  /** The marker names a staged entry that is not live yet. */
  stagedValid: boolean;
  /** The staged entry naming the staged deployment. */
  stagedEntry: LiveEntry | null;
  slots: SlotPlan;
  /** Every deployment an entry names (live, and staged when valid). */
  ids: string[];
  origins: Map<string, OriginRead>;
  /** Reported, not fatal. */
  problems: string[];
}

/** Read entries, marker, booted deployment and origins. Never writes. */
export function loadHostState(host: Host): HostState {
  const loader = readLoader(host);
  const problems = [...loader.problems];
  const booted = host.booted();
  const mr = readStagedMarker(host);
  if (mr.error !== null) problems.push(mr.error);
  const marker = mr.marker;
  const liveIds = loader.menu.map((e) => e.id);
  let stagedEntry: LiveEntry | null = null;
  if (marker !== null && !liveIds.includes(marker.deplId)) stagedEntry = loader.staged.find((e) => e.id === marker.deplId) ?? null;
  const stagedValid = stagedEntry !== null;
  const slots = planSlots({
    menu: liveIds,
    defaultIndex: loader.defaultIndex,
    stagedMenu: stagedValid ? [marker!.deplId] : [],
    bootedId: booted?.id ?? null,
    stagedId: stagedValid ? marker!.deplId : null,
  });
  const ids = [...new Set([...liveIds, ...(stagedValid ? [marker!.deplId] : [])])];
  const origins = new Map<string, OriginRead>();
  for (const id of ids) {
    const o = readOriginOf(host, id);
    origins.set(id, o);
    if (o.error !== null) {
      problems.push(
        o.origin === null && o.error.startsWith("No origin file")
          ? `${o.error} (MESSAGE_ID=${NO_ORIGIN_MESSAGE_ID}); deployment skipped`
          : `${o.error}; deployment skipped`,
      );
    }
  }
  const bootedEntry = booted === null ? null : (loader.menu.find((e) => e.id === booted.id) ?? null);
  return { host, loader, booted, bootedEntry, marker, stagedValid, stagedEntry, slots, ids, origins, problems };
}

/** Every entry (live and valid staged) naming `id`. */
export function entriesOf(st: HostState, id: string): LiveEntry[] {
  return [...st.loader.menu, ...(st.stagedValid ? st.loader.staged : [])].filter((e) => e.id === id);
}

// ---- image metadata from the repository ------------------------------------------------------

/** Version, created, architecture and digest of a deployment's image, from the repository (no network). */
export async function imageMetadata(host: Host, repo: Repository | null, id: string, origin: Origin): Promise<{ info: DeploymentInfo["image"]; warning: string | null }> {
  let manifestDigest = origin.manifestDigest;
  let legacyDigest: string | null = null;
  if (manifestDigest === null) {
    const path = `${host.stateDir(id)}/${id}.imginfo`;
    let text: string | null = null;
    try {
      text = readFileSync(path, "utf8");
    } catch {}
    if (text === null) return { info: null, warning: `deployment ${id}: origin has no [image] manifest_digest and there is no ${id}.imginfo` };
    try {
      const ii = parseImgInfo(text, path);
      legacyDigest = ii.imageDigest;
      const m = ii.manifest as { annotations?: Record<string, unknown> };
      const c = ii.config as { created?: unknown; architecture?: unknown };
      const real = repo === null ? null : findManifestForId(repo, id);
      return {
        info: {
          version: typeof m.annotations?.["org.opencontainers.image.version"] === "string" ? (m.annotations["org.opencontainers.image.version"] as string) : null,
          created: typeof c.created === "string" ? c.created : null,
          architecture: typeof c.architecture === "string" ? c.architecture : "",
          imageDigest: real ?? legacyDigest,
        },
        warning: null,
      };
    } catch (e) {
      if (!(e instanceof CfsError)) throw e;
      return { info: null, warning: e.message };
    }
  }
  if (repo === null) return { info: null, warning: `deployment ${id}: no repository to read image metadata from` };
  try {
    const s = await repo.openOciImage(`@${manifestDigest}`);
    const m = parseManifestDocument(s.manifest, `@${manifestDigest}`);
    const c = s.config === null ? null : parseImageConfig(s.config, `@${manifestDigest}: config`);
    return {
      info: {
        version: m.annotations["org.opencontainers.image.version"] ?? null,
        created: c?.created ?? null,
        architecture: c?.architecture ?? "",
        imageDigest: manifestDigest,
      },
      warning: null,
    };
  } catch (e) {
    if (!(e instanceof CfsError)) throw e;
    return { info: null, warning: `deployment ${id}: image ${manifestDigest} not readable from the repository: ${e.message}` };
  }
}

/**
 * The manifest digest of the tagged image whose boot EROFS is `id` (bootc's
 * fallback for deployments without manifest_digest), or null.
 */
export function findManifestForId(repo: Repository, id: string): string | null {
  for (const t of repo.listTags()) {
    if (!t.name.startsWith("localhost/bootc-")) continue;
    const mid = `oci-manifest-${t.manifestDigest}`;
    try {
      const m = repo.openStream(mid);
      for (const [k, v] of m.namedRefs) {
        if (!k.startsWith("config:")) continue;
        const c = repo.openStream(`oci-config-${k.slice(7)}`, undefined, { id: v });
        for (const [rk, rv] of c.namedRefs) {
          if (rk.startsWith("composefs.image") && Buffer.from(rv).toString("hex") === id) return t.manifestDigest;
        }
      }
    } catch {}
  }
  return null;
}

/** The composefs karg's `?` of an entry (its options, or its UKI's .cmdline). */
function entryInsecure(host: Host, e: LiveEntry): boolean {
  try {
    if (e.entry.options !== null) return parseComposefsKarg(e.entry.options, ALGORITHM)?.insecure ?? false;
    const uki = e.entry.uki ?? e.entry.efi;
    if (uki !== null) {
      const bytes = new Uint8Array(readFileSync(`${host.esp}${uki.startsWith("/") ? "" : "/"}${uki}`));
      const cl = ukiCmdline(bytes, uki);
      return cl === null ? false : (parseComposefsKarg(cl, ALGORITHM)?.insecure ?? false);
    }
  } catch {}
  return false;
}

export interface StatusResult extends BuiltHost {
  state: HostState | null;
}

/** The `status` document (never writes). */
export async function hostStatus(host: Host, repo: Repository | null): Promise<StatusResult> {
  let st: HostState;
  try {
    st = loadHostState(host);
  } catch (e) {
    // A host that was never installed: the default document.
    if (e instanceof CfsError && !exists(host.deployPath) && !exists(host.repoPath)) return { host: defaultHost(), warnings: [], state: null };
    throw e;
  }
  const warnings = [...st.problems];
  for (const id of listStateDirs(host)) {
    if (!st.ids.includes(id)) warnings.push(`state directory ${host.stateDir(id)} is not named by any boot entry (an orphan; \`cfsboot gc\` removes it)`);
  }
  const deployments = new Map<string, DeploymentInfo>();
  const bootedOrigin = st.booted === null ? null : (st.origins.get(st.booted.id)?.origin ?? null);
  const bootedEntry = st.bootedEntry;
  for (const id of st.ids) {
    const o = st.origins.get(id)!;
    if (o.origin === null) continue;
    const meta = await imageMetadata(host, repo, id, o.origin);
    if (meta.warning !== null) warnings.push(meta.warning);
    const entry = entriesOf(st, id)[0];
    let softRebootCapable = false;
    if (st.booted !== null && id !== st.booted.id && bootedOrigin !== null && entry !== undefined && bootedEntry !== null) {
      const sameBoot = o.origin.bootDigest !== null && o.origin.bootDigest === bootedOrigin.bootDigest;
      const a = withoutComposefsKargs(splitCmdline(entry.entry.options ?? "")).join(" ");
      const b = withoutComposefsKargs(splitCmdline(bootedEntry.entry.options ?? "")).join(" ");
      softRebootCapable = sameBoot && entry.entry.options !== null && a === b;
    }
    deployments.set(id, { origin: o.origin, image: meta.info, missingVerityAllowed: entry === undefined ? false : entryInsecure(host, entry), softRebootCapable });
  }
  const annotations: Record<string, string> = {};
  // The last finalize failure: the stamp, or the copy boot-complete moved aside after reporting it.
  for (const p of [host.failureStampPath, `${host.failureStampPath}.reported`]) {
    try {
      const stamp = readFileSync(p, "utf8").trim();
      if (stamp !== "") {
        annotations["cfsboot.finalize-error"] = stamp;
        break;
      }
    } catch {}
  }
  if (bootedEntry !== null) {
    const m = /\+[0-9]+(-[0-9]+)?(?=\.conf$)/i.exec(bootedEntry.fileName);
    if (m) annotations["cfsboot.boot-counter"] = m[0];
  }
  // Skipped deployments (no origin) are dropped from the slots by buildHost with a warning of its own.
  const built = buildHost({ slots: st.slots, deployments, bootloader: st.loader.bootloader, stagedLocked: st.marker?.finalizationLocked ?? false, annotations });
  for (const w of built.warnings) if (!warnings.some((x) => x.includes(w))) warnings.push(w);
  return { host: built.host, warnings, state: st };
}
