// host/oci-layout.ts: oci: directories and oci-archive: files (written by
// skopeo and by GNU tar), ref.name and platform selection, verification.

import { describe, expect, test, beforeAll, afterAll } from "vitest";
import { mkdtempSync, rmSync, writeFileSync, openSync, writeSync, closeSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnSync } from "node:child_process";

import { buildImage, buildIndex, skopeo, insecurePolicy, sha256, type BuiltImage } from "../helpers/oci-image.ts";
import { OciLayoutDir, OciArchive, openLayout, LayoutSource } from "../../host/oci-layout.ts";
import { parseImageRef, platformForArch, type LayoutRef } from "../../shared/oci.ts";
import { encodeTar } from "../../shared/tar.ts";
import { CfsError } from "../../shared/errors.ts";
import { canRun, hasTool } from "../helpers/env.ts";

const amd64 = platformForArch("x64");
const arm64 = platformForArch("arm64");
let work: string;
let img: BuiltImage;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "cfsboot-layout-"));
  img = buildImage(join(work, "layout"), {
    layers: [
      { compression: "gzip", entries: [{ type: "dir", path: "usr" }, { type: "file", path: "usr/big", size: 200_000 }] },
      { compression: "zstd", entries: [{ type: "file", path: "usr/small", content: "s" }] },
    ],
  }, { tag: "latest" });
  buildImage(join(work, "layout"), { layers: [{ entries: [{ type: "file", path: "other", content: "o" }] }] }, { tag: "other" });
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

async function fail(p: Promise<unknown>): Promise<CfsError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(CfsError);
    return e as CfsError;
  }
  throw new Error("expected a failure");
}

async function blobDigest(src: LayoutSource, d: { digest: string; size: number }): Promise<string> {
  return sha256(await src.readBlob(d));
}

describe("oci: directories", () => {
  test("select by ref name; blobs verified", async () => {
    const src = await openLayout(parseImageRef(`oci:${join(work, "layout")}:latest`) as LayoutRef);
    const r = await src.resolve(amd64);
    expect(r.manifestDigest).toBe(img.manifestDigest);
    expect(Buffer.from(r.manifestBytes).equals(Buffer.from(img.manifest))).toBe(true);
    for (const [i, l] of r.manifest.layers.entries()) expect(await blobDigest(src, l)).toBe(img.layers[i]!.digest);
    const e = await fail(src.readBlob({ digest: img.layers[0]!.digest, size: 5 }));
    expect(e.what).toMatch(/blob has \d+ bytes, its descriptor says 5/);
  });

  test("errors: unknown ref, several images without ref, not a layout, corrupted blob", async () => {
    const noRef = await fail((await OciLayoutDir.open(join(work, "layout"), "nope")).resolve(amd64));
    expect(noRef.what).toBe('no image named "nope" in the layout (it has: latest, other)');
    const ambiguous = await fail((await OciLayoutDir.open(join(work, "layout"))).resolve(amd64));
    expect(ambiguous.what).toMatch(/several images for linux\/amd64; name one with :REF \(latest, other\)/);
    const notLayout = await fail(OciLayoutDir.open(work));
    expect(notLayout.what).toMatch(/no oci-layout file/);
    const copy = join(work, "corrupt");
    const c = buildImage(copy, { layers: [{ entries: [{ type: "file", path: "f", size: 4000 }] }] }, { tag: "t" });
    const fd = openSync(join(copy, "blobs/sha256", c.layers[0]!.digest.slice(7)), "r+");
    writeSync(fd, Buffer.from([0x42]), 0, 1, 20);
    closeSync(fd);
    const src = await OciLayoutDir.open(copy, "t");
    const r = await src.resolve(amd64);
    const bad = await fail(src.readBlob(r.manifest.layers[0]!));
    expect(bad.message).toMatch(/^oci:.*@sha256:[0-9a-f]{64}: blob digest mismatch: got sha256:/);
  });

  test("multi-platform indexes: by platform field, or by the configs when it is missing", async () => {
    for (const omitPlatform of [false, true]) {
      const dir = join(work, `multi-${omitPlatform}`);
      const idx = buildIndex(dir, [
        { architecture: "arm64", variant: "v8", layers: [{ entries: [{ type: "file", path: "a", content: "arm" }] }] },
        { architecture: "amd64", layers: [{ entries: [{ type: "file", path: "a", content: "amd" }] }] },
      ], { tag: "v1", omitPlatform });
      const src = await OciLayoutDir.open(dir, "v1");
      expect((await src.resolve(amd64)).manifestDigest).toBe(idx.images[1]!.manifestDigest);
      expect((await src.resolve(arm64)).manifestDigest).toBe(idx.images[0]!.manifestDigest);
      const none = await fail(src.resolve(platformForArch("s390x")));
      expect(none.what).toMatch(/^no image for linux\/s390x \(the index has: linux\/arm64\/v8, linux\/amd64\)$/);
    }
  });
});

describe("oci-archive: files", () => {
  test("written by skopeo: read in place, same digests", async () => {
    if (!canRun(hasTool("skopeo"), "skopeo is not installed")) return;
    const file = join(work, "img.tar");
    await skopeo(["--policy", insecurePolicy(work), "copy", "--quiet", "--preserve-digests", `oci:${join(work, "layout")}:latest`, `oci-archive:${file}:v9`]);
    const src = await openLayout(parseImageRef(`oci-archive:${file}:v9`) as LayoutRef);
    expect(src).toBeInstanceOf(OciArchive);
    const r = await src.resolve(amd64);
    expect(r.manifestDigest).toBe(img.manifestDigest);
    for (const [i, l] of r.manifest.layers.entries()) expect(await blobDigest(src, l)).toBe(img.layers[i]!.digest);
  });

  test("written by GNU tar (./ prefixed members), and hostile archives", async () => {
    if (!canRun(hasTool("tar"), "GNU tar is not installed")) return;
    const file = join(work, "gnu.tar");
    const r = spawnSync("tar", ["-C", join(work, "layout"), "-cf", file, "."]);
    expect(r.status).toBe(0);
    const src = await OciArchive.open(file, "other");
    const res = await src.resolve(amd64);
    expect(await blobDigest(src, res.manifest.layers[0]!)).toBe(res.manifest.layers[0]!.digest);

    const evil = join(work, "evil.tar");
    writeFileSync(evil, encodeTar([{ path: "oci-layout", type: "regular", data: new Uint8Array(Buffer.from('{"imageLayoutVersion":"1.0.0"}')) }, { path: "../../etc/x", type: "regular" }]));
    const e = await fail(OciArchive.open(evil));
    expect(e.what).toMatch(/'\.\.' component/);
    const trunc = join(work, "trunc.tar");
    writeFileSync(trunc, encodeTar([{ path: "oci-layout", type: "regular", data: new Uint8Array(3000) }]).subarray(0, 2000));
    expect((await fail(OciArchive.open(trunc))).what).toMatch(/truncated archive/);
    mkdirSync(join(work, "notafile"));
    expect((await fail(OciArchive.open(join(work, "notafile")))).what).toMatch(/not a regular file/);
  });
});
