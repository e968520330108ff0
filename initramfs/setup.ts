// `cfsboot setup-root`: turn the physical root mounted at /sysroot into the
// deployment's composefs root, following initramfs.md §3 step by step.
//
//   0  /dev/gpt-auto-root → /run/systemd/volatile-root (best effort)
//   1  the kernel command line: composefs.digest= (V1) first, then composefs= (V2)
//   2  <sysroot>/composefs: flock(LOCK_SH), meta.json (shared/repometa.ts),
//      its fs-verity (= a secure repository)
//   3  images/<hex>: never images/refs/, never another image; sealed (no `?`):
//      kernel-measured fs-verity equal to the karg; insecure (`?`): the
//      digest is still checked (kernel or userspace) and a mismatch is fatal
//   4  EROFS from the image file (file-backed, or a loop device on ENOTBLK)
//   5  overlayfs `source=composefs:<hex>`, metacopy, redirect_dir,
//      verity=require when sealed, the object store as data-only layer:
//      lowerdir+/datadir+ (≥ 6.7), `lower::data` (≥ 6.5), or plain
//      `lower:objects` for V0/V1 images (< 6.5; their root whiteouts hide the
//      store's XX/ directories); the first form the kernel accepts is used
//   6  a read-only clone of the physical root (taken before anything is
//      mounted over it)
//   7  attach the composefs root at <root> (the pre-6.15 sequence: detached
//      mounts can neither be layers nor be mounted into before 6.15, so each
//      one is attached first; this works on 6.1, 6.12 and later alike)
//   8  optional transient root: a tmpfs overlay over it
//   9  the physical root at <root>/sysroot (skipped when the image has none)
//   10 /etc and /var from <sysroot>/state/deploy/<hex>/: bind (default),
//      overlay, transient or none (setup-root-conf.toml, systemd.volatile=)
//
// Fail closed: any problem is a CfsError saying what was expected and what
// was found, and everything mounted so far is unmounted in reverse order.
// Every step is logged with its duration.

import { fstatSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readSync, rmdirSync, statSync, symlinkSync } from "node:fs";

import { bstrFromUtf8, toHex } from "../shared/bytes.ts";
import { CfsError, describeError } from "../shared/errors.ts";
import { COMPOSEFS_MAGIC, EROFS_SUPER_MAGIC_V1, EROFS_SUPER_OFFSET, readComposefsHeader, readSuperblock } from "../shared/erofs/format.ts";
import { FsVerityHasher, type HashAlg, algFromHexLength, algName } from "../shared/fsverity.ts";
import { type ComposefsKarg, HEX_LENGTH, parseComposefsKarg, splitCmdline } from "../shared/kargs.ts";
import { type RepoMeta, REPO_META_FILENAME, parseRepoMeta, unknownFeatures } from "../shared/repometa.ts";
import { type MountType, type SetupRootConf, effectiveMounts, parseSetupRootConf } from "../shared/setuprootconf.ts";
import * as sys from "../shared/sys.ts";
import { type Log, ms } from "./log.ts";

/** How the overlay's layers are passed (initramfs.md §3 step 5). */
export type OverlayForm = "lowerdir+" | "data-only" | "two-layer";

export const OVERLAY_FORMS: readonly OverlayForm[] = ["lowerdir+", "data-only", "two-layer"];

const FORM_TEXT: Record<OverlayForm, string> = {
  "lowerdir+": "lowerdir+/datadir+ (Linux ≥ 6.7)",
  "data-only": "lowerdir=<image>::<objects> (Linux ≥ 6.5)",
  "two-layer": "lowerdir=<image>:<objects>, objects as a plain lower layer (Linux < 6.5, V0/V1 images only)",
};

export interface SetupOptions {
  /** Kernel command line file (/proc/cmdline). */
  cmdline: string;
  /** The physical root, already mounted (/sysroot). */
  sysroot: string;
  /** Where the composed root goes; equal to sysroot in the initramfs (stacked over it). */
  root: string;
  /** setup-root-conf.toml; a missing file means defaults. */
  config: string;
  /** Directory for temporary attachment points (/run). */
  tmpdir: string;
  /** Mount EROFS through a loop device even where file-backed mounts work. */
  forceLoop: boolean;
  /** Only try this overlay form. */
  overlayForm: OverlayForm | null;
  /** Do step 0 (only in a real boot). */
  gptAutoRoot: boolean;
}

export interface SetupResult {
  digest: string;
  karg: string;
  source: string;
  erofsVia: "file" | "loop";
  loopDevice: string | null;
  overlayForm: OverlayForm;
  /** overlayfs verifies every object (verity=require). */
  objectVerity: boolean;
  /** How the image digest was checked. */
  imageCheck: "kernel" | "userspace";
  etc: MountType;
  var: MountType;
  rootTransient: boolean;
  sysrootMounted: boolean;
  /** ms from the start of the agent's work to the mounted root. */
  totalMs: number;
  /** CPU time (user + system) of that work, ms: what a loaded machine does not inflate. */
  cpuMs: number;
  /** Part of totalMs spent computing the image digest in userspace (insecure boots without kernel verity). */
  digestMs: number;
}

