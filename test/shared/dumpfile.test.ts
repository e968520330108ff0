// shared/dumpfile.ts parser against the upstream vectors (../shared/vectors),
// the C should-fail inputs, and one malformed input per rule.

import { existsSync, readdirSync, readFileSync } from "node:fs";
import { gunzipSync } from "node:zlib";
import { describe, expect, test } from "vitest";
import { CfsError } from "../../shared/errors.ts";
import { type DumpfileMode, parseDumpfile, writeDumpfile } from "../../shared/dumpfile.ts";
import { lookup, type Dir, type Leaf, type Regular } from "../../shared/tree.ts";
import { vectorsDir } from "../helpers/env.ts";
import { diffTrees } from "../helpers/tree-compare.ts";

const MODES: DumpfileMode[] = ["c", "c-strict", "strict"];

function read(rel: string): Uint8Array {
  const b = readFileSync(`${vectorsDir}/${rel}`);
  return new Uint8Array(rel.endsWith(".gz") ? gunzipSync(b) : b);
}

function tsv(rel: string): Record<string, string>[] {
  const [head, ...rows] = readFileSync(`${vectorsDir}/${rel}`, "utf8").trimEnd().split("\n");
  const cols = head!.split("\t");
  return rows.map((r) => Object.fromEntries(r.split("\t").map((v, i) => [cols[i]!, v])));
}

function parseError(text: Uint8Array | string, mode: DumpfileMode): CfsError {
  const bytes = typeof text === "string" ? new Uint8Array(Buffer.from(text, "latin1")) : text;
  try {
    parseDumpfile(bytes, { mode });
  } catch (e) {
    if (e instanceof CfsError) return e;
    throw new Error(`not a CfsError: ${String(e)}`);
  }
  throw new Error(`accepted in ${mode} mode`);
}

/** V1 images mark whiteout directories with these; C's canonical dump shows them. */
const V1_MARKERS = ["trusted.overlay.opaque", "user.overlay.opaque"];

const v1Inputs = readdirSync(`${vectorsDir}/erofs-v1`).filter((f) => /^a\d+-[^.]+\.dump$/.test(f)).sort();
const cAssets = tsv("c-assets/expected.tsv");
const manifest = tsv("erofs-v1/manifest.tsv");

