// shared/oci.ts: every reference syntax of oci.md §1, manifests/configs with
// clear errors, platform selection, cfsctl pull output.

import { describe, expect, test } from "vitest";
import {
  parseImageRef, parseDockerReference, formatImageRef, registryApiHost, splitLayoutReference, parseOstreeImageRef,
  formatOstreeImageRef, parseManifestDocument, parseImageConfig, checkImageLayers, layerCompression, selectManifest,
  platformForArch, humanBytes, formatPullOutput, formatImportStats, parseDigest, MEDIA_TYPE,
  type ImageIndex, type ImageManifest,
} from "../../shared/oci.ts";
import { CfsError } from "../../shared/errors.ts";

const D = "sha256:" + "ab".repeat(32);
const D2 = "sha256:" + "cd".repeat(32);

function err(f: () => unknown): CfsError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(CfsError);
    return e as CfsError;
  }
  throw new Error("expected an error");
}

describe("docker:// references", () => {
  const cases: [string, string, string, string | null, string | null][] = [
    ["docker://busybox", "docker.io", "library/busybox", "latest", null],
    ["docker://busybox:1.36", "docker.io", "library/busybox", "1.36", null],
    ["docker://docker.io/busybox", "docker.io", "library/busybox", "latest", null],
    ["docker://index.docker.io/library/busybox", "docker.io", "library/busybox", "latest", null],
    ["docker://someuser/app", "docker.io", "someuser/app", "latest", null],
    ["docker://quay.io/fedora/fedora-bootc:42", "quay.io", "fedora/fedora-bootc", "42", null],
    ["docker://localhost/img", "localhost", "img", "latest", null],
    ["docker://localhost:5000/a/b/c:v_1.0-x", "localhost:5000", "a/b/c", "v_1.0-x", null],
    ["docker://127.0.0.1:5000/test/img@" + D, "127.0.0.1:5000", "test/img", null, D],
    ["docker://[::1]:5000/img:t", "[::1]:5000", "img", "t", null],
    ["docker://ghcr.io/a__b/c.d-e", "ghcr.io", "a__b/c.d-e", "latest", null],
  ];
  for (const [s, registry, repository, tag, digest] of cases) {
    test(s, () => {
      const r = parseImageRef(s);
      expect(r).toEqual({ transport: "registry", registry, repository, tag, digest });
      // Canonical form parses back to the same thing.
      expect(parseImageRef(formatImageRef(r))).toEqual(r);
    });
  }

  test("registry API host and bad references", () => {
    expect(registryApiHost("docker.io")).toBe("registry-1.docker.io");
    expect(registryApiHost("quay.io")).toBe("quay.io");
    expect(err(() => parseImageRef("docker://Quay.io/X/Y")).what).toMatch(/lowercase/);
    expect(err(() => parseImageRef("docker://quay.io/x:tag@" + D)).what).toMatch(/both a tag and a digest/);
    expect(err(() => parseImageRef("docker://quay.io/x@sha256:abc")).what).toMatch(/invalid sha256 digest/);
    expect(err(() => parseImageRef("docker://quay.io/x:bad tag")).what).toMatch(/invalid tag/);
    expect(err(() => parseImageRef("docker://quay.io/")).what).toMatch(/missing repository|invalid repository/);
    expect(err(() => parseImageRef("docker://quay.io/-x")).what).toMatch(/invalid repository name component/);
    expect(err(() => parseImageRef("docker:busybox")).what).toMatch(/docker:\/\//);
    expect(err(() => parseImageRef("quay.io/x")).what).toMatch(/unknown transport/);
    expect(err(() => parseImageRef("dir:/x")).what).toMatch(/not supported/);
    expect(err(() => parseDockerReference("x/" + "a".repeat(260))).what).toMatch(/255/);
  });
});

describe("oci: and oci-archive:", () => {
  test("the last-colon rule", () => {
    expect(splitLayoutReference("/srv/img")).toEqual({ path: "/srv/img", ref: null });
    expect(splitLayoutReference("/srv/img:latest")).toEqual({ path: "/srv/img", ref: "latest" });
    expect(splitLayoutReference("/srv/a:b/img")).toEqual({ path: "/srv/a:b/img", ref: null });
    expect(splitLayoutReference("/srv/a:b/img:v2")).toEqual({ path: "/srv/a:b/img", ref: "v2" });
    expect(splitLayoutReference("rel:dir:tag")).toEqual({ path: "rel:dir", ref: "tag" });
    expect(parseImageRef("oci:/srv/img:latest")).toEqual({ transport: "oci", path: "/srv/img", ref: "latest" });
    expect(parseImageRef("oci-archive:/tmp/i.tar")).toEqual({ transport: "oci-archive", path: "/tmp/i.tar", ref: null });
    expect(parseImageRef("oci-archive:/tmp/i.tar:v1")).toEqual({ transport: "oci-archive", path: "/tmp/i.tar", ref: "v1" });
    expect(formatImageRef(parseImageRef("oci:/a:b/c:t"))).toBe("oci:/a:b/c:t");
    expect(err(() => parseImageRef("oci:")).what).toMatch(/missing path/);
  });
});

describe("containers-storage:", () => {
  test("names, ids and storage specs", () => {
    expect(parseImageRef("containers-storage:quay.io/x:tag")).toEqual({ transport: "containers-storage", storageSpec: null, name: "quay.io/x:tag" });
    expect(parseImageRef("containers-storage:busybox")).toEqual({ transport: "containers-storage", storageSpec: null, name: "docker.io/library/busybox:latest" });
    const id = "0123456789abcdef".repeat(4);
    expect(parseImageRef(`containers-storage:sha256:${id}`)).toEqual({ transport: "containers-storage", storageSpec: null, name: `sha256:${id}` });
    expect(parseImageRef("containers-storage:[overlay@/var/lib/s+/run/s]localhost/bootc")).toEqual({
      transport: "containers-storage", storageSpec: "overlay@/var/lib/s+/run/s", name: "localhost/bootc:latest",
    });
    expect(err(() => parseImageRef("containers-storage:[x")).what).toMatch(/unterminated/);
  });
});

describe("ostree-unverified forms (bootc origins)", () => {
  test("parse and format", () => {
    expect(parseOstreeImageRef("ostree-unverified-image:docker://quay.io/x:tag")).toEqual({ sigverify: "unverified", transport: "registry", image: "quay.io/x:tag" });
    expect(parseOstreeImageRef("ostree-unverified-registry:quay.io/x:tag")).toEqual({ sigverify: "unverified", transport: "registry", image: "quay.io/x:tag" });
    expect(parseOstreeImageRef("ostree-unverified-image:containers-storage:quay.io/x")).toEqual({ sigverify: "unverified", transport: "containers-storage", image: "quay.io/x" });
    expect(parseOstreeImageRef("ostree-unverified-image:oci:/srv/img:v1")).toEqual({ sigverify: "unverified", transport: "oci", image: "/srv/img:v1" });
    expect(parseOstreeImageRef("ostree-unverified-image:oci-archive:/a.tar")).toEqual({ sigverify: "unverified", transport: "oci-archive", image: "/a.tar" });
    expect(formatOstreeImageRef("registry", "quay.io/x:tag")).toBe("ostree-unverified-image:docker://quay.io/x:tag");
    expect(formatOstreeImageRef("containers-storage", "quay.io/x")).toBe("ostree-unverified-image:containers-storage:quay.io/x");
    for (const s of ["ostree-unverified-image:docker://quay.io/x:tag", "ostree-unverified-image:oci:/srv/img:v1"]) {
      const r = parseOstreeImageRef(s);
      expect(formatOstreeImageRef(r.transport, r.image)).toBe(s);
    }
    expect(err(() => parseOstreeImageRef("ostree-image-signed:docker://quay.io/x")).what).toMatch(/signed image references are not supported/);
    expect(err(() => parseOstreeImageRef("docker://quay.io/x")).what).toMatch(/not an ostree image reference/);
  });
});

describe("manifests and configs", () => {
  const manifest = (mt: string | undefined, layers: object[]) =>
    JSON.stringify({
      schemaVersion: 2,
      ...(mt ? { mediaType: mt } : {}),
      config: { mediaType: MEDIA_TYPE.ociConfig, digest: D, size: 10 },
      layers,
      annotations: { "org.opencontainers.image.version": "42" },
    });

  test("OCI and Docker manifests, media type from field, Content-Type or structure", () => {
    const layer = { mediaType: MEDIA_TYPE.ociLayerZstd, digest: D2, size: 5 };
    for (const [mt, ct] of [[MEDIA_TYPE.ociManifest, undefined], [undefined, MEDIA_TYPE.ociManifest], [undefined, undefined], [MEDIA_TYPE.dockerManifest, "application/json"]] as const) {
      const m = parseManifestDocument(manifest(mt, [layer]), "m", ct) as ImageManifest;
      expect(m.kind).toBe("manifest");
      expect(m.docker).toBe(mt === MEDIA_TYPE.dockerManifest);
      expect(m.layers[0]!.digest).toBe(D2);
      expect(m.annotations["org.opencontainers.image.version"]).toBe("42");
    }
    const idx = parseManifestDocument(JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: MEDIA_TYPE.ociManifest, digest: D, size: 1, platform: { os: "linux", architecture: "arm64" } }] }), "i");
    expect(idx.kind).toBe("index");
    const list = parseManifestDocument(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPE.dockerList, manifests: [] }), "l");
    expect(list.kind === "index" && list.docker).toBe(true);
  });

  test("clear errors", () => {
    expect(err(() => parseManifestDocument("{", "m")).what).toMatch(/invalid JSON/);
    expect(err(() => parseManifestDocument(JSON.stringify({ schemaVersion: 1, fsLayers: [] }), "m")).what).toMatch(/schema 1/);
    expect(err(() => parseManifestDocument(manifest(MEDIA_TYPE.ociManifest, [{ mediaType: "x", digest: "sha256:12", size: 1 }]), "m")).input).toMatch(/field layers\[0\]\.digest/);
    expect(err(() => parseManifestDocument(manifest(MEDIA_TYPE.ociManifest, [{ mediaType: "x", digest: D, size: -1 }]), "m")).what).toMatch(/layers\[0\]\.size/);
    expect(err(() => parseManifestDocument(JSON.stringify({ schemaVersion: 2, mediaType: "application/x" }), "m")).what).toMatch(/unsupported manifest media type/);
    expect(err(() => parseImageConfig(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "x", diff_ids: [] } }), "c")).what).toMatch(/rootfs.type/);
    expect(err(() => parseDigest("md5:abc")).what).toMatch(/unsupported digest algorithm/);
  });

  test("config fields, layer compression, diff_id pairing", () => {
    const c = parseImageConfig(JSON.stringify({
      architecture: "amd64", os: "linux", created: "2024-01-01T00:00:00Z",
      config: { Labels: { "containers.bootc": "1" } }, rootfs: { type: "layers", diff_ids: [D, D2] },
    }), "c");
    expect(c.labels["containers.bootc"]).toBe("1");
    expect(c.created).toBe("2024-01-01T00:00:00Z");
    expect(layerCompression(MEDIA_TYPE.ociLayer)).toBe("none");
    expect(layerCompression(MEDIA_TYPE.ociLayerGzip)).toBe("gzip");
    expect(layerCompression(MEDIA_TYPE.dockerLayerGzip)).toBe("gzip");
    expect(layerCompression("application/vnd.oci.image.layer.nondistributable.v1.tar+zstd")).toBe("zstd");
    expect(layerCompression("application/vnd.cncf.helm.chart.content.v1.tar+gzip")).toBeNull();
    const two = parseManifestDocument(manifest(MEDIA_TYPE.ociManifest, [
      { mediaType: MEDIA_TYPE.ociLayerGzip, digest: D, size: 1 }, { mediaType: MEDIA_TYPE.ociLayerZstd, digest: D2, size: 1 },
    ]), "m") as ImageManifest;
    expect(checkImageLayers(two, c, "img")).toEqual(["gzip", "zstd"]);
    const one = { ...two, layers: two.layers.slice(0, 1) };
    expect(err(() => checkImageLayers(one, c, "img")).what).toMatch(/1 layers but the config has 2 diff_ids/);
  });
});

