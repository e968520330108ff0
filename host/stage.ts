// `upgrade` and `switch`: stage a new deployment for the next boot
// (bootc-composefs.md §5.2, §5.3), fixing the upstream bugs of §11.
//
// What finalize (issue 7, `cfsboot finalize-staged`) needs, and nothing more:
//   - state/deploy/<id>/ complete (etc copy of the NEW image, var link, origin);
//   - the staged entry set (`loader/entries.staged/`: the new entry as primary,
//     the booted one re-keyed as secondary; or `grub2/user.cfg.staged`);
//   - the staged marker `{"depl_id":…,"finalization_locked":…}`.
// They are written in that order, each durable before the next, after the
// /etc merge was checked: an interrupted upgrade leaves at worst an orphan
// state directory or a staged set without marker, both ignored by status
// and removed by the next gc or upgrade; the live entries are never touched.

import { type NamedEntry, entryFileName, grubMenuEntryForUki, parseCounter, planStagedEntries, withoutCounter } from "../shared/bls.ts";
import { CfsError, describeError } from "../shared/errors.ts";
import { conflictSummary, formatConflict } from "../shared/etcmerge.ts";
import { applyKargsDiff, joinCmdline, kargsDiff, parseComposefsKarg, setComposefsKarg, splitCmdline } from "../shared/kargs.ts";
import { humanBytes } from "../shared/oci.ts";
import { parseTransportRef } from "../shared/origin.ts";
import { bootLabel } from "../shared/osrelease.ts";
import {
  BOOT_TRIES,
  type PreparedImage,
  bootcTag,
  composefsKargFor,
  countsBoots,
  deploymentKargsD,
  ensureV1,
  fetchRemote,
  makeEntry,
  originFor,
  osidOf,
  prepareStored,
  pullAndPrepare,
  writeKernelDir,
  writeStateDir,
  writeUkiFile,
} from "./deploy.ts";
import { type HostState, loadHostState, removeStagedMarker, writeStagedMarker } from "./deployments.ts";
import { type LiveEntry, orderForGrub, removeStaged, writeEntrySet, writeGrubCfg } from "./entries.ts";
import { mergeInputs, planMerge } from "./etc-inputs.ts";
import { hostGc, migratePrefixesQuietly } from "./hostgc.ts";
import type { SourceOptions, RemoteImageInfo } from "./pull.ts";
import { Repository } from "./repo.ts";
import { ALGORITHM, type Host, withLock } from "./sysroot.ts";

export const FINALIZE_UNIT = "cfsboot-finalize-staged.service";

export interface StageOptions {
  mode: "upgrade" | "switch";
  /** switch: the new image reference (transport form). */
  target?: string;
  check?: boolean;
  apply?: boolean;
  /** Download only: the finalize unit will not apply it (`finalization_locked`). */
  downloadOnly?: boolean;
  source?: SourceOptions;
  out: (line: string) => void;
}

function sameImage(a: string, b: string): boolean {
  const x = parseTransportRef(a);
  const y = parseTransportRef(b);
  return x.transport === y.transport && x.image === y.image;
}

function imgrefOfOrigin(st: HostState, id: string): string | null {
  const o = st.origins.get(id)?.origin;
  if (!o || o.imageReference === null) return null;
  const ref = o.imageReference.replace(/^ostree-unverified-image:/, "").replace(/^ostree-unverified-registry:/, "docker://");
  return ref;
}

function slotName(st: HostState, id: string): string {
  if (st.slots.booted === id) return "booted";
  if (st.slots.staged === id) return "staged";
  if (st.slots.rollback === id) return "rollback";
  return "other";
}

/**
 * The booted image's /etc, the live /etc, the new image's /etc: refuse
 * conflicts (etc-merge.md §6), from the same inputs finalize uses
 * (host/etc-inputs.ts: the /etc mount modes, `.updated` left out).
 */
function checkEtcMerge(host: Host, repo: Repository, bootedId: string, p: PreparedImage, out: (l: string) => void): void {
  const r = planMerge(mergeInputs(host, repo, bootedId, p.id, { booted: host.booted()?.cmdline ?? [], next: [] }));
  if ("conflicts" in r) {
    for (const c of r.conflicts) out(formatConflict(c));
    throw new CfsError("/etc", conflictSummary(r.conflicts.length));
  }
}

function startFinalizeUnit(host: Host): void {
  if (host.directory) return;
  const r = Bun.spawnSync(["systemctl", "start", "--quiet", FINALIZE_UNIT], { stderr: "pipe" });
  if (r.exitCode !== 0) {
    const err = r.stderr.toString().trim().split("\n").pop() ?? "";
    throw new CfsError(FINALIZE_UNIT, `systemctl start failed${err ? `: ${err}` : ""}; nothing was staged`);
  }
}

