// The OCI image fixture (test/helpers/oci-image.ts) is checked by independent
// tools, so later tests can trust it: GNU tar extracts a layer to exactly the
// declared files, umoci unpacks the whole image (whiteouts, opaque dirs,
// hardlinks, devices, xattrs, ns mtimes) to exactly the declared tree, and
// shared/tar.ts reads the layers back to the specs.

import { describe, expect, test, beforeAll, afterAll } from "vitest";
import { chmodSync, mkdtempSync, rmSync, lstatSync, readFileSync, readdirSync, readlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";

import { buildImage, entryContent, DEFAULT_MTIME, type ImageSpec, type LayerEntry, type BuiltImage } from "../helpers/oci-image.ts";
import { readTar, makedev } from "../../shared/tar.ts";
import { canRun, hasTool, isRoot } from "../helpers/env.ts";

const cap = new Uint8Array([0x00, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
const longDir = "usr/share/" + "l".repeat(150);

const spec: ImageSpec = {
  layers: [
    {
      compression: "gzip",
      entries: [
        { type: "dir", path: "usr" },
        { type: "dir", path: "usr/bin", mode: 0o750, uid: 1000, gid: 1001, mtime: { sec: 1_700_000_100, nsec: 250_000_000 } },
        { type: "file", path: "usr/bin/tool", content: "#!/bin/sh\necho tool\n", mode: 0o4755, mtime: { sec: 1_700_000_200, nsec: 123_456_789 }, xattrs: { "security.capability": cap, "user.note": "hello" } },
        { type: "hardlink", path: "usr/bin/tool2", target: "usr/bin/tool" },
        { type: "symlink", path: "usr/bin/sh", target: "tool", mtime: 1_700_000_300 },
        { type: "dir", path: "usr/lib" },
        { type: "file", path: "usr/lib/big", size: 300_000, uid: 7, gid: 8, mtime: { sec: 1_600_000_000, nsec: 1 } },
        { type: "chr", path: "usr/null", major: 1, minor: 3, mode: 0o666 },
        { type: "blk", path: "usr/bigdev", major: 259, minor: 70_000, mode: 0o600 },
        { type: "fifo", path: "usr/fifo", mode: 0o620 },
        { type: "dir", path: "usr/share" },
        { type: "dir", path: longDir },
        { type: "file", path: `${longDir}/file-with-a-long-path`, content: "deep" },
        { type: "file", path: "usr/share/\u00e9t\u00e9.txt", content: "utf-8 name" },
        { type: "dir", path: "etc" },
        { type: "file", path: "etc/old", content: "old" },
        { type: "file", path: "etc/keep", content: "keep", mode: 0o600 },
        { type: "dir", path: "etc/sub" },
        { type: "file", path: "etc/sub/x", content: "x" },
        { type: "dir", path: "opt" },
        { type: "file", path: "opt/a", content: "a" },
        { type: "file", path: "opt/b", content: "b" },
      ],
    },
    {
      compression: "zstd",
      entries: [
        { type: "whiteout", path: "etc/old" },
        { type: "whiteout", path: "etc/sub" },
        { type: "opaque", path: "opt" },
        { type: "file", path: "opt/c", content: "c" },
        { type: "file", path: "usr/bin/tool", content: "replaced\n", mode: 0o755 },
      ],
    },
    {
      compression: "none",
      format: "gnu",
      recordPadding: true,
      entries: [
        { type: "dir", path: "usr/gnu" },
        { type: "file", path: "usr/gnu/" + "g".repeat(120), content: "gnu long name", uid: 3_000_000 },
      ],
    },
  ],
  labels: { "containers.bootc": "1" },
  annotations: { "org.opencontainers.image.version": "7" },
};

type Node = { e: Exclude<LayerEntry, { type: "whiteout" | "opaque" }>; ino: number; dirty: boolean };

/** The tree a runtime should produce: layers applied with whiteouts and hardlink semantics. */
function expectedTree(layers: ImageSpec["layers"]): Map<string, Node> {
  const tree = new Map<string, Node>();
  let ino = 0;
  const parent = (p: string) => p.slice(0, Math.max(0, p.lastIndexOf("/")));
  const dirty = (p: string) => {
    const n = tree.get(parent(p));
    if (n) n.dirty = true;
  };
  const removeTree = (p: string) => {
    for (const k of [...tree.keys()]) if (k === p || k.startsWith(p + "/")) tree.delete(k);
  };
  for (const l of layers) {
    for (const e of l.entries) {
      const p = e.path.replace(/\/+$/, "");
      dirty(p);
      if (e.type === "whiteout") removeTree(p);
      else if (e.type === "opaque") {
        for (const k of [...tree.keys()]) if (k.startsWith(p + "/")) tree.delete(k);
      } else if (e.type === "hardlink") {
        const t = tree.get(e.target)!;
        tree.set(p, { e: t.e, ino: t.ino, dirty: false });
      } else if (e.type === "dir" && tree.get(p)?.e.type === "dir") {
        tree.set(p, { e, ino: tree.get(p)!.ino, dirty: false });
      } else {
        removeTree(p);
        tree.set(p, { e, ino: ino++, dirty: false });
      }
    }
  }
  return tree;
}

function xattrsOf(path: string): Map<string, string> {
  const r = spawnSync("getfattr", ["-h", "-d", "-m", "-", "-e", "hex", "--absolute-names", path]);
  const out = new Map<string, string>();
  for (const line of r.stdout.toString().split("\n")) {
    const m = /^([^#=][^=]*)=0x([0-9a-f]*)$/.exec(line);
    if (m) out.set(m[1]!, m[2]!);
  }
  return out;
}

/** Compare an extracted directory with the expected tree; returns a list of differences. */
function compareTree(root: string, tree: Map<string, Node>, opts: { checkDirMtime: boolean }): string[] {
  const diffs: string[] = [];
  const seen = new Set<string>();
  const walk = (rel: string) => {
    for (const name of readdirSync(join(root, rel))) {
      const p = rel ? `${rel}/${name}` : name;
      seen.add(p);
      if (lstatSync(join(root, p)).isDirectory()) walk(p);
    }
  };
  walk("");
  for (const p of seen) if (!tree.has(p)) diffs.push(`unexpected ${p}`);
  const inodes = new Map<number, number>();
  for (const [p, { e, ino, dirty }] of tree) {
    if (!seen.has(p)) {
      diffs.push(`missing ${p}`);
      continue;
    }
    const f = join(root, p);
    const st = lstatSync(f, { bigint: true });
    const want = (what: string, a: unknown, b: unknown) => a !== b && diffs.push(`${p}: ${what} ${String(a)} != ${String(b)}`);
    const t = typeof e.mtime === "number" ? { sec: e.mtime, nsec: 0 } : e.mtime ?? { sec: DEFAULT_MTIME, nsec: 0 };
    if (e.type !== "dir" || (opts.checkDirMtime && !dirty)) want("mtime", st.mtimeNs, BigInt(t.sec) * 1_000_000_000n + BigInt(t.nsec));
    if (e.type !== "symlink") want("mode", Number(st.mode & 0o7777n), e.mode ?? (e.type === "dir" ? 0o755 : 0o644));
    want("uid", Number(st.uid), e.uid ?? 0);
    want("gid", Number(st.gid), e.gid ?? 0);
    switch (e.type) {
      case "file":
        want("type", st.isFile(), true);
        want("content", createHash("sha256").update(readFileSync(f)).digest("hex"), createHash("sha256").update(entryContent(e)).digest("hex"));
        break;
      case "dir":
        want("type", st.isDirectory(), true);
        break;
      case "symlink":
        want("target", readlinkSync(f), e.target);
        break;
      case "chr":
      case "blk":
        want("type", e.type === "chr" ? st.isCharacterDevice() : st.isBlockDevice(), true);
        want("rdev", Number(st.rdev), makedev(e.major, e.minor));
        break;
      case "fifo":
        want("type", st.isFIFO(), true);
        break;
    }
    if (inodes.has(ino)) want("hardlink inode", Number(st.ino), inodes.get(ino));
    else inodes.set(ino, Number(st.ino));
    const xa = xattrsOf(f);
    for (const [k, v] of Object.entries(e.xattrs ?? {})) {
      want(`xattr ${k}`, xa.get(k), Buffer.from(typeof v === "string" ? Buffer.from(v) : v).toString("hex"));
    }
  }
  return diffs;
}

let work: string;
let img: BuiltImage;
beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "cfsboot-fixture-"));
  img = buildImage(join(work, "layout"), spec, { tag: "latest" });
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe("OCI image fixture", () => {
  test("config and manifest carry diff_ids, labels, annotations and media types", () => {
    const config = JSON.parse(Buffer.from(img.config).toString());
    expect(config.rootfs.diff_ids).toEqual(img.layers.map((l) => "sha256:" + createHash("sha256").update(l.tar).digest("hex")));
    expect(config.config.Labels).toEqual({ "containers.bootc": "1" });
    const manifest = JSON.parse(Buffer.from(img.manifest).toString());
    expect(manifest.annotations["org.opencontainers.image.version"]).toBe("7");
    expect(manifest.layers.map((l: { mediaType: string }) => l.mediaType)).toEqual([
      "application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.oci.image.layer.v1.tar+zstd", "application/vnd.oci.image.layer.v1.tar",
    ]);
    expect(img.layers[2]!.tar.length % 10240).toBe(0);
  });

  test("shared/tar.ts reads every layer back to its spec", async () => {
    for (const [i, l] of spec.layers.entries()) {
      const got: string[] = [];
      for await (const ev of readTar([img.layers[i]!.tar])) if (ev.kind === "entry") got.push(`${ev.entry.type} ${ev.entry.path}`);
      const want = l.entries.map((e) => {
        const p = "/" + e.path.replace(/\/+$/, "");
        const name = p.slice(p.lastIndexOf("/") + 1);
        const dir = p.slice(0, p.lastIndexOf("/"));
        if (e.type === "whiteout") return `regular ${Buffer.from(`${dir}/.wh.${name}`, "utf8").toString("latin1")}`;
        if (e.type === "opaque") return `regular ${p}/.wh..wh..opq`;
        const t = e.type === "file" ? "regular" : e.type;
        return `${t} ${Buffer.from(p, "utf8").toString("latin1")}`;
      });
      expect(got).toEqual(want);
    }
  });

  test("GNU tar extracts layer 1 to exactly the declared files", () => {
    if (!canRun(isRoot && hasTool("tar") && hasTool("getfattr"), "needs root, GNU tar and getfattr (attr)")) return;
    const out = mkdtempSync(join(work, "gnutar-"));
    const r = spawnSync("tar", ["--xattrs", "--xattrs-include=*", "--numeric-owner", "--same-permissions", "-xf", "-", "-C", out], { input: img.layers[0]!.tar });
    expect(r.status, r.stderr.toString()).toBe(0);
    expect(compareTree(out, expectedTree(spec.layers.slice(0, 1)), { checkDirMtime: true })).toEqual([]);
  });

  test("umoci unpacks the image to exactly the declared tree", () => {
    if (!canRun(isRoot && hasTool("umoci") && hasTool("getfattr"), "needs root, umoci and getfattr (attr)")) return;
    // umoci 0.4.7 (Debian 12) has no zstd: the same layers gzip-compressed
    // (identical tars, hence identical diff_ids).
    const gz = buildImage(join(work, "layout-gzip"), { ...spec, layers: spec.layers.map((l) => ({ ...l, compression: l.compression === "zstd" ? "gzip" : l.compression })) }, { tag: "latest" });
    expect(gz.layers.map((l) => l.diffId)).toEqual(img.layers.map((l) => l.diffId));
    const bundle = join(work, "bundle");
    const r = spawnSync("umoci", ["unpack", "--image", `${gz.dir}:latest`, bundle]);
    expect(r.status, r.stderr.toString()).toBe(0);
    const diffs = compareTree(join(bundle, "rootfs"), expectedTree(spec.layers), { checkDirMtime: true });
    expect(diffs).toEqual([]);
    // The hardlink keeps the old content after its target was replaced in layer 2.
    expect(readFileSync(join(bundle, "rootfs/usr/bin/tool2"), "utf8")).toBe("#!/bin/sh\necho tool\n");
    expect(readFileSync(join(bundle, "rootfs/usr/bin/tool"), "utf8")).toBe("replaced\n");
    // The comparison notices a change (it is not vacuous).
    chmodSync(join(bundle, "rootfs/usr/lib/big"), 0o600);
    writeFileSync(join(bundle, "rootfs/etc/stray"), "");
    expect(compareTree(join(bundle, "rootfs"), expectedTree(spec.layers), { checkDirMtime: false }).sort()).toEqual(["unexpected etc/stray", "usr/lib/big: mode 384 != 420"]);
  });
});
