import { describe, expect, test } from "vitest";
import fc from "fast-check";
import {
  addArg,
  applyKargsDiff,
  findParam,
  formatComposefsKarg,
  joinCmdline,
  kargsDiff,
  kargsFromFiles,
  paramEquals,
  parseComposefsKarg,
  parseDigestHex,
  parseKargsToml,
  parseParam,
  parseRootMountSource,
  removeArg,
  rustArch,
  setComposefsKarg,
  splitCmdline,
  withoutComposefsKargs,
  withoutLoaderArgs,
} from "../../shared/kargs.ts";
import { CfsError } from "../../shared/errors.ts";

const H512 = "6f06b5e82420abec546d6e6d3ddd612c50cfa9b707c129345b7ec16f456b92fe35df68999b042e1a6a70dfe75f2fed8cf9f67afd0bf08d2374678d75e2f65a02";
const H512B = "b".repeat(128);
const H256 = "8b7df143d91c716ecfa5fc1730022f6b421b05cedee8fd52b1fc65a96030ad52";

function errorOf(f: () => unknown): CfsError {
  try {
    f();
  } catch (e) {
    if (e instanceof CfsError) return e;
    throw e;
  }
  throw new Error("expected a CfsError");
}

describe("splitCmdline", () => {
  test.each([
    ["", []],
    ["   ", []],
    ["a b  c", ["a", "b", "c"]],
    ["\ta\nb\r\n", ["a", "b"]],
    ['foo="bar baz" x', ['foo="bar baz"', "x"]],
    ['"quoted whole" y', ['"quoted whole"', "y"]],
    ['a="unclosed b c', ['a="unclosed b c']],
    ['a=x"y z"w q', ['a=x"y z"w', "q"]],
  ])("%j", (input, expected) => {
    expect(splitCmdline(input)).toEqual(expected);
  });

  test("join then split round-trips for representable arguments", () => {
    const arg = fc.stringMatching(/^[a-z0-9=._:\/?-]{1,12}( [a-z0-9]{1,4})?$/);
    fc.assert(
      fc.property(fc.array(arg, { maxLength: 8 }), (args) => {
        const line = joinCmdline(args);
        const back = splitCmdline(line).map((t) => parseParam(t));
        expect(back.length).toBe(args.length);
        back.forEach((p, i) => expect(paramEquals(p, parseParam(args[i]!.includes(" ") ? joinCmdline([args[i]!]) : args[i]!))).toBe(true));
      }),
    );
  });

  test("join quotes a value with spaces and refuses the unrepresentable", () => {
    expect(joinCmdline(["a", "opt=x y"])).toBe('a opt="x y"');
    expect(joinCmdline(["two words"])).toBe('"two words"');
    expect(errorOf(() => joinCmdline(['a"b" c']))).toBeInstanceOf(CfsError);
    expect(errorOf(() => joinCmdline(["new\nline"]))).toBeInstanceOf(CfsError);
  });
});

describe("parameters", () => {
  test.each([
    ["foo", "foo", null],
    ["foo=bar", "foo", "bar"],
    ['foo="quoted value"', "foo", "quoted value"],
    ['"foo=quoted value"', "foo", "quoted value"],
    ['foo="unclosed', "foo", "unclosed"],
    ['"foo"=bar', 'foo"', "bar"],
    ["a=b=c", "a", "b=c"],
    ["x=", "x", ""],
  ])("parseParam(%j)", (raw, key, value) => {
    expect(parseParam(raw)).toEqual({ raw, key, value });
  });

  test("dashes and underscores are the same key; values are exact", () => {
    expect(paramEquals("a-b=1", "a_b=1")).toBe(true);
    expect(paramEquals("a-b=1", "a_b=2")).toBe(false);
    expect(paramEquals("flag", "flag=")).toBe(false);
    expect(paramEquals('x="a b"', '"x=a b"')).toBe(true);
    expect(findParam(["a_b=2", "a-b=1"], "a-b")?.value).toBe("2");
  });

  test("add appends unless identical; remove is exact", () => {
    expect(addArg(["console=tty0", "console=ttyS1"], "console=ttyS2")).toEqual(["console=tty0", "console=ttyS1", "console=ttyS2"]);
    expect(addArg(["console=tty0"], "console=tty0")).toEqual(["console=tty0"]);
    expect(removeArg(["a=1", "a=2", "a_=x", "a=1"], "a=1")).toEqual(["a=2", "a_=x"]);
  });

  test("boot-loader-added arguments are dropped for comparison", () => {
    const proc = splitCmdline("initrd=\\EFI\\Linux\\bootc_composefs-x\\initrd BOOT_IMAGE=/vmlinuz rw initrd=/real quiet");
    expect(withoutLoaderArgs(proc)).toEqual(["rw", "initrd=/real", "quiet"]);
  });
});

