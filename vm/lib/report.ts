// The in-guest test unit and its report protocol.
//
// Guest side: a systemd unit (baked into the image, or injected with SMBIOS
// type 11 credentials, which also works with sealed UKIs) runs a bash script
// once the boot is complete (`systemctl is-system-running --wait`: after
// boot-complete.target and systemd-bless-boot). The script runs a list of
// named commands and writes one JSON object per command (exit status, time,
// base64 stdout and stderr) between markers on the report channel, the second
// serial port /dev/ttyS1, then powers the machine off (or reboots it when a
// command wrote `reboot` to /run/cfsvm/action; qemu runs with -no-reboot, so
// it exits either way).
//
//   CFSVM-REPORT-BEGIN v=1
//   {"name":"uname_r","rc":0,"ms":3,"out":"<base64>","err":"<base64>"}
//   ...
//   CFSVM-REPORT-END items=N
//
// base64 keeps the channel 7-bit clean and needs no JSON encoder in the guest
// (minbase has neither jq nor python). OVMF writes its own output to every
// serial port, so only the text between the markers is parsed.
//
// Host side: parseReport() turns the channel text into a GuestReport;
// decoding (efivars, findmnt JSON) happens here, not in the guest.

/** Vendor GUID of systemd-boot's loader variables. */
export const LOADER_GUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

const EFIVARS = [
  "LoaderEntrySelected", "LoaderEntryDefault", "LoaderBootCountPath", "LoaderInfo",
  "LoaderDevicePartUUID", "LoaderImageIdentifier", "StubInfo", "LoaderEntryOneShot",
];

export interface ReportCommand {
  /** Name in the report ([A-Za-z0-9_.-]+). */
  name: string;
  /** Shell command, run with `bash -c` as root; stdout/stderr and the exit status are reported. */
  cmd: string;
}

export interface ReportOptions {
  /** Scenario-specific commands, run after the standard ones (e.g. `cfsboot status --json`). */
  commands?: ReportCommand[];
  /** Files whose fs-verity state is reported (`fsverity measure`). */
  verityFiles?: string[];
  /** Include `journalctl -b` (all priorities) in the report; errors are always included. */
  fullJournal?: boolean;
  /** What to do after the report: poweroff (default) or reboot. */
  action?: "poweroff" | "reboot";
  /** Seconds to wait for the boot to finish before reporting anyway (default 600). */
  waitSeconds?: number;
}

function standardCommands(opts: ReportOptions): ReportCommand[] {
  const c: ReportCommand[] = [
    { name: "system_state", cmd: "cat /run/cfsvm/state" },
    { name: "uname_r", cmd: "uname -r" },
    { name: "uname_a", cmd: "uname -a" },
    { name: "os_release", cmd: "cat /etc/os-release" },
    { name: "cmdline", cmd: "cat /proc/cmdline" },
    { name: "uptime", cmd: "cat /proc/uptime" },
    { name: "findmnt_root", cmd: "findmnt -J --mountpoint /" },
    { name: "findmnt_etc", cmd: "findmnt -J --mountpoint /etc" },
    { name: "findmnt_var", cmd: "findmnt -J --mountpoint /var" },
    { name: "findmnt_sysroot", cmd: "findmnt -J --mountpoint /sysroot" },
    { name: "findmnt_efi", cmd: "findmnt -J --mountpoint /efi || findmnt -J --mountpoint /boot/efi || findmnt -J --mountpoint /boot" },
    { name: "mountinfo", cmd: "cat /proc/self/mountinfo" },
    { name: "failed_units", cmd: "systemctl --failed --plain --no-legend --no-pager" },
    { name: "bless_status", cmd: "/usr/lib/systemd/systemd-bless-boot status" },
    { name: "bless_unit", cmd: "systemctl show -p ActiveState -p Result -p ExecMainStatus systemd-bless-boot.service" },
    { name: "esp_entries", cmd: "ls -1 /efi/loader/entries" },
    { name: "systemd_version", cmd: "systemctl --version | head -1" },
    { name: "systemd_analyze", cmd: "systemd-analyze time" },
    { name: "journal_errors", cmd: "journalctl -b -p err --no-pager -o short-monotonic" },
  ];
  for (const v of EFIVARS) c.push({ name: `efivar.${v}`, cmd: `cat /sys/firmware/efi/efivars/${v}-${LOADER_GUID}` });
  if (opts.fullJournal) c.push({ name: "journal", cmd: "journalctl -b --no-pager -o short-monotonic" });
  return c;
}

