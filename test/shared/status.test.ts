import { describe, expect, test } from "vitest";
import fc from "fast-check";
import { readFileSync } from "node:fs";
import YAML from "yaml";
import { planSlots } from "../../shared/bls.ts";
import { CfsError } from "../../shared/errors.ts";
import type { Origin } from "../../shared/origin.ts";
import {
  type BootcHost,
  buildHost,
  canonicalJson,
  defaultHost,
  type DeploymentInfo,
  filterToBooted,
  hostToHuman,
  hostToJson,
  hostToYaml,
  hostValue,
  normalizeTimestamp,
  parseHostDocument,
} from "../../shared/status.ts";
import { sharedDir } from "../helpers/env.ts";

// The example of status.md §5, read from the reference at run time.
const statusMd = readFileSync(`${sharedDir}/reference/status.md`, "utf8");
const block = (lang: string, after: string): string => {
  const at = statusMd.indexOf(after);
  const start = statusMd.indexOf("```" + lang + "\n", at) + lang.length + 4;
  return statusMd.slice(start, statusMd.indexOf("```", start));
};
const exampleYaml = block("yaml", "YAML (serde order");
const exampleJson = block("json", "The same document as `--format=json`").replaceAll("\n", "");
const defaultJson = block("json", "Default document on a host with nothing booted").trim();

const STAGED = "b9d7cf473f81938d87f44c495cacd5c98ce2525df3cf3b200407c69ffa6c2c1a573f0cbc49d1e51425345427d14b2e6e76a7f450c89eed319e8b6c21f4e597b6";
const BOOTED = "b0860887f5f30b2c0755eacf1c8f28bf3d015a1877d84c240b4f297ef06acfd1d7e932c7d42736e7098365a0032160d2050b85fe822d7d18ba46cd94f621f59e";
const ROLLBACK = "96a3c7bb99f25185b50da58e10c6ff5111e19c49139e1e9c9a6c3097bdbc6691c869be8bde105819c81993ca17e2ae65c1ca51e6a1e55d54fb623dc7e1dba2ed";
const KERNEL_NEW = "794d09c20dd4fc571b0c97b96c6d61aa29cb012e839d6301c03b5ea1404f909b";
const KERNEL_OLD = "ace6306fd256ac8359dc3c7d053d7f772db5de6fde5da69dde6c9a3802821bb1";

function dep(manifest: string, bootDigest: string, version: string, created: string, extra: Partial<DeploymentInfo> = {}): DeploymentInfo {
  const origin: Origin = { imageReference: "ostree-unverified-image:docker://quay.io/example/os:44", bootType: "bls", bootDigest, manifestDigest: `sha256:${manifest}`, extra: new Map() };
  return { origin, image: { version, created, architecture: "amd64", imageDigest: `sha256:${manifest}` }, missingVerityAllowed: false, ...extra };
}

const deployments = new Map<string, DeploymentInfo>([
  [STAGED, dep("831e07a398430832b13ce9cd0af488e42971f939f00bba5593fd4793c8ea3ce9", KERNEL_NEW, "44.20260901.0", "2026-09-01T08:00:00+02:00", { softRebootCapable: true })],
  [BOOTED, dep("c9032520ee0a052d549768ed864ad3ea2ef14965ff24d95a6ec7554b7cda198a", KERNEL_NEW, "44.20260820.0", "2026-08-20T10:00:00Z")],
  [ROLLBACK, dep("c8435b155a7b67bf7320eac29b5b1c70248fc5f78632f4937e95f6311f394667", KERNEL_OLD, "44.20260801.0", "2026-08-01T10:00:00.000Z")],
]);

const exampleHost = (): BootcHost =>
  buildHost({
    slots: planSlots({ menu: [BOOTED, ROLLBACK], stagedMenu: [STAGED, BOOTED], bootedId: BOOTED, stagedId: STAGED }),
    deployments,
    bootloader: "systemd",
    stagedLocked: false,
  }).host;

