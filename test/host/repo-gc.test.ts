// `cfsboot repo gc`: a repository holding two tagged OCI-like images (built
// through the API the way a pull stores them: layer/config/manifest
// splitstreams, EROFS images referenced from the config), a named EROFS
// image, loose objects and streams, and stale/fresh temporaries. The
// objects each image owns are recorded while building, so the set a GC must
// remove is computed independently of the GC's own walk. Also: -n removes
// nothing, the surviving images still mount and read, a second GC removes
// nothing, GC waits for processes holding the repository.

import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { toHex } from "../../shared/bytes.ts";
import { CONTENT_TYPE, encodeSplitStream } from "../../shared/splitstream.ts";
import { externalFile, makeDir, makeLeaf } from "../../shared/tree.ts";
import { Repository } from "../../host/repo.ts";
import { canRun, cfsbootExe, hasTool, isRoot, projectRoot } from "../helpers/env.ts";
import { type FixtureImage, bytesOf, listObjects, storeImage } from "../helpers/repo-fixture.ts";

let dir: string;
let repoPath: string;
let imgA: FixtureImage;
let imgB: FixtureImage;
let named: { id: string; objects: Set<string>; files: Map<string, Uint8Array> };
let loose: Set<string>;
const filesA = new Map<string, Uint8Array>();

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function cfs(args: string[], prefix: string[] = []): Run {
  const cmd = prefix.length ? prefix[0]! : cfsbootExe;
  const argv = prefix.length ? [...prefix.slice(1), cfsbootExe, ...args] : args;
  const r = spawnSync(cmd, argv, { cwd: dir, env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dir }, timeout: 60_000 });
  return { status: r.status, stdout: r.stdout.toString("utf8"), stderr: r.stderr.toString("utf8") };
}

const repoArgs = (...a: string[]) => ["repo", "--repo", repoPath, ...a];
const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

function sizes(ids: Iterable<string>): number {
  let n = 0;
  for (const id of ids) n += statSync(`${repoPath}/objects/${id.slice(0, 2)}/${id.slice(2)}`).size;
  return n;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "cfsboot-repo-gc-"));
  if (!existsSync(cfsbootExe)) {
    const r = spawnSync(process.execPath, ["host/build.ts"], { cwd: projectRoot, stdio: "inherit" });
    if (r.status !== 0) throw new Error("building dist/cfsboot failed");
  }
  repoPath = join(dir, "repo");
  Repository.init(repoPath, { insecure: true }).repo.close();
  const repo = Repository.open(repoPath, { writable: true });
  try {
    const shared = bytesOf("shared", 70_000);
    const a = [
      [
        { path: "a1", content: bytesOf("a1", 100_000) },
        { path: "a2", content: new TextEncoder().encode("ten bytes!") },
        { path: "shared", content: shared },
      ],
      [{ path: "a3", content: bytesOf("a3", 5000) }],
    ];
    for (const l of a) for (const f of l) filesA.set(f.path, f.content);
    imgA = await storeImage(repo, { layers: a, tag: "keep:latest", label: "A" });
    imgB = await storeImage(repo, { layers: [[{ path: "b1", content: bytesOf("b1", 80_000) }, { path: "shared", content: shared }]], tag: "drop:latest", label: "B" });

    // A named EROFS image (what create-image makes): its objects live through images/refs/.
    const tree = makeDir({ mode: 0o755 });
    const files = new Map<string, Uint8Array>();
    const objects = new Set<string>();
    for (const [name, size] of [["n1", 9000], ["n2", 65]] as const) {
      const data = bytesOf(`named/${name}`, size);
      const id = await repo.ensureObject(data);
      objects.add(toHex(id));
      files.set(name, data);
      tree.entries.set(name, makeLeaf(externalFile(id, BigInt(size)), { mode: 0o644 }));
    }
    const nid = toHex(await repo.writeImage((await import("../../shared/erofs/writer.ts")).writeErofs(tree, { version: 1 }), "named"));
    objects.add(nid);
    named = { id: nid, objects, files };

    // Garbage: loose objects, a stream without a ref.
    loose = new Set<string>();
    loose.add(toHex(await repo.ensureObject(bytesOf("loose1", 3000))));
    const lo = await repo.ensureObject(bytesOf("loose2", 500));
    loose.add(toHex(lo));
    const file = await encodeSplitStream({ algorithm: repo.alg, contentType: CONTENT_TYPE.ociBlob, chunks: [{ external: lo, size: 500 }] });
    loose.add(toHex(await repo.writeStream("oci-blob-sha256:loose", file)));
  } finally {
    repo.close();
  }
  // Temporaries: a stale and a fresh named object temporary, a stale link temporary.
  writeFileSync(`${repoPath}/objects/.tmp-object-stale0000000`, "partial");
  writeFileSync(`${repoPath}/objects/.tmp-object-fresh0000000`, "partial");
  symlinkSync("../oci-manifest-x", `${repoPath}/streams/refs/oci/.symlink-stale0000000`);
  const old = new Date(Date.now() - 3 * 3600_000);
  utimesSync(`${repoPath}/objects/.tmp-object-stale0000000`, old, old);
  spawnSync("touch", ["-h", "-d", "3 hours ago", `${repoPath}/streams/refs/oci/.symlink-stale0000000`]);
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Objects the dry-run listing names. */
function listed(out: string): Set<string> {
  return new Set(
    out
      .split("\n")
      .filter((l) => l.startsWith("would remove objects/"))
      .map((l) => l.slice("would remove objects/".length).replace("/", "")),
  );
}

