// shared/selabel.ts: file_contexts parsing, the PCRE-subset translation,
// last-match-wins lookup (checked against a brute-force matcher), subs,
// hardlink cloning, and the policy lookup in an image tree.

import { describe, expect, test } from "vitest";
import fc from "fast-check";

import { bstr } from "../../shared/bytes.ts";
import {
  SelinuxPolicy,
  loadPolicy,
  parseFileContexts,
  parseSelinuxConfig,
  parseSubs,
  relabel,
  selabel,
  translateRegex,
  type TypeChar,
} from "../../shared/selabel.ts";
import { inlineFile, lookup, makeDir, makeLeaf, type Dir, type Leaf } from "../../shared/tree.ts";

// Lines in the style of Fedora's targeted policy (file_contexts is generated
// from the modules' .fc files; these are representative real entries).
const FEDORA = `
/.*	system_u:object_r:default_t:s0
/[^/]+	--	system_u:object_r:etc_runtime_t:s0
/a?quota\\.(user|group)	--	system_u:object_r:quota_db_t:s0
/bin/.*	system_u:object_r:bin_t:s0
/boot	-d	system_u:object_r:boot_t:s0
/boot/.*	system_u:object_r:boot_t:s0
/dev	-d	system_u:object_r:device_t:s0
/dev/.*	system_u:object_r:device_t:s0
/dev/null	-c	system_u:object_r:null_device_t:s0
/dev/tty[0-9]*	-c	system_u:object_r:tty_device_t:s0
/dev/sd[^/]*	-b	system_u:object_r:fixed_disk_device_t:s0
/etc(/.*)?	system_u:object_r:etc_t:s0
/etc/shadow.*	--	system_u:object_r:shadow_t:s0
/etc/ssh/ssh_host.*_key	--	system_u:object_r:sshd_key_t:s0
/home	-d	system_u:object_r:home_root_t:s0
/home/[^/]+	-d	unconfined_u:object_r:user_home_dir_t:s0
/lib(/.*)?	system_u:object_r:lib_t:s0
/lost\\+found	-d	system_u:object_r:lost_found_t:s0
/proc	-d	<<none>>
/proc/.*	<<none>>
/run(/.*)?	system_u:object_r:var_run_t:s0
/tmp	-d	system_u:object_r:tmp_t:s0
/tmp/.*	<<none>>
/usr(/.*)?	system_u:object_r:usr_t:s0
/usr/bin(/.*)?	system_u:object_r:bin_t:s0
/usr/lib(/.*)?	system_u:object_r:lib_t:s0
/usr/lib/systemd/system(/.*)?	system_u:object_r:systemd_unit_file_t:s0
/usr/lib/systemd/system/[^/]*halt.*	--	system_u:object_r:power_unit_file_t:s0
/usr/lib/modules(/.*)?	system_u:object_r:modules_object_t:s0
/usr/(.*/)?lib(64)?/.*\\.so(\\.[^/]*)*	--	system_u:object_r:lib_t:s0
/usr/libexec/[^/]*-helper	--	system_u:object_r:bin_t:s0
/usr/share/[[:alpha:]]+/doc(/.*)?	system_u:object_r:usr_t:s0
/var(/.*)?	system_u:object_r:var_t:s0
/var/lib(/.*)?	system_u:object_r:var_lib_t:s0
/var/log(/.*)?	system_u:object_r:var_log_t:s0
/var/run	-l	system_u:object_r:var_run_t:s0
/var/spool/(?!mail).*	system_u:object_r:var_spool_t:s0
`;

