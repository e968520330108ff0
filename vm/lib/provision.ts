// Sealed disks, provisioned where fs-verity exists.
//
// The host this runs on has no fs-verity (and no vfat), so `cfsboot install
// to-disk` cannot write a sealed disk here. The harness runs it in an
// installer boot instead: a plain Debian 13 guest (kernel 6.12: fs-verity on
// ext4, loop devices) with cfsboot at /usr/local/bin, the demo registry's CA
// and credentials, a user-mode NIC whose only route is the registry, and one
// empty target disk per kind attached as extra virtio disks (serial
// `cfs-<kind>` → /dev/disk/by-id/virtio-cfs-<kind>). Its test unit runs, for
// each target,
//
//   cfsboot install to-disk --wipe --source-imgref docker://10.0.2.100:5000/… /dev/disk/by-id/virtio-cfs-<kind>
//
// exactly as an operator would on real hardware: GPT, ESP with systemd-boot,
// ext4 root with -O verity, the repository's objects and meta.json sealed by
// the guest kernel (install method "mount": a loop device over the root
// partition), the composefs karg without `?`. Then it powers off and the host
// keeps the disks, keyed by everything that went in (installer rootfs, the
// cfsboot executable, each target's manifest digest and install arguments):
// a second run with the same inputs boots the cached disks; scenarios work on
// sparse copies.

import { existsSync, mkdirSync, readFileSync, renameSync, statSync } from "node:fs";
import { join } from "node:path";
import type { TestRegistry } from "../../test/helpers/registry.ts";
import { type Disk, espList, openDisk } from "./disk.ts";
import { buildGuestDisk } from "./guest.ts";
import { ensureInitrd } from "./initrd.ts";
import { withLock } from "./lock.ts";
import { GUEST_NET_UP, GUEST_REGISTRY, demoPki, guestNetArgs, osimageDir, projectFiles } from "./osimage.ts";
import { describeRun, expectReport, runVm, type VmRun } from "./qemu.ts";
import { injectedReportCredentials, shq } from "./report.ts";
import type { Rootfs } from "./rootfs.ts";
import { elapsed, note, rmrf, run, sha256, writeAtomic } from "./util.ts";

export const PROVISION_RECIPE_VERSION = 1;

export interface TargetSpec {
  /** Short name: the disk serial is `cfs-<kind>` (≤ 16 chars). */
  kind: string;
  /** Image reference as the guest sees it (docker://10.0.2.100:5000/…). */
  imgref: string;
  /** Manifest digest of that image (part of the cache key). */
  manifestDigest: string;
  /** Extra `install to-disk` arguments. */
  args?: string[];
}

export interface SealedDisk extends Disk {
  kind: string;
  imgref: string;
  /** What `install to-disk` printed in the guest. */
  installOutput: string;
  /** Seconds the install took in the guest (TCG). */
  installSeconds: number;
  cached: boolean;
}

export interface ProvisionResult {
  disks: Record<string, SealedDisk>;
  /** The installer boot (undefined when every disk came from the cache). */
  run?: VmRun;
  seconds: number;
}

export const TARGET_SIZE_MIB = 3072;

function targetKey(installer: Rootfs, exeSha: string, t: TargetSpec): string {
  return sha256(JSON.stringify({ v: PROVISION_RECIPE_VERSION, installer: installer.key, exe: exeSha, kind: t.kind, imgref: t.imgref, manifest: t.manifestDigest, args: t.args ?? [], size: TARGET_SIZE_MIB })).slice(0, 20);
}

function disksDir(): string {
  return join(osimageDir(), "disks");
}

/**
 * Sealed disks for `targets`, from the cache or from one installer boot that
 * installs all missing ones. The registry must serve every target image.
 */
