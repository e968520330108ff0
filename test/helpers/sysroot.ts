// Physical-root fixtures for the initramfs agent: a directory laid out as
// the root filesystem of an installed system,
//
//   <sysroot>/composefs/          the repository (meta.json, objects/, images/)
//   <sysroot>/state/deploy/<id>/  etc/ (a copy of the image's /etc), var → ../../os/default/var
//   <sysroot>/state/os/default/var/
//
// built in one of three ways:
//   "install"     from a real OCI image (test/helpers/oci-image.ts layout):
//                 `cfsboot install to-filesystem --source-imgref oci:…`
//                 writes the whole physical root (repository, state, boot
//                 entries) as on a real machine; the karg comes from the
//                 boot entry it wrote;
// or from a real directory tree:
//   "repo"        the host tool's repository code (host/repo.ts): init,
//                 objects imported from a directory scan, images committed
//                 in every format the repository is configured for;
//   "mkcomposefs" `cfsboot mkcomposefs --digest-store=<repo>/objects` (the C
//                 tool's contract; sha256 only), the image moved into the
//                 store and linked under images/, meta.json from shared/repometa.
//
// `makeSourceTree` writes the image content: copies of real programs and
// files from this machine plus every file type and the edge cases composefs
// must carry (hardlinks, xattrs, devices, fifos, ns mtimes, inline/external
// size boundary, large and empty files, odd names).

import { spawnSync } from "node:child_process";
import { chmodSync, chownSync, copyFileSync, cpSync, existsSync, linkSync, mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";

import { bstrFromUtf8, toHex } from "../../shared/bytes.ts";
import { fsverityDigest, type HashAlg } from "../../shared/fsverity.ts";
import { formatRepoMeta, newRepoMeta } from "../../shared/repometa.ts";
import * as sys from "../../shared/sys.ts";
import { Repository } from "../../host/repo.ts";
import { scanDirectory } from "../../host/scan.ts";
import { buildImage, pseudoRandom, type LayerEntry } from "./oci-image.ts";
import { osImage } from "./os-host.ts";
import { cfsbootExe, projectRoot } from "./env.ts";

export interface SysrootImage {
  /** Hex fs-verity digest = deployment id. */
  digest: string;
  version: 0 | 1 | 2;
}

export interface Sysroot {
  /** The physical root directory. */
  dir: string;
  /** The kernel command line the boot entry carries ("install" fixtures). */
  cmdline?: string;
  repo: string;
  alg: HashAlg;
  /** The image the state directory was made for (the repository's default format). */
  image: SysrootImage;
  /** Every image written (one per configured format). */
  images: SysrootImage[];
  /** The tree the images were built from. */
  source: string;
  /** <dir>/state/deploy/<digest> */
  state: string;
}

/** dist/cfsboot, built when missing. */
export function ensureExe(): string {
  if (!existsSync(cfsbootExe)) {
    const r = spawnSync(process.execPath, ["host/build.ts"], { cwd: projectRoot, stdio: "inherit" });
    if (r.status !== 0) throw new Error("building dist/cfsboot failed");
  }
  return cfsbootExe;
}

function write(path: string, data: string | Uint8Array, mode = 0o644): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, data, { mode });
  chmodSync(path, mode);
}

/**
 * The image content, in `dir` (created). `files` extra generated files
 * (for the 5,000-file benchmark). Needs root for devices and ownership.
 */