describe("platform selection", () => {
  const entry = (arch: string, variant?: string, os = "linux") => ({
    mediaType: MEDIA_TYPE.ociManifest, digest: "sha256:" + (arch + (variant ?? "") + os).padEnd(64, "0").slice(0, 64).replace(/[^0-9a-f]/g, "a"), size: 1,
    platform: { os, architecture: arch, ...(variant ? { variant } : {}) },
  });
  const index = (...m: ReturnType<typeof entry>[]): ImageIndex => ({ kind: "index", mediaType: MEDIA_TYPE.ociIndex, docker: false, manifests: m, annotations: {} });

  test("host platform, arm64 variants, attestation entries, unknown platforms", () => {
    expect(platformForArch("x64")).toEqual({ os: "linux", architecture: "amd64" });
    const amd = entry("amd64"), arm = entry("arm64", "v8"), armNoVar = entry("arm64"), s390 = entry("s390x");
    const att = entry("unknown", undefined, "unknown");
    expect(selectManifest(index(att, arm, amd, s390), platformForArch("x64"), "i")).toBe(amd);
    expect(selectManifest(index(amd, armNoVar), platformForArch("arm64"), "i")).toBe(armNoVar);
    const arm7 = entry("arm", "v7"), arm6 = entry("arm", "v6");
    expect(selectManifest(index(arm6, arm7), platformForArch("arm"), "i")).toBe(arm7);
    expect(err(() => selectManifest(index(arm, s390), platformForArch("x64"), "i")).what).toBe("no image for linux/amd64 (the index has: linux/arm64/v8, linux/s390x)");
    // Entries without platform: the caller's platformOf (their configs) decides.
    const bare = { mediaType: MEDIA_TYPE.ociManifest, digest: D, size: 1 };
    const bare2 = { mediaType: MEDIA_TYPE.ociManifest, digest: D2, size: 1 };
    const idx: ImageIndex = { kind: "index", mediaType: MEDIA_TYPE.ociIndex, docker: false, manifests: [bare, bare2], annotations: {} };
    const plat = (d: { digest: string }) => (d.digest === D2 ? { os: "linux", architecture: "amd64" } : { os: "linux", architecture: "arm64" });
    expect(selectManifest(idx, platformForArch("x64"), "i", plat)).toBe(bare2);
    // A single entry without platform information is the image.
    expect(selectManifest({ ...idx, manifests: [bare] }, platformForArch("x64"), "i")).toBe(bare);
  });
});