export function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

const NAME_RE = /^[A-Za-z0-9_.-]+$/;

/** The guest script (bash). */
export function reportScript(opts: ReportOptions = {}): string {
  // scenario commands run before the fs-verity measurements (they may create the files)
  const cmds = [
    ...standardCommands(opts),
    ...(opts.commands ?? []).map((c) => ({ name: `hook.${c.name}`, cmd: c.cmd })),
    ...(opts.verityFiles ?? []).map((f, i) => ({ name: `verity.${i}`, cmd: `fsverity measure -- ${shq(f)}` })),
  ];
  const seen = new Set<string>();
  for (const c of cmds) {
    if (!NAME_RE.test(c.name)) throw new Error(`report command name ${JSON.stringify(c.name)}: use [A-Za-z0-9_.-]`);
    if (seen.has(c.name)) throw new Error(`report command ${c.name} given twice`);
    seen.add(c.name);
  }
  const items = cmds.map((c) => `item ${c.name} ${shq(c.cmd)}`).join("\n");
  const paths = (opts.verityFiles ?? []).map((f, i) => `verity.${i}=${f}`);
  // Cheap under TCG: one bash process; each item is a subshell (fork, no
  // exec) plus the command and one base64 (two when it wrote to stderr).
  return `#!/bin/bash
# cfsboot VM harness: collect the test report, write it to the report channel, power off.
set -u
exec </dev/null
R=/run/cfsvm
mkdir -p "$R"
kmsg() { echo "cfsvm: $*" > /dev/kmsg 2>/dev/null || true; }
out=/dev/ttyS1
if ! { [ -c "$out" ] && stty -F "$out" raw -echo 2>/dev/null; }; then out=/dev/console; fi
kmsg "report unit started"
timeout ${opts.waitSeconds ?? 600} systemctl is-system-running --wait > "$R/state" 2>&1
kmsg "boot finished: $(cat "$R/state")"
: > "$R/items"
n=0
item() { # item NAME COMMAND
  local t0=\${EPOCHREALTIME/./} rc e=""
  ( eval "$2" ) > "$R/o" 2> "$R/e" < /dev/null
  rc=$?
  [ -s "$R/e" ] && e=$(base64 -w0 < "$R/e")
  printf '{"name":"%s","rc":%d,"ms":%d,"out":"%s","err":"%s"}\\n' "$1" "$rc" $(( (\${EPOCHREALTIME/./} - t0) / 1000 )) \\
    "$(base64 -w0 < "$R/o")" "$e" >> "$R/items"
  n=$((n + 1))
}
${items}
item verity_paths ${shq(`printf '%s\\n' ${paths.map(shq).join(" ")}`)}
{ echo "CFSVM-REPORT-BEGIN v=1"; cat "$R/items"; echo "CFSVM-REPORT-END items=$n"; } > "$out"
sync
action=$(cat "$R/action" 2>/dev/null || echo ${opts.action ?? "poweroff"})
kmsg "report written ($n items), $action"
systemctl --no-block --job-mode=replace-irreversibly start "$action.target"
`;
}

export const REPORT_UNIT_NAME = "cfsvm-report.service";

/** The unit; `exec` is the command that runs the script. */
export function reportUnit(exec: string, extra = ""): string {
  return `[Unit]
Description=cfsboot VM test report
After=local-fs.target systemd-bless-boot.service boot-complete.target
ConditionKernelCommandLine=!cfsvm.report=0
${extra}
[Service]
# Type=simple: a oneshot would hold the boot job open and is-system-running --wait would never return
Type=simple
ExecStart=${exec}
StandardOutput=journal
StandardError=journal+console
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
`;
}

