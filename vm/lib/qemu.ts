// One bounded qemu boot under TCG (vm.md §5, vm-bookworm.md §6).
//
// `-machine q35 -accel tcg -cpu max` (Bun needs x86-64-v2; /dev/kvm is not
// usable here), OVMF with a per-VM copy of the VARS file (EFI variables such
// as LoaderEntryOneShot live there: keep it for the life of one VM), the
// serial console (ttyS0) read line by line and timestamped on the host, a
// second serial port (ttyS1) carrying the machine-readable report,
// `-no-reboot` (a guest reboot ends qemu, so one qemu run is one boot), a hard
// timeout, optional 9p share, SMBIOS type 11 credentials and direct kernel boot.

import { spawn } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type GuestReport, ReportError, parseReport } from "./report.ts";
import { appendLog, cacheDir, copySparse, note } from "./util.ts";

export const OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd";
export const OVMF_VARS_TEMPLATE = "/usr/share/OVMF/OVMF_VARS_4M.fd";

export interface QemuOptions {
  /** Short name for logs (`<runDir>/<name>.console.log`, `.report.log`, `.timed.log`). */
  name: string;
  runDir: string;
  /** The boot disk (virtio-blk at a pinned PCI slot with bootindex=0, vm-bookworm.md pitfall 8). */
  disk?: { path: string; format?: "raw" | "qcow2" };
  /** uefi (OVMF; default) or bios (SeaBIOS: only with `direct`). */
  firmware?: "uefi" | "bios";
  /**
   * Per-VM OVMF VARS file; copied from the template when missing. Default
   * `<runDir>/vars.fd`: one VM per run directory, so later boots see the EFI
   * variables (LoaderEntryOneShot, boot options) the earlier ones left.
   */
  vars?: string;
  /** Direct kernel boot (-kernel/-initrd/-append): no sd-boot, no boot counting. */
  direct?: { kernel: string; initrd?: string; append: string };
  smp?: number;
  memoryMiB?: number;
  /** Hard limit for the whole run (default 600 s). */
  timeoutMs?: number;
  /** Host directory shared over 9p (guest: `mount -t 9p -o trans=virtio,version=9p2000.L TAG DIR`). */
  share?: { path: string; tag?: string; readonly?: boolean };
  /** SMBIOS type 11 strings (`io.systemd.credential:NAME=VALUE`, `io.systemd.credential.binary:NAME=BASE64`). */
  credentials?: string[];
  extraArgs?: string[];
  /** Console patterns that end the run early as a failure (default FATAL_PATTERNS; [] disables). */
  failFast?: RegExp[];
  /** Kill qemu when it has not exited this long after the report was written (default 90 s). */
  afterReportMs?: number;
  /**
   * Boot again, once, from the disk and EFI variables as they were before,
   * when the guest kernel crashed before it ran /init (default true). Such a
   * crash happens before any code of ours runs: it is the emulator (TCG's
   * cross-CPU code patching races with the kernel's text_poke, seen as
   * `Oops: int3` in `sched_clock_cpu` about once in 150 boots).
   */
  retryEarlyKernelFault?: boolean;
}

/** Console lines after which the boot cannot succeed: fail in seconds instead of at the timeout. */
export const FATAL_PATTERNS: RegExp[] = [
  /Kernel panic - not syncing/,
  /You are in emergency mode|Entering emergency mode|Starting .*emergency\.service/i,
  /Error loading \\.*: /, // sd-boot could not load a kernel/UKI and waits in its menu
  /^Shell> /, // OVMF fell into the EFI shell
  /Failed to start .*cfsvm-report/,
];

export interface TimedLine {
  /** Host seconds since qemu was started. */
  t: number;
  line: string;
}

/** Host seconds since qemu start at which each phase was first seen on the console. */
export interface Phases {
  firmware?: number; // first console output (OVMF/SeaBIOS)
  loader?: number; // EFI stub / kernel decompression message
  kernel?: number; // "Linux version"
  initrd?: number; // "Run /init as init process"
  switchRoot?: number; // "Switching root."
  multiUser?: number; // "Reached target … Multi-User System"
  reportStart?: number; // the test unit started
  bootFinished?: number; // is-system-running --wait returned
  reportDone?: number; // report written
  shutdown?: number; // "reboot: Power down" / "reboot: Restarting system"
  exit: number; // qemu exited (wall time of the run)
}