describe("vectors", () => {
  test("the vector folders are where the tests expect them", () => {
    expect(v1Inputs.length).toBe(33);
    expect(cAssets.length).toBe(14);
    expect(manifest.length).toBe(33);
  });

  // Input and canonical dumps describe the same tree: checks the parser on
  // two spellings (and the C-style hardlink lines of composefs-info dump).
  const pairs: [string, string][] = [];
  for (const f of v1Inputs) {
    const n = f.replace(/\.dump$/, "");
    pairs.push([`erofs-v1/${f}`, `erofs-v1/${n}.canonical.dump`]);
    if (existsSync(`${vectorsDir}/erofs-v1/${n}.v0.canonical.dump`)) pairs.push([`erofs-v1/${f}`, `erofs-v1/${n}.v0.canonical.dump`]);
  }
  for (const row of cAssets) pairs.push([`c-assets/${row.name}`, `c-assets/${row.canonical_dump}`]);
  for (const n of ["empty", "simple"]) {
    for (const v of ["v0", "v1", "v2"]) pairs.push([`erofs-v2/${n}.dump`, `erofs-v2/${n}.${v}.canonical.dump`]);
  }
  pairs.push(["erofs-v2/special_v1-trimmed.dump", "erofs-v2/special_v1-trimmed.v1.canonical.dump"]);

  test.each(pairs)("%s parses in c mode and equals %s", (input, canonical) => {
    const a = parseDumpfile(read(input), { mode: "c" });
    const b = parseDumpfile(read(canonical), { mode: "c" });
    expect(diffTrees(a, b, { ignoreXattr: V1_MARKERS })).toEqual([]);
    // What we write describes the same tree again (the big OS trees only in
    // one case, to keep this file fast).
    if (!input.endsWith(".gz") || input.includes("config.dump")) {
      const again = parseDumpfile(writeDumpfile(a), { mode: "c" });
      expect(diffTrees(a, again)).toEqual([]);
    }
  });

  test("every .dump and .canonical.dump in the vector folders was covered", () => {
    const all: string[] = [];
    for (const d of ["erofs-v1", "erofs-v2", "c-assets"]) {
      for (const f of readdirSync(`${vectorsDir}/${d}`)) if (/\.dump(\.gz)?$/.test(f)) all.push(`${d}/${f}`);
    }
    const covered = new Set(pairs.flat());
    expect(all.filter((f) => !covered.has(f))).toEqual([]);
  });

  // Why a non-portable vector is beyond composefs-rs, and how strict mode says so.
  const NOT_PORTABLE: Record<string, RegExp | "accepted, NLINK ignored"> = {
    "a03-inline-large": /^field CONTENT: inline content of \d+ bytes exceeds the maximum of 512$/,
    "a06-external-c-payloads": /^field PAYLOAD: .*(not an object path|not the object path of DIGEST)/,
    "a08-symlinks-long": /^field PAYLOAD: symlink target of \d+ bytes exceeds the maximum of 1024$/,
    "a11-hardlink-late-target": /^field PAYLOAD: hardlink target .* does not exist \(it must appear on an earlier line\)$/,
    "a12-nlink-fields": "accepted, NLINK ignored",
    "a14-devices-bigrdev": /^field RDEV: \d+ does not fit in 32 bits$/,
  };
  const cStrictRejects = new Set(tsv("erofs-v1/checks.tsv").filter((r) => r.strict_parse !== "same").map((r) => r.name));

  test.each(manifest.filter((r) => r.portable === "1"))("portable $name parses in strict mode to the same tree", (row) => {
    const input = read(`erofs-v1/${row.name}.dump`);
    if (cStrictRejects.has(row.name!)) {
      // Strict includes C's CFS_PARSE_STRICT checks (a29: no final newline).
      expect(parseError(input, "strict").what).toMatch(/missing newline at the end of the file/);
      const fixed = new Uint8Array([...input, 0x0a]);
      expect(diffTrees(parseDumpfile(fixed, { mode: "c" }), parseDumpfile(fixed, { mode: "strict" }))).toEqual([]);
      return;
    }
    expect(diffTrees(parseDumpfile(input, { mode: "c" }), parseDumpfile(input, { mode: "strict" }))).toEqual([]);
  });

  test.each(manifest.filter((r) => r.portable === "0"))("non-portable $name is refused by strict mode for its reason", (row) => {
    const want = NOT_PORTABLE[row.name!];
    expect(want, `no expectation recorded for ${row.name}`).toBeDefined();
    const input = read(`erofs-v1/${row.name}.dump`);
    if (want === "accepted, NLINK ignored") {
      const c = parseDumpfile(input, { mode: "c" });
      const strict = parseDumpfile(input, { mode: "strict" });
      const diffs = diffTrees(c, strict);
      expect(diffs.length).toBeGreaterThan(0);
      expect(diffs.every((d) => /: nlink \d+ \(a\) vs \d+ \(b\)$/.test(d))).toBe(true);
      expect(diffTrees(c, strict, { ignoreNlink: true })).toEqual([]);
      return;
    }
    const err = parseError(input, "strict");
    expect(err.input).toMatch(/^line \d+$/);
    expect(err.what).toMatch(want as RegExp);
  });

  // checks.tsv strict_parse: what C does with CFS_PARSE_STRICT=1.
  const strictRows = new Map<string, string>();
  for (const r of tsv("erofs-v1/checks.tsv")) strictRows.set(`erofs-v1/${r.name}.dump`, r.strict_parse!);
  for (const r of tsv("c-assets/checks.tsv")) strictRows.set(`c-assets/${r.name}`, r.strict_parse!);
  const STRICT_SPIRIT: [RegExp, RegExp][] = [
    [/Missing trailing newline/, /^missing newline at the end of the file$/],
    [/Invalid symlink size/, /^field SIZE: \d+ does not match the symlink target length \d+$/],
    [/Non-zero devnum on non-device/, /^field RDEV: a .* cannot have a device number/],
  ];
  test.each([...strictRows])("c-strict on %s: %s", (file, result) => {
    const input = read(file);
    if (result === "same") {
      expect(diffTrees(parseDumpfile(input, { mode: "c" }), parseDumpfile(input, { mode: "c-strict" }))).toEqual([]);
      return;
    }
    expect(result).toMatch(/^rejected: /);
    const spirit = STRICT_SPIRIT.find(([c]) => c.test(result));
    expect(spirit, `no mapping for ${result}`).toBeDefined();
    const err = parseError(input, "c-strict");
    expect(err.input).toMatch(/^line \d+$/);
    expect(err.what).toMatch(spirit![1]);
    // Non-strict C accepts it.
    expect(() => parseDumpfile(input, { mode: "c" })).not.toThrow();
  });

  test("C semantics: NLINK fields kept, rdev low 32 bits, late hardlink targets", () => {
    const nl = parseDumpfile(read("erofs-v1/a12-nlink-fields.dump"), { mode: "c" });
    const explicit: number[] = [];
    const stack: Dir[] = [nl];
    while (stack.length > 0) {
      for (const c of stack.pop()!.entries.values()) {
        if (c.kind === "dir") stack.push(c);
        else if (c.nlink !== undefined) explicit.push(c.nlink);
      }
    }
    expect(explicit.length).toBeGreaterThan(0);

    const big = parseDumpfile(read("erofs-v1/a14-devices-bigrdev.dump"), { mode: "c" });
    const text = Buffer.from(read("erofs-v1/a14-devices-bigrdev.dump")).toString("latin1");
    const line = text.split("\n").find((l) => / [26]0\d{3,4} /.test(l) && BigInt(l.split(" ")[6]!) >= 2n ** 32n)!;
    const [path, , , , , , rdev] = line.split(" ");
    const dev = lookup(big, path!) as Leaf;
    expect(dev.content).toMatchObject({ rdev: Number(BigInt(rdev!) & 0xffffffffn) });

    const late = parseDumpfile(read("erofs-v1/a11-hardlink-late-target.dump"), { mode: "c" });
    const lines = Buffer.from(read("erofs-v1/a11-hardlink-late-target.dump")).toString("latin1").trimEnd().split("\n");
    const hl = lines.find((l) => l.split(" ")[2]!.startsWith("@"))!.split(" ");
    expect(lookup(late, hl[0]!)).toBe(lookup(late, hl[8]!));
    // C numbers such inodes at the full line: Leaf.primaryPath says where it was.
    const full = new Set(lines.filter((l) => !l.split(" ")[2]!.startsWith("@")).map((l) => l.split(" ")[0]!));
    const withPrimary: string[] = [];
    for (const l of lines) {
      const node = lookup(late, l.split(" ")[0]!);
      if (node?.kind === "leaf" && node.primaryPath !== undefined && !withPrimary.includes(node.primaryPath)) withPrimary.push(node.primaryPath);
    }
    expect(withPrimary.sort()).toEqual(["/z/c-target", "/z/target"]);
    for (const p of withPrimary) expect(full.has(p)).toBe(true);
    // Strict mode and in-order files leave it unset.
    const inOrder = parseDumpfile(read("erofs-v1/a09-hardlinks.dump"), { mode: "c" });
    const stack2: Dir[] = [inOrder];
    while (stack2.length > 0) {
      for (const c of stack2.pop()!.entries.values()) {
        if (c.kind === "dir") stack2.push(c);
        else expect(c.primaryPath).toBeUndefined();
      }
    }
  });
});

