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
