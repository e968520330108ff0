import { describe, expect, test } from "vitest";
import fc from "fast-check";
import { createHash } from "node:crypto";
import {
  formatOrigin,
  formatOriginImageReference,
  formatStagedMarker,
  formatTransportRef,
  type Origin,
  parseImgInfo,
  parseOrigin,
  parseOstreeImageReference,
  parseStagedMarker,
  parseTransportRef,
} from "../../shared/origin.ts";
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

const BOOT = "5f3c".padEnd(64, "0");
const MANIFEST = `sha256:${"0b1c".padEnd(64, "a")}`;
const ID = "3fd1".padEnd(128, "9");

const origin: Origin = {
  imageReference: "ostree-unverified-image:docker://quay.io/example/os:latest",
  bootType: "bls",
  bootDigest: BOOT,
  manifestDigest: MANIFEST,
  extra: new Map(),
};

// What bootc's tini writer produces for the same data.
const exact = `[origin]
container-image-reference = ostree-unverified-image:docker://quay.io/example/os:latest

[boot]
boot_type = bls
digest = ${BOOT}

[image]
manifest_digest = ${MANIFEST}
`;

describe(".origin", () => {
  test("exact output format", () => {
    expect(formatOrigin(origin)).toBe(exact);
    expect(parseOrigin(exact, "x.origin")).toEqual(origin);
  });

  test("optional keys are left out", () => {
    const o: Origin = { imageReference: null, bootType: "uki", bootDigest: null, manifestDigest: null, extra: new Map() };
    expect(formatOrigin(o)).toBe("[boot]\nboot_type = uki\n");
    expect(parseOrigin(formatOrigin(o), "x.origin")).toEqual(o);
  });

  test("tolerant reading: no spaces, blank lines, comments, repeated sections, unknown keys kept", () => {
    const text = `\n\n; leading comment\n[origin]\ncontainer-image-reference=ostree-unverified-image:oci:/var/x\n[boot]\n\n  boot_type=uki   \n# c\n[image]\nmanifest_digest=${MANIFEST}\n[boot]\ndigest = ${BOOT.toUpperCase()}\n[cfsboot]\nnote = hello\n`;
    const o = parseOrigin(text, "x.origin");
    expect(o).toEqual({ imageReference: "ostree-unverified-image:oci:/var/x", bootType: "uki", bootDigest: BOOT, manifestDigest: MANIFEST, extra: new Map([["cfsboot", new Map([["note", "hello"]])]]) });
    expect(formatOrigin(o)).toContain("[cfsboot]\nnote = hello\n");
    expect(parseOrigin(formatOrigin(o), "x.origin")).toEqual(o);
  });

  test.each([
    ["[origin]\ncontainer-image-reference = x\n", "x.origin", "missing [boot] boot_type"],
    ["[boot]\nboot_type = efi\n", "x.origin", "unknown boot type 'efi' in [boot] boot_type (expected bls or uki)"],
    ["[boot]\nboot_type = bls\ngarbage\n", "x.origin: line 3", "expected 'key = value'"],
    ["[boot\nboot_type = bls\n", "x.origin: line 1", "malformed section header"],
    ["boot_type = bls\n", "x.origin: line 1", "key outside of any section"],
    ["[boot]\n = bls\n", "x.origin: line 2", "empty key"],
    ["[boot]\nboot_type = bls\ndigest = xyz\n", "x.origin: [boot] digest", "not a hex digest"],
    ["[boot]\nboot_type = bls\n[image]\nmanifest_digest = sha512:00\n", "x.origin: [image] manifest_digest", "not a sha256 digest"],
  ])("error %#", (text, input, what) => {
    const e = errorOf(() => parseOrigin(text, "x.origin"));
    expect(e.input).toBe(input);
    expect(e.what).toContain(what);
  });

  test("writing refuses values tini would not read back", () => {
    expect(errorOf(() => formatOrigin({ ...origin, imageReference: "ostree-unverified-image:oci:/a#b" })).what).toContain("cannot be stored");
  });

  test("property: format → parse round-trips", () => {
    const val = fc.stringMatching(/^[A-Za-z0-9:/._@+=-]{1,40}$/);
    fc.assert(
      fc.property(fc.option(val, { nil: null }), fc.constantFrom("bls" as const, "uki" as const), fc.option(fc.stringMatching(/^[0-9a-f]{64}$/), { nil: null }), fc.boolean(), (ref, bootType, bd, md) => {
        const o: Origin = { imageReference: ref, bootType, bootDigest: bd, manifestDigest: md ? MANIFEST : null, extra: new Map() };
        expect(parseOrigin(formatOrigin(o), "p.origin")).toEqual(o);
      }),
    );
  });
});