export const BAKED_SCRIPT_PATH = "/etc/cfsvm/report.sh";

/** Files to bake into a root tree: the script, the unit and its multi-user.target.wants link. */
export function bakedReportFiles(opts: ReportOptions = {}): Array<{ path: string; data?: string; mode?: number; symlink?: string }> {
  return [
    { path: BAKED_SCRIPT_PATH, data: reportScript(opts), mode: 0o755 },
    { path: `/etc/systemd/system/${REPORT_UNIT_NAME}`, data: reportUnit(`/bin/bash ${BAKED_SCRIPT_PATH}`), mode: 0o644 },
    { path: `/etc/systemd/system/multi-user.target.wants/${REPORT_UNIT_NAME}`, symlink: `/etc/systemd/system/${REPORT_UNIT_NAME}` },
  ];
}

/**
 * SMBIOS type 11 strings that inject the unit and the script into a guest
 * whose image does not contain them (systemd ≥ 256: systemd.extra-unit.* and
 * systemd.unit-dropin.* credentials; vm.md §9). Pass as `-smbios type=11,value=<s>`.
 */
export function injectedReportCredentials(opts: ReportOptions = {}): string[] {
  const b64 = (s: string) => Buffer.from(s).toString("base64");
  const unit = reportUnit(`/bin/bash -c 'exec /bin/bash "$CREDENTIALS_DIRECTORY/cfsvm.report"'`).replace(
    "[Service]\n",
    "[Service]\nImportCredential=cfsvm.report\n",
  );
  return [
    `io.systemd.credential.binary:cfsvm.report=${b64(reportScript(opts))}`,
    `io.systemd.credential.binary:systemd.extra-unit.${REPORT_UNIT_NAME}=${b64(unit)}`,
    `io.systemd.credential.binary:systemd.unit-dropin.multi-user.target=${b64(`[Unit]\nWants=${REPORT_UNIT_NAME}\n`)}`,
  ];
}

// ---------------------------------------------------------------------------
// Host side.

export interface ReportItem {
  name: string;
  rc: number;
  ms: number;
  out: Buffer;
  err: string;
  /** stdout as UTF-8, trailing whitespace removed. */
  text: string;
}

export interface FindmntEntry {
  target: string;
  source: string;
  fstype: string;
  options: string;
}

export class ReportError extends Error {}

export class GuestReport {
  readonly items = new Map<string, ReportItem>();

  constructor(items: ReportItem[]) {
    for (const i of items) this.items.set(i.name, i);
  }

  has(name: string): boolean {
    return this.items.has(name);
  }

  get(name: string): ReportItem {
    const i = this.items.get(name);
    if (!i) throw new ReportError(`report has no item ${name}`);
    return i;
  }

  /** stdout of a command that must have succeeded. */
  text(name: string): string {
    const i = this.get(name);
    if (i.rc !== 0) throw new ReportError(`report item ${name}: exit ${i.rc}: ${i.err.trim() || i.text}`);
    return i.text;
  }

  json(name: string): unknown {
    return JSON.parse(this.text(name));
  }

  /** A scenario command's result (`commands` option). */
  hook(name: string): ReportItem {
    return this.get(`hook.${name}`);
  }

  get kernel(): string {
    return this.text("uname_r");
  }

  get cmdline(): string {
    return this.text("cmdline");
  }

  get systemState(): string {
    return this.get("system_state").text;
  }

  get failedUnits(): string[] {
    return this.get("failed_units").text.split("\n").map((l) => l.trim().split(/\s+/)[0] ?? "").filter((u) => u !== "");
  }

