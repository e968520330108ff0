// The README's main job (run by ./demo after setup and build):
//   build the demo OS image (OCI, pushed to the local docker-registry),
//   install it to a raw disk image (`cfsboot install to-disk
//   --composefs-insecure` here, then `cfsboot seal` in a sealer VM: this host
//   has no fs-verity; lib/provision.ts), boot it under qemu,
//   `cfsboot upgrade` inside the guest to version 2, reboot, and print a short
//   report: deployments, what booted, timings.
//
//   bun vm/demo.ts
//
// Progress goes to stderr while it works (a status line on a terminal, a
// line every 30 s otherwise); the report goes to stdout.

import { readFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import {
  type CfsReport as CfsReportT, type HostStatus, type ReportCommand, type Timing, type VmRun,
  ADDED_IN_V2, CfsReport, DEMO_NAME, GUEST_NET_UP, TRIXIE, buildBlsImage, cfsCommands, consoleTail, demoBase, describeRun, ensureRootfs, expectReport,
  formatTimings, guestNetArgs, guestRef, imageId, injectedReportCredentials, newRunDir, provisionSealed, pushDemo, runVm, scenarioDisk,
  stateWriteCommand, startDemoRegistry, withLayoutLock,
} from "./harness.ts";

const tty = process.stderr.isTTY;
const t00 = performance.now();
const timings: Timing[] = [];

function clock(): string {
  const s = Math.round((performance.now() - t00) / 1000);
  return `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
}

function say(msg: string): void {
  process.stderr.write(`${tty ? "\r\x1b[K" : ""}[demo ${clock()}] ${msg}\n`);
}

/** Run a step, showing it as in progress (with a live detail line for boots). */
async function step<T>(name: string, fn: () => Promise<T>, live?: () => string): Promise<T> {
  say(`${name} …`);
  const t0 = performance.now();
  let last = 0;
  const timer = setInterval(() => {
    const s = Math.round((performance.now() - t0) / 1000);
    const detail = live?.() ?? "";
    if (tty) process.stderr.write(`\r\x1b[K  ${name}: ${s} s${detail ? ` — ${detail}` : ""}`);
    else if (s - last >= 30) {
      last = s;
      process.stderr.write(`  ${name}: ${s} s${detail ? ` — ${detail}` : ""}\n`);
    }
  }, 1000);
  try {
    const r = await fn();
    const seconds = Math.round((performance.now() - t0) / 100) / 10;
    timings.push({ step: name, seconds });
    say(`${name}: done in ${seconds} s`);
    return r;
  } finally {
    clearInterval(timer);
  }
}

/** The last meaningful console line of a running boot (from its timestamped log). */
function bootProgress(runDir: string, name: string): () => string {
  return () => {
    const p = join(runDir, `${name}.timed.log`);
    if (!existsSync(p)) return "starting qemu";
    const lines = readFileSync(p, "utf8").trimEnd().split("\n").slice(-40).reverse();
    for (const l of lines) {
      const m = /\]\s+(?:\[\s*[\d.]+\]\s+)?(?:\[\s*OK\s*\]\s+)?(Reached target [^-.]+|Started [^-.]+|Starting [^-.]+|Finished [^-.]+|cfsvm: .+|Linux version \S+|EFI stub.*|reboot: .*)/.exec(l);
      if (m?.[1]) return m[1].trim().slice(0, 70);
    }
    return "firmware";
  };
}

function deploymentLines(st: HostStatus): string[] {
  const out: string[] = [];
  const row = (slot: string, e: HostStatus["status"]["booted"]) => {
    if (!e) return;
    out.push(`  ${slot.padEnd(9)} version ${e.image?.version ?? "?"}  ${e.composefs?.verity.slice(0, 16)}…  ${e.composefs?.bootType ?? ""}  ${e.composefs?.missingVerityAllowed ? "insecure" : "sealed"}  ${e.image?.image.image ?? ""}`);
  };
  row("staged", st.status.staged);
  row("booted", st.status.booted);
  row("rollback", st.status.rollback);
  return out;
}

async function main(): Promise<number> {
  say(`cfsboot demo: build an OS image, install it to a disk image, boot, upgrade, reboot (install to-disk on this host, cfsboot seal in a VM)`);
  const rootfs = await step("guest rootfs (Debian 13, cached)", () => ensureRootfs(TRIXIE));
  const imgs = await withLayoutLock(async () => {
    const base = await step("OS image: base layers (rootfs, cfsboot, dracut initramfs)", () => demoBase({ rootfs }));
    const v1 = await step("OS image: version 1", () => buildBlsImage(base, "trixie-bls-1", { version: "1" }));
    const v2 = await step("OS image: version 2 (one small layer)", () => buildBlsImage(base, "trixie-bls-2", { version: "2", files: [ADDED_IN_V2] }));
    return { v1, v2 };
  });
  const reg = await step("local docker-registry", () => startDemoRegistry());
  const dir = newRunDir("demo");
  try {
    await step("push version 1 as cfsboot/demo:latest", () => pushDemo(imgs.v1, reg, DEMO_NAME, "latest"));
    const ids = { v1: imageId(imgs.v1), v2: imageId(imgs.v2) };
    const p = await step("install to-disk (this host) + cfsboot seal (sealer VM)", () =>
      provisionSealed({ installer: rootfs, reg, runDir: dir, targets: [{ kind: "bls", imgref: guestRef(DEMO_NAME, "latest"), manifestDigest: imgs.v1.manifestDigest }] }),
      bootProgress(join(dir, "provision"), "sealer"));
    const disk = scenarioDisk(p.disks.bls!, join(dir, "disk.img"));
    await step("push version 2 as cfsboot/demo:latest", () => pushDemo(imgs.v2, reg, DEMO_NAME, "latest"));
    const boot = async (name: string, commands: ReportCommand[], action: "poweroff" | "poweroff-fast"): Promise<[VmRun, CfsReportT]> => {
      const run = await step(`boot ${name}`, () =>
        runVm({ name, runDir: dir, disk, extraArgs: guestNetArgs(reg), timeoutMs: 900_000, credentials: injectedReportCredentials({ commands: [...cfsCommands(), ...commands], action }) }),
        bootProgress(dir, name));
      say(`  ${describeRun(run)}`);
      try {
        return [run, new CfsReport(expectReport(run))];
      } catch (e) {
        say(`boot ${name} gave no report: ${(e as Error).message.split("\n")[0]}\n${consoleTail(run, 30)}`);
        throw e;
      }
    };
    const [run1, r1] = await boot("1 (version 1; cfsboot upgrade in the guest)", [
      stateWriteCommand("boot1"),
      { name: "local_etc", cmd: "sed -i s/setting=default/setting=local/ /etc/cfsboot-demo/site.conf" },
      { name: "net", cmd: GUEST_NET_UP },
      { name: "upgrade", cmd: "cfsboot upgrade 2>&1" },
      { name: "status_staged", cmd: "cfsboot status --json" },
    ], "poweroff");
    const [run2, r2] = await boot("2 (after the upgrade)", [], "poweroff-fast");

    const out: string[] = [];
    const ok = (c: boolean) => (c ? "ok" : "FAILED");
    const booted1 = r1.bootedId;
    const booted2 = r2.bootedId;
    const upgrade = r1.r.hook("upgrade");
    const checks: Array<[string, boolean]> = [
      ["boot 1 booted version 1 (image id computed on the host)", booted1 === ids.v1 && r1.version === "1"],
      ["boot 1: / is composefs:<id>, overlay", r1.r.root.fstype === "overlay"],
      ["cfsboot upgrade staged version 2", upgrade.rc === 0 && /Queued for next boot/.test(upgrade.text)],
      ["boot 2 booted version 2", booted2 === ids.v2 && r2.version === "2"],
      ["local /etc change kept across the upgrade", (r2.files("etc")["site.conf"] ?? "").includes("setting=local")],
      ["new /etc default of version 2 present", (r2.files("etc")["added-in-2.conf"] ?? "").includes("feature=on")],
      ["/var carried over", (r2.files("var")["written-boot1"] ?? "") === "var written in boot1\n"],
    ];
    out.push("cfsboot demo report", "");
    out.push(`image: ${DEMO_NAME} version 1 ${imgs.v1.manifestDigest.slice(0, 19)}…, version 2 ${imgs.v2.manifestDigest.slice(0, 19)}… (${(imgs.v1.size / 1e6).toFixed(0)} MB compressed, ${imgs.v1.layers.length} layers; v2 adds ${(imgs.v2.layers.at(-1)!.size / 1e3).toFixed(0)} kB)`);
    out.push(`disk:  ${disk.path} (install to-disk ${p.disks.bls!.installSeconds} s, seal ${p.disks.bls!.sealSeconds.toFixed(0)} s in the sealer VM${p.disks.bls!.cached ? "; cached from an earlier run" : ""})`);
    out.push("", "boot 1:", `  kernel ${r1.r.kernel}, cmdline …${(/composefs[^ ]*/.exec(r1.r.cmdline)?.[0] ?? "").slice(0, 60)}…`, `  / = ${r1.r.root.source.slice(0, 40)}… (${r1.r.root.fstype})`);
    out.push(...deploymentLines(r1.status("status_staged")));
    out.push("", "boot 2:", `  / = ${r2.r.root.source.slice(0, 40)}… (${r2.r.root.fstype})`);
    out.push(...deploymentLines(r2.status()));
    out.push("", "checks:");
    for (const [what, c] of checks) out.push(`  ${ok(c).padEnd(6)} ${what}`);
    out.push("", formatTimings("demo", [...timings, { step: "total", seconds: Math.round((performance.now() - t00) / 100) / 10 }], [run1, run2]));
    out.push("", `logs: ${dir}`);
    process.stdout.write(`${out.join("\n")}\n`);
    return checks.every(([, c]) => c) ? 0 : 1;
  } finally {
    await reg.stop();
  }
}

try {
  process.exit(await main());
} catch (e) {
  say(`demo failed: ${(e as Error).message}`);
  process.exit(1);
}