describe("file_contexts parsing", () => {
  test("specs, types, comments and errors with file and line", () => {
    const specs = parseFileContexts("# comment\n\n/a\t--\tu:r:t:s0\n  /b   u:r:b:s0  \n/c -d <<none>>\n", "fc");
    expect(specs.map((s) => [s.regex, s.type, s.context, s.where])).toEqual([
      ["/a", "-", "u:r:t:s0", "fc: line 3"],
      ["/b", null, "u:r:b:s0", "fc: line 4"],
      ["/c", "d", "<<none>>", "fc: line 5"],
    ]);
    expect(() => parseFileContexts("/a -x u:r:t:s0\n", "fc")).toThrow(/fc: line 1: invalid file type code -x/);
    expect(() => parseFileContexts("/a\n", "fc")).toThrow(/fc: line 1: missing context/);
    expect(() => parseFileContexts("/a -- u:r:t:s0 extra\n", "fc")).toThrow(/fc: line 1: trailing data/);
    expect(() => parseFileContexts(new Uint8Array([0x2f, 0xff, 0x20, 0x78, 0x0a]), "fc")).toThrow(/fc: not valid UTF-8/);
  });

  test("subs and config", () => {
    expect([...parseSubs("# x\n/var/home /home\n/opt/local   /usr/local\n")]).toEqual([["/var/home", "/home"], ["/opt/local", "/usr/local"]]);
    expect(() => parseSubs("/a\n", "subs")).toThrow(/subs: line 1: missing original path/);
    expect(parseSelinuxConfig("# SELINUXTYPE=x\nSELINUX=enforcing\n selinuxtype = targeted \n")).toBe("targeted");
    expect(parseSelinuxConfig("SELINUX=disabled\n")).toBeNull();
  });
});

describe("PCRE subset → JavaScript", () => {
  const m = (p: string, s: string) => new RegExp(`^(?:${translateRegex(p).source})$`, "s").test(s);
  test("constructs real policies use", () => {
    expect(m("/usr/(.*/)?lib(64)?/.*\\.so(\\.[^/]*)*", "/usr/local/lib64/libx.so.1.2")).toBe(true);
    expect(m("/usr/(.*/)?lib(64)?/.*\\.so(\\.[^/]*)*", "/usr/lib/x.txt")).toBe(false);
    expect(m("/dev/tty[0-9]*", "/dev/tty12")).toBe(true);
    expect(m("/share/[[:alpha:]]+/doc", "/share/abc/doc")).toBe(true);
    expect(m("/share/[[:alpha:]]+/doc", "/share/a1/doc")).toBe(false);
    expect(m("/lost\\+found", "/lost+found")).toBe(true);
    expect(m("/a\\d{2,3}", "/a123")).toBe(true);
    expect(m("/a\\d{2,3}", "/a1234")).toBe(false);
    expect(m("/x\\s", "/x\u00a0")).toBe(false); // \s is ASCII only (bytes)
    expect(m("/spool/(?!mail).*", "/spool/mail")).toBe(false);
    expect(m("/spool/(?!mail).*", "/spool/cron")).toBe(true);
    expect(m("/a(?<=a)b", "/ab")).toBe(true);
    expect(m("/a(?>b+)b", "/abbb")).toBe(false); // atomic: no backtracking into the group
    expect(m("/a(?:b+)b", "/abbb")).toBe(true);
    expect(m("/a.b", "/a\nb")).toBe(true); // '.' matches every byte (Rust regex with line terminator NUL)
    expect(m("/q\\Q.*\\E", "/q.*")).toBe(true);
    expect(m("/lit{", "/lit{")).toBe(true);
  });

  test("literal prefixes (used to skip specs that cannot match)", () => {
    expect(translateRegex("/usr/lib/systemd/system(/.*)?").prefix).toBe("/usr/lib/systemd/system");
    expect(translateRegex("/dev/tty[0-9]*").prefix).toBe("/dev/tty");
    expect(translateRegex("/a?quota").prefix).toBe("/");
    expect(translateRegex("/a|/b").prefix).toBe("");
  });

  test("what cannot be translated faithfully is refused, naming the construct", () => {
    for (const [p, what] of [
      ["/a\\1", /unsupported escape \\1/],
      ["(?i)/a", /unsupported group construct/],
      ["/a\\p{L}", /unsupported escape \\p/],
      ["/[a[b]]", /'\[' inside a character class/],
      ["/[a&&b]", /set operations/],
      ["/a{,3}", /\{,n\}/],
      ["*a", /nothing to repeat/],
      ["/a**", /nested quantifier/],
      ["/(a", /missing '\)'/],
      ["/a)", /unmatched '\)'/],
      ["/\\x{100}", /above 0xff/],
    ] as const) {
      expect(() => translateRegex(p, "fc: line 9"), p).toThrow(what);
      expect(() => translateRegex(p, "fc: line 9"), p).toThrow(/^fc: line 9: regular expression/);
    }
    expect(() => new SelinuxPolicy(parseFileContexts("/ok u:r:t:s0\n/bad\\k<x> u:r:t:s0\n", "file_contexts"))).toThrow(/file_contexts: line 2/);
  });
});

