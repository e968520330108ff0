// UKI deployments on hosts in a directory: images carrying a sealed UKI in
// /boot/EFI/Linux (built here with the objcopy builder and the systemd stub,
// its .cmdline naming the image's own boot EROFS, computed beforehand in a
// scratch repository). The deployment is the image the UKI's karg names:
// `composefs.digest=vN-…` fixes the format, a bare `composefs=` (bootc
// ≤ 1.16.4 wrote the V1 digest with it: bootc#2334) is tried as V2 then V1;
// an image in a format the repository does not generate is stored so the
// karg always names an image that exists. systemd-boot gets `efi` entries
// (systemd < 258 here), GRUB a user.cfg menuentry; upgrade stages, rollback
// swaps, and a UKI sealed for another image is refused.

import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { pullImage } from "../../host/pull.ts";
import { Repository } from "../../host/repo.ts";
import { buildUki } from "../../host/uki-build.ts";
import { readPeSections } from "../../shared/pe.ts";
import { canRun, hasTool } from "../helpers/env.ts";
import { buildImage, pushImage } from "../helpers/oci-image.ts";
import { type HostDir, cfs, entryFiles, hostArgs, kernelBytes, makeHostDir, osImage, type OsImageOptions, registryHome, type Run } from "../helpers/os-host.ts";
import { startRegistry, type TestRegistry } from "../helpers/registry.ts";
import { ensureExe } from "../helpers/sysroot.ts";

const STUB = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
const available = canRun(existsSync(STUB) && hasTool("objcopy"), "UKI tests need objcopy and the systemd stub (Debian packages binutils, systemd-boot-efi)");

let dir: string;
let reg: TestRegistry;
let layout: string;
let env: Record<string, string>;

interface UkiImage {
  ref: string;
  /** Boot EROFS ids of the image in V1 and V2. */
  v1: string;
  v2: string;
  uki: Uint8Array;
  cmdline: string;
  manifestDigest: string;
}

const ok = (r: Run): Run => {
  expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
  expect(r.stderr).not.toMatch(/internal error/);
  return r;
};

/**
 * An OS image with a UKI in /boot/EFI/Linux whose .cmdline is `cmdline(ids)`:
 * the boot image does not depend on /boot, so the ids of the image without
 * the UKI are the ids of the image with it.
 */
async function ukiImage(name: string, o: OsImageOptions, cmdline: (ids: { v1: string; v2: string }) => string): Promise<UkiImage> {
  const base = osImage(o).spec;
  buildImage(layout, base, { tag: `${name}-base` });
  const scratch = mkdtempSync(join(dir, "scratch-"));
  const { repo } = Repository.init(join(scratch, "repo"), { erofs: "dual", insecure: true });
  let ids: { v1: string; v2: string };
  try {
    const r = await pullImage(repo, `oci:${layout}:${name}-base`, { bootable: true });
    ids = { v1: r.imageIds.bootV1!, v2: r.imageIds.bootV2! };
  } finally {
    repo.close();
  }
  const k = kernelBytes(o);
  writeFileSync(join(scratch, "vmlinuz"), k.vmlinuz);
  writeFileSync(join(scratch, "initrd"), k.initrd);
  const cl = cmdline(ids);
  const osRelease = `NAME="Test OS"\nID=${o.osId ?? "testos"}\nVERSION_ID=${o.version}\nPRETTY_NAME="Test OS ${o.version}"\n`;
  await buildUki({ linux: join(scratch, "vmlinuz"), initrds: [join(scratch, "initrd")], cmdline: cl, osRelease, uname: "6.1.0-test" }, { output: join(scratch, "uki.efi"), builder: "objcopy", stub: STUB });
  const uki = new Uint8Array(readFileSync(join(scratch, "uki.efi")));
  const spec = osImage(o).spec;
  spec.layers.push({
    entries: [
      { type: "dir", path: "boot", mode: 0o755 },
      { type: "dir", path: "boot/EFI", mode: 0o755 },
      { type: "dir", path: "boot/EFI/Linux", mode: 0o755 },
      { type: "file", path: "boot/EFI/Linux/test-os.efi", content: uki },
    ],
  });
  const img = buildImage(layout, spec, { tag: name });
  const ref = await pushImage(layout, name, reg, name, "latest");
  return { ref, ...ids, uki, cmdline: cl, manifestDigest: img.manifestDigest };
}

/** SHA-256 of the .linux section followed by the .initrd section (virtual_size bytes each). */
function sectionDigest(uki: Uint8Array): string {
  const h = createHash("sha256");
  for (const n of [".linux", ".initrd"]) {
    const s = readPeSections(uki).find((x) => x.name === n)!;
    h.update(uki.subarray(s.pointerToRawData, s.pointerToRawData + s.virtualSize));
  }
  return h.digest("hex");
}

function install(h: HostDir, ref: string, extra: string[] = []): Run {
  return cfs(["install", "to-filesystem", "--source-imgref", ref, "--composefs-insecure", "--esp", h.esp, ...extra, h.root], env);
}

