// The shared tree test helpers do what they promise: arbTree covers every
// feature (and honours its options), diffTrees finds every kind of difference.

import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { parseDumpfile, writeDumpfile } from "../../shared/dumpfile.ts";
import { cloneTree, countLinks, type Dir, type Leaf, type Node, objectPath } from "../../shared/tree.ts";
import { arbTree, type TreeArbOptions } from "./arbitrary-tree.ts";
import { diffTrees } from "./tree-compare.ts";

interface Stats {
  features: Set<string>;
  paths: string[];
}

function stats(root: Dir): Stats {
  const features = new Set<string>();
  const paths: string[] = [];
  const links = countLinks(root);
  const leafDirs = new Map<Leaf, Set<Dir>>();
  const visit = (dir: Dir, prefix: string, depth: number): void => {
    if (dir.entries.size === 0) features.add("empty dir");
    if (depth >= 2) features.add("depth 2");
    for (const [name, child] of dir.entries) {
      const path = prefix + name;
      paths.push(path);
      if (/[^\x21-\x7e]/.test(name)) features.add("odd name");
      if (name.length > 100) features.add("long name");
      note(child);
      if (child.kind === "dir") {
        features.add("dir");
        visit(child, path + "/", depth + 1);
      } else {
        let ds = leafDirs.get(child);
        if (ds === undefined) leafDirs.set(child, (ds = new Set()));
        ds.add(dir);
        const c = child.content;
        if (c.type === "regular") {
          if (c.inline !== null) features.add(c.inline.byteLength > 64 ? "inline > 64" : c.inline.byteLength === 0 ? "empty file" : "inline");
          else if (c.digest !== null) {
            features.add(`external ${c.digest.byteLength}`);
            expect(c.payload).toBe(objectPath(c.digest));
          } else features.add("sparse");
        } else if (c.type === "chr" && c.rdev === 0) {
          features.add("whiteout");
          expect(links.get(child)).toBe(1);
        } else {
          features.add(c.type);
        }
        if ((links.get(child) ?? 0) > 1) features.add("hardlink");
        expect(child.nlink).toBeUndefined();
      }
    }
  };
  const note = (n: Node): void => {
    const s = n.stat;
    if (s.mtimeNsec !== 0) features.add("nsec");
    if (s.uid > 65535 || s.gid > 65535) features.add("big id");
    if (s.mode & 0o7000) features.add("setuid/setgid/sticky");
    for (const k of s.xattrs.keys()) {
      const prefix = /^(trusted\.overlay\.|user\.overlay\.|system\.posix_acl_(access|default)$|security\.selinux$|user\.|trusted\.|security\.|lustre\.|nonsense|system\.foo)/.exec(k)?.[0];
      features.add(`xattr ${prefix ?? "other"}`);
      if (n.kind === "leaf" && n.content.type !== "regular" && k.startsWith("user.")) features.add("user xattr on special");
    }
  };
  note(root);
  visit(root, "/", 0);
  for (const ds of leafDirs.values()) if (ds.size > 1) features.add("hardlink across dirs");
  return { features, paths };
}

function collect(opts: TreeArbOptions, runs: number): Set<string> {
  const all = new Set<string>();
  for (const t of fc.sample(arbTree(opts), { numRuns: runs, seed: 42 })) for (const f of stats(t).features) all.add(f);
  return all;
}