const P = bstrFromUtf8;
const fdPath = (fd: number): string => `/proc/self/fd/${fd}`;

// ---- undo stack -------------------------------------------------------------------------

interface UndoEntry {
  what: string;
  /** Run on success too (closing fds, removing temporary attachment points). */
  always: boolean;
  fn: () => void;
}

/** What to undo, newest first: on failure everything, on success the `always` entries. */
class Undo {
  private entries: UndoEntry[] = [];
  constructor(private readonly log: Log) {}

  push(what: string, fn: () => void, always = false): void {
    this.entries.push({ what, always, fn });
  }

  /** Close an fd at the end (success or failure). Returns the fd. */
  fd(fd: number, what: string): number {
    this.push(`close ${what}`, () => sys.close(fd), true);
    return fd;
  }

  /** Run (and drop) the `always` entries pushed after `mark`, newest first. */
  release(mark: number): void {
    const keep: UndoEntry[] = [];
    const run: UndoEntry[] = [];
    this.entries.forEach((e, i) => (i >= mark && e.always ? run : keep).push(e));
    this.entries = keep;
    this.runList(run.reverse());
  }

  get mark(): number {
    return this.entries.length;
  }

  unwind(failed: boolean): void {
    const list = this.entries.reverse().filter((e) => failed || e.always);
    this.entries = [];
    this.runList(list);
  }

  private runList(list: UndoEntry[]): void {
    for (const e of list) {
      try {
        e.fn();
      } catch (err) {
        this.log.warn(`cleanup: ${e.what}: ${describeError(err)}`);
      }
    }
  }
}

// ---- small helpers ---------------------------------------------------------------------------

function readText(path: string, what: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (e) {
    throw sys.fromNodeError(P(path), `read ${what}`, e);
  }
}

/** All bytes of an fd, refusing files larger than `max`. */
function readAll(fd: number, max: number, input: string): Uint8Array {
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const buf = new Uint8Array(Math.min(65536, max + 1 - total));
    const n = readSync(fd, buf, 0, buf.byteLength, null);
    if (n === 0) break;
    chunks.push(buf.subarray(0, n));
    total += n;
    if (total > max) throw new CfsError(input, `larger than ${max} bytes`);
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.byteLength;
  }
  return out;
}

type VerityState = { kind: "verity"; algorithm: HashAlg | number; hex: string } | { kind: "none" } | { kind: "unsupported"; why: string };

function verityOf(fd: number, input: string): VerityState {
  try {
    const m = sys.measureVerity(fd, input);
    if (m === null) return { kind: "none" };
    return { kind: "verity", algorithm: m.algorithm, hex: toHex(m.digest) };
  } catch (e) {
    if (sys.isVerityUnsupported(e)) return { kind: "unsupported", why: `${(e as sys.SysError).code} from FS_IOC_MEASURE_VERITY` };
    throw e;
  }
}

function describeVerity(v: VerityState): string {
  if (v.kind === "none") return "the file has no fs-verity";
  if (v.kind === "unsupported") return `this kernel or filesystem has no fs-verity (${v.why})`;
  return `fs-verity ${typeof v.algorithm === "string" ? v.algorithm : `algorithm ${v.algorithm}`}:${v.hex}`;
}

// ---- step 1: the command line -----------------------------------------------------------------

interface Candidate {
  karg: ComposefsKarg;
  token: string;
}

function isComposefsToken(t: string): boolean {
  return t.startsWith("composefs=") || t.startsWith("composefs.digest=");
}

/**
 * The algorithm of a repository without meta.json (made by an old bootc):
 * from the first composefs karg, as initramfs.md step 2 recommends.
 */
function algorithmFromKargs(tokens: readonly string[], input: string): HashAlg {
  for (const t of tokens) {
    if (t.startsWith("composefs.digest=")) {
      const m = /^composefs\.digest=\??v\d+-(sha256|sha512)-/.exec(t);
      if (m) return m[1] as HashAlg;
    } else if (t.startsWith("composefs=")) {
      const hex = t.slice("composefs=".length).replace(/^\?/, "");
      const alg = algFromHexLength(hex.length);
      if (alg) return alg;
      throw new CfsError(t, `expected 64 (sha256) or 128 (sha512) hex digits, got ${hex.length}`);
    }
  }
  throw new CfsError(input, "no composefs karg");
}

/**
 * The images the command line names, in the order they are tried:
 * `composefs.digest=` tokens for the repository's algorithm first, then
 * `composefs=`. The whole line is validated first (malformed values, unknown
 * versions, conflicting duplicates are errors naming the karg).
 */
