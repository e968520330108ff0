// The in-guest test unit and its report protocol.
//
// Guest side: a systemd unit (baked into the image, or injected with SMBIOS
// type 11 credentials, which also works with sealed UKIs) runs a bash script
// once the boot is complete (`systemctl is-system-running --wait`: after
// boot-complete.target and systemd-bless-boot). The script runs a list of
// named commands, keeping each one's stdout, stderr, exit status and time in
// files (<name>.out, <name>.err, <name>.rc = "<status> <ms>"), and writes them
// as one base64-encoded ustar archive between markers on the report channel,
// the second serial port /dev/ttyS1; then it powers the machine off (or
// reboots it when a command wrote `reboot` to /run/cfsvm/action; qemu runs
// with -no-reboot, so it exits either way; `poweroff-fast` skips the orderly
// shutdown).
//
//   CFSVM-REPORT-BEGIN v=2 items=N
//   <base64 of a ustar archive, 76 columns>
//   CFSVM-REPORT-END items=N sha256=<hex of the archive>
//
// Why not JSON written in the guest: minbase has neither jq nor python, and
// under TCG every fork costs 0.1–0.5 s; this way an item costs one subshell
// and its own command, and the whole report one tar and one base64. base64
// keeps the channel 7-bit clean; OVMF writes its own output to every serial
// port, so only the text between the markers is parsed.
//
// Host side: parseReport() turns the channel text into a GuestReport (whose
// toJSON() is the JSON report); decoding (efivars, findmnt JSON) happens
// here, not in the guest.

import { createHash } from "node:crypto";

/** Vendor GUID of systemd-boot's loader variables. */
export const LOADER_GUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

export interface ReportCommand {
  /** Name in the report ([A-Za-z0-9_.-]+). */
  name: string;
  /** Shell command, evaluated by bash in a subshell as root (`set +u`); stdout, stderr, exit status and time are reported. */
  cmd: string;
}

export interface ReportOptions {
  /** Scenario-specific commands, run after the standard ones (e.g. `cfsboot status --json`). */
  commands?: ReportCommand[];
  /** Files whose fs-verity state is reported (`fsverity measure`). */
  verityFiles?: string[];
  /** Include `journalctl -b` (all priorities) in the report; errors are always included. */
  fullJournal?: boolean;
  /**
   * What to do after the report: poweroff (default: a clean systemd shutdown,
   * which shutdown-time units such as a finalize service need), reboot, or
   * poweroff-fast: sync, emergency-remount everything read-only (the disk is
   * clean for the host's debugfs/mtools) and power off through sysrq, which
   * saves the 5–45 s of an orderly shutdown under TCG.
   */
  action?: "poweroff" | "reboot" | "poweroff-fast";
  /** Seconds to wait for the boot to finish before reporting anyway (default 600). */
  waitSeconds?: number;
}

interface ScriptItem {
  name: string;
  /** file: read a text file with bash builtins (no process); sh: eval in the script's shell; hook: eval in a subshell. */
  kind: "file" | "sh" | "hook";
  cmd: string;
}

/** Under TCG every process costs 0.1–1 s: the standard set needs about ten. */
function standardItems(opts: ReportOptions): ScriptItem[] {
  const f = (name: string, path: string): ScriptItem => ({ name, kind: "file", cmd: path });
  const sh = (name: string, cmd: string): ScriptItem => ({ name, kind: "sh", cmd });
  const c: ScriptItem[] = [
    f("uname_r", "/proc/sys/kernel/osrelease"),
    f("kernel_version", "/proc/sys/kernel/version"),
    f("os_release", "/etc/os-release"),
    f("cmdline", "/proc/cmdline"),
    f("uptime", "/proc/uptime"),
    f("mountinfo", "/proc/self/mountinfo"),
    sh("findmnt", "findmnt -J -l -o TARGET,SOURCE,FSTYPE,OPTIONS"),
    sh("failed_units", "systemctl --failed --plain --no-legend --no-pager"),
    sh("bless_status", "/usr/lib/systemd/systemd-bless-boot status"),
    sh("esp_entries", `for e in /efi/loader/entries/*; do echo "\${e##*/}"; done`),
    sh("systemd_version", "systemctl --version"),
    sh("systemd_analyze", "systemd-analyze time"),
    sh("journal_errors", "journalctl -b -p err --no-pager -o short-monotonic"),
    // all loader variables in one process; the host decodes them
    sh("efivars", `cp /sys/firmware/efi/efivars/*-${LOADER_GUID} "$D/efivars/"`),
  ];
  if (opts.fullJournal) c.push(sh("journal", "journalctl -b --no-pager -o short-monotonic"));
  return c;
}

export function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

const NAME_RE = /^[A-Za-z0-9_.-]+$/;

