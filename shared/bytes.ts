// Byte-string conventions used throughout cfsboot.
//
// File names, paths and xattr names in composefs are arbitrary bytes (not
// necessarily UTF-8). cfsboot keeps them as *byte strings* (`BStr`): JS
// strings whose every UTF-16 code unit is one byte (0..255), i.e. the
// "latin1"/"binary" decoding of the bytes. This gives byte-order comparison
// with plain `<` / `Array.prototype.sort()`, cheap Map keys, and exact round
// trips. Convert only at the edges: `bstr()` from bytes, `bytesOf()` back.
// Xattr values, inline contents and symlink targets stay `Uint8Array`.

export type BStr = string;

/** Bytes → byte string (one code unit per byte). */
export function bstr(bytes: Uint8Array): BStr {
  // Buffer's "latin1" is exact; TextDecoder("latin1") would be windows-1252.
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("latin1");
}

/** Byte string → bytes. */
export function bytesOf(s: BStr): Uint8Array {
  return new Uint8Array(Buffer.from(s, "latin1"));
}

/** A UTF-8 text string → byte string (e.g. a name typed by a user). */
export function bstrFromUtf8(s: string): BStr {
  return Buffer.from(s, "utf8").toString("latin1");
}

/** A byte string shown to a human: UTF-8 where valid, `\xHH` elsewhere. */
export function displayBstr(s: BStr): string {
  const bytes = Buffer.from(s, "latin1");
  const text = bytes.toString("utf8");
  if (!text.includes("\uFFFD") && Buffer.from(text, "utf8").equals(bytes)) {
    return text.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
  }
  let out = "";
  for (const b of bytes) out += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, "0")}`;
  return out;
}

/** Byte-order comparison of two byte strings (-1, 0, 1). */
export function compareBstr(a: BStr, b: BStr): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Lexicographic comparison of two byte arrays. */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  return Buffer.compare(a, b);
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && Buffer.compare(a, b) === 0;
}

const HEX = /^[0-9a-f]*$/;

export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
}

/** Lower-case hex → bytes, or null when `s` is not even-length lower-case hex. */
export function fromHex(s: string): Uint8Array | null {
  if (s.length % 2 !== 0 || !HEX.test(s)) return null;
  return new Uint8Array(Buffer.from(s, "hex"));
}

export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

export const utf8 = {
  encode: (s: string): Uint8Array => new TextEncoder().encode(s),
  decode: (b: Uint8Array): string => new TextDecoder().decode(b),
};