  get osRelease(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const line of this.text("os_release").split("\n")) {
      const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
      if (m?.[1] && m[2] !== undefined) out[m[1]] = m[2].replace(/^"(.*)"$/, "$1");
    }
    return out;
  }

  /** The mount at exactly `target` ("/", "/etc", "/var", "/sysroot", "/efi"), or undefined when it is no mount point. */
  mount(target: "/" | "/etc" | "/var" | "/sysroot" | "/efi"): FindmntEntry | undefined {
    const name = target === "/" ? "findmnt_root" : `findmnt_${target.slice(1)}`;
    const i = this.get(name);
    if (i.rc !== 0 || i.text === "") return undefined;
    const fs = (JSON.parse(i.text) as { filesystems: FindmntEntry[] }).filesystems;
    // several mounts stacked on one target: the last one listed is the visible one
    return fs[fs.length - 1];
  }

  get root(): FindmntEntry {
    const r = this.mount("/");
    if (!r) throw new ReportError("report: findmnt gave no root mount");
    return r;
  }

  /** A loader EFI variable (UTF-16LE after 4 attribute bytes), or undefined if unset. */
  efivar(name: string): string | undefined {
    const i = this.items.get(`efivar.${name}`);
    if (!i || i.rc !== 0 || i.out.length < 4) return undefined;
    return i.out.subarray(4).toString("utf16le").replace(/\0+$/, "");
  }

  /** `systemd-bless-boot status`: good, bad, indeterminate, clean (or the error text). */
  get blessStatus(): string {
    const i = this.get("bless_status");
    return i.text || i.err.trim();
  }

  /** fs-verity digest (`sha256:…`) per requested file, or null when verity is not enabled. */
  get verity(): Record<string, string | null> {
    const paths = this.get("verity_paths").text.split("\n").filter((l) => l !== "");
    const out: Record<string, string | null> = {};
    for (const p of paths) {
      const eq = p.indexOf("=");
      const name = p.slice(0, eq);
      const file = p.slice(eq + 1);
      const i = this.get(name);
      out[file] = i.rc === 0 ? (i.text.split(/\s+/)[0] ?? null) : null;
    }
    return out;
  }

  /** Guest uptime (seconds since kernel start) when the report was collected. */
  get uptime(): number {
    return Number(this.text("uptime").split(/\s+/)[0]);
  }

  toJSON(): Record<string, unknown> {
    const o: Record<string, unknown> = {};
    for (const [k, v] of this.items) o[k] = { rc: v.rc, ms: v.ms, out: v.text, err: v.err };
    return o;
  }
}

/** Parse the report channel; throws ReportError when no complete report is in it. */
export function parseReport(channel: string): GuestReport {
  const lines = channel.replace(/\r/g, "").split("\n");
  let begin = -1;
  for (let i = lines.length - 1; i >= 0; i--) {
    if (lines[i]?.startsWith("CFSVM-REPORT-BEGIN")) {
      begin = i;
      break;
    }
  }
  if (begin < 0) throw new ReportError("no CFSVM-REPORT-BEGIN on the report channel (the test unit did not run or did not finish)");
  const items: ReportItem[] = [];
  for (let i = begin + 1; i < lines.length; i++) {
    const line = lines[i] ?? "";
    const end = /^CFSVM-REPORT-END items=(\d+)/.exec(line);
    if (end) {
      if (Number(end[1]) !== items.length) throw new ReportError(`report truncated: ${items.length} of ${end[1]} items`);
      return new GuestReport(items);
    }
    if (line.trim() === "") continue;
    let o: { name: string; rc: number; ms: number; out: string; err: string };
    try {
      o = JSON.parse(line);
    } catch {
      throw new ReportError(`report line ${i + 1} is not JSON: ${line.slice(0, 200)}`);
    }
    const out = Buffer.from(o.out, "base64");
    items.push({ name: o.name, rc: o.rc, ms: o.ms, out, err: Buffer.from(o.err, "base64").toString("utf8"), text: out.toString("utf8").trimEnd() });
  }
  throw new ReportError(`report has no CFSVM-REPORT-END (${items.length} items received)`);
}
