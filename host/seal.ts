// `cfsboot seal`: turn an insecure host (installed with --composefs-insecure,
// karg `composefs…=?…`) into a sealed one, on a machine whose kernel and
// filesystem have fs-verity:
//
//   1. every repository object gets fs-verity (FS_IOC_ENABLE_VERITY, SHA-512,
//      4 KiB blocks) and the kernel's measurement must equal the object's
//      name — a damaged object is reported and nothing else changes;
//   2. meta.json gets fs-verity, which makes the repository secure (from then
//      on only kernel-measured digests count, repository.md §3);
//   3. the composefs karg of every Type 1 entry (live and staged) loses its
//      `?`, so the next boot enforces verity (initramfs: meta.json, image and
//      overlay `verity=require`). Entry sets are rewritten atomically with
//      their file names (boot counters) unchanged.
// Each step is idempotent and comes before the one that relies on it, so an
// interrupted seal leaves a host that boots as before, and a re-run finishes.
// A UKI's karg is sealed into the UKI itself: a UKI deployment built with
// `--allow-missing-verity` stays insecure (reported); build the UKI without
// it and `cfsboot switch` to it after sealing.
//
// `--dry-run` (works without fs-verity): what would change, with every
// object's digest checked in userspace.
//
// Provisioning a sealed disk where the build machine has no fs-verity (this
// project's CI host): `install to-disk --composefs-insecure` there (a staged
// disk: mke2fs -d cannot enable fs-verity on files), boot it once, run
// `cfsboot seal` in the guest (its kernel enables verity on the ext4 created
// with -O verity), reboot: the entries now carry the sealed karg. Where the
// kernel has fs-verity, `install to-disk` without --composefs-insecure writes
// a sealed disk directly (method mount).

import { closeSync, openSync, readFileSync, readdirSync } from "node:fs";

import { toHex } from "../shared/bytes.ts";
import { CfsError, describeError } from "../shared/errors.ts";
import { joinCmdline, parseComposefsKarg, splitCmdline } from "../shared/kargs.ts";
import { ukiCmdline } from "../shared/pe.ts";
import * as sys from "../shared/sys.ts";
import { filesystemHasVerity } from "./deploy.ts";
import { sharedDigestPool } from "./digest.ts";
import { type LiveEntry, scanBlsDir, writeEntrySet } from "./entries.ts";
import { exists } from "./fsops.ts";
import { progressBar } from "./progress.ts";
import { ALGORITHM, type Host, withLock } from "./sysroot.ts";

/** The sealed form of an entry's options, or null when it has no insecure composefs karg. */
export function sealedOptions(options: string): string | null {
  const args = splitCmdline(options);
  const k = parseComposefsKarg(args, ALGORITHM);
  if (k === null || !k.insecure) return null;
  // Every composefs karg (also a second, V2 compatibility one) loses its `?`; nothing else changes.
  return joinCmdline(args.map((a) => a.replace(/^(composefs(?:\.digest)?=)\?/, "$1")));
}

export interface EntryChange {
  dir: string;
  fileName: string;
  id: string;
  before: string;
  after: string;
}

export interface SealReport {
  objects: number;
  /** Objects that had no fs-verity before (sealed now, or to seal in a dry run). */
  objectsWithoutVerity: number;
  /** Object paths (relative to the repository) whose content does not match their name. */
  corrupt: string[];
  metaHadVerity: boolean;
  entries: EntryChange[];
  /** UKI deployments whose embedded karg is insecure (cannot be sealed in place). */
  insecureUkis: string[];
  problems: string[];
  dryRun: boolean;
}

function objectFiles(repo: string): { rel: string; hex: string }[] {
  const out: { rel: string; hex: string }[] = [];
  const top = `${repo}/objects`;
  let dirs: string[];
  try {
    dirs = readdirSync(top).filter((d) => /^[0-9a-f]{2}$/.test(d)).sort();
  } catch (e) {
    throw sys.fromNodeError(top, "readdir", e);
  }
  for (const d of dirs) {
    for (const n of readdirSync(`${top}/${d}`).sort()) {
      if (/^[0-9a-f]+$/.test(n)) out.push({ rel: `objects/${d}/${n}`, hex: d + n });
    }
  }
  return out;
}

/** Plan the entry changes of one BLS directory. */
function planEntries(dir: string, report: SealReport): { entries: LiveEntry[]; skipped: string[]; changed: boolean } {
  const scan = scanBlsDir(dir);
  report.problems.push(...scan.problems);
  let changed = false;
  for (const e of scan.entries) {
    if (e.entry.options === null) continue;
    const after = sealedOptions(e.entry.options);
    if (after === null) continue;
    report.entries.push({ dir, fileName: e.fileName, id: e.id, before: e.entry.options, after });
    changed = true;
  }
  return { entries: scan.entries, skipped: scan.skipped, changed };
}

function carry(dir: string, skipped: string[]): { fileName: string; bytes: Uint8Array }[] {
  const out: { fileName: string; bytes: Uint8Array }[] = [];
  for (const f of skipped) {
    try {
      out.push({ fileName: f, bytes: new Uint8Array(readFileSync(Buffer.from(`${dir}/${f}`, "latin1"))) });
    } catch {}
  }
  return out;
}