function reboot(host: Host, out: (l: string) => void): void {
  if (host.directory) {
    out("--apply: a host in a directory is not rebooted");
    return;
  }
  const r = Bun.spawnSync(["systemctl", "reboot"], { stderr: "pipe" });
  if (r.exitCode !== 0) throw new CfsError("systemctl reboot", r.stderr.toString().trim() || `exit status ${r.exitCode}`);
}

/** What `--check` prints. */
function describeUpdate(target: string, remote: RemoteImageInfo, booted: { manifestDigest: string | null; layers: string[] }, out: (l: string) => void): void {
  out(`Update available for: ${target}`);
  const v = remote.manifest.annotations["org.opencontainers.image.version"];
  if (v !== undefined) out(`  Version: ${v}`);
  out(`  Digest: ${remote.manifestDigest}`);
  if (booted.manifestDigest !== null) out(`  Current digest: ${booted.manifestDigest}`);
  const have = new Set(booted.layers);
  const added = remote.config.diffIds.filter((d) => !have.has(d));
  const removed = booted.layers.filter((d) => !remote.config.diffIds.includes(d));
  out(`  Layers: ${remote.config.diffIds.length} total, ${added.length} changed, ${removed.length} removed`);
  out(`  Download: ${remote.missingLayers.length} layers, ${remote.downloadSize} bytes (${humanBytes(remote.downloadSize)})`);
}

async function bootedLayers(repo: Repository, manifestDigest: string | null): Promise<string[]> {
  if (manifestDigest === null) return [];
  try {
    const s = await repo.openOciImage(`@${manifestDigest}`);
    const { parseImageConfig } = await import("../shared/oci.ts");
    return s.config === null ? [] : parseImageConfig(s.config, "config").diffIds;
  } catch {
    return [];
  }
}

/** The staged entry set for a new deployment. */
function stagedSet(host: Host, st: HostState, p: PreparedImage, artifact: string, newOptions: string): NamedEntry[] {
  const booted = st.bootedEntry!;
  const entry = makeEntry(host, p, artifact, newOptions);
  const osid = osidOf(p);
  // Never rename an entry that is being counted (finalize-and-boot-counting.md §6.3).
  const keepBootedFileName = parseCounter(booted.fileName) !== null && parseCounter(booted.fileName)!.left > 0;
  const tries = countsBoots(host, entry) ? BOOT_TRIES : null;
  let set = planStagedEntries({ newEntry: entry, osid, booted, keepBootedFileName, newTries: tries });
  if (withoutCounter(set[0]!.fileName) === withoutCounter(set[1]!.fileName) || set[0]!.fileName === set[1]!.fileName) {
    // Same base name as the kept booted entry: blessing would make them collide.
    const primary = set[0]!;
    primary.fileName = entryFileName(osid, `${entry.version}.${p.id.slice(0, 8)}`, "primary", tries === null ? "" : `+${tries}`);
    set = [primary, set[1]!];
  }
  return orderForGrub(set, st.loader.bootloader);
}

