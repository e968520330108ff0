// OCI image references, manifests, indexes and configs (oci.md §1–§2), pure.
//
// Everything here is text/JSON in, validated values out, with CfsErrors that
// name the input (the reference string, or "<digest>: field X").

import { CfsError } from "./errors.ts";

// ---- digests ---------------------------------------------------------------------------

export interface ParsedDigest {
  algorithm: "sha256" | "sha512";
  hex: string;
}

const DIGEST_RE = /^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/;

/** Validate an OCI digest string (`sha256:<64 hex>` or `sha512:<128 hex>`). */
export function parseDigest(s: string, input = s): ParsedDigest {
  const m = DIGEST_RE.exec(s);
  if (m === null) throw new CfsError(input, `invalid digest "${s.slice(0, 80)}"`);
  const alg = m[1]!;
  const hex = m[2]!;
  if (alg === "sha256" && /^[0-9a-f]{64}$/.test(hex)) return { algorithm: "sha256", hex };
  if (alg === "sha512" && /^[0-9a-f]{128}$/.test(hex)) return { algorithm: "sha512", hex };
  if (alg === "sha256" || alg === "sha512") throw new CfsError(input, `invalid ${alg} digest "${s.slice(0, 140)}"`);
  throw new CfsError(input, `unsupported digest algorithm "${alg}"`);
}

export function isDigest(s: string): boolean {
  try {
    parseDigest(s);
    return true;
  } catch {
    return false;
  }
}

// ---- image references ------------------------------------------------------------------

export type ImageRef = RegistryRef | LayoutRef | StorageRef;

export interface RegistryRef {
  transport: "registry";
  /** Registry name as used for credentials and certs.d: "docker.io", "quay.io", "127.0.0.1:5000". */
  registry: string;
  /** Repository path, normalised ("library/busybox" on docker.io). */
  repository: string;
  /** Tag; "latest" when neither tag nor digest was given. null with a digest. */
  tag: string | null;
  digest: string | null;
}

export interface LayoutRef {
  transport: "oci" | "oci-archive";
  path: string;
  /** The `org.opencontainers.image.ref.name` to select, or null. */
  ref: string | null;
}

export interface StorageRef {
  transport: "containers-storage";
  /** The optional "[driver@graphroot+runroot:options]" prefix, without brackets. */
  storageSpec: string | null;
  /** Image name (normalised like a registry reference when it is one) or image id. */
  name: string;
}

export const DOCKER_HUB = "docker.io";
const DOMAIN_COMPONENT = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const DOMAIN_RE = new RegExp(`^(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[0-9a-fA-F:.]+\\])(?::[0-9]+)?$`);
const PATH_COMPONENT_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG_RE = /^[\w][\w.-]{0,127}$/;

/**
 * Parse a docker-style reference `[domain[:port]/]path[:tag][@digest]`
 * (distribution/reference rules, docker.io normalisation). `input` names it in errors.
 */
export function parseDockerReference(s: string, input = s): RegistryRef {
  if (s === "") throw new CfsError(input, "empty image reference");
  let rest = s;
  let digest: string | null = null;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    parseDigest(digest, input);
  }
  let tag: string | null = null;
  const lastColon = rest.lastIndexOf(":");
  const lastSlash = rest.lastIndexOf("/");
  if (lastColon > lastSlash) {
    tag = rest.slice(lastColon + 1);
    rest = rest.slice(0, lastColon);
    if (!TAG_RE.test(tag)) throw new CfsError(input, `invalid tag "${tag.slice(0, 140)}"`);
  }
  if (tag !== null && digest !== null) {
    throw new CfsError(input, "references with both a tag and a digest are not supported");
  }
  let registry: string;
  let repository: string;
  const slash = rest.indexOf("/");
  const first = slash < 0 ? "" : rest.slice(0, slash);
  if (slash < 0 || (!/[.:]/.test(first) && first !== "localhost" && first.toLowerCase() === first)) {
    registry = DOCKER_HUB;
    repository = rest;
  } else {
    registry = first;
    repository = rest.slice(slash + 1);
    if (!DOMAIN_RE.test(registry)) throw new CfsError(input, `invalid registry name "${registry}"`);
  }
  if (registry === "index.docker.io") registry = DOCKER_HUB;
  if (registry === DOCKER_HUB && !repository.includes("/")) repository = `library/${repository}`;
  if (repository === "") throw new CfsError(input, "missing repository name");
  if (repository !== repository.toLowerCase()) throw new CfsError(input, "repository name must be lowercase");
  for (const comp of repository.split("/")) {
    if (!PATH_COMPONENT_RE.test(comp)) throw new CfsError(input, `invalid repository name component "${comp.slice(0, 80)}"`);
  }
  if (registry.length + 1 + repository.length > 255) throw new CfsError(input, "repository name longer than 255 characters");
  if (tag === null && digest === null) tag = "latest";
  return { transport: "registry", registry, repository, tag, digest };
}