describe("image references", () => {
  test.each([
    ["ostree-unverified-image:docker://quay.io/x:tag", { image: "quay.io/x:tag", transport: "registry" }],
    ["ostree-unverified-image:registry:quay.io/x", { image: "quay.io/x", transport: "registry" }],
    ["ostree-unverified-registry:quay.io/x:1", { image: "quay.io/x:1", transport: "registry" }],
    ["ostree-unverified-image:oci:/var/mnt/osupdate", { image: "/var/mnt/osupdate", transport: "oci" }],
    ["ostree-unverified-image:oci-archive:/x.tar", { image: "/x.tar", transport: "oci-archive" }],
    ["ostree-unverified-image:containers-storage:localhost/os", { image: "localhost/os", transport: "containers-storage" }],
    ["ostree-unverified-image:dir:/d", { image: "/d", transport: "dir" }],
    ["ostree-unverified-image:docker-daemon:x:1", { image: "x:1", transport: "docker-daemon" }],
    ["ostree-image-signed:docker://q/x", { image: "q/x", transport: "registry", signature: "containerPolicy" }],
    ["ostree-remote-image:fedora:docker://q/x", { image: "q/x", transport: "registry", signature: { ostreeRemote: "fedora" } }],
    ["ostree-remote-registry:fedora:quay.io/fedora/fedora-coreos:stable", { image: "quay.io/fedora/fedora-coreos:stable", transport: "registry", signature: { ostreeRemote: "fedora" } }],
  ])("%s", (s, expected) => {
    expect(parseOstreeImageReference(s)).toEqual(expected);
  });

  test.each([
    ["docker://quay.io/x", "unknown reference scheme 'docker'"],
    ["ostree-unverified-image:ftp:x", "unknown transport 'ftp'"],
    ["ostree-unverified-image:docker:x", "unknown transport 'docker'"],
    ["nocolon", "missing ':'"],
    ["ostree-unverified-image:oci:", "empty image name"],
  ])("error %s", (s, what) => {
    expect(errorOf(() => parseOstreeImageReference(s)).what).toBe(what);
  });

  test("writing: docker:// for registries, transport: otherwise", () => {
    expect(formatOriginImageReference({ transport: "registry", image: "quay.io/x:1" })).toBe("ostree-unverified-image:docker://quay.io/x:1");
    expect(formatOriginImageReference({ transport: "oci", image: "/p:t" })).toBe("ostree-unverified-image:oci:/p:t");
    fc.assert(
      fc.property(fc.constantFrom("registry", "oci", "oci-archive", "containers-storage", "dir", "docker-daemon", "docker-archive") as fc.Arbitrary<"oci">, fc.stringMatching(/^[a-z0-9/:.@-]{1,20}$/), (transport, image) => {
        expect(parseTransportRef(formatTransportRef({ transport, image }))).toEqual({ transport, image });
      }),
    );
  });
});

describe(".imginfo", () => {
  const manifestText = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:${"1".repeat(64)}","size":123},"layers":[],"annotations":{"org.opencontainers.image.version":"42"}}`;
  const text = `{"config":{"architecture":"amd64","os":"linux","created":"2026-08-01T10:00:00Z"},"manifest":${manifestText}}`;
  test("digest of the re-serialised manifest, reported with sha256:", () => {
    const info = parseImgInfo(text, "x.imginfo");
    const hex = createHash("sha256").update(manifestText).digest("hex");
    expect(info.legacyDigestHex).toBe(hex);
    expect(info.imageDigest).toBe(`sha256:${hex}`);
    expect(info.config.architecture).toBe("amd64");
  });
  test.each([
    ["{", "not JSON"],
    ["[]", "field (top level) is not an object"],
    ['{"config":{}}', "field manifest is not an object"],
  ])("error %j", (t, what) => {
    expect(errorOf(() => parseImgInfo(t, "x.imginfo")).what).toContain(what);
  });
});

describe("staged marker", () => {
  test("canonical JSON, exactly", () => {
    expect(formatStagedMarker({ deplId: ID, finalizationLocked: false })).toBe(`{"depl_id":"${ID}","finalization_locked":false}`);
    expect(formatStagedMarker({ deplId: ID, finalizationLocked: true })).toBe(`{"depl_id":"${ID}","finalization_locked":true}`);
    expect(parseStagedMarker(formatStagedMarker({ deplId: ID, finalizationLocked: true }), "m")).toEqual({ deplId: ID, finalizationLocked: true });
  });
  test("tolerant: whitespace, unknown keys, missing lock", () => {
    expect(parseStagedMarker(`{ "finalization_locked": false, "depl_id": "${ID}", "x": 1 }\n`, "m")).toEqual({ deplId: ID, finalizationLocked: false });
    expect(parseStagedMarker(`{"depl_id":"${ID}"}`, "m")).toEqual({ deplId: ID, finalizationLocked: false });
  });
  test.each([
    ["", "m", "not JSON"],
    ["[1]", "m", "not a JSON object"],
    ["{}", "m: field depl_id", "missing or not a string"],
    [`{"depl_id":"${ID}","finalization_locked":"yes"}`, "m: field finalization_locked", "not a boolean"],
    ['{"depl_id":"abc"}', "m: field depl_id", "expected 128 hex digits"],
  ])("error %#", (t, input, what) => {
    const e = errorOf(() => parseStagedMarker(t, "m"));
    expect(e.input).toBe(input);
    expect(e.what).toContain(what);
  });
});
