// A real OCI registry for tests: Debian's docker-registry (distribution 2.8)
// on 127.0.0.1, a free port, TLS with a CA made for the test, storage in a
// temp dir, and authentication:
//
//   auth "basic"  — htpasswd (bcrypt, `htpasswd -B`); the registry answers
//                   401 with `WWW-Authenticate: Basic realm=…`
//   auth "bearer" — the registry is configured with `auth.token`, its realm is
//                   test/helpers/token-server.ts (a separate HTTPS process that
//                   checks user/password and signs ES256 JWTs the registry
//                   verifies through rootcertbundle): the Docker token flow
//   auth "none"   — anonymous pull/push
//   clientCerts   — additionally require a TLS client certificate signed by
//                   the test CA (`http.tls.clientcas`); `caDir` then also holds
//                   client.cert/client.key (containers certs.d convention)
//
// Usage:
//   const reg = await startRegistry({ auth: "bearer" });
//   try { … skopeo copy … --dest-cert-dir reg.caDir --dest-creds reg.creds … }
//   finally { await reg.stop(); }
//
// The registry runs as a child process (no systemd), with REGISTRY_* variables
// scrubbed from its environment (the registry reads REGISTRY_* as config
// overrides; REGISTRY_AUTH_FILE in a test environment would break it). A
// shell watchdog kills it if the test process dies without calling stop();
// stop() is also registered on process exit.

import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, writeFileSync, mkdirSync, rmSync, readFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer } from "node:net";
import { randomBytes } from "node:crypto";
import { projectRoot } from "./env.ts";

export type RegistryAuth = "basic" | "bearer" | "none";

export interface RegistryOptions {
  auth?: RegistryAuth;
  user?: string;
  password?: string;
  /** Require TLS client certificates (mutual TLS). */
  clientCerts?: boolean;
  /**
   * Serve with this CA and server certificate/key (PEM files) instead of the
   * ones made for the test, e.g. a long-lived CA whose certificate is baked
   * into a VM image, with names a guest uses (basic/none auth only).
   */
  tls?: { ca: string; cert: string; key: string };
}

export interface TestRegistry {
  /** "https://127.0.0.1:PORT" */
  url: string;
  /** "127.0.0.1:PORT": the registry name in references, auth.json and certs.d. */
  host: string;
  port: number;
  auth: RegistryAuth;
  user: string;
  password: string;
  /** "user:password" for skopeo --creds/--dest-creds. */
  creds: string;
  /** A per-registry cert dir (what --cert-dir / --dest-cert-dir take): ca.crt [+ client.cert/.key]. */
  caDir: string;
  /** A certs.d root: `<certsD>/<host>/ca.crt` (like /etc/containers/certs.d). */
  certsD: string;
  /** The CA certificate (PEM file). */
  caFile: string;
  /** containers auth.json with the credentials for `host`. */
  authFile: string;
  /** The token server URL (bearer only). */
  tokenUrl: string | null;
  /** Registry storage root. */
  storageDir: string;
  /** Scratch directory of this registry (config, certs, logs); removed by stop(). */
  dir: string;
  /** `docker://HOST/NAME:TAG` */
  ref(name: string, tag?: string): string;
  /** Path of a blob's data file in the registry storage (tests corrupt it). */
  blobPath(digest: string): string;
  /** The registry's log so far (for failure messages). */
  log(): string;
  stop(): Promise<void>;
}

/** A currently free TCP port on 127.0.0.1. */
export async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const addr = s.address();
      const port = typeof addr === "object" && addr !== null ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