describe("composefs karg", () => {
  type Row = [string, string, ReturnType<typeof parseComposefsKarg>];
  const rows: Row[] = [
    ["absent", "root=UUID=x rw quiet", null],
    ["composefs=", `rw composefs=${H512}`, { version: 2, algorithm: "sha512", digest: H512, insecure: false, form: "composefs" }],
    ["composefs=?", `composefs=?${H512}`, { version: 2, algorithm: "sha512", digest: H512, insecure: true, form: "composefs" }],
    ["digest v1", `composefs.digest=v1-sha512-12:${H512}`, { version: 1, algorithm: "sha512", digest: H512, insecure: false, form: "composefs.digest" }],
    ["digest ?v1", `composefs.digest=?v1-sha512-12:${H512}`, { version: 1, algorithm: "sha512", digest: H512, insecure: true, form: "composefs.digest" }],
    ["digest v2", `composefs.digest=v2-sha512-12:${H512}`, { version: 2, algorithm: "sha512", digest: H512, insecure: false, form: "composefs.digest" }],
    ["digest wins over composefs= regardless of order", `composefs=${H512B} composefs.digest=v1-sha512-12:${H512}`, { version: 1, algorithm: "sha512", digest: H512, insecure: false, form: "composefs.digest" }],
    ["other-algorithm digest skipped, falls back", `composefs.digest=v1-sha256-12:${H256} composefs=${H512}`, { version: 2, algorithm: "sha512", digest: H512, insecure: false, form: "composefs" }],
    ["first matching digest wins (dual V1+V2)", `composefs.digest=v2-sha512-12:${H512B} composefs.digest=v1-sha512-12:${H512}`, { version: 2, algorithm: "sha512", digest: H512B, insecure: false, form: "composefs.digest" }],
    ["upper-case hex is normalised", `composefs=${H512.toUpperCase()}`, { version: 2, algorithm: "sha512", digest: H512, insecure: false, form: "composefs" }],
    ["similar keys are not composefs", `composefs_backup=${H512} xcomposefs=${H512} composefs`, null],
    ["identical duplicates are fine", `composefs=${H512} composefs=${H512}`, { version: 2, algorithm: "sha512", digest: H512, insecure: false, form: "composefs" }],
  ];
  test.each(rows)("%s", (_name, line, expected) => {
    expect(parseComposefsKarg(line, "sha512")).toEqual(expected);
  });

  test("sha256 repositories skip sha512 digests", () => {
    expect(parseComposefsKarg(`composefs.digest=v1-sha512-12:${H512}`, "sha256")).toBeNull();
    expect(parseComposefsKarg(`composefs.digest=v1-sha256-12:${H256}`, "sha256")?.digest).toBe(H256);
  });

  test.each([
    ["unknown version", `composefs.digest=v3-sha512-12:${H512}`, "composefs.digest=v3", "unsupported format version 'v3'"],
    ["unknown version even with other hash", `composefs.digest=v9-sha256-12:${H256} composefs=${H512}`, "composefs.digest=v9", "unsupported format version"],
    ["no colon", "composefs.digest=v1-sha512-12", "composefs.digest=v1-sha512-12", "expected '<version>-<hash>-<blocksize>:<hex>'"],
    ["bad block size", `composefs.digest=v1-sha512-8:${H512}`, "composefs.digest=v1-sha512-8", "unsupported block size '8'"],
    ["bad hash", `composefs.digest=v1-md5-12:${H512}`, "composefs.digest=v1-md5", "unsupported hash 'md5'"],
    ["short hex in digest", `composefs.digest=v1-sha512-12:${H256}`, "composefs.digest=v1-sha512-12:8b7d", "expected 128 hex digits for sha512, got 64"],
    ["short hex in composefs=", `composefs=${H256}`, "composefs=8b7d", "expected 128 hex digits for sha512, got 64"],
    ["not hex", "composefs=notahex", "composefs=notahex", "not a hex digest"],
    ["conflicting composefs=", `composefs=${H512} composefs=${H512B}`, `composefs=${H512B}`, `conflicts with composefs=${H512}`],
    ["conflicting insecure flag", `composefs=${H512} composefs=?${H512}`, `composefs=?${H512}`, "conflicts with"],
    ["conflicting same-version digests", `composefs.digest=v1-sha512-12:${H512} composefs.digest=v1-sha512-12:${H512B}`, "composefs.digest=v1-sha512-12:bbbb", "conflicts with"],
  ])("error: %s", (_name, line, input, what) => {
    const e = errorOf(() => parseComposefsKarg(line, "sha512"));
    expect(e.input).toContain(input);
    expect(e.what).toContain(what);
  });

  test("format → parse round-trips for every form", () => {
    const hex = fc.stringMatching(/^[0-9a-f]{128}$/);
    fc.assert(
      fc.property(hex, fc.constantFrom(1 as const, 2 as const), fc.boolean(), (digest, version, insecure) => {
        const karg = formatComposefsKarg({ version, algorithm: "sha512", digest, insecure });
        expect(karg.startsWith(version === 1 ? "composefs.digest=" : "composefs=")).toBe(true);
        const back = parseComposefsKarg(`rw ${karg} quiet`, "sha512");
        expect(back).toMatchObject({ version, digest, insecure });
      }),
    );
  });

  test("formatting matches composefs-rs spellings", () => {
    expect(formatComposefsKarg({ version: 1, algorithm: "sha512", digest: H512, insecure: false })).toBe(`composefs.digest=v1-sha512-12:${H512}`);
    expect(formatComposefsKarg({ version: 1, algorithm: "sha256", digest: H256, insecure: true })).toBe(`composefs.digest=?v1-sha256-12:${H256}`);
    expect(formatComposefsKarg({ version: 2, algorithm: "sha512", digest: H512, insecure: true })).toBe(`composefs=?${H512}`);
  });

  test("replace whichever composefs karg is present", () => {
    const n = `composefs.digest=v1-sha512-12:${H512B}`;
    expect(setComposefsKarg(["rw", `composefs=${H512}`, "quiet"], n)).toEqual(["rw", n, "quiet"]);
    expect(setComposefsKarg([`composefs.digest=v1-sha512-12:${H512}`, "rw", `composefs=${H512}`], n)).toEqual([n, "rw"]);
    expect(setComposefsKarg(["rw"], n)).toEqual(["rw", n]);
    expect(withoutComposefsKargs(["rw", `composefs=${H512}`, `composefs.digest=v1-sha512-12:${H512}`])).toEqual(["rw"]);
  });

  test("bare hex and mount sources", () => {
    expect(parseDigestHex(H512.toUpperCase(), "sha512", "id")).toBe(H512);
    expect(errorOf(() => parseDigestHex("abc", "sha512", "deployment id")).message).toBe("deployment id: expected 128 hex digits for sha512, got 3");
    expect(parseRootMountSource(`composefs:${H512}`, "sha512")).toEqual({ digest: H512, transient: false });
    expect(parseRootMountSource(`transient:composefs=${H512}`, "sha512")).toEqual({ digest: H512, transient: true });
    expect(errorOf(() => parseRootMountSource("/dev/vda3", "sha512")).what).toBe("root not mounted using composefs");
  });
});

