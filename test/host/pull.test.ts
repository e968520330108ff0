// `cfsboot repo pull` through every transport, checked against independent
// tools: a real docker-registry (htpasswd auth over TLS with a CA made here),
// images built by test/helpers/oci-image.ts (multi-layer gzip/zstd/plain,
// whiteouts, opaque dirs, hardlinks, xattrs, devices, symlinks, large files,
// ns mtimes, an SELinux policy, a kernel), pushed with skopeo. Each pulled
// tree, mounted from the repository (EROFS + overlay over objects/), must
// equal `umoci unpack` of the same image file by file.

import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, lstatSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { gzipSync } from "node:zlib";

import { canRun, hasTool, isRoot } from "../helpers/env.ts";
import { buildImage, buildIndex, pushImage, skopeo, insecurePolicy, sha256, type BuiltImage, type ImageSpec } from "../helpers/oci-image.ts";
import { startRegistry, type TestRegistry } from "../helpers/registry.ts";
import { cfsboot, ensureExe, mountCompare, parsePullOutput, umociReference } from "../helpers/pull-env.ts";
import { Repository } from "../../host/repo.ts";
import { fetchManifestAndConfig, imageBootResources, imageTree } from "../../host/pull.ts";
import { toHex } from "../../shared/bytes.ts";
import { writeErofs } from "../../shared/erofs/writer.ts";
import { fsverityDigest } from "../../shared/fsverity.ts";
import { lookup, type Dir } from "../../shared/tree.ts";

