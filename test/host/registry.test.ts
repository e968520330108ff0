// host/registry.ts against a real docker-registry (test/helpers/registry.ts):
// images pushed with skopeo are fetched back byte for byte over TLS with
// basic and bearer (token server) authentication; failures are clean
// one-line CfsErrors; a corrupted blob never yields a file.

import { describe, expect, test, beforeAll, afterAll } from "vitest";
import { mkdtempSync, rmSync, readFileSync, writeFileSync, mkdirSync, openSync, readSync, writeSync, closeSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHash } from "node:crypto";

import { startRegistry, makeTestPki, freePort, type TestRegistry } from "../helpers/registry.ts";
import { buildImage, buildIndex, pushImage, skopeo, insecurePolicy, sha256, type BuiltImage } from "../helpers/oci-image.ts";
import { RegistryClient, bootcAuthFile, lookupCredentials, parseWwwAuthenticate, type RegistryClientOptions } from "../../host/registry.ts";
import { parseDockerReference, selectManifest, platformForArch, MEDIA_TYPE } from "../../shared/oci.ts";
import { CfsError } from "../../shared/errors.ts";
import { canRun, hasTool } from "../helpers/env.ts";

const haveTools = ["docker-registry", "skopeo", "htpasswd", "openssl"].every(hasTool);

let work: string;
let img: BuiltImage;
const regs: Partial<Record<"basic" | "bearer", TestRegistry>> = {};

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "cfsboot-regtest-"));
  if (!haveTools) return;
  img = buildImage(join(work, "layout"), {
    layers: [
      { compression: "gzip", entries: [{ type: "dir", path: "usr" }, { type: "file", path: "usr/big", size: 2_500_000, seed: 3 }] },
      { compression: "zstd", entries: [{ type: "file", path: "usr/small", content: "hello\n" }] },
      { compression: "none", entries: [{ type: "file", path: "usr/raw", size: 5000 }] },
    ],
    annotations: { "org.opencontainers.image.version": "1.2.3" },
  }, { tag: "latest" });
  const [basic, bearer] = await Promise.all([startRegistry({ auth: "basic" }), startRegistry({ auth: "bearer" })]);
  regs.basic = basic;
  regs.bearer = bearer;
  await Promise.all([pushImage(img.dir, "latest", basic, "test/img", "v1"), pushImage(img.dir, "latest", bearer, "test/img", "v1")]);
}, 120_000);

afterAll(async () => {
  await Promise.all(Object.values(regs).map((r) => r?.stop()));
  rmSync(work, { recursive: true, force: true });
});

async function client(reg: TestRegistry, ref: string, opts: RegistryClientOptions = {}): Promise<RegistryClient> {
  return RegistryClient.open(parseDockerReference(`${reg.host}/${ref}`), { authFile: reg.authFile, certDir: reg.caDir, ...opts });
}

async function failure(p: Promise<unknown>): Promise<CfsError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(CfsError);
    expect((e as CfsError).message).not.toContain("\n");
    return e as CfsError;
  }
  throw new Error("expected a failure");
}

