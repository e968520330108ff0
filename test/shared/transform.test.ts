// shared/transform.ts: the OCI transform (oci.md §4), the boot transform
// (§5, incl. the mtime-seconds quirk) and boot resource discovery (§6).

import { describe, expect, test } from "vitest";

import { bstr } from "../../shared/bytes.ts";
import { writeDumpfile } from "../../shared/dumpfile.ts";
import { bootType, findBootResources, transformForBoot, transformForOci } from "../../shared/transform.ts";
import { externalFile, inlineFile, lookup, makeDir, makeLeaf, type Dir, type Leaf, type Stat } from "../../shared/tree.ts";

const x = (entries: [string, string][]) => new Map(entries.map(([k, v]) => [k, new Uint8Array(Buffer.from(v))]));

function dir(stat: Partial<Stat>, children: Record<string, Dir | Leaf> = {}): Dir {
  const d = makeDir(stat);
  for (const [k, v] of Object.entries(children)) d.entries.set(k, v);
  return d;
}
const f = (text: string, stat: Partial<Stat> = {}) => makeLeaf(inlineFile(new Uint8Array(Buffer.from(text))), stat);

function image(): Dir {
  return dir({ mode: 0o700, mtimeSec: 1 }, {
    usr: dir({ mode: 0o755, uid: 1, gid: 2, mtimeSec: 1_700_000_000, mtimeNsec: 123, xattrs: x([["security.capability", "c"], ["user.u", "u"], ["security.selinux", "host_t"]]) }, {
      lib: dir({}, { "os-release": f("ID=t\n") }),
    }),
    run: dir({ mtimeSec: 5, mtimeNsec: 6 }, { lock: dir({}), stub: f("s") }),
    etc: dir({}, { f: f("f", { xattrs: x([["security.capability", "cap"], ["user.keep", "k"], ["trusted.overlay.x", "t"], ["system.posix_acl_access", "a"]]) }) }),
    boot: dir({ mtimeSec: 3, mtimeNsec: 999 }, { vmlinuz: f("k") }),
    sysroot: dir({ mtimeSec: 4, mtimeNsec: 888, mode: 0o750 }, { ostree: dir({}) }),
  });
}

describe("OCI transform", () => {
  test("root metadata from /usr, /run emptied with /usr's mtime, allowlist-only xattrs", () => {
    const t = image();
    transformForOci(t);
    expect([t.stat.mode, t.stat.uid, t.stat.gid, t.stat.mtimeSec, t.stat.mtimeNsec]).toEqual([0o755, 1, 2, 1_700_000_000, 123]);
    expect([...t.stat.xattrs.keys()]).toEqual(["security.capability"]);
    const run = lookup(t, "/run") as Dir;
    expect(run.entries.size).toBe(0);
    expect([run.stat.mtimeSec, run.stat.mtimeNsec]).toEqual([1_700_000_000, 123]);
    expect([...lookup(t, "/etc/f")!.stat.xattrs.keys()]).toEqual(["security.capability"]);
    expect([...lookup(t, "/usr")!.stat.xattrs.keys()]).toEqual(["security.capability"]);
  });

  test("keep-user-xattrs keeps user.* as well", () => {
    const t = image();
    transformForOci(t, { xattrs: "keep-user-xattrs" });
    expect([...lookup(t, "/etc/f")!.stat.xattrs.keys()].sort()).toEqual(["security.capability", "user.keep"]);
    expect([...t.stat.xattrs.keys()].sort()).toEqual(["security.capability", "user.u"]);
  });

  test("an image without /usr is refused; /run as a symlink is refused", () => {
    expect(() => transformForOci(dir({}, { etc: dir({}) }))).toThrow(/no \/usr directory/);
    expect(() => transformForOci(dir({}, { usr: dir({}), run: makeLeaf({ type: "symlink", target: new Uint8Array([0x2f]) }) }))).toThrow(/\/run: not a directory/);
  });
});

