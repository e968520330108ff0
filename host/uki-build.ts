// Building Unified Kernel Images: systemd's `ukify build` where it is
// installed, otherwise `objcopy` on the systemd stub (linux<arch>.efi.stub
// from systemd-boot-efi).
//
//   const r = await buildUki({ linux, initrds, cmdline, osRelease, uname }, { output, builder: "auto" });
//
// The objcopy builder places the sections the way ukify does (bootc-composefs.md
// §10, vm-bookworm.md §5): .osrel, .cmdline, .uname, .linux, .initrd appended
// after the stub's last section, each at the previous end rounded up to the
// stub's SectionAlignment (shared/pe.ts planAppendedSections), data sections
// read-only data, .linux code. Afterwards, like ukify: NX_COMPAT is cleared
// when the kernel lacks it (firmware that enforces it would refuse the
// kernel otherwise), the checksum is 0, and the time stamp is the stub's, so
// the same inputs give the same bytes.
//
// Both builders write to a temporary file next to the output, then the
// result is read back with shared/pe.ts: the embedded .cmdline must be
// exactly what was asked for, before the file is renamed into place (fsync,
// rename, fsync of the directory). A failed build leaves no output.

import { closeSync, existsSync, fsyncSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { randomBytes } from "node:crypto";

import { CfsError } from "../shared/errors.ts";
import { DLL_NX_COMPAT, mergeSbat, patchPeHeader, replaceSectionData, peNxCompat, peSection, planAppendedSections, readPeHeader, readPeSections, ukiCmdline } from "../shared/pe.ts";
import { fsyncPath } from "../shared/sys.ts";
import { findProgram, runTool } from "./tools.ts";
import { removeOnInterrupt } from "./interrupt.ts";

export type UkiBuilder = "ukify" | "objcopy";

export interface UkiParts {
  /** The kernel image (path). */
  linux: string;
  /** Initrds (paths), concatenated in this order. */
  initrds: string[];
  cmdline: string;
  /** os-release text for .osrel, or null for none. */
  osRelease: string | null;
  /** Kernel release for .uname, or null for none. */
  uname: string | null;
}

export interface BuildUkiOptions {
  output: string;
  /** Default "auto": ukify when installed, else objcopy. */
  builder?: "auto" | UkiBuilder;
  /** The systemd stub (objcopy; passed to ukify as --stub when given). */
  stub?: string;
  /** A root filesystem whose own stub is preferred (objcopy builder). */
  rootfs?: string;
  /** Extra arguments for `ukify build` (not allowed with objcopy). */
  ukifyArgs?: readonly string[];
  /** Working directory for ukify (relative paths in ukifyArgs). */
  cwd?: string;
}

export interface BuildUkiResult {
  builder: UkiBuilder;
  output: string;
  /** The stub used (objcopy), or null when ukify chose its own. */
  stub: string | null;
}

/** The EFI architecture suffix of systemd's binaries for this machine. */
export function efiArch(arch = process.arch): string {
  const map: Record<string, string> = { x64: "x64", arm64: "aa64", ia32: "ia32", arm: "arm", riscv64: "riscv64", loong64: "loongarch64" };
  const a = map[arch];
  if (a === undefined) throw new CfsError(`architecture ${arch}`, "no systemd EFI stub for it");
  return a;
}

const STUB_DIR = "usr/lib/systemd/boot/efi";

/** Where the systemd stub is looked for: the rootfs's own, then the host's. */
export function stubCandidates(rootfs?: string): string[] {
  const name = `linux${efiArch()}.efi.stub`;
  const out: string[] = [];
  if (rootfs !== undefined) out.push(join(rootfs, STUB_DIR, name));
  out.push(join("/", STUB_DIR, name));
  return out;
}

export function findStub(rootfs?: string): string | null {
  for (const c of stubCandidates(rootfs)) if (isFile(c)) return c;
  return null;
}

/** The ukify executable, or null. */
export function findUkify(): string | null {
  return findProgram("ukify", ["/usr/lib/systemd"]);
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

function tempNextTo(output: string): string {
  return join(dirname(output), `.${basename(output)}.tmp-${randomBytes(6).toString("hex")}`);
}

function commit(tmp: string, output: string): void {
  const fd = openSync(tmp, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, output);
  fsyncPath(dirname(output));
}

/** The embedded command line must be the requested one (trailing NUL/whitespace aside). */
function checkBuilt(file: string, parts: UkiParts, builder: UkiBuilder): void {
  const bytes = new Uint8Array(readFileSync(file));
  const got = ukiCmdline(bytes, file);
  if (got !== parts.cmdline.replace(/[\0\s]+$/, "")) {
    throw new CfsError(file, `${builder} produced a UKI whose .cmdline is ${JSON.stringify(got)}, not ${JSON.stringify(parts.cmdline)}`);
  }
  const names = new Set(readPeSections(bytes, file).map((s) => s.name));
  for (const n of [".linux", ...(parts.initrds.length > 0 ? [".initrd"] : [])]) {
    if (!names.has(n)) throw new CfsError(file, `${builder} produced a UKI without a ${n} section`);
  }
}

/** Build a UKI (see the module comment). */
export async function buildUki(parts: UkiParts, opts: BuildUkiOptions): Promise<BuildUkiResult> {
  const output = resolve(opts.output);
  if (!existsSync(dirname(output))) throw new CfsError(output, "the output directory does not exist");
  let builder: UkiBuilder;
  let ukify: string | null = null;
  if (opts.builder === "objcopy") builder = "objcopy";
  else {
    ukify = findUkify();
    if (ukify === null && opts.builder === "ukify") throw new CfsError("ukify", "not installed (Debian package systemd-ukify); use --uki-builder=objcopy to build with objcopy and the systemd stub");
    builder = ukify === null ? "objcopy" : "ukify";
  }
  if (builder === "objcopy" && (opts.ukifyArgs ?? []).length > 0) {
    throw new CfsError(`ukify arguments ${JSON.stringify((opts.ukifyArgs ?? []).join(" "))}`, "ukify is not installed, and the objcopy builder takes no ukify arguments (install systemd-ukify)");
  }
  if (opts.stub !== undefined && !isFile(opts.stub)) throw new CfsError(opts.stub, "the systemd stub does not exist (or is not a file)");
  const tmp = tempNextTo(output);
  const work = mkdtempSync(join(process.env.CFSBOOT_TMPDIR ?? tmpdir(), "cfsboot-uki-"));
  const unregister = [removeOnInterrupt(work), removeOnInterrupt(tmp)];
  try {
    let stub: string | null;
    if (builder === "ukify") {
      stub = opts.stub ?? null;
      await runUkify(ukify!, parts, { ...opts, output: tmp, finalOutput: output }, work);
    } else {
      stub = opts.stub ?? findStub(opts.rootfs);
      if (stub === null) {
        throw new CfsError("systemd stub", `not found (looked for ${stubCandidates(opts.rootfs).join(", ")}); install systemd-boot-efi, or systemd-ukify`);
      }
      await runObjcopy(stub, parts, tmp, work);
    }
    checkBuilt(tmp, parts, builder);
    commit(tmp, output);
    return { builder, output, stub };
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {}
    throw e;
  } finally {
    for (const u of unregister) u();
    rmSync(work, { recursive: true, force: true });
  }
}

/** One initrd file: the given one, or the concatenation of several (as ukify does). */
function initrdFile(parts: UkiParts, work: string): string | null {
  if (parts.initrds.length === 0) return null;
  if (parts.initrds.length === 1) return parts.initrds[0]!;
  const p = join(work, "initrd");
  writeFileSync(p, Buffer.concat(parts.initrds.map((f) => readFileSync(f))));
  return p;
}

async function runObjcopy(stub: string, parts: UkiParts, output: string, work: string): Promise<void> {
  const stubBytes = new Uint8Array(readFileSync(stub));
  const header = readPeHeader(stubBytes, stub);
  const sections: { name: string; file: string; code: boolean }[] = [];
  const text = (name: string, data: string) => {
    const f = join(work, name.slice(1));
    writeFileSync(f, data);
    sections.push({ name, file: f, code: false });
  };
  if (parts.osRelease !== null) text(".osrel", parts.osRelease);
  text(".cmdline", parts.cmdline);
  if (parts.uname !== null) text(".uname", parts.uname);
  sections.push({ name: ".linux", file: parts.linux, code: true });
  const initrd = initrdFile(parts, work);
  if (initrd !== null) sections.push({ name: ".initrd", file: initrd, code: false });
  const plan = planAppendedSections(stubBytes, sections.map((s) => ({ name: s.name, size: statSync(s.file).size })), stub);
  const args: string[] = [];
  // .sbat: the stub's, the kernel's and the UKI's entries (ukify), in place of the stub's own.
  let merged: Uint8Array | null = null;
  const stubSbat = peSection(stubBytes, ".sbat", stub);
  if (stubSbat !== null) {
    let kernelSbat: Uint8Array | null = null;
    try {
      kernelSbat = peSection(new Uint8Array(readFileSync(parts.linux)), ".sbat", parts.linux);
    } catch {}
    merged = mergeSbat([stubSbat, kernelSbat]);
  }
  sections.forEach((s, i) => {
    args.push(
      "--add-section", `${s.name}=${s.file}`,
      "--change-section-vma", `${s.name}=0x${plan[i]!.vma.toString(16)}`,
      "--set-section-flags", `${s.name}=${s.code ? "code" : "data"},readonly`,
    );
  });
  await runTool("objcopy", [...args, stub, output], { input: `objcopy ${basename(stub)}` });
  // What ukify does after adding sections; the stub's time stamp keeps the output reproducible.
  const nx = peNxCompat(new Uint8Array(readFileSync(parts.linux)));
  const built = new Uint8Array(readFileSync(output));
  let patched = patchPeHeader(built, { timeDateStamp: header.timeDateStamp, ...(nx === false ? { clearDllCharacteristics: DLL_NX_COMPAT } : {}) }, output);
  if (merged !== null) {
    const withSbat = replaceSectionData(patched, ".sbat", merged, output);
    if (withSbat === null) process.stderr.write(`cfsboot: warning: ${stub}: the merged .sbat does not fit in the stub's; keeping the stub's\n`);
    else patched = withSbat;
  }
  const placed = readPeSections(patched, output);
  for (const p of plan) {
    const s = placed.find((x) => x.name === p.name);
    if (s === undefined || s.virtualAddress !== p.rva || s.virtualSize !== p.size) {
      throw new CfsError(output, `objcopy placed section ${p.name} at 0x${(s?.virtualAddress ?? 0).toString(16)} (+${s?.virtualSize ?? 0}), expected 0x${p.rva.toString(16)} (+${p.size})`);
    }
  }
  writeFileSync(output, patched);
}

/** The value of `--output`/`-o` in ukify arguments, and the arguments without it. */
export function splitUkifyOutput(args: readonly string[]): { output: string | null; rest: string[] } {
  let output: string | null = null;
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--output" || a === "-o") {
      const v = args[i + 1];
      if (v === undefined) throw new CfsError(`ukify argument ${a}`, "needs a value");
      output = v;
      i++;
    } else if (a.startsWith("--output=")) output = a.slice("--output=".length);
    else if (a.startsWith("-o") && a.length > 2 && !a.startsWith("--")) output = a.slice(2);
    else rest.push(a);
  }
  return { output, rest };
}

async function runUkify(ukify: string, parts: UkiParts, opts: BuildUkiOptions & { finalOutput?: string }, work: string): Promise<void> {
  const args = ["build", `--linux=${resolve(parts.linux)}`];
  for (const i of parts.initrds) args.push(`--initrd=${resolve(i)}`);
  const cmdline = join(work, "cmdline");
  writeFileSync(cmdline, parts.cmdline);
  args.push(`--cmdline=@${cmdline}`);
  if (parts.uname !== null) args.push(`--uname=${parts.uname}`);
  if (parts.osRelease !== null) {
    const f = join(work, "os-release");
    writeFileSync(f, parts.osRelease);
    args.push(`--os-release=@${f}`);
  }
  if (opts.stub !== undefined) args.push(`--stub=${resolve(opts.stub)}`);
  const { rest } = splitUkifyOutput(opts.ukifyArgs ?? []);
  args.push(...rest, `--output=${opts.output}`);
  const r = await runTool(ukify, args, { input: "ukify build", cwd: opts.cwd });
  // ukify names the file it wrote: that is the temporary one, renamed afterwards.
  const final = opts.finalOutput ?? opts.output;
  const text = r.stderr.split(opts.output).join(final);
  if (text !== "") process.stderr.write(text);
}
