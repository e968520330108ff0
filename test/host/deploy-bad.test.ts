// Bad input for the host commands, on hosts in a directory: malformed and
// missing origins, an unknown boot type, a missing ESP, corrupted boot
// entries, conflicting kernel arguments, bad kargs.d files, images that
// cannot boot, /etc merge conflicts at staging, a registry that goes away in
// the middle of an upgrade. Each gives one clear `cfsboot: …` line (exit 1),
// or a warning with the entry reported and skipped while the command goes on
// — never a stack trace, never a half-written loader directory, and nothing
// staged by a command that failed.

import { spawnSync } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { cfsbootExe } from "../helpers/env.ts";
import { buildImage, pushImage } from "../helpers/oci-image.ts";
import { startCutProxy } from "../helpers/cut-proxy.ts";
import { startRegistry, type TestRegistry } from "../helpers/registry.ts";
import { type HostDir, bless, bootEntry, cfs, cfsAsync, entryFiles, finalizeByHand, hostArgs, makeHostDir, osImage, type OsImageOptions, registryHome, type Run } from "../helpers/os-host.ts";
import { ensureExe } from "../helpers/sysroot.ts";

let dir: string;
let reg: TestRegistry;
let layout: string;
let env: Record<string, string>;
let one: HostDir; // v1 installed and booted
let two: HostDir; // booted v2, rollback v1
let id1: string;
let id2: string;

const V1: OsImageOptions = { version: "1.0", kernel: "k1", etc: { hostname: "h\n", motd: "one\n", "conf.d/a.conf": "a=1\n" } };
const V2: OsImageOptions = { version: "2.0", kernel: "k2", etc: { hostname: "h\n", motd: "two\n", "conf.d/a.conf": "a=1\n", "extra/x": "x\n" } };

function copyHost(from: HostDir, name: string): HostDir {
  const to = mkdtempSync(join(dir, `${name}-`));
  spawnSync("cp", ["-a", `${join(from.root, "..")}/.`, to]);
  return { root: join(to, "root"), esp: join(to, "esp"), boot: join(to, "root/boot"), cmdline: join(to, "cmdline"), home: join(to, "home") };
}

/** Exit 1, one `cfsboot:` line (the last), matching `re`; no internal error or stack. */
function fails(r: Run, re: RegExp): void {
  expect(r.status, r.stdout + r.stderr).toBe(1);
  const lines = r.stderr.trim().split("\n");
  expect(lines[lines.length - 1]).toMatch(/^cfsboot: /);
  expect(lines[lines.length - 1]).toMatch(re);
  expect(r.stderr).not.toMatch(/internal error|^\s+at |TypeError|RangeError/m);
}

function works(r: Run): Run {
  expect(r.status, r.stderr).toBe(0);
  expect(r.stderr).not.toMatch(/internal error|^\s+at /m);
  return r;
}

const idOf = (entryPath: string): string => /v1-sha512-12:([0-9a-f]{128})/.exec(readFileSync(entryPath, "utf8"))![1]!;

/** Nothing staged and the live entries are `before`. */
function nothingStaged(h: HostDir, before: string[]): void {
  expect(existsSync(join(h.esp, "loader/entries.staged"))).toBe(false);
  expect(existsSync(join(h.root, "run/composefs/staged-deployment"))).toBe(false);
  expect(entryFiles(join(h.esp, "loader/entries"))).toEqual(before);
  expect(readdirSync(join(h.esp, "loader")).filter((n) => n.startsWith("."))).toEqual([]);
}