describe("the status.md §5 example", () => {
  test("canonical JSON is byte-identical", () => {
    expect(hostToJson(exampleHost())).toBe(exampleJson);
  });
  test("YAML matches (parsed and as text)", () => {
    const y = hostToYaml(exampleHost());
    expect(YAML.parse(y)).toEqual(YAML.parse(exampleYaml));
    expect(y).toBe(exampleYaml);
  });
  test("the default document", () => {
    expect(hostToJson(defaultHost())).toBe(defaultJson);
    expect(hostToJson(buildHost({ slots: planSlots({ menu: [], bootedId: null, stagedId: null }), deployments: new Map(), bootloader: "grub", stagedLocked: false }).host)).toBe(defaultJson);
  });
  test("reading our own output gives the same document", () => {
    const h = exampleHost();
    expect(parseHostDocument(hostToJson(h))).toEqual(h);
    expect(parseHostDocument(hostToYaml(h))).toEqual(h);
    expect(parseHostDocument(exampleYaml)).toEqual(h);
  });
});

describe("building", () => {
  test("rollback queued, other deployments, per-entry missingVerityAllowed, download-only", () => {
    const d = new Map(deployments);
    d.set("e".repeat(128), dep("1".repeat(64), KERNEL_OLD, "43", "2026-01-01T00:00:00Z", { missingVerityAllowed: true }));
    const { host, warnings } = buildHost({
      slots: planSlots({ menu: [ROLLBACK, BOOTED, "e".repeat(128), "f".repeat(128)], stagedMenu: [STAGED], bootedId: BOOTED, stagedId: STAGED }),
      deployments: d,
      bootloader: "grub",
      stagedLocked: true,
      annotations: { "cfsboot.boot-counter": "+2-1" },
    });
    expect(host.status.rollbackQueued).toBe(true);
    expect(host.spec.bootOrder).toBe("rollback");
    expect(host.status.rollback?.composefs?.verity).toBe(ROLLBACK);
    expect(host.status.otherDeployments.map((e) => e.composefs?.missingVerityAllowed)).toEqual([true]);
    expect(host.status.staged?.downloadOnly).toBe(true);
    expect(host.status.booted?.softRebootCapable).toBe(false);
    expect(warnings).toEqual([`No origin file for deployment ${"f".repeat(128)}`]);
    const v = hostValue(host) as { status: Record<string, unknown>; metadata: Record<string, unknown> };
    expect(Object.keys(v.status)).toEqual(["staged", "booted", "rollback", "otherDeployments", "rollbackQueued", "type", "usrOverlay", "readOnly"]);
    expect(v.metadata).toEqual({ annotations: { "cfsboot.boot-counter": "+2-1" }, name: "host" });
    expect(hostToJson(host)).toContain('"metadata":{"annotations":{"cfsboot.boot-counter":"+2-1"},"name":"host"}');
  });

  test("a rollback without origin is skipped; the next deployment becomes rollback", () => {
    const { host, warnings } = buildHost({ slots: planSlots({ menu: [BOOTED, "0".repeat(128), ROLLBACK], bootedId: BOOTED, stagedId: null }), deployments, bootloader: "systemd", stagedLocked: false });
    expect(host.status.rollback?.composefs?.verity).toBe(ROLLBACK);
    expect(warnings).toEqual([`No origin file for deployment ${"0".repeat(128)}`]);
    expect(hostToJson(host)).not.toContain("otherDeployments");
  });

  test("conflicting boot types refuse", () => {
    const d = new Map(deployments);
    d.set(ROLLBACK, { ...d.get(ROLLBACK)!, origin: { ...d.get(ROLLBACK)!.origin, bootType: "uki" } });
    expect(() => buildHost({ slots: planSlots({ menu: [BOOTED, ROLLBACK], bootedId: BOOTED, stagedId: null }), deployments: d, bootloader: "systemd", stagedLocked: false })).toThrow("Conflicting boot types");
  });

  test("image reference transports and signatures; no image reference → image null", () => {
    const d = new Map([[BOOTED, { ...deployments.get(BOOTED)!, origin: { ...deployments.get(BOOTED)!.origin, imageReference: "ostree-remote-image:fedora:oci:/var/x" } }]]);
    const h = buildHost({ slots: planSlots({ menu: [BOOTED], bootedId: BOOTED, stagedId: null }), deployments: d, bootloader: "systemd", stagedLocked: false }).host;
    expect(h.spec.image).toEqual({ image: "/var/x", transport: "oci", signature: { ostreeRemote: "fedora" } });
    expect(hostToJson(h)).toContain('"image":{"image":"/var/x","signature":{"ostreeRemote":"fedora"},"transport":"oci"}');
    const d2 = new Map([[BOOTED, { ...deployments.get(BOOTED)!, origin: { ...deployments.get(BOOTED)!.origin, imageReference: null } }]]);
    const h2 = buildHost({ slots: planSlots({ menu: [BOOTED], bootedId: BOOTED, stagedId: null }), deployments: d2, bootloader: "systemd", stagedLocked: false }).host;
    expect(h2.status.booted?.image).toBeNull();
    expect(h2.spec.image).toBeNull();
  });

  test("--booted keeps otherDeployments", () => {
    const h = exampleHost();
    h.status.otherDeployments = [h.status.rollback!];
    const f = filterToBooted(h);
    expect([f.status.staged, f.status.rollback, f.status.otherDeployments.length]).toEqual([null, null, 1]);
  });
});

