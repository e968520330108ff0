import { readFileSync } from "node:fs";
import { describe, expect, test } from "vitest";
import fc from "fast-check";

import { CfsError } from "../../shared/errors.ts";
import {
  type ErofsVersion,
  type RepoMeta,
  effectiveFormats,
  formatRepoMeta,
  formatVersions,
  newRepoMeta,
  openMode,
  parseRepoMeta,
  requireAlgorithm,
  requireWritable,
  sameRepoMeta,
  unknownFeatures,
} from "../../shared/repometa.ts";
import { sharedDir } from "../helpers/env.ts";

const F = "/sysroot/composefs/meta.json";
const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

function errorOf(f: () => unknown): CfsError {
  try {
    f();
  } catch (e) {
    if (e instanceof CfsError) return e;
    throw e;
  }
  throw new Error("expected a CfsError");
}

/** The JSON examples of repository.md §3.1 (upstream's exact bytes), read at run time. */
function referenceExamples(): string[] {
  const doc = readFileSync(`${sharedDir}/reference/repository.md`, "utf8");
  const start = doc.indexOf("### 3.1 Exact content");
  const end = doc.indexOf("### 3.2", start);
  const section = doc.slice(start, end);
  const blocks = [...section.matchAll(/```\n(\{[\s\S]*?\n\})\n```/g)].map((m) => `${m[1]}\n`);
  return blocks;
}