beforeAll(async () => {
  ensureExe();
  dir = mkdtempSync(join(tmpdir(), "cfsboot-deploy-bad-"));
  layout = join(dir, "layout");
  reg = await startRegistry({ auth: "none" });
  env = registryHome(join(dir, "home"), reg.certsD);
  buildImage(layout, osImage(V1).spec, { tag: "v1" });
  buildImage(layout, osImage(V2).spec, { tag: "v2" });
  buildImage(layout, osImage({ ...V2, version: "3.0", kargs: { "50-bad.toml": 'kargs = "rw"\n' } }).spec, { tag: "badkargs" });
  buildImage(layout, osImage({ ...V2, version: "3.1", kargs: { "50-cfs.toml": 'kargs = ["composefs=abc"]\n' } }).spec, { tag: "cfskarg" });
  // No kernel at all; and a Type 1 entry shipped in /boot.
  const nokernel = osImage({ ...V2, version: "4.0" }).spec;
  nokernel.layers = nokernel.layers.slice(0, 1);
  buildImage(layout, nokernel, { tag: "nokernel" });
  const type1 = osImage({ ...V2, version: "4.1" }).spec;
  type1.layers.push({ entries: [{ type: "dir", path: "boot", mode: 0o755 }, { type: "dir", path: "boot/loader", mode: 0o755 }, { type: "dir", path: "boot/loader/entries", mode: 0o755 }, { type: "file", path: "boot/loader/entries/x.conf", content: "title x\nlinux /usr/bin/hello\n" }] });
  buildImage(layout, type1, { tag: "type1" });
  buildImage(layout, osImage({ ...V2, version: "5.0", bulk: 24_000_000 }).spec, { tag: "big" });
  for (const t of ["v1", "badkargs", "cfskarg", "nokernel", "type1"]) await pushImage(layout, t, reg, t === "v1" ? "os" : t, "latest");

  one = makeHostDir(join(dir, "one"));
  works(cfs(["install", "to-filesystem", "--source-imgref", reg.ref("os", "latest"), "--composefs-insecure", "--esp", one.esp, one.root], env));
  const e1 = bless(join(one.esp, "loader/entries", entryFiles(join(one.esp, "loader/entries"))[0]!));
  id1 = idOf(e1);
  bootEntry(one, e1);

  await pushImage(layout, "v2", reg, "os", "latest");
  two = copyHost(one, "two");
  works(cfs(["upgrade", ...hostArgs(two)], env));
  finalizeByHand(two, two.esp);
  const e2 = join(two.esp, "loader/entries", entryFiles(join(two.esp, "loader/entries")).find((n) => n.startsWith("bootc_testos-2.0-1"))!);
  id2 = idOf(e2);
  bootEntry(two, bless(e2));
}, 300_000);

