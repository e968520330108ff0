import { describe, expect, test } from "vitest";
import fc from "fast-check";
import {
  compareGrub,
  compareSystemdBoot,
  compareVersions,
  counterState,
  effectiveDefaultIndex,
  emptyEntry,
  entryArtifact,
  entryDeploymentId,
  entryFileName,
  formatCounterName,
  formatEfiUuidCfg,
  formatEntry,
  formatGrubUserCfg,
  grubMenuEntryForUki,
  grubMenuEntryId,
  kernelDirInEntry,
  makeType1Entry,
  makeUkiEntry,
  type NamedEntry,
  parseCounter,
  parseEntry,
  parseEntryFileName,
  parseGrubUserCfg,
  parseSortKey,
  planRollback,
  planSlots,
  planStagedEntries,
  readEntry,
  sortEntries,
  sortKeyFor,
  validateEntry,
  withoutCounter,
  type BlsEntry,
} from "../../shared/bls.ts";
import { CfsError } from "../../shared/errors.ts";

function errorOf(f: () => unknown): CfsError {
  try {
    f();
  } catch (e) {
    if (e instanceof CfsError) return e;
    throw e;
  }
  throw new Error("expected a CfsError");
}

const id = (c: string): string => c.repeat(128);

describe("UAPI version comparison", () => {
  // Oldest first; every later string is newer than every earlier one
  // (the order documented with systemd's strverscmp_improved).
  const ordered = ["~1", "", "ab", "abb", "abc", "0001", "002", "12", "122", "122.9", "123~rc1", "123", "123-a", "123-a.1", "123-a1", "123-a1.1", "123-3", "123-3.1", "123^patch1", "123^1", "123.a-1", "123.1-1", "123a-1", "124"];
  test("documented order, pairwise", () => {
    for (let x = 0; x < ordered.length; x++) {
      expect(compareVersions(ordered[x]!, ordered[x]!)).toBe(0);
      for (let y = x + 1; y < ordered.length; y++) {
        expect(compareVersions(ordered[y]!, ordered[x]!), `${ordered[y]} > ${ordered[x]}`).toBeGreaterThan(0);
        expect(compareVersions(ordered[x]!, ordered[y]!), `${ordered[x]} < ${ordered[y]}`).toBeLessThan(0);
      }
    }
  });

  test.each([
    ["123.45-67.89", "123.45-67.88"],
    ["123.45-67.89a", "123.45-67.89"],
    ["123.45-67.89", "123.45-67.ab"],
    ["123.45-67.89", "123.45-67.9"],
    ["123.45-67.89", "123.45-67"],
    ["123.45-67.89", "123-99.99"],
    ["123.45-67.89", "123~rc1-99.99"],
    ["123~rc2-67.89", "123~rc1-99.99"],
    ["123^aa2-67.89", "123~rc1-99.99"],
    ["123.45-67.89", "123^45-67.89"],
    ["123aa2-67.89", "123^aa2-67.89"],
    ["123.ab2-67.89", "123.aa2-67.89"],
    ["42.20260901.0", "42.20260820.0"],
    ["10", "9"],
  ])("%s > %s", (newer, older) => {
    expect(compareVersions(newer, older)).toBeGreaterThan(0);
    expect(compareVersions(older, newer)).toBeLessThan(0);
  });

  test("characters outside the version alphabet only separate segments", () => {
    expect(compareVersions("123_aa2-67.89", "123aa+2-67.89")).toBe(0);
    expect(compareVersions("00123", "123")).toBe(0);
  });

  test("property: antisymmetric and reflexive", () => {
    const v = fc.stringMatching(/^[0-9a-c~^.\-_]{0,8}$/);
    fc.assert(
      fc.property(v, v, (a, b) => {
        expect(compareVersions(a, a)).toBe(0);
        expect(Math.sign(compareVersions(a, b)) + Math.sign(compareVersions(b, a))).toBe(0);
      }),
    );
  });
});

const sampleType1 = `title Fedora Linux 42 (Forty Two)
version 42
linux /EFI/Linux/bootc_composefs-${id("3")}/vmlinuz
initrd /EFI/Linux/bootc_composefs-${id("3")}/initrd
options rw console=ttyS0 composefs=${id("3")}
sort-key bootc-fedora-0
`;