export async function upgradeOrSwitch(host: Host, o: StageOptions): Promise<number> {
  return withLock(host, async () => {
    if (!o.check) migratePrefixesQuietly(host);
    const st = loadHostState(host);
    for (const p of st.problems) process.stderr.write(`cfsboot: warning: ${p}\n`);
    if (st.booted === null) throw new CfsError(host.directory ? `--booted-cmdline` : "/proc/cmdline", "not booted into a composefs deployment (no composefs karg)");
    const bootedId = st.booted.id;
    if (st.bootedEntry === null) throw new CfsError(`deployment ${bootedId}`, "the booted deployment has no boot entry");
    const bootedOrigin = st.origins.get(bootedId)?.origin ?? null;
    if (bootedOrigin === null) {
      const err = st.origins.get(bootedId)?.error ?? null;
      throw err !== null ? new CfsError("", err) : new CfsError(host.originPath(bootedId), "missing origin of the booted deployment");
    }
    const stagedId = st.slots.staged;
    const stagedOrigin = stagedId === null ? null : (st.origins.get(stagedId)?.origin ?? null);

    let target: string;
    if (o.mode === "switch") {
      target = o.target!;
      const spec = (stagedId !== null ? imgrefOfOrigin(st, stagedId) : null) ?? imgrefOfOrigin(st, bootedId);
      if (spec !== null && sameImage(spec, target)) {
        o.out("Image specification is unchanged.");
        return 0;
      }
    } else {
      const t = (stagedId !== null ? imgrefOfOrigin(st, stagedId) : null) ?? imgrefOfOrigin(st, bootedId);
      if (t === null) throw new CfsError(host.originPath(bootedId), "no [origin] container-image-reference to upgrade from");
      target = t;
    }

    let repo = Repository.open(host.repoPath, { writable: !o.check });
    try {
      if (!o.check && bootedOrigin.bootType === "bls") repo = ensureV1(repo);
      const remote = await fetchRemote(target, repo, o.source ?? {});
      if (stagedOrigin !== null && stagedOrigin.manifestDigest === remote.manifestDigest && sameImage(imgrefOfOrigin(st, stagedId!) ?? "", target)) {
        o.out("Update already staged. To apply update run `cfsboot upgrade --apply`.");
        if (o.apply) reboot(host, o.out);
        return 0;
      }
      // Same image as an existing deployment?
      const existing = st.ids.find((id) => st.origins.get(id)?.origin?.manifestDigest === remote.manifestDigest);
      let knownId: string | null = null;
      if (existing !== undefined) knownId = existing;
      else if (repo.resolveTag(bootcTag(remote.manifestDigest)) !== null) {
        try {
          const p0 = await prepareStored(repo, target, remote.manifestDigest);
          if (st.ids.includes(p0.id)) knownId = p0.id;
        } catch {}
      }
      if (knownId !== null) {
        if (o.mode === "upgrade") {
          o.out(`No changes in: ${target}`);
          return 0;
        }
        throw new CfsError(target, `Target image has the same fs-verity digest as the existing ${slotName(st, knownId)} deployment ${knownId}.`);
      }
      if (o.check) {
        describeUpdate(target, remote, { manifestDigest: bootedOrigin.manifestDigest, layers: await bootedLayers(repo, bootedOrigin.manifestDigest) }, o.out);
        return 0;
      }

      startFinalizeUnit(host);
      const p = await pullAndPrepare(repo, target, remote, o.source ?? {});
      if (st.ids.includes(p.id)) {
        if (o.mode === "upgrade") {
          o.out(`No changes in: ${target}`);
          return 0;
        }
        throw new CfsError(target, `Target image has the same fs-verity digest as the existing ${slotName(st, p.id)} deployment ${p.id}.`);
      }
      if (p.bootType !== bootedOrigin.bootType) {
        throw new CfsError(target, `Conflicting boot types: the booted deployment boots ${bootedOrigin.bootType === "bls" ? "Type 1 entries" : "a UKI"}, the image ${p.bootType === "bls" ? "a kernel (Type 1)" : "a UKI"}`);
      }
      checkEtcMerge(host, repo, bootedId, p, (l) => process.stderr.write(`${l}\n`));

      // Stage: forget a previous staged deployment first.
      removeStagedMarker(host);
      removeStaged(host);
      writeStateDir(host, p, originFor(p));
      const booted = st.bootedEntry;
      if (p.bootType === "uki") {
        writeUkiFile(host, p.id, p.uki!.bytes);
      }
      if (booted.source === "grub-menu") {
        const label = bootLabel(p.osRelease) ?? p.id;
        writeGrubCfg(`${host.grubDir}/user.cfg.staged`, [grubMenuEntryForUki(label, p.id), booted.menu!]);
      } else {
        let artifact = p.id;
        let options = "";
        if (p.bootType === "bls") {
          artifact = writeKernelDir(host, p.id, p.kernel!, true);
          const bootedArgs = splitCmdline(booted.entry.options ?? "");
          const insecure = parseComposefsKarg(bootedArgs, ALGORITHM)?.insecure ?? false;
          let oldD: string[];
          try {
            oldD = deploymentKargsD(repo, bootedId);
          } catch (e) {
            throw new CfsError(`booted deployment ${bootedId}`, `cannot read its kargs.d: ${describeError(e)}`);
          }
          const args = applyKargsDiff(setComposefsKarg(bootedArgs, composefsKargFor(p, insecure)), kargsDiff(oldD, p.kargsD));
          options = joinCmdline(args);
        }
        writeEntrySet(host.stagedEntriesDir, stagedSet(host, st, p, artifact, options));
      }
      writeStagedMarker(host, { deplId: p.id, finalizationLocked: o.downloadOnly ?? false });
      o.out(`Queued for next boot: ${target}`);
      const v = p.manifest.annotations["org.opencontainers.image.version"];
      if (v !== undefined) o.out(`  Version: ${v}`);
      o.out(`  Digest: ${p.manifestDigest}`);
      o.out(`  Deployment: ${p.id}`);
      try {
        await hostGc(host, repo, { prune: true });
      } catch (e) {
        process.stderr.write(`cfsboot: warning: gc after staging: ${describeError(e)}\n`);
      }
      if (o.apply) reboot(host, o.out);
      return 0;
    } finally {
      repo.close();
    }
  });
}

export type { LiveEntry };
