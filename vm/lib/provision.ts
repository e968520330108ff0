// Sealed disks, provisioned where fs-verity exists.
//
// The host this runs on has no fs-verity (and no vfat), so `cfsboot install
// to-disk` cannot write a sealed disk here. The harness uses the route
// cfsboot documents for such build machines (host/seal.ts):
//
//   1. on this host: `cfsboot install to-disk --composefs-insecure` into a
//      sparse raw image (GPT, ESP with systemd-boot, ext4 root with
//      -O verity; staged: sfdisk, mkfs.vfat + mtools, mke2fs -d, no mounts),
//      pulling docker://10.0.2.100:5000/… — the registry under the name guests
//      use, reached through a CONNECT proxy (HTTPS_PROXY; lib/proxy.ts), so
//      the recorded origin is one the installed system can upgrade from;
//   2. one sealer boot: a plain Debian 13 guest (kernel 6.12: fs-verity on
//      ext4) with cfsboot at /usr/local/bin and every new disk attached as an
//      extra virtio disk (serial `cfs-<kind>` → /dev/disk/by-id/virtio-cfs-<kind>);
//      its test unit mounts each disk's root and ESP and runs
//        cfsboot seal --sysroot /run/cfs-seal/<kind>/root --esp /run/cfs-seal/<kind>/efi
//      which enables fs-verity on every object and on meta.json (the kernel
//      measures each object against its name) and drops the `?` from the
//      composefs karg of the entries. (Sealed UKIs carry their karg inside; it
//      is sealed at build time and the seal makes the repository match it.)
//
// Running the whole install in the guest instead (an installer boot doing
// `cfsboot install to-disk /dev/vdb` from the registry) works too, but under
// TCG on this 2-core host it took > 15 minutes for one 500 MB image (pull,
// userspace hashing and the kernel's fs-verity, all emulated); the seal route
// hashes once, in the guest kernel. The disks are kept keyed by everything
// that went in (installer rootfs, the cfsboot executable, each target's
// manifest digest and install arguments): a second run with the same inputs
// boots the cached disks; scenarios work on sparse copies.

import { existsSync, mkdirSync, readFileSync, renameSync, statSync } from "node:fs";
import { join } from "node:path";
import type { TestRegistry } from "../../test/helpers/registry.ts";
import { type Disk, espList, openDisk } from "./disk.ts";
import { buildGuestDisk } from "./guest.ts";
import { ensureInitrd } from "./initrd.ts";
import { withLock } from "./lock.ts";
import { GUEST_REGISTRY, demoPki, osimageDir, projectFiles } from "./osimage.ts";
import { describeRun, expectReport, runVm, type VmRun } from "./qemu.ts";
import { injectedReportCredentials } from "./report.ts";
import type { Rootfs } from "./rootfs.ts";
import { startConnectProxy } from "./proxy.ts";
import { copySparse, elapsed, note, rmrf, run, runLong, sha256, writeAtomic } from "./util.ts";

export const PROVISION_RECIPE_VERSION = 2;

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
  /** Seconds the install took. */
  installSeconds: number;
  /** What `cfsboot seal` printed in the sealer guest ("" for insecure disks). */
  sealOutput: string;
  sealSeconds: number;
  cached: boolean;
}