describe("C should-fail inputs", () => {
  const expected = tsv("c-assets/should-fail/expected-errors.tsv");
  // Our wording for what C reports (default mode).
  const SPIRIT: Record<string, RegExp> = {
    "should-fail-big-inline.dump": /^field CONTENT: inline content of 5004 bytes exceeds the maximum of 5000$/,
    "should-fail-dir-hardlink.dump": /^field MODE: a directory cannot be a hardlink$/,
    "should-fail-dot-name.dump": /^field PATH: path "\/\." has a "\." component$/,
    "should-fail-dotdot-name.dump": /^field PATH: path "\/\.\." has a "\.\." component$/,
    "should-fail-empty-link-name.dump": /^field PAYLOAD: a symlink needs its target here$/,
    "should-fail-empty-name.dump": /^field PATH: path "\/\/" has an empty component/,
    "should-fail-empty-xattr-key.dump": /^field XATTR 1: empty xattr key$/,
    "should-fail-honggfuzz-long-xattr.dump": /^field XATTR \d+: xattrs exceed the per-inode maximum of 32767 bytes$/,
    "should-fail-long-link.dump": /^field PAYLOAD: symlink target of \d+ bytes exceeds the maximum of 4095$/,
    "should-fail-long-xattr-key.dump": /^field XATTR: \d+ bytes of xattrs on one line exceed the maximum of 65535$/,
    "should-fail-long-xattr-value.dump": /^field MODE: 644 has no valid file type/,
    "should-fail-no-ftype.dump": /^field MODE: 0 has no valid file type/,
    "should-fail-self-hardlink.dump": /^field PAYLOAD: hardlink \/037blockdev refers to itself$/,
    "should-fail-too-big.dump": /^field SIZE: 9500000000000000 exceeds the maximum file size/,
  };

  test("all 14 inputs are listed", () => {
    const files = readdirSync(`${vectorsDir}/c-assets/should-fail`).filter((f) => f.endsWith(".dump")).sort();
    expect(files).toEqual(expected.map((r) => r.file).sort());
    expect(Object.keys(SPIRIT).sort()).toEqual(files);
  });

  test.each(expected)("$file is rejected in every mode, naming the line ($default_error)", (row) => {
    const input = read(`c-assets/should-fail/${row.file}`);
    for (const mode of MODES) {
      const err = parseError(input, mode);
      expect(err.input, mode).toMatch(/^line \d+$/);
      expect(err.message).toBe(`${err.input}: ${err.what}`);
      if (mode === "c" || (mode === "c-strict" && row.strict_error !== "Missing trailing newline")) {
        expect(err.what, mode).toMatch(SPIRIT[row.file!]!);
      } else if (mode === "c-strict") {
        expect(err.what).toBe("missing newline at the end of the file");
      }
    }
  });
});

// ---- one malformed input per rule --------------------------------------------------

const ROOT = "/ 0 40755 2 0 0 0 0.0 - - -\n";
const D64 = "ab".repeat(32);
const OBJ = `ab/${"ab".repeat(31)}`;

interface Bad {
  name: string;
  text: string;
  line: number;
  what: RegExp;
  /** Modes that must reject it with this message (default all). */
  modes?: DumpfileMode[];
  /** The other modes accept it (default true). */
  othersAccept?: boolean;
}

