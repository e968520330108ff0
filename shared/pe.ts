// PE/COFF section table reader for Unified Kernel Images.
//
// Follows composefs-rs `crates/composefs-boot/src/uki.rs` (`get_section`:
// DOS header → `PE\0\0` → COFF header → skip the optional header → section
// table; a section's data is `virtual_size` bytes from `pointer_to_raw_data`,
// not `size_of_raw_data`; the first section of a name wins) and the Microsoft
// PE format documentation; reference: oci.md §6, bootc-composefs.md §4.3
// (boot digest = SHA-256 of .linux ‖ .initrd).
//
// Every offset is bounds-checked against the buffer; a truncated or hostile
// file yields a CfsError naming the offset, never an exception of another
// kind, and never a read past the end.

import { createHash } from "node:crypto";
import { CfsError } from "./errors.ts";

export interface PeSection {
  /** Name with trailing NULs removed (8 bytes at most; `/n` long names are not resolved). */
  name: string;
  virtualSize: number;
  virtualAddress: number;
  sizeOfRawData: number;
  pointerToRawData: number;
  characteristics: number;
  /** Offset of this header in the file. */
  headerOffset: number;
}

const DOS_MAGIC = 0x5a4d; // "MZ"
const E_LFANEW = 0x3c;
const COFF_SIZE = 20;
const SECTION_SIZE = 40;

/** Read the section table. `input` names the file in errors. */
export function readPeSections(image: Uint8Array, input = "UKI"): PeSection[] {
  const view = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const need = (offset: number, len: number, what: string): void => {
    if (offset < 0 || offset + len > image.byteLength) {
      throw new CfsError(`${input}: offset ${offset}`, `truncated: ${what} needs ${len} bytes, file has ${image.byteLength}`);
    }
  };
  need(0, E_LFANEW + 4, "DOS header");
  if (view.getUint16(0, true) !== DOS_MAGIC) throw new CfsError(`${input}: offset 0`, "not a PE file (no MZ signature)");
  const pe = view.getUint32(E_LFANEW, true);
  need(pe, 4 + COFF_SIZE, "PE header");
  if (image[pe] !== 0x50 || image[pe + 1] !== 0x45 || image[pe + 2] !== 0 || image[pe + 3] !== 0) {
    throw new CfsError(`${input}: offset ${pe}`, "not a PE file (no PE signature)");
  }
  const coff = pe + 4;
  const nsections = view.getUint16(coff + 2, true);
  const optSize = view.getUint16(coff + 16, true);
  const table = coff + COFF_SIZE + optSize;
  need(table, nsections * SECTION_SIZE, `section table of ${nsections} entries`);
  const out: PeSection[] = [];
  for (let i = 0; i < nsections; i++) {
    const h = table + i * SECTION_SIZE;
    let end = 8;
    while (end > 0 && image[h + end - 1] === 0) end--;
    let name = "";
    for (let k = 0; k < end; k++) name += String.fromCharCode(image[h + k]!);
    out.push({
      name,
      virtualSize: view.getUint32(h + 8, true),
      virtualAddress: view.getUint32(h + 12, true),
      sizeOfRawData: view.getUint32(h + 16, true),
      pointerToRawData: view.getUint32(h + 20, true),
      characteristics: view.getUint32(h + 36, true),
      headerOffset: h,
    });
  }
  return out;
}

/**
 * The data of the first section called `name` (`virtual_size` bytes from
 * `pointer_to_raw_data`), or null when there is none. Data outside the file
 * is an error.
 */
export function peSection(image: Uint8Array, name: string, input = "UKI"): Uint8Array | null {
  if (name.length > 8) throw new CfsError(`section ${name}`, "PE section names have at most 8 bytes");
  const s = readPeSections(image, input).find((x) => x.name === name);
  if (s === undefined) return null;
  if (s.pointerToRawData + s.virtualSize > image.byteLength) {
    throw new CfsError(
      `${input}: offset ${s.headerOffset}`,
      `section ${name}: ${s.virtualSize} bytes at offset ${s.pointerToRawData} reach past the end of the file (${image.byteLength} bytes)`,
    );
  }
  return image.subarray(s.pointerToRawData, s.pointerToRawData + s.virtualSize);
}

/** A section that must exist. */
export function requirePeSection(image: Uint8Array, name: string, input = "UKI"): Uint8Array {
  const d = peSection(image, name, input);
  if (d === null) throw new CfsError(input, `no '${name}' section`);
  return d;
}

/** A text section as UTF-8 (invalid UTF-8 is an error), or null when absent. */
export function peTextSection(image: Uint8Array, name: string, input = "UKI"): string | null {
  const d = peSection(image, name, input);
  if (d === null) return null;
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(d);
  } catch {
    throw new CfsError(input, `section '${name}' is not UTF-8`);
  }
}

