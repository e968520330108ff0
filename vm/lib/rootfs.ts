// Guest root filesystems: Debian trixie/bookworm built with debootstrap in two
// stages (vm.md §3, vm-bookworm.md §6), configured for fast unattended test
// boots, scrubbed of the mirror address, and cached as a tarball keyed by a
// hash of the recipe.
//
// Cache layout (outside the work tree; see cacheDir()):
//   debs/<suite>/debootstrap/   debootstrap --cache-dir (.deb files only)
//   debs/<suite>/apt/           /var/cache/apt/archives of the chroot apt-get
//   rootfs/<suite>-<key>/       rootfs.tar.zst, vmlinuz, systemd-bootx64.efi,
//                               linuxx64.efi.stub, meta.json, build.log
// A second build of the same suite downloads only the index files, no .deb.

import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync, copyFileSync, lstatSync } from "node:fs";
import { join } from "node:path";
import { withLock } from "./lock.ts";
import { debianMirror } from "./mirror.ts";
import { cacheDir, elapsed, fileSize, makeScratch, note, redact, rmrf, run, runLong, sha256, vmDir, writeAtomic } from "./util.ts";

/** Bump when the build steps below change in a way the package lists do not show. */
export const ROOTFS_RECIPE_VERSION = 1;

export interface GuestSpec {
  /** Debian suite (debootstrap script name). */
  suite: string;
  /** Stage 1: debootstrap --variant=minbase --include. */
  include: string[];
  /** Stage 2: apt-get install --no-install-recommends inside the chroot. */
  packages: string[];
  /** Units masked in the image: boot-time work a test boot does not need. */
  mask: string[];
}

/** Units that cost boot time under TCG and do nothing useful in a test VM (vm.md §10, §11). */
const MASKED = [
  "serial-getty@ttyS0.service", // vhangup() on the console (vm.md pitfall 6)
  "serial-getty@.service",
  "getty@tty1.service",
  "getty@.service",
  "getty-static.service",
  "getty.target",
  "console-getty.service",
  "e2scrub_reap.service",
  "e2scrub_all.timer",
  "apt-daily.timer",
  "apt-daily-upgrade.timer",
  "dpkg-db-backup.timer",
  "fstrim.timer",
  "systemd-tmpfiles-clean.timer",
  "man-db.timer",
  "systemd-networkd-wait-online.service",
];

export const TRIXIE: GuestSpec = {
  suite: "trixie",
  include: [
    "systemd", "systemd-sysv", "udev", "kmod", "dracut", "erofs-utils", "fsverity",
    "systemd-boot", "systemd-boot-efi", "e2fsprogs", "zstd", "attr",
  ],
  // linux-image-amd64 and systemd-ukify cannot go through debootstrap (vm.md pitfall 1)
  // fdisk, dosfstools, mtools: `cfsboot install to-disk` run inside the guest (sfdisk, mkfs.vfat, mcopy)
  packages: ["linux-image-amd64", "systemd-ukify", "python3-cryptography", "sbsigntool", "systemd-repart", "fdisk", "dosfstools", "mtools"],
  mask: MASKED,
};

export const BOOKWORM: GuestSpec = {
  suite: "bookworm",
  include: ["systemd", "systemd-sysv", "udev", "kmod", "e2fsprogs"],
  packages: [
    "linux-image-amd64", "dracut", "erofs-utils", "fsverity", "zstd", "attr",
    "systemd-boot", "systemd-boot-efi",
  ],
  mask: MASKED,
};

export const GUESTS: Record<string, GuestSpec> = { trixie: TRIXIE, bookworm: BOOKWORM };

/**
 * dracut configuration baked into every image. do_strip=no: dracut strips
 * every executable when binutils is present, and `strip -g` turns a Bun
 * single-file executable back into the plain bun CLI (vm.md pitfall 5).
 */
export const DRACUT_CONF = `# cfsboot test guest: generic initrds, fast compression, never strip
# (strip -g turns a Bun single-file executable back into the plain bun CLI)
hostonly="no"
hostonly_cmdline="no"
do_strip="no"
early_microcode="no"
compress="zstd -3 -T0 -q"
`;

export interface Rootfs {
  spec: GuestSpec;
  key: string;
  /** Cache directory of this rootfs. */
  dir: string;
  tarball: string;
  /** Kernel image copied out of the tree (`/boot/vmlinuz-<kver>`). */
  vmlinuz: string;
  kver: string;
  /** systemd-boot's EFI binary from the guest's systemd-boot-efi. */
  sdboot: string;
  /** systemd-stub (for UKIs), from the guest. */
  stub: string;
  meta: RootfsMeta;
}