const BAD: Bad[] = [
  { name: "bad octal mode", text: ROOT + "/f 0 100684 1 0 0 0 0.0 - - -\n", line: 2, what: /^field MODE: "100684" is not an octal number$/ },
  { name: "unknown file type", text: ROOT + "/f 0 170644 1 0 0 0 0.0 - - -\n", line: 2, what: /^field MODE: 170644 has no valid file type/ },
  { name: "two spaces", text: ROOT + "/f 0 100644  1 0 0 0 0.0 - - -\n", line: 2, what: /^field NLINK is empty \(two spaces in a row\?\)$/ },
  { name: "two spaces before an xattr", text: ROOT + "/f 0 100644 1 0 0 0 0.0 - - -  user.a=b\n", line: 2, what: /^field XATTR 1 is empty/ },
  { name: "escape \\q", text: ROOT + "/f\\q 0 100644 1 0 0 0 0.0 - - -\n", line: 2, what: /^field PATH: unsupported escape "\\q"$/ },
  { name: "escape \\x4 at the end", text: ROOT + "/f\\x4 0 100644 1 0 0 0 0.0 - - -\n", line: 2, what: /^field PATH: incomplete hex escape "\\x4"$/ },
  { name: "escape \\xZZ", text: ROOT + "/f 2 100644 1 0 0 0 0.0 - \\xZZ -\n", line: 2, what: /^field CONTENT: invalid hex escape "\\xZZ"$/ },
  { name: "backslash at the end", text: ROOT + "/f 0 100644 1 0 0 0 0.0 - - - user.a=b\\\n", line: 2, what: /^field XATTR 1: escape "\\" at the end of the field$/ },
  { name: "nsec ≥ 1e9", text: ROOT + "/f 0 100644 1 0 0 0 1.1000000000 - - -\n", line: 2, what: /^field MTIME: nanoseconds must be < 1000000000 \(got 1000000000\)$/ },
  { name: "mtime without dot", text: ROOT + "/f 0 100644 1 0 0 0 17 - - -\n", line: 2, what: /^field MTIME: "17" is not SECONDS\.NANOSECONDS$/ },
  { name: "negative mtime in strict mode", text: ROOT + "/f 0 100644 1 0 0 0 -5.0 - - -\n", line: 2, what: /^field MTIME: "-5\.0" is not SECONDS\.NANOSECONDS$/, modes: ["strict"] },
  { name: "missing fields", text: ROOT + "/f 0 100644 1 0 0 0 0.0\n", line: 2, what: /^field PAYLOAD is missing \(the line has 8 of 11 fields\)$/ },
  { name: "missing DIGEST in strict mode", text: ROOT + "/f 0 100644 1 0 0 0 0.0 - -\n", line: 2, what: /^field DIGEST is missing/, modes: ["strict"] },
  { name: "missing DIGEST of an external file", text: ROOT + `/f 9 100644 1 0 0 0 0.0 ${OBJ} -\n`, line: 2, what: /^field DIGEST is missing/ },
  { name: "non-numeric size", text: ROOT + "/f 1k 100644 1 0 0 0 0.0 - - -\n", line: 2, what: /^field SIZE: "1k" is not a decimal number$/ },
  { name: "uid ≥ 2^32", text: ROOT + "/f 0 100644 1 4294967296 0 0 0.0 - - -\n", line: 2, what: /^field UID: 4294967296 is out of range \(maximum 4294967295\)$/ },
  { name: "size ≥ 2^64", text: ROOT + "/f 18446744073709551616 100644 1 0 0 0 0.0 - - -\n", line: 2, what: /^field SIZE: \d+ does not fit in 64 bits$/ },
  { name: "'.' component", text: ROOT + "/a 0 40755 2 0 0 0 0.0 - - -\n/a/./b 0 100644 1 0 0 0 0.0 - - -\n", line: 3, what: /^field PATH: path "\/a\/\.\/b" has a "\." component$/ },
  { name: "'..' component", text: ROOT + "/a/.. 0 40755 2 0 0 0 0.0 - - -\n", line: 2, what: /^field PATH: path "\/a\/\.\." has a "\.\." component$/ },
  { name: "'//' in a path", text: ROOT + "/a 0 40755 2 0 0 0 0.0 - - -\n/a//b 0 100644 1 0 0 0 0.0 - - -\n", line: 3, what: /^field PATH: path "\/a\/\/b" has an empty component/ },
  { name: "trailing '/'", text: ROOT + "/a/ 0 40755 2 0 0 0 0.0 - - -\n", line: 2, what: /has an empty component/ },
  { name: "relative path", text: ROOT + "a 0 100644 1 0 0 0 0.0 - - -\n", line: 2, what: /^field PATH: path "a" is not absolute$/ },
  { name: "'-' as a path", text: ROOT + "- 0 100644 1 0 0 0 0.0 - - -\n", line: 2, what: /^field PATH: path "-" is not absolute$/ },
  { name: "parent missing", text: ROOT + "/a/b 0 100644 1 0 0 0 0.0 - - -\n", line: 2, what: /^field PATH: parent directory \/a does not exist \(it must appear on an earlier line\)$/ },
  { name: "parent is a file", text: ROOT + "/a 0 100644 1 0 0 0 0.0 - - -\n/a/b 0 100644 1 0 0 0 0.0 - - -\n", line: 3, what: /^field PATH: parent \/a is not a directory$/ },
  { name: "duplicate path", text: ROOT + "/a 0 100644 1 0 0 0 0.0 - - -\n/a 0 100644 1 0 0 0 0.0 - - -\n", line: 3, what: /^field PATH: duplicate path \/a$/ },
  { name: "duplicate via a hardlink line", text: ROOT + "/a 0 100644 1 0 0 0 0.0 - - -\n/a 0 @100644 - - - - 0.0 /a - -\n", line: 3, what: /refers to itself|duplicate path/ },
  { name: "second root", text: ROOT + ROOT, line: 2, what: /^field PATH: a second root directory \/ \(duplicate path\)$/ },
  { name: "first line not the root", text: "/a 0 40755 2 0 0 0 0.0 - - -\n", line: 1, what: /comes before the root directory \/ \(the first line must be \/\)$/ },
  { name: "root not a directory", text: "/ 0 100644 1 0 0 0 0.0 - - -\n", line: 1, what: /^field MODE: the root \/ must be a directory, not a regular file$/ },
  { name: "empty file", text: "", line: 1, what: /^the dumpfile is empty/ },
  { name: "empty line", text: ROOT + "\n/a 0 100644 1 0 0 0 0.0 - - -\n", line: 2, what: /^empty line$/ },
  { name: "CRLF line endings", text: ROOT.replace("\n", "\r\n"), line: 1, what: /^field DIGEST: "-\\x0d" is not 64.* \(CRLF line endings\?\)$/ },
  { name: "comment line", text: ROOT + "# comment\n", line: 2, what: /^field PATH: path "#" is not absolute$/ },
  { name: "NUL byte", text: ROOT + "/a\0b 0 100644 1 0 0 0 0.0 - - -\n", line: 2, what: /^NUL byte at column 3$/ },
  { name: "\\x00 in a path", text: ROOT + "/a\\x00b 0 100644 1 0 0 0 0.0 - - -\n", line: 2, what: /^field PATH: path .* contains a NUL byte$/ },
  { name: "\\x00 in an xattr key", text: ROOT + "/a 0 100644 1 0 0 0 0.0 - - - user.\\x00=1\n", line: 2, what: /^field XATTR 1: xattr key contains a NUL byte$/ },
  { name: "long names are shortened in messages", text: ROOT + `/${"n".repeat(250)}/x 0 100644 1 0 0 0 0.0 - - -\n`, line: 2, what: /^field PATH: parent directory \/n{60,100}…n{20,60} does not exist/ },
  { name: "name > 255 bytes", text: ROOT + `/${"n".repeat(256)} 0 100644 1 0 0 0 0.0 - - -\n`, line: 2, what: /has a name of 256 bytes \(maximum 255\)$/ },
  { name: "path > 4096 bytes", text: ROOT + `/${("d".repeat(200) + "/").repeat(21)}x 0 100644 1 0 0 0 0.0 - - -\n`, line: 2, what: /^field PATH: path is 4223 bytes long \(maximum 4096\)$/ },
  { name: "oversize inline (C)", text: ROOT + `/f 5001 100644 1 0 0 0 0.0 - ${"x".repeat(5001)} -\n`, line: 2, what: /^field CONTENT: inline content of 5001 bytes exceeds the maximum of (5000|512)$/ },
  { name: "oversize inline (strict)", text: ROOT + `/f 513 100644 1 0 0 0 0.0 - ${"x".repeat(513)} -\n`, line: 2, what: /^field CONTENT: inline content of 513 bytes exceeds the maximum of 512$/, modes: ["strict"] },
  { name: "content length ≠ SIZE", text: ROOT + "/f 4 100644 1 0 0 0 0.0 - abc -\n", line: 2, what: /^field CONTENT: length 3 does not match SIZE 4$/ },
  { name: "inline + digest", text: ROOT + `/f 3 100644 1 0 0 0 0.0 - abc ${D64}\n`, line: 2, what: /^field DIGEST: a file with inline content cannot have a digest$/ },
  { name: "payload + content (strict)", text: ROOT + `/f 3 100644 1 0 0 0 0.0 ${OBJ} abc -\n`, line: 2, what: /^field PAYLOAD: a file cannot have both a payload and inline content$/, modes: ["strict"] },
  { name: "digest without payload (strict)", text: ROOT + `/f 9 100644 1 0 0 0 0.0 - - ${D64}\n`, line: 2, what: /^field DIGEST: a file without a payload cannot have a digest$/, modes: ["strict"] },
  { name: "payload on an empty file (strict)", text: ROOT + `/f 0 100644 1 0 0 0 0.0 ${OBJ} - -\n`, line: 2, what: /^field PAYLOAD: an empty file cannot have a payload$/, modes: ["strict"] },
  { name: "free-form payload (strict)", text: ROOT + "/f 9 100644 1 0 0 0 0.0 usr/bin/x.file - -\n", line: 2, what: /^field PAYLOAD: "usr\/bin\/x\.file" is not an object path/, modes: ["strict"] },
  { name: "payload of another digest (strict)", text: ROOT + `/f 9 100644 1 0 0 0 0.0 ${OBJ} - ${"cd".repeat(32)}\n`, line: 2, what: /^field PAYLOAD: .* is not the object path of DIGEST cdcd/, modes: ["strict"] },
  { name: "short digest", text: ROOT + `/f 9 100644 1 0 0 0 0.0 ${OBJ} - abcd\n`, line: 2, what: /^field DIGEST: "abcd" is not 64/ },
  { name: "sha512 digest in C mode", text: ROOT + `/f 9 100644 1 0 0 0 0.0 ab/${"ab".repeat(63)} - ${"ab".repeat(64)}\n`, line: 2, what: /^field DIGEST: .* is not 64 hex digits \(sha256\)$/, modes: ["c", "c-strict"] },
  { name: "file larger than 2^53", text: ROOT + "/f 9007199254740993 100644 1 0 0 0 0.0 - - -\n", line: 2, what: /^field SIZE: 9007199254740993 exceeds the maximum file size 9007199254740992$/ },
  { name: "content on a directory", text: ROOT + "/d 3 40755 2 0 0 0 0.0 - abc -\n", line: 2, what: /^field CONTENT: a directory cannot have inline content$/ },
  { name: "content on a symlink", text: ROOT + "/l 1 120777 1 0 0 0 0.0 t t -\n", line: 2, what: /^field CONTENT: a symlink cannot have inline content$/ },
  { name: "digest on a fifo", text: ROOT + `/p 0 10644 1 0 0 0 0.0 - - ${D64}\n`, line: 2, what: /^field DIGEST: a fifo cannot have a digest$/ },
  { name: "payload on a device (strict)", text: ROOT + "/c 0 20644 1 0 0 5 0.0 x - -\n", line: 2, what: /^field PAYLOAD: a character device cannot have a payload$/, modes: ["strict"] },
  { name: "symlink without target", text: ROOT + "/l 0 120777 1 0 0 0 0.0 - - -\n", line: 2, what: /^field PAYLOAD: a symlink needs its target here$/ },
  { name: "symlink > 1024 (strict)", text: ROOT + `/l 1025 120777 1 0 0 0 0.0 ${"t".repeat(1025)} - -\n`, line: 2, what: /^field PAYLOAD: symlink target of 1025 bytes exceeds the maximum of 1024$/, modes: ["strict"] },
  { name: "symlink > 4095", text: ROOT + `/l 4096 120777 1 0 0 0 0.0 ${"t".repeat(4096)} - -\n`, line: 2, what: /exceeds the maximum of (4095|1024)$/ },
  { name: "symlink SIZE mismatch (strict checks)", text: ROOT + "/l 9 120777 1 0 0 0 0.0 target - -\n", line: 2, what: /^field SIZE: 9 does not match the symlink target length 6$/, modes: ["c-strict", "strict"] },
  { name: "rdev on a file (strict checks)", text: ROOT + "/f 0 100644 1 0 0 7 0.0 - - -\n", line: 2, what: /^field RDEV: a regular file cannot have a device number \(7\)$/, modes: ["c-strict", "strict"] },
  { name: "rdev ≥ 2^32 (strict)", text: ROOT + "/c 0 20644 1 0 0 4294967296 0.0 - - -\n", line: 2, what: /^field RDEV: 4294967296 does not fit in 32 bits$/, modes: ["strict"] },
  { name: "missing trailing newline (strict checks)", text: ROOT + "/f 0 100644 1 0 0 0 0.0 - - -", line: 2, what: /^missing newline at the end of the file$/, modes: ["c-strict", "strict"] },
  { name: "trailing space (strict)", text: ROOT + "/f 0 100644 1 0 0 0 0.0 - - - \n", line: 2, what: /^field XATTR 1 is empty/, modes: ["strict"] },
  { name: "hardlink to a directory", text: ROOT + "/d 0 40755 2 0 0 0 0.0 - - -\n/h 0 @100644 1 0 0 0 0.0 /d - -\n", line: 3, what: /^field PAYLOAD: hardlink target \/d is a directory$/ },
  { name: "hardlink to the root", text: ROOT + "/h 0 @100644 1 0 0 0 0.0 / - -\n", line: 2, what: /^field PAYLOAD: hardlink target \/ is a directory$/ },
  { name: "hardlinked directory line", text: ROOT + "/f 0 100644 1 0 0 0 0.0 - - -\n/h 0 @40755 1 0 0 0 0.0 /f - -\n", line: 3, what: /^field MODE: a directory cannot be a hardlink$/ },
  { name: "hardlink to itself", text: ROOT + "/h 0 @100644 1 0 0 0 0.0 /h - -\n", line: 2, what: /^field PAYLOAD: hardlink \/h refers to itself$/ },
  { name: "hardlink to a missing path", text: ROOT + "/h 0 @100644 1 0 0 0 0.0 /nope - -\n", line: 2, what: /^field PAYLOAD: hardlink target \/nope does not exist/ },
  { name: "hardlink without target", text: ROOT + "/h 0 @100644 1 0 0 0 0.0 - - -\n", line: 2, what: /^field PAYLOAD: a hardlink needs its target path here$/ },
  { name: "hardlink target not canonical", text: ROOT + "/f 0 100644 1 0 0 0 0.0 - - -\n/h 0 @100644 1 0 0 0 0.0 //f - -\n", line: 3, what: /^field PAYLOAD: hardlink target "\/\/f" has an empty component/ },
  { name: "hardlink loop (C)", text: ROOT + "/a 0 @100644 1 0 0 0 0.0 /b - -\n/b 0 @100644 1 0 0 0 0.0 /a - -\n", line: 2, what: /^field PAYLOAD: hardlinks form a loop/, modes: ["c", "c-strict"], othersAccept: false },
  { name: "whiteout with nlink > 1", text: ROOT + "/w 0 20000 2 0 0 0 0.0 - - -\n", line: 2, what: /^field NLINK: a whiteout \(character device 0:0\) cannot have 2 links$/ },
  { name: "hardlinked whiteout", text: ROOT + "/w 0 20000 1 0 0 0 0.0 - - -\n/h 0 @120000 - - - - 0.0 /w - -\n", line: 3, what: /^field PAYLOAD: hardlink target \/w is a whiteout/ },
  { name: "xattr without '='", text: ROOT + "/f 0 100644 1 0 0 0 0.0 - - - user.a\n", line: 2, what: /^field XATTR 1: missing "=" between key and value$/ },
  { name: "xattr key > 255 bytes", text: ROOT + `/f 0 100644 1 0 0 0 0.0 - - - user.${"k".repeat(251)}=v\n`, line: 2, what: /^field XATTR 1: xattr key of 256 bytes exceeds the maximum of 255$/ },
  { name: "xattr value > 65535 bytes", text: ROOT + `/f 0 100644 1 0 0 0 0.0 - - - user.a=${"\\x00".repeat(65536)}\n`, line: 2, what: /^field XATTR: \d+ bytes of xattrs on one line exceed the maximum of 65535$/ },
  { name: "xattrs over C's inode budget", text: ROOT + `/f 0 100644 1 0 0 0 0.0 - - - user.a=${"v".repeat(20000)} user.b=${"v".repeat(20000)}\n`, line: 2, what: /^field XATTR 2: xattrs exceed the per-inode maximum of 32767 bytes$/ },
  { name: "duplicate xattr key (strict)", text: ROOT + "/f 0 100644 1 0 0 0 0.0 - - - user.a=1 user.a=2\n", line: 2, what: /^field XATTR 2: duplicate xattr key "user\.a"$/, modes: ["strict"] },
  { name: "mode bits above 16 (strict)", text: ROOT + "/f 0 1100644 1 0 0 0 0.0 - - -\n", line: 2, what: /^field MODE: 1100644 has bits above the 16-bit st_mode$/, modes: ["strict"] },
  { name: "error on a later line", text: ROOT + "/a 0 40755 2 0 0 0 0.0 - - -\n/a/b 0 100644 1 0 0 0 0.0 - - -\n/a/c 0 100644 1 0 0 0 0.x - - -\n", line: 4, what: /^field MTIME:/ },
];