export interface VmRun {
  name: string;
  argv: string[];
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  /** Why the harness ended the run early, if it did. */
  killedFor?: string;
  /** How the guest ended: poweroff, reboot, or none seen. */
  ended: "poweroff" | "reboot" | "none";
  wallSeconds: number;
  /** qemu CPU seconds (user+sys), when readable. */
  cpuSeconds?: number;
  load: { start: number; end: number };
  consoleLog: string;
  reportLog: string;
  lines: TimedLine[];
  /** The report channel's text (ttyS1). */
  channel: string;
  phases: Phases;
  vars?: string;
  /** Set when this is the second attempt: the early kernel fault the first one ended in. */
  retriedAfter?: string;
}

const PHASES: Array<[keyof Phases, RegExp]> = [
  ["loader", /EFI stub: |Decompressing Linux|Probing EDD/],
  ["kernel", /Linux version \d/],
  ["initrd", /Run \/init as init process/],
  ["switchRoot", /Switching root\.|Starting initrd-switch-root\.service/],
  ["multiUser", /Reached target .*(Multi-User System|multi-user\.target)/],
  ["reportStart", /cfsvm: report unit started/],
  ["bootFinished", /cfsvm: boot finished/],
  ["reportDone", /cfsvm: report written/],
  ["shutdown", /reboot: (Power down|Restarting system|machine restart)/],
];

// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>cD-HMNOZ78]/g;

export function parsePhases(lines: TimedLine[], exit: number): Phases {
  const p: Phases = { exit };
  if (lines.length) p.firmware = lines[0]?.t;
  for (const { t, line } of lines) {
    for (const [k, re] of PHASES) if (p[k] === undefined && re.test(line)) (p as unknown as Record<string, number>)[k] = t;
  }
  return p;
}

function loadavg(): number {
  try {
    return Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]);
  } catch {
    return NaN;
  }
}

function cpuOf(pid: number): number | undefined {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8");
    const rest = f.slice(f.lastIndexOf(")") + 2).split(" ");
    const ticks = Number(rest[11]) + Number(rest[12]);
    return ticks / 100;
  } catch {
    return undefined;
  }
}

function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

export function qemuArgs(o: QemuOptions, vars: string | undefined, reportLog: string): string[] {
  const a = [
    "qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-cpu", "max",
    "-smp", String(o.smp ?? 2), "-m", String(o.memoryMiB ?? 2048),
    "-nodefaults", "-display", "none", "-monitor", "none", "-no-reboot",
    "-serial", "stdio", "-serial", `file:${reportLog}`,
  ];
  if ((o.firmware ?? "uefi") === "uefi") {
    a.push("-drive", `if=pflash,format=raw,unit=0,readonly=on,file=${OVMF_CODE}`);
    a.push("-drive", `if=pflash,format=raw,unit=1,file=${vars}`);
  }
  if (o.disk) {
    a.push("-drive", `if=none,id=d0,file=${o.disk.path},format=${o.disk.format ?? "raw"},cache=unsafe,discard=unmap`);
    // -kernel claims bootindex 0 itself (linuxboot option ROM)
    a.push("-device", `virtio-blk-pci,drive=d0,addr=0x5${o.direct ? "" : ",bootindex=0"}`);
  }
  if (o.direct) {
    a.push("-kernel", o.direct.kernel, "-append", o.direct.append);
    if (o.direct.initrd) a.push("-initrd", o.direct.initrd);
  }
  if (o.share) {
    a.push("-fsdev", `local,id=fs0,path=${o.share.path},security_model=none${o.share.readonly === false ? "" : ",readonly=on"}`);
    a.push("-device", `virtio-9p-pci,fsdev=fs0,mount_tag=${o.share.tag ?? "host0"},addr=0x6`);
  }
  for (const c of o.credentials ?? []) {
    if (c.includes(",")) throw new Error("SMBIOS credential values cannot contain a comma (use io.systemd.credential.binary: with base64)");
    a.push("-smbios", `type=11,value=${c}`);
  }
  a.push(...(o.extraArgs ?? []));
  return a;
}

/**
 * The kernel's own crash report when it came before /init ran (no userspace,
 * so nothing of the guest's state changed but what the firmware and boot
 * loader wrote), else undefined.
 */
export function earlyKernelFault(r: VmRun): string | undefined {
  if (r.phases.initrd !== undefined) return undefined;
  const hit = r.lines.find((l) => /Oops: |Kernel panic - not syncing|BUG: |general protection fault/.test(l.line));
  return hit?.line.trim();
}