function candidates(tokens: readonly string[], alg: HashAlg, input: string): Candidate[] {
  parseComposefsKarg(tokens, alg); // throws on anything malformed or conflicting
  const out: Candidate[] = [];
  const seen = new Set<string>();
  for (const form of ["composefs.digest=", "composefs="]) {
    for (const t of tokens) {
      if (!t.startsWith(form)) continue;
      const k = parseComposefsKarg([t], alg);
      if (k === null) continue;
      const key = `${k.digest}/${k.insecure}`;
      if (seen.has(key)) continue;
      seen.add(key);
      out.push({ karg: k, token: t });
    }
  }
  if (out.length === 0) {
    const found = tokens.filter(isComposefsToken);
    throw new CfsError(input, `no composefs karg for this repository's algorithm ${alg} (expected composefs=[?]<${HEX_LENGTH[alg]} hex> or composefs.digest=[?]v1-${alg}-12:<hex>; found ${found.join(" ")})`);
  }
  return out;
}

// ---- step 3: the image -----------------------------------------------------------------------

interface ImageHeader {
  composefsVersion: number;
  erofsBlocks: number;
}

/** Header checks before the kernel sees the image: composefs magic, EROFS magic, size. */
function checkImageHeader(head: Uint8Array, size: number, input: string): ImageHeader {
  if (size < EROFS_SUPER_OFFSET + 128) throw new CfsError(input, `truncated: ${size} bytes, a composefs image has at least ${EROFS_SUPER_OFFSET + 128}`);
  const dv = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const h = readComposefsHeader(dv, 0);
  if (h.magic !== COMPOSEFS_MAGIC) {
    throw new CfsError(input, `not a composefs image: expected the composefs magic 0x${COMPOSEFS_MAGIC.toString(16)} at offset 0, found 0x${h.magic.toString(16).padStart(8, "0")}`);
  }
  if (h.composefsVersion > 2) throw new CfsError(input, `unsupported composefs format version ${h.composefsVersion} (offset 12; expected 0, 1 or 2)`);
  const sb = readSuperblock(dv, EROFS_SUPER_OFFSET);
  if (sb.magic !== EROFS_SUPER_MAGIC_V1) {
    throw new CfsError(input, `not an EROFS image: expected the EROFS magic 0x${EROFS_SUPER_MAGIC_V1.toString(16)} at offset ${EROFS_SUPER_OFFSET}, found 0x${sb.magic.toString(16).padStart(8, "0")}`);
  }
  if (sb.blkszbits !== 12) throw new CfsError(input, `unsupported EROFS block size 2^${sb.blkszbits} (offset ${EROFS_SUPER_OFFSET + 12}; expected 2^12)`);
  if (sb.blocks * 4096 > size) {
    throw new CfsError(input, `truncated: the EROFS superblock says ${sb.blocks} blocks (${sb.blocks * 4096} bytes), the file has ${size} bytes`);
  }
  return { composefsVersion: h.composefsVersion, erofsBlocks: sb.blocks };
}

/**
 * Read the image at `pos`. An I/O error is the expected way a corrupted file
 * with fs-verity fails (the kernel refuses blocks that do not match their
 * Merkle tree), so it is reported as a refusal naming the image.
 */
function readImage(fd: number, buf: Uint8Array, pos: number, path: string): number {
  try {
    return readSync(fd, buf, 0, buf.byteLength, pos);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? "error";
    const why = code === "EIO" ? ": its contents do not match its fs-verity Merkle tree (corrupted image) or the disk failed" : "";
    throw new CfsError(path, `reading ${buf.byteLength} bytes at offset ${pos} failed (${code})${why}; refusing to mount it`);
  }
}

/** fs-verity digest of the whole file in userspace (256 KiB reads). */
function userspaceDigest(fd: number, alg: HashAlg, path: string): string {
  const h = new FsVerityHasher(alg);
  const buf = new Uint8Array(1 << 18);
  let pos = 0;
  for (;;) {
    const n = readImage(fd, buf, pos, path);
    if (n === 0) break;
    h.update(buf.subarray(0, n));
    pos += n;
  }
  return toHex(h.digest());
}

// ---- mounting helpers ---------------------------------------------------------------------------

/** A fresh private directory for attaching one detached mount; removed by `undo`. */
function tempMountPoint(opts: SetupOptions, undo: Undo, name: string): string {
  let dir: string;
  try {
    mkdirSync(opts.tmpdir, { recursive: true, mode: 0o755 });
    dir = mkdtempSync(`${opts.tmpdir}/cfsboot-${name}.`);
  } catch (e) {
    throw sys.fromNodeError(P(opts.tmpdir), "mkdtemp", e);
  }
  undo.push(`remove ${dir}`, () => rmdirSync(dir), true);
  return dir;
}

/**
 * Attach a detached mount at a temporary directory and return an O_PATH fd
 * of its root, for use as an overlay layer (pre-6.15 kernels refuse
 * detached mounts there). The attachment is lazily unmounted by `undo`
 * (the overlay keeps its own private clone of each layer).
 */
