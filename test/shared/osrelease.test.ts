import { describe, expect, test } from "vitest";
import fc from "fast-check";
import { blsTitleVersion, bootLabel, dequoteOsReleaseValue, osId, parseOsRelease } from "../../shared/osrelease.ts";

describe("dequoting", () => {
  test.each([
    ["", ""],
    ['""', ""],
    ["''", ""],
    ["\"\"''\"\"", ""],
    ["hello", "hello"],
    ["1234", "1234"],
    ["\\\\", "\\\\"],
    ['"closed"', "closed"],
    ['"closed\\\\"', "closed\\"],
    ['" "', " "],
    ['"\\""', '"'],
    ['"\\$5"', "$5"],
    ['"$5"', "$5"],
    ['"\\`tick\\`"', "`tick`"],
    ["\"\\'\"", "'"],
    ["'single \\ \"x\"'", 'single \\ "x"'],
    ['  "trimmed"  ', "trimmed"],
    ['a"b c"d', "ab cd"],
    ['"Fedora Linux 42 (Forty Two)"', "Fedora Linux 42 (Forty Two)"],
  ])("%j → %j", (raw, value) => {
    expect(dequoteOsReleaseValue(raw)).toBe(value);
  });

  test.each(['"not closed', '"not closed\\"', "'single", '"trailing\\'])("%j is invalid", (raw) => {
    expect(dequoteOsReleaseValue(raw)).toBeNull();
  });

  test("property: a double-quoted, escaped value dequotes to itself", () => {
    fc.assert(
      fc.property(fc.string(), (v) => {
        const quoted = `"${v.replace(/[\\"$`]/g, (c) => `\\${c}`)}"`;
        expect(dequoteOsReleaseValue(quoted)).toBe(v);
      }),
    );
  });
});

const fedora = `NAME="Fedora Linux"
VERSION="42 (Forty Two)"
# a comment
ID=fedora
VERSION_ID=42
PRETTY_NAME="Fedora Linux 42 (Forty Two)"
BROKEN="unterminated
garbage line
`;

describe("os-release", () => {
  test("values, comments, invalid lines reported", () => {
    const os = parseOsRelease(fedora);
    expect(os.values.get("NAME")).toBe("Fedora Linux");
    expect(os.values.get("VERSION_ID")).toBe("42");
    expect(os.values.has("BROKEN")).toBe(false);
    expect(os.invalid).toEqual([
      { line: 7, text: 'BROKEN="unterminated', why: "unterminated quote" },
      { line: 8, text: "garbage line", why: "no '='" },
    ]);
  });

  test("last duplicate wins, CRLF tolerated", () => {
    expect(parseOsRelease("ID=a\r\nID=b\r\n").values.get("ID")).toBe("b");
  });

  test.each([
    ["full", fedora, { title: "Fedora Linux 42 (Forty Two)", version: "42", osid: "fedora" }],
    ["NAME and VERSION only", 'NAME=Debian\nVERSION="12 (bookworm)"\n', { title: "Debian", version: "12 (bookworm)", osid: "bootc" }],
    ["ID only", "ID=fedora-coreos\n", { title: "fedora-coreos", version: "ID0", osid: "fedora-coreos" }],
    ["empty", "", { title: "ID0", version: "ID0", osid: "bootc" }],
  ])("title/version/osid: %s", (_n, text, expected) => {
    expect(blsTitleVersion(parseOsRelease(text), "ID0")).toEqual(expected);
  });

  test("no os-release file at all", () => {
    expect(blsTitleVersion(null, "abc")).toEqual({ title: "abc", version: "abc", osid: "bootc" });
    expect(osId(null)).toBe("bootc");
  });

  test("UKI boot label", () => {
    expect(bootLabel(parseOsRelease(fedora))).toBe("Fedora Linux 42 (Forty Two) 42");
    expect(bootLabel(parseOsRelease("NAME=X\n"))).toBe("X");
    expect(bootLabel(parseOsRelease("VERSION_ID=1\n"))).toBeNull();
  });
});
