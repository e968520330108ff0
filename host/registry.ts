// A native OCI distribution-spec client on Bun's fetch (oci.md §1 "Registry access").
//
//   const c = await RegistryClient.open(parseDockerReference("quay.io/x/y:tag"), { authFile, certDir, tlsVerify });
//   const m = await c.getManifest();                  // bytes, digest (verified), parsed document
//   for await (const piece of c.fetchBlob(desc)) …    // sha256 checked as bytes arrive; throws at the end on mismatch
//   await c.downloadBlob(desc, "/path/blob");         // temp file + verify + fsync + rename; nothing left on failure
//
// Authentication: anonymous first; on 401 the WWW-Authenticate challenge
// decides — Bearer: a token from the realm (Basic credentials if we have
// some), cached per scope; Basic: the stored credentials. Credentials come
// from explicit `credentials` (--creds), else the auth file: `authFile`
// (--authfile, default $REGISTRY_AUTH_FILE) or the containers lookup order
// ${XDG_RUNTIME_DIR}/containers/auth.json, ~/.config/containers/auth.json,
// ~/.docker/config.json; in each file the most specific key wins
// (registry/namespace/repo … registry), legacy "https://host/v1/" keys match
// their host. Credential helpers (credHelpers/credsStore) and identity tokens
// are not supported; such entries are ignored (anonymous access).
//
// TLS: system roots plus every *.crt of the cert dir (`certDir`, --cert-dir;
// default /etc/containers/certs.d/<host>, /etc/docker/certs.d/<host>,
// ~/.config/containers/certs.d/<host>); a *.cert with its *.key is the client
// certificate. `tlsVerify: false` skips verification and, like containers-image,
// falls back to plain HTTP when the server does not speak TLS.
//
// Redirects are followed by hand so Authorization never goes to another host.
// Transient failures (connection errors, 429, 502–504) are retried with
// backoff; an interrupted blob download resumes with a Range request.
// Registry mirrors / registries.conf and signature policies are not
// implemented (oci.md §1 gap).