describe("Type 1 entries", () => {
  test("parse the bootc example and write it back byte for byte", () => {
    const e = readEntry(sampleType1, "bootc_fedora-42-1.conf");
    expect(e).toMatchObject({ title: "Fedora Linux 42 (Forty Two)", version: "42", sortKey: "bootc-fedora-0", initrd: [`/EFI/Linux/bootc_composefs-${id("3")}/initrd`] });
    expect(formatEntry(e)).toBe(sampleType1);
    expect(entryDeploymentId(e, "x.conf")).toBe(id("3"));
    expect(entryArtifact(e, "x.conf")).toEqual({ name: id("3"), prefixed: true });
  });

  test("lenient parsing: comments, indentation, tabs, repeated initrd and options, extras", () => {
    const p = parseEntry("# hello\n\n  title\tA  B \nversion 1\nlinux /k\ninitrd /i1\ninitrd /i2\noptions a=1\noptions b\ndevicetree /dt\narchitecture x64\n");
    expect(p.entry).toEqual({ ...emptyEntry(), title: "A  B", version: "1", linux: "/k", initrd: ["/i1", "/i2"], options: "a=1 b", extra: [["devicetree", "/dt"], ["architecture", "x64"]] });
    expect(p.lines.get("initrd")).toEqual([6, 7]);
  });

  test.each([
    ["version 1\nlinux /k\ntitle\n", "x.conf: line 3", "'title' has no value"],
    ["version 1\nversion 2\nlinux /k\n", "x.conf: line 2", "'version' given again (first on line 1)"],
    ["linux /k\n", "x.conf", "missing 'version'"],
    ["version 1\n", "x.conf", "missing 'linux', 'efi' or 'uki'"],
    ["version 1\nlinux /k\nuki /u.efi\n", "x.conf: line 3", "'linux' and 'uki' in one entry"],
    ["version 1\nefi /u.efi\noptions x\n", "x.conf: line 3", "'options' in a 'efi' entry"],
  ])("validation error %#", (text, input, what) => {
    const e = errorOf(() => validateEntry(parseEntry(text), "x.conf"));
    expect([e.input, e.what]).toEqual([input, what]);
  });

  test("writing refuses values that would break the file", () => {
    expect(errorOf(() => formatEntry({ ...emptyEntry(), version: "1\nlinux /evil", linux: "/k" })).what).toContain("cannot be written on one line");
    expect(errorOf(() => formatEntry({ ...emptyEntry(), version: "1", linux: "/k", extra: [["title", "dup"]] })).what).toBe("not a valid extra key");
  });

  test("property: parse(format(e)) == e", () => {
    const word = fc.stringMatching(/^[A-Za-z0-9/._=:-][A-Za-z0-9/._=: ()-]{0,15}[A-Za-z0-9/._=:()-]$/);
    const opt = fc.option(word, { nil: null });
    const entry = fc.record({
      title: opt,
      version: word,
      machineId: opt,
      sortKey: opt,
      linux: word,
      initrd: fc.array(word, { maxLength: 3 }),
      options: opt,
      extra: fc.array(fc.tuple(fc.constantFrom("devicetree", "architecture", "x-cfsboot"), word), { maxLength: 2 }),
    });
    fc.assert(
      fc.property(entry, (r) => {
        const e: BlsEntry = { ...r, efi: null, uki: null };
        const text = formatEntry(e);
        expect(readEntry(text, "p.conf")).toEqual(e);
        expect(formatEntry(parseEntry(text).entry)).toBe(text);
      }),
    );
  });

  test("UKI entries: uki vs efi key and id from the file name", () => {
    const u = makeUkiEntry({ title: "Fedora 42", version: "42", id: id("a"), useUkiKey: true, sortKey: sortKeyFor("fedora", "primary") });
    expect(formatEntry(u)).toBe(`title Fedora 42\nversion 42\nuki /EFI/Linux/bootc/bootc_composefs-${id("a")}.efi\nsort-key bootc-fedora-0\n`);
    const e = makeUkiEntry({ title: "T", version: "1", id: id("b"), useUkiKey: false });
    expect(e.efi).toBe(`/EFI/Linux/bootc/bootc_composefs-${id("b")}.efi`);
    expect(entryDeploymentId(e, "x.conf")).toBe(id("b"));
    // Unprefixed names from older installs still resolve.
    expect(entryDeploymentId({ ...e, efi: `/EFI/Linux/bootc/${id("c")}.efi` }, "x.conf")).toBe(id("c"));
    expect(entryArtifact({ ...e, efi: `/EFI/Linux/bootc/${id("c")}.efi` }, "x.conf")).toEqual({ name: id("c"), prefixed: false });
  });

  test("id errors name the file", () => {
    const t1 = makeType1Entry({ title: "t", version: "1", kernelDir: "/boot/d", options: "rw" });
    expect(errorOf(() => entryDeploymentId(t1, "a.conf")).message).toBe("a.conf: no composefs karg in 'options'");
    expect(errorOf(() => entryDeploymentId({ ...t1, options: "composefs=abc" }, "a.conf")).input).toBe("a.conf: composefs=abc");
  });

  test("kernel directories per boot loader", () => {
    expect(kernelDirInEntry("grub", "x", false)).toBe("/boot/bootc_composefs-x");
    expect(kernelDirInEntry("grub", "x", true)).toBe("/bootc_composefs-x");
    expect(kernelDirInEntry("systemd", "x", false)).toBe("/EFI/Linux/bootc_composefs-x");
    expect(kernelDirInEntry("grub-cc", "x", true)).toBe("/EFI/Linux/bootc_composefs-x");
  });
});