export function makeSourceTree(dir: string, opts: { files?: number } = {}): void {
  mkdirSync(dir, { recursive: true });
  for (const d of ["usr/bin", "usr/lib", "usr/share/doc", "etc/skel", "var", "sysroot", "boot", "dev", "proc", "sys", "run", "tmp", "home", "root", "opt/empty"]) {
    mkdirSync(join(dir, d), { recursive: true, mode: 0o755 });
  }
  chmodSync(join(dir, "tmp"), 0o1777);
  chmodSync(join(dir, "root"), 0o700);
  // real programs and files from this machine
  for (const [from, to] of [
    ["/usr/bin/env", "usr/bin/env"],
    ["/usr/bin/true", "usr/bin/true"],
    ["/usr/bin/sha256sum", "usr/bin/sha256sum"],
    ["/usr/lib/os-release", "usr/lib/os-release"],
    ["/etc/services", "etc/services"],
    ["/etc/protocols", "etc/protocols"],
  ] as const) {
    if (existsSync(from)) copyFileSync(from, join(dir, to));
  }
  symlinkSync("../usr/lib/os-release", join(dir, "etc/os-release"));
  linkSync(join(dir, "usr/bin/true"), join(dir, "usr/bin/true-hardlink"));
  symlinkSync("usr/bin", join(dir, "bin"));
  symlinkSync("/nonexistent/target", join(dir, "usr/lib/dangling"));
  write(join(dir, "etc/hostname"), "image-host\n");
  write(join(dir, "etc/skel/.profile"), "# profile\n");
  write(join(dir, "etc/shadow"), "root:*:19000:0:99999:7:::\n", 0o640);
  // the inline/external boundary (64 bytes inline, 65 external)
  write(join(dir, "usr/share/doc/inline-64"), "x".repeat(64));
  write(join(dir, "usr/share/doc/external-65"), "y".repeat(65));
  write(join(dir, "usr/share/doc/empty"), "");
  write(join(dir, "usr/lib/big.bin"), pseudoRandom(3 * 1024 * 1024 + 123, 7));
  write(join(dir, "usr/lib/libfake.so.1"), pseudoRandom(200_000, 3), 0o755);
  symlinkSync("libfake.so.1", join(dir, "usr/lib/libfake.so"));
  write(join(dir, "usr/bin/setuid-tool"), pseudoRandom(5000, 9), 0o4755);
  write(join(dir, "usr/share/doc/name with spaces & ünïcödé"), "odd name\n");
  write(join(dir, `usr/share/doc/${"n".repeat(255)}`), "long name\n");
  write(join(dir, "home/user-file"), "owned by 1000\n");
  chownSync(join(dir, "home/user-file"), 1000, 1000);
  chownSync(join(dir, "home"), 1000, 1000);
  sys.lsetxattr(join(dir, "usr/bin/env"), "user.origin", new TextEncoder().encode("copied from the build host"));
  sys.lsetxattr(join(dir, "usr/lib/big.bin"), "user.checksum", new Uint8Array([1, 2, 3, 0, 255]));
  sys.mknod(join(dir, "dev/null"), sys.S_IFCHR | 0o666, sys.makedev(1, 3));
  sys.mknod(join(dir, "dev/loop9"), sys.S_IFBLK | 0o660, sys.makedev(7, 9));
  sys.mkfifo(join(dir, "run/initctl"), 0o600);
  for (let i = 0; i < (opts.files ?? 0); i++) {
    const sub = join(dir, "usr/share/gen", `d${Math.floor(i / 100)}`);
    if (i % 100 === 0) mkdirSync(sub, { recursive: true });
    // a mix of inline (≤ 64 bytes) and external files, like a real /usr
    const data = i % 3 === 0 ? `file ${i}\n` : pseudoRandom(100 + ((i * 37) % 8000), i);
    writeFileSync(join(sub, `f${i}`), data);
  }
  // nanosecond mtimes, set last (creating children changes directory mtimes)
  sys.utimensat(join(dir, "usr/share/doc/inline-64"), null, [1_700_000_000, 123_456_789]);
  sys.utimensat(join(dir, "etc/os-release"), null, [1_600_000_000, 5]);
  utimesSync(join(dir, "usr/bin/sha256sum"), new Date(1_500_000_000_000), new Date(1_500_000_000_000));
}