export interface RootfsMeta {
  suite: string;
  key: string;
  recipe: number;
  kver: string;
  versions: Record<string, string>;
  osRelease: Record<string, string>;
  builtAt: string;
  buildSeconds: { debootstrap: number; apt: number; total: number };
  sizes: { tarball: number; tree: number };
}

export function rootfsKey(spec: GuestSpec): string {
  const recipe = {
    recipe: ROOTFS_RECIPE_VERSION,
    suite: spec.suite,
    include: [...spec.include].sort(),
    packages: [...spec.packages].sort(),
    mask: [...spec.mask].sort(),
    dracut: DRACUT_CONF,
    chroot: readFileSync(join(vmDir, "scripts/chroot.sh"), "utf8"),
  };
  return sha256(JSON.stringify(recipe)).slice(0, 16);
}

function load(spec: GuestSpec, key: string, dir: string): Rootfs {
  const meta = JSON.parse(readFileSync(join(dir, "meta.json"), "utf8")) as RootfsMeta;
  return {
    spec, key, dir, meta, kver: meta.kver,
    tarball: join(dir, "rootfs.tar.zst"),
    vmlinuz: join(dir, "vmlinuz"),
    sdboot: join(dir, "systemd-bootx64.efi"),
    stub: join(dir, "linuxx64.efi.stub"),
  };
}

/** The cached rootfs for `spec`, built first if missing (2–5 min cold, with downloads). */
export async function ensureRootfs(spec: GuestSpec): Promise<Rootfs> {
  const key = rootfsKey(spec);
  const dir = join(cacheDir(), "rootfs", `${spec.suite}-${key}`);
  if (existsSync(join(dir, "meta.json"))) return load(spec, key, dir);
  return withLock(`${dir}.lock`, async () => {
    if (existsSync(join(dir, "meta.json"))) return load(spec, key, dir);
    await buildRootfs(spec, key, dir);
    return load(spec, key, dir);
  });
}

export const chrootScript = join(vmDir, "scripts/chroot.sh");

/** Run a command in a guest tree through chroot.sh (private mount namespace, env -i). */
export async function inChroot(root: string, argv: string[], opts: { log: string; binds?: string[]; net?: boolean; timeoutMs?: number }): Promise<void> {
  const a = [chrootScript, root];
  for (const b of opts.binds ?? []) a.push("--bind", b);
  if (opts.net) a.push("--net");
  a.push("--", ...argv);
  await runLong(a, { log: opts.log, timeoutMs: opts.timeoutMs ?? 1_800_000 });
}