describe("arbTree", () => {
  test("covers every feature composefs trees have", () => {
    const f = collect({ size: "medium" }, 120);
    for (const want of [
      "dir", "empty dir", "depth 2", "inline", "inline > 64", "empty file", "external 32", "sparse", "symlink",
      "chr", "blk", "whiteout", "fifo", "socket", "hardlink", "hardlink across dirs", "odd name", "long name",
      "nsec", "big id", "setuid/setgid/sticky", "xattr user.", "xattr trusted.", "xattr security.", "xattr security.selinux",
      "xattr system.posix_acl_access", "xattr system.posix_acl_default", "xattr trusted.overlay.", "xattr user.overlay.",
      "user xattr on special",
    ]) {
      expect(f.has(want), want).toBe(true);
    }
    expect(f.has("xattr lustre.") || f.has("xattr nonsense") || f.has("xattr system.foo")).toBe(false);
  });

  test("options switch features off (and on)", () => {
    const off = collect({
      size: "medium", mtimeNsec: false, maxHardlinks: 0, whiteouts: false, devices: false, bigIds: false,
      oddNames: false, userXattrsOnSpecial: false, overlayXattrs: false, largeInline: false, aclXattrs: false,
    }, 80);
    for (const gone of ["nsec", "hardlink", "whiteout", "chr", "blk", "big id", "odd name", "long name", "user xattr on special",
      "xattr trusted.overlay.", "xattr user.overlay.", "inline > 64", "xattr system.posix_acl_access"]) {
      expect(off.has(gone), gone).toBe(false);
    }
    expect(off.has("symlink") && off.has("external 32") && off.has("dir")).toBe(true);
    const on = collect({ size: "medium", unknownXattrPrefixes: true, digestSize: 64 }, 80);
    expect(on.has("external 64") && !on.has("external 32")).toBe(true);
    expect(on.has("xattr lustre.") || on.has("xattr nonsense") || on.has("xattr system.foo")).toBe(true);
  });

  test("size knobs change the tree size; paths stay within limits", () => {
    const count = (opts: TreeArbOptions): number => {
      let n = 0;
      for (const t of fc.sample(arbTree(opts), { numRuns: 20, seed: 7 })) {
        const { paths } = stats(t);
        n += paths.length;
        for (const p of paths) expect(p.length).toBeLessThanOrEqual(4096);
      }
      return n / 20;
    };
    const small = count({ size: "small" }), large = count({ size: "large" });
    expect(large).toBeGreaterThan(small * 5);
    expect(count({ maxDepth: 0, maxEntries: 3, maxHardlinks: 0 })).toBeLessThanOrEqual(3);
  });

  test("trees are fresh objects and valid strict dumpfile input", () => {
    const [a, b] = fc.sample(arbTree({ size: "small" }), { numRuns: 2, seed: 1 });
    expect(a).not.toBe(b);
    fc.assert(fc.property(arbTree({ size: "small" }), (t) => {
      expect(() => parseDumpfile(writeDumpfile(t), { mode: "strict" })).not.toThrow();
    }), { numRuns: 100 });
  });
});