/** `<path>[:<ref>]` with the composefs-rs rule: split at the last ":" unless what follows contains "/". */
export function splitLayoutReference(s: string): { path: string; ref: string | null } {
  const i = s.lastIndexOf(":");
  if (i < 0) return { path: s, ref: null };
  const ref = s.slice(i + 1);
  if (ref.includes("/")) return { path: s, ref: null };
  return { path: s.slice(0, i), ref: ref === "" ? null : ref };
}

const TRANSPORTS = ["docker://", "oci:", "oci-archive:", "containers-storage:"] as const;
const UNSUPPORTED = ["dir:", "docker-archive:", "docker-daemon:", "ostree:", "sif:", "tarball:"];

/**
 * Parse `<transport>:<name>`: `docker://HOST[:PORT]/NAME[:TAG|@DIGEST]`,
 * `oci:DIR[:REF]`, `oci-archive:FILE[:REF]`, `containers-storage:[SPEC]NAME`.
 */
export function parseImageRef(s: string): ImageRef {
  if (s.startsWith("docker://")) return parseDockerReference(s.slice("docker://".length), s);
  if (s.startsWith("docker:")) throw new CfsError(s, 'the docker transport is written "docker://NAME"');
  for (const t of ["oci:", "oci-archive:"] as const) {
    if (s.startsWith(t)) {
      const { path, ref } = splitLayoutReference(s.slice(t.length));
      if (path === "") throw new CfsError(s, "missing path");
      return { transport: t === "oci:" ? "oci" : "oci-archive", path, ref };
    }
  }
  if (s.startsWith("containers-storage:")) {
    let rest = s.slice("containers-storage:".length);
    let storageSpec: string | null = null;
    if (rest.startsWith("[")) {
      const close = rest.indexOf("]");
      if (close < 0) throw new CfsError(s, 'unterminated "[" storage specification');
      storageSpec = rest.slice(1, close);
      rest = rest.slice(close + 1);
    }
    if (rest === "") throw new CfsError(s, "missing image name or id");
    let name = rest;
    // An id (64 hex, optionally "sha256:"-prefixed) stays as given; names are normalised.
    if (!/^(sha256:)?[0-9a-f]{64}$/.test(rest)) {
      const r = parseDockerReference(rest, s);
      name = formatDockerReference(r);
    }
    return { transport: "containers-storage", storageSpec, name };
  }
  for (const u of UNSUPPORTED) {
    if (s.startsWith(u)) throw new CfsError(s, `the ${u.slice(0, -1)} transport is not supported`);
  }
  throw new CfsError(s, `unknown transport (expected one of ${TRANSPORTS.join(", ")})`);
}

/** "quay.io/x/y:tag" / "docker.io/library/busybox@sha256:…" */
export function formatDockerReference(r: RegistryRef): string {
  const base = `${r.registry}/${r.repository}`;
  return r.digest !== null ? `${base}@${r.digest}` : `${base}:${r.tag ?? "latest"}`;
}