async function buildRootfs(spec: GuestSpec, key: string, dir: string): Promise<void> {
  const mirror = debianMirror();
  const t0 = performance.now();
  const work = makeScratch(`rootfs-${spec.suite}`);
  const root = join(work, "root");
  const log = join(work, "build.log");
  const debs = join(cacheDir(), "debs", spec.suite);
  const dbCache = join(debs, "debootstrap");
  const aptCache = join(debs, "apt");
  mkdirSync(dbCache, { recursive: true });
  mkdirSync(join(aptCache, "partial"), { recursive: true });
  note(`building ${spec.suite} rootfs ${key} in ${work} (log: ${log})`);
  try {
    // Stage 1. debootstrap mounts /proc etc. in the target itself: run it in a
    // private mount namespace so a killed build leaves nothing mounted.
    await runLong(
      ["unshare", "--mount", "--propagation", "private", "--", "debootstrap", "--variant=minbase",
        `--cache-dir=${dbCache}`, `--include=${spec.include.join(",")}`, spec.suite, root, mirror],
      { log, timeoutMs: 1_800_000 },
    );
    const tStage1 = performance.now();
    note(`debootstrap ${spec.suite}: ${elapsed(t0)}`);

    // Stage 2 in the chroot. No daemons start; INITRD=No skips the kernel
    // postinst's generic initramfs (the harness builds its own).
    writeFileSync(join(root, "usr/sbin/policy-rc.d"), "#!/bin/sh\nexit 101\n", { mode: 0o755 });
    mkdirSync(join(root, "etc/dracut.conf.d"), { recursive: true });
    writeFileSync(join(root, "etc/dracut.conf.d/50-cfsvm.conf"), DRACUT_CONF);
    const apt = ["-o", "APT::Sandbox::User=root", "-o", "Acquire::Languages=none", "-o", "Dpkg::Use-Pty=0", "-o", "APT::Keep-Downloaded-Packages=true"];
    const binds = [`${aptCache}:/var/cache/apt/archives`];
    await inChroot(root, ["apt-get", ...apt, "update"], { log, binds, net: true });
    await inChroot(root, ["env", "INITRD=No", "apt-get", ...apt, "install", "-y", "--no-install-recommends", ...spec.packages], { log, binds, net: true });
    const tStage2 = performance.now();
    note(`apt-get install (${spec.suite}): ${elapsed(tStage1)}`);

    configureTree(root, spec);
    scrubTree(root, mirror);
    const kver = readdirSync(join(root, "usr/lib/modules")).filter((k) => existsSync(join(root, "usr/lib/modules", k, "modules.dep")))[0];
    if (!kver) throw new Error(`${spec.suite}: no kernel modules in the tree`);
    const versions = packageVersions(root);
    const osRelease = parseOsRelease(readFileSync(join(root, "usr/lib/os-release"), "utf8"));
    const tree = Number(run(["du", "-sb", root]).stdout.toString().split(/\s/)[0]);

    // Artifacts the disk builder needs without unpacking the tarball.
    const out = `${dir}.new-${process.pid}`;
    rmrf(out);
    mkdirSync(out, { recursive: true });
    copyFileSync(join(root, "boot", `vmlinuz-${kver}`), join(out, "vmlinuz"));
    copyFileSync(join(root, "usr/lib/systemd/boot/efi/systemd-bootx64.efi"), join(out, "systemd-bootx64.efi"));
    copyFileSync(join(root, "usr/lib/systemd/boot/efi/linuxx64.efi.stub"), join(out, "linuxx64.efi.stub"));
    const tarball = join(out, "rootfs.tar.zst");
    packTree(root, tarball);
    const meta: RootfsMeta = {
      suite: spec.suite, key, recipe: ROOTFS_RECIPE_VERSION, kver, versions, osRelease,
      builtAt: new Date().toISOString(),
      buildSeconds: {
        debootstrap: Math.round((tStage1 - t0) / 100) / 10,
        apt: Math.round((tStage2 - tStage1) / 100) / 10,
        total: Math.round((performance.now() - t0) / 100) / 10,
      },
      sizes: { tarball: fileSize(tarball), tree },
    };
    const metaText = JSON.stringify(meta, null, 2) + "\n";
    if (redact(metaText) !== metaText) throw new Error("rootfs metadata would contain the mirror address");
    writeAtomic(join(out, "meta.json"), metaText);
    copyFileSync(log, join(out, "build.log"));
    rmrf(dir);
    renameSync(out, dir);
    note(`${spec.suite} rootfs ready: kernel ${kver}, ${(meta.sizes.tarball / 1e6).toFixed(0)} MB tarball, ${meta.buildSeconds.total} s`);
  } catch (e) {
    if (process.env.CFSBOOT_VM_KEEP) note(`kept the failed build in ${work}`);
    else rmrf(work);
    throw e;
  }
  rmrf(work);
}

/** Boot-time settings of the test image (vm.md §10–11). */
function configureTree(root: string, spec: GuestSpec): void {
  rmSync(join(root, "usr/sbin/policy-rc.d"), { force: true });
  const etcSystemd = join(root, "etc/systemd/system");
  mkdirSync(etcSystemd, { recursive: true });
  for (const unit of spec.mask) {
    const p = join(etcSystemd, unit);
    rmSync(p, { force: true });
    symlinkSync("/dev/null", p);
  }
  const def = join(etcSystemd, "default.target");
  rmSync(def, { force: true });
  symlinkSync("/usr/lib/systemd/system/multi-user.target", def);
  writeFileSync(join(root, "etc/hostname"), "cfsvm\n");
  chmodSync(join(root, "etc/hostname"), 0o644); // debootstrap copies the host's file with its mode
  writeFileSync(join(root, "etc/fstab"), "# written per disk by the cfsboot VM harness\n");
  mkdirSync(join(root, "efi"), { recursive: true });
  // The kernel postinst initramfs is not used (the harness builds its own).
  for (const f of readdirSync(join(root, "boot"))) if (f.startsWith("initrd.img")) rmSync(join(root, "boot", f));
  // No network in the guest; drop the resolver file debootstrap copied from the host.
  const resolv = join(root, "etc/resolv.conf");
  if (existsSync(resolv) && !lstatSync(resolv).isSymbolicLink()) {
    writeFileSync(resolv, "");
    chmodSync(resolv, 0o644);
  }
  const mid = join(root, "etc/machine-id");
  if (!existsSync(mid) || readFileSync(mid, "utf8").trim().length !== 32) {
    throw new Error(`${spec.suite}: /etc/machine-id not set by the systemd postinst`);
  }
  // ConditionNeedsUpdate=/etc and /var (ldconfig, systemd-update-done,
  // hwdb, journal catalog) would run on every fresh disk: mark both up to date.
  const usr = statSync(join(root, "usr"));
  const nsec = BigInt(Math.floor(usr.mtimeMs)) * 1_000_000n;
  const text = `# Written by the cfsboot VM harness: /usr was up to date when the image was built.\nTIMESTAMP_NSEC=${nsec}\n`;
  for (const d of ["etc", "var"]) {
    const p = join(root, d, ".updated");
    writeFileSync(p, text);
    const t = new Date(usr.mtimeMs + 60_000);
    utimesSync(p, t, t);
  }
}

