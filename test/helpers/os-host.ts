// OS-like OCI images and composefs hosts in a directory, for the host
// deployment tests (test/host/deploy*.test.ts).
//
//   const img = osImage({ version: "42.1", kernel: "k1", etc: { "hostname": "h\n" }, kargs: { "10-console.toml": 'kargs = ["console=ttyS0"]' } });
//   buildImage(layout, img.spec, { tag: "v1" }); await pushImage(layout, "v1", reg, "os", "v1");
//   const h = makeHostDir(tmp);               // { root, esp, boot }
//   cfs(h, ["install", "to-filesystem", …, h.root]); cfs(h, ["status", "--json"], { booted: id })
//
// An image has what bootc and cfsboot look for: /usr/lib/modules/<kver>/
// {vmlinuz, initramfs.img}, /usr/lib/os-release (ID, NAME, VERSION_ID,
// PRETTY_NAME), /etc files, /usr/lib/bootc/kargs.d/*.toml, /var content,
// empty /boot and /sysroot. Layers: a "base" layer (directories, os-release,
// /etc, /var, kargs.d) and a "kernel" layer (vmlinuz/initramfs), so two
// versions can share or differ in either.

import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

import type { ImageSpec, LayerEntry } from "./oci-image.ts";
import { cfsbootExe } from "./env.ts";

export interface OsImageOptions {
  /** VERSION_ID (also the version annotation). */
  version: string;
  osId?: string;
  /** Seed of the kernel bytes: equal seeds → equal kernels (shared kernel directory). */
  kernel?: string;
  kver?: string;
  kernelSize?: number;
  /** /etc files: path (relative to /etc) → content; a value of null makes a directory. */
  etc?: Record<string, string | null>;
  /** /usr/lib/bootc/kargs.d files. */
  kargs?: Record<string, string>;
  /** /var files. */
  var?: Record<string, string>;
  /** Extra files anywhere (absolute path → content). */
  files?: Record<string, string | Uint8Array>;
  /** An extra layer with this many bytes of random data (for slow pulls). */
  bulk?: number;
  created?: string;
}