describe("timestamps", () => {
  test.each([
    ["2026-09-01T06:00:00Z", "2026-09-01T06:00:00Z"],
    ["2026-09-01T08:00:00+02:00", "2026-09-01T06:00:00Z"],
    ["2026-01-01T00:30:00-01:00", "2026-01-01T01:30:00Z"],
    ["2026-09-01t06:00:00z", "2026-09-01T06:00:00Z"],
    ["2026-09-01 06:00:00Z", "2026-09-01T06:00:00Z"],
    ["2026-09-01T06:00:00.000Z", "2026-09-01T06:00:00Z"],
    ["2026-09-01T06:00:00.5Z", "2026-09-01T06:00:00.500Z"],
    ["2026-09-01T06:00:00.123456Z", "2026-09-01T06:00:00.123456Z"],
    ["2026-09-01T06:00:00.1234567891Z", "2026-09-01T06:00:00.123456789Z"],
    ["2026-09-01T06:00:00.000001Z", "2026-09-01T06:00:00.000001Z"],
    ["2024-02-29T00:00:00Z", "2024-02-29T00:00:00Z"],
    ["2025-02-29T00:00:00Z", null],
    ["2026-13-01T00:00:00Z", null],
    ["2026-09-01T06:00:00", null],
    ["yesterday", null],
    ["", null],
  ])("%j → %j", (input, out) => {
    expect(normalizeTimestamp(input)).toBe(out);
  });
});

describe("canonical JSON", () => {
  test("keys sort by code units, index-like keys included", () => {
    expect(canonicalJson({ b: 1, "0": null, "": [true, "x"], B: { z: 0, a: "é" } })).toBe('{"":[true,"x"],"0":null,"B":{"a":"é","z":0},"b":1}');
  });
  test("property: equals key-sorted JSON.stringify and round-trips", () => {
    const sortKeys = (v: unknown): unknown =>
      Array.isArray(v) ? v.map(sortKeys) : v !== null && typeof v === "object" ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys((v as Record<string, unknown>)[k])])) : v;
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 4 }), (v) => {
        const clean = JSON.parse(JSON.stringify(v)) as unknown; // no -0, no undefined
        // JS enumerates array-index-like keys ("0") first, so key-sorted
        // JSON.stringify cannot serve as the reference for them.
        fc.pre(!/"(0|[1-9][0-9]*)":/.test(JSON.stringify(clean)));
        const c = canonicalJson(clean);
        expect(c).toBe(JSON.stringify(sortKeys(clean)));
        expect(JSON.parse(c)).toEqual(clean);
      }),
    );
  });
});