/** The canonical transport-prefixed form of a reference. */
export function formatImageRef(r: ImageRef): string {
  switch (r.transport) {
    case "registry":
      return `docker://${formatDockerReference(r)}`;
    case "oci":
    case "oci-archive":
      return `${r.transport}:${r.path}${r.ref !== null ? `:${r.ref}` : ""}`;
    case "containers-storage":
      return `containers-storage:${r.storageSpec !== null ? `[${r.storageSpec}]` : ""}${r.name}`;
  }
}

/** The host to talk HTTP to: Docker Hub's API lives at registry-1.docker.io. */
export function registryApiHost(registry: string): string {
  return registry === DOCKER_HUB ? "registry-1.docker.io" : registry;
}

/** The ref path used in `/v2/<name>/manifests/<ref>`. */
export function manifestReference(r: RegistryRef): string {
  return r.digest ?? r.tag ?? "latest";
}

// ---- bootc / ostree-style references ------------------------------------------------------

/** bootc spec transports (oci.md §1). */
export type SpecTransport = "registry" | "oci" | "oci-archive" | "containers-storage";

export interface OstreeImageRef {
  /** "ostree-unverified-image" / "ostree-unverified-registry" */
  sigverify: "unverified";
  transport: SpecTransport;
  /** The name without transport: "quay.io/x:tag", "/path/to/layout:ref". */
  image: string;
}

/**
 * Parse bootc's origin syntax: `ostree-unverified-image:<transport>:<name>`
 * (`docker://…`, `oci:…`, `oci-archive:…`, `containers-storage:…`) or
 * `ostree-unverified-registry:<name>`. Signed forms are refused (no signature
 * verification in cfsboot).
 */
export function parseOstreeImageRef(s: string): OstreeImageRef {
  if (s.startsWith("ostree-unverified-registry:")) {
    const image = s.slice("ostree-unverified-registry:".length);
    parseDockerReference(image, s);
    return { sigverify: "unverified", transport: "registry", image };
  }
  if (s.startsWith("ostree-unverified-image:")) {
    const inner = s.slice("ostree-unverified-image:".length);
    const r = parseImageRef(inner.startsWith("registry:") ? `docker://${inner.slice("registry:".length)}` : inner);
    return { sigverify: "unverified", ...specOf(r, inner) };
  }
  if (s.startsWith("ostree-image-signed:") || s.startsWith("ostree-remote-image:") || s.startsWith("ostree-remote-registry:")) {
    throw new CfsError(s, "signed image references are not supported (use ostree-unverified-image:)");
  }
  throw new CfsError(s, 'not an ostree image reference (expected "ostree-unverified-image:…")');
}

function specOf(r: ImageRef, inner: string): { transport: SpecTransport; image: string } {
  switch (r.transport) {
    case "registry":
      return { transport: "registry", image: inner.slice(inner.indexOf("//") + 2) };
    case "oci":
    case "oci-archive":
      return { transport: r.transport, image: inner.slice(r.transport.length + 1) };
    case "containers-storage":
      return { transport: "containers-storage", image: inner.slice("containers-storage:".length) };
  }
}

/** Transport-prefixed reference for a bootc spec {transport, image}. */
export function specToImageRef(transport: SpecTransport, image: string): string {
  switch (transport) {
    case "registry":
      return `docker://${image}`;
    case "oci":
    case "oci-archive":
    case "containers-storage":
      return `${transport}:${image}`;
  }
}

/** `ostree-unverified-image:<transport-prefixed ref>` as written into bootc origins. */
export function formatOstreeImageRef(transport: SpecTransport, image: string): string {
  return `ostree-unverified-image:${specToImageRef(transport, image)}`;
}

// ---- media types -----------------------------------------------------------------------

