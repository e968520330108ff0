// Unified storage (bootc PR 2044, `--unified-storage`): an image is pulled
// once, with podman, into the containers-storage bootc owns under the
// physical root (`composefs/bootc/storage`, also `ostree/bootc/storage`), so
// podman on the host can run it without a second download, and it is
// imported into the composefs repository from there.
//
//   podman --root <storage> --runroot <run> pull [--authfile/--cert-dir/
//     --tls-verify/--creds] docker://…            (image id, manifest digest)
//   skopeo inspect --raw containers-storage:[driver@storage+run]<id>
//                                                    → the manifest as pulled
//   skopeo copy --dest-decompress … dir:<tmp>        → uncompressed layers
//
// The repository then gets exactly what a registry pull stores: the original
// manifest and config bytes (so the manifest digest, the origin and
// `localhost/bootc-<digest>` tags, and `upgrade --check` comparisons are
// those of the registry), and layer streams keyed by diff_id, each layer's
// uncompressed tar checked against its diff_id. The decompressed copy lives
// in a temporary directory next to the storage (same disk, not a tmpfs) and
// is removed afterwards. Objects are always written by copying file contents
// (never hardlinked or reflinked out of the storage), so the storage and the
// repository may be on different file systems (bootc#2324, EXDEV).

import { createHash } from "node:crypto";
import { createReadStream, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";

import { CfsError } from "../shared/errors.ts";
import { type Descriptor, type ImageManifest, parseManifestDocument, type Platform } from "../shared/oci.ts";
import type { FetchedImage, ImageSource, SourceOptions } from "./pull.ts";
import { sha256Digest } from "./repo.ts";
import { findProgram, runTool } from "./tools.ts";

export interface UnifiedStorage {
  /** containers-storage graph root (`<physical root>/composefs/bootc/storage`). */
  root: string;
  /** Run root (locks, mount state); default under /run/cfsboot. */
  runRoot?: string;
  /** Storage driver (default $CFSBOOT_STORAGE_DRIVER, else overlay). */
  driver?: string;
}

/** The storage of a repository directory: `<repo>/bootc/storage`. */
export function storageOfRepo(repoPath: string): UnifiedStorage {
  return { root: join(repoPath, "bootc", "storage") };
}

function runRootOf(s: UnifiedStorage): string {
  if (s.runRoot !== undefined) return s.runRoot;
  const key = createHash("sha256").update(s.root).digest("hex").slice(0, 16);
  return `/run/cfsboot/containers-storage/${key}`;
}

function driverOf(s: UnifiedStorage): string {
  return s.driver ?? process.env.CFSBOOT_STORAGE_DRIVER ?? "overlay";
}

/** `containers-storage:[driver@root+runroot]NAME` for skopeo. */
export function storageRef(s: UnifiedStorage, name: string): string {
  return `containers-storage:[${driverOf(s)}@${s.root}+${runRootOf(s)}]${name}`;
}

/**
 * podman and skopeo run in a private mount namespace: the overlay driver
 * bind-mounts `<root>/overlay` onto itself and would leave that mount behind.
 */
const PRIVATE_NS = ["--mount", "--propagation", "private", "--"];

/** podman's global options for this storage (`podman <these> images` lists what cfsboot pulled). */
export function podmanArgs(s: UnifiedStorage): string[] {
  return ["--root", s.root, "--runroot", runRootOf(s), "--storage-driver", driverOf(s)];
}

function dockerName(imgref: string): string {
  if (!imgref.startsWith("docker://")) throw new CfsError(imgref, "unified storage pulls registry images only (docker://…)");
  return imgref.slice("docker://".length);
}

/** Pull `imgref` into the storage with podman; the image id (config digest, hex). */
export async function podmanPull(imgref: string, s: UnifiedStorage, src: SourceOptions = {}): Promise<string> {
  for (const [tool, pkg] of [["podman", "podman"], ["skopeo", "skopeo"], ["unshare", "util-linux"]] as const) {
    if (findProgram(tool) === null) throw new CfsError(imgref, `unified storage needs ${tool}, which is not installed (Debian package ${pkg})`);
  }
  mkdirSync(s.root, { recursive: true, mode: 0o700 });
  mkdirSync(runRootOf(s), { recursive: true, mode: 0o700 });
  const args = [...podmanArgs(s), "pull", "--quiet"];
  if (src.authFile !== undefined) args.push("--authfile", src.authFile);
  if (src.certDir !== undefined) args.push("--cert-dir", src.certDir);
  if (src.tlsVerify === false) args.push("--tls-verify=false");
  if (src.credentials !== undefined) args.push("--creds", `${src.credentials.username}:${src.credentials.password}`);
  args.push(`docker://${dockerName(imgref)}`);
  const r = await runTool("unshare", [...PRIVATE_NS, "podman", ...args], { input: `${imgref} (podman pull into ${s.root})` });
  const id = r.stdout.trim().split("\n").pop() ?? "";
  if (!/^[0-9a-f]{64}$/.test(id)) throw new CfsError(imgref, `podman pull printed ${JSON.stringify(r.stdout.trim())}, not an image id`);
  return id;
}

/** The image from the storage, with its manifest and config as pulled and its layers uncompressed. */
class StorageSource implements ImageSource {
  private constructor(
    readonly name: string,
    private readonly manifestBytes: Uint8Array,
    private readonly manifest: ImageManifest,
    private readonly layout: string,
    private readonly layers: Descriptor[],
    private readonly tmp: string,
  ) {}

  static async open(imgref: string, s: UnifiedStorage, src: SourceOptions): Promise<StorageSource> {
    const id = await podmanPull(imgref, s, src);
    const ref = storageRef(s, id);
    const raw = await runTool("unshare", [...PRIVATE_NS, "skopeo", "inspect", "--raw", ref], { input: `${imgref} (containers-storage)` });
    const manifestBytes = new Uint8Array(Buffer.from(raw.stdout, "utf8"));
    const doc = parseManifestDocument(manifestBytes, `${imgref}: manifest in ${s.root}`);
    if (doc.kind !== "manifest") throw new CfsError(imgref, "containers-storage holds an index, not an image manifest");
    if (doc.config.digest !== `sha256:${id}`) throw new CfsError(imgref, `containers-storage image ${id} has the config ${doc.config.digest}`);
    mkdirSync(join(s.root, ".."), { recursive: true });
    const tmp = mkdtempSync(join(s.root, "..", ".cfsboot-import-"));
    try {
      // dir: is the transport whose --dest-decompress stores the layers as plain tars (blob digest = diff_id).
      await runTool("unshare", [...PRIVATE_NS, "skopeo", "--insecure-policy", "copy", "--quiet", "--dest-decompress", ref, `dir:${tmp}/copy`], { input: `${imgref} (containers-storage → directory)` });
      const copied = parseManifestDocument(new Uint8Array(readFileSync(`${tmp}/copy/manifest.json`)), `${imgref}: decompressed copy`);
      if (copied.kind !== "manifest" || copied.layers.length !== doc.layers.length) throw new CfsError(imgref, "the decompressed copy does not have the image's layers");
      return new StorageSource(imgref, manifestBytes, doc, `${tmp}/copy`, copied.layers, tmp);
    } catch (e) {
      rmSync(tmp, { recursive: true, force: true });
      throw e;
    }
  }

  async resolve(_platform: Platform): Promise<FetchedImage> {
    return { manifestDigest: sha256Digest(this.manifestBytes), manifestBytes: this.manifestBytes, manifest: this.manifest };
  }

  private blobPath(d: Descriptor): string {
    return join(this.layout, d.digest.replace(/^sha256:/, ""));
  }

  private copyOf(desc: Descriptor): Descriptor | null {
    if (desc.digest === this.manifest.config.digest) return desc;
    const i = this.manifest.layers.findIndex((l) => l.digest === desc.digest);
    return i < 0 ? null : this.layers[i]!;
  }

  /** The blob: the config as it is, a layer as its uncompressed tar (digest checked: it is the diff_id). */
  async *openBlob(desc: Descriptor): AsyncGenerator<Uint8Array> {
    const c = this.copyOf(desc);
    if (c === null) throw new CfsError(`${this.name}@${desc.digest}`, "not a blob of this image");
    const path = this.blobPath(c);
    const h = createHash("sha256");
    for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
      h.update(chunk);
      yield new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    }
    if (`sha256:${h.digest("hex")}` !== c.digest) throw new CfsError(`${this.name}@${desc.digest}`, `the decompressed copy in ${this.layout} is damaged`);
  }

  async readBlob(desc: Descriptor, maxSize: number): Promise<Uint8Array> {
    const c = this.copyOf(desc);
    if (c === null) throw new CfsError(`${this.name}@${desc.digest}`, "not a blob of this image");
    if (c.size > maxSize) throw new CfsError(`${this.name}@${desc.digest}`, `blob of ${c.size} bytes is larger than ${maxSize}`);
    const bytes = new Uint8Array(readFileSync(this.blobPath(c)));
    if (sha256Digest(bytes) !== c.digest) throw new CfsError(`${this.name}@${desc.digest}`, "digest mismatch");
    return bytes;
  }

  /** Layers come uncompressed whatever the manifest says. */
  layerCompression(_desc: Descriptor): "none" {
    return "none";
  }

  async close(): Promise<void> {
    rmSync(this.tmp, { recursive: true, force: true });
  }
}

/** The pull source of unified storage for a registry image. */
export function openUnifiedSource(imgref: string, s: UnifiedStorage, src: SourceOptions = {}): Promise<ImageSource> {
  return StorageSource.open(imgref, s, src);
}
