// The demo OS image: a bootable OCI image (bootc style) built from the cached
// guest rootfs, with cfsboot inside, stored in an OCI image layout under the
// cache and pushed to the local docker-registry.
//
// Layers (each a zstd tar, cached by a hash of what goes in, so a second run
// builds nothing and a new version costs one small layer):
//   base     the cached rootfs tarball itself (lib/rootfs.ts; the blob IS
//            rootfs.tar.zst, hard-linked into the layout)
//   cfsboot  /usr/bin/cfsboot, the dracut module + its dracut.conf.d snippet
//            (dracut/), the finalize unit, kargs.d, /etc/fstab (ESP at /efi)
//   kernel   /usr/lib/modules/<kver>/{vmlinuz,initramfs.img} (the bootc
//            layout; the initramfs is dracut's, built in a chroot of the
//            rootfs with the cfsboot module: lib/initrd.ts) — BLS images only
//   registry the registry's CA (/etc/containers/certs.d/<guest name>/ca.crt)
//            and credentials (/etc/ostree/auth.json) for pulls in the guest
//   release  os-release with IMAGE_VERSION, /usr/share/cfsboot-demo/, an /etc
//            default set that changes between versions
//   uki      /boot/EFI/Linux/cfsboot-demo.efi from `cfsboot container ukify`
//            on the merged tree of the layers above (UKI images only; the
//            kernel layer is not needed: the UKI carries kernel and initrd)
//
// The registry runs on the host's 127.0.0.1; guests reach it as
// 10.0.2.100:5000 through qemu's user-mode network (`guestfwd` to socat, one
// process per connection), so image references in guests (and the origins
// cfsboot records there) are docker://10.0.2.100:5000/<name>:<tag>. Its CA and
// password are made once and kept in the cache (<cache>/registry-pki), so the
// image — and every disk installed from it — stays the same across runs.

import { createHash } from "node:crypto";
import { copyFileSync, createReadStream, existsSync, linkSync, mkdirSync, readFileSync, readdirSync, renameSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type TestRegistry, startRegistry } from "../../test/helpers/registry.ts";
import { pushImage } from "../../test/helpers/oci-image.ts";
import { type RootFile, applyRootFiles } from "./guest.ts";
import { type Initrd, ensureInitrd } from "./initrd.ts";
import { withLock } from "./lock.ts";
import { type ReportOptions, bakedReportFiles } from "./report.ts";
import { type Rootfs, extractRootfs } from "./rootfs.ts";
import { cacheDir, elapsed, makeScratch, note, projectDir, rmrf, run, sha256, writeAtomic } from "./util.ts";

/** Bump when the layer recipes below change in a way their inputs do not show. */
export const OSIMAGE_RECIPE_VERSION = 1;

/** Where guests find the registry (qemu guestfwd). */
export const GUEST_REGISTRY_IP = "10.0.2.100";
export const GUEST_REGISTRY = `${GUEST_REGISTRY_IP}:5000`;
export const DEMO_NAME = "cfsboot/demo";
/** The UKI file the images carry in /boot/EFI/Linux. */
export const DEMO_UKI_NAME = "cfsboot-demo.efi";
export const DEMO_LAYER_MTIME = 1_700_000_000;

const MEDIA_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd";
const MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json";
const MEDIA_INDEX = "application/vnd.oci.image.index.v1+json";

export function osimageDir(): string {
  return join(cacheDir(), "osimage");
}

/** The OCI image layout every demo image is written into (tags in index.json). */
export function layoutDir(): string {
  return join(osimageDir(), "oci");
}

// ---------------------------------------------------------------------------
// Registry PKI and credentials, made once.

export interface DemoPki {
  dir: string;
  ca: string;
  cert: string;
  key: string;
  user: string;
  password: string;
  /** A --cert-dir holding only ca.crt (for host-side cfsboot commands). */
  certDir: string;
  /** containers auth.json with the credentials for GUEST_REGISTRY. */
  authFile: string;
}

function openssl(args: string[], cwd: string): void {
  run(["openssl", ...args], { cwd });
}