export const MEDIA_TYPE = {
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociConfig: "application/vnd.oci.image.config.v1+json",
  ociLayer: "application/vnd.oci.image.layer.v1.tar",
  ociLayerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  ociLayerZstd: "application/vnd.oci.image.layer.v1.tar+zstd",
  dockerList: "application/vnd.docker.distribution.manifest.list.v2+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerSchema1: "application/vnd.docker.distribution.manifest.v1+json",
  dockerSchema1Signed: "application/vnd.docker.distribution.manifest.v1+prettyjws",
  dockerConfig: "application/vnd.docker.container.image.v1+json",
  dockerLayerGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  dockerForeignLayerGzip: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
} as const;

/** The Accept header list for manifest requests (oci.md §1). */
export const MANIFEST_ACCEPT = [MEDIA_TYPE.ociIndex, MEDIA_TYPE.ociManifest, MEDIA_TYPE.dockerList, MEDIA_TYPE.dockerManifest];

export type Compression = "none" | "gzip" | "zstd";

/** Compression of a tar layer media type; null when the media type is not a tar layer. */
export function layerCompression(mediaType: string): Compression | null {
  switch (mediaType) {
    case MEDIA_TYPE.ociLayer:
    case "application/vnd.oci.image.layer.nondistributable.v1.tar":
    // Uncompressed Docker layers as containers-image writes them (skopeo --format v2s2).
    case "application/vnd.docker.image.rootfs.diff.tar":
      return "none";
    case MEDIA_TYPE.ociLayerGzip:
    case "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip":
    case MEDIA_TYPE.dockerLayerGzip:
    case MEDIA_TYPE.dockerForeignLayerGzip:
      return "gzip";
    case MEDIA_TYPE.ociLayerZstd:
    case "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd":
      return "zstd";
    default:
      return null;
  }
}

export function isImageConfigMediaType(mt: string): boolean {
  return mt === MEDIA_TYPE.ociConfig || mt === MEDIA_TYPE.dockerConfig;
}

// ---- documents --------------------------------------------------------------------------

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
  "os.version"?: string;
  "os.features"?: string[];
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: Platform;
  urls?: string[];
  artifactType?: string;
}

export interface ImageManifest {
  kind: "manifest";
  mediaType: string;
  /** Docker schema 2 rather than OCI. */
  docker: boolean;
  config: Descriptor;
  layers: Descriptor[];
  annotations: Record<string, string>;
  subject?: Descriptor;
  artifactType?: string;
}

export interface ImageIndex {
  kind: "index";
  mediaType: string;
  docker: boolean;
  manifests: Descriptor[];
  annotations: Record<string, string>;
}

type Json = unknown;

function isObject(v: Json): v is Record<string, Json> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function parseJson(bytes: Uint8Array | string, name: string): Json {
  const text = typeof bytes === "string" ? bytes : new TextDecoder("utf-8", { fatal: false }).decode(bytes);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CfsError(name, `invalid JSON: ${(e as Error).message}`);
  }
}

function stringMap(v: Json, name: string, field: string): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (!isObject(v)) throw new CfsError(name, `field ${field}: expected an object of strings`);
  const out: Record<string, string> = {};
  for (const [k, x] of Object.entries(v)) {
    if (typeof x !== "string") throw new CfsError(name, `field ${field}.${k}: expected a string`);
    out[k] = x;
  }
  return out;
}

function parsePlatform(v: Json, name: string, field: string): Platform {
  if (!isObject(v)) throw new CfsError(name, `field ${field}: expected an object`);
  const { architecture, os, variant } = v;
  if (typeof architecture !== "string" || typeof os !== "string") {
    throw new CfsError(name, `field ${field}: architecture and os must be strings`);
  }
  const p: Platform = { architecture, os };
  if (typeof variant === "string" && variant !== "") p.variant = variant;
  if (typeof v["os.version"] === "string") p["os.version"] = v["os.version"];
  if (Array.isArray(v["os.features"])) p["os.features"] = v["os.features"].filter((x): x is string => typeof x === "string");
  return p;
}