const cap = new Uint8Array([0x00, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
const fileContexts = [
  "/.*\tsystem_u:object_r:default_t:s0",
  "/usr(/.*)?\tsystem_u:object_r:usr_t:s0",
  "/usr/bin(/.*)?\tsystem_u:object_r:bin_t:s0",
  "/usr/lib/modules(/.*)?\tsystem_u:object_r:modules_object_t:s0",
  "/etc(/.*)?\tsystem_u:object_r:etc_t:s0",
  "/dev/null\t-c\tsystem_u:object_r:null_device_t:s0",
  "/run(/.*)?\t<<none>>",
  "",
].join("\n");

const spec: ImageSpec = {
  layers: [
    {
      compression: "gzip",
      entries: [
        { type: "dir", path: "usr", mtime: { sec: 1_700_000_050, nsec: 42 } },
        { type: "dir", path: "usr/bin", mode: 0o750, uid: 1000, gid: 1001, mtime: { sec: 1_700_000_100, nsec: 250_000_000 } },
        { type: "file", path: "usr/bin/tool", content: "#!/bin/sh\necho tool version one, long enough to be an object\n", mode: 0o4755, mtime: { sec: 1_700_000_200, nsec: 123_456_789 }, xattrs: { "security.capability": cap, "user.note": "hello" } },
        { type: "hardlink", path: "usr/bin/tool2", target: "usr/bin/tool" },
        { type: "symlink", path: "usr/bin/sh", target: "tool", mtime: 1_700_000_300 },
        { type: "dir", path: "usr/lib" },
        { type: "file", path: "usr/lib/big", size: 3_000_000, uid: 7, gid: 8, mtime: { sec: 1_600_000_000, nsec: 1 } },
        { type: "file", path: "usr/lib/b1024", size: 1024 },
        { type: "file", path: "usr/lib/s64", size: 64 },
        { type: "file", path: "usr/lib/s65", size: 65 },
        { type: "file", path: "usr/lib/empty", content: "" },
        { type: "dir", path: "usr/lib/modules" },
        { type: "dir", path: "usr/lib/modules/6.1.0-test" },
        { type: "file", path: "usr/lib/modules/6.1.0-test/vmlinuz", size: 200_000 },
        { type: "file", path: "usr/lib/modules/6.1.0-test/initramfs.img", size: 100_000 },
        { type: "file", path: "usr/lib/os-release", content: "ID=cfstest\nVERSION_ID=1\n" },
        { type: "dir", path: "dev" },
        { type: "chr", path: "dev/null", major: 1, minor: 3, mode: 0o666 },
        { type: "blk", path: "dev/bigdev", major: 259, minor: 70_000, mode: 0o600 },
        { type: "fifo", path: "dev/fifo", mode: 0o620 },
        { type: "dir", path: "etc" },
        { type: "file", path: "etc/old", content: "old" },
        { type: "file", path: "etc/keep", content: "keep", mode: 0o600 },
        { type: "dir", path: "etc/sub" },
        { type: "file", path: "etc/sub/x", content: "x" },
        { type: "dir", path: "opt" },
        { type: "file", path: "opt/a", size: 5000 },
        { type: "file", path: "opt/b", content: "b" },
        { type: "dir", path: "run" },
        { type: "dir", path: "run/lock" },
        { type: "file", path: "run/stub", content: "stub" },
        { type: "dir", path: "boot" },
        { type: "file", path: "boot/grub.cfg", content: "set timeout=1\n" },
        { type: "dir", path: "sysroot", mtime: { sec: 1_650_000_000, nsec: 777 } },
        { type: "dir", path: "sysroot/ostree" },
      ],
    },
    {
      compression: "zstd",
      entries: [
        { type: "whiteout", path: "etc/old" },
        { type: "whiteout", path: "etc/sub" },
        { type: "opaque", path: "opt" },
        { type: "file", path: "opt/c", size: 700 },
        { type: "file", path: "usr/bin/tool", content: "replaced\n", mode: 0o755 },
        { type: "dir", path: "usr/lib", mode: 0o700, mtime: { sec: 1_710_000_000, nsec: 5 } },
        { type: "file", path: "usr/lib/big2", size: 1_500_000, seed: 9 },
      ],
    },
    {
      compression: "none",
      format: "gnu",
      recordPadding: true,
      entries: [
        { type: "dir", path: "usr/gnu" },
        { type: "file", path: "usr/gnu/" + "g".repeat(120), content: "gnu long name, stored as an object because it is long", uid: 3_000_000 },
      ],
    },
    {
      compression: "gzip",
      entries: [
        { type: "dir", path: "etc/selinux" },
        { type: "file", path: "etc/selinux/config", content: "SELINUX=enforcing\nSELINUXTYPE=targeted\n" },
        { type: "dir", path: "etc/selinux/targeted" },
        { type: "dir", path: "etc/selinux/targeted/contexts" },
        { type: "dir", path: "etc/selinux/targeted/contexts/files" },
        { type: "file", path: "etc/selinux/targeted/contexts/files/file_contexts", content: fileContexts },
      ],
    },
  ],
  labels: { "containers.bootc": "1" },
};

let work: string;
let img: BuiltImage;
let reg: TestRegistry | null = null;
const ok = hasTool("skopeo") && hasTool("docker-registry") && hasTool("openssl") && hasTool("htpasswd");

function newRepo(name: string): string {
  const p = join(work, name);
  const r = spawnSync(process.env.CFSBOOT_EXE ?? join(process.cwd(), "dist/cfsboot"), ["repo", "--repo", p, "init", "--insecure"], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(r.stderr);
  return p;
}

function repoState(repo: string): { streams: string[]; images: string[]; tags: string[] } {
  const ls = (d: string) => (existsSync(join(repo, d)) ? readdirSync(join(repo, d)).filter((n) => n !== "refs").sort() : []);
  const tags = existsSync(join(repo, "streams/refs/oci")) ? readdirSync(join(repo, "streams/refs/oci")).sort() : [];
  return { streams: ls("streams"), images: ls("images"), tags };
}

function tempFiles(repo: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      if (n.startsWith(".tmp") || n.startsWith(".symlink-")) out.push(p);
      if (lstatSync(p).isDirectory()) walk(p);
    }
  };
  walk(repo);
  return out;
}

async function fsckClean(repo: string): Promise<void> {
  const f = await cfsboot(["repo", "--repo", repo, "fsck"]);
  expect(f.stdout + f.stderr).toContain("status: ok");
  expect(f.status).toBe(0);
}

function expectOneLineError(r: { status: number | null; stderr: string }, pattern: RegExp): void {
  expect(r.status, r.stderr).toBe(1);
  const lines = r.stderr.split("\n").filter((l) => l.trim() !== "");
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^cfsboot: /);
  expect(lines[0]).not.toMatch(/internal error/);
  expect(lines[0]).toMatch(pattern);
}

const pulled = new Map<string, Record<string, string>>();

beforeAll(async () => {
  ensureExe();
  work = mkdtempSync(join(tmpdir(), "cfsboot-pull-"));
  img = buildImage(join(work, "layout"), spec, { tag: "latest" });
  if (ok) {
    reg = await startRegistry({ auth: "basic" });
    await pushImage(join(work, "layout"), "latest", reg, "test/os", "v1");
  }
}, 60_000);

