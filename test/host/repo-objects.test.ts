// The repository's object store, links, streams, images and tags through
// the host/repo.ts API (plus a few CLI checks): digests equal the kernel
// tool's (`fsverity digest`), deduplication, the streaming writer, the
// named-temporary fallback, damaged objects replaced, concurrent writers of
// the same objects, link texts (repository.md §2 table) and tag file names
// (§8.4 table) read from the reference at run time, images measured on open
// and never found through refs/ by digest.

import { spawn, spawnSync } from "node:child_process";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { toHex } from "../../shared/bytes.ts";
import { writeErofs } from "../../shared/erofs/writer.ts";
import { fsverityDigest } from "../../shared/fsverity.ts";
import { CONTENT_TYPE, encodeSplitStream } from "../../shared/splitstream.ts";
import { inlineFile, makeDir, makeLeaf } from "../../shared/tree.ts";
import { Repository, VerityGate, decodeTag, encodeTag, linkText } from "../../host/repo.ts";
import * as sys from "../../shared/sys.ts";
import { canRun, hasTool, projectRoot, sharedDir } from "../helpers/env.ts";
import { bytesOf, storeImage } from "../helpers/repo-fixture.ts";

let dir: string;
let n = 0;

/** Byte equality without vitest's element-by-element diffing (slow on large arrays). */
function expectBytes(got: Uint8Array, want: Uint8Array): void {
  expect(got.length).toBe(want.length);
  expect(Buffer.compare(Buffer.from(got), Buffer.from(want))).toBe(0);
}
function newRepo(alg: "fsverity-sha256-12" | "fsverity-sha512-12" = "fsverity-sha512-12", opts: { named?: boolean } = {}): Repository {
  const p = join(dir, `r${n++}`);
  Repository.init(p, { insecure: true, algorithm: alg }).repo.close();
  return Repository.open(p, { namedTemporaries: opts.named });
}

function objectFiles(repo: Repository): string[] {
  const out: string[] = [];
  if (!existsSync(`${repo.path}/objects`)) return out;
  for (const d of readdirSync(`${repo.path}/objects`).sort()) {
    const st = lstatSync(`${repo.path}/objects/${d}`);
    if (!st.isDirectory()) out.push(d);
    else for (const f of readdirSync(`${repo.path}/objects/${d}`).sort()) out.push(`${d}/${f}`);
  }
  return out;
}