/** The guest script (bash). */
export function reportScript(opts: ReportOptions = {}): string {
  const verity = opts.verityFiles ?? [];
  // scenario commands run before the fs-verity measurement (they may create the files)
  const all: ScriptItem[] = [
    ...standardItems(opts),
    ...(opts.commands ?? []).map((c): ScriptItem => ({ name: `hook.${c.name}`, kind: "hook", cmd: c.cmd })),
    ...(verity.length ? [{ name: "verity", kind: "sh" as const, cmd: `fsverity measure -- ${verity.map(shq).join(" ")}` }] : []),
  ];
  const seen = new Set<string>();
  for (const c of all) {
    if (!NAME_RE.test(c.name)) throw new Error(`report command name ${JSON.stringify(c.name)}: use [A-Za-z0-9_.-]`);
    if (seen.has(c.name)) throw new Error(`report command ${c.name} given twice`);
    seen.add(c.name);
  }
  const fn = { file: "fileitem", sh: "item", hook: "hookitem" } as const;
  const items = all.map((c) => `${fn[c.kind]} ${c.name} ${shq(c.cmd)}`).join("\n");
  return `#!/bin/bash
# cfsboot VM harness: collect the test report, write it to the report channel, power off.
set -u
ro=rw
shopt -s nullglob
exec </dev/null
R=\${CFSVM_REPORT_DIR:-/run/cfsvm}
D=$R/items
rm -rf "$D"
mkdir -p "$D/efivars"
kmsg() { [ -n "\${CFSVM_REPORT_DRY:-}" ] || echo "cfsvm: $*" > /dev/kmsg 2>/dev/null || true; }
# CFSVM_REPORT_OUT=file (with CFSVM_REPORT_DIR and CFSVM_REPORT_DRY=1) runs the script
# outside a test VM, e.g. to check the protocol on the host: no waiting, no power-off.
out=\${CFSVM_REPORT_OUT:-/dev/ttyS1}
if [ -z "\${CFSVM_REPORT_OUT:-}" ] && ! { [ -c "$out" ] && stty -F "$out" raw -echo 2>/dev/null; }; then out=/dev/console; fi
kmsg "report unit started"
if [ -n "\${CFSVM_REPORT_DRY:-}" ]; then
  echo dry-run > "$D/system_state.out"; : > "$D/system_state.err"; true
else
  timeout ${opts.waitSeconds ?? 600} systemctl is-system-running --wait > "$D/system_state.out" 2> "$D/system_state.err"
fi
echo "$? 0" > "$D/system_state.rc"
kmsg "boot finished: $(< "$D/system_state.out")"
n=1
done_item() { # NAME RC T0
  echo "$2 $(( (\${EPOCHREALTIME/./} - $3) / 1000 ))" > "$D/$1.rc"
  n=$((n + 1))
}
fileitem() { # NAME PATH: bash builtins only
  local t0=\${EPOCHREALTIME/./} rc=0 L
  { mapfile -t L < "$2" && printf '%s\\n' "\${L[@]}"; } > "$D/$1.out" 2> "$D/$1.err" || rc=1
  done_item "$1" "$rc" "$t0"
}
item() { # NAME COMMAND: evaluated in this shell (trusted, standard commands)
  local t0=\${EPOCHREALTIME/./} rc=0
  { eval "$2"; } > "$D/$1.out" 2> "$D/$1.err" < /dev/null || rc=$?
  done_item "$1" "$rc" "$t0"
}
hookitem() { # NAME COMMAND: scenario commands, in a subshell
  local t0=\${EPOCHREALTIME/./} rc=0
  ( set +u; eval "$2" ) > "$D/$1.out" 2> "$D/$1.err" < /dev/null || rc=$?
  done_item "$1" "$rc" "$t0"
}
${verity.length ? `printf '%s\\n' ${verity.map(shq).join(" ")} > "$D/verity.files"
` : ""}${items}
tar --format=ustar -C "$D" -cf "$R/report.tar" .
sum=$(sha256sum < "$R/report.tar")
{ echo "CFSVM-REPORT-BEGIN v=2 items=$n"; base64 -w 76 < "$R/report.tar"; echo "CFSVM-REPORT-END items=$n sha256=\${sum%% *}"; } > "$out"
sync
[ -n "\${CFSVM_REPORT_DRY:-}" ] && exit 0
action=$(cat "$R/action" 2>/dev/null || echo ${opts.action ?? "poweroff"})
kmsg "report written ($n items), $action"
if [ "$action" = poweroff-fast ]; then
  echo u > /proc/sysrq-trigger   # emergency remount read-only (asynchronous): wait for /
  for ((i = 0; i < 100; i++)); do
    while read -r _ m _ o _; do [ "$m" = / ] && ro=\${o%%,*}; done < /proc/self/mounts
    [ "$ro" = ro ] && break
    sleep 0.1
  done
  kmsg "root is $ro, powering off"
  echo o > /proc/sysrq-trigger
  exit 0
fi
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
  /** Every file of the report archive (items and `efivars/<Name>-<guid>`). */
  readonly files: Map<string, Buffer>;

  constructor(items: ReportItem[], files = new Map<string, Buffer>()) {
    for (const i of items) this.items.set(i.name, i);
    this.files = files;
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

  /** All mounts (`findmnt -l`), in mount order. */
  get mounts(): FindmntEntry[] {
    return (this.json("findmnt") as { filesystems: FindmntEntry[] }).filesystems;
  }

  /**
   * The mount visible at exactly `target` ("/", "/etc", "/var", "/sysroot"),
   * or undefined when it is no mount point. "/efi" also finds an ESP mounted
   * at /boot/efi or /boot.
   */
  mount(target: string): FindmntEntry | undefined {
    const all = this.mounts;
    const at = (t: string) => all.filter((m) => m.target === t).pop();
    if (target === "/efi") return at("/efi") ?? at("/boot/efi") ?? at("/boot");
    return at(target);
  }

  get root(): FindmntEntry {
    const r = this.mount("/");
    if (!r) throw new ReportError("report: findmnt gave no root mount");
    return r;
  }

  /** A loader EFI variable (UTF-16LE after 4 attribute bytes), or undefined if unset. */
  efivar(name: string, guid = LOADER_GUID): string | undefined {
    const b = this.files.get(`efivars/${name}-${guid}`);
    if (!b || b.length < 4) return undefined;
    return b.subarray(4).toString("utf16le").replace(/\0+$/, "");
  }

  /** `systemd-bless-boot status`: good, bad, indeterminate, clean (or the error text). */
  get blessStatus(): string {
    const i = this.get("bless_status");
    return i.text || i.err.trim();
  }

  /** fs-verity digest (`sha256:…`) per file named in `verityFiles`, or null when verity is not enabled on it. */
  get verity(): Record<string, string | null> {
    const out: Record<string, string | null> = {};
    for (const f of (this.files.get("verity.files")?.toString("utf8") ?? "").split("\n")) if (f !== "") out[f] = null;
    const i = this.items.get("verity");
    if (!i) return out;
    for (const line of i.text.split("\n")) {
      const sp = line.indexOf(" ");
      if (sp > 0) out[line.slice(sp + 1)] = line.slice(0, sp);
    }
    return out;
  }

  /** `systemctl --version` first line, e.g. `systemd 257 (257.13-1~deb13u1)`. */
  get systemdVersion(): string {
    return this.text("systemd_version").split("\n")[0] ?? "";
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

/** The regular files of a ustar archive (name → contents). */
export function untar(buf: Buffer): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  let off = 0;
  while (off + 512 <= buf.length) {
    const h = buf.subarray(off, off + 512);
    if (h.every((b) => b === 0)) break;
    const field = (a: number, n: number) => h.subarray(a, a + n).toString("latin1").replace(/\0.*$/s, "");
    const prefix = field(345, 155);
    const name = (prefix ? `${prefix}/` : "") + field(0, 100);
    const size = parseInt(field(124, 12).trim() || "0", 8);
    const type = field(156, 1);
    if (Number.isNaN(size) || off + 512 + size > buf.length) throw new ReportError(`report archive: bad header at offset ${off}`);
    if (type === "0" || type === "") files.set(name.replace(/^\.\//, ""), buf.subarray(off + 512, off + 512 + size));
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return files;
}

/** Parse the report channel; throws ReportError when no complete report is in it. */
export function parseReport(channel: string): GuestReport {
  const lines = channel.replace(/\r/g, "").split("\n");
  let begin = -1;
  for (let i = lines.length - 1; i >= 0; i--) {
    // firmware output without a final newline may precede the marker on its line
    if (lines[i]?.includes("CFSVM-REPORT-BEGIN")) {
      begin = i;
      break;
    }
  }
  if (begin < 0) throw new ReportError("no CFSVM-REPORT-BEGIN on the report channel (the test unit did not run or did not finish)");
  const endAt = lines.findIndex((l, i) => i > begin && l.startsWith("CFSVM-REPORT-END"));
  if (endAt < 0) throw new ReportError(`report has no CFSVM-REPORT-END (${lines.length - begin - 1} lines received)`);
  const count = Number(/CFSVM-REPORT-END items=(\d+)/.exec(lines[endAt] ?? "")?.[1]);
  const tar = Buffer.from(lines.slice(begin + 1, endAt).join(""), "base64");
  const sum = /sha256=([0-9a-f]{64})/.exec(lines[endAt] ?? "")?.[1];
  if (sum && createHash("sha256").update(tar).digest("hex") !== sum) {
    throw new ReportError(`report damaged in transit: sha256 of the ${tar.length} bytes received does not match the guest's`);
  }
  const files = untar(tar);
  const items: ReportItem[] = [];
  for (const [f, data] of files) {
    if (!f.endsWith(".rc")) continue;
    const name = f.slice(0, -3);
    const [rc, ms] = data.toString("latin1").trim().split(" ").map(Number);
    const out = files.get(`${name}.out`) ?? Buffer.alloc(0);
    items.push({ name, rc: rc ?? -1, ms: ms ?? 0, out, err: (files.get(`${name}.err`) ?? Buffer.alloc(0)).toString("utf8"), text: out.toString("utf8").trimEnd() });
  }
  if (items.length !== count) throw new ReportError(`report truncated: ${items.length} of ${count} items`);
  return new GuestReport(items, files);
}
