// UKIs built by `cfsboot container ukify --uki-builder=objcopy` boot under
// OVMF: each UKI is the ESP's EFI/BOOT/BOOTX64.EFI (mtools, no mount), qemu
// (TCG) starts it, and the serial console must show the kernel running with
// the UKI's own .cmdline and having found the UKI's .initrd. Both stubs: the
// host's systemd 252 (section alignment 512, image base 0) and the Debian 13
// guest's 257 (image base 0x14df90000). The kernel is the guest's 6.12; the
// initrd a valid cpio without /init, and `panic=-1` ends the boot quickly.

import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { spawn, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

import { canRun, hasTool, isRoot } from "../helpers/env.ts";
import { bootImageSpec, cfsbootOk, extractSpec } from "../helpers/boot-image.ts";
import { ensureExe } from "../helpers/pull-env.ts";
import { TRIXIE, ensureRootfs, type Rootfs } from "../../vm/lib/rootfs.ts";

const HOST_STUB = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
const OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd";
const TOOLS = ["qemu-system-x86_64", "mkfs.vfat", "mcopy", "mmd", "cpio", "objcopy", "debootstrap"];
const ok = canRun(isRoot && TOOLS.every(hasTool) && existsSync(OVMF_CODE) && existsSync(HOST_STUB), `needs root, OVMF, ${HOST_STUB} and ${TOOLS.join(", ")}`);

let work: string;
let rootfs: string;
let guest: Rootfs;

beforeAll(async () => {
  if (!ok) return;
  ensureExe();
  guest = await ensureRootfs(TRIXIE);
  work = mkdtempSync("/var/tmp/cfs-uki-boot-test-");
  // A valid newc initrd with one file and no /init.
  const cpio = spawnSync("sh", ["-c", "cd \"$1\" && mkdir -p d && echo cfs > d/marker && cd d && echo marker | cpio -o -H newc --quiet", "sh", work], { maxBuffer: 1 << 20 });
  expect(cpio.status).toBe(0);
  rootfs = join(work, "rootfs");
  extractSpec(bootImageSpec({ kernel: new Uint8Array(readFileSync(guest.vmlinuz)), initramfs: new Uint8Array(cpio.stdout) }), rootfs);
}, 1_800_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

/** Boot `uki` as the removable-media loader; resolve with the console once `until` matched (or the timeout hit). */
function bootUki(uki: string, name: string, until: RegExp, timeoutMs = 240_000): Promise<string> {
  const esp = join(work, `${name}.esp`);
  rmSync(esp, { force: true });
  const env = { ...process.env, MTOOLS_SKIP_CHECK: "1" };
  const steps = [
    ["mkfs.vfat", "-C", "-F", "32", "-n", "ESP", esp, String(64 * 1024)],
    ["mmd", "-i", esp, "::/EFI", "::/EFI/BOOT"],
    ["mcopy", "-i", esp, uki, "::/EFI/BOOT/BOOTX64.EFI"],
  ];
  for (const s of steps) {
    const r = spawnSync(s[0]!, s.slice(1), { env, encoding: "utf8" });
    expect(r.status, `${s.join(" ")}: ${r.stderr}`).toBe(0);
  }
  const vars = join(work, `${name}.vars.fd`);
  copyFileSync(OVMF_VARS, vars);
  const consoleLog = join(work, `${name}.console.log`);
  writeFileSync(consoleLog, "");
  return new Promise((resolve) => {
    // The console goes to a file (qemu writes it as the guest does; a pipe to this busy process is not needed).
    const q = spawn("qemu-system-x86_64", [
      "-machine", "q35", "-accel", "tcg", "-cpu", "max", "-m", "1024", "-display", "none", "-no-reboot", "-nic", "none", "-nodefaults",
      "-serial", `file:${consoleLog}`,
      "-drive", `if=pflash,format=raw,readonly=on,file=${OVMF_CODE}`, "-drive", `if=pflash,format=raw,file=${vars}`,
      "-drive", `if=virtio,format=raw,file=${esp}`,
    ], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    let finished = false;
    const read = () => readFileSync(consoleLog, "latin1");
    const done = () => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      clearInterval(poll);
      q.kill("SIGKILL");
      resolve(read() + stderr);
    };
    const timer = setTimeout(done, timeoutMs);
    const poll = setInterval(() => {
      if (until.test(read())) done();
    }, 250);
    q.stderr.on("data", (d: Buffer) => (stderr += d.toString("latin1")));
    q.on("close", done);
  });
}

describe.skipIf(!ok)("objcopy-built sealed UKIs boot under OVMF", () => {
  // One boot per stub costs 30-60 s under TCG on this host; the guest's 257
  // stub (same section layout as ukify, ukify-guest.test.ts) boots in the VM
  // scenarios, so only the host's 252 stub is booted here.
  for (const which of (process.env.CFSBOOT_UKI_BOOT_ALL ? ["host 252", "guest 257"] : ["host 252"]) as ("host 252" | "guest 257")[]) {
    test(`systemd stub ${which}: the kernel runs with the UKI's .cmdline and its .initrd`, async () => {
      const stub = which === "host 252" ? HOST_STUB : guest.stub;
      const uki = join(work, `${which.split(" ")[0]}.efi`);
      await cfsbootOk(["container", "ukify", "--uki-builder=objcopy", "--stub", stub, "--rootfs", rootfs, "--karg", "panic=-1", "--", "--output", uki]);
      const v1 = (await cfsbootOk(["container", "compute-composefs-digest", rootfs])).trim();
      const log = await bootUki(uki, which.split(" ")[0]!, /Kernel panic[^\n]*\n|reboot: Restarting/);
      const line = /Kernel command line: (.*?)\r?\n/.exec(log);
      expect(line, log.slice(-3000)).not.toBeNull();
      expect(line![1]).toContain(`composefs.digest=v1-sha512-12:${v1} composefs=`);
      expect(line![1]).toMatch(/console=ttyS0 rw composefs\.digest=\S+ composefs=\S+ panic=-1$/);
      expect(log).toMatch(/Freeing initrd memory/);
      expect(log).not.toMatch(/Initramfs unpacking failed/);
      expect(log).toMatch(/Unable to mount root fs|No working init found/);
    }, 300_000);
  }
});