afterAll(async () => {
  await reg?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

async function pullInto(repo: string, imgref: string, extra: string[] = [], env: Record<string, string> = {}) {
  const r = await cfsboot(["repo", "--repo", repo, "pull", imgref, ...extra], { env });
  expect(r.stderr, r.stderr).toBe("");
  expect(r.status).toBe(0);
  return parsePullOutput(r.stdout);
}

describe("repo pull", () => {
  test("docker:// with htpasswd auth over TLS (auth file + cert dir), --bootable", async () => {
    if (!canRun(ok, "needs skopeo, docker-registry, openssl and htpasswd")) return;
    const repo = newRepo("repo-docker");
    const out = await pullInto(repo, reg!.ref("test/os", "v1"), ["os:v1", "--bootable", "--authfile", reg!.authFile, "--cert-dir", reg!.caDir]);
    expect(out.manifest).toBe(img.manifestDigest);
    expect(out.config).toBe(img.configDigest);
    expect(out.tagged).toBe("os:v1");
    expect(out.verity).toMatch(/^[0-9a-f]{128}$/);
    expect(out.objects).toMatch(/^\d+ new \+ \d+ already present objects; .* stored, .* inlined$/);
    expect(out.boot).toMatch(/^[0-9a-f]{128}$/);
    pulled.set("docker", out);
    // The tag names the manifest stream; inspect shows both EROFS ids.
    const insp = JSON.parse((await cfsboot(["repo", "--repo", repo, "inspect", "os:v1"])).stdout);
    expect(insp.composefs_boot_erofs).toBe(out.boot);
    expect(JSON.parse(insp.config).rootfs.diff_ids).toEqual(img.layers.map((l) => l.diffId));
    expect((await cfsboot(["repo", "--repo", repo, "inspect", "--manifest", "os:v1"])).stdout).toBe(Buffer.from(img.manifest).toString() + "\n");
    // compute-id agrees with what the pull stored, for both variants.
    const id = (await cfsboot(["repo", "--repo", repo, "compute-id", "os:v1"])).stdout.trim();
    expect(insp.composefs_erofs).toBe(id);
    expect((await cfsboot(["repo", "--repo", repo, "compute-id", "--bootable", "os:v1"])).stdout.trim()).toBe(out.boot);
    await fsckClean(repo);
    expect(tempFiles(repo)).toEqual([]);
  }, 120_000);

  test("a second pull downloads nothing and rewrites nothing", async () => {
    if (!canRun(ok, "needs skopeo, docker-registry, openssl and htpasswd")) return;
    const repo = join(work, "repo-docker");
    const before = reg!.log().split("\n").filter((l) => /GET \/v2\/test\/os\/blobs\//.test(l)).length;
    const stateBefore = repoState(repo);
    const out = await pullInto(repo, reg!.ref("test/os", "v1"), ["os:v1", "--bootable", "--cert-dir", reg!.caDir], { REGISTRY_AUTH_FILE: reg!.authFile });
    await Bun.sleep(300);
    const after = reg!.log().split("\n").filter((l) => /GET \/v2\/test\/os\/blobs\//.test(l)).length;
    expect(after - before).toBe(0);
    expect(out.objects).toBe("0 new + 0 already present objects; 0 B stored, 0 B inlined");
    expect(out.verity).toBe(pulled.get("docker")!.verity);
    expect(out.boot).toBe(pulled.get("docker")!.boot);
    expect(repoState(repo)).toEqual(stateBefore);
  }, 60_000);

  test("fetchManifestAndConfig: what an update would download, without storing anything", async () => {
    if (!canRun(ok, "needs skopeo, docker-registry, openssl and htpasswd")) return;
    const opts = { credentials: { username: reg!.user, password: reg!.password }, certDir: reg!.caDir };
    const full = Repository.open(join(work, "repo-docker"));
    const empty = Repository.open(newRepo("repo-check"));
    try {
      const a = await fetchManifestAndConfig(reg!.ref("test/os", "v1"), { ...opts, repo: full });
      expect([a.manifestDigest, a.configDigest, a.downloadSize, a.missingLayers]).toEqual([img.manifestDigest, img.configDigest, 0, []]);
      const before = repoState(empty.path);
      const b = await fetchManifestAndConfig(reg!.ref("test/os", "v1"), { ...opts, repo: empty });
      expect(b.downloadSize).toBe(img.layers.reduce((n, l) => n + l.size, 0));
      expect(b.missingLayers).toEqual(img.layers.map((l) => l.diffId));
      expect(b.config.labels["containers.bootc"]).toBe("1");
      expect(repoState(empty.path)).toEqual(before);
    } finally {
      full.close();
      empty.close();
    }
  }, 60_000);

  test("oci:, oci-archive: and pull by digest give the same image ids", async () => {
    if (!canRun(ok && hasTool("skopeo"), "needs skopeo")) return;
    const a = newRepo("repo-oci");
    const outA = await pullInto(a, `oci:${join(work, "layout")}:latest`, ["img", "--bootable"]);
    const archive = join(work, "image.tar");
    await skopeo(["--policy", insecurePolicy(work), "copy", "--quiet", "--preserve-digests", `oci:${join(work, "layout")}:latest`, `oci-archive:${archive}:latest`]);
    const b = newRepo("repo-archive");
    const outB = await pullInto(b, `oci-archive:${archive}`, ["img", "--bootable"]);
    for (const o of [outA, outB]) {
      expect(o.manifest).toBe(img.manifestDigest);
      expect(o.boot).toBe(pulled.get("docker")?.boot ?? o.boot);
    }
    expect(outB.boot).toBe(outA.boot);
    const idA = (await cfsboot(["repo", "--repo", a, "compute-id", "img"])).stdout;
    const idB = (await cfsboot(["repo", "--repo", b, "compute-id", "img"])).stdout;
    expect(idB).toBe(idA);
    if (ok) {
      const c = newRepo("repo-digest");
      const outC = await pullInto(c, `docker://${reg!.host}/test/os@${img.manifestDigest}`, ["bydigest", "--bootable", "--creds", reg!.creds, "--cert-dir", reg!.caDir]);
      expect(outC.boot).toBe(outA.boot);
    }
    await fsckClean(a);
    await fsckClean(b);
  }, 120_000);

  test("library: boot resources, boot type and the image tree of a stored image", async () => {
    const repo = Repository.open(join(work, "repo-oci"));
    try {
      const { resources, bootType } = await imageBootResources(repo, "img");
      expect(bootType).toBe("bls");
      expect(resources.map((r) => (r.kind === "kernel" ? `${r.kver} ${r.initramfs !== null} ${r.osRelease !== null}` : r.kind))).toEqual(["6.1.0-test true true"]);
      const { tree } = await imageTree(repo, `@${img.manifestDigest}`, { bootable: true });
      expect((lookup(tree, "/boot") as Dir).entries.size).toBe(0);
      expect(lookup(tree, "/etc/old")).toBeUndefined();
      expect(toHex(fsverityDigest(writeErofs(tree, { version: 1 }), "sha512"))).toBe(pulled.get("docker")?.boot ?? toHex(fsverityDigest(writeErofs(tree, { version: 1 }), "sha512")));
    } finally {
      repo.close();
    }
  });

  test("containers-storage: (skopeo, vfs store) gives the same image ids", async () => {
    if (!canRun(isRoot && hasTool("skopeo"), "needs root and skopeo (containers-storage with the vfs driver)")) return;
    const store = `vfs@${join(work, "cstor/root")}+${join(work, "cstor/run")}`;
    mkdirSync(join(work, "cstor"), { recursive: true });
    await skopeo(["--policy", insecurePolicy(work), "copy", "--quiet", `oci:${join(work, "layout")}:latest`, `containers-storage:[${store}]localhost/cfstest/os:v1`]);
    const repo = newRepo("repo-cstor");
    const out = await pullInto(repo, `containers-storage:[${store}]localhost/cfstest/os:v1`, ["cs", "--bootable"], { CFSBOOT_TMPDIR: work });
    // containers-storage keeps layers uncompressed: another manifest, the same diff_ids, the same trees.
    const insp = JSON.parse((await cfsboot(["repo", "--repo", repo, "inspect", "cs"])).stdout);
    expect(JSON.parse(insp.config).rootfs.diff_ids).toEqual(img.layers.map((l) => l.diffId));
    const ref = join(work, "repo-oci");
    expect(out.boot).toBe(parsePullOutput((await cfsboot(["repo", "--repo", ref, "pull", `oci:${join(work, "layout")}:latest`, "img", "--bootable"])).stdout).boot);
    expect(readdirSync(work).filter((n) => n.startsWith("cfsboot-cstor-"))).toEqual([]);
    await fsckClean(repo);
  }, 120_000);

  test("a Docker schema 2 image and a multi-platform index give the same tree as the OCI image", async () => {
    if (!canRun(ok, "needs skopeo, docker-registry, openssl and htpasswd")) return;
    // skopeo converts to Docker media types (manifest and config change, layers stay). Docker
    // images have no zstd: the same tars with gzip instead (same diff_ids).
    const src = join(work, "layout-for-docker");
    buildImage(src, { ...spec, layers: spec.layers.map((l) => ({ ...l, compression: l.compression === "zstd" ? "gzip" : l.compression })) }, { tag: "latest" });
    await skopeo(["--policy", insecurePolicy(work), "copy", "--quiet", "--format", "v2s2", "--dest-cert-dir", reg!.caDir, "--dest-creds", reg!.creds, `oci:${src}:latest`, reg!.ref("test/docker", "v1")]);
    const d = newRepo("repo-v2s2");
    const out = await pullInto(d, reg!.ref("test/docker", "v1"), ["d", "--bootable", "--creds", reg!.creds, "--cert-dir", reg!.caDir]);
    const m = JSON.parse((await cfsboot(["repo", "--repo", d, "inspect", "--manifest", "d"])).stdout);
    expect(m.mediaType).toBe("application/vnd.docker.distribution.manifest.v2+json");
    expect(out.manifest).not.toBe(img.manifestDigest);
    expect(out.boot).toBe(pulled.get("docker")!.boot);
    // An index for two platforms: the host's is picked (the arm64 one has other content).
    const idx = join(work, "layout-index");
    buildIndex(idx, [{ ...spec, architecture: "arm64", variant: "v8", layers: [{ entries: [{ type: "dir", path: "usr" }, { type: "file", path: "usr/arm", content: "arm" }] }] }, { ...spec, architecture: "amd64" }], { tag: "multi" });
    const i = newRepo("repo-index");
    const outI = await pullInto(i, `oci:${idx}:multi`, ["m", "--bootable"]);
    if (process.arch === "x64") expect(outI.boot).toBe(pulled.get("docker")!.boot);
  }, 120_000);

  test("the mounted image equals umoci's unpack of the same image, file by file", async () => {
    if (!canRun(isRoot && hasTool("umoci") && hasTool("getfattr"), "needs root, umoci and getfattr")) return;
    // umoci 0.4.7 cannot read zstd: the same tars, gzip-compressed (same diff_ids, same trees).
    const gz = buildImage(join(work, "layout-gzip"), { ...spec, layers: spec.layers.map((l) => ({ ...l, compression: l.compression === "zstd" ? "gzip" : l.compression })) }, { tag: "latest" });
    expect(gz.layers.map((l) => l.diffId)).toEqual(img.layers.map((l) => l.diffId));
    const rootfs = umociReference(join(work, "layout-gzip"), "latest", join(work, "bundle"), spec);
    for (const name of ["repo-docker", "repo-oci", "repo-archive", "repo-cstor"]) {
      const repo = join(work, name);
      if (!existsSync(repo)) continue;
      const tag = { "repo-docker": "os:v1", "repo-oci": "img", "repo-archive": "img", "repo-cstor": "cs" }[name]!;
      const insp = JSON.parse((await cfsboot(["repo", "--repo", repo, "inspect", tag])).stdout);
      const r = mountCompare(join(repo, "images", insp.composefs_erofs), join(repo, "objects"), rootfs);
      expect(r.mismatches, name).toEqual([]);
      expect(r.entries).toBeGreaterThan(35);
      expect(r.bytes).toBeGreaterThan(4_500_000);
    }
    // The comparison is not vacuous: a changed byte in the reference is noticed.
    writeFileSync(join(rootfs, "usr/lib/s65"), "x".repeat(65));
    const repo = join(work, "repo-oci");
    const insp = JSON.parse((await cfsboot(["repo", "--repo", repo, "inspect", "img"])).stdout);
    const r = mountCompare(join(repo, "images", insp.composefs_erofs), join(repo, "objects"), rootfs);
    expect(r.mismatches.join("\n")).toContain("usr/lib/s65");
  }, 120_000);

  test("repo mount --bootable: /boot and /sysroot empty, SELinux labels from the image's policy", async () => {
    if (!canRun(isRoot, "needs root (mounts)")) return;
    const repo = join(work, "repo-oci");
    const mnt = join(work, "mnt");
    mkdirSync(mnt, { recursive: true });
    // In a private mount namespace: mount, look, done (the namespace goes with the shell).
    const script = `set -e
${process.cwd()}/dist/cfsboot repo --repo ${repo} mount --bootable img ${mnt}
find ${mnt}/boot ${mnt}/sysroot -mindepth 1 | wc -l
getfattr -h --only-values -n security.selinux ${mnt}/usr/bin/sh; echo
getfattr -h --only-values -n security.selinux ${mnt}/dev/null; echo
getfattr -h --only-values -n security.selinux ${mnt}/etc/keep; echo
stat -c %Y ${mnt}/boot ${mnt}/usr
cat ${mnt}/usr/bin/tool2 | head -1`;
    const r = spawnSync("unshare", ["-m", "--propagation", "private", "sh", "-c", script], { encoding: "utf8" });
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.split("\n");
    expect(lines[0]).toBe("0");
    expect(lines[1]).toBe("system_u:object_r:bin_t:s0");
    expect(lines[2]).toBe("system_u:object_r:null_device_t:s0");
    expect(lines[3]).toBe("system_u:object_r:etc_t:s0");
    expect(lines[4]).toBe(lines[5]); // /boot's mtime seconds are /usr's
    expect(lines[6]).toBe("#!/bin/sh");
  }, 60_000);
});

describe("repo pull: bad input fails on one line, exit 1, nothing referenced or tagged", () => {
  let repo: string;
  beforeAll(() => {
    repo = newRepo("repo-bad");
  });

  async function expectRefused(imgref: string, pattern: RegExp, extra: string[] = []): Promise<void> {
    const before = repoState(repo);
    const r = await cfsboot(["repo", "--repo", repo, "pull", imgref, "bad", ...extra]);
    expectOneLineError(r, pattern);
    expect(repoState(repo)).toEqual(before);
    expect(tempFiles(repo)).toEqual([]);
    await fsckClean(repo);
  }

  const small: ImageSpec = { layers: [{ compression: "gzip", entries: [{ type: "dir", path: "usr" }, { type: "file", path: "usr/f", size: 300_000 }] }] };

  test("corrupted blob in the registry (digest mismatch)", async () => {
    if (!canRun(ok, "needs skopeo, docker-registry, openssl and htpasswd")) return;
    const b = buildImage(join(work, "layout-corrupt"), small, { tag: "latest" });
    await pushImage(join(work, "layout-corrupt"), "latest", reg!, "test/corrupt", "v1");
    const blob = reg!.blobPath(b.layers[0]!.digest);
    const data = readFileSync(blob);
    data[data.length - 10] = data[data.length - 10]! ^ 0xff;
    writeFileSync(blob, data);
    await expectRefused(reg!.ref("test/corrupt", "v1"), /digest mismatch/, ["--creds", reg!.creds, "--cert-dir", reg!.caDir]);
  }, 60_000);

  test("wrong layer media type", async () => {
    const dir = join(work, "layout-mt");
    const b = buildImage(dir, small, { tag: "latest" });
    const m = JSON.parse(Buffer.from(b.manifest).toString());
    m.layers[0].mediaType = "application/vnd.oci.image.layer.v1.tar+lz4";
    const bytes = Buffer.from(JSON.stringify(m));
    writeFileSync(join(dir, "blobs/sha256", sha256(bytes).slice(7)), bytes);
    writeFileSync(join(dir, "index.json"), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: "application/vnd.oci.image.manifest.v1+json", digest: sha256(bytes), size: bytes.length }] }));
    await expectRefused(`oci:${dir}`, /media type .*is not a tar layer/);
  });

  test("truncated tar (blob and diff_id consistent, archive cut inside a file)", async () => {
    const dir = join(work, "layout-trunc");
    const b = buildImage(dir, { layers: [{ compression: "none", entries: small.layers[0]!.entries }] }, { tag: "latest" });
    const tar = b.layers[0]!.tar.subarray(0, 100_000);
    // Rewrite blob, diff_id, config and manifest so only the tar itself is wrong.
    const cfg = JSON.parse(Buffer.from(b.config).toString());
    cfg.rootfs.diff_ids = [sha256(tar)];
    const cfgBytes = Buffer.from(JSON.stringify(cfg));
    const m = JSON.parse(Buffer.from(b.manifest).toString());
    m.layers[0] = { ...m.layers[0], digest: sha256(tar), size: tar.length };
    m.config = { ...m.config, digest: sha256(cfgBytes), size: cfgBytes.length };
    const mBytes = Buffer.from(JSON.stringify(m));
    for (const x of [tar, cfgBytes, mBytes]) writeFileSync(join(dir, "blobs/sha256", sha256(x).slice(7)), x);
    writeFileSync(join(dir, "index.json"), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: "application/vnd.oci.image.manifest.v1+json", digest: sha256(mBytes), size: mBytes.length }] }));
    await expectRefused(`oci:${dir}`, /truncated/);
  });

  test("a bad tar header in the middle of a valid gzip blob (the decompressor is stopped, no hang)", async () => {
    const dir = join(work, "layout-badheader");
    const b = buildImage(dir, { layers: [{ compression: "none", entries: [{ type: "dir", path: "usr" }, { type: "file", path: "usr/a", size: 1000 }, { type: "file", path: "usr/b", size: 3_000_000 }] }] }, { tag: "latest" });
    const tar = new Uint8Array(b.layers[0]!.tar);
    tar.fill(0x41, 2048, 2048 + 512); // usr/b's header
    const gz = new Uint8Array(gzipSync(tar, { level: 1 }));
    const cfg = JSON.parse(Buffer.from(b.config).toString());
    cfg.rootfs.diff_ids = [sha256(tar)];
    const cfgBytes = Buffer.from(JSON.stringify(cfg));
    const m = JSON.parse(Buffer.from(b.manifest).toString());
    m.layers[0] = { mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: sha256(gz), size: gz.length };
    m.config = { ...m.config, digest: sha256(cfgBytes), size: cfgBytes.length };
    const mBytes = Buffer.from(JSON.stringify(m));
    for (const x of [gz, cfgBytes, mBytes]) writeFileSync(join(dir, "blobs/sha256", sha256(x).slice(7)), x);
    writeFileSync(join(dir, "index.json"), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: "application/vnd.oci.image.manifest.v1+json", digest: sha256(mBytes), size: mBytes.length }] }));
    await expectRefused(`oci:${dir}`, /offset 2048: bad tar header checksum/);
  });

  test("manifest with a missing layer blob", async () => {
    const dir = join(work, "layout-missing");
    const b = buildImage(dir, small, { tag: "latest" });
    rmSync(join(dir, "blobs/sha256", b.layers[0]!.digest.slice(7)));
    await expectRefused(`oci:${dir}:latest`, /blob missing/);
  });

  test("wrong diff_id in the config", async () => {
    const dir = join(work, "layout-diffid");
    const b = buildImage(dir, small, { tag: "latest" });
    const cfg = JSON.parse(Buffer.from(b.config).toString());
    cfg.rootfs.diff_ids = [sha256("not the tar")];
    const cfgBytes = Buffer.from(JSON.stringify(cfg));
    const m = JSON.parse(Buffer.from(b.manifest).toString());
    m.config = { ...m.config, digest: sha256(cfgBytes), size: cfgBytes.length };
    const mBytes = Buffer.from(JSON.stringify(m));
    for (const x of [cfgBytes, mBytes]) writeFileSync(join(dir, "blobs/sha256", sha256(x).slice(7)), x);
    writeFileSync(join(dir, "index.json"), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: "application/vnd.oci.image.manifest.v1+json", digest: sha256(mBytes), size: mBytes.length }] }));
    await expectRefused(`oci:${dir}`, /diff_id/);
  });

  test("authentication failure", async () => {
    if (!canRun(ok, "needs skopeo, docker-registry, openssl and htpasswd")) return;
    await expectRefused(reg!.ref("test/os", "v1"), /authentication failed/, ["--creds", `${reg!.user}:wrong`, "--cert-dir", reg!.caDir]);
    await expectRefused(reg!.ref("test/os", "v1"), /TLS certificate verification failed/, ["--creds", reg!.creds]);
  });

  test("unknown transport", async () => {
    await expectRefused("ftp:somewhere", /unknown transport/);
    await expectRefused("dir:/tmp/x", /dir transport is not supported/);
  });
});