describe("malformed input", () => {
  test.each(BAD)("$name", (bad) => {
    for (const mode of bad.modes ?? MODES) {
      const err = parseError(bad.text, mode);
      expect(err.input, `${mode} mode`).toBe(`line ${bad.line}`);
      expect(err.what, `${mode} mode`).toMatch(bad.what);
    }
    // Rules only some modes apply are accepted by the others.
    for (const mode of MODES.filter((m) => bad.modes !== undefined && !bad.modes.includes(m) && bad.othersAccept !== false)) {
      expect(() => parseDumpfile(new Uint8Array(Buffer.from(bad.text, "latin1")), { mode }), `${mode} mode`).not.toThrow();
    }
  });

  test("err.within(file) prefixes the file name", () => {
    const err = parseError(ROOT + "/f 0 100644 1 0 0 0 1.1000000000 - - -\n", "c").within("tree.dump");
    expect(err.message).toBe("tree.dump: line 2: field MTIME: nanoseconds must be < 1000000000 (got 1000000000)");
  });

  test("random garbage never crashes: always a tree or a CfsError", () => {
    const seedLines = Buffer.from(read("erofs-v1/a32-mixed-1.dump")).toString("latin1").split("\n");
    let state = 12345;
    const rnd = (n: number): number => ((state = (state * 1103515245 + 12345) >>> 0) % n);
    const alphabet = " \\x@-/.=0123456789abcdef\n\0\t";
    for (let i = 0; i < 400; i++) {
      const lines = seedLines.slice(0, 1 + rnd(seedLines.length));
      const k = rnd(lines.length);
      const l = lines[k]!;
      const at = rnd(l.length + 1);
      lines[k] = l.slice(0, at) + alphabet[rnd(alphabet.length)]! + l.slice(at + rnd(3));
      const bytes = new Uint8Array(Buffer.from(lines.join("\n"), "latin1"));
      for (const mode of MODES) {
        try {
          parseDumpfile(bytes, { mode });
        } catch (e) {
          expect(e).toBeInstanceOf(CfsError);
          expect((e as CfsError).input).toMatch(/^line \d+$/);
        }
      }
    }
  });
});