export async function seal(host: Host, opts: { dryRun?: boolean } = {}): Promise<SealReport> {
  const dryRun = opts.dryRun ?? false;
  const repo = host.repoPath;
  if (!exists(`${repo}/meta.json`)) throw new CfsError(repo, "no composefs repository here (nothing to seal)");
  if (!dryRun && !filesystemHasVerity(repo)) {
    throw new CfsError(repo, "the file system holding the repository has no fs-verity (ext4 needs the verity feature: mkfs -O verity or tune2fs -O verity, and a kernel with CONFIG_FS_VERITY); nothing was changed");
  }
  return withLock(host, async () => {
    const report: SealReport = { objects: 0, objectsWithoutVerity: 0, corrupt: [], metaHadVerity: false, entries: [], insecureUkis: [], problems: [], dryRun };
    // 1. objects
    const objects = objectFiles(repo);
    report.objects = objects.length;
    const bar = progressBar(dryRun ? "checking" : "sealing", { unit: "objects" });
    const pool = sharedDigestPool();
    try {
      let done = 0;
      for (const o of objects) {
        const path = `${repo}/${o.rel}`;
        const fd = openSync(path, "r");
        try {
          let m: sys.VerityMeasurement | null = null;
          try {
            m = sys.measureVerity(fd, path);
          } catch (e) {
            if (!sys.isVerityUnsupported(e)) throw e;
          }
          let digest: Uint8Array;
          if (m !== null) digest = m.digest;
          else {
            report.objectsWithoutVerity++;
            if (dryRun) digest = (await pool.digestFd(fd, ALGORITHM, undefined, path)).digest;
            else {
              sys.enableVerity(fd, ALGORITHM, path);
              const after = sys.measureVerity(fd, path);
              if (after === null) throw new CfsError(path, "fs-verity was enabled but the kernel reports none");
              digest = after.digest;
            }
          }
          if (toHex(digest) !== o.hex) report.corrupt.push(o.rel);
        } finally {
          closeSync(fd);
        }
        bar.update("objects", ++done, objects.length);
      }
    } finally {
      bar.stop();
    }
    if (report.corrupt.length > 0) {
      if (dryRun) return report;
      throw new CfsError(repo, `${report.corrupt.length} object(s) do not match their names (${report.corrupt.slice(0, 3).join(", ")}${report.corrupt.length > 3 ? ", …" : ""}); run \`cfsboot repo fsck\` and pull the images again; meta.json and the boot entries were left insecure`);
    }
    // 2. meta.json
    const metaPath = `${repo}/meta.json`;
    const mfd = openSync(metaPath, "r");
    try {
      let m: sys.VerityMeasurement | null = null;
      try {
        m = sys.measureVerity(mfd, metaPath);
      } catch (e) {
        if (!sys.isVerityUnsupported(e)) throw e;
      }
      report.metaHadVerity = m !== null;
      if (m === null && !dryRun) sys.enableVerity(mfd, ALGORITHM, metaPath);
    } finally {
      closeSync(mfd);
    }
    // 3. entries (live and staged Type 1 sets), UKIs reported
    const b = host.bootloader;
    if (b === "none") throw new CfsError(host.root, "Bootloader was None: composefs deployments need a boot loader");
    for (const dir of [host.entriesDir, host.stagedEntriesDir]) {
      if (!exists(dir)) continue;
      const plan = planEntries(dir, report);
      for (const e of plan.entries) {
        const efi = e.entry.uki ?? e.entry.efi;
        if (efi === null) continue;
        try {
          const bytes = new Uint8Array(readFileSync(`${host.esp}${efi.startsWith("/") ? "" : "/"}${efi}`));
          const k = parseComposefsKarg(ukiCmdline(bytes, efi) ?? "", ALGORITHM);
          if (k?.insecure) report.insecureUkis.push(e.id);
        } catch (err) {
          report.problems.push(`${efi}: ${describeError(err)}`);
        }
      }
      if (!plan.changed || dryRun) continue;
      const entries = plan.entries.map((e) => {
        const after = e.entry.options === null ? null : sealedOptions(e.entry.options);
        return after === null ? { fileName: e.fileName, entry: e.entry } : { fileName: e.fileName, entry: { ...e.entry, options: after } };
      });
      writeEntrySet(dir, entries, carry(dir, plan.skipped));
    }
    return report;
  });
}

export function formatSealReport(r: SealReport): string {
  const lines: string[] = [];
  const verb = r.dryRun ? "would get" : "got";
  lines.push(`objects: ${r.objects} (${r.objectsWithoutVerity} ${verb} fs-verity)`);
  for (const c of r.corrupt) lines.push(`corrupt: ${c}`);
  lines.push(`meta.json: ${r.metaHadVerity ? "had fs-verity" : r.dryRun ? "would get fs-verity" : "got fs-verity"}`);
  for (const e of r.entries) lines.push(`entry ${e.fileName}: ${r.dryRun ? "would be sealed" : "sealed"} (${e.id})`);
  for (const u of r.insecureUkis) lines.push(`uki ${u}: insecure karg inside the UKI, stays insecure`);
  return lines.join("\n") + "\n";
}