/**
 * Boot once. Resolves when qemu has exited (or was killed at the timeout / on
 * a fatal console line). An emulator fault before /init (earlyKernelFault) is
 * retried once from a copy of the disk and VARS taken before the boot: the
 * boot loader may have counted a try down, and the retry must see what the
 * first attempt saw.
 */
export async function runVm(o: QemuOptions): Promise<VmRun> {
  mkdirSync(o.runDir, { recursive: true });
  if (o.retryEarlyKernelFault === false) return bootOnce(o);
  const vars = varsFile(o);
  const saved: Array<[string, string]> = [];
  for (const f of [o.disk?.path, vars]) {
    if (!f || !existsSync(f)) continue;
    const copy = join(o.runDir, `.${o.name}.before.${saved.length}`);
    copySparse(f, copy);
    saved.push([f, copy]);
  }
  try {
    const first = await bootOnce(o);
    const fault = earlyKernelFault(first);
    if (fault === undefined) return first;
    for (const ext of ["console.log", "timed.log", "report.log", "timings.json"]) {
      const f = join(o.runDir, `${o.name}.${ext}`);
      if (existsSync(f)) renameSync(f, join(o.runDir, `${o.name}.fault.${ext}`));
    }
    for (const [f, copy] of saved) copySparse(copy, f);
    note(`${o.name}: the guest kernel crashed before /init (${fault.slice(0, 120)}); booting again from the state before it`);
    const second = await bootOnce(o);
    second.retriedAfter = fault;
    return second;
  } finally {
    for (const [, copy] of saved) rmSync(copy, { force: true });
  }
}

/** The VM's OVMF VARS file (created from the template on first use), or undefined under SeaBIOS. */
function varsFile(o: QemuOptions): string | undefined {
  if ((o.firmware ?? "uefi") !== "uefi") return undefined;
  const vars = o.vars ?? join(o.runDir, "vars.fd");
  if (!existsSync(vars)) copyFileSync(OVMF_VARS_TEMPLATE, vars);
  return vars;
}