import { createHash, type Hash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { rootCertificates } from "node:tls";

import { CfsError } from "../shared/errors.ts";
import { fromNodeError } from "../shared/sys.ts";
import {
  MANIFEST_ACCEPT,
  manifestReference,
  parseDigest,
  parseManifestDocument,
  registryApiHost,
  DOCKER_HUB,
  type Descriptor,
  type ImageIndex,
  type ImageManifest,
  type RegistryRef,
} from "../shared/oci.ts";
import { openAtomic } from "./atomic.ts";
import { readInputFile } from "./input.ts";

export interface Credentials {
  username: string;
  password: string;
}

export interface RegistryClientOptions {
  /** --creds: overrides every auth file. */
  credentials?: Credentials;
  /** --authfile (default: $REGISTRY_AUTH_FILE, then the containers lookup order). */
  authFile?: string;
  /** --cert-dir: a directory of *.crt (CAs) and *.cert/*.key (client certificate). */
  certDir?: string;
  /** certs.d roots searched for <root>/<host>/ when certDir is not given. */
  certsDirs?: string[];
  /** --tls-verify (default true). */
  tlsVerify?: boolean;
  /** Environment for the lookups (default process.env). */
  env?: Record<string, string | undefined>;
  /** Attempts per request for transient failures (default 4). */
  attempts?: number;
  /** Largest manifest accepted (default 4 MiB, as containers-image). */
  maxManifestSize?: number;
  userAgent?: string;
}

export interface FetchedManifest {
  bytes: Uint8Array;
  /** sha256 of the bytes (or the requested digest's algorithm), verified when pulling by digest. */
  digest: string;
  /** Content-Type of the response (without parameters). */
  contentType: string;
  document: ImageManifest | ImageIndex;
}

// ---- auth files ---------------------------------------------------------------------

interface AuthEntry {
  auth?: string;
  username?: string;
  password?: string;
  identitytoken?: string;
}

/** The auth files consulted, in order (containers-auth.json(5)). */
export function authFileCandidates(opts: { authFile?: string; env?: Record<string, string | undefined> }): string[] {
  const env = opts.env ?? process.env;
  const explicit = opts.authFile ?? env.REGISTRY_AUTH_FILE;
  if (explicit !== undefined && explicit !== "") return [explicit];
  const out: string[] = [];
  if (env.XDG_RUNTIME_DIR) out.push(join(env.XDG_RUNTIME_DIR, "containers/auth.json"));
  if (env.HOME) {
    out.push(join(env.HOME, ".config/containers/auth.json"));
    out.push(join(env.HOME, ".docker/config.json"));
  }
  return out;
}

/**
 * The auth file bootc uses (oci.md §1): for uid 0 the first existing of
 * /etc/ostree/auth.json, /run/ostree/auth.json, /usr/lib/ostree/auth.json;
 * for other users ${XDG_RUNTIME_DIR}/ostree/auth.json. null when none exists.
 * `root` prefixes the system paths (tests, offline roots).
 */
export function bootcAuthFile(opts: { uid?: number; env?: Record<string, string | undefined>; root?: string } = {}): string | null {
  const uid = opts.uid ?? process.getuid?.() ?? 0;
  const env = opts.env ?? process.env;
  const root = opts.root ?? "";
  const candidates = uid === 0
    ? ["/etc/ostree/auth.json", "/run/ostree/auth.json", "/usr/lib/ostree/auth.json"].map((p) => root + p)
    : env.XDG_RUNTIME_DIR ? [join(env.XDG_RUNTIME_DIR, "ostree/auth.json")] : [];
  return candidates.find((p) => existsSync(p)) ?? null;
}

function normalizeAuthKey(key: string): string {
  // Legacy docker keys: "https://index.docker.io/v1/", "http://host:5000".
  if (key.startsWith("http://") || key.startsWith("https://")) {
    key = key.replace(/^https?:\/\//, "");
    key = key.split("/")[0] ?? key;
  }
  if (key === "index.docker.io" || key === "registry-1.docker.io") return DOCKER_HUB;
  return key;
}

function decodeEntry(e: AuthEntry, file: string, key: string): Credentials | null {
  if (typeof e.auth === "string" && e.auth !== "") {
    const text = Buffer.from(e.auth, "base64").toString("utf8");
    const colon = text.indexOf(":");
    if (colon < 0) throw new CfsError(file, `field auths.${key}.auth: not base64 of "user:password"`);
    return { username: text.slice(0, colon), password: text.slice(colon + 1) };
  }
  if (typeof e.username === "string" && typeof e.password === "string") return { username: e.username, password: e.password };
  return null;
}

/** Credentials for registry/repository from the auth files, or null. */
export function lookupCredentials(
  registry: string,
  repository: string,
  opts: { authFile?: string; env?: Record<string, string | undefined> } = {},
): { credentials: Credentials; file: string } | null {
  const explicit = opts.authFile !== undefined || (opts.env ?? process.env).REGISTRY_AUTH_FILE;
  // Most specific first: host/a/b/c, host/a/b, host/a, host.
  const parts = repository.split("/");
  const keys: string[] = [];
  for (let i = parts.length; i >= 1; i--) keys.push(`${registry}/${parts.slice(0, i).join("/")}`);
  keys.push(registry);
  for (const file of authFileCandidates(opts)) {
    if (!existsSync(file)) {
      if (explicit) throw new CfsError(file, "auth file does not exist");
      continue;
    }
    const text = new TextDecoder().decode(readInputFile(file)); // a directory or device: "<file>: is a directory"
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw new CfsError(file, `invalid JSON: ${(e as Error).message}`);
    }
    const auths = (json as { auths?: Record<string, AuthEntry> }).auths;
    if (auths === undefined || typeof auths !== "object" || auths === null) continue;
    const normalized = new Map<string, [string, AuthEntry]>();
    for (const [k, v] of Object.entries(auths)) {
      const nk = normalizeAuthKey(k);
      // An exact (non-legacy) key wins over a legacy spelling of the same registry.
      if (!normalized.has(nk) || nk === k) normalized.set(nk, [k, v]);
    }
    for (const k of keys) {
      const hit = normalized.get(k);
      if (hit === undefined) continue;
      const c = decodeEntry(hit[1], file, hit[0]);
      if (c !== null) return { credentials: c, file };
    }
  }
  return null;
}

// ---- TLS ----------------------------------------------------------------------------

export interface TlsSettings {
  ca: string[] | null;
  cert: string | null;
  key: string | null;
  verify: boolean;
  /** Where the settings came from (for messages). */
  dir: string | null;
}

/** Read a containers certs.d-style directory. */
export function readCertDir(dir: string): { ca: string[]; cert: string | null; key: string | null } {
  let names: string[];
  try {
    names = readdirSync(dir).sort();
  } catch (e) {
    throw new CfsError(dir, `cannot read certificate directory: ${fromNodeError(dir, "readdir", e).what}`);
  }
  const ca: string[] = [];
  let cert: string | null = null;
  let key: string | null = null;
  for (const n of names) {
    if (n.endsWith(".crt")) ca.push(readFileSync(join(dir, n), "utf8"));
    if (n.endsWith(".cert")) {
      const keyName = n.slice(0, -".cert".length) + ".key";
      if (!names.includes(keyName)) throw new CfsError(join(dir, n), `client certificate without its key ${keyName}`);
      cert = readFileSync(join(dir, n), "utf8");
      key = readFileSync(join(dir, keyName), "utf8");
    }
    if (n.endsWith(".key") && !names.includes(n.slice(0, -".key".length) + ".cert")) {
      throw new CfsError(join(dir, n), "client key without its certificate");
    }
  }
  return { ca, cert, key };
}

export function tlsSettingsFor(host: string, opts: RegistryClientOptions): TlsSettings {
  const verify = opts.tlsVerify ?? true;
  let dir: string | null = null;
  if (opts.certDir !== undefined) dir = opts.certDir;
  else {
    const env = opts.env ?? process.env;
    const roots = opts.certsDirs ?? [
      "/etc/containers/certs.d",
      "/etc/docker/certs.d",
      ...(env.HOME ? [join(env.HOME, ".config/containers/certs.d")] : []),
    ];
    for (const r of roots) {
      if (existsSync(join(r, host))) {
        dir = join(r, host);
        break;
      }
    }
  }
  if (dir === null) return { ca: null, cert: null, key: null, verify, dir };
  const c = readCertDir(dir);
  return { ca: c.ca.length > 0 ? [...rootCertificates, ...c.ca] : null, cert: c.cert, key: c.key, verify, dir };
}

// ---- WWW-Authenticate -----------------------------------------------------------------

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parse a WWW-Authenticate header (one or more challenges, quoted-string params). */
export function parseWwwAuthenticate(header: string): Challenge[] {
  const out: Challenge[] = [];
  let i = 0;
  const s = header;
  const skipWs = () => {
    while (i < s.length && (s[i] === " " || s[i] === "\t")) i++;
  };
  const token = () => {
    const m = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+/.exec(s.slice(i));
    if (m === null) return "";
    i += m[0].length;
    return m[0];
  };
  while (i < s.length) {
    skipWs();
    while (s[i] === ",") (i++, skipWs());
    const scheme = token();
    if (scheme === "") break;
    const ch: Challenge = { scheme: scheme.toLowerCase(), params: {} };
    out.push(ch);
    for (;;) {
      skipWs();
      const save = i;
      const name = token();
      skipWs();
      if (name === "" || s[i] !== "=") {
        i = save;
        break;
      }
      i++;
      skipWs();
      let value = "";
      if (s[i] === '"') {
        i++;
        while (i < s.length && s[i] !== '"') {
          if (s[i] === "\\" && i + 1 < s.length) i++;
          value += s[i];
          i++;
        }
        i++;
      } else {
        value = token();
      }
      ch.params[name.toLowerCase()] = value;
      skipWs();
      if (s[i] === ",") {
        i++;
        // A following "token =" is another param; a following "token token" a new challenge.
        continue;
      }
      break;
    }
  }
  return out;
}

// ---- the client -------------------------------------------------------------------------

const TRANSIENT_STATUS = new Set([408, 429, 500, 502, 503, 504]);
const TLS_CODES = /CERT|SELF_SIGNED|UNABLE_TO_|VERIFY|HOSTNAME|ERR_TLS|EPROTO|SSL/;

interface Attempt {
  res: Response;
  url: string;
}

function errorCodes(body: string): string[] {
  try {
    const j = JSON.parse(body) as { errors?: { code?: string; message?: string }[] };
    return (j.errors ?? []).map((e) => `${e.code ?? ""}${e.message ? `: ${e.message}` : ""}`);
  } catch {
    return [];
  }
}

export class RegistryClient {
  readonly ref: RegistryRef;
  readonly registry: string;
  readonly repository: string;
  /** "docker://registry/repository" — the input named in errors. */
  readonly name: string;
  private base: string;
  private readonly tls: TlsSettings;
  private readonly creds: Credentials | null;
  private readonly credsSource: string | null;
  private readonly attempts: number;
  private readonly maxManifest: number;
  private readonly ua: string;
  private authHeader: string | null = null;
  private tokens = new Map<string, { value: string; expires: number }>();
  private triedHttp = false;

  private constructor(ref: RegistryRef, opts: RegistryClientOptions, creds: { credentials: Credentials; file: string } | null) {
    this.ref = ref;
    this.registry = ref.registry;
    this.repository = ref.repository;
    this.name = `docker://${ref.registry}/${ref.repository}`;
    const apiHost = registryApiHost(ref.registry);
    this.base = `https://${apiHost}`;
    this.tls = tlsSettingsFor(ref.registry, opts);
    this.creds = creds?.credentials ?? null;
    this.credsSource = creds?.file ?? null;
    this.attempts = opts.attempts ?? 4;
    this.maxManifest = opts.maxManifestSize ?? 4 << 20;
    this.ua = opts.userAgent ?? "cfsboot";
  }

  /** Create a client for one repository (reads auth files and cert dirs now). */
  static async open(ref: RegistryRef, opts: RegistryClientOptions = {}): Promise<RegistryClient> {
    const creds = opts.credentials
      ? { credentials: opts.credentials, file: "--creds" }
      : lookupCredentials(ref.registry, ref.repository, opts);
    return new RegistryClient(ref, opts, creds);
  }

  private fail(what: string, input = this.name): never {
    throw new CfsError(input, what);
  }

  private fetchOpts(headers: Record<string, string>, method = "GET"): RequestInit {
    const tls: Record<string, unknown> = {};
    if (this.tls.ca !== null) tls.ca = this.tls.ca;
    if (this.tls.cert !== null) (tls.cert = this.tls.cert), (tls.key = this.tls.key);
    if (!this.tls.verify) tls.rejectUnauthorized = false;
    return { method, headers: { "User-Agent": this.ua, ...headers }, redirect: "manual", tls } as RequestInit;
  }

  private describeNetError(e: unknown, url: string): string {
    const err = e as { code?: string; message?: string };
    const host = new URL(url).host;
    const code = err.code ?? "";
    if (TLS_CODES.test(code)) {
      const hint = this.tls.dir !== null ? ` (CA certificates from ${this.tls.dir})` : " (use --cert-dir with the registry's CA, or --tls-verify=false)";
      if (code === "EPROTO") return `TLS handshake with ${host} failed: ${err.message ?? code}`;
      return `TLS certificate verification failed for ${host}: ${err.message ?? code}${hint}`;
    }
    if (code === "ECONNREFUSED") return `cannot connect to ${host}: connection refused`;
    if (code === "ENOTFOUND" || code === "EAI_AGAIN") return `cannot resolve ${host}`;
    return `request to ${host} failed: ${err.message ?? String(e)}`;
  }

  private isTransientNetError(e: unknown): boolean {
    const code = (e as { code?: string }).code ?? "";
    return !TLS_CODES.test(code) && code !== "ENOTFOUND";
  }

  /** One HTTP exchange with redirects handled by hand (Authorization only to the origin host). */
  private async exchange(url: string, headers: Record<string, string>, auth: string | null): Promise<Attempt> {
    const origin = new URL(url).host;
    let current = url;
    for (let hop = 0; hop < 10; hop++) {
      const h = { ...headers };
      if (auth !== null && new URL(current).host === origin) h.Authorization = auth;
      const res = await fetch(current, this.fetchOpts(h));
      if ([301, 302, 303, 307, 308].includes(res.status)) {
        const loc = res.headers.get("location");
        await res.body?.cancel();
        if (loc === null) this.fail(`redirect without a Location from ${current}`);
        current = new URL(loc, current).toString();
        continue;
      }
      return { res, url: current };
    }
    return this.fail(`too many redirects for ${url}`);
  }

  /** exchange() with retries on transient failures; returns the final response. */
  private async request(path: string, headers: Record<string, string>, auth: string | null): Promise<Attempt> {
    let delay = 200;
    for (let attempt = 1; ; attempt++) {
      const url = this.base + path;
      try {
        const a = await this.exchange(url, headers, auth);
        if (TRANSIENT_STATUS.has(a.res.status) && attempt < this.attempts) {
          const ra = Number(a.res.headers.get("retry-after"));
          await a.res.body?.cancel();
          await Bun.sleep(Number.isFinite(ra) && ra > 0 ? Math.min(ra * 1000, 10_000) : delay);
          delay *= 2;
          continue;
        }
        return a;
      } catch (e) {
        if (e instanceof CfsError) throw e;
        const code = (e as { code?: string }).code ?? "";
        // --tls-verify=false: fall back to plain HTTP once, like containers-image.
        if (!this.tls.verify && !this.triedHttp && this.base.startsWith("https://") && (code === "EPROTO" || /ECONNRESET|wrong version/i.test(String(e)))) {
          this.triedHttp = true;
          this.base = this.base.replace(/^https:/, "http:");
          continue;
        }
        if (attempt < this.attempts && this.isTransientNetError(e)) {
          await Bun.sleep(delay);
          delay *= 2;
          continue;
        }
        this.fail(this.describeNetError(e, url));
      }
    }
  }

  private async getToken(ch: Challenge, scope: string): Promise<string> {
    const realm = ch.params.realm;
    if (realm === undefined) this.fail(`Bearer challenge without a realm from ${this.registry}`);
    const cacheKey = `${realm} ${ch.params.service ?? ""} ${scope}`;
    const cached = this.tokens.get(cacheKey);
    if (cached !== undefined && cached.expires > Date.now()) return cached.value;
    let u: URL;
    try {
      u = new URL(realm!);
    } catch {
      return this.fail(`invalid Bearer realm "${realm}" from ${this.registry}`);
    }
    if (u.protocol !== "https:" && !(u.protocol === "http:" && (this.base.startsWith("http:") || !this.tls.verify))) {
      this.fail(`refusing to send credentials to the non-TLS token realm ${realm}`);
    }
    if (ch.params.service !== undefined) u.searchParams.set("service", ch.params.service);
    for (const s of scope.split(" ")) if (s !== "") u.searchParams.append("scope", s);
    const headers: Record<string, string> = { Accept: "application/json" };
    if (this.creds !== null) headers.Authorization = `Basic ${Buffer.from(`${this.creds.username}:${this.creds.password}`).toString("base64")}`;
    let res: Response;
    let delay = 200;
    for (let attempt = 1; ; attempt++) {
      try {
        res = await fetch(u.toString(), this.fetchOpts(headers));
        if (TRANSIENT_STATUS.has(res.status) && attempt < this.attempts) {
          await res.body?.cancel();
          await Bun.sleep(delay);
          delay *= 2;
          continue;
        }
        break;
      } catch (e) {
        if (attempt < this.attempts && this.isTransientNetError(e)) {
          await Bun.sleep(delay);
          delay *= 2;
          continue;
        }
        return this.fail(this.describeNetError(e, u.toString()));
      }
    }
    if (res.status === 401 || res.status === 403) {
      await res.body?.cancel();
      this.fail(this.creds !== null ? `authentication failed for ${this.registry}` : `authentication required for ${this.registry} (no credentials found)`);
    }
    if (!res.ok) {
      await res.body?.cancel();
      this.fail(`token request to ${u.host} failed: HTTP ${res.status}`);
    }
    let j: { token?: string; access_token?: string; expires_in?: number };
    try {
      j = (await res.json()) as typeof j;
    } catch {
      return this.fail(`invalid token response from ${u.host}`);
    }
    const token = j.token ?? j.access_token;
    if (typeof token !== "string" || token === "") this.fail(`token response from ${u.host} has no token`);
    const ttl = typeof j.expires_in === "number" && j.expires_in > 0 ? j.expires_in : 60;
    const value = `Bearer ${token}`;
    this.tokens.set(cacheKey, { value, expires: Date.now() + Math.max(ttl - 10, 5) * 1000 });
    return value;
  }

  /** A request with the auth dance; the response is 2xx or an error was thrown. */
  private async authed(path: string, headers: Record<string, string>, what: string, notFound: (body: string) => string): Promise<Attempt> {
    let a = await this.request(path, headers, this.authHeader);
    if (a.res.status === 401) {
      const header = a.res.headers.get("www-authenticate") ?? "";
      await a.res.body?.cancel();
      const challenges = parseWwwAuthenticate(header);
      const bearer = challenges.find((c) => c.scheme === "bearer");
      const basic = challenges.find((c) => c.scheme === "basic");
      const had = this.authHeader;
      if (bearer !== undefined) {
        if (had !== null) this.tokens.clear();
        const scope = bearer.params.scope ?? `repository:${this.repository}:pull`;
        this.authHeader = await this.getToken(bearer, scope);
      } else if (basic !== undefined) {
        if (this.creds === null) this.fail(`authentication required for ${this.registry} (no credentials found)`);
        this.authHeader = `Basic ${Buffer.from(`${this.creds!.username}:${this.creds!.password}`).toString("base64")}`;
      } else {
        this.fail(`authentication required for ${this.registry} (unsupported challenge "${header.slice(0, 60)}")`);
      }
      if (this.authHeader === had && bearer === undefined) {
        this.fail(`authentication failed for ${this.registry}`);
      }
      a = await this.request(path, headers, this.authHeader);
      if (a.res.status === 401) {
        await a.res.body?.cancel();
        this.fail(this.creds !== null ? `authentication failed for ${this.registry}` : `authentication required for ${this.registry} (no credentials found)`);
      }
    }
    const st = a.res.status;
    if (st >= 200 && st < 300) return a;
    const body = await a.res.text().catch(() => "");
    const codes = errorCodes(body);
    if (st === 404) this.fail(notFound(body));
    if (st === 403) this.fail(`access denied to ${this.registry}/${this.repository}${codes.length ? ` (${codes.join("; ")})` : ""}`);
    if (st === 401) this.fail(`authentication failed for ${this.registry}`);
    return this.fail(`${what}: HTTP ${st} ${a.res.statusText}${codes.length ? ` (${codes.join("; ")})` : ""}`);
  }

  /** Check that the registry answers (GET /v2/ with authentication). */
  async ping(): Promise<void> {
    const a = await this.authed("/v2/", {}, "registry check", () => `${this.registry} does not implement the registry API (/v2/ not found)`);
    await a.res.body?.cancel();
  }

  /**
   * GET a manifest by tag or digest (default: the reference's). The bytes are
   * verified against the digest when fetching by digest.
   */
  async getManifest(reference: string = manifestReference(this.ref)): Promise<FetchedManifest> {
    const isDigest = reference.includes(":");
    const input = `${this.name}${isDigest ? "@" : ":"}${reference}`;
    const expected = isDigest ? parseDigest(reference, input) : null;
    let a: Attempt;
    try {
      a = await this.authed(`/v2/${this.repository}/manifests/${reference}`, { Accept: MANIFEST_ACCEPT.join(", ") }, "fetching manifest", (body) => {
        const codes = errorCodes(body).join(" ");
        if (codes.includes("NAME_UNKNOWN")) return `repository ${this.repository} not found on ${this.registry}`;
        return `manifest unknown: ${this.repository}${isDigest ? "@" : ":"}${reference}`;
      });
    } catch (e) {
      if (e instanceof CfsError && e.input === this.name) throw new CfsError(input, e.what);
      throw e;
    }
    const len = Number(a.res.headers.get("content-length") ?? "0");
    if (len > this.maxManifest) {
      await a.res.body?.cancel();
      this.fail(`manifest of ${len} bytes exceeds the limit of ${this.maxManifest}`, input);
    }
    const bytes = await readLimited(a.res, this.maxManifest, () => this.fail(`manifest exceeds the limit of ${this.maxManifest} bytes`, input));
    const alg = expected?.algorithm ?? "sha256";
    const digest = `${alg}:${createHash(alg).update(bytes).digest("hex")}`;
    if (expected !== null && digest !== reference) this.fail(`manifest digest mismatch: got ${digest}`, input);
    const contentType = (a.res.headers.get("content-type") ?? "").split(";")[0]!.trim();
    const document = parseManifestDocument(bytes, `${this.name}@${digest}`, contentType);
    return { bytes, digest, contentType, document };
  }

  /**
   * Stream a blob, verifying its digest (and size when the descriptor has one)
   * as bytes arrive. The last iteration throws on a mismatch, so a consumer
   * must not commit anything before the loop finished.
   */
  async *fetchBlob(desc: Pick<Descriptor, "digest"> & { size?: number }): AsyncGenerator<Uint8Array> {
    const input = `${this.name}@${desc.digest}`;
    const d = parseDigest(desc.digest, input);
    const hash: Hash = createHash(d.algorithm);
    const path = `/v2/${this.repository}/blobs/${desc.digest}`;
    let got = 0;
    let resumes = 0;
    const notFound = () => `blob unknown: ${desc.digest}`;
    const wrap = (e: unknown): never => {
      if (e instanceof CfsError && e.input === this.name) throw new CfsError(input, e.what);
      throw e;
    };
    let a = await this.authed(path, {}, "fetching blob", notFound).catch(wrap);
    for (;;) {
      const body = a.res.body;
      if (body === null) this.fail("empty response body", input);
      let skip = 0;
      if (got > 0) {
        // A resumed request: 206 continues at `got`; 200 starts over (skip what we had).
        if (a.res.status === 206) {
          const cr = a.res.headers.get("content-range") ?? "";
          const m = /^bytes (\d+)-/.exec(cr);
          if (m === null || Number(m[1]) !== got) this.fail(`bad Content-Range "${cr}" when resuming at ${got}`, input);
        } else skip = got;
      }
      try {
        for await (const chunk of body as AsyncIterable<Uint8Array>) {
          let c = chunk;
          if (skip > 0) {
            const n = Math.min(skip, c.length);
            c = c.subarray(n);
            skip -= n;
            if (c.length === 0) continue;
          }
          got += c.length;
          if (desc.size !== undefined && got > desc.size) this.fail(`blob is larger than the ${desc.size} bytes its descriptor says`, input);
          hash.update(c);
          yield c;
        }
        if (skip > 0) throw new Error("short response on resume");
        break;
      } catch (e) {
        if (e instanceof CfsError) throw e;
        if (resumes >= this.attempts) this.fail(`download interrupted: ${(e as Error).message}`, input);
        resumes++;
        await Bun.sleep(200 * resumes);
        a = await this.authed(path, { Range: `bytes=${got}-` }, "fetching blob", notFound).catch(wrap);
      }
    }
    if (desc.size !== undefined && got !== desc.size) this.fail(`blob has ${got} bytes, its descriptor says ${desc.size}`, input);
    const actual = `${d.algorithm}:${hash.digest("hex")}`;
    if (actual !== desc.digest) this.fail(`blob digest mismatch: got ${actual}`, input);
  }

  /** A whole (small) blob in memory, e.g. a config; verified. */
  async readBlob(desc: Pick<Descriptor, "digest"> & { size?: number }, maxSize = 64 << 20): Promise<Uint8Array> {
    if (desc.size !== undefined && desc.size > maxSize) this.fail(`blob of ${desc.size} bytes exceeds the limit of ${maxSize}`, `${this.name}@${desc.digest}`);
    const parts: Uint8Array[] = [];
    let n = 0;
    for await (const c of this.fetchBlob(desc)) {
      n += c.length;
      if (n > maxSize) this.fail(`blob exceeds the limit of ${maxSize} bytes`, `${this.name}@${desc.digest}`);
      parts.push(c);
    }
    return new Uint8Array(Buffer.concat(parts));
  }

  /**
   * Download a blob to `dest` atomically: written to a temporary file next to
   * it, verified, fsynced and renamed. On any failure nothing is left at
   * `dest` (an existing file is untouched).
   */
  async downloadBlob(desc: Pick<Descriptor, "digest"> & { size?: number }, dest: string, onProgress?: (bytes: number) => void): Promise<void> {
    const f = openAtomic(dest);
    let n = 0;
    try {
      for await (const c of this.fetchBlob(desc)) {
        f.write(c);
        n += c.length;
        onProgress?.(n);
      }
      f.commit();
    } catch (e) {
      f.abort();
      throw e;
    }
  }
}

async function readLimited(res: Response, limit: number, tooBig: () => never): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let n = 0;
  if (res.body === null) return new Uint8Array(0);
  for await (const c of res.body as AsyncIterable<Uint8Array>) {
    n += c.length;
    if (n > limit) {
      tooBig();
    }
    parts.push(c);
  }
  return new Uint8Array(Buffer.concat(parts));
}