function textBytes(seed: string, size: number): Uint8Array {
  const out = new Uint8Array(size);
  let x = 0;
  for (const c of seed) x = (x * 31 + c.charCodeAt(0)) >>> 0;
  x ||= 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/** The kernel and initramfs bytes an image built with these options carries. */
export function kernelBytes(o: OsImageOptions): { vmlinuz: Uint8Array; initrd: Uint8Array } {
  const seed = o.kernel ?? "kernel-1";
  return { vmlinuz: textBytes(`vmlinuz:${seed}`, o.kernelSize ?? 70_000), initrd: textBytes(`initrd:${seed}`, (o.kernelSize ?? 70_000) / 2) };
}

export function osImage(o: OsImageOptions): { spec: ImageSpec; kver: string } {
  const kver = o.kver ?? "6.1.0-test";
  const id = o.osId ?? "testos";
  const dirs = ["usr", "usr/lib", "usr/lib/modules", `usr/lib/modules/${kver}`, "usr/lib/bootc", "usr/lib/bootc/kargs.d", "usr/bin", "etc", "var", "var/lib", "boot", "sysroot", "run", "tmp"];
  const base: LayerEntry[] = dirs.map((d) => ({ type: "dir" as const, path: d, mode: d === "tmp" ? 0o1777 : 0o755 }));
  base.push({
    type: "file",
    path: "usr/lib/os-release",
    content: `NAME="Test OS"\nID=${id}\nVERSION_ID=${o.version}\nPRETTY_NAME="Test OS ${o.version}"\n`,
  });
  base.push({ type: "symlink", path: "etc/os-release", target: "../usr/lib/os-release" });
  base.push({ type: "file", path: "usr/bin/hello", content: `#!/bin/sh\necho hello ${o.version}\n`, mode: 0o755 });
  const etc = o.etc ?? { hostname: "testhost\n", "motd": `Test OS ${o.version}\n` };
  for (const [p, c] of Object.entries(etc)) {
    const parts = p.split("/");
    for (let i = 1; i < parts.length; i++) {
      const d = `etc/${parts.slice(0, i).join("/")}`;
      if (!base.some((e) => e.type === "dir" && e.path === d)) base.push({ type: "dir", path: d, mode: 0o755 });
    }
    if (c === null) {
      if (!base.some((e) => e.type === "dir" && e.path === `etc/${p}`)) base.push({ type: "dir", path: `etc/${p}`, mode: 0o755 });
    } else base.push({ type: "file", path: `etc/${p}`, content: c, mode: p.includes("secret") ? 0o600 : 0o644 });
  }
  base.push({ type: "file", path: "etc/.updated", content: "# updated\n" });
  for (const [n, c] of Object.entries(o.kargs ?? {})) base.push({ type: "file", path: `usr/lib/bootc/kargs.d/${n}`, content: c });
  for (const [p, c] of Object.entries(o.var ?? { "lib/seed": "var seed\n" })) {
    const parts = p.split("/");
    for (let i = 1; i < parts.length; i++) {
      const d = `var/${parts.slice(0, i).join("/")}`;
      if (!base.some((e) => e.type === "dir" && e.path === d)) base.push({ type: "dir", path: d, mode: 0o755 });
    }
    base.push({ type: "file", path: `var/${p}`, content: c });
  }
  for (const [p, c] of Object.entries(o.files ?? {})) base.push({ type: "file", path: p.replace(/^\//, ""), content: c });
  const k = kernelBytes(o);
  const kernelLayer: LayerEntry[] = [
    { type: "dir", path: "usr", mode: 0o755 },
    { type: "dir", path: "usr/lib", mode: 0o755 },
    { type: "dir", path: "usr/lib/modules", mode: 0o755 },
    { type: "dir", path: `usr/lib/modules/${kver}`, mode: 0o755 },
    { type: "file", path: `usr/lib/modules/${kver}/vmlinuz`, content: k.vmlinuz },
    { type: "file", path: `usr/lib/modules/${kver}/initramfs.img`, content: k.initrd },
  ];
  const layers: ImageSpec["layers"] = [{ entries: base }, { entries: kernelLayer }];
  if (o.bulk !== undefined && o.bulk > 0) {
    layers.push({ compression: "none", entries: [{ type: "dir", path: "usr", mode: 0o755 }, { type: "dir", path: "usr/share", mode: 0o755 }, { type: "file", path: `usr/share/bulk-${o.version}`, content: textBytes(`bulk:${o.version}`, o.bulk) }] });
  }
  return {
    spec: { layers, created: o.created ?? "2026-01-02T03:04:05Z", annotations: { "org.opencontainers.image.version": o.version } },
    kver,
  };
}

export interface HostDir {
  root: string;
  esp: string;
  boot: string;
  /** Where the booted command line is kept (tests write it to "boot" a deployment). */
  cmdline: string;
  home: string;
}

/** An empty physical root, ESP and boot directory under `dir`. */
export function makeHostDir(dir: string): HostDir {
  const h: HostDir = { root: join(dir, "root"), esp: join(dir, "esp"), boot: join(dir, "root", "boot"), cmdline: join(dir, "cmdline"), home: join(dir, "home") };
  for (const d of [h.root, h.esp, h.boot, h.home]) mkdirSync(d, { recursive: true });
  writeFileSync(h.cmdline, "BOOT_IMAGE=/vmlinuz quiet\n");
  return h;
}

export interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Run cfsboot; `env` adds variables (HOME is the host dir's home unless given). */
export function cfs(args: string[], env: Record<string, string> = {}, timeout = 120_000): Run {
  const r = spawnSync(cfsbootExe, args, { env: { PATH: process.env.PATH ?? "/usr/bin:/bin", CFSBOOT_NO_PROGRESS: "1", ...env }, timeout, maxBuffer: 64 << 20 });
  return { status: r.status, stdout: r.stdout?.toString("utf8") ?? "", stderr: r.stderr?.toString("utf8") ?? "" };
}

/** `cfs` without blocking the event loop (for commands that talk to a server running in this process). */
export function cfsAsync(args: string[], env: Record<string, string> = {}, timeout = 120_000): Promise<Run> {
  return new Promise<Run>((res) => {
    const child = spawn(cfsbootExe, args, { env: { PATH: process.env.PATH ?? "/usr/bin:/bin", CFSBOOT_NO_PROGRESS: "1", ...env }, timeout });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("close", (status) => res({ status, stdout, stderr }));
  });
}

/** The host options for a host dir, booted from its cmdline file. */
export function hostArgs(h: HostDir): string[] {
  return ["--sysroot", h.root, "--esp", h.esp, "--booted-cmdline", h.cmdline];
}

/** "Boot" the deployment an entry file names: its options become the booted command line. */
export function bootEntry(h: HostDir, entryPath: string): void {
  const text = readFileSync(entryPath, "utf8");
  const m = /^options (.*)$/m.exec(text);
  if (!m) throw new Error(`${entryPath}: no options line`);
  writeFileSync(h.cmdline, `initrd=\\EFI\\Linux\\x\\initrd ${m[1]}\n`);
}

/** Entry files of a loader directory (sorted). */
export function entryFiles(dir: string): string[] {
  try {
    return readdirSync(dir).filter((n) => n.endsWith(".conf")).sort();
  } catch {
    return [];
  }
}

/** HOME for cfsboot runs that trusts the test registry's CA (containers certs.d under $HOME). */
export function registryHome(home: string, certsD: string): Record<string, string> {
  const dst = join(home, ".config/containers/certs.d");
  mkdirSync(dst, { recursive: true });
  spawnSync("cp", ["-a", `${certsD}/.`, dst]);
  return { HOME: home };
}

/**
 * What finalize does to the boot entries (the /etc merge aside): the staged
 * set replaces the live one and the marker goes. Then "boot" the new default.
 */
export function finalizeByHand(h: HostDir, loaderRoot: string): void {
  const live = join(loaderRoot, "loader/entries");
  const staged = join(loaderRoot, "loader/entries.staged");
  spawnSync("rm", ["-rf", live]);
  spawnSync("mv", [staged, live]);
  spawnSync("rm", ["-rf", join(h.root, "run")]);
}

/** systemd-bless-boot good: drop the counter from an entry file name. Returns the new path. */
export function bless(entryPath: string): string {
  const m = /^(.*)\+[0-9]+(-[0-9]+)?\.conf$/.exec(entryPath);
  if (!m) return entryPath;
  spawnSync("mv", [entryPath, `${m[1]}.conf`]);
  return `${m[1]}.conf`;
}