describe("cfsctl pull output", () => {
  test("HumanBytes formatting (binary units, two decimals, ties to even)", () => {
    expect(humanBytes(0)).toBe("0 B");
    expect(humanBytes(1023)).toBe("1023 B");
    expect(humanBytes(1024)).toBe("1.00 KiB");
    expect(humanBytes(1536)).toBe("1.50 KiB");
    expect(humanBytes(1152)).toBe("1.12 KiB"); // 1.125 exactly: ties to even
    expect(humanBytes(1160)).toBe("1.13 KiB"); // 1.1328…
    expect(humanBytes(5 * 1024 ** 3 + 1)).toBe("5.00 GiB");
    expect(humanBytes(1024 ** 2 - 1)).toBe("1024.00 KiB");
  });

  test("lines as cfsctl prints them", () => {
    const out = formatPullOutput({
      manifestDigest: D, configDigest: D2, manifestVerity: "ff".repeat(64), tag: "myimage:latest",
      stats: { objectsCopied: 12, objectsAlreadyPresent: 3, bytesCopied: 3 * 1024 * 1024, bytesInlined: 800 },
    });
    expect(out).toBe(
      `manifest ${D}\nconfig   ${D2}\nverity   ${"ff".repeat(64)}\ntagged   myimage:latest\n` +
      "objects  12 new + 3 already present objects; 3.00 MiB stored, 800 B inlined\n",
    );
    expect(formatImportStats({ objectsCopied: 1, objectsAlreadyPresent: 2, bytesCopied: 10, bytesInlined: 0, objectsReflinked: 4, bytesReflinked: 4096 }))
      .toBe("4 reflinked + 1 copied + 2 already present objects; 4.00 KiB reflinked, 10 B copied, 0 B inlined");
  });
});