describe("gc", () => {
  test("the fixture is consistent: fsck clean, both images listed", () => {
    const f = cfs(repoArgs("fsck"));
    expect(f.status, f.stdout + f.stderr).toBe(0);
    expect(f.stdout).toMatch(/^meta\.json: ok\nobjects: \d+\/\d+ ok\nstreams: 8\/8 ok\nimages: 3\/3 ok\nstatus: ok\n$/);
    const j = JSON.parse(cfs(repoArgs("images", "--json")).stdout);
    expect(j.images.map((i: { name: string }) => i.name)).toEqual(["drop:latest", "keep:latest"]);
    expect(j.images[1]).toEqual({
      name: "keep:latest",
      manifest_digest: imgA.manifestDigest,
      is_container: true,
      architecture: "amd64",
      os: "linux",
      created: "2024-01-02T03:04:05Z",
      layer_count: 2,
      referrer_count: 0,
    });
    expect(j.image_refs).toEqual([{ name: "named", digest: named.id }]);
    const t = cfs(repoArgs("images")).stdout;
    expect(t).toContain(`│ keep:latest ┆ ${imgA.manifestDigest.slice(7, 19)} ┆ amd64 ┆ 2      ┆ 0    │`);
  });

  test("-n with both tags: lists exactly the loose objects, removes nothing", async () => {
    const repo = Repository.open(repoPath);
    const before = await listObjects(repo);
    repo.close();
    const r = cfs(repoArgs("gc", "-n"));
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.startsWith("Dry run (no files deleted):\n")).toBe(true);
    expect(listed(r.stdout)).toEqual(loose);
    expect(r.stdout).toContain(`Objects: ${loose.size} removed (${sizes(loose)} bytes)`);
    expect(r.stdout).toContain("would remove stale temporary objects/.tmp-object-stale0000000");
    const again = Repository.open(repoPath);
    expect(await listObjects(again)).toEqual(before);
    again.close();
    expect(existsSync(`${repoPath}/objects/.tmp-object-stale0000000`)).toBe(true);
  });

  test("untag, then gc removes exactly the unreachable objects; -n before it removes nothing", async () => {
    const u = cfs(repoArgs("untag", "drop:latest"));
    expect(u.stdout).toBe("Removed tag drop:latest\n");
    const keep = new Set([...imgA.objects, ...named.objects]);
    const expected = new Set([...imgB.objects, ...loose].filter((x) => !keep.has(x)));
    // The shared file object belongs to both images: it must stay.
    expect([...imgB.fileObjects].some((x) => imgA.fileObjects.has(x))).toBe(true);
    const repo0 = Repository.open(repoPath);
    const before = await listObjects(repo0);
    repo0.close();
    for (const x of [...keep, ...expected]) expect(before.has(x), x).toBe(true);

    const dry = cfs(repoArgs("gc", "-n"));
    expect(listed(dry.stdout)).toEqual(expected);
    const repo1 = Repository.open(repoPath);
    expect(await listObjects(repo1)).toEqual(before);
    repo1.close();

    const bytes = sizes(expected);
    const r = cfs(repoArgs("gc"));
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe(`Objects: ${expected.size} removed (${bytes} bytes)\nPruned symlinks: 1 images, 4 streams\nStale temporaries: 2 removed\n`);
    const repo2 = Repository.open(repoPath);
    const after = await listObjects(repo2);
    repo2.close();
    expect(new Set([...before].filter((x) => !after.has(x)))).toEqual(expected);
    expect(after).toEqual(new Set([...before].filter((x) => !expected.has(x))));
    // Temporaries: the stale ones went, the fresh one stays.
    expect(existsSync(`${repoPath}/objects/.tmp-object-stale0000000`)).toBe(false);
    expect(existsSync(`${repoPath}/objects/.tmp-object-fresh0000000`)).toBe(true);
    expect(readdirSync(`${repoPath}/streams/refs/oci`)).toEqual(["keep:latest"]);
    // B's streams and image entry are gone, A's are there.
    const streams = readdirSync(`${repoPath}/streams`).filter((s) => s !== "refs");
    expect(streams).toContain(`oci-manifest-${imgA.manifestDigest}`);
    expect(streams).not.toContain(`oci-manifest-${imgB.manifestDigest}`);
    expect(streams.length).toBe(4);
    expect(readdirSync(`${repoPath}/images`).sort()).toEqual([imgA.images.get(1)!, named.id, "refs"].sort());
  });

  test("a second gc removes nothing; fsck is clean", () => {
    const r = cfs(repoArgs("gc"));
    expect(r.stdout).toBe("Objects: 0 removed (0 bytes)\n");
    const f = cfs(repoArgs("fsck"));
    expect(f.status, f.stdout).toBe(0);
    expect(f.stdout).toContain("status: ok");
  });

  test("the surviving images still mount and read (by tag and by refs/NAME)", () => {
    if (!canRun(isRoot && hasTool("unshare"), "needs root and unshare(1) for a private mount namespace")) return;
    const mnt = join(dir, "mnt");
    mkdirSync(mnt, { recursive: true });
    for (const [img, files] of [["keep:latest", filesA], ["refs/named", named.files]] as const) {
      const script = `"$CFS" repo --repo "$REPO" mount "$IMG" "$MNT" && cd "$MNT" && for f in *; do [ -f "$f" ] || continue; printf '%s %s\\n' "$f" "$(sha256sum < "$f" | cut -d' ' -f1)"; done`;
      const r = spawnSync("unshare", ["--mount", "--propagation", "private", "sh", "-c", script], {
        env: { PATH: process.env.PATH ?? "/usr/bin:/bin", CFS: cfsbootExe, REPO: repoPath, IMG: img, MNT: mnt },
        encoding: "utf8",
      });
      expect(r.status, r.stderr).toBe(0);
      const got = new Map(r.stdout.trim().split("\n").map((l) => l.split(" ") as [string, string]));
      const want = new Map([...files].map(([k, v]) => [k, sha256(v)]));
      expect(got).toEqual(want);
    }
    // Nothing stayed mounted outside the private namespace.
    expect(readdirSync(mnt)).toEqual([]);
  });

  test("gc waits for a process holding the repository; what that process wrote survives", async () => {
    // A writer holds the shared lock while it stores objects and a stream (with a ref), then lingers.
    const child = spawn(process.execPath, [`${projectRoot}test/helpers/repo-writer.ts`, repoPath, "locked", "6", "--stream", "oci-layer-sha256:locked", "--hold", "2500"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    const exited = new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c)));
    while (!out.includes("ready")) await Bun.sleep(20);
    const start = Date.now();
    const gc = await new Promise<Run>((resolve) => {
      const c = spawn(cfsbootExe, repoArgs("gc"), { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
      let so = "";
      let se = "";
      c.stdout.on("data", (d) => (so += d));
      c.stderr.on("data", (d) => (se += d));
      c.on("exit", (status) => resolve({ status, stdout: so, stderr: se }));
    });
    const waited = Date.now() - start;
    expect(await exited).toBe(0);
    expect(out).toContain("done");
    expect(gc.status, gc.stderr).toBe(0);
    expect(gc.stderr).toMatch(/waiting for the repository lock \(exclusive\)/);
    expect(waited).toBeGreaterThan(1000);
    expect(gc.stdout).toBe("Objects: 0 removed (0 bytes)\n");
    const repo = Repository.open(repoPath);
    try {
      const ids = out.split("\n").filter((l) => /^\d+ /.test(l)).map((l) => l.split(" ")[1]!);
      expect(ids.length).toBe(6);
      for (const id of ids) expect(repo.hasObject(id)).toBe(true);
      expect(repo.hasStream("oci-layer-sha256:locked")).not.toBeNull();
    } finally {
      repo.close();
    }
    // A dry run only needs the shared lock: it does not wait.
    const holder = spawn("flock", ["--shared", repoPath, "sleep", "3"], { stdio: "ignore" });
    await Bun.sleep(300);
    const t0 = Date.now();
    const dry = cfs(repoArgs("gc", "-n"));
    expect(dry.status).toBe(0);
    expect(dry.stderr).toBe("");
    expect(Date.now() - t0).toBeLessThan(2500);
    holder.kill();
    const f = cfs(repoArgs("fsck"));
    expect(f.status, f.stdout).toBe(0);
  });

  test("gc refuses to run on a damaged root instead of guessing (nothing removed)", async () => {
    const p = join(dir, "damaged");
    Repository.init(p, { insecure: true }).repo.close();
    const repo = Repository.open(p);
    const img = await storeImage(repo, { layers: [[{ path: "x", content: bytesOf("dmg", 1000) }]], tag: "t" });
    const loose2 = toHex(await repo.ensureObject(bytesOf("dmg-loose", 1000)));
    repo.close();
    // The tagged manifest stream object becomes unreadable garbage.
    const mid = readdirSync(`${p}/streams`).find((s) => s.startsWith("oci-manifest-"))!;
    const target = (await import("node:fs")).readlinkSync(`${p}/streams/${mid}`);
    writeFileSync(join(`${p}/streams`, target), "not a splitstream");
    const r = cfs(["repo", "--repo", p, "gc"]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^cfsboot: streams\/oci-manifest-.*cannot read the stream.*nothing was removed/);
    expect(existsSync(`${p}/objects/${loose2.slice(0, 2)}/${loose2.slice(2)}`)).toBe(true);
    void img;
  });
});