/** The long-lived test CA, a server certificate for 127.0.0.1 and the guest's 10.0.2.100, and the registry password. */
export function demoPki(): DemoPki {
  const dir = join(cacheDir(), "registry-pki");
  const p: DemoPki = {
    dir, ca: join(dir, "ca.crt"), cert: join(dir, "server.crt"), key: join(dir, "server.key"), user: "cfsdemo", password: "",
    certDir: join(dir, "certs"), authFile: join(dir, "auth.json"),
  };
  const pwFile = join(dir, "password");
  const valid = () =>
    existsSync(p.ca) && existsSync(p.cert) && existsSync(p.key) && existsSync(pwFile) &&
    run(["openssl", "x509", "-checkend", String(30 * 86400), "-noout", "-in", p.cert], { allowFail: true }).status === 0;
  if (!valid()) {
    const tmp = `${dir}.new-${process.pid}`;
    rmrf(tmp);
    mkdirSync(tmp, { recursive: true, mode: 0o700 });
    const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(["req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650", "-subj", "/CN=cfsboot VM test CA",
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"], tmp);
    writeFileSync(join(tmp, "server.ext"), `subjectAltName=IP:127.0.0.1,IP:${GUEST_REGISTRY_IP},DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n`);
    openssl(["req", ...ec, "-keyout", "server.key", "-out", "server.csr", "-subj", `/CN=${GUEST_REGISTRY_IP}`], tmp);
    openssl(["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.crt", "-days", "3650", "-extfile", "server.ext"], tmp);
    writeFileSync(join(tmp, "password"), `pw-${createHash("sha256").update(String(Math.random()) + Date.now()).digest("hex").slice(0, 16)}\n`, { mode: 0o600 });
    rmrf(dir);
    renameSync(tmp, dir);
  }
  p.password = readFileSync(pwFile, "utf8").trim();
  if (!existsSync(join(p.certDir, "ca.crt"))) {
    mkdirSync(p.certDir, { recursive: true });
    copyFileSync(p.ca, join(p.certDir, "ca.crt"));
  }
  const auth = guestAuthJson(p);
  if (!existsSync(p.authFile) || readFileSync(p.authFile, "utf8") !== auth) writeAtomic(p.authFile, auth, 0o600);
  return p;
}

/** containers auth.json for GUEST_REGISTRY (baked into images, given to host-side commands). */
export function guestAuthJson(p: { user: string; password: string }): string {
  return JSON.stringify({ auths: { [GUEST_REGISTRY]: { auth: Buffer.from(`${p.user}:${p.password}`).toString("base64") } } }, null, 2) + "\n";
}

/** docker-registry on 127.0.0.1 with the demo CA and credentials (htpasswd). */
export async function startDemoRegistry(): Promise<TestRegistry> {
  const pki = demoPki();
  return startRegistry({ auth: "basic", user: pki.user, password: pki.password, tls: { ca: pki.ca, cert: pki.cert, key: pki.key } });
}

/**
 * qemu arguments: a virtio NIC on an isolated user-mode network whose only
 * way out is 10.0.2.100:5000 → the registry on the host (socat per connection).
 */
export function guestNetArgs(reg: { port: number }): string[] {
  return ["-nic", `user,model=virtio-net-pci,restrict=on,guestfwd=tcp:${GUEST_REGISTRY}-cmd:socat - TCP:127.0.0.1:${reg.port}`];
}

/** Guest shell: bring up the NIC (systemd-networkd, static slirp address) and wait for it. */
export const GUEST_NET_UP = [
  "mkdir -p /run/systemd/network",
  "printf '[Match]\\nName=en* eth*\\n[Network]\\nAddress=10.0.2.15/24\\nGateway=10.0.2.2\\nLinkLocalAddressing=no\\nIPv6AcceptRA=no\\n' > /run/systemd/network/10-cfsvm.network",
  "systemctl start systemd-networkd.service",
  "/usr/lib/systemd/systemd-networkd-wait-online --timeout=90 -4",
].join(" && ");

/** The guest's reference of an image in the demo registry. */
export function guestRef(name: string, tag: string): string {
  return `docker://${GUEST_REGISTRY}/${name}:${tag}`;
}

// ---------------------------------------------------------------------------
// Layers and the layout.

export interface Layer {
  /** What it is (logs). */
  name: string;
  digest: string;
  diffId: string;
  size: number;
  mediaType: string;
}

function sha256File(path: string): Promise<string> {
  return new Promise((res, rej) => {
    const h = createHash("sha256");
    createReadStream(path, { highWaterMark: 1 << 20 })
      .on("data", (b) => h.update(b))
      .on("error", rej)
      .on("end", () => res(h.digest("hex")));
  });
}

function blobPath(digest: string): string {
  return join(layoutDir(), "blobs", "sha256", digest.replace(/^sha256:/, ""));
}

function initLayout(): void {
  const d = layoutDir();
  mkdirSync(join(d, "blobs", "sha256"), { recursive: true });
  if (!existsSync(join(d, "oci-layout"))) writeAtomic(join(d, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
}

/** Put a file into the layout's blobs (hard link when possible), return its digest. */
async function addBlobFile(path: string): Promise<string> {
  const digest = `sha256:${await sha256File(path)}`;
  const dest = blobPath(digest);
  if (!existsSync(dest)) {
    const tmp = `${dest}.tmp-${process.pid}`;
    rmrf(tmp);
    try {
      linkSync(path, tmp);
    } catch {
      copyFileSync(path, tmp);
    }
    renameSync(tmp, dest);
  }
  return digest;
}

function addBlobBytes(data: string | Uint8Array): string {
  const digest = `sha256:${sha256(data)}`;
  const dest = blobPath(digest);
  if (!existsSync(dest)) writeAtomic(dest, data);
  return digest;
}

function layerRecord(key: string): string {
  return join(osimageDir(), "layers", `${key}.json`);
}

function loadLayer(key: string): Layer | null {
  const rec = layerRecord(key);
  if (!existsSync(rec)) return null;
  const l = JSON.parse(readFileSync(rec, "utf8")) as Layer;
  return existsSync(blobPath(l.digest)) ? l : null;
}

/** The base layer: the rootfs tarball as it is cached (posix tar with xattrs, zstd). */
export async function baseLayer(rootfs: Rootfs): Promise<Layer> {
  const key = `base-${rootfs.spec.suite}-${rootfs.key}`;
  const hit = loadLayer(key);
  if (hit) return hit;
  initLayout();
  const t0 = performance.now();
  const digest = await addBlobFile(rootfs.tarball);
  const diffId = `sha256:${run(["sh", "-c", 'zstd -dc -q "$1" | sha256sum', "sh", rootfs.tarball]).stdout.toString().split(" ")[0]}`;
  const l: Layer = { name: `base (${rootfs.spec.suite} rootfs ${rootfs.key})`, digest, diffId, size: statSync(rootfs.tarball).size, mediaType: MEDIA_LAYER_ZSTD };
  writeAtomic(layerRecord(key), JSON.stringify(l, null, 2) + "\n");
  note(`layer ${l.name}: ${digest.slice(7, 19)} in ${elapsed(t0)}`);
  return l;
}

function fileKey(files: RootFile[]): string {
  const h = createHash("sha256");
  h.update(`recipe ${OSIMAGE_RECIPE_VERSION}\n`);
  for (const f of files) {
    h.update(`${f.path}\0${f.mode ?? ""}\0${f.symlink ?? ""}\0`);
    if (f.from !== undefined) h.update(readFileSync(f.from));
    else if (f.data !== undefined) h.update(f.data);
    h.update("\n");
  }
  return h.digest("hex").slice(0, 20);
}

/**
 * A layer from a list of files (directories implied, 0755 root): a
 * deterministic posix tar (sorted, numeric root owner, fixed mtime), zstd.
 */
export async function filesLayer(name: string, files: RootFile[], dirs: string[] = [], o: { omit?: string[] } = {}): Promise<Layer> {
  const extra = [...dirs, "\0omit", ...(o.omit ?? [])];
  const key = `files-${name}-${fileKey(files)}${extra.length > 1 ? `-${sha256(extra.join("\0")).slice(0, 8)}` : ""}`;
  const hit = loadLayer(key);
  if (hit) return hit;
  initLayout();
  const t0 = performance.now();
  const work = makeScratch(`layer-${name}`);
  try {
    const root = join(work, "root");
    mkdirSync(root, { recursive: true });
    for (const d of dirs) mkdirSync(join(root, d), { recursive: true, mode: 0o755 });
    applyRootFiles(root, files);
    const tar = join(work, "layer.tar");
    const zst = join(work, "layer.tar.zst");
    // `omit`: directory entries left out, so the layer does not touch their
    // metadata (the lower layers' stays; e.g. /boot for a UKI: its mtime is
    // part of the boot image the UKI names)
    const omit = new Set(o.omit ?? []);
    const names = run(["find", ".", "-mindepth", "0"], { cwd: root }).stdout.toString().split("\n").filter((n) => n !== "" && !omit.has(n)).sort();
    run(["tar", "--format=posix", "--pax-option=delete=atime,delete=ctime", "--numeric-owner", "--owner=0", "--group=0",
      `--mtime=@${DEMO_LAYER_MTIME}`, "--no-recursion", "-C", root, "--verbatim-files-from", "-T", "-", "-cf", tar], { input: names.join("\n") + "\n" });
    const diffId = `sha256:${await sha256File(tar)}`;
    run(["zstd", "-3", "-T0", "-q", "-o", zst, tar]);
    const digest = await addBlobFile(zst);
    const l: Layer = { name, digest, diffId, size: statSync(zst).size, mediaType: MEDIA_LAYER_ZSTD };
    writeAtomic(layerRecord(key), JSON.stringify(l, null, 2) + "\n");
    note(`layer ${name}: ${(l.size / 1e6).toFixed(1)} MB in ${elapsed(t0)}`);
    return l;
  } finally {
    rmrf(work);
  }
}

export interface DemoImage {
  /** Tag in the layout (`oci:<layout>:<tag>`). */
  tag: string;
  /** `org.opencontainers.image.version`. */
  version: string;
  kind: "bls" | "uki";
  ukiFormat?: 1 | 2;
  /** The composefs karg the UKI carries (UKI images). */
  ukiKarg?: string;
  manifestDigest: string;
  configDigest: string;
  layers: Layer[];
  /** Uncompressed layer bytes (diff sizes are not recorded: compressed sizes summed). */
  size: number;
  /** `oci:<layout>:<tag>` */
  ociRef: string;
}

/** Write manifest + config for `layers` and tag it in the layout's index.json. */
export function writeImage(tag: string, layers: Layer[], o: { version: string; labels?: Record<string, string> }): { manifestDigest: string; configDigest: string } {
  initLayout();
  const created = new Date(DEMO_LAYER_MTIME * 1000).toISOString().replace(/\.000Z$/, "Z");
  const config = JSON.stringify({
    created,
    architecture: "amd64",
    os: "linux",
    config: { Labels: { "containers.bootc": "1", "org.opencontainers.image.version": o.version, ...(o.labels ?? {}) } },
    rootfs: { type: "layers", diff_ids: layers.map((l) => l.diffId) },
    history: layers.map((l) => ({ created, created_by: `cfsboot VM harness: ${l.name}` })),
  });
  const configDigest = addBlobBytes(config);
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: MEDIA_MANIFEST,
    config: { mediaType: MEDIA_CONFIG, digest: configDigest, size: Buffer.byteLength(config) },
    layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
    annotations: { "org.opencontainers.image.version": o.version, "org.opencontainers.image.created": created },
  });
  const manifestDigest = addBlobBytes(manifest);
  const indexPath = join(layoutDir(), "index.json");
  const index = existsSync(indexPath)
    ? (JSON.parse(readFileSync(indexPath, "utf8")) as { schemaVersion: number; mediaType?: string; manifests: Array<{ annotations?: Record<string, string> }> })
    : { schemaVersion: 2, mediaType: MEDIA_INDEX, manifests: [] };
  index.manifests = index.manifests.filter((m) => m.annotations?.["org.opencontainers.image.ref.name"] !== tag);
  index.manifests.push({
    mediaType: MEDIA_MANIFEST, digest: manifestDigest, size: Buffer.byteLength(manifest),
    annotations: { "org.opencontainers.image.ref.name": tag },
  } as { annotations: Record<string, string> });
  writeAtomic(indexPath, JSON.stringify(index));
  return { manifestDigest, configDigest };
}

// ---------------------------------------------------------------------------
// The demo OS.

/** The project's files the image carries (read at run time from the work tree). */
export function projectFiles() {
  const exe = join(projectDir, "dist/cfsboot");
  const dracutModule = join(projectDir, "dracut/modules.d/50cfsboot");
  const dracutConf = join(projectDir, "dracut/dracut.conf.d/50-cfsboot.conf");
  if (!existsSync(exe)) throw new Error(`${exe} is missing: build it first (./node_modules/.bin/bun host/build.ts)`);
  const unitDir = join(projectDir, "systemd");
  const units = existsSync(unitDir) ? readdirSync(unitDir).filter((n) => n.endsWith(".service")).sort().map((n) => join(unitDir, n)) : [];
  const finalizeUnit = findFinalizeUnit();
  if (finalizeUnit && !units.includes(finalizeUnit)) units.push(finalizeUnit);
  return { exe, dracutModule, dracutConf, finalizeUnit, units };
}

/** cfsboot-finalize-staged.service wherever the project keeps it (null when it does not exist yet). */
export function findFinalizeUnit(): string | null {
  const name = "cfsboot-finalize-staged.service";
  for (const d of ["systemd", "units", "host/units", "host/systemd", "dracut", "data", "dist"]) {
    const p = join(projectDir, d, name);
    if (existsSync(p)) return p;
  }
  const r = run(["find", projectDir, "-name", name, "-not", "-path", "*/node_modules/*", "-not", "-path", "*/.git/*"], { allowFail: true });
  const found = r.stdout.toString().trim().split("\n").filter(Boolean)[0];
  return found ?? null;
}

/** Kernel arguments every demo image ships (kargs.d, bootc's TOML format). */
export const DEMO_KARGS = ["console=ttyS0", "systemd.firstboot=off", "panic=-1"];

export interface DemoOptions {
  rootfs: Rootfs;
  /** Bake the VM test unit into the image (bookworm: systemd 252 has no credential-injected units). */
  bakedReport?: ReportOptions;
  /** Add the registry CA and credentials (default true). */
  registry?: boolean;
}

export interface DemoBase {
  rootfs: Rootfs;
  initrd: Initrd;
  base: Layer;
  cfsboot: Layer;
  kernel: Layer;
  registry: Layer | null;
  finalizeUnit: string | null;
}

/** The cfsboot initramfs for this rootfs: the minimal set + the project's dracut module, run in a chroot (cached). */
export async function demoInitrd(rootfs: Rootfs): Promise<Initrd> {
  const f = projectFiles();
  return ensureInitrd(rootfs, {
    extraModules: [{ name: "cfsboot", dir: f.dracutModule, prio: 50 }],
    add: ["cfsboot"],
    files: [{ from: f.exe, to: "/usr/bin/cfsboot", mode: 0o755 }],
    conf: readFileSync(f.dracutConf, "utf8"),
  });
}

function moduleFiles(dir: string, dest: string): RootFile[] {
  return readdirSync(dir).sort().map((n) => ({ path: `${dest}/${n}`, from: join(dir, n), mode: statSync(join(dir, n)).mode & 0o777 }));
}

/** The layers every version shares (built once per rootfs + cfsboot). */
export async function demoBase(o: DemoOptions): Promise<DemoBase> {
  const f = projectFiles();
  const t0 = performance.now();
  const base = await baseLayer(o.rootfs);
  const initrd = await demoInitrd(o.rootfs);
  const kargs = `# cfsboot demo OS: kernel arguments of every deployment (bootc kargs.d)\nkargs = [${DEMO_KARGS.map((k) => JSON.stringify(k)).join(", ")}]\n`;
  const files: RootFile[] = [
    { path: "/usr/bin/cfsboot", from: f.exe, mode: 0o755 },
    ...moduleFiles(f.dracutModule, "/usr/lib/dracut/modules.d/50cfsboot"),
    { path: "/usr/lib/dracut/dracut.conf.d/50-cfsboot.conf", from: f.dracutConf, mode: 0o644 },
    { path: "/usr/lib/bootc/kargs.d/10-cfsboot-demo.toml", data: kargs, mode: 0o644 },
    // the ESP (partition name "esp", written by install to-disk) at /efi, for bless-boot and cfsboot
    { path: "/etc/fstab", data: "# cfsboot demo OS: / is the composefs image, /etc and /var come from its state\nPARTLABEL=esp /efi vfat umask=0077 0 2\n", mode: 0o644 },
    { path: "/etc/hostname", data: "cfsdemo\n", mode: 0o644 },
  ];
  // the project's systemd units (finalize-staged, boot-complete); those with an
  // [Install] WantedBy=multi-user.target are enabled by a vendor .wants link
  for (const u of f.units) {
    const name = u.slice(u.lastIndexOf("/") + 1);
    files.push({ path: `/usr/lib/systemd/system/${name}`, from: u, mode: 0o644 });
    if (/^\[Install\][^[]*WantedBy=multi-user\.target/m.test(readFileSync(u, "utf8"))) {
      files.push({ path: `/usr/lib/systemd/system/multi-user.target.wants/${name}`, symlink: `../${name}` });
    }
  }
  if (o.bakedReport) files.push(...bakedReportFiles(o.bakedReport));
  // /sysroot: where the agent puts the physical root (a bootable image must have it)
  const cfsboot = await filesLayer(`cfsboot-${o.rootfs.spec.suite}`, files, ["sysroot"]);
  const kernel = await filesLayer(`kernel-${o.rootfs.spec.suite}`, [
    { path: `/usr/lib/modules/${o.rootfs.kver}/vmlinuz`, from: o.rootfs.vmlinuz, mode: 0o644 },
    { path: `/usr/lib/modules/${o.rootfs.kver}/initramfs.img`, from: initrd.path, mode: 0o644 },
  ]);
  let registry: Layer | null = null;
  if (o.registry !== false) {
    const pki = demoPki();
    const auth = guestAuthJson(pki);
    registry = await filesLayer("registry", [
      { path: `/etc/containers/certs.d/${GUEST_REGISTRY}/ca.crt`, from: pki.ca, mode: 0o644 },
      { path: "/etc/ostree/auth.json", data: auth, mode: 0o600 },
    ]);
  }
  note(`demo base layers for ${o.rootfs.spec.suite} ready in ${elapsed(t0)}`);
  return { rootfs: o.rootfs, initrd, base, cfsboot, kernel, registry, finalizeUnit: f.finalizeUnit };
}

export interface ReleaseOptions {
  /** Image version (`org.opencontainers.image.version`, IMAGE_VERSION). */
  version: string;
  /** Extra files of this version (e.g. a new /etc default). */
  files?: RootFile[];
  /** Extra kargs.d arguments of this version (a second kargs.d file). */
  kargs?: string[];
}

/** A 256 KiB file with pseudo-random content, the same in every version (an object the tamper test damages). */
export function payload(): Uint8Array {
  const out = new Uint8Array(256 * 1024);
  let x = 0x2545f491;
  for (let i = 0; i < out.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

export const PAYLOAD_PATH = "/usr/share/cfsboot-demo/payload.bin";

/** The files of one release: os-release, version file, payload, /etc defaults. */
export function releaseFiles(rootfs: Rootfs, r: ReleaseOptions): RootFile[] {
  const osr = readFileSync(join(rootfs.dir, "meta.json"), "utf8");
  const base = (JSON.parse(osr) as { osRelease: Record<string, string> }).osRelease;
  const fields: Record<string, string> = {
    ...base,
    PRETTY_NAME: `cfsboot demo ${r.version} (${base.PRETTY_NAME ?? "Debian"})`,
    VARIANT: "cfsboot demo",
    VARIANT_ID: "cfsboot-demo",
    IMAGE_ID: "cfsboot-demo",
    IMAGE_VERSION: r.version,
  };
  const osRelease = Object.entries(fields).map(([k, v]) => `${k}=${/^[A-Za-z0-9._-]+$/.test(v) ? v : JSON.stringify(v)}`).join("\n") + "\n";
  const files: RootFile[] = [
    { path: "/usr/lib/os-release", data: osRelease, mode: 0o644 },
    { path: "/usr/share/cfsboot-demo/version", data: `${r.version}\n`, mode: 0o644 },
    { path: PAYLOAD_PATH, data: payload(), mode: 0o644 },
    { path: "/etc/cfsboot-demo/site.conf", data: "# a default the administrator may change\nsetting=default\n", mode: 0o644 },
    { path: "/var/lib/cfsboot-demo/seeded", data: `seeded by image version ${r.version}\n`, mode: 0o644 },
  ];
  if (r.kargs?.length) {
    files.push({ path: "/usr/lib/bootc/kargs.d/50-cfsboot-demo-release.toml", data: `kargs = [${r.kargs.map((k) => JSON.stringify(k)).join(", ")}]\n`, mode: 0o644 });
  }
  files.push(...(r.files ?? []));
  return files;
}

/** A BLS image: base + cfsboot + kernel [+ registry] + release. Tagged `<tag>` in the layout. */
export async function buildBlsImage(b: DemoBase, tag: string, r: ReleaseOptions): Promise<DemoImage> {
  const release = await filesLayer(`release-${b.rootfs.spec.suite}`, releaseFiles(b.rootfs, r));
  const layers = [b.base, b.cfsboot, b.kernel, ...(b.registry ? [b.registry] : []), release];
  const m = writeImage(tag, layers, { version: r.version });
  return { tag, version: r.version, kind: "bls", ...m, layers, size: layers.reduce((s, l) => s + l.size, 0), ociRef: `oci:${layoutDir()}:${tag}` };
}

/**
 * A UKI image: base + cfsboot [+ registry] + release + the UKI layer. The UKI
 * is made by `cfsboot container ukify --format=N` on the merged tree of the
 * other layers (unpacked in scratch), with the cfsboot initramfs and the
 * rootfs kernel given as --kernel-dir, root=PARTLABEL=root rw as --karg (a
 * UKI's command line is sealed: nothing is added at install). The build
 * checks that `cfsboot container compute-composefs-digest` of the finished
 * image agrees with the karg in the UKI.
 */
export async function buildUkiImage(b: DemoBase, tag: string, r: ReleaseOptions, format: 1 | 2): Promise<DemoImage> {
  const f = projectFiles();
  const release = await filesLayer(`release-${b.rootfs.spec.suite}`, releaseFiles(b.rootfs, r));
  const lower = [b.base, b.cfsboot, ...(b.registry ? [b.registry] : []), release];
  const key = sha256(JSON.stringify({ v: OSIMAGE_RECIPE_VERSION, lower: lower.map((l) => l.digest), format, initrd: b.initrd.key, exe: sha256(readFileSync(f.exe)) })).slice(0, 20);
  const rec = join(osimageDir(), "uki", `${key}.json`);
  let uki: Layer | null = null;
  let karg = "";
  if (existsSync(rec)) {
    const j = JSON.parse(readFileSync(rec, "utf8")) as { layer: Layer; karg: string };
    if (existsSync(blobPath(j.layer.digest))) ({ layer: uki, karg } = j);
  }
  if (!uki) {
    const t0 = performance.now();
    const work = makeScratch("uki");
    try {
      const tree = join(work, "tree");
      extractRootfs(b.rootfs, tree);
      for (const l of lower.slice(1)) {
        run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-I", "zstd -dc -q", "-xpf", blobPath(l.digest), "-C", tree]);
      }
      const kdir = join(work, "kernel", b.rootfs.kver);
      mkdirSync(kdir, { recursive: true });
      copyFileSync(b.rootfs.vmlinuz, join(kdir, "vmlinuz"));
      copyFileSync(b.initrd.path, join(kdir, "initramfs.img"));
      const out = join(work, DEMO_UKI_NAME);
      const res = run([f.exe, "container", "ukify", "--rootfs", tree, `--format=${format}`, "--kernel-dir", kdir,
        "--karg", "root=PARTLABEL=root", "--karg", "rw", "--", "--output", out]);
      note(`container ukify --format=${format}: ${res.stdout.toString().trim().split("\n").slice(-1)[0] ?? ""}`);
      // read back with binutils (independent of cfsboot's PE code)
      const section = join(work, "cmdline.bin");
      run(["objcopy", "-O", "binary", "--only-section=.cmdline", out, section]);
      const cmdline = readFileSync(section, "latin1").replace(/\0+$/, "").trim();
      const m = /(?:^|\s)(composefs(?:\.digest)?=\S+)/.exec(cmdline);
      if (!m?.[1]) throw new Error(`UKI .cmdline has no composefs karg: ${cmdline}`);
      karg = m[1];
      const ukiFile = join(work, "uki-copy");
      copyFileSync(out, ukiFile);
      uki = await filesLayer(`uki-f${format}`, [{ path: `/boot/EFI/Linux/${DEMO_UKI_NAME}`, from: ukiFile, mode: 0o644 }], [], { omit: [".", "./boot"] });
      writeAtomic(rec, JSON.stringify({ layer: uki, karg, cmdline }, null, 2) + "\n");
      note(`UKI --format=${format} (${karg.slice(0, 40)}…) in ${elapsed(t0)}`);
    } finally {
      rmrf(work);
    }
  }
  const layers = [...lower, uki];
  const m = writeImage(tag, layers, { version: r.version });
  const img: DemoImage = {
    tag, version: r.version, kind: "uki", ukiFormat: format, ukiKarg: karg, ...m, layers,
    size: layers.reduce((s, l) => s + l.size, 0), ociRef: `oci:${layoutDir()}:${tag}`,
  };
  // The UKI must name the image cfsboot computes from the layers.
  const digest = imageId(img, format);
  const hex = /([0-9a-f]{128})\s*$/.exec(karg)?.[1];
  if (!hex || digest !== hex) throw new Error(`UKI karg ${karg} does not name the image: compute-composefs-digest says ${digest}`);
  return img;
}

/** Push a layout image to the registry as `<name>:<tag>` (skopeo, digests preserved). */
export async function pushDemo(img: DemoImage, reg: TestRegistry, name: string, tag: string): Promise<void> {
  const t0 = performance.now();
  await pushImage(layoutDir(), img.tag, reg, name, tag);
  note(`pushed ${img.tag} (${(img.size / 1e6).toFixed(0)} MB compressed) as ${name}:${tag} in ${elapsed(t0)}`);
}

/** Lock for building into the layout (several test files or the demo may run one after another). */
export function withLayoutLock<T>(fn: () => Promise<T>): Promise<T> {
  return withLock(join(osimageDir(), "build.lock"), fn);
}


/**
 * The composefs image id (deployment id) of an image, computed on the host
 * with `cfsboot container compute-composefs-digest` (an independent check of
 * what the guest booted); cached by manifest digest.
 */
export function imageId(img: DemoImage, format: 1 | 2 = 1): string {
  const f = projectFiles();
  const rec = join(osimageDir(), "ids", `${img.manifestDigest.replace(/^sha256:/, "")}-f${format}-${sha256(readFileSync(f.exe)).slice(0, 12)}`);
  if (existsSync(rec)) return readFileSync(rec, "utf8").trim();
  const out = run([f.exe, "container", "compute-composefs-digest", `--format=${format}`, img.ociRef]).stdout.toString().trim();
  const hex = /([0-9a-f]{128})\s*$/.exec(out)?.[1];
  if (!hex) throw new Error(`compute-composefs-digest ${img.ociRef}: unexpected output ${out}`);
  writeAtomic(rec, `${hex}\n`);
  return hex;
}