export interface ProvisionResult {
  disks: Record<string, SealedDisk>;
  /** The sealer boot (undefined when every disk came from the cache). */
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
 * Sealed disks for `targets`, from the cache, or installed on this host and
 * sealed in one sealer boot. The registry must serve every target image.
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
        const info = JSON.parse(readFileSync(`${p}.json`, "utf8")) as { installOutput: string; installSeconds: number; sealOutput?: string; sealSeconds?: number };
        disks[t.kind] = { ...openDisk(p), kind: t.kind, imgref: t.imgref, installOutput: info.installOutput, installSeconds: info.installSeconds, sealOutput: info.sealOutput ?? "", sealSeconds: info.sealSeconds ?? 0, cached: true };
      } else missing.push(t);
    }
    if (missing.length === 0) {
      note(`sealed disks ${o.targets.map((t) => t.kind).join(", ")} from the cache`);
      return { disks, seconds: Math.round((performance.now() - t0) / 100) / 10 };
    }
    for (const t of missing) if (!/^[a-z0-9-]{1,16}$/.test(t.kind)) throw new Error(`target kind ${t.kind}: use [a-z0-9-], at most 16 characters`);

    const work = join(o.runDir, "provision");
    mkdirSync(work, { recursive: true });
    const pki = demoPki();

    // 1. On this host: install to-disk --composefs-insecure (staged: no mounts,
    // no fs-verity needed), pulling through the CONNECT proxy so the image
    // reference — and the origin cfsboot records — is the guest's name.
    const proxy = await startConnectProxy({ [GUEST_REGISTRY]: `127.0.0.1:${o.reg.port}` });
    const installed: Record<string, { output: string; seconds: number }> = {};
    try {
      for (const t of missing) {
        const img = join(work, `target-${t.kind}.img`);
        rmrf(img);
        const log = join(work, `install-${t.kind}.log`);
        const t1 = performance.now();
        await runLong([f.exe, "install", "to-disk", "--composefs-insecure", "--size", `${TARGET_SIZE_MIB}M`, "--cert-dir", pki.certDir, "--authfile", pki.authFile,
          "--source-imgref", t.imgref, ...(t.args ?? []), img], { log, env: { ...process.env, HTTPS_PROXY: proxy.url, https_proxy: proxy.url, NO_PROXY: "", no_proxy: "", CFSBOOT_TIMING: "1" } });
        installed[t.kind] = { output: readFileSync(log, "utf8"), seconds: Math.round((performance.now() - t1) / 100) / 10 };
        note(`install to-disk --composefs-insecure ${t.kind}: ${installed[t.kind]!.seconds} s`);
      }
    } finally {
      await proxy.stop();
    }

    // 2. The sealer boot: a plain trixie guest (kernel 6.12 with fs-verity)
    // with the disks attached runs `cfsboot seal` on each.
    const initrd = await ensureInitrd(o.installer);
    const disk = buildGuestDisk({
      rootfs: o.installer, initrd, path: join(work, "sealer.img"),
      entry: { id: "cfs-sealer", tries: 0 }, report: false, rootSizeMiB: 2048,
      files: [{ path: "/usr/local/bin/cfsboot", from: f.exe, mode: 0o755 }],
    });
    const extra: string[] = [];
    missing.forEach((t, i) => {
      extra.push("-drive", `if=none,id=t${i},file=${join(work, `target-${t.kind}.img`)},format=raw,cache=unsafe`);
      extra.push("-device", `virtio-blk-pci,drive=t${i},serial=cfs-${t.kind},addr=0x${(0x8 + i).toString(16)}`);
    });
    const hook = (t: TargetSpec) => `seal_${t.kind.replace(/-/g, "_")}`;
    const commands = [
      { name: "prepare", cmd: "modprobe vfat && udevadm settle && uname -r && cat /sys/fs/ext4/features/verity" },
      ...missing.map((t) => ({
        name: hook(t),
        cmd: `set -e; d=/dev/disk/by-id/virtio-cfs-${t.kind}; m=/run/cfs-seal/${t.kind}; mkdir -p $m/root $m/efi; ` +
          `mount "$d-part2" $m/root; mount "$d-part1" $m/efi; cfsboot seal --sysroot $m/root --esp $m/efi 2>&1; ` +
          `cat $m/efi/loader/entries/*.conf 2>/dev/null || true; sync; umount $m/efi $m/root`,
      })),
    ];
    note(`sealer boot: cfsboot seal on ${missing.map((t) => t.kind).join(", ")}`);
    const vm = await runVm({
      name: "sealer", runDir: work, disk, timeoutMs: 2_400_000,
      credentials: injectedReportCredentials({ commands, action: "poweroff-fast", waitSeconds: 900 }),
      extraArgs: extra,
    });
    const report = expectReport(vm);
    const problems: string[] = [];
    if (report.hook("prepare").rc !== 0) problems.push(`prepare: ${report.hook("prepare").err || report.hook("prepare").text}`);
    for (const t of missing) {
      const h = report.hook(hook(t));
      if (h.rc !== 0) problems.push(`cfsboot seal ${t.kind} failed, exit ${h.rc}:\n${(h.text + h.err).split("\n").slice(-15).join("\n")}`);
    }
    if (problems.length) throw new Error(`sealer boot (${describeRun(vm)}):\n${problems.join("\n")}\nconsole log: ${vm.consoleLog}`);
    mkdirSync(disksDir(), { recursive: true });
    for (const t of missing) {
      const h = report.hook(hook(t));
      const src = join(work, `target-${t.kind}.img`);
      const d = openDisk(src);
      const entries = [...espList(d, "/loader/entries").filter((n) => n.endsWith(".conf")), ...safeList(d, "/EFI/Linux/bootc")];
      if (entries.length === 0) throw new Error(`${t.kind}: no boot entry on the disk after install and seal\n${installed[t.kind]?.output}`);
      const dest = pathOf(t);
      const tmp = `${dest}.tmp-${process.pid}`;
      copySparse(src, tmp);
      renameSync(tmp, dest);
      const info = {
        kind: t.kind, imgref: t.imgref, manifestDigest: t.manifestDigest, args: t.args ?? [],
        installOutput: installed[t.kind]!.output, installSeconds: installed[t.kind]!.seconds, sealOutput: h.text, sealSeconds: h.ms / 1000,
        at: new Date().toISOString(), entries,
      };
      writeAtomic(`${dest}.json`, JSON.stringify(info, null, 2) + "\n");
      disks[t.kind] = { ...openDisk(dest), kind: t.kind, imgref: t.imgref, installOutput: info.installOutput, installSeconds: info.installSeconds, sealOutput: h.text, sealSeconds: info.sealSeconds, cached: false };
      note(`sealed disk ${t.kind}: install ${info.installSeconds} s (host), seal ${info.sealSeconds.toFixed(1)} s (guest)`);
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
      return { ...openDisk(dest), kind: o.kind, imgref: o.imgref, installOutput: info.installOutput, installSeconds: info.installSeconds, sealOutput: "", sealSeconds: 0, cached: true };
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
    return { ...openDisk(dest), kind: o.kind, imgref: o.imgref, installOutput: output, installSeconds: seconds, sealOutput: "", sealSeconds: 0, cached: false };
  });
}