for (const auth of ["basic", "bearer"] as const) {
  describe(`${auth} auth`, () => {
    test("manifest by tag and by digest, config and layers byte for byte", async () => {
      if (!canRun(haveTools, "docker-registry, skopeo, htpasswd or openssl missing")) return;
      const reg = regs[auth]!;
      const c = await client(reg, "test/img:v1");
      const m = await c.getManifest();
      expect(m.digest).toBe(img.manifestDigest);
      expect(Buffer.from(m.bytes).equals(Buffer.from(img.manifest))).toBe(true);
      expect(m.contentType).toBe(MEDIA_TYPE.ociManifest);
      expect(m.document.kind).toBe("manifest");
      const byDigest = await c.getManifest(img.manifestDigest);
      expect(byDigest.digest).toBe(img.manifestDigest);
      if (m.document.kind !== "manifest") throw new Error("unreachable");
      expect(Buffer.from(await c.readBlob(m.document.config)).equals(Buffer.from(img.config))).toBe(true);
      for (const [i, l] of m.document.layers.entries()) {
        const dest = join(work, `${auth}-layer${i}`);
        await c.downloadBlob(l, dest);
        expect(sha256(readFileSync(dest))).toBe(img.layers[i]!.digest);
        expect(l.mediaType).toBe(img.layers[i]!.mediaType);
      }
    });

    test("wrong password, no credentials, unknown tag, unknown repository, unknown blob", async () => {
      if (!canRun(haveTools, "docker-registry, skopeo, htpasswd or openssl missing")) return;
      const reg = regs[auth]!;
      const wrong = await failure((await client(reg, "test/img:v1", { credentials: { username: reg.user, password: "nope" } })).getManifest());
      expect(wrong.message).toBe(`docker://${reg.host}/test/img:v1: authentication failed for ${reg.host}`);
      const empty = join(work, `${auth}-empty.json`);
      writeFileSync(empty, JSON.stringify({ auths: {} }));
      const none = await failure((await client(reg, "test/img:v1", { authFile: empty })).getManifest());
      expect(none.what).toBe(`authentication required for ${reg.host} (no credentials found)`);
      const tag = await failure((await client(reg, "test/img:nope")).getManifest());
      expect(tag.message).toBe(`docker://${reg.host}/test/img:nope: manifest unknown: test/img:nope`);
      const repo = await failure((await client(reg, "test/other:v1")).getManifest());
      expect(repo.what).toMatch(/manifest unknown|not found/);
      const blob = await failure((await client(reg, "test/img:v1")).readBlob({ digest: "sha256:" + "0".repeat(64) }));
      expect(blob.what).toBe(`blob unknown: sha256:${"0".repeat(64)}`);
    });
  });
}

describe("integrity", () => {
  test("a corrupted blob is a digest mismatch and leaves no file", async () => {
    if (!canRun(haveTools, "docker-registry, skopeo, htpasswd or openssl missing")) return;
    const reg = await startRegistry({ auth: "basic" });
    try {
      await pushImage(img.dir, "latest", reg, "test/img", "v1");
      const layer = img.layers[0]!;
      const p = reg.blobPath(layer.digest);
      const fd = openSync(p, "r+");
      const b = Buffer.alloc(1);
      readSync(fd, b, 0, 1, 1000);
      b[0] = b[0]! ^ 0xff;
      writeSync(fd, b, 0, 1, 1000);
      closeSync(fd);
      const c = await client(reg, "test/img:v1");
      const destDir = join(work, "corrupt");
      mkdirSync(destDir);
      const e = await failure(c.downloadBlob(layer, join(destDir, "blob")));
      expect(e.message).toMatch(new RegExp(`^docker://${reg.host}/test/img@${layer.digest}: blob digest mismatch: got sha256:[0-9a-f]{64}$`));
      expect(readdirSync(destDir)).toEqual([]);
      // A size that disagrees with the descriptor is caught too.
      const e2 = await failure(c.readBlob({ digest: img.layers[1]!.digest, size: img.layers[1]!.size - 1 }));
      expect(e2.what).toMatch(/larger than the \d+ bytes its descriptor says/);
    } finally {
      await reg.stop();
    }
  });
});

describe("TLS", () => {
  test("no CA: clean verification error; --tls-verify=false; certs.d roots; mutual TLS", async () => {
    if (!canRun(haveTools, "docker-registry, skopeo, htpasswd or openssl missing")) return;
    const reg = regs.basic!;
    const noCa = await failure(RegistryClient.open(parseDockerReference(`${reg.host}/test/img:v1`), { authFile: reg.authFile, certsDirs: [] }).then((c) => c.getManifest()));
    expect(noCa.what).toMatch(new RegExp(`^TLS certificate verification failed for ${reg.host.replace(".", "\\.")}: `));
    const insecure = await RegistryClient.open(parseDockerReference(`${reg.host}/test/img:v1`), { authFile: reg.authFile, certsDirs: [], tlsVerify: false });
    expect((await insecure.getManifest()).digest).toBe(img.manifestDigest);
    const viaCertsD = await RegistryClient.open(parseDockerReference(`${reg.host}/test/img:v1`), { authFile: reg.authFile, certsDirs: [reg.certsD] });
    expect((await viaCertsD.getManifest()).digest).toBe(img.manifestDigest);

    const mtls = await startRegistry({ auth: "basic", clientCerts: true });
    try {
      await pushImage(img.dir, "latest", mtls, "test/img", "v1");
      expect((await (await client(mtls, "test/img:v1")).getManifest()).digest).toBe(img.manifestDigest);
      const caOnly = join(work, "ca-only");
      mkdirSync(caOnly);
      writeFileSync(join(caOnly, "ca.crt"), readFileSync(mtls.caFile));
      const e = await failure((await client(mtls, "test/img:v1", { certDir: caOnly })).getManifest());
      expect(e.what).toMatch(/TLS handshake with .* failed/);
      writeFileSync(join(caOnly, "orphan.key"), "x");
      const e2 = await failure(client(mtls, "test/img:v1", { certDir: caOnly }));
      expect(e2.what).toBe("client key without its certificate");
    } finally {
      await mtls.stop();
    }
  });
});