/** Copy an image's /etc into the state directory; /var links to the shared one (bootc's layout). */
function makeState(sysroot: string, digest: string, source: string): string {
  const state = join(sysroot, "state/deploy", digest);
  if (existsSync(state)) return state;
  mkdirSync(state, { recursive: true });
  if (existsSync(join(source, "etc"))) cpSync(join(source, "etc"), join(state, "etc"), { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
  else mkdirSync(join(state, "etc"));
  writeFileSync(join(state, "etc/hostname"), "state-host\n");
  writeFileSync(join(state, "etc/machine-id"), "0123456789abcdef0123456789abcdef\n");
  if (!existsSync(join(sysroot, "state/os/default/var/lib/persistent"))) {
    mkdirSync(join(sysroot, "state/os/default/var/lib"), { recursive: true });
    writeFileSync(join(sysroot, "state/os/default/var/lib/persistent"), "kept across deployments\n");
  }
  symlinkSync("../../os/default/var", join(state, "var"));
  return state;
}

/** A physical root whose repository is written by host/repo.ts. */
export async function buildSysrootWithRepo(dir: string, source: string, opts: { alg: HashAlg; erofs?: "v1" | "dual" }): Promise<Sysroot> {
  const repoPath = join(dir, "composefs");
  mkdirSync(dir, { recursive: true });
  const { repo } = Repository.init(repoPath, { algorithm: `fsverity-${opts.alg}-12`, erofs: opts.erofs ?? "v1", insecure: true });
  try {
    const scan = await scanDirectory(bstrFromUtf8(source), { algorithm: opts.alg });
    for (const ext of scan.external) {
      const c = ext.leaf.content;
      if (c.type !== "regular" || c.digest === null) throw new Error(`scan: ${ext.path} has no digest`);
      await repo.importFile(ext.path, { size: ext.size, digest: c.digest });
    }
    const { default: def, byVersion } = await repo.commitImages(scan.root);
    const images = [...byVersion].map(([version, d]) => ({ digest: toHex(d), version }));
    const image = images.find((i) => i.digest === toHex(def))!;
    const state = makeState(dir, image.digest, source);
    return { dir, repo: repoPath, alg: opts.alg, image, images, source, state };
  } finally {
    repo.close();
  }
}

/** A physical root whose repository is made with `cfsboot mkcomposefs --digest-store` (sha256, C layout). */
export function buildSysrootWithMkcomposefs(dir: string, source: string, opts: { version?: 0 | 1 } = {}): Sysroot {
  const repoPath = join(dir, "composefs");
  const objects = join(repoPath, "objects");
  mkdirSync(join(repoPath, "images"), { recursive: true, mode: 0o700 });
  const tmpImage = join(repoPath, "image.tmp");
  const args = ["mkcomposefs", `--digest-store=${objects}`];
  if (opts.version !== undefined) args.push(`--min-version=${opts.version}`, `--max-version=${opts.version}`);
  const r = spawnSync(ensureExe(), [...args, source, tmpImage], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`mkcomposefs failed: ${r.stderr}`);
  const bytes = readFileSync(tmpImage);
  const digest = toHex(fsverityDigest(bytes, "sha256"));
  const version = bytes.readUInt32LE(12) as 0 | 1;
  mkdirSync(join(objects, digest.slice(0, 2)), { recursive: true });
  renameSync(tmpImage, join(objects, digest.slice(0, 2), digest.slice(2)));
  symlinkSync(`../objects/${digest.slice(0, 2)}/${digest.slice(2)}`, join(repoPath, "images", digest));
  writeFileSync(join(repoPath, "meta.json"), formatRepoMeta(newRepoMeta("sha256", version === 0 ? 0 : 1)));
  const state = makeState(dir, digest, source);
  const image = { digest, version };
  return { dir, repo: repoPath, alg: "sha256", image, images: [image], source, state };
}

/** The state directory of another deployment id (e.g. the extra format's image) of the fixture. */
export function addState(s: Sysroot, digest: string): string {
  return makeState(s.dir, digest, s.source);
}

/** A copy of a fixture (to damage it), with the same paths under `dir`. */
export function copySysroot(s: Sysroot, dir: string): Sysroot {
  rmSync(dir, { recursive: true, force: true });
  const r = spawnSync("cp", ["-a", "--reflink=auto", s.dir, dir]);
  if (r.status !== 0) throw new Error(`cp -a failed: ${r.stderr}`);
  return { ...s, dir, repo: join(dir, "composefs"), state: join(dir, "state/deploy", s.image.digest) };
}

/** Object path of a source file's content in the fixture's repository. */
export function objectOf(s: Sysroot, relPath: string): string {
  const hex = toHex(fsverityDigest(readFileSync(join(s.source, relPath)), s.alg));
  return join(s.repo, "objects", hex.slice(0, 2), hex.slice(2));
}

/** The karg naming an image: composefs.digest=v1-… for V0/V1, composefs= for V2. */
export function kargFor(s: Sysroot, img: SysrootImage = s.image, insecure = true): string {
  const q = insecure ? "?" : "";
  return img.version === 2 ? `composefs=${q}${img.digest}` : `composefs.digest=${q}v1-${s.alg}-12:${img.digest}`;
}

/** OCI layers with every file type and the cases composefs must carry, on top of an OS-like base. */
function richLayers(): LayerEntry[][] {
  const dirs = (...ps: string[]): LayerEntry[] => ps.map((path) => ({ type: "dir" as const, path, mode: 0o755 }));
  const first: LayerEntry[] = [
    ...dirs("usr", "usr/share", "usr/share/doc", "usr/lib", "opt", "opt/app", "opt/app/cache", "dev"),
    { type: "file", path: "usr/share/doc/inline-64", content: "x".repeat(64), mtime: { sec: 1_700_000_000, nsec: 123_456_789 } },
    { type: "file", path: "usr/share/doc/external-65", content: "y".repeat(65) },
    { type: "file", path: "usr/share/doc/empty", content: "" },
    { type: "file", path: "usr/lib/big.bin", size: 3 * 1024 * 1024 + 123, seed: 7, xattrs: { "user.checksum": new Uint8Array([1, 2, 3, 0, 255]) } },
    { type: "file", path: "usr/lib/libfake.so.1", size: 200_000, seed: 3, mode: 0o755 },
    { type: "symlink", path: "usr/lib/libfake.so", target: "libfake.so.1" },
    { type: "hardlink", path: "usr/lib/libfake-hardlink.so.1", target: "usr/lib/libfake.so.1" },
    { type: "symlink", path: "usr/lib/dangling", target: "/nonexistent/target" },
    { type: "file", path: "usr/bin/setuid-tool", size: 5000, seed: 9, mode: 0o4755 },
    { type: "file", path: "usr/share/doc/name with spaces & ünïcödé", content: "odd name\n" },
    { type: "file", path: `usr/share/doc/${"n".repeat(255)}`, content: "long name\n" },
    { type: "file", path: "opt/app/owned", content: "owned by 1000\n", uid: 1000, gid: 1000 },
    { type: "file", path: "opt/app/cache/stale", content: "removed by the next layer\n" },
    { type: "file", path: "opt/app/removed", content: "whited out\n" },
    { type: "chr", path: "dev/null", major: 1, minor: 3, mode: 0o666 },
    { type: "blk", path: "dev/loop9", major: 7, minor: 9, mode: 0o660 },
    { type: "fifo", path: "usr/lib/fifo", mode: 0o600 },
  ];
  const second: LayerEntry[] = [
    ...dirs("opt", "opt/app", "opt/app/cache"),
    { type: "whiteout", path: "opt/app/removed" },
    { type: "opaque", path: "opt/app/cache" },
    { type: "file", path: "opt/app/cache/fresh", content: "from the top layer\n" },
    { type: "file", path: "usr/lib/big.bin", size: 3 * 1024 * 1024 + 123, seed: 8, xattrs: { "user.checksum": new Uint8Array([9]) } },
  ];
  return [first, second];
}

/**
 * A physical root written by `cfsboot install to-filesystem` from an OCI
 * image layout (OS-like base + kernel + the rich layers above), insecure
 * (this machine has no fs-verity). `cmdline` is the installed boot entry's
 * options line, as systemd-boot hands it over.
 */
export function buildSysrootByInstall(dir: string): Sysroot {
  mkdirSync(dir, { recursive: true });
  const layout = join(dir, "layout");
  const { spec } = osImage({ version: "1.0", etc: { hostname: "image-host\n", motd: "hello\n", "ssh/sshd_config": "Port 22\n" }, var: { "lib/seed": "var seed\n" } });
  for (const entries of richLayers()) spec.layers.push({ entries, compression: "zstd" });
  buildImage(layout, spec, { tag: "v1" });
  const root = join(dir, "root");
  const esp = join(dir, "esp");
  mkdirSync(root, { recursive: true });
  mkdirSync(esp, { recursive: true });
  const r = spawnSync(ensureExe(), ["install", "to-filesystem", "--source-imgref", `oci:${layout}:v1`, "--composefs-insecure", "--esp", esp, root], {
    encoding: "utf8",
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dir, CFSBOOT_NO_PROGRESS: "1" },
  });
  if (r.status !== 0) throw new Error(`cfsboot install failed: ${r.stderr}`);
  const entries = join(esp, "loader/entries");
  const entry = spawnSync("sh", ["-c", `cat "${entries}"/*.conf`], { encoding: "utf8" }).stdout;
  const options = /^options (.*)$/m.exec(entry)?.[1];
  if (!options) throw new Error(`no options line in ${entries}: ${entry}`);
  const m = /composefs\.digest=\??v1-sha512-12:([0-9a-f]{128})|composefs=\??([0-9a-f]{128})/.exec(options);
  if (!m) throw new Error(`no composefs karg in ${options}`);
  const digest = m[1] ?? m[2]!;
  const version = m[1] !== undefined ? 1 : 2;
  const image = { digest, version } as SysrootImage;
  return {
    dir: root,
    cmdline: `initrd=\\cfs\\initrd.img ${options}`,
    repo: join(root, "composefs"),
    alg: "sha512",
    image,
    images: [image],
    source: "",
    state: join(root, "state/deploy", digest),
  };
}
