// Host deployments end to end on hosts in a directory (sysroot + ESP), from
// OS-like OCI images served by a real registry, through the built
// executable: install with systemd-boot and GRUB, V1 and dual repositories;
// status JSON field by field against status.md; upgrade without and with a
// change, --check figures, kernel sharing, kargs.d diff with a local karg
// surviving; switch (unchanged spec, identical image refused, another image);
// rollback twice; gc keeping exactly what live deployments reach (computed
// here from the splitstreams and EROFS images, independently of gc).
// This machine has no fs-verity: installs use --composefs-insecure.

import { createHash } from "node:crypto";
import { existsSync, lstatSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { imageObjects, readImage } from "../../shared/erofs/reader.ts";
import { fsverityDigest } from "../../shared/fsverity.ts";
import { parseSplitStream } from "../../shared/splitstream.ts";
import { ensureExe } from "../helpers/sysroot.ts";
import { buildImage, type BuiltImage, pushImage } from "../helpers/oci-image.ts";
import { startRegistry, type TestRegistry } from "../helpers/registry.ts";
import { type HostDir, bless, bootEntry, cfs, entryFiles, finalizeByHand, hostArgs, kernelBytes, makeHostDir, osImage, type OsImageOptions, registryHome, type Run } from "../helpers/os-host.ts";

let dir: string;
let reg: TestRegistry;
let layout: string;
let env: Record<string, string>;
const built = new Map<string, { img: BuiltImage; opts: OsImageOptions }>();

const V1: OsImageOptions = { version: "1.0", kernel: "k1", kargs: { "10-base.toml": 'kargs = ["console=ttyS0", "a=1"]\n', "20-arch.toml": 'kargs = ["only-on-s390x"]\nmatch-architectures = ["s390x"]\n' }, etc: { hostname: "h1\n", motd: "one\n", "ssh/sshd_config": "Port 22\n" } };
const V2: OsImageOptions = { version: "2.0", kernel: "k1", kargs: { "10-base.toml": 'kargs = ["console=ttyS1", "a=1"]\n' }, etc: { hostname: "h1\n", motd: "two\n", "ssh/sshd_config": "Port 22\n" }, bulk: 50_000 };
const OS2: OsImageOptions = { version: "7", osId: "other-os", kernel: "k7", kargs: { "10-base.toml": 'kargs = ["console=ttyS1", "a=1"]\n' }, etc: { hostname: "h1\n", motd: "other\n", "ssh/sshd_config": "Port 22\n" } };

function build(tag: string, o: OsImageOptions): BuiltImage {
  const img = buildImage(layout, osImage(o).spec, { tag });
  built.set(tag, { img, opts: o });
  return img;
}

const ok = (r: Run): Run => {
  expect(r.stderr.split("\n").filter((l) => / internal error|\n\s+at /.test(l))).toEqual([]);
  expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
  return r;
};

const fail = (r: Run, re: RegExp): Run => {
  expect(r.status, r.stdout + r.stderr).toBe(1);
  const last = r.stderr.trim().split("\n").pop() ?? "";
  expect(last).toMatch(/^cfsboot: /);
  expect(last).toMatch(re);
  expect(r.stderr).not.toMatch(/internal error|^\s+at /m);
  return r;
};

const sha256hex = (...b: Uint8Array[]): string => {
  const h = createHash("sha256");
  for (const x of b) h.update(x);
  return h.digest("hex");
};

function statusJson(h: HostDir, extra: string[] = []): Record<string, any> {
  const r = ok(cfs(["status", "--format=json", ...hostArgs(h), ...extra], env));
  const doc = JSON.parse(r.stdout);
  // Canonical JSON: keys sorted at every level, no whitespace, no trailing newline.
  const canon = (v: unknown): string =>
    v === null || typeof v !== "object" ? JSON.stringify(v) : Array.isArray(v) ? `[${v.map(canon).join(",")}]` : `{${Object.keys(v as object).sort().map((k) => `${JSON.stringify(k)}:${canon((v as Record<string, unknown>)[k])}`).join(",")}}`;
  expect(r.stdout).toBe(canon(doc));
  return doc;
}

function entriesOf(dir: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const f of entryFiles(dir)) m.set(f, readFileSync(join(dir, f), "utf8"));
  return m;
}