describe("lookup", () => {
  const policy = new SelinuxPolicy(parseFileContexts(FEDORA, "file_contexts"));
  test("last match wins, types select, <<none>> unlabels", () => {
    const cases: [string, TypeChar, string | null][] = [
      ["/", "d", "system_u:object_r:default_t:s0"],
      ["/usr/bin/bash", "-", "system_u:object_r:bin_t:s0"],
      ["/usr/lib/systemd/system/sshd.service", "-", "system_u:object_r:systemd_unit_file_t:s0"],
      ["/usr/lib/systemd/system/halt.target", "-", "system_u:object_r:power_unit_file_t:s0"],
      ["/usr/lib/systemd/system/halt.target.wants", "d", "system_u:object_r:systemd_unit_file_t:s0"],
      ["/usr/lib64/libc.so.6", "-", "system_u:object_r:lib_t:s0"],
      ["/usr/lib/modules/6.1/vmlinuz", "-", "system_u:object_r:modules_object_t:s0"],
      ["/etc/shadow", "-", "system_u:object_r:shadow_t:s0"],
      ["/etc/shadow", "d", "system_u:object_r:etc_t:s0"],
      ["/etc/ssh/ssh_host_ed25519_key", "-", "system_u:object_r:sshd_key_t:s0"],
      ["/dev/null", "c", "system_u:object_r:null_device_t:s0"],
      ["/dev/null", "-", "system_u:object_r:device_t:s0"],
      ["/dev/sda1", "b", "system_u:object_r:fixed_disk_device_t:s0"],
      ["/home/alice", "d", "unconfined_u:object_r:user_home_dir_t:s0"],
      ["/proc/1", "d", null],
      ["/tmp/x", "-", null],
      ["/var/run", "l", "system_u:object_r:var_run_t:s0"],
      ["/var/spool/mail", "d", "system_u:object_r:var_t:s0"],
      ["/var/spool/cron", "d", "system_u:object_r:var_spool_t:s0"],
      ["/.autorelabel", "-", "system_u:object_r:etc_runtime_t:s0"],
      ["/aquota.user", "-", "system_u:object_r:quota_db_t:s0"],
      ["/usr/share/abc/doc/x", "-", "system_u:object_r:usr_t:s0"],
    ];
    for (const [p, t, want] of cases) expect(policy.lookup(p, t), `${p} ${t}`).toBe(want);
  });

  test("agrees with a brute-force matcher (every spec tried, newest first) on random paths", () => {
    const specs = policy.specs;
    const brute = (path: string, t: TypeChar) => {
      for (let i = specs.length - 1; i >= 0; i--) {
        const s = specs[i]!;
        const re = new RegExp(`^(?:${translateRegex(s.regex).source})${s.type === null ? "." : s.type === "-" ? "-" : s.type}$`, "s");
        if (re.test(path + t)) return i;
      }
      return -1;
    };
    const comp = fc.constantFrom("usr", "lib", "lib64", "bin", "etc", "shadow", "systemd", "system", "dev", "tty1", "sda", "null", "var", "spool", "mail", "home", "x.so.1", "halt.t", "a-helper", "libexec", "share", "doc", "", "lost+found", "aquota.user");
    const path = fc.array(comp, { minLength: 1, maxLength: 6 }).map((a) => "/" + a.filter((c) => c !== "").join("/"));
    const type = fc.constantFrom<TypeChar>("-", "d", "l", "c", "b", "p", "s");
    fc.assert(fc.property(path, type, (p, t) => policy.matchIndex(p, t) === brute(p, t)), { numRuns: 2000 });
  });
});