/** The UKI's kernel command line (`.cmdline`), trailing NULs and whitespace removed; null without one. */
export function ukiCmdline(image: Uint8Array, input = "UKI"): string | null {
  const t = peTextSection(image, ".cmdline", input);
  return t === null ? null : t.replace(/[\0\s]+$/, "");
}

/** The UKI's `.osrel` text (trailing NULs removed), or null. */
export function ukiOsRelease(image: Uint8Array, input = "UKI"): string | null {
  const t = peTextSection(image, ".osrel", input);
  return t === null ? null : t.replace(/\0+$/, "");
}

/** The UKI's `.uname` (kernel release), trimmed, or null. */
export function ukiUname(image: Uint8Array, input = "UKI"): string | null {
  const t = peTextSection(image, ".uname", input);
  return t === null ? null : t.replace(/[\0\s]+$/, "");
}

/** bootc's boot digest of a UKI: SHA-256 hex of the `.linux` section followed by the `.initrd` section. */
export function ukiBootDigest(image: Uint8Array, input = "UKI"): string {
  const linux = requirePeSection(image, ".linux", input);
  const initrd = requirePeSection(image, ".initrd", input);
  return createHash("sha256").update(linux).update(initrd).digest("hex");
}

// ---- headers and section layout (building UKIs) ----------------------------------------

/** IMAGE_DLLCHARACTERISTICS_NX_COMPAT. */
export const DLL_NX_COMPAT = 0x100;
/** Section characteristics ukify gives added sections. */
export const SCN_CNT_CODE = 0x20;
export const SCN_CNT_INITIALIZED_DATA = 0x40;
export const SCN_MEM_EXECUTE = 0x20000000;
export const SCN_MEM_READ = 0x40000000;
export const SCN_MEM_WRITE = 0x80000000;

export interface PeHeader {
  /** 0x10b (PE32) or 0x20b (PE32+). */
  magic: number;
  machine: number;
  numberOfSections: number;
  timeDateStamp: number;
  imageBase: bigint;
  sectionAlignment: number;
  fileAlignment: number;
  sizeOfImage: number;
  sizeOfHeaders: number;
  checkSum: number;
  dllCharacteristics: number;
  /** File offset of the section table. */
  sectionTableOffset: number;
  /** File offsets of the fields patchPeHeader may change. */
  offsets: { timeDateStamp: number; checkSum: number; dllCharacteristics: number };
}

/** The COFF and optional header fields a UKI builder needs. */
export function readPeHeader(image: Uint8Array, input = "PE file"): PeHeader {
  readPeSections(image, input); // signatures and the section table are in bounds
  const view = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const coff = view.getUint32(E_LFANEW, true) + 4;
  const optSize = view.getUint16(coff + 16, true);
  const opt = coff + COFF_SIZE;
  if (optSize < 72 || opt + 72 > image.byteLength) {
    throw new CfsError(`${input}: offset ${opt}`, `optional header too small (${optSize} bytes)`);
  }
  const magic = view.getUint16(opt, true);
  if (magic !== 0x10b && magic !== 0x20b) throw new CfsError(`${input}: offset ${opt}`, `unknown optional header magic 0x${magic.toString(16)}`);
  const imageBase = magic === 0x20b ? view.getBigUint64(opt + 24, true) : BigInt(view.getUint32(opt + 28, true));
  return {
    magic,
    machine: view.getUint16(coff, true),
    numberOfSections: view.getUint16(coff + 2, true),
    timeDateStamp: view.getUint32(coff + 4, true),
    imageBase,
    sectionAlignment: view.getUint32(opt + 32, true),
    fileAlignment: view.getUint32(opt + 36, true),
    sizeOfImage: view.getUint32(opt + 56, true),
    sizeOfHeaders: view.getUint32(opt + 60, true),
    checkSum: view.getUint32(opt + 64, true),
    dllCharacteristics: view.getUint16(opt + 70, true),
    sectionTableOffset: opt + optSize,
    offsets: { timeDateStamp: coff + 4, checkSum: opt + 64, dllCharacteristics: opt + 70 },
  };
}

const roundUp = (x: number, a: number): number => (a <= 1 ? x : Math.ceil(x / a) * a);

export interface PlannedSection {
  name: string;
  size: number;
  /** Relative virtual address. */
  rva: number;
  /** Absolute virtual address (image base + rva), what objcopy's --change-section-vma takes. */
  vma: bigint;
}

/**
 * Where sections appended to `image` go, as ukify places them: each at the
 * end of the previous one (the stub's highest section first) rounded up to
 * SectionAlignment. Names longer than 8 bytes are refused.
 */
