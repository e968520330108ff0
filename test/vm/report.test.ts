// The VM test unit's report protocol, without a VM: the real guest script
// runs on the host in its dry-run mode (no waiting for boot, no power-off,
// output into a file instead of /dev/ttyS1) and the harness parses what it
// wrote. The booted proof is vm/smoke-*.test.ts; this catches protocol
// regressions in seconds.

import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { release, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type GuestReport, ReportError, parseReport, reportScript } from "../../vm/lib/report.ts";
import { canRun, hasTool } from "../helpers/env.ts";

const ready = canRun(["bash", "base64", "tar"].every(hasTool), "needs bash, base64 and tar");

describe.skipIf(!ready)("VM report protocol (guest script run on the host)", () => {
  let dir: string;
  let channel: string;
  let report: GuestReport;
  const binary = Buffer.from([0, 1, 2, 0xff, 0xfe, 0x0a, 0x00, 0x80]);

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "cfsvm-report-"));
    writeFileSync(join(dir, "bin"), binary);
    writeFileSync(join(dir, "with space"), "x");
    const script = reportScript({
      commands: [
        { name: "quoting", cmd: `printf '%s|' "it's" '$HOME' "a\\"b"; echo` },
        { name: "fails", cmd: "echo out; echo err >&2; exit 7" },
        { name: "binary", cmd: `cat ${JSON.stringify(join(dir, "bin"))}` },
        { name: "leaks", cmd: "cd /; LEAK=1; exit 3" },
        { name: "isolated", cmd: 'pwd; echo "leak=${LEAK:-none}"' },
      ],
      verityFiles: [join(dir, "with space"), join(dir, "missing")],
    });
    writeFileSync(join(dir, "report.sh"), script);
    const r = spawnSync("bash", [join(dir, "report.sh")], {
      cwd: dir,
      env: { PATH: process.env.PATH, CFSVM_REPORT_OUT: join(dir, "chan"), CFSVM_REPORT_DIR: join(dir, "run"), CFSVM_REPORT_DRY: "1" },
      timeout: 60_000,
    });
    expect(r.status).toBe(0);
    channel = readFileSync(join(dir, "chan"), "latin1");
    // the firmware writes to every serial port: the parser must find the report among noise
    report = parseReport(`BdsDxe: loading Boot0001\r\n\x1b[2J${channel}\r\nreboot: Power down\r\n`);
  });

  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("reports the standard facts of the machine it ran on", () => {
    expect(report.kernel).toBe(release());
    expect(report.cmdline).toBe(readFileSync("/proc/cmdline", "utf8").trim());
    expect(report.systemState).toBe("dry-run");
    expect(report.root.target).toBe("/");
    expect(report.mounts.length).toBeGreaterThan(0);
  });

  it("keeps each command's stdout, stderr and exit status, bytes intact", () => {
    expect(report.hook("quoting").text).toBe(`it's|$HOME|a"b|`);
    expect(report.hook("fails")).toMatchObject({ rc: 7, text: "out", err: "err\n" });
    expect(report.hook("binary").out.equals(binary)).toBe(true);
  });

  it("runs scenario commands in subshells: exit, cd and variables do not leak", () => {
    expect(report.hook("leaks").rc).toBe(3);
    expect(report.hook("isolated").text).toBe(`${dir}\nleak=none`);
  });

  it("maps every requested file to its fs-verity digest or null", () => {
    // the host kernel has no fs-verity: both are null, and both are listed
    expect(report.verity).toEqual({ [join(dir, "with space")]: null, [join(dir, "missing")]: null });
  });

  it("rejects a truncated or unterminated report", () => {
    const lines = channel.split("\n");
    const end = lines.findIndex((l) => l.startsWith("CFSVM-REPORT-END"));
    const cut = [...lines.slice(0, end - 3), ...lines.slice(end)].join("\n");
    expect(() => parseReport(cut)).toThrow(/damaged in transit/);
    expect(() => parseReport(lines.slice(0, end).join("\n"))).toThrow(/no CFSVM-REPORT-END/);
    expect(() => parseReport("BdsDxe: loading\n")).toThrow(/no CFSVM-REPORT-BEGIN/);
  });
});