export async function provisionSealed(o: { installer: Rootfs; reg: TestRegistry; targets: TargetSpec[]; runDir: string }): Promise<ProvisionResult> {
  const t0 = performance.now();
  const f = projectFiles();
  const exeSha = sha256(readFileSync(f.exe));
  const keyOf = new Map(o.targets.map((t) => [t.kind, targetKey(o.installer, exeSha, t)]));
  const pathOf = (t: TargetSpec) => join(disksDir(), `${t.kind}-${keyOf.get(t.kind)}.img`);
  return withLock(join(disksDir(), "provision.lock"), async () => {
    const disks: Record<string, SealedDisk> = {};
    const missing: TargetSpec[] = [];
    for (const t of o.targets) {
      const p = pathOf(t);
      if (existsSync(p) && existsSync(`${p}.json`)) {
        const info = JSON.parse(readFileSync(`${p}.json`, "utf8")) as { installOutput: string; installSeconds: number };
        disks[t.kind] = { ...openDisk(p), kind: t.kind, imgref: t.imgref, installOutput: info.installOutput, installSeconds: info.installSeconds, cached: true };
      } else missing.push(t);
    }
    if (missing.length === 0) {
      note(`sealed disks ${o.targets.map((t) => t.kind).join(", ")} from the cache`);
      return { disks, seconds: Math.round((performance.now() - t0) / 100) / 10 };
    }
    for (const t of missing) if (!/^[a-z0-9-]{1,16}$/.test(t.kind)) throw new Error(`target kind ${t.kind}: use [a-z0-9-], at most 16 characters`);

    // The installer: plain trixie, minimal initrd, cfsboot + registry CA/credentials laid into the root.
    const pki = demoPki();
    const initrd = await ensureInitrd(o.installer);
    const auth = JSON.stringify({ auths: { [GUEST_REGISTRY]: { auth: Buffer.from(`${pki.user}:${pki.password}`).toString("base64") } } });
    const disk = buildGuestDisk({
      rootfs: o.installer, initrd, path: join(o.runDir, "installer.img"),
      entry: { id: "cfs-installer", tries: 0 }, report: false, rootSizeMiB: 2048,
      files: [
        { path: "/usr/local/bin/cfsboot", from: f.exe, mode: 0o755 },
        { path: `/etc/containers/certs.d/${GUEST_REGISTRY}/ca.crt`, from: pki.ca, mode: 0o644 },
        { path: "/etc/ostree/auth.json", data: auth, mode: 0o600 },
      ],
    });
    const extra: string[] = [...guestNetArgs(o.reg)];
    missing.forEach((t, i) => {
      const p = join(o.runDir, `target-${t.kind}.img`);
      rmrf(p);
      run(["truncate", "-s", `${TARGET_SIZE_MIB}M`, p]);
      extra.push("-drive", `if=none,id=t${i},file=${p},format=raw,cache=unsafe`);
      extra.push("-device", `virtio-blk-pci,drive=t${i},serial=cfs-${t.kind},addr=0x${(0x8 + i).toString(16)}`);
    });
    const commands = [
      { name: "net", cmd: GUEST_NET_UP },
      { name: "verity", cmd: "cat /sys/fs/ext4/features/verity && uname -r" },
      ...missing.map((t) => ({
        name: `install_${t.kind.replace(/-/g, "_")}`,
        cmd: `CFSBOOT_TIMING=1 cfsboot install to-disk --wipe --source-imgref ${shq(t.imgref)} ${(t.args ?? []).map(shq).join(" ")} /dev/disk/by-id/virtio-cfs-${t.kind} 2>&1; rc=$?; sync; exit $rc`,
      })),
    ];
    note(`installer boot: ${missing.map((t) => `${t.kind} ← ${t.imgref}`).join(", ")}`);
    const vm = await runVm({
      name: "installer", runDir: o.runDir, disk, memoryMiB: 3072, timeoutMs: 3_000_000,
      credentials: injectedReportCredentials({ commands, action: "poweroff-fast", waitSeconds: 900 }),
      extraArgs: extra,
    });
    const report = expectReport(vm);
    const problems: string[] = [];
    if (report.hook("net").rc !== 0) problems.push(`network: ${report.hook("net").err || report.hook("net").text}`);
    for (const t of missing) {
      const h = report.hook(`install_${t.kind.replace(/-/g, "_")}`);
      if (h.rc !== 0) problems.push(`install to-disk ${t.kind} (${t.imgref}) failed, exit ${h.rc}:\n${h.text.split("\n").slice(-15).join("\n")}`);
    }
    if (problems.length) throw new Error(`installer boot (${describeRun(vm)}):\n${problems.join("\n")}\nconsole log: ${vm.consoleLog}`);
    mkdirSync(disksDir(), { recursive: true });
    for (const t of missing) {
      const h = report.hook(`install_${t.kind.replace(/-/g, "_")}`);
      const src = join(o.runDir, `target-${t.kind}.img`);
      const d = openDisk(src);
      const entries = [...espList(d, "/loader/entries").filter((n) => n.endsWith(".conf")), ...(safeList(d, "/EFI/Linux/bootc"))];
      if (entries.length === 0) throw new Error(`install ${t.kind}: no boot entry on the disk after a successful install\n${h.text}`);
      const dest = pathOf(t);
      const tmp = `${dest}.tmp-${process.pid}`;
      copySparse(src, tmp);
      renameSync(tmp, dest);
      writeAtomic(`${dest}.json`, JSON.stringify({ kind: t.kind, imgref: t.imgref, manifestDigest: t.manifestDigest, args: t.args ?? [], installOutput: h.text, installSeconds: h.ms / 1000, at: new Date().toISOString(), entries }, null, 2) + "\n");
      disks[t.kind] = { ...openDisk(dest), kind: t.kind, imgref: t.imgref, installOutput: h.text, installSeconds: h.ms / 1000, cached: false };
      note(`sealed disk ${t.kind}: installed in the guest in ${(h.ms / 1000).toFixed(1)} s`);
      rmrf(src);
    }
    pruneDisks(new Set(o.targets.map((t) => pathOf(t))));
    note(`provisioning done in ${elapsed(t0)}`);
    return { disks, run: vm, seconds: Math.round((performance.now() - t0) / 100) / 10 };
  });
}