export function parseDescriptor(v: Json, name: string, field: string): Descriptor {
  if (!isObject(v)) throw new CfsError(name, `field ${field}: expected a descriptor object`);
  const { mediaType, digest, size } = v;
  if (typeof mediaType !== "string" || mediaType === "") throw new CfsError(name, `field ${field}.mediaType: missing`);
  if (typeof digest !== "string") throw new CfsError(name, `field ${field}.digest: missing`);
  parseDigest(digest, `${name}: field ${field}.digest`);
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) {
    throw new CfsError(name, `field ${field}.size: expected a non-negative integer`);
  }
  const d: Descriptor = { mediaType, digest, size };
  if (v.annotations !== undefined) d.annotations = stringMap(v.annotations, name, `${field}.annotations`);
  if (v.platform !== undefined) d.platform = parsePlatform(v.platform, name, `${field}.platform`);
  if (Array.isArray(v.urls)) d.urls = v.urls.filter((x): x is string => typeof x === "string");
  if (typeof v.artifactType === "string") d.artifactType = v.artifactType;
  return d;
}

/**
 * Parse a manifest or index. `contentType` is the registry's Content-Type
 * (parameters ignored); the document's own `mediaType` wins when present.
 */
export function parseManifestDocument(bytes: Uint8Array | string, name: string, contentType?: string): ImageManifest | ImageIndex {
  const v = parseJson(bytes, name);
  if (!isObject(v)) throw new CfsError(name, "manifest is not a JSON object");
  const ct = contentType?.split(";")[0]?.trim().toLowerCase();
  if (v.schemaVersion === 1 || ct === MEDIA_TYPE.dockerSchema1 || ct === MEDIA_TYPE.dockerSchema1Signed) {
    throw new CfsError(name, "Docker schema 1 manifests are not supported");
  }
  if (v.schemaVersion !== 2) throw new CfsError(name, "field schemaVersion: expected 2");
  let mt = typeof v.mediaType === "string" ? v.mediaType : undefined;
  if (mt === undefined) {
    if (ct === MEDIA_TYPE.ociIndex || ct === MEDIA_TYPE.ociManifest || ct === MEDIA_TYPE.dockerList || ct === MEDIA_TYPE.dockerManifest) mt = ct;
    else if (Array.isArray(v.manifests)) mt = MEDIA_TYPE.ociIndex;
    else mt = MEDIA_TYPE.ociManifest;
  }
  const annotations = stringMap(v.annotations, name, "annotations");
  if (mt === MEDIA_TYPE.ociIndex || mt === MEDIA_TYPE.dockerList) {
    if (!Array.isArray(v.manifests)) throw new CfsError(name, "field manifests: expected an array");
    const manifests = v.manifests.map((m, i) => parseDescriptor(m, name, `manifests[${i}]`));
    return { kind: "index", mediaType: mt, docker: mt === MEDIA_TYPE.dockerList, manifests, annotations };
  }
  if (mt === MEDIA_TYPE.ociManifest || mt === MEDIA_TYPE.dockerManifest) {
    if (v.config === undefined) throw new CfsError(name, "field config: missing");
    const config = parseDescriptor(v.config, name, "config");
    if (!Array.isArray(v.layers)) throw new CfsError(name, "field layers: expected an array");
    const layers = v.layers.map((l, i) => parseDescriptor(l, name, `layers[${i}]`));
    const m: ImageManifest = { kind: "manifest", mediaType: mt, docker: mt === MEDIA_TYPE.dockerManifest, config, layers, annotations };
    if (v.subject !== undefined) m.subject = parseDescriptor(v.subject, name, "subject");
    if (typeof v.artifactType === "string") m.artifactType = v.artifactType;
    return m;
  }
  throw new CfsError(name, `unsupported manifest media type "${mt}"`);
}

export function parseManifest(bytes: Uint8Array | string, name: string, contentType?: string): ImageManifest {
  const d = parseManifestDocument(bytes, name, contentType);
  if (d.kind !== "manifest") throw new CfsError(name, "expected an image manifest, got an index");
  return d;
}

