// `cfsboot seal` on an insecure host in a directory. This machine's kernel has
// no fs-verity, so sealing itself must refuse with a clear message and change
// nothing; `--dry-run` checks every object's digest in userspace (a damaged
// object is found) and lists the entries whose karg would be sealed. The
// sealed boot that follows a real seal is proven in the VM scenarios.

import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";

import { sealedOptions } from "../../host/seal.ts";
import { canRun, isRoot } from "../helpers/env.ts";
import { buildImage } from "../helpers/oci-image.ts";
import { bootImageSpec, cfsbootOk, runCfsboot } from "../helpers/boot-image.ts";
import { ensureExe } from "../helpers/pull-env.ts";

const ok = canRun(isRoot && existsSync("/usr/lib/systemd/boot/efi/systemd-bootx64.efi"), "needs root and systemd-boot-efi");
const noKernelVerity = !existsSync("/sys/fs/ext4/features/verity");

let work: string;
let root: string;
let esp: string;
let id: string;

function hashTree(dir: string): string {
  const h = createHash("sha256");
  const walk = (d: string) => {
    for (const n of readdirSync(d).sort()) {
      const p = join(d, n);
      const st = statSync(p);
      h.update(`${p}\0${st.mode}\0`);
      if (st.isDirectory()) walk(p);
      else if (st.isFile()) h.update(readFileSync(p));
    }
  };
  walk(dir);
  return h.digest("hex");
}

function objectCount(repo: string): number {
  let n = 0;
  for (const d of readdirSync(join(repo, "objects"))) if (/^[0-9a-f]{2}$/.test(d)) n += readdirSync(join(repo, "objects", d)).filter((f) => /^[0-9a-f]+$/.test(f)).length;
  return n;
}

beforeAll(async () => {
  if (!ok) return;
  ensureExe();
  work = mkdtempSync("/var/tmp/cfs-seal-test-");
  buildImage(join(work, "layout"), bootImageSpec(), { tag: "v1" });
  root = join(work, "root");
  esp = join(work, "esp");
  for (const d of [root, esp]) mkdirSync(d, { recursive: true });
  const out = await cfsbootOk(["install", "to-filesystem", "--composefs-insecure", "--source-imgref", `oci:${join(work, "layout")}:v1`, "--esp", esp, root]);
  id = /Installed deployment ([0-9a-f]{128})/.exec(out)![1]!;
}, 60_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("sealedOptions", () => {
  test("drops the ? of every composefs karg, keeps everything else", () => {
    const v1 = "a".repeat(128);
    const v2 = "b".repeat(128);
    expect(sealedOptions(`root=UUID=x rw composefs.digest=?v1-sha512-12:${v1} console=ttyS0`)).toBe(`root=UUID=x rw composefs.digest=v1-sha512-12:${v1} console=ttyS0`);
    expect(sealedOptions(`rw composefs=?${v2} quiet`)).toBe(`rw composefs=${v2} quiet`);
    expect(sealedOptions(`composefs.digest=?v1-sha512-12:${v1} composefs=?${v2}`)).toBe(`composefs.digest=v1-sha512-12:${v1} composefs=${v2}`);
    expect(sealedOptions(`rw composefs=${v2}`)).toBeNull(); // already sealed
    expect(sealedOptions("rw quiet")).toBeNull(); // not a composefs entry
  });
});

describe.skipIf(!ok)("cfsboot seal", () => {
  test("--dry-run: every object checked, meta.json and the entry listed, nothing changed", async () => {
    const before = hashTree(work);
    const r = await runCfsboot(["seal", "--dry-run", "--sysroot", root, "--esp", esp]);
    expect(r.status, r.stderr).toBe(0);
    const n = objectCount(join(root, "composefs"));
    expect(n).toBeGreaterThan(3);
    expect(r.stdout).toBe(
      [
        `objects: ${n} (${n} would get fs-verity)`,
        "meta.json: would get fs-verity",
        `entry bootc_cfs_test-1-1+3.conf: would be sealed (${id})`,
        "",
      ].join("\n"),
    );
    expect(hashTree(work)).toBe(before);
  }, 60_000);

  test.skipIf(!noKernelVerity)("without fs-verity in the kernel: refused, nothing changed", async () => {
    const before = hashTree(work);
    const r = await runCfsboot(["seal", "--sysroot", root, "--esp", esp]);
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(`cfsboot: ${root}/composefs: the file system holding the repository has no fs-verity (ext4 needs the verity feature: mkfs -O verity or tune2fs -O verity, and a kernel with CONFIG_FS_VERITY); nothing was changed\n`);
    expect(hashTree(work)).toBe(before);
    expect(readFileSync(join(esp, "loader/entries/bootc_cfs_test-1-1+3.conf"), "utf8")).toContain("composefs.digest=?v1-sha512-12:");
  }, 60_000);

  test("--dry-run finds a damaged object and exits 1", async () => {
    // The largest object (a file's content); flip one byte in the middle.
    const repo = join(root, "composefs");
    let big = { p: "", size: 0 };
    for (const d of readdirSync(join(repo, "objects")).filter((x) => /^[0-9a-f]{2}$/.test(x))) {
      for (const f of readdirSync(join(repo, "objects", d))) {
        const p = join(repo, "objects", d, f);
        const s = statSync(p).size;
        if (s > big.size) big = { p, size: s };
      }
    }
    const bytes = readFileSync(big.p);
    const orig = bytes[bytes.length >> 1]!;
    bytes[bytes.length >> 1] = orig ^ 0xff;
    writeFileSync(big.p, bytes);
    try {
      const r = await runCfsboot(["seal", "--dry-run", "--sysroot", root, "--esp", esp]);
      expect(r.status).toBe(1);
      const rel = big.p.slice(repo.length + 1);
      expect(r.stdout).toContain(`corrupt: ${rel}\n`);
    } finally {
      bytes[bytes.length >> 1] = orig;
      writeFileSync(big.p, bytes);
    }
  }, 60_000);

  test("no repository: a clear error", async () => {
    const r = await runCfsboot(["seal", "--dry-run", "--sysroot", join(work, "empty"), "--esp", esp]);
    expect(r.status).toBe(1);
    // (a --sysroot that does not exist is refused as such, before the repository is looked for)
    expect(r.stderr).toMatch(/^cfsboot: --sysroot .*empty: no such directory$/m);
    mkdirSync(join(work, "empty-dir"), { recursive: true });
    const r2 = await runCfsboot(["seal", "--dry-run", "--sysroot", join(work, "empty-dir"), "--esp", esp]);
    expect(r2.status).toBe(1);
    expect(r2.stderr).toMatch(/no composefs repository here/);
  });
});