function safeList(d: Disk, dir: string): string[] {
  try {
    return espList(d, dir);
  } catch {
    return [];
  }
}

/** Keep at most the 8 newest cached disks (besides the ones just used). */
function pruneDisks(keep: Set<string>): void {
  const dir = disksDir();
  const imgs = run(["sh", "-c", 'ls -1t "$1"/*.img 2>/dev/null || true', "sh", dir]).stdout.toString().split("\n").filter(Boolean);
  let n = 0;
  for (const p of imgs) {
    if (keep.has(p)) continue;
    if (++n > 8) {
      rmrf(p);
      rmrf(`${p}.json`);
    }
  }
}

/** Copy a (sparse) disk image keeping it sparse. */
export function copySparse(src: string, dest: string): void {
  mkdirSync(join(dest, ".."), { recursive: true });
  rmrf(dest);
  run(["cp", "--sparse=always", src, dest]);
}

/** A per-scenario copy of a sealed disk, as a Disk (same ids). */
export function scenarioDisk(d: SealedDisk, path: string): SealedDisk {
  copySparse(d.path, path);
  return { ...d, path };
}

export function fileMiB(path: string): string {
  const st = statSync(path);
  return `${(st.size / 1048576).toFixed(0)} MiB (${((st.blocks * 512) / 1048576).toFixed(0)} MiB allocated)`;
}


/**
 * An insecure disk (`install to-disk --composefs-insecure`: no fs-verity
 * needed, so it runs on this host: staged install, sfdisk/mkfs.vfat/mtools/
 * mke2fs -d, no mounts), cached like the sealed ones.
 */
export async function hostInstalledDisk(o: { kind: string; imgref: string; manifestDigest: string; args?: string[] }): Promise<SealedDisk> {
  const f = projectFiles();
  const key = sha256(JSON.stringify({ v: PROVISION_RECIPE_VERSION, host: true, exe: sha256(readFileSync(f.exe)), ...o, size: TARGET_SIZE_MIB })).slice(0, 20);
  const dest = join(disksDir(), `${o.kind}-${key}.img`);
  return withLock(join(disksDir(), "provision.lock"), async () => {
    if (existsSync(dest) && existsSync(`${dest}.json`)) {
      const info = JSON.parse(readFileSync(`${dest}.json`, "utf8")) as { installOutput: string; installSeconds: number };
      return { ...openDisk(dest), kind: o.kind, imgref: o.imgref, installOutput: info.installOutput, installSeconds: info.installSeconds, cached: true };
    }
    mkdirSync(disksDir(), { recursive: true });
    const t0 = performance.now();
    const tmp = `${dest}.tmp-${process.pid}`;
    rmrf(tmp);
    const r = run([f.exe, "install", "to-disk", "--composefs-insecure", "--size", `${TARGET_SIZE_MIB}M`, "--source-imgref", o.imgref, ...(o.args ?? []), tmp], {
      env: { ...process.env, CFSBOOT_TIMING: "1" },
    });
    const seconds = Math.round((performance.now() - t0) / 100) / 10;
    const output = `${r.stdout.toString()}${r.stderr}`;
    renameSync(tmp, dest);
    writeAtomic(`${dest}.json`, JSON.stringify({ ...o, installOutput: output, installSeconds: seconds, at: new Date().toISOString() }, null, 2) + "\n");
    note(`insecure disk ${o.kind}: installed on the host in ${seconds} s`);
    return { ...openDisk(dest), kind: o.kind, imgref: o.imgref, installOutput: output, installSeconds: seconds, cached: false };
  });
}