export interface ImageConfig {
  architecture: string;
  os: string;
  variant?: string;
  created?: string;
  labels: Record<string, string>;
  diffIds: string[];
  /** The parsed JSON, for fields not modelled here. */
  raw: Record<string, unknown>;
}

export function parseImageConfig(bytes: Uint8Array | string, name: string): ImageConfig {
  const v = parseJson(bytes, name);
  if (!isObject(v)) throw new CfsError(name, "config is not a JSON object");
  const { architecture, os, rootfs } = v;
  if (typeof architecture !== "string") throw new CfsError(name, "field architecture: missing");
  if (typeof os !== "string") throw new CfsError(name, "field os: missing");
  if (!isObject(rootfs)) throw new CfsError(name, "field rootfs: missing");
  if (rootfs.type !== "layers") throw new CfsError(name, 'field rootfs.type: expected "layers"');
  if (!Array.isArray(rootfs.diff_ids)) throw new CfsError(name, "field rootfs.diff_ids: expected an array");
  const diffIds = rootfs.diff_ids.map((d, i) => {
    if (typeof d !== "string") throw new CfsError(name, `field rootfs.diff_ids[${i}]: expected a string`);
    parseDigest(d, `${name}: field rootfs.diff_ids[${i}]`);
    return d;
  });
  const cfg = isObject(v.config) ? v.config : {};
  const labels = stringMap(cfg.Labels, name, "config.Labels");
  const out: ImageConfig = { architecture, os, labels, diffIds, raw: v };
  if (typeof v.variant === "string" && v.variant !== "") out.variant = v.variant;
  if (typeof v.created === "string") out.created = v.created;
  return out;
}

/** True when the manifest describes a container image (not an artifact). */
export function isContainerImage(m: ImageManifest): boolean {
  return isImageConfigMediaType(m.config.mediaType);
}

/**
 * Check that a container image's layers pair with the config's diff_ids:
 * same count, every layer a tar media type. Returns the per-layer compression.
 */
export function checkImageLayers(m: ImageManifest, c: ImageConfig, name: string): Compression[] {
  if (c.diffIds.length !== m.layers.length) {
    throw new CfsError(name, `the manifest lists ${m.layers.length} layers but the config has ${c.diffIds.length} diff_ids`);
  }
  return m.layers.map((l, i) => {
    const comp = layerCompression(l.mediaType);
    if (comp === null) throw new CfsError(name, `layers[${i}]: media type "${l.mediaType}" is not a tar layer`);
    return comp;
  });
}

// ---- platforms --------------------------------------------------------------------------

/** GOARCH-style platform of a Node/Bun `process.arch`. */
export function platformForArch(nodeArch: string, os = "linux"): Platform {
  const map: Record<string, Platform> = {
    x64: { os, architecture: "amd64" },
    arm64: { os, architecture: "arm64", variant: "v8" },
    arm: { os, architecture: "arm", variant: "v7" },
    ia32: { os, architecture: "386" },
    ppc64: { os, architecture: "ppc64le" },
    s390x: { os, architecture: "s390x" },
    riscv64: { os, architecture: "riscv64" },
    loong64: { os, architecture: "loong64" },
    mips64el: { os, architecture: "mips64le" },
  };
  return map[nodeArch] ?? { os, architecture: nodeArch };
}