function attachTemporarily(mountFd: number, opts: SetupOptions, undo: Undo, name: string): number {
  const dir = tempMountPoint(opts, undo, name);
  sys.attachMount(mountFd, P(dir));
  undo.push(`unmount ${dir}`, () => sys.umount2(P(dir), sys.MNT_DETACH), true);
  return undo.fd(sys.open(P(dir), sys.O_PATH | sys.O_DIRECTORY), `${name} layer`);
}

/** Attach a detached mount at `target`; on failure of a later step it is unmounted again. */
function attachAt(mountFd: number, target: string, undo: Undo, what: string): void {
  sys.attachMount(mountFd, P(target));
  undo.push(`unmount ${what} at ${target}`, () => sys.umount2(P(target), sys.MNT_DETACH | sys.UMOUNT_NOFOLLOW));
}

function mkdirMode(path: string, mode: number): void {
  try {
    mkdirSync(path, { mode });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw sys.fromNodeError(P(path), "mkdir", e);
  }
}

/**
 * An overlay from layer fds: `lowerdir+` (≥ 6.7) when the kernel has it,
 * else the `lowerdir=` string of /proc/self/fd paths (no escaping needed).
 */
function plainOverlay(source: string, lowers: number[], upper: { upper: number; work: number } | null): number {
  const common: sys.FsOption[] = [["source", source]];
  if (upper) common.push(["upperdir", fdPath(upper.upper)], ["workdir", fdPath(upper.work)]);
  try {
    return sys.mountFs("overlay", [...common, ...lowers.map((fd): sys.FsOption => ["lowerdir+", fdPath(fd)])]);
  } catch (e) {
    if (!sys.isErrno(e, "EINVAL")) throw e;
  }
  return sys.mountFs("overlay", [...common, ["lowerdir", lowers.map(fdPath).join(":")]]);
}

/** A tmpfs attached temporarily with `upper` (0755: the merged root inherits it) and `work` (0700). */
function transientUpper(opts: SetupOptions, undo: Undo, name: string): { upper: number; work: number } {
  const tmpfs = sys.mountFs("tmpfs", [["source", "transient"], ["mode", "0755"]]);
  undo.fd(tmpfs, `${name} tmpfs`);
  const dir = tempMountPoint(opts, undo, name);
  sys.attachMount(tmpfs, P(dir));
  undo.push(`unmount ${dir}`, () => sys.umount2(P(dir), sys.MNT_DETACH), true);
  mkdirMode(`${dir}/upper`, 0o755);
  mkdirMode(`${dir}/work`, 0o700);
  return {
    upper: undo.fd(sys.open(P(`${dir}/upper`), sys.O_PATH | sys.O_DIRECTORY), `${name} upper`),
    work: undo.fd(sys.open(P(`${dir}/work`), sys.O_PATH | sys.O_DIRECTORY), `${name} work`),
  };
}

// ---- the agent ------------------------------------------------------------------------------------