/** Every table row (cells without backticks) of the table following `heading` in repository.md. */
function referenceTable(heading: string): string[][] {
  const md = readFileSync(`${sharedDir}/reference/repository.md`, "utf8");
  const at = md.indexOf(heading);
  expect(at, heading).toBeGreaterThan(0);
  const lines = md.slice(at).split("\n");
  const first = lines.findIndex((l) => l.startsWith("|"));
  const rows: string[][] = [];
  for (let i = first + 2; i < lines.length && lines[i]!.startsWith("|"); i++) {
    rows.push(lines[i]!.split("|").slice(1, -1).map((c) => c.trim().replace(/^`|`$/g, "")));
  }
  return rows;
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "cfsboot-repo-obj-"));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe("objects", () => {
  test("ensureObject: named by the fs-verity digest `fsverity digest` reports, deduplicated, 0644 in 0755 dirs", async () => {
    for (const alg of ["fsverity-sha256-12", "fsverity-sha512-12"] as const) {
      const repo = newRepo(alg);
      try {
        const data = bytesOf(`obj-${alg}`, 70_001);
        const r1 = repo.ensureObjectSync(data);
        expect(r1.existed).toBe(false);
        const path = repo.objectPath(r1.digest);
        const hex = toHex(r1.digest);
        expect(path).toBe(`${repo.path}/objects/${hex.slice(0, 2)}/${hex.slice(2)}`);
        expect(hex.length).toBe(alg === "fsverity-sha256-12" ? 64 : 128);
        expectBytes(new Uint8Array(readFileSync(path)), data);
        expect(statSync(path).mode & 0o777).toBe(0o644);
        expect(statSync(`${repo.path}/objects/${hex.slice(0, 2)}`).mode & 0o777).toBe(0o755);
        if (canRun(hasTool("fsverity"), "fsverity (fsverity-utils) not installed")) {
          const h = alg === "fsverity-sha256-12" ? "sha256" : "sha512";
          const out = spawnSync("fsverity", ["digest", `--hash-alg=${h}`, "--block-size=4096", path], { encoding: "utf8" });
          expect(out.stdout.split(" ")[0]).toBe(`${h}:${hex}`);
        }
        const ino = statSync(path).ino;
        const r2 = repo.ensureObjectSync(data);
        expect(r2).toEqual({ digest: r1.digest, size: data.length, existed: true });
        expect(statSync(path).ino).toBe(ino);
        expect(objectFiles(repo)).toEqual([`${hex.slice(0, 2)}/${hex.slice(2)}`]);
      } finally {
        repo.close();
      }
    }
  });

  test("the streaming writer: same digest as the whole bytes, chunking does not matter, abort leaves nothing", async () => {
    const repo = newRepo();
    try {
      const data = bytesOf("stream", 3_000_001);
      const want = fsverityDigest(data, "sha512");
      const w = repo.createObjectWriter();
      for (let off = 0, k = 1; off < data.length; k = (k * 31) % 200_003) {
        w.write(data.subarray(off, off + k));
        off += k;
      }
      expect(w.size).toBe(data.length);
      const r = await w.finish();
      expect(toHex(r.digest)).toBe(toHex(want));
      expect(r.existed).toBe(false);
      // Again: existed.
      const w2 = repo.createObjectWriter();
      w2.write(data);
      expect((await w2.finish()).existed).toBe(true);
      // Caller-supplied digest, no hashing while writing (what a parallel importer does).
      const big = bytesOf("big", 9 << 20);
      const w3 = repo.createObjectWriter({ hash: false });
      w3.write(big);
      const r3 = await w3.finish();
      expect(toHex(r3.digest)).toBe(toHex(fsverityDigest(big, "sha512")));
      const w4 = repo.createObjectWriter();
      w4.write(bytesOf("aborted", 5000));
      w4.abort();
      expect(objectFiles(repo).length).toBe(2);
      expect(objectFiles(repo).every((f) => /^[0-9a-f]{2}\/[0-9a-f]{126}$/.test(f))).toBe(true);
    } finally {
      repo.close();
    }
  });

  test("named temporaries (filesystems without O_TMPFILE): same objects, no temporary left", async () => {
    const repo = newRepo("fsverity-sha512-12", { named: true });
    try {
      const a = repo.ensureObjectSync(bytesOf("n1", 1000));
      const w = repo.createObjectWriter();
      w.write(bytesOf("n2", 100_000));
      const b = await w.finish();
      const w2 = repo.createObjectWriter();
      w2.write(bytesOf("n3", 100));
      expect(readdirSync(`${repo.path}/objects`).some((f) => f.startsWith(".tmp-object-"))).toBe(true);
      w2.abort();
      const w3 = repo.createObjectWriter();
      w3.write(bytesOf("n2", 100_000));
      expect((await w3.finish()).existed).toBe(true);
      expect(readdirSync(`${repo.path}/objects`).filter((f) => f.startsWith("."))).toEqual([]);
      expectBytes(new Uint8Array(readFileSync(repo.objectPath(a.digest))), bytesOf("n1", 1000));
      expectBytes(new Uint8Array(readFileSync(repo.objectPath(b.digest))), bytesOf("n2", 100_000));
    } finally {
      repo.close();
    }
  });

  test("a damaged (truncated) object is replaced by the next write of the same content", async () => {
    const repo = newRepo();
    try {
      const data = bytesOf("damaged", 20_000);
      const { digest } = repo.ensureObjectSync(data);
      truncateSync(repo.objectPath(digest), 100);
      expect(() => repo.readObject(digest)).toThrow(/fs-verity content mismatch/);
      expect(repo.ensureObjectSync(data).existed).toBe(false);
      expectBytes(repo.readObject(digest), data);
      expect(readdirSync(`${repo.path}/objects`).filter((f) => f.startsWith("."))).toEqual([]);
    } finally {
      repo.close();
    }
  });

  test("importFile: copies a file; an object already present is not copied again", async () => {
    const repo = newRepo();
    try {
      const src = join(dir, "import-src");
      const data = bytesOf("import", 300_000);
      writeFileSync(src, data);
      const r = await repo.importFile(src);
      expect(toHex(r.digest)).toBe(toHex(fsverityDigest(data, "sha512")));
      expect(r.existed).toBe(false);
      const again = await repo.importFile(src, { size: data.length, digest: r.digest });
      expect(again.existed).toBe(true);
      // A digest that does not match the content is caught where the kernel measures; here the
      // size check still catches a file that changed length.
      await expect(repo.importFile(src, { size: 5 })).rejects.toThrow(/changed while being imported/);
    } finally {
      repo.close();
    }
  });

  test("concurrent writers of the same objects (three processes): all succeed, every object intact", async () => {
    const repo = newRepo();
    const path = repo.path;
    repo.close();
    const run = () =>
      new Promise<string>((resolve, reject) => {
        const c = spawn(process.execPath, [`${projectRoot}test/helpers/repo-writer.ts`, path, "shared", "12", "--size", "250000"], { stdio: ["ignore", "pipe", "pipe"] });
        let out = "";
        let err = "";
        c.stdout.on("data", (d) => (out += d));
        c.stderr.on("data", (d) => (err += d));
        c.on("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(`writer exited ${code}: ${err}`))));
      });
    const [o1, o2] = await Promise.all([run(), run(), run()]);
    const ids1 = o1!.split("\n").filter((l) => /^\d+ /.test(l)).map((l) => l.split(" ")[1]);
    const ids2 = o2!.split("\n").filter((l) => /^\d+ /.test(l)).map((l) => l.split(" ")[1]);
    expect(ids1.length).toBe(12);
    expect(ids2).toEqual(ids1);
    const r = Repository.open(path);
    try {
      for (let i = 0; i < 12; i++) {
        const want = bytesOf(`shared/${i}`, 250_000);
        expect(toHex(fsverityDigest(want, "sha512"))).toBe(ids1[i]);
        expectBytes(r.readObject(r.parseHexDigest(ids1[i]!)!), want);
      }
      expect(readdirSync(`${path}/objects`).filter((f) => f.startsWith("."))).toEqual([]);
      expect((await r.fsck()).errors).toEqual([]);
    } finally {
      r.close();
    }
  });

  test("one handle per process: a second open returns the same handle; GC does not deadlock on it", async () => {
    const repo = newRepo();
    try {
      const again = Repository.open(repo.path, { writable: true });
      expect(again).toBe(repo);
      const report = await repo.gc({});
      expect(report.objectsRemoved).toBe(0);
      again.close();
      // Still open (reference-counted).
      expect(repo.ensureObjectSync(bytesOf("after", 100)).existed).toBe(false);
    } finally {
      repo.close();
    }
  });
});

describe("the verity gate (this filesystem has no fs-verity)", () => {
  test("secure: sealing and measuring are errors that say why; insecure: null, and userspace digests are used", () => {
    const f = join(dir, "gate-file");
    writeFileSync(f, bytesOf("gate", 10_000));
    const fd = sys.open(f, sys.O_RDONLY);
    try {
      const supported = (() => {
        try {
          sys.measureVerity(fd);
          return true;
        } catch (e) {
          return !sys.isVerityUnsupported(e);
        }
      })();
      if (supported) {
        // Not a missing capability: the degradation paths only exist where fs-verity does not.
        process.stderr.write("SKIP: this filesystem supports fs-verity; the degradation paths are tested where it does not\n");
        return;
      }
      const secure = new VerityGate("sha512", true);
      expect(() => secure.seal(fd, f)).toThrow(/does not support fs-verity, but this repository requires it/);
      expect(() => secure.measure(fd, f)).toThrow(/does not support fs-verity, but this repository requires it/);
      const insecure = new VerityGate("sha512", false);
      expect(insecure.seal(fd, f)).toBeNull();
      expect(insecure.trySeal).toBe(false); // known now: no further attempts
      expect(insecure.measure(fd, f)).toBeNull();
      expect(insecure.description).toBe("insecure (userspace digests)");
    } finally {
      sys.close(fd);
    }
  });

  test("a repository made without --insecure on this filesystem is insecure and stores userspace digests", async () => {
    const p = join(dir, "degraded");
    const r = Repository.init(p, {});
    try {
      expect(r.degraded).toBe(true);
      expect(r.verity).toBe(false);
      expect(r.repo.secure).toBe(false);
      const data = bytesOf("degraded", 5000);
      expect(toHex(await r.repo.ensureObject(data))).toBe(toHex(fsverityDigest(data, "sha512")));
    } finally {
      r.repo.close();
    }
    expect(() => Repository.open(p, { requireVerity: true })).toThrow(/fs-verity is required.*insecure/);
  });
});

describe("links", () => {
  test("link texts: every row of the repository.md §2 table", () => {
    const rows = referenceTable("### Symlink targets");
    expect(rows.length).toBeGreaterThanOrEqual(5);
    for (const [link, target, stored] of rows) expect(linkText(link!, target!), `${link} -> ${target}`).toBe(stored);
  });

  test("links on disk: streams, images, nested image refs, tags", async () => {
    const repo = newRepo();
    try {
      const img = await storeImage(repo, { layers: [[{ path: "a", content: bytesOf("la", 1000) }]], tag: "localhost/bootc-sha256:ab" });
      const s = `oci-manifest-${img.manifestDigest}`;
      const mtext = readlinkSync(`${repo.path}/streams/${s}`);
      expect(mtext).toMatch(/^\.\.\/objects\/[0-9a-f]{2}\/[0-9a-f]{126}$/);
      expect(readlinkSync(`${repo.path}/streams/refs/oci/localhost%2Fbootc-sha256:ab`)).toBe(`../../${s}`);
      const tree = makeDir({ mode: 0o755 });
      tree.entries.set("f", makeLeaf(inlineFile(new TextEncoder().encode("x")), { mode: 0o644 }));
      const id = toHex(await repo.writeImage(writeErofs(tree, { version: 1 }), "a/b"));
      expect(readlinkSync(`${repo.path}/images/${id}`)).toBe(`../objects/${id.slice(0, 2)}/${id.slice(2)}`);
      expect(readlinkSync(`${repo.path}/images/refs/a/b`)).toBe(`../../${id}`);
      await repo.writeImage(writeErofs(tree, { version: 1 }), "foo");
      expect(readlinkSync(`${repo.path}/images/refs/foo`)).toBe(`../${id}`);
      // Re-pointing a ref is atomic and leaves no temporary.
      const id2 = toHex(await repo.writeImage(writeErofs(tree, { version: 2 }), "foo"));
      expect(readlinkSync(`${repo.path}/images/refs/foo`)).toBe(`../${id2}`);
      expect(readdirSync(`${repo.path}/images/refs`).sort()).toEqual(["a", "foo"]);
    } finally {
      repo.close();
    }
  });

  test("hasStream: needs the ../ form and an existing object", async () => {
    const repo = newRepo();
    try {
      const obj = repo.ensureObjectSync(bytesOf("s", 100)).digest;
      const file = await encodeSplitStream({ algorithm: "sha512", contentType: CONTENT_TYPE.ociBlob, chunks: [{ external: obj, size: 100 }] });
      const id = await repo.writeStream("oci-blob-x", file);
      expect(toHex(repo.hasStream("oci-blob-x")!)).toBe(toHex(id));
      unlinkSync(repo.objectPath(id));
      expect(repo.hasStream("oci-blob-x")).toBeNull();
      symlinkSync(`/abs/objects/${toHex(id).slice(0, 2)}/${toHex(id).slice(2)}`, `${repo.path}/streams/oci-blob-y`);
      expect(repo.hasStream("oci-blob-y")).toBeNull();
      expect(repo.hasStream("nothing")).toBeNull();
    } finally {
      repo.close();
    }
  });

  test("writeStream refuses a stream whose objects are not stored", async () => {
    const repo = newRepo();
    try {
      const missing = fsverityDigest(bytesOf("not stored", 500), "sha512");
      const file = await encodeSplitStream({ algorithm: "sha512", contentType: CONTENT_TYPE.ociLayer, chunks: [{ external: missing, size: 500 }] });
      await expect(repo.writeStream("oci-layer-sha256:00", file)).rejects.toThrow(/not in the repository/);
      expect(existsSync(`${repo.path}/streams/oci-layer-sha256:00`)).toBe(false);
    } finally {
      repo.close();
    }
  });
});

describe("tags", () => {
  test("file names: every row of the repository.md §8.4 table; decoding is single-pass", () => {
    const rows = referenceTable("| tag name | file name |".slice(0, 12));
    expect(rows.length).toBe(4);
    for (const [name, file] of rows) {
      expect(encodeTag(name!)).toBe(file);
      expect(decodeTag(file!)).toBe(name);
    }
    expect(decodeTag("%252F")).toBe("%2F");
    expect(decodeTag("a%2fb%41%")).toBe("a%2fb%41%");
    for (const s of ["a%b/c", "%%2F/", "x%25y", "%2"]) expect(decodeTag(encodeTag(s))).toBe(s);
  });

  test("tag, list, resolve, untag; bad names and unknown manifests refused", async () => {
    const repo = newRepo();
    try {
      const img = await storeImage(repo, { layers: [[{ path: "a", content: bytesOf("t", 200) }]] });
      repo.tag("docker://busybox", img.manifestDigest);
      repo.tag("library/nginx", `@${img.manifestDigest}`);
      expect(existsSync(`${repo.path}/streams/refs/oci/docker:%2F%2Fbusybox`)).toBe(true);
      expect(repo.listTags()).toEqual([
        { name: "docker://busybox", manifestDigest: img.manifestDigest },
        { name: "library/nginx", manifestDigest: img.manifestDigest },
      ]);
      expect(repo.resolveTag("library/nginx")).toBe(img.manifestDigest);
      expect(() => repo.tag("@sha256:x", img.manifestDigest)).toThrow(/reserved for digest references/);
      expect(() => repo.tag("x", `sha256:${"0".repeat(64)}`)).toThrow(/no such manifest/);
      expect(() => repo.tag("x", "sha256:abc")).toThrow(/not a manifest digest/);
      repo.untag("library/nginx");
      expect(repo.resolveTag("library/nginx")).toBeNull();
      expect(() => repo.untag("library/nginx")).toThrow(/no such tag/);
      const found = await repo.openOciImage("docker://busybox");
      expect(found.manifestDigest).toBe(img.manifestDigest);
      expect(repo.ociImageId(found)).toBe(img.images.get(1));
      expect(() => repo.ociImageId(found, true)).toThrow(/no boot EROFS image/);
    } finally {
      repo.close();
    }
  });
});

describe("images", () => {
  test("open by digest measures: a flipped byte is refused; refs/ is never a fallback for a digest", async () => {
    const repo = newRepo();
    try {
      const tree = makeDir({ mode: 0o755 });
      tree.entries.set("file", makeLeaf(inlineFile(new TextEncoder().encode("hello")), { mode: 0o644 }));
      const bytes = writeErofs(tree, { version: 1 });
      const id = toHex(await repo.writeImage(bytes, "named"));
      expectBytes(repo.openImage(id), bytes);
      expectBytes(repo.openImage("refs/named"), bytes);
      expect(() => repo.openImage(id.slice(0, 64))).toThrow(/not an image name/);
      // A flipped byte in the object: refused by digest and by ref.
      const obj = repo.objectPath(id);
      const flipped = new Uint8Array(bytes);
      flipped[1100] = flipped[1100]! ^ 0x40;
      writeFileSync(obj, flipped);
      expect(() => repo.openImage(id)).toThrow(/fs-verity content mismatch/);
      expect(() => repo.openImage("refs/named")).toThrow(/fs-verity content mismatch/);
      writeFileSync(obj, bytes);
      // images/<hex> gone, images/refs/<hex> present (composefs-rs would open it unmeasured): not found.
      unlinkSync(`${repo.path}/images/${id}`);
      mkdirSync(`${repo.path}/images/refs`, { recursive: true });
      symlinkSync(`../../objects/${id.slice(0, 2)}/${id.slice(2)}`, `${repo.path}/images/refs/${id}`);
      expect(() => repo.openImage(id)).toThrow(/image not found/);
    } finally {
      repo.close();
    }
  });

  test("commitImages: one image per format; only the default one gets the named ref", async () => {
    const p = join(dir, "dual");
    Repository.init(p, { insecure: true, erofs: "dual" }).repo.close();
    const repo = Repository.open(p);
    try {
      const tree = makeDir({ mode: 0o755 });
      tree.entries.set("file", makeLeaf(inlineFile(new TextEncoder().encode("hello")), { mode: 0o644 }));
      const r = await repo.commitImages(tree, "both");
      expect([...r.byVersion.keys()]).toEqual([2, 1]);
      expect(toHex(r.default)).toBe(toHex(r.byVersion.get(2)!));
      expect(repo.listImageRefs()).toEqual([{ name: "both", digest: toHex(r.default) }]);
      expect(readdirSync(`${p}/images`).filter((x) => x !== "refs").sort()).toEqual([...r.byVersion.values()].map(toHex).sort());
      expect(toHex(fsverityDigest(repo.openImage(toHex(r.byVersion.get(1)!)), "sha512"))).toBe(toHex(r.byVersion.get(1)!));
    } finally {
      repo.close();
    }
  });
});
