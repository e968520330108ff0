// Bootable test images for the sealed-UKI, deployment and disk tests: one
// OCI layer spec (test/helpers/oci-image.ts) describing a tiny bootable OS
// (kernel + initramfs in /usr/lib/modules/<kver>, os-release, kargs.d,
// /boot and /sysroot with content the boot transform must drop, /run stubs,
// xattrs, hardlinks, devices, an SELinux policy), and the same tree as a
// real directory: the layer tar extracted by GNU tar (test/host/oci-fixtures
// proves GNU tar reads these tars to exactly the declared tree). Every
// directory is listed explicitly, so no implicit parent differs between the
// two forms.
//
// Also: running the cfsboot executable (CFSBOOT_EXE or dist/cfsboot).

import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

import { cfsbootExe } from "./env.ts";
import { buildLayerTar, type ImageSpec, type LayerEntry } from "./oci-image.ts";

export const TEST_KVER = "6.12.0-cfstest";

const cap = new Uint8Array([0x00, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
const fileContexts = [
  "/.*\tsystem_u:object_r:default_t:s0",
  "/usr(/.*)?\tsystem_u:object_r:usr_t:s0",
  "/usr/lib/modules(/.*)?\tsystem_u:object_r:modules_object_t:s0",
  "/etc(/.*)?\tsystem_u:object_r:etc_t:s0",
  "/run(/.*)?\t<<none>>",
  "",
].join("\n");

export interface BootImageOptions {
  /** Kernel bytes (default: 200 KB of deterministic data). */
  kernel?: Uint8Array;
  initramfs?: Uint8Array;
  /** Extra text of /usr/lib/os-release. */
  osRelease?: string;
  /** kargs.d/10-test.toml `kargs` (default ["console=ttyS0", "rw"]); null for no kargs.d. */
  kargs?: string[] | null;
  /** Extra entries appended to the layer. */
  extra?: LayerEntry[];
  /** Include an SELinux policy (default true). */
  selinux?: boolean;
  /** A version marker file, to make two images differ. */
  version?: string;
}

/** The entries of the bootable test OS. */
export function bootImageEntries(o: BootImageOptions = {}): LayerEntry[] {
  const e: LayerEntry[] = [
    { type: "dir", path: "usr", mtime: { sec: 1_700_000_050, nsec: 42 } },
    { type: "dir", path: "usr/bin" },
    { type: "file", path: "usr/bin/tool", content: "#!/bin/sh\necho a tool that is long enough to be stored as an object\n", mode: 0o755, xattrs: { "security.capability": cap, "user.note": "hello" } },
    { type: "hardlink", path: "usr/bin/tool2", target: "usr/bin/tool" },
    { type: "symlink", path: "usr/bin/sh", target: "tool" },
    { type: "dir", path: "usr/lib" },
    { type: "file", path: "usr/lib/os-release", content: `NAME="cfsboot test OS"\nPRETTY_NAME="cfsboot test OS ${o.version ?? "1"}"\nID=cfs-test\nVERSION_ID=${o.version ?? "1"}\n${o.osRelease ?? ""}` },
    { type: "file", path: "usr/lib/big", size: 300_000, mtime: { sec: 1_600_000_000, nsec: 1 } },
    { type: "file", path: "usr/lib/version", content: `version ${o.version ?? "1"}\n` },
    { type: "dir", path: "usr/lib/modules" },
    { type: "dir", path: `usr/lib/modules/${TEST_KVER}` },
    o.kernel !== undefined ? { type: "file", path: `usr/lib/modules/${TEST_KVER}/vmlinuz`, content: o.kernel } : { type: "file", path: `usr/lib/modules/${TEST_KVER}/vmlinuz`, size: 200_000, seed: 3 },
    o.initramfs !== undefined ? { type: "file", path: `usr/lib/modules/${TEST_KVER}/initramfs.img`, content: o.initramfs } : { type: "file", path: `usr/lib/modules/${TEST_KVER}/initramfs.img`, size: 100_000, seed: 4 },
    { type: "dir", path: "dev" },
    { type: "chr", path: "dev/null", major: 1, minor: 3, mode: 0o666 },
    { type: "fifo", path: "dev/fifo", mode: 0o620 },
    { type: "dir", path: "etc" },
    { type: "file", path: "etc/hostname", content: "cfstest\n" },
    { type: "dir", path: "var" },
    { type: "dir", path: "var/lib" },
    { type: "dir", path: "run" },
    { type: "file", path: "run/stub", content: "stub" },
    { type: "dir", path: "boot" },
    { type: "file", path: "boot/grub.cfg", content: "set timeout=1\n" },
    { type: "dir", path: "sysroot", mtime: { sec: 1_650_000_000, nsec: 777 } },
    { type: "dir", path: "sysroot/ostree" },
  ];
  if (o.kargs !== null) {
    e.push(
      { type: "dir", path: "usr/lib/bootc" },
      { type: "dir", path: "usr/lib/bootc/kargs.d" },
      { type: "file", path: "usr/lib/bootc/kargs.d/10-test.toml", content: `kargs = [${(o.kargs ?? ["console=ttyS0", "rw"]).map((k) => JSON.stringify(k)).join(", ")}]\n` },
      { type: "file", path: "usr/lib/bootc/kargs.d/20-other-arch.toml", content: 'kargs = ["arm-only"]\nmatch-architectures = ["aarch64"]\n' },
    );
  }
  if (o.selinux ?? true) {
    e.push(
      { type: "dir", path: "etc/selinux" },
      { type: "file", path: "etc/selinux/config", content: "SELINUX=enforcing\nSELINUXTYPE=targeted\n" },
      { type: "dir", path: "etc/selinux/targeted" },
      { type: "dir", path: "etc/selinux/targeted/contexts" },
      { type: "dir", path: "etc/selinux/targeted/contexts/files" },
      { type: "file", path: "etc/selinux/targeted/contexts/files/file_contexts", content: fileContexts },
    );
  }
  e.push(...(o.extra ?? []));
  // Depth-first order (each directory's entries together): GNU tar sets a
  // directory's mtime when it is done with it, so a later entry inside it
  // would change that mtime in the extracted tree.
  const key = (x: LayerEntry) => x.path.split("/");
  return e.sort((a, b) => {
    const ka = key(a);
    const kb = key(b);
    for (let i = 0; i < Math.min(ka.length, kb.length); i++) if (ka[i] !== kb[i]) return ka[i]! < kb[i]! ? -1 : 1;
    return ka.length - kb.length;
  });
}

export function bootImageSpec(o: BootImageOptions = {}): ImageSpec {
  return { layers: [{ compression: "gzip", entries: bootImageEntries(o) }], labels: { "containers.bootc": "1" } };
}

/** Extract the layers of `spec` (no whiteouts) into `dir` with GNU tar, as root. */
export function extractSpec(spec: ImageSpec, dir: string): void {
  mkdirSync(dir, { recursive: true });
  for (const [i, layer] of spec.layers.entries()) {
    const tar = join(dir, `../.layer-${i}.tar`);
    writeFileSync(tar, buildLayerTar(layer));
    const r = spawnSync("tar", ["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf", tar, "-C", dir], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`tar -x: ${r.stderr}`);
  }
}

export interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

export const exe = (): string => process.env.CFSBOOT_EXE ?? cfsbootExe;

/** Run the cfsboot executable (asynchronously, so registry pipes keep flowing). */
export function runCfsboot(args: string[], opts: { env?: Record<string, string>; cwd?: string; timeoutMs?: number } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const env: Record<string, string> = { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin", HOME: process.env.HOME ?? "/root", CFSBOOT_NO_PROGRESS: "1", ...opts.env };
    const child = spawn(exe(), args, { env, cwd: opts.cwd, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const t = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 120_000);
    child.on("close", (status) => {
      clearTimeout(t);
      resolve({ status, stdout, stderr });
    });
  });
}

/** runCfsboot that must succeed; returns stdout. */
export async function cfsbootOk(args: string[], opts: Parameters<typeof runCfsboot>[1] = {}): Promise<string> {
  const r = await runCfsboot(args, opts);
  if (r.status !== 0) throw new Error(`cfsboot ${args.join(" ")} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}