describe("credentials lookup", () => {
  test("containers order, most specific key, legacy docker keys, REGISTRY_AUTH_FILE", async () => {
    if (!canRun(haveTools, "docker-registry, skopeo, htpasswd or openssl missing")) return;
    const reg = regs.bearer!;
    const home = join(work, "home");
    const run = join(work, "run");
    mkdirSync(join(home, ".config/containers"), { recursive: true });
    mkdirSync(join(home, ".docker"), { recursive: true });
    mkdirSync(join(run, "containers"), { recursive: true });
    const enc = (u: string, p: string) => ({ auth: Buffer.from(`${u}:${p}`).toString("base64") });
    const env = { HOME: home, XDG_RUNTIME_DIR: run };
    const ref = parseDockerReference(`${reg.host}/test/img:v1`);
    const get = async () => (await RegistryClient.open(ref, { env, certDir: reg.caDir })).getManifest();

    // Only ~/.docker/config.json, with a legacy URL key.
    writeFileSync(join(home, ".docker/config.json"), JSON.stringify({ auths: { [`https://${reg.host}/v1/`]: enc(reg.user, reg.password) } }));
    expect((await get()).digest).toBe(img.manifestDigest);
    // ~/.config/containers/auth.json comes before it: a wrong password there fails.
    writeFileSync(join(home, ".config/containers/auth.json"), JSON.stringify({ auths: { [reg.host]: enc(reg.user, "wrong") } }));
    expect((await failure(get())).what).toBe(`authentication failed for ${reg.host}`);
    // $XDG_RUNTIME_DIR/containers/auth.json comes first of all; a namespace key beats the host key.
    writeFileSync(join(run, "containers/auth.json"), JSON.stringify({ auths: { [reg.host]: enc(reg.user, "wrong"), [`${reg.host}/test`]: enc(reg.user, reg.password) } }));
    expect((await get()).digest).toBe(img.manifestDigest);
    expect(lookupCredentials(reg.host, "test/img", { env })!.file).toBe(join(run, "containers/auth.json"));
    // REGISTRY_AUTH_FILE replaces the whole chain.
    expect(lookupCredentials(reg.host, "test/img", { env: { ...env, REGISTRY_AUTH_FILE: reg.authFile } })!.file).toBe(reg.authFile);
    const missing = await failure(Promise.resolve().then(() => lookupCredentials(reg.host, "x", { env: { REGISTRY_AUTH_FILE: join(work, "nope.json") } })));
    expect(missing.what).toBe("auth file does not exist");
    // Docker Hub keys.
    const hub = join(work, "hub.json");
    writeFileSync(hub, JSON.stringify({ auths: { "https://index.docker.io/v1/": enc("u", "p") } }));
    expect(lookupCredentials("docker.io", "library/busybox", { authFile: hub })!.credentials).toEqual({ username: "u", password: "p" });
  });

  test("bootc's ostree auth file order", () => {
    const root = join(work, "sysroot");
    for (const d of ["etc/ostree", "run/ostree", "usr/lib/ostree"]) mkdirSync(join(root, d), { recursive: true });
    expect(bootcAuthFile({ uid: 0, root })).toBeNull();
    writeFileSync(join(root, "usr/lib/ostree/auth.json"), "{}");
    expect(bootcAuthFile({ uid: 0, root })).toBe(join(root, "usr/lib/ostree/auth.json"));
    writeFileSync(join(root, "run/ostree/auth.json"), "{}");
    expect(bootcAuthFile({ uid: 0, root })).toBe(join(root, "run/ostree/auth.json"));
    writeFileSync(join(root, "etc/ostree/auth.json"), "{}");
    expect(bootcAuthFile({ uid: 0, root })).toBe(join(root, "etc/ostree/auth.json"));
    mkdirSync(join(root, "xdg/ostree"), { recursive: true });
    writeFileSync(join(root, "xdg/ostree/auth.json"), "{}");
    expect(bootcAuthFile({ uid: 1000, env: { XDG_RUNTIME_DIR: join(root, "xdg") }, root })).toBe(join(root, "xdg/ostree/auth.json"));
  });

  test("WWW-Authenticate parsing", () => {
    expect(parseWwwAuthenticate('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"')).toEqual([
      { scheme: "bearer", params: { realm: "https://auth.example/token", service: "registry.example", scope: "repository:a/b:pull,push" } },
    ]);
    expect(parseWwwAuthenticate('Basic realm="x\\"y", Bearer realm="r"')).toEqual([
      { scheme: "basic", params: { realm: 'x"y' } },
      { scheme: "bearer", params: { realm: "r" } },
    ]);
  });
});