describe("boot counting names", () => {
  test.each([
    ["foo.conf", null],
    ["foo+1.conf", { base: "foo", left: 1, done: null, suffix: "conf", text: "+1" }],
    ["foo+1-2.conf", { base: "foo", left: 1, done: 2, suffix: "conf", text: "+1-2" }],
    ["foo+0-3.conf", { base: "foo", left: 0, done: 3, suffix: "conf", text: "+0-3" }],
    ["a+b+10-07.efi", { base: "a+b", left: 10, done: 7, suffix: "efi", text: "+10-07" }],
    ["X+3.CONF", { base: "X", left: 3, done: null, suffix: "CONF", text: "+3" }],
    ["foo+1-.conf", null],
    ["foo+-1.conf", null],
    ["foo+1-a.conf", null],
    ["foo+a-1.conf", null],
    ["foo+1", null],
    ["foo+1-2.txt", null],
  ])("%s", (name, expected) => {
    expect(parseCounter(name)).toEqual(expected);
  });

  test("states, formatting, stripping", () => {
    expect([counterState("a.conf"), counterState("a+2-1.conf"), counterState("a+0-3.conf")]).toEqual(["good", "indeterminate", "bad"]);
    expect(formatCounterName("X", 2, 1)).toBe("X+2-1.conf");
    expect(formatCounterName("X", 3, null, "efi")).toBe("X+3.efi");
    expect(withoutCounter("bootc_f-42-1+1-2.conf")).toBe("bootc_f-42-1.conf");
    fc.assert(
      fc.property(fc.stringMatching(/^[a-z0-9_+.-]{1,12}$/), fc.nat(10000), fc.option(fc.nat(10000), { nil: null }), (base, left, done) => {
        const c = parseCounter(formatCounterName(base, left, done));
        expect(c).toMatchObject({ base, left, done });
      }),
    );
  });
});