const kv = (text: string, key: string): string | undefined => new RegExp(`^${key} (.*)$`, "m").exec(text)?.[1];

function deploymentIdOf(entryText: string): string {
  const o = kv(entryText, "options")!;
  const m = /composefs\.digest=\?v1-sha512-12:([0-9a-f]{128})|composefs=\??([0-9a-f]{128})/.exec(o)!;
  return m[1] ?? m[2]!;
}

function newHost(name: string): HostDir {
  return makeHostDir(mkdtempSync(join(dir, `${name}-`)));
}

function install(h: HostDir, ref: string, extra: string[] = []): Run {
  return ok(cfs(["install", "to-filesystem", "--source-imgref", ref, "--composefs-insecure", "--esp", h.esp, ...extra, h.root], env));
}

/** The only live entry's path, after install. */
function onlyEntry(loaderRoot: string): string {
  const f = entryFiles(join(loaderRoot, "loader/entries"));
  expect(f.length).toBe(1);
  return join(loaderRoot, "loader/entries", f[0]!);
}

beforeAll(async () => {
  ensureExe();
  dir = mkdtempSync(join(tmpdir(), "cfsboot-deploy-"));
  layout = join(dir, "layout");
  reg = await startRegistry({ auth: "none" });
  env = registryHome(join(dir, "home"), reg.certsD);
  build("v1", V1);
  build("v2", V2);
  build("os2", OS2);
  await pushImage(layout, "v1", reg, "os", "latest");
  await pushImage(layout, "v1", reg, "os", "v1");
  await pushImage(layout, "os2", reg, "os2", "latest");
}, 120_000);