describe("boot transform", () => {
  test("/boot and /sysroot emptied, mtime seconds from /usr, nanoseconds and modes kept; labels stripped without a policy", () => {
    const t = image();
    transformForOci(t);
    lookup(t, "/etc/f")!.stat.xattrs.set("security.selinux", new Uint8Array([0x61]));
    const r = transformForBoot(t, (l) => (l.content.type === "regular" ? l.content.inline : null));
    expect(r.selinux).toBe(false);
    const boot = lookup(t, "/boot") as Dir;
    const sysroot = lookup(t, "/sysroot") as Dir;
    expect([boot.entries.size, boot.stat.mtimeSec, boot.stat.mtimeNsec]).toEqual([0, 1_700_000_000, 999]);
    expect([sysroot.entries.size, sysroot.stat.mtimeSec, sysroot.stat.mtimeNsec, sysroot.stat.mode]).toEqual([0, 1_700_000_000, 888, 0o750]);
    expect(lookup(t, "/etc/f")!.stat.xattrs.has("security.selinux")).toBe(false);
    expect(Buffer.from(writeDumpfile(t)).toString()).toContain("/boot 0 40000 2 0 0 0 1700000000.999");
  });

  test("both /boot and /sysroot must exist", () => {
    const t = image();
    (t.entries as Map<string, unknown>).delete("sysroot");
    expect(() => transformForBoot(t, () => null)).toThrow(/no \/sysroot directory/);
  });
});

describe("boot resources", () => {
  const ext = (size: number) => makeLeaf(externalFile(new Uint8Array(64).fill(size & 0xff), BigInt(size)));
  const read = (l: Leaf) => (l.content.type === "regular" ? l.content.inline : null);

  function bootable(extra: (root: Dir) => void): Dir {
    const root = image();
    extra(root);
    return root;
  }

  test("UKIs (with their addons), global addons and kernels, in composefs-rs order", () => {
    const root = bootable((r) => {
      const boot = lookup(r, "/boot") as Dir;
      boot.entries.set("EFI", dir({}, { Linux: dir({}, { "os.efi": ext(100), "os.efi.extra.d": dir({}, { "debug.addon.efi": ext(70) }), "README": f("x") }) }));
      boot.entries.set("loader", dir({}, { addons: dir({}, { "g.addon.efi": ext(80) }) }));
      const lib = lookup(r, "/usr/lib") as Dir;
      lib.entries.set("modules", dir({}, {
        "6.2": dir({}, { vmlinuz: ext(200), "initramfs.img": ext(300), "uki.efi": ext(400) }),
        "6.1": dir({}, { vmlinuz: ext(201) }),
        "notadir": f("x"),
      }));
    });
    const res = findBootResources(root, read);
    expect(res.map((e) => (e.kind === "type2" ? `${e.peType} ${e.kver ?? "-"} ${e.path}` : e.kind === "kernel" ? `kernel ${e.kver} ${e.initramfs !== null}` : e.kind))).toEqual([
      "uki - os.efi",
      "uki-addon - os.efi.extra.d/debug.addon.efi",
      "global-addon - g.addon.efi",
      "uki 6.2 uki.efi",
      "kernel 6.1 false",
      "kernel 6.2 true",
    ]);
    const k = res.find((e) => e.kind === "kernel")!;
    expect(k.kind === "kernel" && k.osRelease !== null && bstr((k.osRelease.content as { inline: Uint8Array }).inline)).toBe("ID=t\n");
    expect(bootType(res)).toBe("uki");
    expect(bootType(res.filter((e) => e.kind === "kernel"))).toBe("bls");
    expect(() => bootType([])).toThrow(/no boot entries/);
  });

  test("Type 1 entries: their files must exist; bootc refuses them", () => {
    const root = bootable((r) => {
      const boot = lookup(r, "/boot") as Dir;
      boot.entries.set("loader", dir({}, { entries: dir({}, { "a.conf": f("title A\nlinux /vmlinuz-a\ninitrd /initrd-a\noptions ro\n"), "skip.txt": f("x") }) }));
      r.entries.set("vmlinuz-a", ext(100));
      r.entries.set("initrd-a", ext(100));
    });
    const res = findBootResources(root, read);
    expect(res).toHaveLength(1);
    expect(res[0]!.kind === "type1" && [...res[0]!.files.keys()]).toEqual(["/vmlinuz-a", "/initrd-a"]);
    expect(() => bootType(res)).toThrow(/Found Type1 entries in \/boot/);
    (root.entries as Map<string, unknown>).delete("initrd-a");
    expect(() => findBootResources(root, read)).toThrow(/\/boot\/loader\/entries\/a\.conf: \/initrd-a: no such file in the image/);
  });

  test("a non-regular .efi is an error", () => {
    const root = bootable((r) => {
      (lookup(r, "/boot") as Dir).entries.set("EFI", dir({}, { Linux: dir({}, { "x.efi": makeLeaf({ type: "symlink", target: new Uint8Array([0x61]) }) }) }));
    });
    expect(() => findBootResources(root, read)).toThrow(/\/boot\/EFI\/Linux\/x\.efi: is not a regular file/);
  });
});