describe("Docker formats and indexes", () => {
  test("a Docker schema 2 manifest (skopeo --format v2s2) and a multi-arch index", async () => {
    if (!canRun(haveTools, "docker-registry, skopeo, htpasswd or openssl missing")) return;
    const reg = regs.basic!;
    const policy = insecurePolicy(reg.dir);
    // Docker schema 2 has no zstd layers: a gzip-only image.
    const gz = buildImage(join(work, "gzip-only"), { layers: [{ compression: "gzip", entries: [{ type: "file", path: "f", size: 3000 }] }] }, { tag: "latest" });
    await skopeo(["--policy", policy, "copy", "--quiet", "--format", "v2s2", "--dest-cert-dir", reg.caDir, "--dest-creds", reg.creds, `oci:${gz.dir}:latest`, reg.ref("test/docker", "v1")]);
    const raw = await skopeo(["--policy", policy, "inspect", "--raw", "--cert-dir", reg.caDir, "--creds", reg.creds, reg.ref("test/docker", "v1")]);
    const c = await client(reg, "test/docker:v1");
    const m = await c.getManifest();
    expect(m.contentType).toBe(MEDIA_TYPE.dockerManifest);
    expect(m.digest).toBe(sha256(raw));
    if (m.document.kind !== "manifest") throw new Error("expected a manifest");
    expect(m.document.docker).toBe(true);
    expect(m.document.config.mediaType).toBe(MEDIA_TYPE.dockerConfig);
    expect(m.document.layers.map((l) => l.mediaType)).toContain(MEDIA_TYPE.dockerLayerGzip);
    // Layers still verify against their (re-computed where converted) digests.
    for (const l of m.document.layers) {
      let n = 0;
      for await (const piece of c.fetchBlob(l)) n += piece.length;
      expect(n).toBe(l.size);
    }

    const multi = buildIndex(join(work, "multi"), [
      { architecture: "arm64", variant: "v8", layers: [{ entries: [{ type: "file", path: "arch", content: "arm64" }] }] },
      { architecture: "amd64", layers: [{ entries: [{ type: "file", path: "arch", content: "amd64" }] }] },
    ], { tag: "latest" });
    await skopeo(["--policy", policy, "copy", "--quiet", "--all", "--preserve-digests", "--dest-cert-dir", reg.caDir, "--dest-creds", reg.creds, `oci:${multi.dir}:latest`, reg.ref("test/multi", "v1")]);
    const mc = await client(reg, "test/multi:v1");
    const top = await mc.getManifest();
    expect(top.digest).toBe(multi.indexDigest);
    if (top.document.kind !== "index") throw new Error("expected an index");
    const chosen = selectManifest(top.document, platformForArch("x64"), mc.name);
    expect(chosen.digest).toBe(multi.images[1]!.manifestDigest);
    const pm = await mc.getManifest(chosen.digest);
    expect(pm.document.kind).toBe("manifest");
  });
});