describe("reading documents", () => {
  test("older documents: missing fields default, any apiVersion, YAML timestamps", () => {
    const old = `apiVersion: org.containers.bootc/v1alpha1
kind: BootcHost
metadata:
  name: host
spec:
  image:
    image: quay.io/example/someimage:latest
    transport: registry
status:
  booted:
    image:
      image:
        image: quay.io/example/someimage:latest
        transport: registry
      version: nightly
      timestamp: 2023-09-30T19:22:16Z
      imageDigest: sha256:736b359467c9437c1ac915acaae952aad854e07eb4a16a94999a48af08c83c34
      architecture: arm64
    incompatible: false
    pinned: false
    ostree:
      stateroot: default
      checksum: 26836632adf6228d64ef07a26fd3efaf177104efd1f341a2cf7909a3e4e2c72c
      deploySerial: 0
  staged: null
  rollback: null
  rollbackQueued: false
  type: bootcHost
`;
    const h = parseHostDocument(old);
    expect(h.apiVersion).toBe("org.containers.bootc/v1alpha1");
    expect(h.status.booted?.image?.timestamp).toBe("2023-09-30T19:22:16Z");
    expect(h.status.booted?.softRebootCapable).toBe(false);
    expect(h.status.type).toBe("bootcHost");
    expect(h.status.usrOverlay).toBeNull();
  });
  test("errors name the field", () => {
    const e = (() => {
      try {
        parseHostDocument('{"apiVersion":"x","kind":"BootcHost","status":{"rollbackQueued":"no"}}');
      } catch (x) {
        return x as CfsError;
      }
    })();
    expect(e?.input).toBe("status document: field status.rollbackQueued");
  });
});

describe("human-readable", () => {
  const d = (digest: string, version: string | null, created: string | null, arch = "arm64", ref = "ostree-unverified-image:docker://quay.io/example/someimage:latest"): DeploymentInfo => ({
    origin: { imageReference: ref, bootType: "bls", bootDigest: null, manifestDigest: `sha256:${digest}`, extra: new Map() },
    image: { version, created, architecture: arch, imageDigest: `sha256:${digest}` },
    missingVerityAllowed: false,
  });
  const A = "a".repeat(128);
  const B = "b".repeat(128);
  const C = "c".repeat(128);
  const host = (menu: string[], staged: string | null, deps: Map<string, DeploymentInfo>, extra: Partial<Parameters<typeof buildHost>[0]> = {}) =>
    buildHost({ slots: planSlots({ menu, stagedMenu: staged ? [staged] : [], bootedId: menu.includes(A) ? A : null, stagedId: staged }), deployments: deps, bootloader: "systemd", stagedLocked: false, ...extra }).host;

  test("staged + booted + rollback, bootc's layout", () => {
    const deps = new Map([
      [A, d("1".repeat(64), "nightly", "2023-09-30T19:22:16Z")],
      [B, d("2".repeat(64), "nightly", "2023-10-14T19:22:15.123Z")],
      [C, d("3".repeat(64), null, "2023-08-01T00:00:00Z", "amd64", "ostree-unverified-image:oci:/var/mnt/osupdate")],
    ]);
    expect(hostToHuman(host([A, C], B, deps))).toBe(
      `  Staged image: quay.io/example/someimage:latest
        Digest: sha256:${"2".repeat(64)} (arm64)
        Verity: ${B}
       Version: nightly (2023-10-14T19:22:15Z)

● Booted image: quay.io/example/someimage:latest
        Digest: sha256:${"1".repeat(64)} (arm64)
        Verity: ${A}
       Version: nightly (2023-09-30T19:22:16Z)

  Rollback image: oci:/var/mnt/osupdate
          Digest: sha256:${"3".repeat(64)} (amd64)
          Verity: ${C}
       Timestamp: 2023-08-01T00:00:00Z
`,
    );
  });

  test("verbose rows, /usr overlay, others without image, annotations", () => {
    const deps = new Map([[A, d("1".repeat(64), "1", null)], [B, { ...d("2".repeat(64), null, null), origin: { ...d("2".repeat(64), null, null).origin, imageReference: null } }]]);
    const h = host([A, C, B], null, deps, { usrOverlay: { accessMode: "readWrite", persistence: "transient" }, annotations: { "cfsboot.finalize-error": "disk full" } });
    expect(hostToHuman(h, { verbose: true })).toBe(
      `● Booted image: quay.io/example/someimage:latest
        Digest: sha256:${"1".repeat(64)} (arm64)
        Verity: ${A}
       Version: 1
  /usr overlay: transient, read/write
   Soft-reboot: no
      FsVerity: Enforced

  Rollback composefs
              Commit: ${B}

finalize-error: disk full
`,
    );
  });

  test("nothing booted", () => {
    expect(hostToHuman(defaultHost())).toBe("System is not deployed via bootc.\n");
  });
});