describe("bootc file names and sort keys", () => {
  test("file names", () => {
    expect(entryFileName("fedora-coreos", "41.20251125.0", "primary")).toBe("bootc_fedora_coreos-41.20251125.0-1.conf");
    expect(entryFileName("fedora", "42", "secondary")).toBe("bootc_fedora-42-0.conf");
    expect(entryFileName("fedora", "42", "primary", "+3")).toBe("bootc_fedora-42-1+3.conf");
    expect(parseEntryFileName("bootc_fedora_coreos-41.2-1+1-2.conf")).toEqual({ osid: "fedora_coreos", version: "41.2", priority: "primary", counter: "+1-2" });
    expect(parseEntryFileName("bootc_x-1-2-0.conf")).toEqual({ osid: "x", version: "1-2", priority: "secondary", counter: "" });
    expect(parseEntryFileName("ostree-1.conf")).toBeNull();
    expect(errorOf(() => entryFileName("a", "1/2", "primary")).what).toBe("cannot be used in a boot entry file name");
  });

  test("sort keys keep hyphens in osid", () => {
    expect(sortKeyFor("fedora-coreos", "primary")).toBe("bootc-fedora-coreos-0");
    expect(sortKeyFor("fedora", "secondary")).toBe("bootc-fedora-1");
    expect(parseSortKey("bootc-fedora-coreos-1")).toEqual({ osid: "fedora-coreos", rank: 1 });
    expect(parseSortKey("other")).toBeNull();
  });
});

function t1(fileName: string, o: { id: string; version: string; sortKey?: string | null; machineId?: string | null }): NamedEntry {
  return {
    fileName,
    entry: makeType1Entry({ title: "T", version: o.version, kernelDir: `/EFI/Linux/bootc_composefs-${o.id}`, options: `rw composefs=${o.id}`, sortKey: o.sortKey ?? null, machineId: o.machineId ?? null }),
  };
}

describe("menu order", () => {
  test("systemd-boot: sort-key, machine-id, version descending, id, tries", () => {
    const es = [
      t1("n.conf", { id: id("1"), version: "9" }),
      t1("b.conf", { id: id("2"), version: "1", sortKey: "bootc-f-1" }),
      t1("a.conf", { id: id("3"), version: "1", sortKey: "bootc-f-0", machineId: "bb" }),
      t1("c.conf", { id: id("4"), version: "2", sortKey: "bootc-f-0", machineId: "aa" }),
      t1("d.conf", { id: id("5"), version: "10", sortKey: "bootc-f-0", machineId: "aa" }),
      t1("bad+0-3.conf", { id: id("6"), version: "99", sortKey: "bootc-f-0" }),
    ];
    expect(sortEntries(es, "systemd").map((e) => e.fileName)).toEqual(["d.conf", "c.conf", "a.conf", "b.conf", "n.conf", "bad+0-3.conf"]);
  });

  test("systemd-boot tie-breakers: id descending, then more tries left, fewer done", () => {
    const es = [t1("x-1.conf", { id: id("1"), version: "1" }), t1("x-2.conf", { id: id("2"), version: "1" }), t1("y+1-2.conf", { id: id("3"), version: "1" }), t1("y+2-1.conf", { id: id("4"), version: "1" }), t1("y+2-0.conf", { id: id("5"), version: "1" })];
    expect(sortEntries(es, "systemd").map((e) => e.fileName)).toEqual(["y+2-0.conf", "y+2-1.conf", "y+1-2.conf", "x-2.conf", "x-1.conf"]);
    expect(compareSystemdBoot(es[0]!, es[0]!)).toBe(0);
  });

  test("GRUB: file name descending, counters ignored, sort-key ignored", () => {
    const es = [t1("bootc_f-42-0.conf", { id: id("1"), version: "42", sortKey: "bootc-f-0" }), t1("bootc_f-42-1+2.conf", { id: id("2"), version: "42", sortKey: "bootc-f-1" }), t1("bootc_f-41-1.conf", { id: id("3"), version: "41" })];
    expect(sortEntries(es, "grub").map((e) => e.fileName)).toEqual(["bootc_f-42-1+2.conf", "bootc_f-42-0.conf", "bootc_f-41-1.conf"]);
    expect(sortEntries(es, "grub-cc").map((e) => e.fileName)).toEqual(sortEntries(es, "grub").map((e) => e.fileName));
    expect(compareGrub(es[0]!, es[0]!)).toBe(0);
  });

  test("property: sorting is a total order independent of input order", () => {
    const entryArb = fc.record({
      name: fc.stringMatching(/^[a-c]{1,3}(\+[0-2](-[0-2])?)?$/),
      version: fc.stringMatching(/^[0-9]{1,2}(\.[0-9])?$/),
      sortKey: fc.option(fc.constantFrom("k0", "k1"), { nil: null }),
    });
    fc.assert(
      fc.property(fc.uniqueArray(entryArb, { selector: (e) => e.name }), (specs) => {
        const es = specs.map((s, i) => t1(`${s.name}.conf`, { id: String(i % 10).repeat(128), version: s.version, sortKey: s.sortKey }));
        const a = sortEntries(es, "systemd").map((e) => e.fileName);
        const b = sortEntries([...es].reverse(), "systemd").map((e) => e.fileName);
        expect(a).toEqual(b);
        const g1 = sortEntries(es, "grub").map((e) => e.fileName);
        expect(sortEntries([...es].reverse(), "grub").map((e) => e.fileName)).toEqual(g1);
      }),
    );
  });

  test("effective default: one-shot, LoaderEntryDefault, loader.conf glob, else first", () => {
    const es = sortEntries([t1("bootc_f-2-1.conf", { id: id("1"), version: "2", sortKey: "bootc-f-0" }), t1("bootc_f-1-0.conf", { id: id("2"), version: "1", sortKey: "bootc-f-1" })], "systemd");
    expect(effectiveDefaultIndex(es)).toBe(0);
    expect(effectiveDefaultIndex(es, { loaderConfDefault: "bootc_f-1-*" })).toBe(1);
    expect(effectiveDefaultIndex(es, { entryDefault: "bootc_f-1-0.conf", loaderConfDefault: "nomatch" })).toBe(1);
    expect(effectiveDefaultIndex(es, { oneShot: "BOOTC_F-2-1.CONF", entryDefault: "bootc_f-1-0.conf" })).toBe(0);
    expect(effectiveDefaultIndex(es, { entryDefault: "missing.conf" })).toBe(0);
    expect(effectiveDefaultIndex(es, { entryDefault: "@saved" })).toBe(0);
    expect(effectiveDefaultIndex([])).toBeNull();
  });
});