describe("kargs.d", () => {
  test.each([
    ['kargs = ["console=tty0", "nosmt"]', { kargs: ["console=tty0", "nosmt"], matchArchitectures: null }],
    ['kargs = []\nmatch-architectures = ["x86_64", "aarch64"]\n', { kargs: [], matchArchitectures: ["x86_64", "aarch64"] }],
    ['# comment\nkargs = ["a=\\"b c\\""]', { kargs: ['a="b c"'], matchArchitectures: null }],
  ])("parse %j", (text, expected) => {
    expect(parseKargsToml(text, "10-x.toml")).toEqual(expected);
  });

  test.each([
    ['kargs = ["a"]\nfoo = "bar"', "10-x.toml: line 2", "unknown key 'foo'"],
    ['foo = "bar"', "10-x.toml: line 1", "unknown key 'foo'"],
    ["match-architectures = []", "10-x.toml", "missing key 'kargs'"],
    ['kargs = "rw"', "10-x.toml: line 1", "'kargs' must be an array of strings"],
    ["kargs = [1]", "10-x.toml: line 1", "'kargs' must be an array of strings"],
    ['kargs = ["a"]\nmatch-architectures = "x86_64"', "10-x.toml: line 2", "'match-architectures' must be an array of strings"],
    ['kargs = ["a"\n', "10-x.toml: line 2", ""],
    ['kargs = ["a"]\nkargs = ["b"]', "10-x.toml: line 2", ""],
  ])("error %j", (text, input, what) => {
    const e = errorOf(() => parseKargsToml(text, "10-x.toml"));
    expect(e.input).toBe(input);
    expect(e.what).toContain(what);
  });

  const files = [
    { name: "02-bar.toml", text: 'kargs = ["console=ttyS1"]' },
    { name: "01-foo.toml", text: 'kargs = ["console=tty0", "nosmt"]' },
    { name: "somegarbage", text: "garbage" },
    { name: "03-arm.toml", text: 'kargs = ["arm-only"]\nmatch-architectures = ["aarch64"]' },
    { name: "04-multi.toml", text: 'kargs = ["a=1 b=2", "nosmt"]' },
  ];
  test("files in name order, .toml only, architecture filter, split and deduplicated", () => {
    expect(kargsFromFiles(files, "x86_64")).toEqual(["console=tty0", "nosmt", "console=ttyS1", "a=1", "b=2"]);
    expect(kargsFromFiles(files, "aarch64")).toEqual(["console=tty0", "nosmt", "console=ttyS1", "arm-only", "a=1", "b=2"]);
    expect(kargsFromFiles([], "x86_64")).toEqual([]);
  });

  test("a broken file names itself", () => {
    const e = errorOf(() => kargsFromFiles([{ name: "99-bad.toml", text: "kargs = [" }], "x86_64"));
    expect(e.input.startsWith("99-bad.toml: line")).toBe(true);
  });

  test("architecture names are Rust's", () => {
    expect(rustArch("x64")).toBe("x86_64");
    expect(rustArch("arm64")).toBe("aarch64");
    expect(rustArch("ppc64")).toBe("powerpc64");
    expect(rustArch("s390x")).toBe("s390x");
    expect(rustArch("riscv64")).toBe("riscv64");
  });

  test("upgrade diff: removed by exact match, added appended, user args untouched", () => {
    const old = ["console=ttyS0", "quiet", "mitigations=auto"];
    const neu = ["console=ttyS0", "mitigations=off", "nosmt"];
    const diff = kargsDiff(old, neu);
    expect(diff).toEqual({ removed: ["quiet", "mitigations=auto"], added: ["mitigations=off", "nosmt"] });
    const booted = ["root=UUID=1", "rw", "console=ttyS0", "quiet", "mitigations=auto", "user=1", "nosmt"];
    expect(applyKargsDiff(booted, diff)).toEqual(["root=UUID=1", "rw", "console=ttyS0", "user=1", "nosmt", "mitigations=off"]);
    // install: old set empty → everything added
    expect(applyKargsDiff(["rw"], kargsDiff([], neu))).toEqual(["rw", ...neu]);
  });

  test("property: applying the diff yields every new kargs.d arg and none of the removed ones", () => {
    const tok = fc.constantFrom("a", "b=1", "b=2", "c-d=x", "c_d=x", "quiet", "e");
    fc.assert(
      fc.property(fc.array(tok), fc.array(tok), fc.array(tok), (oldSet, newSet, user) => {
        const diff = kargsDiff(oldSet, newSet);
        const out = applyKargsDiff([...user, ...oldSet], diff);
        for (const n of newSet) expect(out.some((o) => paramEquals(o, n))).toBe(true);
        for (const r of diff.removed) expect(out.some((o) => paramEquals(o, r))).toBe(false);
        // arguments in neither kargs.d set are untouched
        for (const u of user) if (![...oldSet, ...newSet].some((x) => paramEquals(x, u))) expect(out).toContain(u);
      }),
    );
  });
});