describe("what the parser builds", () => {
  test("MTIME 1.5 means 1 s + 5 ns; 1.0000000005 is also 5 ns", () => {
    const t = parseDumpfile(new Uint8Array(Buffer.from(ROOT + "/a 0 100644 1 0 0 0 1.5 - - -\n/b 0 100644 1 0 0 0 1.0000000005 - - -\n")));
    expect(lookup(t, "/a")!.stat).toMatchObject({ mtimeSec: 1, mtimeNsec: 5 });
    expect(lookup(t, "/b")!.stat).toMatchObject({ mtimeSec: 1, mtimeNsec: 5 });
  });

  test("C reads a negative MTIME like strtoull + time_t: -5.3 is sec -5, nsec 3", () => {
    const t = parseDumpfile(new Uint8Array(Buffer.from(ROOT + "/a 0 100644 1 0 0 0 -5.3 - - -\n")), { mode: "c" });
    expect(lookup(t, "/a")!.stat).toMatchObject({ mtimeSec: -5, mtimeNsec: 3 });
  });

  test("regular-file content per dumpfile.md §3", () => {
    const text = ROOT +
      `/inline 3 100644 1 0 0 0 0.0 - abc -\n` +
      `/empty 0 100644 1 0 0 0 0.0 - - -\n` +
      `/ext 9 100644 1 0 0 0 0.0 ${OBJ} - ${D64}\n` +
      `/nodigest 9 100644 1 0 0 0 0.0 ${OBJ} - -\n` +
      `/sparse 9 100644 1 0 0 0 0.0 - - -\n` +
      `/dash 1 100644 1 0 0 0 0.0 - \\x2d -\n`;
    for (const mode of MODES) {
      const t = parseDumpfile(new Uint8Array(Buffer.from(text)), { mode });
      const c = (p: string): Regular => (lookup(t, p) as Leaf).content as Regular;
      expect(Buffer.from(c("/inline").inline!).toString()).toBe("abc");
      expect(c("/empty")).toMatchObject({ size: 0n, digest: null, payload: null });
      expect(c("/empty").inline!.byteLength).toBe(0);
      expect(c("/ext")).toMatchObject({ size: 9n, inline: null, payload: OBJ });
      expect(Buffer.from(c("/ext").digest!).toString("hex")).toBe(D64);
      expect(c("/nodigest")).toMatchObject({ size: 9n, inline: null, digest: null, payload: OBJ });
      expect(c("/sparse")).toMatchObject({ size: 9n, inline: null, digest: null, payload: null });
      expect(Buffer.from(c("/dash").inline!).toString()).toBe("-");
    }
  });

  test("C mode: content wins over payload, free payloads, empty file drops payload and digest", () => {
    const text = ROOT +
      `/both 3 100644 1 0 0 0 0.0 ${OBJ} abc -\n` +
      `/free 9 100644 1 0 0 0 0.0 usr/lib/x\\x20y.file - -\n` +
      `/digestonly 9 100644 1 0 0 0 0.0 - - ${D64.toUpperCase()}\n` +
      `/zero 0 100644 1 0 0 0 0.0 ${OBJ} - ${D64}\n`;
    const t = parseDumpfile(new Uint8Array(Buffer.from(text)), { mode: "c" });
    const c = (p: string): Regular => (lookup(t, p) as Leaf).content as Regular;
    expect(c("/both")).toMatchObject({ size: 3n, payload: null, digest: null });
    expect(c("/free").payload).toBe("usr/lib/x y.file");
    expect(Buffer.from(c("/digestonly").digest!).toString("hex")).toBe(D64);
    expect(c("/digestonly").payload).toBeNull();
    expect(c("/zero")).toMatchObject({ size: 0n, payload: null, digest: null });
  });

  test("hardlink lines: only @ and PAYLOAD are read; C resolves late targets and chains", () => {
    const text = ROOT +
      "/early 999 @100644 junk junk junk junk junk /d/target junk junk junk\n" +
      "/chain 0 @120000 - - - - 0.0 /early - -\n" +
      "/d 0 40755 2 0 0 0 0.0 - - -\n" +
      "/d/target 5 100644 3 7 8 0 3.4 - hello - user.x=1\n";
    const t = parseDumpfile(new Uint8Array(Buffer.from(text)), { mode: "c" });
    const target = lookup(t, "/d/target") as Leaf;
    expect(lookup(t, "/early")).toBe(target);
    expect(lookup(t, "/chain")).toBe(target);
    expect(target.nlink).toBeUndefined(); // NLINK 3 = three references
    expect(target.stat).toMatchObject({ uid: 7, gid: 8, mtimeSec: 3, mtimeNsec: 4 });
    expect(parseError(text, "strict").what).toMatch(/hardlink target \/d\/target does not exist \(it must appear on an earlier line\)/);
  });

  test("C mode keeps an NLINK field that disagrees; strict ignores it", () => {
    const text = ROOT + "/f 0 100644 5 0 0 0 0.0 - - -\n/g 0 100644 1 0 0 0 0.0 - - -\n/h 0 @100644 - - - - 0.0 /g - -\n";
    const c = parseDumpfile(new Uint8Array(Buffer.from(text)), { mode: "c" });
    expect((lookup(c, "/f") as Leaf).nlink).toBe(5);
    expect((lookup(c, "/g") as Leaf).nlink).toBe(1); // two references, NLINK field 1
    const s = parseDumpfile(new Uint8Array(Buffer.from(text)), { mode: "strict" });
    expect((lookup(s, "/f") as Leaf).nlink).toBeUndefined();
    expect((lookup(s, "/g") as Leaf).nlink).toBeUndefined();
    expect(lookup(s, "/h")).toBe(lookup(s, "/g"));
  });

  test("escapes: upper-case hex, \\x2F acts as /, = in keys, xattr values - and empty", () => {
    const text = ROOT +
      "/d 0 40755 2 0 0 0 0.0 - - -\n" +
      "/d\\x2Ff\\x41 0 100644 1 0 0 0 0.0 - - - user.k\\x3dv=a=b user.dash=- user.empty= user.nl=\\n\\t\\r\\\\\n";
    const t = parseDumpfile(new Uint8Array(Buffer.from(text)), { mode: "strict" });
    const f = lookup(t, "/d/fA")!;
    const x = (k: string): string => Buffer.from(f.stat.xattrs.get(k)!).toString("latin1");
    expect(x("user.k=v")).toBe("a=b");
    expect(x("user.dash")).toBe("-");
    expect(x("user.empty")).toBe("");
    expect(x("user.nl")).toBe("\n\t\r\\");
  });

  test("C mode: last duplicate xattr wins, junk mode bits are dropped, one trailing space is fine", () => {
    const text = ROOT + "/f 0 3100644 1 0 0 0 0.0 - - - user.a=1 user.a=2 \n";
    const t = parseDumpfile(new Uint8Array(Buffer.from(text)), { mode: "c" });
    const f = lookup(t, "/f")!;
    expect(Buffer.from(f.stat.xattrs.get("user.a")!).toString()).toBe("2");
    expect(f.stat.mode).toBe(0o644);
  });
});