describe("slots", () => {
  const A = id("a");
  const B = id("b");
  const C = id("c");
  const D = id("d");
  test.each([
    ["booted only", { menu: [A], bootedId: A, stagedId: null }, { default: A, booted: A, staged: null, rollback: null, others: [], rollbackQueued: false }],
    ["booted + rollback", { menu: [A, B], bootedId: A, stagedId: null }, { booted: A, rollback: B, rollbackQueued: false }],
    ["rollback queued: default is not booted", { menu: [B, A], bootedId: A, stagedId: null }, { default: B, booted: A, rollback: B, rollbackQueued: true }],
    ["staged from staged entries", { menu: [A, B], stagedMenu: [C, A], bootedId: A, stagedId: C }, { booted: A, staged: C, rollback: B, rollbackQueued: false }],
    ["marker without entry is not staged", { menu: [A, B], bootedId: A, stagedId: C }, { staged: null, rollback: B }],
    ["others in menu order, duplicates once", { menu: [A, C, B, C, D], bootedId: A, stagedId: null }, { rollback: C, others: [B, D], order: [A, C, B, D] }],
    ["not booted from any entry", { menu: [A, B], bootedId: D, stagedId: null }, { booted: null, rollback: A, others: [B], rollbackQueued: false }],
    ["effective default index", { menu: [A, B], defaultIndex: 1, bootedId: A, stagedId: null }, { default: B, rollbackQueued: true }],
    ["nothing", { menu: [], bootedId: null, stagedId: null }, { default: null, booted: null, rollback: null, others: [], rollbackQueued: false }],
  ])("%s", (_n, input, expected) => {
    expect(planSlots(input)).toMatchObject(expected);
  });

  test("property: every live id lands in exactly one slot", () => {
    const ids = fc.constantFrom(A, B, C, D);
    fc.assert(
      fc.property(fc.array(ids, { maxLength: 6 }), fc.option(ids, { nil: null }), fc.option(ids, { nil: null }), (menu, bootedId, stagedId) => {
        const s = planSlots({ menu, bootedId, stagedId });
        const slots = [s.booted, s.staged, s.rollback, ...s.others].filter((x) => x !== null);
        expect(new Set(slots).size).toBe(slots.length);
        for (const m of menu) expect(slots).toContain(m);
        expect(s.rollbackQueued).toBe(s.booted !== null && menu[0] !== s.booted);
      }),
    );
  });
});