let A: UkiImage; // composefs.digest=?v1-…
let B: UkiImage; // bare composefs=?<V1 id> (bootc#2334)
let C: UkiImage; // bare composefs=?<V2 id>
let W: UkiImage; // sealed for another image

beforeAll(async () => {
  if (!available) return;
  ensureExe();
  dir = mkdtempSync(join(tmpdir(), "cfsboot-deploy-uki-"));
  layout = join(dir, "layout");
  reg = await startRegistry({ auth: "none" });
  env = registryHome(join(dir, "home"), reg.certsD);
  A = await ukiImage("uki-a", { version: "1.0", kernel: "ka" }, (i) => `composefs.digest=?v1-sha512-12:${i.v1} rw console=ttyS0`);
  B = await ukiImage("uki-b", { version: "2.0", kernel: "kb" }, (i) => `composefs=?${i.v1} rw console=ttyS0`);
  C = await ukiImage("uki-c", { version: "3.0", kernel: "kc" }, (i) => `composefs=?${i.v2} rw`);
  W = await ukiImage("uki-w", { version: "9.0", kernel: "kw" }, () => `composefs=?${"ab".repeat(64)} rw`);
}, 240_000);

afterAll(async () => {
  await reg?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe.runIf(available)("UKI deployments", () => {
  test("systemd-boot: the UKI is copied, an efi entry names it, status says Uki; upgrade stages a UKI sealed with a bare composefs= for V1", () => {
    const h = makeHostDir(mkdtempSync(join(dir, "sd-")));
    ok(install(h, A.ref));
    const live = join(h.esp, "loader/entries");
    const files = entryFiles(live);
    expect(files).toEqual(["bootc_testos-1.0-1.conf"]); // `efi` entries are not counted by systemd-boot: no +3
    const text = readFileSync(join(live, files[0]!), "utf8");
    expect(text).toBe(`title Test OS 1.0 1.0\nversion 1.0\nefi /EFI/Linux/bootc/bootc_composefs-${A.v1}.efi\nsort-key bootc-testos-0\n`);
    expect(new Uint8Array(readFileSync(join(h.esp, `EFI/Linux/bootc/bootc_composefs-${A.v1}.efi`)))).toEqual(A.uki);
    const origin = readFileSync(join(h.root, "state/deploy", A.v1, `${A.v1}.origin`), "utf8");
    expect(origin).toContain("boot_type = uki\n");
    expect(origin).toContain(`digest = ${sectionDigest(A.uki)}\n`);
    writeFileSync(h.cmdline, `${A.cmdline}\n`);
    let doc = JSON.parse(ok(cfs(["status", "--format=json", ...hostArgs(h)], env)).stdout);
    expect(doc.status.booted.composefs).toEqual({ verity: A.v1, bootType: "Uki", bootloader: "systemd", bootDigest: sectionDigest(A.uki), missingVerityAllowed: true });

    // Upgrade to B (a UKI whose bare composefs= names the V1 image): the V1 image is the deployment.
    ok(cfs(["switch", B.ref, ...hostArgs(h)], env));
    const staged = join(h.esp, "loader/entries.staged");
    expect(entryFiles(staged)).toEqual(["bootc_testos-1.0-0.conf", "bootc_testos-2.0-1.conf"]);
    expect(readFileSync(join(staged, "bootc_testos-2.0-1.conf"), "utf8")).toContain(`efi /EFI/Linux/bootc/bootc_composefs-${B.v1}.efi\n`);
    expect(readFileSync(join(staged, "bootc_testos-1.0-0.conf"), "utf8")).toContain("sort-key bootc-testos-1\n");
    doc = JSON.parse(ok(cfs(["status", "--format=json", ...hostArgs(h)], env)).stdout);
    expect(doc.status.staged.composefs.verity).toBe(B.v1);
    expect(doc.status.staged.composefs.bootType).toBe("Uki");
    expect(existsSync(join(h.root, "composefs/images", B.v1))).toBe(true);
  });

  test("a V1 repository and a UKI sealed for the V2 image: the V2 image is made and stored; its karg names an existing image", () => {
    const h = makeHostDir(mkdtempSync(join(dir, "v2-")));
    ok(install(h, C.ref));
    const text = readFileSync(join(h.esp, "loader/entries", entryFiles(join(h.esp, "loader/entries"))[0]!), "utf8");
    expect(text).toContain(`efi /EFI/Linux/bootc/bootc_composefs-${C.v2}.efi\n`);
    expect(JSON.parse(readFileSync(join(h.root, "composefs/meta.json"), "utf8")).erofs_formats).toEqual({ default: 1 });
    expect(existsSync(join(h.root, "composefs/images", C.v2))).toBe(true);
    expect(existsSync(join(h.root, "state/deploy", C.v2))).toBe(true);
    // gc keeps it: it is a live deployment's image.
    writeFileSync(h.cmdline, `${C.cmdline}\n`);
    ok(cfs(["gc", ...hostArgs(h)], env));
    expect(existsSync(join(h.root, "composefs/images", C.v2))).toBe(true);
    ok(cfs(["repo", "--repo", join(h.root, "composefs"), "fsck"], env));
  });

  test("a dual repository: bare composefs= tries V2 first, then V1", () => {
    const h = makeHostDir(mkdtempSync(join(dir, "dual-")));
    ok(install(h, B.ref, ["--erofs=dual"]));
    const f = readFileSync(join(h.esp, "loader/entries", entryFiles(join(h.esp, "loader/entries"))[0]!), "utf8");
    expect(f).toContain(`bootc_composefs-${B.v1}.efi`);
    const h2 = makeHostDir(mkdtempSync(join(dir, "dual2-")));
    ok(install(h2, C.ref, ["--erofs=dual"]));
    expect(readFileSync(join(h2.esp, "loader/entries", entryFiles(join(h2.esp, "loader/entries"))[0]!), "utf8")).toContain(`bootc_composefs-${C.v2}.efi`);
  });

  test("refused: a UKI sealed for another image, --karg with a UKI", () => {
    const h = makeHostDir(mkdtempSync(join(dir, "bad-")));
    let r = install(h, W.ref);
    expect(r.status).toBe(1);
    expect(r.stderr.trim()).toMatch(new RegExp(`^cfsboot: .*boot/EFI/Linux/test-os\\.efi: The UKI has the wrong composefs= parameter \\(is '${"ab".repeat(64)}', should be '[0-9a-f]{128}'\\)$`));
    r = install(h, A.ref, ["--karg", "quiet"]);
    expect(r.status).toBe(1);
    expect(r.stderr.trim()).toBe("cfsboot: --karg: Cannot use externally specified kernel arguments with UKI");
    expect(entryFiles(join(h.esp, "loader/entries"))).toEqual([]);
  });

  test("GRUB: a user.cfg menuentry chainloads the UKI; upgrade stages user.cfg.staged; rollback swaps the menu", () => {
    const h = makeHostDir(mkdtempSync(join(dir, "grub-")));
    ok(install(h, A.ref, ["--bootloader", "grub"]));
    const cfg = join(h.boot, "grub2/user.cfg");
    const menu = (id: string, label: string) => `menuentry "${label}: (${id})" {\ninsmod fat\ninsmod chain\nsearch --no-floppy --set=root --fs-uuid "\${EFI_PART_UUID}"\nchainloader /EFI/Linux/bootc/bootc_composefs-${id}.efi\n}\n`;
    const header = "\nif [ -f ${config_directory}/efiuuid.cfg ]; then\n        source ${config_directory}/efiuuid.cfg\nfi\n";
    expect(readFileSync(cfg, "utf8")).toBe(header + menu(A.v1, "Test OS 1.0 1.0"));
    expect(existsSync(join(h.boot, "loader/entries"))).toBe(false);
    writeFileSync(h.cmdline, `${A.cmdline}\n`);
    let doc = JSON.parse(ok(cfs(["status", "--format=json", ...hostArgs(h)], env)).stdout);
    expect(doc.status.booted.composefs.bootloader).toBe("grub");
    expect(doc.status.booted.composefs.bootType).toBe("Uki");
    ok(cfs(["switch", B.ref, ...hostArgs(h)], env));
    expect(readFileSync(`${cfg}.staged`, "utf8")).toBe(header + menu(B.v1, "Test OS 2.0 2.0") + menu(A.v1, "Test OS 1.0 1.0"));
    doc = JSON.parse(ok(cfs(["status", "--format=json", ...hostArgs(h)], env)).stdout);
    expect(doc.status.staged.composefs.verity).toBe(B.v1);
    // "Reboot": the staged menu becomes live; boot B.
    writeFileSync(cfg, readFileSync(`${cfg}.staged`));
    rmSync(`${cfg}.staged`);
    rmSync(join(h.root, "run"), { recursive: true, force: true });
    writeFileSync(h.cmdline, `${B.cmdline}\n`);
    doc = JSON.parse(ok(cfs(["status", "--format=json", ...hostArgs(h)], env)).stdout);
    expect(doc.status.booted.composefs.verity).toBe(B.v1);
    expect(doc.status.rollback.composefs.verity).toBe(A.v1);
    expect(ok(cfs(["rollback", ...hostArgs(h)], env)).stdout).toBe("Next boot: rollback deployment\n");
    expect(readFileSync(cfg, "utf8")).toBe(header + menu(A.v1, "Test OS 1.0 1.0") + menu(B.v1, "Test OS 2.0 2.0"));
    doc = JSON.parse(ok(cfs(["status", "--format=json", ...hostArgs(h)], env)).stdout);
    expect(doc.status.rollbackQueued).toBe(true);
    expect(ok(cfs(["rollback", ...hostArgs(h)], env)).stdout).toBe("notice: Reverting queued rollback state\nNext boot: current deployment\n");
    expect(readFileSync(cfg, "utf8")).toBe(header + menu(B.v1, "Test OS 2.0 2.0") + menu(A.v1, "Test OS 1.0 1.0"));
  });
});
