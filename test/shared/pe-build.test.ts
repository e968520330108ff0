// shared/pe.ts, the parts a UKI builder uses: the optional header, where
// appended sections go (ukify's rule), header patches, .sbat merging and
// in-place section replacement. The real stubs (systemd 252 and 257) are
// checked against objdump in test/host/ukify*.test.ts; here synthetic PE
// images cover the rules, properties and hostile inputs.

import { describe, expect, test } from "vitest";
import fc from "fast-check";

import { CfsError } from "../../shared/errors.ts";
import { DLL_NX_COMPAT, mergeSbat, patchPeHeader, peNxCompat, planAppendedSections, readPeHeader, readPeSections, replaceSectionData, UKI_SBAT_LINE } from "../../shared/pe.ts";

interface Sec {
  name: string;
  va: number;
  vsize: number;
  raw?: Uint8Array;
}

/** A PE32+ image: DOS stub, COFF header, 240-byte optional header, sections. */
function pe(o: { sections: Sec[]; imageBase?: bigint; sectionAlignment?: number; fileAlignment?: number; dll?: number; stamp?: number; magic?: number }): Uint8Array {
  const peOff = 0x80;
  const optSize = 0xf0;
  const table = peOff + 24 + optSize;
  const fa = o.fileAlignment ?? 0x200;
  let data = Math.ceil((table + o.sections.length * 40) / fa) * fa;
  const placed = o.sections.map((s) => {
    const raw = s.raw ?? new Uint8Array(s.vsize).fill(0x5a);
    const at = data;
    const size = Math.ceil(raw.length / fa) * fa;
    data += size;
    return { ...s, raw, at, size };
  });
  const buf = new Uint8Array(data);
  const v = new DataView(buf.buffer);
  buf[0] = 0x4d;
  buf[1] = 0x5a;
  v.setUint32(0x3c, peOff, true);
  buf.set([0x50, 0x45, 0, 0], peOff);
  v.setUint16(peOff + 4, 0x8664, true);
  v.setUint16(peOff + 6, o.sections.length, true);
  v.setUint32(peOff + 8, o.stamp ?? 0x12345678, true);
  v.setUint16(peOff + 20, optSize, true);
  const opt = peOff + 24;
  v.setUint16(opt, o.magic ?? 0x20b, true);
  v.setBigUint64(opt + 24, o.imageBase ?? 0n, true);
  v.setUint32(opt + 32, o.sectionAlignment ?? 0x1000, true);
  v.setUint32(opt + 36, fa, true);
  v.setUint32(opt + 64, 0xdeadbeef, true); // checksum
  v.setUint16(opt + 70, o.dll ?? 0x160, true);
  placed.forEach((s, i) => {
    const h = table + i * 40;
    for (let k = 0; k < s.name.length; k++) buf[h + k] = s.name.charCodeAt(k);
    v.setUint32(h + 8, s.vsize, true);
    v.setUint32(h + 12, s.va, true);
    v.setUint32(h + 16, s.size, true);
    v.setUint32(h + 20, s.at, true);
    buf.set(s.raw, s.at);
  });
  return buf;
}

function errorOf(f: () => unknown): CfsError {
  try {
    f();
  } catch (e) {
    if (e instanceof CfsError) return e;
    throw e;
  }
  throw new Error("expected a CfsError");
}

const stub = pe({ sections: [{ name: ".text", va: 0x1000, vsize: 0x2345 }, { name: ".sbat", va: 0x4000, vsize: 0x40 }, { name: ".reloc", va: 0x5000, vsize: 0x10 }], imageBase: 0x14df90000n });

describe("readPeHeader", () => {
  test("fields of PE32+ and PE32", () => {
    const h = readPeHeader(stub);
    expect(h).toMatchObject({ magic: 0x20b, machine: 0x8664, numberOfSections: 3, timeDateStamp: 0x12345678, imageBase: 0x14df90000n, sectionAlignment: 0x1000, fileAlignment: 0x200, checkSum: 0xdeadbeef, dllCharacteristics: 0x160 });
    const h32 = readPeHeader(pe({ sections: [{ name: ".text", va: 0x1000, vsize: 16 }], magic: 0x10b }));
    expect(h32.magic).toBe(0x10b);
  });

  test("hostile: bad magic, truncated optional header", () => {
    const bad = new Uint8Array(stub);
    new DataView(bad.buffer).setUint16(0x80 + 24, 0x1234, true);
    expect(errorOf(() => readPeHeader(bad, "x.efi")).message).toMatch(/^x\.efi: offset 152: unknown optional header magic 0x1234/);
    expect(() => readPeHeader(stub.subarray(0, 0x80 + 30), "t")).toThrow(CfsError);
  });
});