export function setupRoot(opts: SetupOptions, log: Log): SetupResult {
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const undo = new Undo(log);
  let ok = false;
  let t = t0;
  const done = (what: string): void => {
    const now = performance.now();
    log.info(`${what} (${ms(now - t)})`);
    t = now;
  };
  try {
    // ---- 0: systemd#35017 workaround
    if (opts.gptAutoRoot) gptAutoRoot(log);

    // ---- 1: command line (presence) and configuration
    const cmdlineText = readText(opts.cmdline, "kernel command line");
    const tokens = splitCmdline(cmdlineText);
    if (!tokens.some(isComposefsToken)) {
      throw new CfsError(opts.cmdline, "no composefs karg (expected composefs=[?]<hex> or composefs.digest=[?]v1-<hash>-12:<hex>)");
    }
    const conf = readConfig(opts.config, log);
    const mounts = effectiveMounts(conf, tokens);
    const allowUnenforced = conf?.composefs.allowUnenforcedObjectVerity ?? false;

    // ---- 2: repository and meta.json
    const repoPath = `${opts.sysroot}/composefs`;
    let repoFd: number;
    try {
      repoFd = undo.fd(sys.open(P(repoPath), sys.O_RDONLY | sys.O_DIRECTORY), "repository");
    } catch (e) {
      if (sys.isErrno(e, "ENOENT", "ENOTDIR")) throw new CfsError(repoPath, `no composefs repository (expected a directory with ${REPO_META_FILENAME}, objects/ and images/)`);
      throw e;
    }
    sys.flock(repoFd, sys.LOCK_SH, repoPath);
    const metaPath = `${repoPath}/${REPO_META_FILENAME}`;
    let meta: RepoMeta | null = null;
    let metaVerity: VerityState = { kind: "none" };
    let metaFd: number | null = null;
    try {
      metaFd = undo.fd(sys.openat2(repoFd, REPO_META_FILENAME, sys.O_RDONLY | sys.O_NOFOLLOW), "meta.json");
    } catch (e) {
      if (sys.isErrno(e, "ELOOP")) throw new CfsError(metaPath, "is a symbolic link (expected a regular file)");
      if (!sys.isErrno(e, "ENOENT")) throw e;
      let legacy = false;
      try {
        legacy = statSync(`${repoPath}/objects`).isDirectory();
      } catch {
        legacy = false;
      }
      if (!legacy) throw new CfsError(metaPath, "missing, and there is no objects/ either: not a composefs repository");
    }
    if (metaFd !== null) {
      meta = parseRepoMeta(readAll(metaFd, 1 << 16, metaPath), metaPath);
      metaVerity = verityOf(metaFd, metaPath);
      const unknown = unknownFeatures(meta);
      const notes = [...unknown.readOnlyCompatible, ...unknown.compatible];
      done(
        `repository ${repoPath}: ${algName(meta.algorithm)}, ${metaVerity.kind === "verity" ? "secure (meta.json has fs-verity)" : "insecure (meta.json has no fs-verity)"}` +
          (notes.length ? `, ignoring unknown features ${notes.join(", ")} (read-only use)` : ""),
      );
    }
    const alg = meta?.algorithm ?? algorithmFromKargs(tokens, opts.cmdline);
    if (meta === null) done(`repository ${repoPath}: legacy (no ${REPO_META_FILENAME}), algorithm ${alg} from the karg`);

    // ---- 1 (cont.): which images the kargs name
    const cands = candidates(tokens, alg, opts.cmdline);

    // ---- 3: find and verify the image
    const tried: string[] = [];
    let chosen: Candidate | null = null;
    let imageFd = -1;
    let imagePath = "";
    for (const c of cands) {
      imagePath = `${repoPath}/images/${c.karg.digest}`;
      try {
        imageFd = sys.openat2(repoFd, `images/${c.karg.digest}`, sys.O_RDONLY, { resolve: sys.RESOLVE_BENEATH });
      } catch (e) {
        if (sys.isErrno(e, "ENOENT")) {
          tried.push(`${c.token}: no ${imagePath}`);
          continue;
        }
        if (sys.isErrno(e, "EXDEV")) throw new CfsError(imagePath, "a symbolic link leading outside the repository (expected a link into objects/)");
        throw e;
      }
      undo.fd(imageFd, "image");
      chosen = c;
      break;
    }
    if (chosen === null) {
      throw new CfsError(opts.cmdline, `the image named by the karg is not in the repository (${tried.join("; ")})`);
    }
    if (tried.length > 0) log.warn(`skipped kargs whose image is missing: ${tried.join("; ")}`);
    const { karg, token } = chosen;
    const sealed = !karg.insecure;

    if (sealed && meta !== null && metaVerity.kind !== "verity") {
      throw new CfsError(
        metaPath,
        `sealed boot (${token} has no '?') requires a secure repository: expected fs-verity on ${REPO_META_FILENAME}, found that ${describeVerity(metaVerity)}`,
      );
    }
    const st = fstatSync(imageFd);
    if (!st.isFile()) throw new CfsError(imagePath, "not a regular file");
    const size = st.size;
    const head = new Uint8Array(Math.min(4096, Math.max(size, 0)));
    readImage(imageFd, head, 0, imagePath);

    const imageVerity = verityOf(imageFd, imagePath);
    let imageCheck: "kernel" | "userspace";
    let digestMs = 0;
    if (sealed) {
      if (imageVerity.kind !== "verity") {
        throw new CfsError(imagePath, `sealed boot (${token} has no '?') requires kernel-measured fs-verity on the image, found that ${describeVerity(imageVerity)}`);
      }
      if (imageVerity.algorithm !== alg || imageVerity.hex !== karg.digest) {
        throw new CfsError(imagePath, `fs-verity digest mismatch: ${token} expects ${alg}:${karg.digest}, the kernel measures ${imageVerity.algorithm}:${imageVerity.hex}`);
      }
      imageCheck = "kernel";
    } else if (imageVerity.kind === "verity" && imageVerity.algorithm === alg) {
      if (imageVerity.hex !== karg.digest) {
        throw new CfsError(imagePath, `fs-verity digest mismatch: ${token} expects ${karg.digest}, the kernel measures ${imageVerity.hex}`);
      }
      imageCheck = "kernel";
    } else {
      const td = performance.now();
      const hex = userspaceDigest(imageFd, alg, imagePath);
      digestMs = performance.now() - td;
      if (hex !== karg.digest) {
        throw new CfsError(imagePath, `fs-verity digest mismatch: ${token} expects ${karg.digest}, the image's ${alg} digest (computed in userspace) is ${hex}`);
      }
      imageCheck = "userspace";
    }
    const header = checkImageHeader(head, size, imagePath);
    if (karg.form === "composefs.digest" && karg.version === 1 && header.composefsVersion === 2) {
      throw new CfsError(imagePath, `${token} names a V1 image, found a V2 image (composefs format version 2 at offset 12)`);
    }
    done(
      `image ${karg.digest}: ${size} bytes, composefs V${header.composefsVersion}, digest checked ${imageCheck === "kernel" ? "by the kernel (fs-verity)" : `in userspace (${ms(digestMs)})`}` +
        `${sealed ? "" : " (insecure boot: '?' in the karg)"}`,
    );

    // ---- state directory (checked before anything is mounted)
    const stateRel = `state/deploy/${karg.digest}`;
    const statePath = `${opts.sysroot}/${stateRel}`;
    const sysrootFd = undo.fd(sys.open(P(opts.sysroot), sys.O_PATH | sys.O_DIRECTORY), "sysroot");
    let stateFd: number;
    try {
      stateFd = undo.fd(sys.openat2(sysrootFd, stateRel, sys.O_PATH | sys.O_DIRECTORY, { resolve: sys.RESOLVE_BENEATH }), "state");
    } catch (e) {
      if (sys.isErrno(e, "ENOENT", "ENOTDIR")) throw new CfsError(statePath, "missing (expected the deployment's state directory with etc/ and var/, written when it was deployed)");
      throw e;
    }
    for (const sub of ["etc", "var"] as const) {
      if (mounts[sub] !== "bind") continue;
      try {
        // follows the var symlink (../../os/default/var), as open_tree will
        sys.close(sys.openat(stateFd, sub, sys.O_PATH | sys.O_DIRECTORY));
      } catch (e) {
        if (sys.isErrno(e, "ENOENT", "ENOTDIR")) throw new CfsError(`${statePath}/${sub}`, `missing (expected the directory bound at /${sub})`);
        throw e;
      }
    }
    let objectsFd: number;
    try {
      objectsFd = undo.fd(sys.openat2(repoFd, "objects", sys.O_PATH | sys.O_DIRECTORY, { resolve: sys.RESOLVE_BENEATH | sys.RESOLVE_NO_SYMLINKS }), "objects");
    } catch (e) {
      if (sys.isErrno(e, "ELOOP")) throw new CfsError(`${repoPath}/objects`, "is a symbolic link (expected the object store directory)");
      if (sys.isErrno(e, "ENOENT", "ENOTDIR")) throw new CfsError(`${repoPath}/objects`, "missing (expected the object store directory)");
      throw e;
    }
    done(`state ${statePath}: /etc ${mounts.etc}, /var ${mounts.var}${mounts.rootTransient ? ", transient root" : ""}`);

    // ---- 6: the physical root, read-only, before anything covers it
    const physFd = undo.fd(sys.openTree(sys.AT_FDCWD, P(opts.sysroot), sys.OPEN_TREE_CLONE | sys.OPEN_TREE_CLOEXEC), "physical root clone");
    sys.mountSetattr(physFd, "", { set: sys.MOUNT_ATTR_RDONLY });

    // ---- 4: EROFS
    const mark = undo.mark;
    let erofsFd: number | null = null;
    let via: "file" | "loop" = "file";
    let loopDevice: string | null = null;
    if (!opts.forceLoop) {
      try {
        erofsFd = sys.mountFs("erofs", [["source", fdPath(imageFd)], ["ro", true]], sys.MOUNT_ATTR_RDONLY);
      } catch (e) {
        if (!sys.isErrno(e, "ENOTBLK")) throw new CfsError(imagePath, `EROFS mount failed: ${describeError(e)}`);
        log.info("EROFS: this kernel cannot mount a file directly (ENOTBLK); using a loop device");
      }
    }
    if (erofsFd === null) {
      via = "loop";
      const dev = sys.loopAttach(imageFd, { readOnly: true, autoclear: true, directIo: true });
      loopDevice = dev.path;
      try {
        erofsFd = sys.mountFs("erofs", [["source", dev.path], ["ro", true]], sys.MOUNT_ATTR_RDONLY);
      } catch (e) {
        throw new CfsError(imagePath, `EROFS mount on ${dev.path} failed: ${describeError(e)}`);
      } finally {
        // autoclear: the device goes away when the last mount of it does
        sys.close(dev.fd);
      }
    }
    undo.fd(erofsFd, "EROFS mount");
    const erofsLayer = attachTemporarily(erofsFd, opts, undo, "erofs");
    done(`EROFS mounted ${via === "file" ? "from the image file" : `through ${loopDevice}`}`);

    // ---- 5: the composefs overlay
    const source = `composefs:${karg.digest}`;
    const ovl = composefsOverlay(source, erofsLayer, objectsFd, sealed, header.composefsVersion, opts.overlayForm, allowUnenforced, token, log);
    undo.release(mark); // the EROFS attachment is no longer needed: the overlay holds its own clone
    undo.fd(ovl.fd, "composefs overlay");
    done(`overlay ${source}: ${FORM_TEXT[ovl.form]}${ovl.verity ? ", verity=require" : ", no per-file verification"}`);

    // ---- 7: attach (pre-6.15 sequence)
    attachAt(ovl.fd, opts.root, undo, "the composefs root");

    // The image's /etc and /var for overlay and transient modes, taken from
    // the composefs root itself: under a transient root they would be an
    // overlay of an overlay, one more than the kernel's stacking limit (2).
    const imageDirs: Partial<Record<"etc" | "var", number>> = {};
    for (const sub of ["etc", "var"] as const) {
      if (mounts[sub] !== "overlay" && mounts[sub] !== "transient") continue;
      try {
        imageDirs[sub] = undo.fd(sys.open(P(`${opts.root}/${sub}`), sys.O_PATH | sys.O_DIRECTORY), `image ${sub}`);
      } catch (e) {
        if (sys.isErrno(e, "ENOENT", "ENOTDIR")) throw new CfsError(`${opts.root}/${sub}`, `missing in the image (expected the directory to put the ${mounts[sub]} /${sub} over)`);
        throw e;
      }
    }

    // ---- 8: optional transient root
    if (mounts.rootTransient) {
      const m2 = undo.mark;
      const lower = undo.fd(sys.open(P(opts.root), sys.O_PATH | sys.O_DIRECTORY), "composefs root");
      const up = transientUpper(opts, undo, "transient-root");
      const tfd = undo.fd(plainOverlay(`transient:composefs=${karg.digest}`, [lower], up), "transient root overlay");
      attachAt(tfd, opts.root, undo, "the transient root");
      undo.release(m2);
    }
    done(`root at ${opts.root}${mounts.rootTransient ? " (transient: a tmpfs overlay)" : ""}`);

    // ---- 9: physical root at <root>/sysroot
    let sysrootMounted = false;
    let hasSysroot = false;
    try {
      hasSysroot = lstatSync(`${opts.root}/sysroot`).isDirectory();
    } catch {
      hasSysroot = false;
    }
    if (hasSysroot) {
      attachAt(physFd, `${opts.root}/sysroot`, undo, "the physical root");
      sysrootMounted = true;
    }

    // ---- 10: /etc and /var
    for (const sub of ["etc", "var"] as const) {
      mountStateDir(sub, mounts[sub], stateFd, `${statePath}/${sub}`, imageDirs[sub] ?? null, opts, undo);
    }
    done(`${sysrootMounted ? "/sysroot read-only, " : "no /sysroot in the image, "}/etc ${mounts.etc}, /var ${mounts.var}`);

    const totalMs = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    const cpuMs = (cpu.user + cpu.system) / 1000;
    log.info(`mounted ${source} at ${opts.root} in ${ms(totalMs)} (CPU ${ms(cpuMs)})`);
    ok = true;
    return {
      digest: karg.digest,
      karg: token,
      source,
      erofsVia: via,
      loopDevice,
      overlayForm: ovl.form,
      objectVerity: ovl.verity,
      imageCheck,
      etc: mounts.etc,
      var: mounts.var,
      rootTransient: mounts.rootTransient,
      sysrootMounted,
      totalMs,
      cpuMs,
      digestMs,
    };
  } finally {
    undo.unwind(!ok);
  }
}