describe("performance", () => {
  test("a 140,000-line /usr-like dumpfile parses quickly (linear time)", () => {
    const lines: string[] = ["/ 0 40755 2 0 0 0 1700000000.0 - - - security.selinux=system_u:object_r:root_t:s0\\x00"];
    lines.push("/usr 0 40755 2 0 0 0 1700000000.0 - - - security.selinux=system_u:object_r:usr_t:s0\\x00");
    let n = 0;
    for (let d = 0; lines.length < 140_000; d++) {
      const dir = `/usr/share/d${d}`;
      if (d === 0) lines.push("/usr/share 0 40755 2 0 0 0 1700000000.0 - - - security.selinux=system_u:object_r:usr_t:s0\\x00");
      lines.push(`${dir} 0 40755 2 0 0 0 1700000000.123456789 - - - security.selinux=system_u:object_r:usr_t:s0\\x00`);
      for (let f = 0; f < 13; f++, n++) {
        const hex = (n * 2654435761 >>> 0).toString(16).padStart(8, "0").repeat(8);
        if (f === 12) lines.push(`${dir}/link${f} 8 120777 1 0 0 0 1700000000.5 ../d0/f0 - - security.selinux=system_u:object_r:usr_t:s0\\x00`);
        else if (f % 4 === 3) lines.push(`${dir}/small${f}.conf 11 100644 1 0 0 0 1700000000.5 - hello\\x20world - security.selinux=system_u:object_r:etc_t:s0\\x00`);
        else lines.push(`${dir}/f${f} ${1000 + n} 100644 1 0 0 0 1700000000.5 ${hex.slice(0, 2)}/${hex.slice(2)} - ${hex} security.selinux=system_u:object_r:usr_t:s0\\x00`);
      }
    }
    const text = new Uint8Array(Buffer.from(lines.join("\n") + "\n", "latin1"));
    const t0 = performance.now();
    const tree = parseDumpfile(text, { mode: "strict" });
    const parseMs = performance.now() - t0;
    const t1 = performance.now();
    const out = writeDumpfile(tree);
    const writeMs = performance.now() - t1;
    process.stderr.write(`dumpfile: ${lines.length} lines (${(text.byteLength / 1e6).toFixed(1)} MB): parse ${parseMs.toFixed(0)} ms, write ${writeMs.toFixed(0)} ms\n`);
    expect(out.byteLength).toBeGreaterThan(text.byteLength * 0.9);
    expect(tree.entries.get("usr")?.kind).toBe("dir");
    // Generous bound for a loaded 2-core CI machine (0.6–0.9 s measured with
    // other jobs running); quadratic behaviour would take minutes.
    expect(parseMs).toBeLessThan(15_000);
    expect(writeMs).toBeLessThan(15_000);
  });
});