function openssl(args: string[], cwd: string): void {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

/** Make a CA, a server cert for 127.0.0.1/localhost, a client cert and a JWT signer cert in `dir`. */
export function makeTestPki(dir: string): { ca: string; caKey: string; cert: string; key: string; clientCert: string; clientKey: string; signerCert: string; signerKey: string } {
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  openssl(["req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3", "-subj", "/CN=cfsboot test CA",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"], dir);
  writeFileSync(join(dir, "server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n");
  openssl(["req", ...ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"], dir);
  openssl(["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.crt", "-days", "3", "-extfile", "server.ext"], dir);
  writeFileSync(join(dir, "client.ext"), "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n");
  openssl(["req", ...ec, "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=cfsboot test client"], dir);
  openssl(["x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "client.cert", "-days", "3", "-extfile", "client.ext"], dir);
  openssl(["req", "-x509", ...ec, "-keyout", "signer.key", "-out", "signer.crt", "-days", "3", "-subj", "/CN=cfsboot test token signer"], dir);
  const p = (f: string) => join(dir, f);
  return { ca: p("ca.crt"), caKey: p("ca.key"), cert: p("server.crt"), key: p("server.key"), clientCert: p("client.cert"), clientKey: p("client.key"), signerCert: p("signer.crt"), signerKey: p("signer.key") };
}

function scrubbedEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("REGISTRY_")) env[k] = v;
  return env;
}

// Runs "$@" and kills it when the parent ($1) disappears or on TERM.
const WATCHDOG = `parent=$1; shift
"$@" & child=$!
trap 'kill $child 2>/dev/null; wait $child 2>/dev/null; exit 0' TERM INT
while kill -0 "$parent" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 0.5; done
kill $child 2>/dev/null; wait $child 2>/dev/null; exit 0`;

function watched(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; logFile: string }): ChildProcess {
  const child = spawn("sh", ["-c", WATCHDOG, "watchdog", String(process.pid), cmd, ...args], {
    env: opts.env ?? process.env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const append = (d: Buffer) => {
    try {
      writeFileSync(opts.logFile, d, { flag: "a" });
    } catch {
      // the directory is gone after stop()
    }
  };
  child.stdout?.on("data", append);
  child.stderr?.on("data", append);
  return child;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
  await exited;
  clearTimeout(timer);
}

async function waitFor(what: string, check: () => Promise<boolean>, log: () => string, ms = 15000): Promise<void> {
  const end = Date.now() + ms;
  let last: unknown = null;
  while (Date.now() < end) {
    try {
      if (await check()) return;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not become ready: ${String(last)}\n${log().slice(-3000)}`);
}

const live = new Set<() => Promise<void>>();
const liveChildren = new Set<ChildProcess>();
let exitHook = false;
function registerExitHook(): void {
  if (exitHook) return;
  exitHook = true;
  // Synchronous context: signal the watchdogs (they kill the servers); the
  // watchdogs also notice on their own when this process is gone.
  process.on("exit", () => {
    for (const c of liveChildren) c.kill("SIGTERM");
  });
}

export async function startRegistry(opts: RegistryOptions = {}): Promise<TestRegistry> {
  const auth = opts.auth ?? "basic";
  const user = opts.user ?? "cfsuser";
  const password = opts.password ?? `pw-${randomBytes(6).toString("hex")}`;
  const dir = mkdtempSync(join(tmpdir(), "cfsboot-registry-"));
  const storageDir = join(dir, "storage");
  mkdirSync(storageDir);
  const pki = makeTestPki(dir);
  if (opts.tls) {
    if (auth === "bearer" || opts.clientCerts) throw new Error("startRegistry: tls is only for basic/none auth without client certificates");
    Object.assign(pki, { ca: opts.tls.ca, cert: opts.tls.cert, key: opts.tls.key });
  }
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  const url = `https://${host}`;
  const logFile = join(dir, "registry.log");
  const log = () => (existsSync(logFile) ? readFileSync(logFile, "utf8") : "");

  const children: ChildProcess[] = [];
  let tokenUrl: string | null = null;
  let authYaml = "";
  if (auth === "basic") {
    execFileSync("htpasswd", ["-B", "-b", "-c", join(dir, "htpasswd"), user, password], { stdio: "ignore" });
    authYaml = `auth:\n  htpasswd:\n    realm: cfsboot-test\n    path: ${join(dir, "htpasswd")}\n`;
  } else if (auth === "bearer") {
    const tport = await freePort();
    tokenUrl = `https://127.0.0.1:${tport}/token`;
    const tcfg = {
      port: tport, certFile: pki.cert, keyFile: pki.key, signerCertFile: pki.signerCert, signerKeyFile: pki.signerKey,
      issuer: "cfsboot-test-issuer", service: "cfsboot-test-registry", user, password,
    };
    writeFileSync(join(dir, "token.json"), JSON.stringify(tcfg));
    const bun = join(projectRoot, "node_modules/.bin/bun");
    children.push(watched(bun, [join(projectRoot, "test/helpers/token-server.ts"), join(dir, "token.json")], { logFile: join(dir, "token.log") }));
    authYaml = `auth:\n  token:\n    realm: ${tokenUrl}\n    service: cfsboot-test-registry\n    issuer: cfsboot-test-issuer\n    rootcertbundle: ${pki.signerCert}\n`;
  }
  const clientCas = opts.clientCerts ? `    clientcas:\n      - ${pki.ca}\n` : "";
  const config = `version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: ${storageDir}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: ${host}
  secret: ${randomBytes(16).toString("hex")}
  tls:
    certificate: ${pki.cert}
    key: ${pki.key}
${clientCas}${authYaml}`;
  writeFileSync(join(dir, "config.yml"), config);
  children.push(watched("docker-registry", ["serve", join(dir, "config.yml")], { env: scrubbedEnv(), logFile }));

  // certs.d layouts
  const certsD = join(dir, "certs.d");
  const caDir = join(certsD, host);
  mkdirSync(caDir, { recursive: true });
  writeFileSync(join(caDir, "ca.crt"), readFileSync(pki.ca));
  if (opts.clientCerts) {
    writeFileSync(join(caDir, "client.cert"), readFileSync(pki.clientCert));
    writeFileSync(join(caDir, "client.key"), readFileSync(pki.clientKey));
  }
  const authFile = join(dir, "auth.json");
  writeFileSync(authFile, JSON.stringify({ auths: { [host]: { auth: Buffer.from(`${user}:${password}`).toString("base64") } } }, null, 2));

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    live.delete(stop);
    await Promise.all(children.map(stopChild));
    for (const c of children) liveChildren.delete(c);
    rmSync(dir, { recursive: true, force: true });
  };
  live.add(stop);
  for (const c of children) liveChildren.add(c);
  registerExitHook();

  const ca = readFileSync(pki.ca, "utf8");
  const tlsOpts = opts.clientCerts
    ? { ca, cert: readFileSync(pki.clientCert, "utf8"), key: readFileSync(pki.clientKey, "utf8") }
    : { ca };
  try {
    if (tokenUrl !== null) {
      const statsUrl = tokenUrl.replace(/\/token$/, "/stats");
      await waitFor("token server", async () => (await fetch(statsUrl, { tls: { ca } } as RequestInit)).ok, () => readFileSync(join(dir, "token.log"), "utf8"));
    }
    await waitFor(
      "docker-registry",
      async () => {
        const r = await fetch(`${url}/v2/`, { tls: tlsOpts } as RequestInit);
        return r.status === 200 || r.status === 401;
      },
      log,
    );
  } catch (e) {
    await stop();
    throw e;
  }

  return {
    url, host, port, auth, user, password, creds: `${user}:${password}`, caDir, certsD, caFile: pki.ca, authFile, tokenUrl, storageDir, dir,
    ref: (name, tag = "latest") => `docker://${host}/${name}:${tag}`,
    blobPath: (digest) => {
      const [alg, hex] = digest.split(":") as [string, string];
      return join(storageDir, "docker/registry/v2/blobs", alg, hex.slice(0, 2), hex, "data");
    },
    log,
    stop,
  };
}

/** Stop every registry still running (for afterAll hooks of suites that start several). */
export async function stopAllRegistries(): Promise<void> {
  await Promise.all([...live].map((s) => s()));
}
