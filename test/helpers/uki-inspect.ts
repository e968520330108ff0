// Reading UKIs with binutils (independent of shared/pe.ts): `objdump -h` for
// the section table, `objdump -p` for the image base and alignment, `objcopy
// -O binary --only-section` for a section's bytes; and the layout every
// UKI cfsboot builds must have.

import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "vitest";

export interface ObjdumpSection {
  name: string;
  size: number;
  vma: bigint;
}

export function objdumpSections(file: string): ObjdumpSection[] {
  const r = spawnSync("objdump", ["-h", file], { encoding: "utf8" });
  expect(r.status, r.stderr).toBe(0);
  const out: ObjdumpSection[] = [];
  for (const line of r.stdout.split("\n")) {
    const m = /^\s*\d+\s+(\S+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+[0-9a-f]+\s+[0-9a-f]+\s+2\*\*\d+/.exec(line);
    if (m) out.push({ name: m[1]!, size: parseInt(m[2]!, 16), vma: BigInt(`0x${m[3]}`) });
  }
  return out;
}

export function objdumpImageBase(file: string): { imageBase: bigint; sectionAlignment: number } {
  const r = spawnSync("objdump", ["-p", file], { encoding: "utf8" });
  const base = /^ImageBase\s+([0-9a-f]+)$/m.exec(r.stdout);
  const align = /^SectionAlignment\s+([0-9a-f]+)$/m.exec(r.stdout);
  expect(base, r.stdout).not.toBeNull();
  return { imageBase: BigInt(`0x${base![1]}`), sectionAlignment: parseInt(align![1]!, 16) };
}

/** A section's bytes as objcopy extracts them. */
export function objcopySection(file: string, name: string): Buffer {
  const dir = mkdtempSync(join(tmpdir(), "cfs-section-"));
  try {
    const out = join(dir, "s");
    const r = spawnSync("objcopy", ["-O", "binary", `--only-section=${name}`, file, out], { encoding: "utf8" });
    expect(r.status, r.stderr).toBe(0);
    return readFileSync(out);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The sections a sealed UKI adds to the stub, in order. */
export const UKI_SECTIONS = [".osrel", ".cmdline", ".uname", ".linux", ".initrd"];

/** The stub's sections, then UKI_SECTIONS, each aligned and after the previous one. */
export function checkUkiLayout(uki: string, stub: string): void {
  const stubSecs = objdumpSections(stub);
  const secs = objdumpSections(uki);
  const { imageBase, sectionAlignment } = objdumpImageBase(uki);
  expect(secs.map((s) => s.name)).toEqual([...stubSecs.map((s) => s.name), ...UKI_SECTIONS]);
  let end = stubSecs.reduce((m, s) => (s.vma + BigInt(s.size) > m ? s.vma + BigInt(s.size) : m), 0n);
  for (const name of UKI_SECTIONS) {
    const s = secs.find((x) => x.name === name)!;
    expect((s.vma - imageBase) % BigInt(sectionAlignment), `${name} aligned`).toBe(0n);
    expect(s.vma >= end, `${name} after the previous section`).toBe(true);
    end = s.vma + BigInt(s.size);
  }
}
