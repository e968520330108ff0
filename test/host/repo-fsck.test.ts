// `cfsboot repo fsck`: each kind of damage is found and named — a flipped
// byte in an object, a missing object, broken streams (not a splitstream, an
// undecodable stream section, a missing named-ref target), a truncated
// image, broken links, stray files, bad names, meta.json — in composefs-rs'
// text and JSON formats, with exit status 1 in text mode.

import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, truncateSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { toHex } from "../../shared/bytes.ts";
import { fsverityDigest } from "../../shared/fsverity.ts";
import { parseSplitStream } from "../../shared/splitstream.ts";
import { Repository, configStreamId, layerStreamId } from "../../host/repo.ts";
import { type FsckReport, formatFsckJson, formatFsckText, fsckErrorText } from "../../host/repo-fsck.ts";
import { cfsbootExe, projectRoot } from "../helpers/env.ts";
import { type FixtureImage, bytesOf, storeImage } from "../helpers/repo-fixture.ts";

let dir: string;
let n = 0;

async function fixture(): Promise<{ repo: Repository; img: FixtureImage; file: Uint8Array }> {
  const p = join(dir, `r${n++}`);
  Repository.init(p, { insecure: true }).repo.close();
  const repo = Repository.open(p);
  const file = bytesOf(`fsck-file-${n}`, 20_000);
  const img = await storeImage(repo, { layers: [[{ path: "big", content: file }, { path: "small", content: new Uint8Array([1, 2, 3]) }]], tag: "t" });
  return { repo, img, file };
}