/**
 * Remove every trace of the mirror: debootstrap writes it into
 * etc/apt/sources.list, var/log/bootstrap.log and the apt list file names
 * (vm.md pitfall 2); apt's binary caches contain the list names too. Then
 * check: no file in the tree may mention the mirror's host.
 */
function scrubTree(root: string, mirror: string): void {
  writeFileSync(join(root, "etc/apt/sources.list"), "");
  const lists = join(root, "var/lib/apt/lists");
  for (const f of existsSync(lists) ? readdirSync(lists) : []) {
    if (f !== "partial" && f !== "lock") rmrf(join(lists, f));
  }
  rmrf(join(lists, "partial"));
  mkdirSync(join(lists, "partial"), { recursive: true });
  rmSync(join(root, "var/log/bootstrap.log"), { force: true });
  rmrf(join(root, "var/log/apt"));
  mkdirSync(join(root, "var/log/apt"), { recursive: true });
  for (const f of readdirSync(join(root, "var/cache/apt"))) if (f.endsWith(".bin")) rmSync(join(root, "var/cache/apt", f));
  const archives = join(root, "var/cache/apt/archives");
  for (const f of existsSync(archives) ? readdirSync(archives) : []) if (f.endsWith(".deb")) rmSync(join(archives, f));
  rmrf(join(root, "debootstrap"));
  // Check what the build itself writes (/etc, /var, /root, /debootstrap);
  // package contents (/usr, dpkg's maintainer scripts) may mention a public
  // mirror in examples and are left alone.
  const url = mirror.replace(/\/+$/, "");
  const dirs = ["etc", "var", "root"].map((d) => join(root, d));
  const checks: Array<[string, string[]]> = [[url, dirs]];
  try {
    checks.push([new URL(mirror).host, dirs]);
  } catch {
    // not a URL: the whole string is checked above
  }
  for (const [needle, dirs] of checks) {
    const r = run(["grep", "-rlaF", "-D", "skip", "--exclude-dir=info", "--", needle, ...dirs], { allowFail: true });
    const hits = r.stdout.toString().trim();
    if (r.status === 0 && hits) throw new Error(`mirror address left in the guest tree:\n${redact(hits).split("\n").slice(0, 20).join("\n")}`);
    const names = run(["find", ...dirs, "-name", `*${needle.replace(/[*?[\]/]/g, "?")}*`], { allowFail: true }).stdout.toString().trim();
    if (names) throw new Error(`mirror address left in guest file names:\n${redact(names).split("\n").slice(0, 20).join("\n")}`);
  }
}

function packageVersions(root: string): Record<string, string> {
  const r = run(["dpkg-query", `--admindir=${join(root, "var/lib/dpkg")}`, "-W", "-f", "${Package} ${Version}\\n"]);
  const want = new Set(["systemd", "systemd-boot-efi", "dracut", "dracut-core", "util-linux", "e2fsprogs", "erofs-utils", "fsverity", "linux-image-amd64", "systemd-ukify"]);
  const out: Record<string, string> = {};
  for (const line of r.stdout.toString().split("\n")) {
    const [p, v] = line.split(" ");
    if (p && v && (want.has(p) || p.startsWith("linux-image-"))) out[p] = v;
  }
  return out;
}

export function parseOsRelease(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (!m || !m[1] || m[2] === undefined) continue;
    out[m[1]] = m[2].replace(/^"(.*)"$/, "$1").replace(/^'(.*)'$/, "$1");
  }
  return out;
}

const TAR_OPTS = ["--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls", "--format=posix"];

function packTree(root: string, tarball: string): void {
  run(["tar", ...TAR_OPTS, "-I", "zstd -3 -T0 -q", "-C", root, "-cf", tarball, "."]);
}

/** Unpack the cached rootfs into `dest` (created; must not exist or be empty). About 2–4 s. */
export function extractRootfs(rootfs: Rootfs, dest: string): void {
  mkdirSync(dest, { recursive: true });
  run(["tar", ...TAR_OPTS, "-I", "zstd -q -T0", "-xpf", rootfs.tarball, "-C", dest]);
}