export function formatPlatform(p: Platform | undefined): string {
  if (p === undefined) return "unknown";
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ""}`;
}

function normVariant(p: Platform): string | undefined {
  if (p.architecture === "arm64" && (p.variant === undefined || p.variant === "v8")) return "v8";
  return p.variant;
}

/** 2 = exact match, 1 = compatible (variant unspecified on one side), 0 = no match. */
export function platformMatch(want: Platform, have: Platform): number {
  if (want.os !== have.os || want.architecture !== have.architecture) return 0;
  const wv = normVariant(want);
  const hv = normVariant(have);
  if (wv === hv) return 2;
  if (wv === undefined || hv === undefined) return 1;
  return 0;
}

/**
 * Pick the index entry for `want` (oci.md §2.2). Entries without `platform`
 * use `platformOf(descriptor)` (the caller read their config) or are skipped.
 * An index with a single entry that has no platform information selects it.
 */
export function selectManifest(
  index: ImageIndex,
  want: Platform,
  name: string,
  platformOf: (d: Descriptor) => Platform | undefined = () => undefined,
): Descriptor {
  const entries = index.manifests;
  let best: Descriptor | undefined;
  let bestScore = 0;
  const seen: string[] = [];
  for (const d of entries) {
    const p = d.platform ?? platformOf(d);
    seen.push(formatPlatform(p));
    if (p === undefined) continue;
    const score = platformMatch(want, p);
    if (score > bestScore) {
      best = d;
      bestScore = score;
    }
  }
  if (best !== undefined) return best;
  const only = index.manifests[0];
  if (index.manifests.length === 1 && only !== undefined && only.platform === undefined && platformOf(only) === undefined) return only;
  throw new CfsError(name, `no image for ${formatPlatform(want)} (the index has: ${[...new Set(seen)].join(", ") || "nothing"})`);
}

// ---- cfsctl-compatible pull output -----------------------------------------------------------

/** indicatif's HumanBytes: "512 B", "1.50 KiB", …, two decimals, ties to even. */
export function humanBytes(n: number | bigint): string {
  const v = BigInt(n);
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
  let k = 0;
  let div = 1n;
  while (k < units.length - 1 && v >= div * 1024n) {
    div *= 1024n;
    k++;
  }
  if (k === 0) return `${v} B`;
  const scaled = v * 100n;
  let q = scaled / div;
  const r = scaled % div;
  if (r * 2n > div || (r * 2n === div && q % 2n === 1n)) q += 1n;
  return `${q / 100n}.${String(q % 100n).padStart(2, "0")} ${units[k]}`;
}

export interface ImportStats {
  objectsCopied: number;
  objectsAlreadyPresent: number;
  bytesCopied: number;
  bytesInlined: number;
  objectsReflinked?: number;
  objectsHardlinked?: number;
  bytesReflinked?: number;
  bytesHardlinked?: number;
}

/** The `objects …` summary exactly as cfsctl prints it. */
export function formatImportStats(s: ImportStats): string {
  const refl = s.objectsReflinked ?? 0;
  const hard = s.objectsHardlinked ?? 0;
  if (refl > 0 || hard > 0) {
    const parts: string[] = [];
    if (refl > 0) parts.push(`${refl} reflinked`);
    if (hard > 0) parts.push(`${hard} hardlinked`);
    parts.push(`${s.objectsCopied} copied`, `${s.objectsAlreadyPresent} already present`);
    const bytes: string[] = [];
    if (refl > 0) bytes.push(`${humanBytes(s.bytesReflinked ?? 0)} reflinked`);
    if (hard > 0) bytes.push(`${humanBytes(s.bytesHardlinked ?? 0)} hardlinked`);
    bytes.push(`${humanBytes(s.bytesCopied)} copied`, `${humanBytes(s.bytesInlined)} inlined`);
    return `${parts.join(" + ")} objects; ${bytes.join(", ")}`;
  }
  return `${s.objectsCopied} new + ${s.objectsAlreadyPresent} already present objects; ${humanBytes(s.bytesCopied)} stored, ${humanBytes(s.bytesInlined)} inlined`;
}

/** The lines `cfsctl oci pull` prints (repository.md §9), each ending in "\n". */
export function formatPullOutput(r: {
  manifestDigest: string;
  configDigest: string;
  manifestVerity: string;
  tag: string;
  stats: ImportStats;
  bootImage?: string;
}): string {
  let out =
    `manifest ${r.manifestDigest}\n` +
    `config   ${r.configDigest}\n` +
    `verity   ${r.manifestVerity}\n` +
    `tagged   ${r.tag}\n` +
    `objects  ${formatImportStats(r.stats)}\n`;
  if (r.bootImage !== undefined) out += `Boot image: ${r.bootImage}\n`;
  return out;
}