describe("staging and rollback planners", () => {
  const A = id("a");
  const B = id("b");
  const C = id("c");
  const booted = t1("bootc_fedora-41-1.conf", { id: A, version: "41", sortKey: "bootc-fedora-0" });
  const newEntry = makeType1Entry({ title: "F 42", version: "42", kernelDir: `/EFI/Linux/bootc_composefs-${B}`, options: `rw composefs=${B}` });

  test("upgrade: new primary, booted re-keyed secondary with the new osid", () => {
    const [p, s] = planStagedEntries({ newEntry, osid: "fedora-coreos", booted });
    expect(p!.fileName).toBe("bootc_fedora_coreos-42-1.conf");
    expect(p!.entry.sortKey).toBe("bootc-fedora-coreos-0");
    expect(s!.fileName).toBe("bootc_fedora_coreos-41-0.conf");
    expect(s!.entry.sortKey).toBe("bootc-fedora-coreos-1");
    expect(s!.entry.options).toBe(booted.entry.options);
    // systemd-boot then boots the new entry first
    expect(sortEntries([s!, p!], "systemd")[0]!.fileName).toBe(p!.fileName);
    expect(sortEntries([s!, p!], "grub")[0]!.fileName).toBe(p!.fileName);
  });

  test("upgrade with boot counting: counter on the new entry only; an unblessed booted entry keeps its name", () => {
    const counted = { ...booted, fileName: "bootc_fedora-41-1+2-1.conf" };
    const [p, s] = planStagedEntries({ newEntry, osid: "fedora", booted: counted, newTries: 3 });
    expect(p!.fileName).toBe("bootc_fedora-42-1+3.conf");
    expect(s!.fileName).toBe("bootc_fedora-41-0+2-1.conf");
    const [, s2] = planStagedEntries({ newEntry, osid: "fedora", booted: counted, keepBootedFileName: true });
    expect(s2!.fileName).toBe("bootc_fedora-41-1+2-1.conf");
  });

  test("rollback of two entries keeps each entry's osid (upstream hard-codes bootc)", () => {
    const neu = t1("bootc_fedora-42-1.conf", { id: B, version: "42", sortKey: "bootc-fedora-0" });
    const old = t1("bootc_fedora-41-0.conf", { id: A, version: "41", sortKey: "bootc-fedora-1" });
    const sorted = sortEntries([old, neu], "systemd");
    const plan = planRollback({ sorted, bootedId: B });
    expect(plan.target).toBe(A);
    expect(plan.reverting).toBe(false);
    expect(plan.entries.map((e) => [e.fileName, e.entry.sortKey])).toEqual([
      ["bootc_fedora-41-1.conf", "bootc-fedora-0"],
      ["bootc_fedora-42-0.conf", "bootc-fedora-1"],
    ]);
    const after = sortEntries(plan.entries, "systemd");
    expect(entryDeploymentId(after[0]!.entry, after[0]!.fileName)).toBe(A);
    // rolling back again reverts the queued rollback
    const again = planRollback({ sorted: after, bootedId: B });
    expect(again.reverting).toBe(true);
    expect(again.target).toBe(B);
    expect(again.entries[0]!.fileName).toBe("bootc_fedora-42-1.conf");
  });

  test("rollback with three entries and colliding versions", () => {
    const e1 = t1("bootc_f-7-1.conf", { id: A, version: "7", sortKey: "bootc-f-0" });
    const e2 = t1("bootc_f-7-0.conf", { id: B, version: "7", sortKey: "bootc-f-1" });
    const e3 = t1("bootc_f-7-0x.conf", { id: C, version: "7", sortKey: "bootc-f-1" });
    const sorted = sortEntries([e1, e2, e3], "systemd");
    const plan = planRollback({ sorted, bootedId: A });
    expect(plan.target).toBe(entryDeploymentId(sorted[1]!.entry, ""));
    const names = plan.entries.map((e) => e.fileName);
    expect(new Set(names).size).toBe(3);
    expect(plan.entries.map((e) => e.entry.sortKey)).toEqual(["bootc-f-0", "bootc-f-1", "bootc-f-2"]);
    const after = sortEntries(plan.entries, "systemd").map((e) => entryDeploymentId(e.entry, e.fileName));
    expect(after.slice(0, 2)).toEqual([plan.target, A]);
  });

  test("rollback keeps counters and pinned names; refuses without a rollback", () => {
    const neu = t1("bootc_f-2-1+1-1.conf", { id: B, version: "2", sortKey: "bootc-f-0" });
    const old = t1("bootc_f-1-0.conf", { id: A, version: "1", sortKey: "bootc-f-1" });
    const plan = planRollback({ sorted: [neu, old], bootedId: B, keepFileNames: new Set(["bootc_f-2-1+1-1.conf"]) });
    expect(plan.entries.map((e) => e.fileName)).toEqual(["bootc_f-1-1.conf", "bootc_f-2-1+1-1.conf"]);
    const plan2 = planRollback({ sorted: [neu, old], bootedId: B });
    expect(plan2.entries.map((e) => e.fileName)).toEqual(["bootc_f-1-1.conf", "bootc_f-2-0+1-1.conf"]);
    expect(errorOf(() => planRollback({ sorted: [neu], bootedId: B })).what).toBe("no rollback available");
  });
});

