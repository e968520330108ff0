import { describe, expect, test } from "vitest";
import fc from "fast-check";
import { createHash } from "node:crypto";
import { peSection, peTextSection, readPeSections, requirePeSection, ukiBootDigest, ukiCmdline, ukiOsRelease, ukiUname } from "../../shared/pe.ts";
import { CfsError } from "../../shared/errors.ts";

/** Build a minimal PE image: DOS header, PE header, optional header, section table, data. */
function buildPe(sections: { name: string; data: Uint8Array; virtualSize?: number }[], o: { optSize?: number; peOffset?: number } = {}): Uint8Array {
  const peOffset = o.peOffset ?? 0x80;
  const optSize = o.optSize ?? 0xf0;
  const table = peOffset + 4 + 20 + optSize;
  let dataOff = table + sections.length * 40;
  dataOff = (dataOff + 511) & ~511;
  const placed = sections.map((s) => {
    const at = dataOff;
    dataOff += (s.data.length + 511) & ~511;
    return { ...s, at };
  });
  const buf = new Uint8Array(Math.max(dataOff, table + sections.length * 40));
  const v = new DataView(buf.buffer);
  buf[0] = 0x4d;
  buf[1] = 0x5a;
  v.setUint32(0x3c, peOffset, true);
  buf.set([0x50, 0x45, 0, 0], peOffset);
  v.setUint16(peOffset + 4, 0x8664, true); // machine
  v.setUint16(peOffset + 6, sections.length, true);
  v.setUint16(peOffset + 20, optSize, true);
  placed.forEach((s, i) => {
    const h = table + i * 40;
    for (let k = 0; k < s.name.length; k++) buf[h + k] = s.name.charCodeAt(k);
    v.setUint32(h + 8, s.virtualSize ?? s.data.length, true);
    v.setUint32(h + 12, 0x1000 * (i + 1), true);
    v.setUint32(h + 16, (s.data.length + 511) & ~511, true);
    v.setUint32(h + 20, s.at, true);
    v.setUint32(h + 36, 0x40000040, true);
    buf.set(s.data, s.at);
  });
  return buf;
}

const enc = (s: string) => new TextEncoder().encode(s);
const KERNEL = new Uint8Array(3000).map((_, i) => (i * 7) & 0xff);
const INITRD = new Uint8Array(1234).map((_, i) => (i * 13) & 0xff);
const uki = buildPe([
  { name: ".osrel", data: enc('NAME="Fedora Linux"\nVERSION_ID=42\n\0') },
  { name: ".cmdline", data: enc("rw composefs=abc quiet\n\0\0") },
  { name: ".uname", data: enc("6.12.0-1.fc42.x86_64\n") },
  { name: ".linux", data: KERNEL },
  { name: ".initrd", data: INITRD },
]);

function errorOf(f: () => unknown): CfsError {
  try {
    f();
  } catch (e) {
    if (e instanceof CfsError) return e;
    throw e;
  }
  throw new Error("expected a CfsError");
}