function tree(): { root: Dir; hl: Leaf } {
  const root = makeDir({ mode: 0o755 });
  const usr = makeDir({ mode: 0o755 });
  const bin = makeDir();
  const hl = makeLeaf(inlineFile(new Uint8Array([1])), { mode: 0o755, xattrs: new Map([["security.selinux", new Uint8Array(Buffer.from("stale"))]]) });
  bin.entries.set("a", hl);
  usr.entries.set("bin", bin);
  const etc = makeDir();
  etc.entries.set("a-link", hl);
  const varD = makeDir();
  const home = makeDir();
  home.entries.set("alice", makeDir());
  varD.entries.set("home", home);
  root.entries.set("usr", usr);
  root.entries.set("etc", etc);
  root.entries.set("var", varD);
  return { root, hl };
}

const label = (root: Dir, p: string) => {
  const n = lookup(root, p)!;
  const v = n.stat.xattrs.get("security.selinux");
  return v === undefined ? null : bstr(v);
};

describe("relabelling a tree", () => {
  const policy = new SelinuxPolicy(
    parseFileContexts("/.*\tu:r:default_t:s0\n/usr(/.*)?\tu:r:usr_t:s0\n/etc(/.*)?\tu:r:etc_t:s0\n/home/[^/]+\t-d\tu:r:home_dir_t:s0\n"),
    parseSubs("/var/home /home\n"),
  );
  test("labels every node; a hardlink needing another label gets its own copy", () => {
    const { root, hl } = tree();
    relabel(root, policy);
    expect(label(root, "/")).toBe("u:r:default_t:s0");
    expect(label(root, "/etc/a-link")).toBe("u:r:etc_t:s0");
    expect(label(root, "/usr/bin/a")).toBe("u:r:usr_t:s0");
    // /etc/a-link comes first in the walk and keeps the original leaf; /usr/bin/a is a copy.
    expect(lookup(root, "/etc/a-link")).toBe(hl);
    expect(lookup(root, "/usr/bin/a")).not.toBe(hl);
    // Substitutions: /var/home is looked up as /home, and its children under /home/…
    expect(label(root, "/var/home/alice")).toBe("u:r:home_dir_t:s0");
  });

  test("the same label keeps the hardlink", () => {
    const { root, hl } = tree();
    relabel(root, new SelinuxPolicy(parseFileContexts("/.* u:r:all_t:s0\n")));
    expect(lookup(root, "/usr/bin/a")).toBe(hl);
    expect(lookup(root, "/etc/a-link")).toBe(hl);
  });

  const withPolicy = (config: string | null, fc: string | null): Dir => {
    const { root } = tree();
    const etc = lookup(root, "/etc") as Dir;
    if (config !== null) {
      const se = makeDir();
      se.entries.set("config", makeLeaf(inlineFile(new Uint8Array(Buffer.from(config)))));
      if (fc !== null) {
        const files = makeDir();
        files.entries.set("file_contexts", makeLeaf(inlineFile(new Uint8Array(Buffer.from(fc)))));
        files.entries.set("file_contexts.local", makeLeaf(inlineFile(new Uint8Array(Buffer.from("/etc/a-link u:r:local_t:s0\n")))));
        const ctx = makeDir();
        ctx.entries.set("files", files);
        const pol = makeDir();
        pol.entries.set("contexts", ctx);
        se.entries.set("targeted", pol);
      }
      etc.entries.set("selinux", se);
    }
    return root;
  };
  const read = (l: Leaf) => (l.content.type === "regular" ? l.content.inline : null);

  test("the image's own policy is used, .local overrides; no policy strips every label", () => {
    const root = withPolicy("SELINUXTYPE=targeted\n", "/.* u:r:default_t:s0\n/etc(/.*)? u:r:etc_t:s0\n");
    expect(selabel(root, read)).toBe(true);
    expect(label(root, "/etc/a-link")).toBe("u:r:local_t:s0");
    const none = withPolicy(null, null);
    expect(selabel(none, read)).toBe(false);
    expect(label(none, "/usr/bin/a")).toBeNull();
    const noType = withPolicy("SELINUX=enforcing\n", null);
    expect(loadPolicy(noType, read)).toBeNull();
    expect(() => loadPolicy(withPolicy("SELINUXTYPE=targeted\n", null), read)).toThrow(/no such directory in the image/);
  });
});