describe("GRUB user.cfg", () => {
  const X = id("7");
  const expected = `
if [ -f \${config_directory}/efiuuid.cfg ]; then
        source \${config_directory}/efiuuid.cfg
fi
menuentry "Fedora Linux 42 42: (${X})" {
insmod fat
insmod chain
search --no-floppy --set=root --fs-uuid "\${EFI_PART_UUID}"
chainloader /EFI/Linux/bootc/bootc_composefs-${X}.efi
}
`;
  test("exact format for a UKI entry, and back", () => {
    const text = formatGrubUserCfg([grubMenuEntryForUki("Fedora Linux 42 42", X)]);
    expect(text).toBe(expected);
    const parsed = parseGrubUserCfg(text, "user.cfg");
    expect(parsed).toEqual([grubMenuEntryForUki("Fedora Linux 42 42", X)]);
    expect(grubMenuEntryId(parsed[0]!, "user.cfg")).toBe(X);
    expect(formatEfiUuidCfg("1234-ABCD")).toBe('set EFI_PART_UUID="1234-ABCD"');
  });

  test("titles with quotes, dollars and backslashes round-trip; nested blocks are kept", () => {
    const e = { ...grubMenuEntryForUki('My "OS" $HOME \\ x', X), extra: [["if", "[ -f x ]; then"], ["source", "x"], ["fi", ""]] as [string, string][] };
    const back = parseGrubUserCfg(formatGrubUserCfg([e, grubMenuEntryForUki("B", id("8"))]), "user.cfg");
    expect(back).toEqual([e, grubMenuEntryForUki("B", id("8"))]);
  });

  test("lenient with indentation and comments; strict errors name file and line", () => {
    const text = `# comment\nset timeout=5\n   menuentry "A" {\n      insmod fat\n      # c\n      chainloader /EFI/Linux/bootc/x.efi\n   }\n`;
    expect(parseGrubUserCfg(text, "user.cfg")).toEqual([{ title: "A", insmod: ["fat"], search: "", chainloader: "/EFI/Linux/bootc/x.efi", extra: [] }]);
    expect(parseGrubUserCfg("", "user.cfg")).toEqual([]);
    expect(errorOf(() => parseGrubUserCfg('\n\nmenuentry "A" {\ninsmod fat\n', "user.cfg")).message).toBe("user.cfg: line 3: unterminated menuentry (missing '}')");
    expect(errorOf(() => parseGrubUserCfg("menuentry A {\n}\n", "user.cfg")).what).toBe("menuentry without a double-quoted title");
    expect(errorOf(() => parseGrubUserCfg('menuentry "" {\n}\n', "user.cfg")).what).toBe("menuentry with an empty title");
  });
});