export function planAppendedSections(image: Uint8Array, sections: readonly { name: string; size: number }[], input = "PE file"): PlannedSection[] {
  const h = readPeHeader(image, input);
  const existing = readPeSections(image, input);
  if (h.sectionAlignment === 0 || (h.sectionAlignment & (h.sectionAlignment - 1)) !== 0) {
    throw new CfsError(input, `section alignment ${h.sectionAlignment} is not a power of two`);
  }
  let end = 0;
  for (const s of existing) end = Math.max(end, s.virtualAddress + Math.max(s.virtualSize, 0));
  const out: PlannedSection[] = [];
  for (const s of sections) {
    if (s.name.length === 0 || s.name.length > 8) throw new CfsError(`section ${s.name}`, "PE section names have 1 to 8 bytes");
    if (existing.some((e) => e.name === s.name) || out.some((o) => o.name === s.name)) throw new CfsError(`section ${s.name}`, `${input} already has it`);
    const rva = roundUp(end, h.sectionAlignment);
    if (rva + s.size > 0xffffffff) throw new CfsError(`section ${s.name}`, "does not fit in a 32-bit image");
    out.push({ name: s.name, size: s.size, rva, vma: h.imageBase + BigInt(rva) });
    end = rva + s.size;
  }
  return out;
}

/**
 * A copy of `image` with header fields changed: the COFF time stamp, bits
 * cleared from DllCharacteristics; the checksum is set to 0 (as ukify does;
 * firmware does not check it).
 */
export function patchPeHeader(image: Uint8Array, p: { timeDateStamp?: number; clearDllCharacteristics?: number }, input = "PE file"): Uint8Array {
  const h = readPeHeader(image, input);
  const out = new Uint8Array(image);
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  if (p.timeDateStamp !== undefined) view.setUint32(h.offsets.timeDateStamp, p.timeDateStamp >>> 0, true);
  if (p.clearDllCharacteristics !== undefined) view.setUint16(h.offsets.dllCharacteristics, h.dllCharacteristics & ~p.clearDllCharacteristics & 0xffff, true);
  view.setUint32(h.offsets.checkSum, 0, true);
  return out;
}

/** Whether `data` is a PE image with NX_COMPAT set; null when it is not a PE image. */
export function peNxCompat(data: Uint8Array): boolean | null {
  try {
    return (readPeHeader(data).dllCharacteristics & DLL_NX_COMPAT) !== 0;
  } catch {
    return null;
  }
}

/** The SBAT line ukify adds for the UKI itself. */
export const UKI_SBAT_LINE = "uki,1,UKI,uki,1,https://uapi-group.org/specifications/specs/unified_kernel_image/";
const SBAT_HEADER = "sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md";

/**
 * The merged `.sbat` of a UKI (what ukify writes): one `sbat,1,…` header,
 * then the entries of each input section (stub, kernel; inputs without a
 * valid header skipped), then the UKI's own entry; NUL-terminated.
 */
export function mergeSbat(sections: readonly (Uint8Array | null)[]): Uint8Array {
  const lines: string[] = [];
  for (const s of sections) {
    if (s === null) continue;
    let end = s.length;
    while (end > 0 && s[end - 1] === 0) end--;
    const text = new TextDecoder().decode(s.subarray(0, end));
    const split = text.split(/\r?\n/);
    if (split.length > 0 && split[split.length - 1] === "") split.pop();
    if (split[0] === undefined || !split[0].startsWith("sbat,")) continue;
    lines.push(...split.slice(1));
  }
  lines.push(UKI_SBAT_LINE);
  return new TextEncoder().encode(`${SBAT_HEADER}\n${lines.join("\n")}\n\0`);
}

/**
 * A copy of `image` with the data of section `name` replaced in place (as
 * ukify does for .sbat): the new data must fit in the section's raw size;
 * the rest of the raw area is zeroed and VirtualSize becomes the new length.
 * Returns null when it does not fit.
 */
export function replaceSectionData(image: Uint8Array, name: string, data: Uint8Array, input = "PE file"): Uint8Array | null {
  const s = readPeSections(image, input).find((x) => x.name === name);
  if (s === undefined) throw new CfsError(input, `no '${name}' section`);
  if (data.length > s.sizeOfRawData || s.pointerToRawData + s.sizeOfRawData > image.byteLength) return null;
  const out = new Uint8Array(image);
  out.fill(0, s.pointerToRawData, s.pointerToRawData + s.sizeOfRawData);
  out.set(data, s.pointerToRawData);
  new DataView(out.buffer, out.byteOffset, out.byteLength).setUint32(s.headerOffset + 8, data.length, true);
  return out;
}