describe("planAppendedSections", () => {
  test("ukify's rule: after the highest section, rounded up to SectionAlignment, absolute VMAs", () => {
    const plan = planAppendedSections(stub, [{ name: ".osrel", size: 10 }, { name: ".cmdline", size: 0x1001 }, { name: ".linux", size: 5 }]);
    expect(plan.map((p) => [p.name, p.rva])).toEqual([[".osrel", 0x6000], [".cmdline", 0x7000], [".linux", 0x9000]]);
    expect(plan[0]!.vma).toBe(0x14df96000n);
  });

  test("property: aligned, ordered, non-overlapping, after every stub section", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 9, max: 16 }),
        fc.array(fc.integer({ min: 1, max: 1 << 20 }), { minLength: 1, maxLength: 6 }),
        fc.integer({ min: 0, max: 0x3000 }),
        (lg, sizes, lastSize) => {
          const align = 1 << lg;
          const img = pe({ sections: [{ name: ".a", va: align, vsize: 32 }, { name: ".b", va: align * 4, vsize: lastSize }], sectionAlignment: align });
          const plan = planAppendedSections(img, sizes.map((s, i) => ({ name: `.s${i}`, size: s })));
          let end = align * 4 + lastSize;
          for (const p of plan) {
            expect(p.rva % align).toBe(0);
            expect(p.rva).toBeGreaterThanOrEqual(end);
            expect(p.rva - end).toBeLessThan(align);
            end = p.rva + p.size;
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  test("refusals: duplicate or bad names, alignment not a power of two", () => {
    expect(errorOf(() => planAppendedSections(stub, [{ name: ".sbat", size: 1 }])).message).toMatch(/already has it/);
    expect(errorOf(() => planAppendedSections(stub, [{ name: ".x", size: 1 }, { name: ".x", size: 1 }])).message).toMatch(/already has it/);
    expect(errorOf(() => planAppendedSections(stub, [{ name: ".toolongname", size: 1 }])).message).toMatch(/1 to 8 bytes/);
    const odd = pe({ sections: [{ name: ".a", va: 0x1000, vsize: 1 }], sectionAlignment: 0x1800 });
    expect(errorOf(() => planAppendedSections(odd, [{ name: ".x", size: 1 }])).message).toMatch(/not a power of two/);
  });
});

describe("patchPeHeader, peNxCompat", () => {
  test("time stamp set, NX cleared, checksum 0; the input is not changed", () => {
    const before = new Uint8Array(stub);
    const out = patchPeHeader(stub, { timeDateStamp: 7, clearDllCharacteristics: DLL_NX_COMPAT });
    expect(stub).toEqual(before);
    const h = readPeHeader(out);
    expect(h.timeDateStamp).toBe(7);
    expect(h.dllCharacteristics).toBe(0x60);
    expect(h.checkSum).toBe(0);
    expect(readPeSections(out)).toEqual(readPeSections(stub));
    expect(peNxCompat(stub)).toBe(true);
    expect(peNxCompat(out)).toBe(false);
    expect(peNxCompat(new Uint8Array(100))).toBeNull();
  });
});

describe("mergeSbat", () => {
  const enc = (s: string) => new TextEncoder().encode(s);
  const dec = (b: Uint8Array) => new TextDecoder().decode(b);
  const HEADER = "sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md";

  test("one header, stub then kernel entries, the UKI entry, NUL", () => {
    const s = enc(`${HEADER}\nsystemd,1,The systemd Developers,systemd,257,https://systemd.io/\n\0\0`);
    const k = enc(`${HEADER}\r\nlinux,1,The Linux Developers,linux,6.12,https://linux.org/\n`);
    expect(dec(mergeSbat([s, k]))).toBe(`${HEADER}\nsystemd,1,The systemd Developers,systemd,257,https://systemd.io/\nlinux,1,The Linux Developers,linux,6.12,https://linux.org/\n${UKI_SBAT_LINE}\n\0`);
  });

  test("inputs without a valid header are skipped", () => {
    expect(dec(mergeSbat([enc("not sbat\nx,1\n"), null]))).toBe(`${HEADER}\n${UKI_SBAT_LINE}\n\0`);
  });
});

describe("replaceSectionData", () => {
  test("replaced in place within the raw size; VirtualSize follows; too large → null", () => {
    const data = new TextEncoder().encode("new sbat data");
    const out = replaceSectionData(stub, ".sbat", data)!;
    const s = readPeSections(out).find((x) => x.name === ".sbat")!;
    expect(s.virtualSize).toBe(data.length);
    expect(out.subarray(s.pointerToRawData, s.pointerToRawData + data.length)).toEqual(data);
    expect(out.subarray(s.pointerToRawData + data.length, s.pointerToRawData + s.sizeOfRawData).every((b) => b === 0)).toBe(true);
    expect(out.length).toBe(stub.length);
    expect(replaceSectionData(stub, ".sbat", new Uint8Array(0x201))).toBeNull();
    expect(errorOf(() => replaceSectionData(stub, ".nope", data)).message).toMatch(/no '\.nope' section/);
  });
});
