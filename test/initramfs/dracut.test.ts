// The dracut module (dracut/modules.d/50cfsboot): Debian's own dracut builds
// an initramfs with it inside a chroot of the VM harness's cached guest
// rootfs (dracut 106 on trixie, 059 on bookworm), and `lsinitrd` shows the
// executable — byte-identical to the one installed, so still cfsboot and not
// the plain bun runtime — the unit, its wants link, the config file and the
// kernel modules. A real `strip` is present in the chroot and `--strip` is
// requested explicitly: the module must keep the strip pass away.

import { chmodSync, copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { agentExecutable } from "../helpers/agent-exe.ts";
import { canRun, hasTool, inCI, isRoot, projectRoot } from "../helpers/env.ts";
import { MINIMAL_MODULES, MINIMAL_DRIVERS } from "../../vm/lib/initrd.ts";
import { BOOKWORM, TRIXIE, type GuestSpec, type Rootfs, chrootScript, ensureRootfs, inChroot } from "../../vm/lib/rootfs.ts";
import { cacheDir, makeScratch, rmrf, run } from "../../vm/lib/util.ts";
import { rootfsKey } from "../../vm/lib/rootfs.ts";

const cached = (spec: GuestSpec) => existsSync(join(cacheDir(), "rootfs", `${spec.suite}-${rootfsKey(spec)}`, "meta.json"));
// Building a guest rootfs takes minutes and the mirror; CI does it (the VM tests need it too),
// a developer machine without the cache skips.
const ok =
  canRun(isRoot && hasTool("unshare") && hasTool("zstd") && hasTool("tar"), "the dracut test needs root, unshare, tar and zstd") &&
  canRun(inCI || (cached(TRIXIE) && cached(BOOKWORM)), "no cached guest rootfs (build it with the VM harness, e.g. npm run test:vm)");

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const MODULE_DIR = join(projectRoot, "dracut/modules.d/50cfsboot");
const CONF_SNIPPET = join(projectRoot, "dracut/dracut.conf.d/50-cfsboot.conf");
const UNIT = "cfsboot-setup-root.service";
const CONF_TEXT = '# test config\n[etc]\nmount = "bind"\n';

let scratch = "";
let exe = "";
let exeSha = "";

/**
 * Put this machine's binutils `strip` (Debian 12, 2.40) into the guest tree
 * at /usr/bin/strip, with the shared libraries it needs that the guest lacks:
 * what installing binutils gives dracut's strip pass.
 */
function installStrip(root: string): void {
  const real = spawnSync("readlink", ["-f", "/usr/bin/strip"], { encoding: "utf8" }).stdout.trim();
  const ldd = spawnSync("ldd", [real], { encoding: "utf8" }).stdout;
  for (const m of ldd.matchAll(/=> (\/\S+)/g)) {
    const lib = m[1]!;
    const dest = join(root, lib);
    const destUsr = join(root, "usr", lib);
    if (existsSync(dest) || existsSync(destUsr)) continue;
    mkdirSync(dirname(destUsr), { recursive: true });
    copyFileSync(lib, lib.startsWith("/usr/") ? dest : destUsr);
  }
  copyFileSync(real, join(root, "usr/bin/strip"));
  chmodSync(join(root, "usr/bin/strip"), 0o755);
}

function inGuest(root: string, argv: string[]): Buffer {
  return run(["bash", chrootScript, root, "--", ...argv]).stdout;
}

/** `dracut --version` (059 exits 1 after printing it). */
function dracutVersion(root: string): string {
  const r = run(["bash", chrootScript, root, "--", "dracut", "--version"], { allowFail: true });
  return (r.stdout.toString() + r.stderr).trim();
}

interface Built {
  root: string;
  img: string;
  list: string;
  cpio: Map<string, Uint8Array>;
  log: string;
  kver: string;
}

async function buildInitrd(spec: GuestSpec, how: "add" | "conf"): Promise<Built> {
  const rootfs: Rootfs = await ensureRootfs(spec);
  const work = makeScratch(`dracut-test-${spec.suite}`);
  const root = join(work, "root");
  extractForDracut(rootfs, root);
  cpSync(MODULE_DIR, join(root, "usr/lib/dracut/modules.d/50cfsboot"), { recursive: true });
  copyFileSync(exe, join(root, "usr/bin/cfsboot"));
  chmodSync(join(root, "usr/bin/cfsboot"), 0o755);
  mkdirSync(join(root, "usr/lib/composefs"), { recursive: true });
  writeFileSync(join(root, "usr/lib/composefs/setup-root-conf.toml"), CONF_TEXT);
  installStrip(root);
  if (how === "conf") {
    mkdirSync(join(root, "usr/lib/dracut/dracut.conf.d"), { recursive: true });
    copyFileSync(CONF_SNIPPET, join(root, "usr/lib/dracut/dracut.conf.d/50-cfsboot.conf"));
  }
  // The module must bring erofs, overlay and loop itself: they are not in --drivers.
  const drivers = MINIMAL_DRIVERS.filter((d) => !["erofs", "overlay", "loop"].includes(d));
  expect(MINIMAL_MODULES).toContain("systemd-initrd");
  const log = join(work, "dracut.log");
  const argv = [
    "dracut", "--force", "--no-hostonly", "--no-hostonly-cmdline", "--no-early-microcode",
    // explicitly ask for stripping (the harness's own dracut.conf.d says do_strip=no)
    "--strip",
    // the smallest systemd initrd: what is under test is this module's part
    "-m", "base systemd-initrd", "--drivers", drivers.join(" "),
    ...(how === "add" ? ["--add", "cfsboot"] : []),
    // uncompressed: compression is not under test, and the image is read back twice
    "--no-compress", "--kver", rootfs.kver, "/root/cfsboot-test.img",
  ];
  await inChroot(root, argv, { log, timeoutMs: 900_000 });
  const list = inGuest(root, ["lsinitrd", "/root/cfsboot-test.img"]).toString("utf8");
  const cpio = readCpio(readFileSync(join(root, "root/cfsboot-test.img")));
  return { root, img: "/root/cfsboot-test.img", list, cpio, log: readFileSync(log, "utf8"), kver: rootfs.kver };
}

/**
 * The members of an uncompressed initramfs (concatenated "newc" cpio
 * archives): name → content (symlinks: their target). An independent reading
 * of what lsinitrd lists.
 */
function readCpio(img: Uint8Array): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  const text = (a: number, b: number) => Buffer.from(img.subarray(a, b)).toString("latin1");
  let off = 0;
  while (off + 110 <= img.byteLength) {
    if (img[off] === 0) {
      off += 4; // padding between archives
      continue;
    }
    const magic = text(off, off + 6);
    if (magic !== "070701" && magic !== "070702") throw new Error(`cpio: bad magic at offset ${off}`);
    const field = (i: number) => parseInt(text(off + 6 + i * 8, off + 14 + i * 8), 16);
    const size = field(6);
    const nameSize = field(11);
    const name = text(off + 110, off + 110 + nameSize - 1);
    const dataStart = (off + 110 + nameSize + 3) & ~3;
    if (name === "TRAILER!!!") {
      off = (dataStart + size + 3) & ~3;
      continue;
    }
    out.set(name.replace(/^\.\//, ""), img.subarray(dataStart, dataStart + size));
    off = (dataStart + size + 3) & ~3;
  }
  return out;
}

/**
 * The cached guest rootfs, as extractRootfs() unpacks it, minus what no
 * initramfs of this test can contain (most kernel drivers, translations,
 * documentation): a third of the writing on a loaded 2-core machine.
 */
function extractForDracut(rootfs: Rootfs, dest: string): void {
  mkdirSync(dest, { recursive: true });
  const skip = [
    "./usr/lib/modules/*/kernel/drivers/net", "./usr/lib/modules/*/kernel/drivers/gpu", "./usr/lib/modules/*/kernel/drivers/media",
    "./usr/lib/modules/*/kernel/drivers/scsi", "./usr/lib/modules/*/kernel/drivers/infiniband", "./usr/lib/modules/*/kernel/drivers/usb",
    "./usr/lib/modules/*/kernel/sound", "./usr/share/locale", "./usr/share/doc", "./usr/share/man", "./usr/lib/firmware",
  ];
  run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls", "-I", "zstd -q -T0", ...skip.map((p) => `--exclude=${p}`), "-xpf", rootfs.tarball, "-C", dest]);
}

/** Names in an lsinitrd listing (`ls -l` lines; symlinks as "name -> target"). */
function names(list: string): Map<string, string | null> {
  const out = new Map<string, string | null>();
  for (const line of list.split("\n")) {
    const m = /^[-dlcbps][rwxsStT-]{9}\S*\s+\d+\s+\S+\s+\S+\s+\d+(?:,\s*\d+)?\s+\S+\s+\d+\s+[\d:]+\s+(.*)$/.exec(line);
    if (!m) continue;
    const [name, target] = m[1]!.split(" -> ");
    out.set(name!, target ?? null);
  }
  return out;
}

function checkInitrd(b: Built): void {
  const files = names(b.list);
  expect(files.size).toBeGreaterThan(100);
  // the executable, unstripped: the same bytes as installed, and it still runs as cfsboot
  expect(files.has("usr/bin/cfsboot")).toBe(true);
  const inside = b.cpio.get("usr/bin/cfsboot")!;
  expect(inside.byteLength).toBe(readFileSync(exe).byteLength);
  expect(sha256(inside)).toBe(exeSha);
  const extracted = join(dirname(b.root), "cfsboot-from-initrd");
  writeFileSync(extracted, inside, { mode: 0o755 });
  const help = spawnSync(extracted, ["setup-root", "--help"], { encoding: "utf8" });
  expect(help.status).toBe(0);
  expect(help.stdout).toContain("usage: cfsboot setup-root");
  // the libraries it links came along
  for (const lib of ["libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2"]) {
    expect([...files.keys()].some((n) => n.endsWith(`/${lib}`)), lib).toBe(true);
  }
  // the unit, as shipped, and its wants link
  expect(Buffer.from(b.cpio.get(`usr/lib/systemd/system/${UNIT}`)!).toString("utf8")).toBe(readFileSync(join(MODULE_DIR, UNIT), "utf8"));
  expect(files.get(`usr/lib/systemd/system/initrd-root-fs.target.wants/${UNIT}`)).toMatch(new RegExp(`(^|/)${UNIT}$`));
  expect(Buffer.from(b.cpio.get(`usr/lib/systemd/system/initrd-root-fs.target.wants/${UNIT}`)!).toString()).toMatch(new RegExp(`(^|/)${UNIT}$`));
  // the image's mount configuration
  expect(Buffer.from(b.cpio.get("usr/lib/composefs/setup-root-conf.toml")!).toString("utf8")).toBe(CONF_TEXT);
  // kernel modules (loop may be built in)
  const builtin = readFileSync(join(b.root, "usr/lib/modules", b.kver, "modules.builtin"), "utf8");
  for (const mod of ["erofs", "overlay", "loop"]) {
    const present = [...files.keys()].some((n) => new RegExp(`/${mod}\\.ko(\\.(xz|zst|gz))?$`).test(n));
    const isBuiltin = new RegExp(`/${mod}\\.ko$`, "m").test(builtin);
    expect(present || isBuiltin, `${mod}.ko in the initramfs`).toBe(true);
    if (mod !== "loop") expect(present, `${mod}.ko (a module in Debian's kernel)`).toBe(true);
  }
  // the strip pass was requested and skipped because of the module
  expect(b.log).toContain("cfsboot: not stripping the initramfs");
  expect(b.log).not.toContain("*** Stripping files ***");
}

beforeAll(() => {
  if (!ok) return;
  scratch = makeScratch("dracut-test");
  // a private copy: dist/ may be rebuilt while this test runs
  exe = join(scratch, "cfsboot-under-test");
  copyFileSync(agentExecutable(scratch), exe);
  chmodSync(exe, 0o755);
  exeSha = sha256(readFileSync(exe));
});

afterAll(() => {
  if (scratch) rmrf(scratch);
});

describe.runIf(ok)("dracut module cfsboot", () => {
  test("dracut 106 (Debian 13), --add cfsboot, --strip requested: executable intact, unit, wants link, config, modules", async () => {
    const b = await buildInitrd(TRIXIE, "add");
    try {
      expect(dracutVersion(b.root)).toMatch(/^dracut 106/);
      expect(inGuest(b.root, ["strip", "--version"]).toString()).toMatch(/GNU strip/);
      checkInitrd(b);
      // what the module prevents: dracut's strip command turns the executable into plain bun
      inGuest(b.root, ["cp", "/usr/bin/cfsboot", "/root/stripped"]);
      inGuest(b.root, ["strip", "-g", "-p", "/root/stripped"]);
      const stripped = readFileSync(join(b.root, "root/stripped"));
      expect(sha256(stripped)).not.toBe(exeSha);
      const r = spawnSync(join(b.root, "root/stripped"), ["setup-root", "--help"], { encoding: "utf8", timeout: 30_000 });
      expect(r.stdout).not.toContain("usage: cfsboot setup-root");
    } finally {
      rmrf(dirname(b.root));
    }
  }, 900_000);

  test("dracut 059 (Debian 12), opted in by the shipped dracut.conf.d snippet, --strip requested", async () => {
    const b = await buildInitrd(BOOKWORM, "conf");
    try {
      expect(dracutVersion(b.root)).toMatch(/^dracut 059/);
      expect(b.log).toMatch(/Including module: cfsboot/);
      checkInitrd(b);
      // check(): opt-in only (255), and not at all without the executable
      const probe = (): number => {
        const script = `export initdir=$(mktemp -d); . /usr/lib/dracut/dracut-functions.sh; . /usr/lib/dracut/dracut-init.sh; moddir=/usr/lib/dracut/modules.d/50cfsboot; . $moddir/module-setup.sh; check; echo "rc=$?"`;
        return Number(/rc=(\d+)/.exec(inGuest(b.root, ["bash", "-c", script]).toString())?.[1]);
      };
      expect(probe()).toBe(255);
      inGuest(b.root, ["rm", "/usr/bin/cfsboot"]);
      expect(probe()).toBe(1);
    } finally {
      rmrf(dirname(b.root));
    }
  }, 900_000);
});