async function bootOnce(o: QemuOptions): Promise<VmRun> {
  const consoleLog = join(o.runDir, `${o.name}.console.log`);
  const timedLog = join(o.runDir, `${o.name}.timed.log`);
  const reportLog = join(o.runDir, `${o.name}.report.log`);
  const vars = varsFile(o);
  writeFileSync(reportLog, "");
  const timeoutMs = o.timeoutMs ?? 600_000;
  const qargs = qemuArgs(o, vars, reportLog);
  // `timeout` bounds qemu even if this process dies.
  const argv = ["timeout", "-k", "10", String(Math.ceil(timeoutMs / 1000) + 30), ...qargs];
  const failFast = o.failFast ?? FATAL_PATTERNS;
  const load0 = loadavg();
  const t0 = performance.now();
  const now = () => Math.round(performance.now() - t0) / 1000;
  const child = spawn(argv[0] as string, argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
  const lines: TimedLine[] = [];
  let partial = "";
  let stderr = "";
  let killedFor: string | undefined;
  let timedOut = false;
  let cpuSeconds: number | undefined;
  let ended: VmRun["ended"] = "none";
  let reportSeenAt: number | undefined;
  const kill = (why: string) => {
    if (killedFor === undefined) killedFor = why;
    child.kill("SIGTERM");
    setTimeout(() => child.kill("SIGKILL"), 5000).unref();
  };
  const onLine = (line: string) => {
    const clean = line.replace(ANSI, "").replace(/\r/g, "");
    const tl = { t: now(), line: clean };
    lines.push(tl);
    writeFileSync(timedLog, `[${tl.t.toFixed(2).padStart(7)}] ${clean}\n`, { flag: "a" });
    if (/reboot: Power down/.test(clean)) ended = "poweroff";
    else if (/reboot: (Restarting system|machine restart)/.test(clean)) ended = "reboot";
    if (reportSeenAt === undefined && /cfsvm: report written/.test(clean)) reportSeenAt = tl.t;
    if (killedFor === undefined) {
      for (const re of failFast) {
        if (re.test(clean)) {
          const why = `console: ${clean.trim().slice(0, 200)}`;
          // a little more output helps the diagnosis; then stop
          setTimeout(() => kill(why), 3000).unref();
          killedFor = why;
          break;
        }
      }
    }
  };
  writeFileSync(consoleLog, "");
  writeFileSync(timedLog, "");
  child.stdout.on("data", (b: Buffer) => {
    const s = b.toString("latin1");
    writeFileSync(consoleLog, b, { flag: "a" });
    partial += s;
    let nl: number;
    while ((nl = partial.indexOf("\n")) >= 0) {
      onLine(partial.slice(0, nl));
      partial = partial.slice(nl + 1);
    }
  });
  child.stderr.on("data", (b: Buffer) => {
    stderr += b.toString("utf8");
  });
  const timer = setTimeout(() => {
    timedOut = true;
    kill(`timeout after ${timeoutMs / 1000} s`);
  }, timeoutMs);
  const poll = setInterval(() => {
    const q = childPids(child.pid ?? 0)[0];
    if (q) cpuSeconds = cpuOf(q) ?? cpuSeconds;
    const grace = o.afterReportMs ?? 90_000;
    if (reportSeenAt !== undefined && now() - reportSeenAt > grace / 1000) kill(`no power-off ${grace / 1000} s after the report`);
  }, 1000);
  const [code, sig] = await new Promise<[number | null, string | null]>((res) => child.on("close", (c, s) => res([c, s])));
  clearTimeout(timer);
  clearInterval(poll);
  if (partial) onLine(partial);
  const wall = now();
  if (stderr.trim()) writeFileSync(join(o.runDir, `${o.name}.qemu.stderr`), stderr);
  const channel = readFileSync(reportLog, "latin1");
  const run: VmRun = {
    name: o.name, argv, exitCode: code, signal: sig, timedOut, ended, wallSeconds: wall, load: { start: load0, end: loadavg() },
    consoleLog, reportLog, lines, channel, phases: parsePhases(lines, wall), vars,
  };
  if (cpuSeconds !== undefined) run.cpuSeconds = cpuSeconds;
  if (killedFor !== undefined) run.killedFor = killedFor;
  if (code !== 0 && killedFor === undefined && stderr.trim()) run.killedFor = `qemu: ${stderr.trim().split("\n").slice(-3).join(" | ")}`;
  note(`${o.name}: ${describeRun(run)}`);
  const record = { at: new Date().toISOString(), name: o.name, runDir: o.runDir, firmware: o.firmware ?? "uefi", direct: !!o.direct, ended, killedFor: run.killedFor, wall, cpu: cpuSeconds, load: run.load, phases: run.phases };
  writeFileSync(join(o.runDir, `${o.name}.timings.json`), JSON.stringify(record, null, 2) + "\n");
  appendLog(join(cacheDir(), "timings.jsonl"), JSON.stringify(record) + "\n");
  return run;
}

/** One line: outcome, wall/CPU time, phases, load. */
export function describeRun(r: VmRun): string {
  const p = r.phases;
  const f = (x?: number) => (x === undefined ? "-" : x.toFixed(1));
  return [
    `${r.ended}${r.killedFor ? ` (killed: ${r.killedFor})` : ""}${r.retriedAfter ? " (second attempt: the first crashed in the kernel before /init)" : ""}`,
    `wall ${r.wallSeconds.toFixed(1)} s${r.cpuSeconds !== undefined ? `, cpu ${r.cpuSeconds.toFixed(1)} s` : ""}`,
    `kernel ${f(p.kernel)} init ${f(p.initrd)} switch-root ${f(p.switchRoot)} multi-user ${f(p.multiUser)} report ${f(p.reportDone)} shutdown ${f(p.shutdown)}`,
    `load ${r.load.start.toFixed(1)}/${r.load.end.toFixed(1)}`,
  ].join("; ");
}

/** The last `n` console lines (for error messages). */
export function consoleTail(r: VmRun, n = 40): string {
  return r.lines.slice(-n).map((l) => `[${l.t.toFixed(1).padStart(6)}] ${l.line}`).join("\n");
}

/** The guest's report, or an Error with the outcome and the console tail. */
export function expectReport(r: VmRun): GuestReport {
  try {
    return parseReport(r.channel);
  } catch (e) {
    if (!(e instanceof ReportError)) throw e;
    throw new Error(
      `${r.name}: ${e.message}\noutcome: ${describeRun(r)}\nconsole log: ${r.consoleLog}\n--- console tail ---\n${consoleTail(r)}`,
    );
  }
}