describe("redirects", () => {
  test("blob redirects are followed without sending Authorization to the other host", async () => {
    if (!canRun(hasTool("openssl"), "openssl missing")) return;
    const dir = join(work, "redir");
    mkdirSync(dir);
    const pki = makeTestPki(dir);
    const tls = { cert: readFileSync(pki.cert, "utf8"), key: readFileSync(pki.key, "utf8") };
    const blob = new Uint8Array(100_000).map((_, i) => (i * 13) & 0xff);
    const digest = "sha256:" + createHash("sha256").update(blob).digest("hex");
    const seen: (string | null)[] = [];
    const storage = Bun.serve({
      hostname: "127.0.0.1", port: await freePort(), tls,
      fetch(req) {
        seen.push(req.headers.get("authorization"));
        return new Response(blob);
      },
    });
    const creds = "Basic " + Buffer.from("u:p").toString("base64");
    const registry = Bun.serve({
      hostname: "127.0.0.1", port: await freePort(), tls,
      fetch(req) {
        if (req.headers.get("authorization") !== creds) return new Response("", { status: 401, headers: { "WWW-Authenticate": 'Basic realm="x"' } });
        // Redirect to "localhost": another host name than the one the client asked for.
        return new Response(null, { status: 307, headers: { Location: `https://localhost:${storage.port}/data?sig=1` } });
      },
    });
    try {
      const certDir = join(dir, "certs");
      mkdirSync(certDir);
      writeFileSync(join(certDir, "ca.crt"), readFileSync(pki.ca));
      const c = await RegistryClient.open(parseDockerReference(`127.0.0.1:${registry.port}/a/b:t`), { credentials: { username: "u", password: "p" }, certDir });
      const got = await c.readBlob({ digest, size: blob.length });
      expect(Buffer.from(got).equals(Buffer.from(blob))).toBe(true);
      expect(seen).toEqual([null]);
    } finally {
      storage.stop(true);
      registry.stop(true);
    }
  });
});

describe("interrupted downloads", () => {
  test("a connection dropped mid-blob resumes with a Range request and still verifies", async () => {
    if (!canRun(hasTool("openssl"), "openssl missing")) return;
    const dir = join(work, "resume");
    mkdirSync(dir);
    const pki = makeTestPki(dir);
    const blob = new Uint8Array(3_000_000).map((_, i) => (i * 7 + (i >> 12)) & 0xff);
    const digest = "sha256:" + createHash("sha256").update(blob).digest("hex");
    const ranges: (string | null)[] = [];
    const server = Bun.serve({
      hostname: "127.0.0.1", port: await freePort(), tls: { cert: readFileSync(pki.cert, "utf8"), key: readFileSync(pki.key, "utf8") },
      fetch(req) {
        const range = req.headers.get("range");
        ranges.push(range);
        if (range === null) {
          // Send the first megabyte, then fail the body: the client sees a dropped connection.
          let sent = false;
          return new Response(new ReadableStream({
            pull(c) {
              if (!sent) {
                sent = true;
                c.enqueue(blob.subarray(0, 1_000_000));
              } else c.error(new Error("connection dropped"));
            },
          }), { headers: { "Content-Length": String(blob.length) } });
        }
        const start = Number(/bytes=(\d+)-/.exec(range)![1]);
        return new Response(blob.subarray(start), { status: 206, headers: { "Content-Range": `bytes ${start}-${blob.length - 1}/${blob.length}` } });
      },
    });
    try {
      const certDir = join(dir, "certs");
      mkdirSync(certDir);
      writeFileSync(join(certDir, "ca.crt"), readFileSync(pki.ca));
      writeFileSync(join(dir, "none.json"), "{}");
      const c = await RegistryClient.open(parseDockerReference(`127.0.0.1:${server.port}/a/b:t`), { certDir, authFile: join(dir, "none.json") });
      const got = await c.readBlob({ digest, size: blob.length });
      expect(Buffer.from(got).equals(Buffer.from(blob))).toBe(true);
      expect(ranges[0]).toBeNull();
      expect(ranges.length).toBeGreaterThanOrEqual(2);
      expect(ranges[ranges.length - 1]).toMatch(/^bytes=\d+-$/);
    } finally {
      server.stop(true);
    }
  });
});