const rel = (hex: string) => `objects/${hex.slice(0, 2)}/${hex.slice(2)}`;
const texts = (r: FsckReport) => r.errors.map(fsckErrorText);

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "cfsboot-repo-fsck-"));
  if (!existsSync(cfsbootExe)) {
    const r = spawnSync(process.execPath, ["host/build.ts"], { cwd: projectRoot, stdio: "inherit" });
    if (r.status !== 0) throw new Error("building dist/cfsboot failed");
  }
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe("fsck", () => {
  test("a clean repository: cfsctl's report, exit 0; JSON with snake_case keys", async () => {
    const { repo } = await fixture();
    repo.close();
    const r = spawnSync(cfsbootExe, ["repo", "--repo", repo.path, "fsck"], { encoding: "utf8" });
    expect(r.status, r.stderr).toBe(0);
    // Objects: 1 file + 2 JSON + 3 streams + 1 image; 3 streams; 1 image.
    expect(r.stdout).toBe("meta.json: ok\nobjects: 7/7 ok\nstreams: 3/3 ok\nimages: 1/1 ok\nstatus: ok\n");
    const j = spawnSync(cfsbootExe, ["repo", "--repo", repo.path, "fsck", "--json"], { encoding: "utf8" });
    expect(j.status).toBe(0);
    expect(j.stdout).toBe(
      JSON.stringify(
        {
          ok: true,
          has_metadata: true,
          objects_checked: 7,
          objects_corrupted: 0,
          streams_checked: 3,
          streams_corrupted: 0,
          images_checked: 1,
          images_corrupted: 0,
          broken_links: 0,
          missing_objects: 0,
          errors: [],
        },
        null,
        2,
      ) + "\n",
    );
  });

  test("a flipped byte in an object: object-digest-mismatch with the measured digest; exit 1 (text), 0 (JSON)", async () => {
    const { repo, file } = await fixture();
    const hex = toHex(fsverityDigest(file, "sha512"));
    const flipped = new Uint8Array(file);
    flipped[12345] = flipped[12345]! ^ 1;
    writeFileSync(repo.objectPath(hex), flipped);
    repo.close();
    const measured = toHex(fsverityDigest(flipped, "sha512"));
    const line = `  - fsck: object-digest-mismatch: ${rel(hex)}: measured ${measured}\n`;
    const r = spawnSync(cfsbootExe, ["repo", "--repo", repo.path, "fsck"], { encoding: "utf8" });
    expect(r.status).toBe(1);
    expect(r.stdout).toBe(`meta.json: ok\nobjects: 6/7 ok\nstreams: 3/3 ok\nimages: 1/1 ok\nstatus: 1 error(s)\n${line}`);
    expect(r.stderr).toBe(`cfsboot: ${repo.path}: repository integrity check failed\n`);
    const j = spawnSync(cfsbootExe, ["repo", "--repo", repo.path, "fsck", "--json"], { encoding: "utf8" });
    expect(j.status).toBe(0);
    const doc = JSON.parse(j.stdout);
    expect(doc.ok).toBe(false);
    expect(doc.objects_corrupted).toBe(1);
    expect(doc.errors).toEqual([line.trim().slice(2)]);
  });

  test("a missing object: named by the stream and the image that need it", async () => {
    const { repo, img, file } = await fixture();
    const hex = toHex(fsverityDigest(file, "sha512"));
    unlinkSync(repo.objectPath(hex));
    const r = await repo.fsck();
    repo.close();
    const layer = `streams/${layerStreamId(img.diffIds[0]!)}`;
    expect(texts(r)).toEqual([`fsck: missing-object-ref: ${layer}: ${hex}`, `fsck: image-missing-object: images/${img.images.get(1)}: ${hex}`]);
    expect(r.missingObjects).toBe(2);
    expect(formatFsckText(r)).toContain("missing objects: 2\nstatus: 2 error(s)\n");
  });

  test("a truncated image: its object's digest and the image structure both fail", async () => {
    const { repo, img } = await fixture();
    const id = img.images.get(1)!;
    truncateSync(repo.objectPath(id), 1500);
    const r = await repo.fsck();
    repo.close();
    const t = texts(r);
    expect(t.length).toBe(2);
    expect(t[0]).toMatch(new RegExp(`^fsck: object-digest-mismatch: ${rel(id)}: measured [0-9a-f]{128}$`));
    expect(t[1]).toMatch(new RegExp(`^fsck: image-invalid: images/${id}: `));
    expect(r.imagesCorrupted).toBe(1);
    expect(formatFsckText(r)).toContain("images: 0/1 ok\n");
  });

  test("broken streams: not a splitstream, an undecodable stream section, a missing named-ref target", async () => {
    const { repo, img } = await fixture();
    const layer = layerStreamId(img.diffIds[0]!);
    const layerTarget = readlinkSync(`${repo.path}/streams/${layer}`);
    const good = new Uint8Array(readFileSync(join(`${repo.path}/streams`, layerTarget)));
    // (1) The layer's link re-pointed at an object that is no splitstream.
    const junk = repo.ensureObjectSync(new TextEncoder().encode("no splitstream here, just some bytes that are long enough for a header")).digest;
    unlinkSync(`${repo.path}/streams/${layer}`);
    symlinkSync(`../${rel(toHex(junk))}`, `${repo.path}/streams/${layer}`);
    // (2) The config stream replaced by a copy whose stream section is cut short (stored as a valid object).
    const cfg = configStreamId(img.configDigest);
    const cfgTarget = readlinkSync(`${repo.path}/streams/${cfg}`);
    const cfgBytes = new Uint8Array(readFileSync(join(`${repo.path}/streams`, cfgTarget)));
    const info = parseSplitStream(cfgBytes, { algorithm: "sha512" });
    const end = cfgBytes.length - 3;
    const cut = cfgBytes.slice(0, end);
    new DataView(cut.buffer).setBigUint64(32 + 40, BigInt(end), true); // stream range end (info at 32, stream range at +32..+48)
    expect(info.stream.length).toBeGreaterThan(3);
    const cutId = repo.ensureObjectSync(cut).digest;
    unlinkSync(`${repo.path}/streams/${cfg}`);
    symlinkSync(`../${rel(toHex(cutId))}`, `${repo.path}/streams/${cfg}`);
    // (3) The manifest's named-ref target (the original config stream object) deleted.
    unlinkSync(join(`${repo.path}/streams`, cfgTarget));
    void good;
    const r = await repo.fsck();
    repo.close();
    const t = texts(r);
    expect(t).toContainEqual(expect.stringMatching(new RegExp(`^fsck: stream-open-failed: streams/${layer}: offset 0: not a splitstream \\(bad magic\\)$`)));
    expect(t).toContainEqual(expect.stringMatching(new RegExp(`^fsck: stream-read-failed: streams/${cfg}: stream ends inside a chunk header$`)));
    expect(t).toContainEqual(expect.stringMatching(new RegExp(`^fsck: missing-named-ref: streams/oci-manifest-${img.manifestDigest}: ref config:${img.configDigest}: [0-9a-f]{128}$`)));
    expect(r.streamsCorrupted).toBe(2);
    expect(formatFsckText(r)).toContain("streams: 1/3 ok\n");
  });

  test("broken links, stray files and bad names", async () => {
    const { repo, img } = await fixture();
    const layer = layerStreamId(img.diffIds[0]!);
    const target = readlinkSync(`${repo.path}/streams/${layer}`);
    unlinkSync(join(`${repo.path}/streams`, target)); // the layer stream object: streams/<layer> dangles
    writeFileSync(`${repo.path}/streams/stray`, "x");
    mkdirSync(`${repo.path}/images/refs`, { recursive: true });
    symlinkSync("../nothing", `${repo.path}/images/refs/dangling`);
    writeFileSync(`${repo.path}/streams/refs/oci/file`, "x");
    mkdirSync(`${repo.path}/objects/ab`, { recursive: true });
    writeFileSync(`${repo.path}/objects/ab/not-hex`, "x");
    const r = await repo.fsck();
    repo.close();
    const t = texts(r);
    expect(t).toContain("fsck: object-invalid-name: objects/ab/not-hex: not a sha512 object name");
    expect(t).toContain(`fsck: broken-symlink: streams/${layer}`);
    expect(t).toContain("fsck: entry-not-symlink: streams/stray");
    expect(t).toContain("fsck: broken-symlink: images/refs/dangling");
    expect(t).toContain("fsck: unexpected-file-type: streams/refs/oci/file: regular file");
    // The manifest and config still name the deleted layer stream object.
    expect(t.filter((x) => x.startsWith("fsck: missing-named-ref: ")).length).toBe(2);
    expect(r.brokenLinks).toBe(2);
    expect(formatFsckText(r)).toContain("broken symlinks: 2\n");
  });

  test("meta.json damaged after the repository was opened: metadata-parse-failed", async () => {
    const { repo } = await fixture();
    writeFileSync(`${repo.path}/meta.json`, "{");
    const r = await repo.fsck();
    expect(texts(r)).toEqual([expect.stringMatching(/^fsck: metadata-parse-failed: meta\.json: not valid JSON/)]);
    expect(formatFsckText(r).startsWith("meta.json: error\n")).toBe(true);
    expect(JSON.parse(formatFsckJson(r)).ok).toBe(false);
    unlinkSync(`${repo.path}/meta.json`);
    const r2 = await repo.fsck();
    expect(texts(r2)).toEqual(["fsck: metadata-parse-failed: meta.json: meta.json not found; expected because repository was opened successfully"]);
    repo.close();
  });
});