describe("exact bytes (serde_json pretty, as cfsctl init writes them)", () => {
  const [v1sha512, v2sha256] = referenceExamples();

  test("the reference has both examples", () => {
    expect(v1sha512).toContain('"fsverity-sha512-12"');
    expect(v2sha256).toContain('"fsverity-sha256-12"');
  });

  test("cfsctl init default: sha512, V1, v1_erofs", () => {
    expect(dec(formatRepoMeta(newRepoMeta("sha512")))).toBe(v1sha512);
  });

  test("cfsctl init --erofs-version 2 --algorithm fsverity-sha256-12", () => {
    expect(dec(formatRepoMeta(newRepoMeta("sha256", 2)))).toBe(v2sha256);
  });

  test("parsing the reference bytes and writing them back is the identity", () => {
    for (const text of [v1sha512!, v2sha256!]) expect(dec(formatRepoMeta(parseRepoMeta(enc(text), F)))).toBe(text);
  });

  test("multi-format: extra is a sorted array, omitted when empty", () => {
    const m = newRepoMeta("sha512", { default: 1, extra: [2, 0, 2] });
    const text = dec(formatRepoMeta(m));
    expect(text).toContain('"erofs_formats": {\n    "default": 1,\n    "extra": [\n      0,\n      2\n    ]\n  }\n}\n');
    expect(parseRepoMeta(text, F).erofsFormats).toEqual({ default: 1, extra: [0, 2] });
  });

  test("V0 default: no feature flag (only erofs_formats says so)", () => {
    const m = newRepoMeta("sha256", 0);
    expect(m.features.readOnlyCompatible).toEqual([]);
    expect(dec(formatRepoMeta(m))).toContain('"default": 0');
  });

  test("property: format → parse → format is stable, and parse(format(m)) = m", () => {
    const name = fc.string({ minLength: 1, maxLength: 12 });
    const version = fc.constantFrom<ErofsVersion>(0, 1, 2);
    fc.assert(
      fc.property(
        fc.constantFrom("sha256" as const, "sha512" as const),
        version,
        fc.array(version, { maxLength: 3 }),
        fc.array(name, { maxLength: 3 }),
        fc.array(name, { maxLength: 3 }),
        (alg, def, extra, compat, ro) => {
          const m: RepoMeta = {
            ...newRepoMeta(alg, { default: def, extra }),
            features: { compatible: compat, readOnlyCompatible: ro, incompatible: [] },
          };
          const bytes = formatRepoMeta(m);
          const back = parseRepoMeta(bytes, F);
          expect(back).toEqual(m);
          expect(dec(formatRepoMeta(back))).toBe(dec(bytes));
          // the same document as any JSON parser reads it
          expect(JSON.parse(dec(bytes)).features["read-only-compatible"]).toEqual(ro);
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe("reading", () => {
  test("missing features and erofs_formats: empty features, legacy V2", () => {
    const m = parseRepoMeta('{"version":1,"algorithm":"fsverity-sha512-12"}', F);
    expect(m.features).toEqual({ compatible: [], readOnlyCompatible: [], incompatible: [] });
    expect(effectiveFormats(m)).toEqual({ default: 2, extra: [] });
    expect(openMode(m)).toBe("rw");
  });

  test("feature arrays default individually", () => {
    const m = parseRepoMeta('{"version":1,"algorithm":"fsverity-sha256-12","features":{"read-only-compatible":["v1_erofs"]}}', F);
    expect(m.features).toEqual({ compatible: [], readOnlyCompatible: ["v1_erofs"], incompatible: [] });
  });

  test("unknown top-level fields and compatible features are ignored (and not written back)", () => {
    const m = parseRepoMeta('{"version":1,"algorithm":"fsverity-sha256-12","future":{"x":1},"features":{"compatible":["shiny"]}}', F);
    expect(openMode(m)).toBe("rw");
    expect(unknownFeatures(m).compatible).toEqual(["shiny"]);
    expect(dec(formatRepoMeta(m))).not.toContain("future");
  });

  test("version 0 is accepted (≤ 1)", () => {
    expect(parseRepoMeta('{"version":0,"algorithm":"fsverity-sha256-12"}', F).version).toBe(0);
  });
});

describe("effective EROFS formats (legacy fallback, repository.md §3.3)", () => {
  const meta = (formats: string | null, ro: string[]) =>
    parseRepoMeta(
      JSON.stringify({
        version: 1,
        algorithm: "fsverity-sha512-12",
        features: { "read-only-compatible": ro },
        ...(formats === null ? {} : { erofs_formats: JSON.parse(formats) }),
      }),
      F,
    );
  test.each([
    ["erofs_formats V1", '{"default":1}', [], { default: 1, extra: [] }],
    ["erofs_formats V0", '{"default":0}', [], { default: 0, extra: [] }],
    ["erofs_formats V1+V2", '{"default":1,"extra":[2]}', ["v1_erofs"], { default: 1, extra: [2] }],
    ["explicit {default:2} + v1_erofs → V1 (same as absent)", '{"default":2}', ["v1_erofs"], { default: 1, extra: [] }],
    ["absent + v1_erofs → V1", null, ["v1_erofs"], { default: 1, extra: [] }],
    ["absent, no flag → V2 (composefs-rs 0.7/0.8, bootc ≤ 1.16)", null, [], { default: 2, extra: [] }],
    ["{default:2, extra:[1]} is used as is", '{"default":2,"extra":[1]}', [], { default: 2, extra: [1] }],
  ])("%s", (_n, formats, ro, expected) => {
    expect(effectiveFormats(meta(formats, ro as string[]))).toEqual(expected);
  });

  test("formatVersions: default first, extras without the default", () => {
    expect(formatVersions(meta('{"default":1,"extra":[1,2]}', []))).toEqual([1, 2]);
  });
});

describe("refusals", () => {
  test("version > 1", () => {
    const e = errorOf(() => parseRepoMeta('{"version":2,"algorithm":"fsverity-sha512-12"}', F));
    expect(e.message).toBe(`${F}: field version: unsupported repository format version 2 (this cfsboot supports up to 1)`);
  });

  test("unknown incompatible feature", () => {
    const e = errorOf(() => parseRepoMeta('{"version":1,"algorithm":"fsverity-sha512-12","features":{"incompatible":["zstd-objects"]}}', F));
    expect(e.input).toBe(`${F}: field features.incompatible`);
    expect(e.what).toContain('unknown incompatible feature "zstd-objects"');
  });

  test("unknown read-only-compatible feature: readable, not writable", () => {
    const m = parseRepoMeta('{"version":1,"algorithm":"fsverity-sha512-12","features":{"read-only-compatible":["v1_erofs","new-index"]}}', F);
    expect(openMode(m)).toBe("ro");
    expect(unknownFeatures(m).readOnlyCompatible).toEqual(["new-index"]);
    expect(errorOf(() => requireWritable(m, "/repo")).message).toBe('/repo: repository is read-only for this cfsboot: unknown read-only-compatible feature "new-index"');
    expect(() => requireWritable(newRepoMeta("sha512"), "/repo")).not.toThrow();
  });

  test("algorithm mismatch", () => {
    expect(errorOf(() => requireAlgorithm(newRepoMeta("sha256"), "sha512", "/repo")).message).toBe(
      "/repo: repository algorithm fsverity-sha256-12 does not match expected fsverity-sha512-12",
    );
  });

  test.each([
    ["empty", "", `${F}: empty file (expected the repository's JSON metadata)`],
    ["truncated", '{"version":1,"algorithm":"fsverity-sha5', `${F}: not valid JSON`],
    ["not an object", "[1]", `${F}: expected a JSON object, found an array`],
    ["missing version", '{"algorithm":"fsverity-sha512-12"}', `${F}: missing field version`],
    ["missing algorithm", '{"version":1}', `${F}: missing field algorithm`],
    ["negative version", '{"version":-1,"algorithm":"fsverity-sha512-12"}', `${F}: field version: expected an unsigned 32-bit integer, found number -1`],
    ["string version", '{"version":"1","algorithm":"fsverity-sha512-12"}', `${F}: field version: expected an unsigned 32-bit integer, found the string "1"`],
    ["fractional version", '{"version":1.5,"algorithm":"fsverity-sha512-12"}', `${F}: field version: expected an unsigned 32-bit integer`],
    ["unknown algorithm", '{"version":1,"algorithm":"fsverity-blake3-12"}', `${F}: field algorithm: "fsverity-blake3-12": unknown fs-verity algorithm`],
    ["other block size", '{"version":1,"algorithm":"fsverity-sha256-16"}', `${F}: field algorithm: "fsverity-sha256-16": unsupported fs-verity block size 2^16`],
    ["features not an object", '{"version":1,"algorithm":"fsverity-sha256-12","features":[]}', `${F}: field features: expected an object, found an array`],
    ["feature not a string", '{"version":1,"algorithm":"fsverity-sha256-12","features":{"compatible":[1]}}', `${F}: field features.compatible[0]: expected a string, found number 1`],
    ["format 3", '{"version":1,"algorithm":"fsverity-sha256-12","erofs_formats":{"default":3}}', `${F}: field erofs_formats.default: unknown EROFS format version number 3`],
    ["formats without default", '{"version":1,"algorithm":"fsverity-sha256-12","erofs_formats":{}}', `${F}: field erofs_formats: missing field default`],
    ["extra not an array", '{"version":1,"algorithm":"fsverity-sha256-12","erofs_formats":{"default":1,"extra":2}}', `${F}: field erofs_formats.extra: expected an array`],
  ])("%s", (_n, text, prefix) => {
    expect(errorOf(() => parseRepoMeta(enc(text), F)).message.startsWith(prefix)).toBe(true);
  });

  test("invalid UTF-8", () => {
    expect(errorOf(() => parseRepoMeta(new Uint8Array([0x7b, 0xff, 0x7d]), F)).message).toBe(`${F}: not valid UTF-8`);
  });

  test("property: every single-byte corruption of a valid file is either refused with a CfsError or still a valid RepoMeta", () => {
    const good = formatRepoMeta(newRepoMeta("sha512"));
    fc.assert(
      fc.property(fc.nat(good.length - 1), fc.integer({ min: 0, max: 255 }), (at, byte) => {
        const bad = good.slice();
        bad[at] = byte;
        try {
          const m = parseRepoMeta(bad, F);
          expect(["sha256", "sha512"]).toContain(m.algorithm);
          expect(m.version).toBeLessThanOrEqual(1);
        } catch (e) {
          expect(e).toBeInstanceOf(CfsError);
        }
      }),
      { numRuns: 500 },
    );
  });
});

test("sameRepoMeta compares configuration", () => {
  expect(sameRepoMeta(newRepoMeta("sha512"), parseRepoMeta(formatRepoMeta(newRepoMeta("sha512")), F))).toBe(true);
  expect(sameRepoMeta(newRepoMeta("sha512"), newRepoMeta("sha512", 2))).toBe(false);
  expect(sameRepoMeta(newRepoMeta("sha512"), newRepoMeta("sha256"))).toBe(false);
});