function readConfig(path: string, log: Log): SetupRootConf | null {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw sys.fromNodeError(P(path), "read", e);
  }
  const conf = parseSetupRootConf(text, path);
  if (conf.unknownKeys.length > 0) log.warn(`${path}: ignoring unknown keys ${conf.unknownKeys.join(", ")}`);
  return conf;
}

interface ComposefsOverlay {
  fd: number;
  form: OverlayForm;
  verity: boolean;
}

/**
 * The composefs overlay, trying the layer forms the kernel may accept
 * (EINVAL = "not this form", anything else is fatal). Sealed boots ask for
 * verity=require; when no form works with it but one works without, the
 * kernel cannot enforce per-file verity: refused unless the config allows it.
 */
function composefsOverlay(
  source: string,
  erofsLayer: number,
  objectsFd: number,
  sealed: boolean,
  composefsVersion: number,
  only: OverlayForm | null,
  allowUnenforced: boolean,
  token: string,
  log: Log,
): ComposefsOverlay {
  const lower = fdPath(erofsLayer);
  const data = fdPath(objectsFd);
  const forms = (only ? [only] : OVERLAY_FORMS).filter((f) => f !== "two-layer" || composefsVersion < 2 || only === "two-layer");
  if (only === "two-layer" && composefsVersion >= 2) {
    throw new CfsError(source, "the plain two-layer overlay needs a V0/V1 image (its root whiteouts hide the object store); this is a V2 image");
  }
  const layerOptions = (form: OverlayForm): sys.FsOption[] =>
    form === "lowerdir+" ? [["lowerdir+", lower], ["datadir+", data]] : [["lowerdir", form === "data-only" ? `${lower}::${data}` : `${lower}:${data}`]];
  const failures: string[] = [];
  const attempt = (verity: boolean): ComposefsOverlay | null => {
    for (const form of forms) {
      const options: sys.FsOption[] = [["source", source], ["metacopy", "on"], ["redirect_dir", "on"]];
      if (verity) options.push(["verity", "require"]);
      options.push(...layerOptions(form), ["ro", true]);
      try {
        return { fd: sys.mountFs("overlay", options, sys.MOUNT_ATTR_RDONLY), form, verity };
      } catch (e) {
        if (!sys.isErrno(e, "EINVAL")) throw new CfsError(source, `overlay mount failed: ${describeError(e)}`);
        failures.push(`${form}${verity ? " + verity=require" : ""}: ${describeError(e)}`);
      }
    }
    return null;
  };
  const withVerity = attempt(sealed);
  if (withVerity) {
    if (failures.length) log.info(`overlay forms this kernel refused: ${failures.join("; ")}`);
    return withVerity;
  }
  if (sealed) {
    const without = attempt(false);
    if (without) {
      if (!allowUnenforced) {
        sys.close(without.fd);
        throw new CfsError(
          source,
          `sealed boot (${token} has no '?') requires overlayfs verity=require (Linux ≥ 6.6) so that every file is checked; this kernel's overlayfs refused it but mounts without it` +
            " (set [composefs] allow-unenforced-object-verity = true in setup-root-conf.toml to boot with only the image verified)",
        );
      }
      log.warn(`this kernel's overlayfs cannot enforce per-file fs-verity (no verity=require); booting with only the image verified, as allowed by [composefs] allow-unenforced-object-verity`);
      return without;
    }
  }
  throw new CfsError(source, `no overlay form accepted by this kernel (${failures.join("; ")})`);
}