afterAll(async () => {
  await reg?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("install to-filesystem", () => {
  test("systemd-boot, V1: repository, kernel, entry, state and the status document", () => {
    const h = newHost("sd");
    const out = install(h, reg.ref("os", "v1"), ["--karg", "quiet"]);
    const { img } = built.get("v1")!;
    // Repository: sha512, V1 only, tag localhost/bootc-<manifest>.
    const meta = JSON.parse(readFileSync(join(h.root, "composefs/meta.json"), "utf8"));
    expect(meta.algorithm).toBe("fsverity-sha512-12");
    expect(meta.erofs_formats).toEqual({ default: 1 });
    expect(readlinkSync(join(h.root, "composefs/streams/refs/oci", `localhost%2Fbootc-${img.manifestDigest}`))).toBe(`../../oci-manifest-${img.manifestDigest}`);
    expect(lstatSync(join(h.root, "composefs")).mode & 0o777).toBe(0o700);
    expect(readlinkSync(join(h.root, "ostree/bootc"))).toBe("../composefs/bootc");
    // One entry with a boot counter; systemd-boot copied into the ESP.
    const ep = onlyEntry(h.esp);
    expect(ep.endsWith("/bootc_testos-1.0-1+3.conf")).toBe(true);
    const text = readFileSync(ep, "utf8");
    const id = deploymentIdOf(text);
    expect(out.stdout).toContain(`Installed deployment ${id}`);
    expect(kv(text, "title")).toBe("Test OS 1.0");
    expect(kv(text, "version")).toBe("1.0");
    expect(kv(text, "sort-key")).toBe("bootc-testos-0");
    expect(kv(text, "linux")).toBe(`/EFI/Linux/bootc_composefs-${id}/vmlinuz`);
    expect(kv(text, "initrd")).toBe(`/EFI/Linux/bootc_composefs-${id}/initrd`);
    // root/rw, --karg, composefs karg, kargs.d (the s390x-only file is not applied).
    expect(kv(text, "options")).toBe(`rw quiet composefs.digest=?v1-sha512-12:${id} console=ttyS0 a=1`);
    expect(text.split("\n").map((l) => l.split(" ")[0])).toEqual(["title", "version", "linux", "initrd", "options", "sort-key", ""]);
    const k = kernelBytes(V1);
    expect(new Uint8Array(readFileSync(join(h.esp, `EFI/Linux/bootc_composefs-${id}/vmlinuz`)))).toEqual(k.vmlinuz);
    expect(new Uint8Array(readFileSync(join(h.esp, `EFI/Linux/bootc_composefs-${id}/initrd`)))).toEqual(k.initrd);
    expect(readFileSync(join(h.esp, "EFI/BOOT/BOOTX64.EFI"))).toEqual(readFileSync("/usr/lib/systemd/boot/efi/systemd-bootx64.efi"));
    expect(readFileSync(join(h.esp, "loader/loader.conf"), "utf8")).toBe("timeout 5");
    // The id is the fs-verity digest of the boot image the repository holds.
    expect(Buffer.from(fsverityDigest(new Uint8Array(readFileSync(join(h.root, "composefs/images", id))), "sha512")).toString("hex")).toBe(id);
    // State: etc copy without .updated, var link, origin, /var seeded.
    const st = join(h.root, "state/deploy", id);
    expect(readdirSync(join(st, "etc")).sort()).toEqual(["hostname", "motd", "os-release", "ssh"]);
    expect(readFileSync(join(st, "etc/ssh/sshd_config"), "utf8")).toBe("Port 22\n");
    expect(readlinkSync(join(st, "etc/os-release"))).toBe("../usr/lib/os-release");
    expect(readlinkSync(join(st, "var"))).toBe("../../os/default/var");
    expect(readFileSync(join(h.root, "state/os/default/var/lib/seed"), "utf8")).toBe("var seed\n");
    const origin = readFileSync(join(st, `${id}.origin`), "utf8");
    const bootDigest = sha256hex(k.vmlinuz, k.initrd);
    expect(origin).toBe(
      `[origin]\ncontainer-image-reference = ostree-unverified-image:${reg.ref("os", "v1")}\n\n[boot]\nboot_type = bls\ndigest = ${bootDigest}\n\n[image]\nmanifest_digest = ${img.manifestDigest}\n`,
    );
    expect(readFileSync(join(h.root, "state/cfsboot/bootloader"), "utf8")).toBe("systemd\n");

    // Not booted yet: the default document.
    const none = statusJson(h);
    expect(none.status.booted).toBeNull();
    expect(none.spec.image).toBeNull();

    bootEntry(h, ep);
    const doc = statusJson(h);
    expect(Object.keys(doc)).toEqual(["apiVersion", "kind", "metadata", "spec", "status"]);
    expect(doc.apiVersion).toBe("org.containers.bootc/v1");
    expect(doc.kind).toBe("BootcHost");
    expect(doc.metadata.name).toBe("host");
    expect(doc.spec).toEqual({ bootOrder: "default", image: { image: `${reg.host}/os:v1`, transport: "registry" } });
    expect(Object.keys(doc.status).sort()).toEqual(["booted", "readOnly", "rollback", "rollbackQueued", "staged", "type", "usrOverlay"]);
    expect(doc.status.staged).toBeNull();
    expect(doc.status.rollback).toBeNull();
    expect(doc.status.rollbackQueued).toBe(false);
    expect(doc.status.type).toBeNull();
    expect(doc.status.usrOverlay).toBeNull();
    expect(doc.status.readOnly).toBe(false);
    const b = doc.status.booted;
    expect(Object.keys(b).sort()).toEqual(["cachedUpdate", "composefs", "downloadOnly", "image", "incompatible", "ostree", "pinned", "softRebootCapable", "store"]);
    expect(b.cachedUpdate).toBeNull();
    expect(b.incompatible).toBe(false);
    expect(b.pinned).toBe(false);
    expect(b.softRebootCapable).toBe(false);
    expect(b.downloadOnly).toBe(false);
    expect(b.store).toBeNull();
    expect(b.ostree).toBeNull();
    expect(b.image).toEqual({
      image: { image: `${reg.host}/os:v1`, transport: "registry" },
      version: "1.0",
      timestamp: "2026-01-02T03:04:05Z",
      imageDigest: img.manifestDigest,
      architecture: "amd64",
    });
    expect(b.composefs).toEqual({ verity: id, bootType: "Bls", bootloader: "systemd", bootDigest, missingVerityAllowed: true });
    // The boot counter is an annotation, not a v1 field.
    expect(doc.metadata.annotations).toEqual({ "cfsboot.boot-counter": "+3" });
    // YAML on a pipe, same document.
    const yaml = ok(cfs(["status", ...hostArgs(h)], env)).stdout;
    expect(yaml).toMatch(/^apiVersion: org\.containers\.bootc\/v1\nkind: BootcHost\n/);
    expect(yaml).toContain(`verity: ${id}`);
    // --booted keeps only the booted slot.
    expect(statusJson(h, ["--booted"]).status.booted.composefs.verity).toBe(id);
    // A second install to the same target is refused.
    fail(cfs(["install", "to-filesystem", "--source-imgref", reg.ref("os", "v1"), "--composefs-insecure", "--esp", h.esp, h.root], env), /already holds a composefs installation/);
  });

  test("GRUB: entries and kernels in the boot directory, no boot counter", () => {
    const h = newHost("grub");
    install(h, reg.ref("os", "v1"), ["--bootloader", "grub"]);
    const ep = onlyEntry(h.boot);
    expect(ep.endsWith("/bootc_testos-1.0-1.conf")).toBe(true);
    const text = readFileSync(ep, "utf8");
    const id = deploymentIdOf(text);
    expect(kv(text, "linux")).toBe(`/boot/bootc_composefs-${id}/vmlinuz`);
    expect(existsSync(join(h.boot, `bootc_composefs-${id}/initrd`))).toBe(true);
    expect(existsSync(join(h.esp, "loader"))).toBe(false);
    expect(readFileSync(join(h.root, "state/cfsboot/bootloader"), "utf8")).toBe("grub\n");
    bootEntry(h, ep);
    const doc = statusJson(h);
    expect(doc.status.booted.composefs.bootloader).toBe("grub");
    expect(doc.status.booted.composefs.verity).toBe(id);
  });

  test("dual-format repository: V1 and V2 images, the deployment boots the V1 one", () => {
    const h = newHost("dual");
    install(h, reg.ref("os", "v1"), ["--erofs=dual"]);
    const meta = JSON.parse(readFileSync(join(h.root, "composefs/meta.json"), "utf8"));
    expect(meta.erofs_formats).toEqual({ default: 2, extra: [1] });
    const text = readFileSync(onlyEntry(h.esp), "utf8");
    const id = deploymentIdOf(text);
    expect(kv(text, "options")).toContain(`composefs.digest=?v1-sha512-12:${id}`);
    // Two formats (this image's boot and plain trees are equal: /boot and /sysroot are empty).
    const images = readdirSync(join(h.root, "composefs/images")).filter((n) => n !== "refs");
    expect(images.length).toBe(2);
    expect(images).toContain(id);
    const versions = images.map((n) => readImage(new Uint8Array(readFileSync(join(h.root, "composefs/images", n)))).version).sort();
    expect(versions).toEqual([1, 2]);
    expect(readImage(new Uint8Array(readFileSync(join(h.root, "composefs/images", id)))).version).toBe(1);
  });

  test("a missing ESP and an unknown boot loader are refused before anything is written", () => {
    const h = newHost("noesp");
    rmSync(h.esp, { recursive: true });
    fail(cfs(["install", "to-filesystem", "--source-imgref", reg.ref("os", "v1"), "--composefs-insecure", "--esp", h.esp, h.root], env), /missing ESP/);
    fail(cfs(["install", "to-filesystem", "--source-imgref", reg.ref("os", "v1"), "--composefs-insecure", "--bootloader", "lilo", h.root], env), /unknown boot loader "lilo"/);
    fail(cfs(["install", "to-filesystem", "--source-imgref", reg.ref("os", "v1"), "--composefs-insecure", "--bootloader", "none", h.root], env), /Bootloader was None/);
    expect(readdirSync(h.root)).toEqual(["boot"]);
  });

  test("without --composefs-insecure on a filesystem without fs-verity: refused before pulling (bootc#1805)", () => {
    const h = newHost("verity");
    fail(cfs(["install", "to-filesystem", "--source-imgref", reg.ref("os", "v1"), "--esp", h.esp, h.root], env), /does not support fs-verity/);
    expect(existsSync(join(h.root, "composefs"))).toBe(false);
  });
});

describe("a host's life: upgrade, switch, rollback, gc", () => {
  let h: HostDir;
  let id1: string;
  let id2: string;
  let idOs2: string;
  const live = () => join(h.esp, "loader/entries");
  const stagedDir = () => join(h.esp, "loader/entries.staged");

  test("install v1 and boot it (blessed)", () => {
    h = newHost("life");
    install(h, reg.ref("os", "latest"), ["--karg", "quiet"]);
    const ep = bless(onlyEntry(h.esp));
    id1 = deploymentIdOf(readFileSync(ep, "utf8"));
    bootEntry(h, ep);
    expect(statusJson(h).status.booted.composefs.verity).toBe(id1);
  });

  test("upgrade with no new image: No changes, for --check too; nothing staged", () => {
    expect(ok(cfs(["upgrade", "--check", ...hostArgs(h)], env)).stdout).toBe(`No changes in: ${reg.ref("os", "latest")}\n`);
    expect(ok(cfs(["upgrade", ...hostArgs(h)], env)).stdout).toBe(`No changes in: ${reg.ref("os", "latest")}\n`);
    expect(existsSync(stagedDir())).toBe(false);
    expect(existsSync(join(h.root, "run/composefs/staged-deployment"))).toBe(false);
  });

  test("--check with a new image: version, digest and the bytes a pull would download", async () => {
    await pushImage(layout, "v2", reg, "os", "latest");
    const { img } = built.get("v2")!;
    const v1 = built.get("v1")!.img;
    const have = new Set(v1.layers.map((l) => l.diffId));
    const want = img.layers.filter((l) => !have.has(l.diffId));
    const bytes = want.reduce((s, l) => s + l.size, 0);
    const out = ok(cfs(["upgrade", "--check", ...hostArgs(h)], env)).stdout;
    expect(out).toContain(`Update available for: ${reg.ref("os", "latest")}\n`);
    expect(out).toContain("  Version: 2.0\n");
    expect(out).toContain(`  Digest: ${img.manifestDigest}\n`);
    expect(out).toContain(`  Download: ${want.length} layers, ${bytes} bytes`);
    // Nothing was pulled or staged.
    expect(existsSync(join(h.root, `composefs/streams/oci-manifest-${img.manifestDigest}`))).toBe(false);
    expect(existsSync(stagedDir())).toBe(false);
  });

  test("upgrade stages v2: state, staged entries (kernel shared, kargs.d diff, local karg kept), marker, status", () => {
    const out = ok(cfs(["upgrade", ...hostArgs(h)], env)).stdout;
    const { img } = built.get("v2")!;
    expect(out).toContain(`Queued for next boot: ${reg.ref("os", "latest")}`);
    const staged = entriesOf(stagedDir());
    expect([...staged.keys()]).toEqual(["bootc_testos-1.0-0.conf", "bootc_testos-2.0-1+3.conf"]);
    const primary = staged.get("bootc_testos-2.0-1+3.conf")!;
    id2 = deploymentIdOf(primary);
    expect(out).toContain(`Deployment: ${id2}`);
    // Same kernel as v1: the entry points at v1's kernel directory, none was added.
    expect(kv(primary, "linux")).toBe(`/EFI/Linux/bootc_composefs-${id1}/vmlinuz`);
    expect(existsSync(join(h.esp, `EFI/Linux/bootc_composefs-${id2}`))).toBe(false);
    // kargs.d: console=ttyS0 → console=ttyS1, a=1 stays once, the local quiet survives.
    expect(kv(primary, "options")).toBe(`rw quiet composefs.digest=?v1-sha512-12:${id2} a=1 console=ttyS1`);
    expect(kv(primary, "sort-key")).toBe("bootc-testos-0");
    const secondary = staged.get("bootc_testos-1.0-0.conf")!;
    expect(kv(secondary, "sort-key")).toBe("bootc-testos-1");
    expect(deploymentIdOf(secondary)).toBe(id1);
    // The live entries are untouched.
    expect([...entriesOf(live()).keys()]).toEqual(["bootc_testos-1.0-1.conf"]);
    expect(readFileSync(join(h.root, "run/composefs/staged-deployment"), "utf8")).toBe(`{"depl_id":"${id2}","finalization_locked":false}`);
    const st = join(h.root, "state/deploy", id2);
    expect(readFileSync(join(st, "etc/motd"), "utf8")).toBe("two\n");
    expect(readFileSync(join(st, `${id2}.origin`), "utf8")).toContain(`manifest_digest = ${img.manifestDigest}`);
    const doc = statusJson(h);
    expect(doc.status.staged.composefs.verity).toBe(id2);
    expect(doc.status.staged.image.version).toBe("2.0");
    expect(doc.status.staged.image.imageDigest).toBe(img.manifestDigest);
    expect(doc.status.staged.downloadOnly).toBe(false);
    expect(doc.status.staged.composefs.bootDigest).toBe(doc.status.booted.composefs.bootDigest);
    expect(doc.status.booted.composefs.verity).toBe(id1);
    expect(doc.status.rollback).toBeNull();
    expect(doc.spec.image.image).toBe(`${reg.host}/os:latest`);
    // Again: already staged.
    expect(ok(cfs(["upgrade", ...hostArgs(h)], env)).stdout).toContain("Update already staged");
  });

  test("after the reboot into v2: booted v2, rollback v1; switch to the same spec is a no-op", () => {
    finalizeByHand(h, h.esp);
    const f = entryFiles(live());
    bootEntry(h, bless(join(live(), f.find((n) => n.startsWith("bootc_testos-2.0-1"))!)));
    const doc = statusJson(h);
    expect(doc.status.booted.composefs.verity).toBe(id2);
    expect(doc.status.rollback.composefs.verity).toBe(id1);
    expect(doc.status.staged).toBeNull();
    expect(doc.status.rollbackQueued).toBe(false);
    expect(ok(cfs(["switch", reg.ref("os", "latest"), ...hostArgs(h)], env)).stdout).toBe("Image specification is unchanged.\n");
    expect(ok(cfs(["switch", `${reg.host}/os:latest`, ...hostArgs(h)], env)).stdout).toBe("Image specification is unchanged.\n");
  });

  test("switch to an image identical to a deployment is refused, naming it", async () => {
    await pushImage(layout, "v1", reg, "os-copy", "latest");
    fail(cfs(["switch", reg.ref("os-copy", "latest"), ...hostArgs(h)], env), new RegExp(`same fs-verity digest as the existing rollback deployment ${id1}`));
    expect(existsSync(stagedDir())).toBe(false);
    expect(existsSync(join(h.root, "run/composefs/staged-deployment"))).toBe(false);
  });

  test("rollback twice: queued, then reverted; osids and names kept", () => {
    const before = [...entriesOf(live()).keys()];
    let r = ok(cfs(["rollback", ...hostArgs(h)], env));
    expect(r.stdout).toBe("Next boot: rollback deployment\n");
    let doc = statusJson(h);
    expect(doc.status.rollbackQueued).toBe(true);
    expect(doc.spec.bootOrder).toBe("rollback");
    expect(doc.status.booted.composefs.verity).toBe(id2);
    const after = entriesOf(live());
    expect([...after.keys()]).toEqual(["bootc_testos-1.0-1.conf", "bootc_testos-2.0-0.conf"]);
    expect(kv(after.get("bootc_testos-1.0-1.conf")!, "sort-key")).toBe("bootc-testos-0");
    expect(kv(after.get("bootc_testos-2.0-0.conf")!, "sort-key")).toBe("bootc-testos-1");
    r = ok(cfs(["rollback", ...hostArgs(h)], env));
    expect(r.stdout).toBe("notice: Reverting queued rollback state\nNext boot: current deployment\n");
    doc = statusJson(h);
    expect(doc.status.rollbackQueued).toBe(false);
    expect(doc.spec.bootOrder).toBe("default");
    expect([...entriesOf(live()).keys()]).toEqual(before);
  });

  test("switch to another OS: staged with its own osid and kernel", () => {
    const out = ok(cfs(["switch", reg.ref("os2", "latest"), ...hostArgs(h)], env)).stdout;
    expect(out).toContain(`Queued for next boot: ${reg.ref("os2", "latest")}`);
    const staged = entriesOf(stagedDir());
    expect([...staged.keys()]).toEqual(["bootc_other_os-2.0-0.conf", "bootc_other_os-7-1+3.conf"]);
    const p = staged.get("bootc_other_os-7-1+3.conf")!;
    idOs2 = deploymentIdOf(p);
    expect(kv(p, "sort-key")).toBe("bootc-other-os-0");
    expect(kv(p, "linux")).toBe(`/EFI/Linux/bootc_composefs-${idOs2}/vmlinuz`);
    const doc = statusJson(h);
    expect(doc.spec.image).toEqual({ image: `${reg.host}/os2:latest`, transport: "registry" });
    expect(doc.status.staged.composefs.verity).toBe(idOs2);
    // The rollback deployment v1 is still live until the switch is finalized.
    expect(doc.status.rollback.composefs.verity).toBe(id1);
  });

  test("gc keeps exactly what live deployments reach", () => {
    // Finalize the switch: live = [os2, v2]; v1 is no longer named by any entry.
    finalizeByHand(h, h.esp);
    bootEntry(h, join(live(), entryFiles(live()).find((n) => n.startsWith("bootc_other_os-7-1"))!));
    // A foreign tag (an application image) must survive.
    ok(cfs(["repo", "--repo", join(h.root, "composefs"), "tag", built.get("v2")!.img.manifestDigest, "apps/kept"], env));
    const dry = ok(cfs(["gc", "--dry-run", ...hostArgs(h)], env)).stdout;
    expect(dry).toContain(`Would remove state directory ${join(h.root, "state/deploy", id1)}`);
    // v1's kernel directory is shared by v2 (same kernel): kept.
    expect(dry).not.toContain("Would remove kernel directory");
    expect(dry).toContain(`Would remove tag localhost/bootc-${built.get("v1")!.img.manifestDigest}`);
    expect(existsSync(join(h.root, "state/deploy", id1))).toBe(true);
    ok(cfs(["gc", ...hostArgs(h)], env));

    // Independently: the live entries, their state, kernels, tags and objects.
    const ents = entriesOf(live());
    const ids = new Set([...ents.values()].map(deploymentIdOf));
    expect(ids).toEqual(new Set([idOs2, id2]));
    expect(readdirSync(join(h.root, "state/deploy")).sort()).toEqual([...ids].sort());
    const kernels = new Set([...ents.values()].map((t) => /bootc_composefs-([0-9a-f]+)\//.exec(kv(t, "linux")!)![1]!));
    expect(readdirSync(join(h.esp, "EFI/Linux")).filter((n) => n.startsWith("bootc_composefs-")).sort()).toEqual([...kernels].map((k) => `bootc_composefs-${k}`).sort());
    const repo = join(h.root, "composefs");
    const tags = readdirSync(join(repo, "streams/refs/oci")).sort();
    const m2 = built.get("v2")!.img.manifestDigest;
    const mOs2 = built.get("os2")!.img.manifestDigest;
    expect(tags).toEqual(["apps%2Fkept", `localhost%2Fbootc-${m2}`, `localhost%2Fbootc-${mOs2}`].sort());

    // Objects reachable from the tags and the live deployment ids.
    const objPath = (hex: string) => join(repo, "objects", hex.slice(0, 2), hex.slice(2));
    const liveSet = new Set<string>();
    const walk = (hex: string): void => {
      if (liveSet.has(hex)) return;
      liveSet.add(hex);
      const bytes = new Uint8Array(readFileSync(objPath(hex)));
      let parsed = null;
      try {
        parsed = parseSplitStream(bytes, { algorithm: "sha512" });
      } catch {}
      if (parsed !== null) {
        for (const r of [...parsed.objectRefs, ...parsed.streamRefs, ...parsed.namedRefs.values()]) walk(Buffer.from(r).toString("hex"));
        return;
      }
      try {
        for (const o of imageObjects(bytes).ids) walk(o);
      } catch {}
    };
    const resolve = (link: string): string => {
      let p = link;
      for (let i = 0; i < 5 && lstatSync(p).isSymbolicLink(); i++) p = join(p, "..", readlinkSync(p));
      return p;
    };
    for (const t of tags) walk(resolve(join(repo, "streams/refs/oci", t)).split("/").slice(-2).join(""));
    for (const id of ids) walk(id);
    const present = new Set<string>();
    for (const d of readdirSync(join(repo, "objects"))) {
      if (!/^[0-9a-f]{2}$/.test(d)) continue;
      for (const f of readdirSync(join(repo, "objects", d))) present.add(d + f);
    }
    expect([...present].sort()).toEqual([...liveSet].sort());
    // Clean, and a second gc removes nothing.
    expect(ok(cfs(["repo", "--repo", repo, "fsck"], env)).status).toBe(0);
    expect(ok(cfs(["gc", ...hostArgs(h)], env)).stdout).toBe("Removed 0 repository objects (0 bytes), 0 images, 0 streams\n");
  });
});