describe("diffTrees", () => {
  const base = (): Dir =>
    parseDumpfile(new Uint8Array(Buffer.from([
      "/ 0 40755 2 0 0 0 1.5 - - -",
      "/d 0 40755 2 0 0 0 0.0 - - - user.a=1 trusted.overlay.opaque=y",
      "/d/f 5 100644 2 1 2 0 3.4 - hello - user.x=1",
      "/d/ext 9 100644 1 0 0 0 0.0 ab/" + "ab".repeat(31) + " - " + "ab".repeat(32),
      "/h 0 @120000 - - - - 0.0 /d/f - -",
      "/l 1 120777 1 0 0 0 0.0 t - -",
      "/c 0 20644 1 0 0 259 0.0 - - -",
      "",
    ].join("\n"))), { mode: "strict" });
  const f = (t: Dir): Leaf => (t.entries.get("d") as Dir).entries.get("f") as Leaf;

  test("identical and cloned trees have no differences", () => {
    expect(diffTrees(base(), base())).toEqual([]);
    const t = base();
    expect(diffTrees(t, cloneTree(t))).toEqual([]);
  });

  const cases: [string, (t: Dir) => void, RegExp, Parameters<typeof diffTrees>[2]?][] = [
    ["mtime nsec", (t) => { f(t).stat.mtimeNsec = 9; }, /^\/d\/f: mtime 3\.4 \(a\) vs 3\.9 \(b\)$/, { ignoreNsec: true }],
    ["mtime sec", (t) => { t.stat.mtimeSec = 2; }, /^\/: mtime 1\.5 \(a\) vs 2\.5 \(b\)$/, { ignoreMtime: true }],
    ["uid", (t) => { f(t).stat.uid = 9; }, /^\/d\/f: uid 1 \(a\) vs 9 \(b\)$/, { ignoreOwnership: true }],
    ["mode", (t) => { f(t).stat.mode = 0o600; }, /^\/d\/f: mode 644 \(a\) vs 600 \(b\)$/, { ignoreMode: true }],
    ["xattr value", (t) => { f(t).stat.xattrs.set("user.x", new Uint8Array([2])); }, /^\/d\/f: xattr user\.x: "1" \(a\) vs 02 \(1 bytes\) \(b\)$/, { ignoreXattr: ["user.x"] }],
    ["xattr removed", (t) => { (t.entries.get("d") as Dir).stat.xattrs.delete("trusted.overlay.opaque"); }, /^\/d: xattr trusted\.overlay\.opaque: "y" \(a\) vs missing \(b\)$/, { ignoreXattr: ["trusted.overlay.*"] }],
    ["inline content", (t) => { (f(t).content as { inline: Uint8Array }).inline = new Uint8Array(Buffer.from("jello")); }, /^\/d\/f: inline content "hello" \(a\) vs "jello" \(b\)$/],
    ["digest", (t) => { const e = (t.entries.get("d") as Dir).entries.get("ext") as Leaf; (e.content as { digest: Uint8Array }).digest = new Uint8Array(32); }, /^\/d\/ext: digest abab.* \(a\) vs 0000.* \(b\)$/],
    ["payload", (t) => { const e = (t.entries.get("d") as Dir).entries.get("ext") as Leaf; (e.content as { payload: string }).payload = "x"; }, /^\/d\/ext: payload ab\/abab.* \(a\) vs x \(b\)$/, { ignorePayload: true }],
    ["symlink target", (t) => { (t.entries.get("l") as Leaf).content = { type: "symlink", target: new Uint8Array([0x75]) }; }, /^\/l: symlink target "t" \(a\) vs "u" \(b\)$/],
    ["rdev", (t) => { (t.entries.get("c") as Leaf).content = { type: "chr", rdev: 1 }; }, /^\/c: rdev 259 \(a\) vs 1 \(b\)$/],
    ["type", (t) => { (t.entries.get("c") as Leaf).content = { type: "blk", rdev: 259 }; }, /^\/c: type chr \(a\) vs blk \(b\)$/],
    ["nlink", (t) => { f(t).nlink = 5; }, /^\/d\/f: nlink 2 \(a\) vs 5 \(b\)$/, { ignoreNlink: true }],
    ["missing entry", (t) => { t.entries.delete("l"); }, /^\/l: only in a$/],
    ["extra entry", (t) => { t.entries.set("new", t.entries.get("l")!); }, /^\/new: only in b$/],
    ["hardlink split", (t) => { const leaf = f(t); t.entries.set("h", { ...leaf, stat: { ...leaf.stat, xattrs: new Map(leaf.stat.xattrs) } }); },
      /^\/d\/f: hardlinked with \[\/d\/f, \/h\] \(a\) vs \[\/d\/f\] \(b\)$/, { ignoreHardlinks: true, ignoreNlink: true }],
  ];

  test.each(cases)("reports %s (path + field), and the option hides it", (_, mutate, want, hide) => {
    const a = base();
    const b = base();
    mutate(b);
    const d = diffTrees(a, b);
    expect(d.length).toBeGreaterThan(0);
    expect(d.some((line) => want.test(line)), d.join("\n")).toBe(true);
    if (hide !== undefined) expect(diffTrees(a, b, hide)).toEqual([]);
  });

  test("an empty inline file equals a size-0 file without content; maxDiffs caps the list", () => {
    const a = base();
    const b = base();
    (a.entries.get("d") as Dir).entries.set("e", { kind: "leaf", stat: f(a).stat, content: { type: "regular", size: 0n, inline: new Uint8Array(0), digest: null, payload: null } });
    (b.entries.get("d") as Dir).entries.set("e", { kind: "leaf", stat: f(a).stat, content: { type: "regular", size: 0n, inline: null, digest: null, payload: null } });
    expect(diffTrees(a, b)).toEqual([]);
    for (let i = 0; i < 10; i++) b.entries.set(`x${i}`, b.entries.get("l")!);
    expect(diffTrees(a, b, { maxDiffs: 3, ignoreHardlinks: true, ignoreNlink: true })).toHaveLength(4);
  });
});