afterAll(async () => {
  await reg?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("origins", () => {
  test("a malformed rollback origin: status warns and skips it; rollback still works on the entries", () => {
    const h = copyHost(two, "origin");
    writeFileSync(join(h.root, "state/deploy", id1, `${id1}.origin`), "[origin]\ncontainer-image-reference = x\nthis line is junk\n");
    const r = works(cfs(["status", "--format=json", ...hostArgs(h)], env));
    expect(r.stderr).toMatch(new RegExp(`${id1}\\.origin: line 3: expected 'key = value'; deployment skipped`));
    const doc = JSON.parse(r.stdout);
    expect(doc.status.booted.composefs.verity).toBe(id2);
    expect(doc.status.rollback).toBeNull();
    works(cfs(["rollback", ...hostArgs(h)], env));
  });

  test("an unknown boot type in the booted origin: status warns; upgrade fails naming the file", () => {
    const h = copyHost(two, "boottype");
    const p = join(h.root, "state/deploy", id2, `${id2}.origin`);
    writeFileSync(p, readFileSync(p, "utf8").replace("boot_type = bls", "boot_type = floppy"));
    const r = works(cfs(["status", "--format=json", ...hostArgs(h)], env));
    expect(r.stderr).toContain("unknown boot type 'floppy'");
    expect(JSON.parse(r.stdout).status.rollback.composefs.verity).toBe(id1);
    const before = entryFiles(join(h.esp, "loader/entries"));
    fails(cfs(["upgrade", ...hostArgs(h)], env), new RegExp(`${id2}\\.origin: unknown boot type 'floppy'`));
    nothingStaged(h, before);
  });

  test("a missing origin: reported with bootc's message id, deployment skipped", () => {
    const h = copyHost(two, "noorigin");
    rmSync(join(h.root, "state/deploy", id1, `${id1}.origin`));
    const r = works(cfs(["status", "--format=json", ...hostArgs(h)], env));
    expect(r.stderr).toContain(`No origin file for deployment ${id1} (MESSAGE_ID=d264f924dadb4c31bff0412107d391fb)`);
    expect(JSON.parse(r.stdout).status.rollback).toBeNull();
  });

  test("a legacy deployment: no manifest_digest, .imginfo read; gc writes manifest_digest back", () => {
    const h = copyHost(one, "legacy");
    const p = join(h.root, "state/deploy", id1, `${id1}.origin`);
    const origin = readFileSync(p, "utf8");
    const md = /manifest_digest = (\S+)/.exec(origin)![1]!;
    writeFileSync(p, origin.replace(/\n\[image\]\nmanifest_digest = \S+\n/, ""));
    // Without .imginfo: reported, no image data.
    let r = works(cfs(["status", "--format=json", ...hostArgs(h)], env));
    expect(r.stderr).toContain("no [image] manifest_digest");
    const manifest = { schemaVersion: 2, annotations: { "org.opencontainers.image.version": "1.0-legacy" } };
    writeFileSync(join(h.root, "state/deploy", id1, `${id1}.imginfo`), JSON.stringify({ config: { architecture: "amd64", created: "2020-01-01T00:00:00Z" }, manifest }));
    r = works(cfs(["status", "--format=json", ...hostArgs(h)], env));
    const img = JSON.parse(r.stdout).status.booted.image;
    expect(img.version).toBe("1.0-legacy");
    expect(img.timestamp).toBe("2020-01-01T00:00:00Z");
    // The real manifest is found through the localhost/bootc- tag whose boot image is the deployment.
    expect(img.imageDigest).toBe(md);
    works(cfs(["gc", ...hostArgs(h)], env));
    expect(readFileSync(p, "utf8")).toContain(`manifest_digest = ${md}`);
  });
});

describe("boot entries and the ESP", () => {
  test("corrupted entries are reported and skipped; rollback and gc keep them byte for byte", () => {
    const h = copyHost(two, "corrupt");
    const live = join(h.esp, "loader/entries");
    const junk: Record<string, string | Uint8Array> = {
      "zz-binary.conf": new Uint8Array([0xff, 0xfe, 0, 1, 2, 10, 0x80]),
      "zz-noversion.conf": "title x\nlinux /EFI/Linux/bootc_composefs-keepme/vmlinuz\noptions composefs=?abc\n",
      "zz-twice.conf": "title a\ntitle b\nversion 1\nlinux /x/vmlinuz\n",
      "zz-nokarg.conf": "title t\nversion 1\nlinux /EFI/Linux/bootc_composefs-keepme2/vmlinuz\noptions rw quiet\n",
      "zz-badhex.conf": "title t\nversion 1\nuki /EFI/Linux/bootc/bootc_composefs-nothex.efi\n",
    };
    for (const [n, c] of Object.entries(junk)) writeFileSync(join(live, n), c);
    mkdirSync(join(h.esp, "EFI/Linux/bootc_composefs-keepme"));
    const r = works(cfs(["status", "--format=json", ...hostArgs(h)], env));
    for (const n of Object.keys(junk)) expect(r.stderr).toMatch(new RegExp(`${n}.*entry skipped`));
    expect(r.stderr).toMatch(/zz-noversion\.conf: missing 'version'/);
    expect(r.stderr).toMatch(/zz-twice\.conf: line 2: 'title' given again/);
    expect(r.stderr).toMatch(/zz-nokarg\.conf: no composefs karg/);
    const doc = JSON.parse(r.stdout);
    expect(doc.status.booted.composefs.verity).toBe(id2);
    expect(doc.status.rollback.composefs.verity).toBe(id1);
    works(cfs(["rollback", ...hostArgs(h)], env));
    for (const [n, c] of Object.entries(junk)) expect(new Uint8Array(readFileSync(join(live, n)))).toEqual(typeof c === "string" ? new Uint8Array(Buffer.from(c)) : c);
    expect(JSON.parse(works(cfs(["status", "--format=json", ...hostArgs(h)], env)).stdout).status.rollbackQueued).toBe(true);
    works(cfs(["gc", ...hostArgs(h)], env));
    expect(existsSync(join(h.esp, "EFI/Linux/bootc_composefs-keepme"))).toBe(true);
  });

  test("an entry whose deployment has no state directory: reported by status and gc, not fatal", () => {
    const h = copyHost(two, "nostate");
    rmSync(join(h.root, "state/deploy", id1), { recursive: true });
    const s = works(cfs(["status", "--format=json", ...hostArgs(h)], env));
    expect(s.stderr).toContain(`No origin file for deployment ${id1}`);
    const g = works(cfs(["gc", ...hostArgs(h)], env));
    expect(g.stderr).toContain(`boot entry names deployment ${id1}, which has no state directory (not removed)`);
    expect(entryFiles(join(h.esp, "loader/entries")).length).toBe(2);
  });

  test("an orphan state directory (a staged deployment forgotten at reboot): status reports it, gc removes it", () => {
    const h = copyHost(one, "orphan");
    works(cfs(["upgrade", ...hostArgs(h)], env)); // os:latest is v2 now
    const staged = readdirSync(join(h.root, "state/deploy")).filter((n) => n !== id1);
    expect(staged.length).toBe(1);
    // Reboot without finalize: /run is gone, the staged entries stay behind.
    rmSync(join(h.root, "run"), { recursive: true });
    const s = works(cfs(["status", "--format=json", ...hostArgs(h)], env));
    expect(s.stderr).toContain(`state directory ${join(h.root, "state/deploy", staged[0]!)} is not named by any boot entry`);
    expect(JSON.parse(s.stdout).status.staged).toBeNull();
    const g = works(cfs(["gc", ...hostArgs(h)], env));
    expect(g.stdout).toContain(`Removed stale staged state ${join(h.esp, "loader/entries.staged")}`);
    expect(g.stdout).toContain(`Removed state directory ${join(h.root, "state/deploy", staged[0]!)}`);
    expect(readdirSync(join(h.root, "state/deploy"))).toEqual([id1]);
    expect(existsSync(join(h.esp, "loader/entries.staged"))).toBe(false);
  });

  test("a missing ESP: a clear error from status, upgrade and rollback", () => {
    const h = copyHost(one, "noesp");
    const args = ["--sysroot", h.root, "--esp", join(h.esp, "gone"), "--booted-cmdline", h.cmdline];
    fails(cfs(["status", ...args], env), /missing ESP/);
    fails(cfs(["upgrade", ...args], env), /missing ESP/);
    fails(cfs(["rollback", ...args], env), /missing ESP/);
  });

  test("no boot loader recorded, a booted command line that is not composefs, conflicting composefs kargs", () => {
    const h = copyHost(one, "misc");
    writeFileSync(h.cmdline, "root=/dev/sda1 quiet\n");
    fails(cfs(["upgrade", ...hostArgs(h)], env), /not booted into a composefs deployment/);
    expect(JSON.parse(works(cfs(["status", "--format=json", ...hostArgs(h)], env)).stdout).status.booted).toBeNull();
    writeFileSync(h.cmdline, `composefs=?${"a".repeat(128)} composefs=?${"b".repeat(128)}\n`);
    fails(cfs(["status", ...hostArgs(h)], env), /cmdline: composefs=\?b+: conflicts with composefs=\?a+/);
    writeFileSync(h.cmdline, `composefs.digest=v9-sha512-12:${"a".repeat(128)}\n`);
    fails(cfs(["status", ...hostArgs(h)], env), /unsupported format version 'v9'/);
    rmSync(join(h.root, "state/cfsboot/bootloader"));
    fails(cfs(["status", ...hostArgs(h)], env), /bootloader: no boot loader recorded/);
  });
});

describe("kernel arguments and images", () => {
  test("conflicting --karg at install", () => {
    const h = makeHostDir(mkdtempSync(join(dir, "karg-")));
    const ins = (...k: string[]) => cfs(["install", "to-filesystem", "--source-imgref", reg.ref("os", "latest"), "--composefs-insecure", "--esp", h.esp, ...k, h.root], env);
    fails(ins("--karg", `composefs=?${"c".repeat(128)}`), /--karg composefs=\?c+: conflicts with the composefs karg cfsboot writes/);
    fails(ins("--root-mount-spec", "UUID=1234", "--karg", "root=/dev/vda2"), /--karg root=\/dev\/vda2: conflicts with root=UUID=1234/);
    expect(existsSync(join(h.esp, "loader/entries"))).toBe(false);
  });

  test("a bad kargs.d file is an error naming it, at install and at switch; nothing staged", () => {
    const h = makeHostDir(mkdtempSync(join(dir, "kargsd-")));
    fails(cfs(["install", "to-filesystem", "--source-imgref", reg.ref("badkargs", "latest"), "--composefs-insecure", "--esp", h.esp, h.root], env), /usr\/lib\/bootc\/kargs\.d\/50-bad\.toml: line 1: 'kargs' must be an array of strings/);
    expect(entryFiles(join(h.esp, "loader/entries"))).toEqual([]);
    const t = copyHost(one, "kargsd-switch");
    const before = entryFiles(join(t.esp, "loader/entries"));
    fails(cfs(["switch", reg.ref("badkargs", "latest"), ...hostArgs(t)], env), /50-bad\.toml: line 1: 'kargs' must be an array of strings/);
    nothingStaged(t, before);
    fails(cfs(["switch", reg.ref("cfskarg", "latest"), ...hostArgs(t)], env), /kargs\.d: sets "composefs=abc"; the composefs karg is cfsboot's to write/);
    nothingStaged(t, before);
  });

  test("images that cannot boot: no kernel, Type 1 entries in /boot", () => {
    const t = copyHost(one, "noboot");
    const before = entryFiles(join(t.esp, "loader/entries"));
    fails(cfs(["switch", reg.ref("nokernel", "latest"), ...hostArgs(t)], env), /no boot entries/);
    fails(cfs(["switch", reg.ref("type1", "latest"), ...hostArgs(t)], env), /Found Type1 entries in \/boot/);
    nothingStaged(t, before);
  });
});

describe("staging refusals and failures", () => {
  test("/etc conflicts at staging: every path listed, nothing staged", () => {
    const h = copyHost(one, "etc");
    const etc = join(h.root, "state/deploy", id1, "etc");
    // motd: a local directory where the new image changed the file; extra: a local file where it adds a directory.
    rmSync(join(etc, "motd"));
    mkdirSync(join(etc, "motd"));
    writeFileSync(join(etc, "motd/local"), "mine\n");
    writeFileSync(join(etc, "extra"), "local file\n");
    appendFileSync(join(etc, "hostname"), "# local change, not a conflict\n");
    const before = entryFiles(join(h.esp, "loader/entries"));
    const r = cfs(["upgrade", ...hostArgs(h)], env);
    fails(r, /\/etc: Merge conflicts found in etc \(2 paths\); nothing was staged/);
    expect(r.stderr).toMatch(/etc merge conflict: \/etc\/extra: /);
    expect(r.stderr).toMatch(/etc merge conflict: \/etc\/motd: /);
    nothingStaged(h, before);
    expect(readdirSync(join(h.root, "state/deploy"))).toEqual([id1]);
  });

  test("the registry goes away in the middle of an upgrade: one-line error, nothing staged, status and fsck fine", async () => {
    const other = await startRegistry({ auth: "none" });
    // The host reaches the registry through a proxy that cuts every connection
    // 2 MB into the new image's download (and refuses new ones after).
    const proxy = await startCutProxy(other.port);
    try {
      const certsD = join(dir, "certs-gone");
      mkdirSync(join(certsD, proxy.host), { recursive: true });
      writeFileSync(join(certsD, proxy.host, "ca.crt"), readFileSync(other.caFile));
      const e2 = { ...env, ...registryHome(join(dir, "home2"), certsD) };
      await pushImage(layout, "v1", other, "os", "latest");
      const h = makeHostDir(mkdtempSync(join(dir, "gone-")));
      works(await cfsAsync(["install", "to-filesystem", "--source-imgref", `docker://${proxy.host}/os:latest`, "--composefs-insecure", "--esp", h.esp, h.root], e2));
      bootEntry(h, join(h.esp, "loader/entries", entryFiles(join(h.esp, "loader/entries"))[0]!));
      await pushImage(layout, "big", other, "os", "latest");
      const before = entryFiles(join(h.esp, "loader/entries"));
      proxy.arm(2_000_000);
      const r = await cfsAsync(["upgrade", ...hostArgs(h)], e2);
      await proxy.cut;
      expect(r.status, r.stderr).toBe(1);
      const lines = r.stderr.trim().split("\n");
      expect(lines[lines.length - 1]).toMatch(/^cfsboot: .*(127\.0\.0\.1|connect|ECONNREFUSED|socket|closed|reset|terminated)/i);
      expect(r.stderr).not.toMatch(/internal error|^\s+at /m);
      nothingStaged(h, before);
      const s = works(cfs(["status", "--format=json", ...hostArgs(h)], e2));
      expect(JSON.parse(s.stdout).status.staged).toBeNull();
      works(cfs(["repo", "--repo", join(h.root, "composefs"), "fsck"], e2));
      // --check without a registry: a clear error too.
      fails(cfs(["upgrade", "--check", ...hostArgs(h)], e2), /127\.0\.0\.1|connect|refused/i);
    } finally {
      await proxy.close();
      await other.stop();
    }
  }, 120_000);
});