/** Step 10 for one directory. `lower`: the image's directory (overlay and transient modes). */
function mountStateDir(sub: "etc" | "var", type: MountType, stateFd: number, statePath: string, lower: number | null, opts: SetupOptions, undo: Undo): void {
  const target = `${opts.root}/${sub}`;
  if (type === "none") return;
  if (type === "bind") {
    const fd = undo.fd(sys.openTree(stateFd, sub, sys.OPEN_TREE_CLONE | sys.OPEN_TREE_CLOEXEC), `${sub} clone`);
    try {
      attachAt(fd, target, undo, `the state's ${sub}`);
    } catch (e) {
      if (sys.isErrno(e, "ENOENT", "ENOTDIR")) throw new CfsError(target, `missing in the image (expected a directory to mount ${statePath} on)`);
      throw e;
    }
    return;
  }
  if (lower === null) throw new Error(`no image directory for the ${type} /${sub}`);
  const mark = undo.mark;
  let up: { upper: number; work: number };
  let source: string;
  if (type === "overlay") {
    // writes persist in state/deploy/<id>/<sub>/upper
    mkdirMode(statePath, 0o755);
    mkdirMode(`${statePath}/upper`, 0o755);
    mkdirMode(`${statePath}/work`, 0o700);
    up = {
      upper: undo.fd(sys.open(P(`${statePath}/upper`), sys.O_PATH | sys.O_DIRECTORY), `${sub} upper`),
      work: undo.fd(sys.open(P(`${statePath}/work`), sys.O_PATH | sys.O_DIRECTORY), `${sub} work`),
    };
    source = "overlay";
  } else {
    up = transientUpper(opts, undo, `transient-${sub}`);
    source = "transient";
  }
  let fd: number;
  try {
    fd = undo.fd(plainOverlay(source, [lower], up), `${sub} overlay`);
  } catch (e) {
    throw new CfsError(target, `${type} /${sub} (upper ${type === "overlay" ? `${statePath}/upper` : "a tmpfs"}) failed: ${describeError(e)}`);
  }
  attachAt(fd, target, undo, `the ${type} ${sub}`);
  undo.release(mark);
}

/**
 * Step 0 (systemd#35017): tools that look for the root's block device
 * (systemd-growfs, repart) find it through /run/systemd/volatile-root when
 * / is an overlay. Best effort, like composefs-setup-root.
 */
function gptAutoRoot(log: Log): void {
  let rdev: number;
  try {
    rdev = statSync("/dev/gpt-auto-root").rdev;
  } catch {
    return;
  }
  const target = `/dev/block/${sys.major(rdev)}:${sys.minor(rdev)}`;
  try {
    mkdirSync("/run/systemd", { recursive: true });
    symlinkSync(target, "/run/systemd/volatile-root");
    log.info(`/run/systemd/volatile-root → ${target}`);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") log.warn(`/run/systemd/volatile-root: ${describeError(e)}`);
  }
}