describe("PE sections", () => {
  test("section table and data", () => {
    const s = readPeSections(uki);
    expect(s.map((x) => x.name)).toEqual([".osrel", ".cmdline", ".uname", ".linux", ".initrd"]);
    expect(s[3]!.virtualSize).toBe(3000);
    expect(s[3]!.sizeOfRawData).toBe(3072);
    expect(Buffer.from(requirePeSection(uki, ".linux")).equals(Buffer.from(KERNEL))).toBe(true);
    expect(peSection(uki, ".sbat")).toBeNull();
  });

  test("UKI text sections", () => {
    expect(ukiCmdline(uki)).toBe("rw composefs=abc quiet");
    expect(ukiOsRelease(uki)).toBe('NAME="Fedora Linux"\nVERSION_ID=42\n');
    expect(ukiUname(uki)).toBe("6.12.0-1.fc42.x86_64");
  });

  test("data is virtual_size bytes, not size_of_raw_data", () => {
    // virtual size smaller than the data written: only that many bytes count
    const img = buildPe([{ name: ".linux", data: enc("ABCDEFGH"), virtualSize: 3 }, { name: ".initrd", data: enc("xy") }]);
    expect(new TextDecoder().decode(requirePeSection(img, ".linux"))).toBe("ABC");
    expect(ukiBootDigest(img)).toBe(createHash("sha256").update("ABCxy").digest("hex"));
  });

  test("boot digest = sha256(.linux ‖ .initrd)", () => {
    expect(ukiBootDigest(uki)).toBe(createHash("sha256").update(KERNEL).update(INITRD).digest("hex"));
  });

  test("the first section of a name wins (multi-profile UKIs)", () => {
    const img = buildPe([{ name: ".cmdline", data: enc("first") }, { name: ".profile", data: enc("ID=x") }, { name: ".cmdline", data: enc("second") }]);
    expect(ukiCmdline(img)).toBe("first");
  });

  test.each([
    ["empty file", new Uint8Array(0), "offset 0", "truncated: DOS header needs 64 bytes, file has 0"],
    ["no MZ", new Uint8Array(64), "offset 0", "not a PE file (no MZ signature)"],
    ["PE offset past the end", (() => { const b = uki.slice(0, 200); new DataView(b.buffer).setUint32(0x3c, 100000, true); return b; })(), "offset 100000", "truncated: PE header"],
    ["no PE signature", (() => { const b = uki.slice(); b[0x80] = 0; return b; })(), "offset 128", "no PE signature"],
    ["section table truncated", uki.slice(0, 0x80 + 24 + 0xf0 + 50), "offset 392", "truncated: section table of 5 entries"],
    ["huge optional header", (() => { const b = uki.slice(); new DataView(b.buffer).setUint16(0x80 + 20, 0xffff, true); return b; })(), "offset", "truncated: section table"],
  ])("error: %s", (_n, img, input, what) => {
    const e = errorOf(() => readPeSections(img, "x.efi"));
    expect(e.input).toContain(input);
    expect(e.input.startsWith("x.efi")).toBe(true);
    expect(e.what).toContain(what);
  });

  test("section data past the end, missing sections, bad UTF-8", () => {
    const b = uki.slice();
    const linux = readPeSections(b).find((s) => s.name === ".linux")!;
    new DataView(b.buffer).setUint32(linux.headerOffset + 8, 0x7fffffff, true);
    expect(errorOf(() => peSection(b, ".linux", "x.efi")).what).toContain("reach past the end of the file");
    expect(errorOf(() => ukiBootDigest(buildPe([{ name: ".linux", data: KERNEL }]), "x.efi")).message).toBe("x.efi: no '.initrd' section");
    expect(errorOf(() => peTextSection(buildPe([{ name: ".osrel", data: new Uint8Array([0xff, 0xfe]) }]), ".osrel", "x.efi")).what).toBe("section '.osrel' is not UTF-8");
  });

  test("fuzz: random bytes never throw anything but CfsError", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
        try {
          readPeSections(bytes);
          peSection(bytes, ".linux");
        } catch (e) {
          expect(e).toBeInstanceOf(CfsError);
        }
      }),
      { numRuns: 500 },
    );
  });

  test("fuzz: mutated valid UKIs never read out of bounds or throw anything but CfsError", () => {
    const small = buildPe([{ name: ".cmdline", data: enc("composefs=x") }, { name: ".linux", data: enc("K") }, { name: ".initrd", data: enc("I") }], { optSize: 16 });
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(small.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }), fc.nat(small.length), (edits, cut) => {
        const b = small.slice(0, Math.max(cut, 64));
        for (const [at, val] of edits) if (at < b.length) b[at] = val;
        try {
          for (const s of readPeSections(b)) {
            const d = peSection(b, s.name);
            if (d !== null) expect(d.byteOffset + d.byteLength).toBeLessThanOrEqual(b.byteOffset + b.byteLength);
          }
          ukiCmdline(b);
        } catch (e) {
          expect(e).toBeInstanceOf(CfsError);
        }
      }),
      { numRuns: 1000 },
    );
  });
});
