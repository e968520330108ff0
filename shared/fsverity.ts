// The Linux fs-verity file digest, computed in userspace.
//
// Parameters fixed by composefs: 4096-byte blocks, no salt, sha256 (kernel
// algorithm id 1) or sha512 (id 2). Specification: the kernel's
// Documentation/filesystems/fsverity.rst and linux/fsverity.h; summarised in
// shared/reference/fsverity.md §2–3.
//
//   1. Hash every 4096-byte block of the file (the last one zero-padded):
//      the leaf level.
//   2. Concatenate a level's hashes, split into 4096-byte blocks (the last
//      zero-padded), hash each: the next level. Repeat until one hash is left.
//      That hash is the root. An empty file has an all-zero root; a file of
//      one block has its leaf hash as the root.
//   3. The digest is H(fsverity_descriptor): a 256-byte struct holding the
//      version, algorithm, log2 block size, file size and root hash.
//
// Everything here is pure computation with constant memory (one partial
// block per tree level). For parallel hashing, split a file at block
// boundaries, compute the leaf hashes of each range anywhere (`hashLeaves`),
// and feed them in file order to a `MerkleBuilder`.

import { CfsError } from "./errors.ts";

export type HashAlg = "sha256" | "sha512";

export const HASH_ALGS: readonly HashAlg[] = ["sha256", "sha512"];

export const BLOCK_SIZE = 4096;
export const LOG_BLOCK_SIZE = 12;

/** Size in bytes of a digest (and of every tree hash). */
export const DIGEST_SIZE: Readonly<Record<HashAlg, 32 | 64>> = { sha256: 32, sha512: 64 };

/** Kernel algorithm number (`FS_VERITY_HASH_ALG_*`). */
export const ALG_ID: Readonly<Record<HashAlg, 1 | 2>> = { sha256: 1, sha512: 2 };

export function algFromId(id: number): HashAlg | undefined {
  return id === 1 ? "sha256" : id === 2 ? "sha512" : undefined;
}

export function isHashAlg(s: string): s is HashAlg {
  return s === "sha256" || s === "sha512";
}

/** The repository algorithm name: `fsverity-sha512-12`. */
export function algName(alg: HashAlg): string {
  return `fsverity-${alg}-${LOG_BLOCK_SIZE}`;
}

/** `fsverity-sha256-12` / `fsverity-sha512-12` → algorithm. Other block sizes are refused. */
export function parseAlgName(name: string): HashAlg {
  const m = /^fsverity-(sha256|sha512)-(\d+)$/.exec(name);
  if (!m) throw new CfsError(name, "unknown fs-verity algorithm (expected fsverity-sha256-12 or fsverity-sha512-12)");
  if (m[2] !== String(LOG_BLOCK_SIZE)) throw new CfsError(name, `unsupported fs-verity block size 2^${m[2]} (only 2^12 is supported)`);
  return m[1] as HashAlg;
}

/** The algorithm whose digest has `len` hex characters (64 → sha256, 128 → sha512). */
export function algFromHexLength(len: number): HashAlg | undefined {
  return len === 64 ? "sha256" : len === 128 ? "sha512" : undefined;
}

// ---------------------------------------------------------------------------
// Block hashing. Every hash goes through one `HashPieces` function per
// algorithm: `count` equal pieces (usually 4096-byte blocks) in one call, so
// an implementation across a foreign-function boundary pays its per-call
// cost once per batch and the callers create no subarrays. The default is
// Bun's own SHA-2 (BoringSSL): `Bun.CryptoHasher.hash(alg, input, output)`
// writes straight into the caller's buffer (measured fastest of node:crypto,
// Bun.CryptoHasher and @noble/hashes). Host start-up code may select another
// implementation for its thread (host/hashing.ts: OpenSSL's libcrypto for
// sha512); this module never does. See the README section "fs-verity".

/**
 * Hashes `count` consecutive pieces of `len` bytes of `src`, the first at
 * byte `srcOff`, writing their digests back to back into `out` from byte
 * `outOff`. Ranges are the caller's to get right (implementations check).
 */
export type HashPieces = (src: Uint8Array, srcOff: number, len: number, count: number, out: Uint8Array, outOff: number) => void;

function bunPieces(alg: HashAlg): HashPieces {
  const ds = DIGEST_SIZE[alg];
  return (src, srcOff, len, count, out, outOff) => {
    if (srcOff + len * count > src.byteLength || outOff + ds * count > out.byteLength) throw new RangeError("hash: range outside the buffer");
    for (let i = 0; i < count; i++) {
      const s = srcOff + i * len;
      const o = outOff + i * ds;
      Bun.CryptoHasher.hash(alg, src.subarray(s, s + len), out.subarray(o, o + ds));
    }
  };
}

/** Bun's SHA-2 (BoringSSL), the default implementation. */
export const BUN_HASH: Readonly<Record<HashAlg, HashPieces>> = { sha256: bunPieces("sha256"), sha512: bunPieces("sha512") };

/** The implementation in use, per algorithm (module state: one per thread). */
const impl: Record<HashAlg, HashPieces> = { ...BUN_HASH };

/**
 * Selects the implementation of `alg` for this thread (`undefined`: Bun's).
 * It must compute the same SHA-2; host code picks it once at start-up.
 */
export function setHashImplementation(alg: HashAlg, f: HashPieces | undefined): void {
  impl[alg] = f ?? BUN_HASH[alg];
}

/** The implementation of `alg` in use in this thread. */
export function hashImplementation(alg: HashAlg): HashPieces {
  return impl[alg];
}

function hashInto(alg: HashAlg, input: Uint8Array, out: Uint8Array, outOffset: number): void {
  impl[alg](input, 0, input.byteLength, 1, out, outOffset);
}

/** Zero-padded copy of a last partial block (hashLeaves is synchronous: one suffices). */
const lastBlock = new Uint8Array(BLOCK_SIZE);

/** Number of leaf blocks (= leaf hashes) of a file of `size` bytes. */
export function leafCount(size: number | bigint): number {
  if (typeof size === "number") return Math.ceil(size / BLOCK_SIZE);
  return Number((size + BigInt(BLOCK_SIZE - 1)) / BigInt(BLOCK_SIZE));
}

/**
 * Leaf hashes of `data`, which starts at a block boundary of the file: one
 * hash per 4096 bytes, the last partial block zero-padded. Returns the
 * concatenated hashes (`out` if given; it must hold them all).
 */
export function hashLeaves(alg: HashAlg, data: Uint8Array, out?: Uint8Array): Uint8Array {
  const ds = DIGEST_SIZE[alg];
  const full = Math.floor(data.byteLength / BLOCK_SIZE);
  const rest = data.byteLength - full * BLOCK_SIZE;
  const n = full + (rest > 0 ? 1 : 0);
  const res = out ? out.subarray(0, n * ds) : new Uint8Array(n * ds);
  if (res.byteLength < n * ds) throw new RangeError("hashLeaves: output buffer too small");
  if (full > 0) impl[alg](data, 0, BLOCK_SIZE, full, res, 0);
  if (rest > 0) {
    const last = lastBlock;
    last.set(data.subarray(full * BLOCK_SIZE));
    last.fill(0, rest);
    hashInto(alg, last, res, full * ds);
  }
  return res;
}

/** The 256-byte `struct fsverity_descriptor` for a file (no salt, 4 KiB blocks). */
export function descriptor(alg: HashAlg, size: number | bigint, rootHash: Uint8Array, into?: Uint8Array): Uint8Array {
  const d = into ?? new Uint8Array(256);
  if (into) d.fill(0);
  d[0] = 1; // version
  d[1] = ALG_ID[alg];
  d[2] = LOG_BLOCK_SIZE;
  d[3] = 0; // salt_size
  const dv = new DataView(d.buffer, d.byteOffset, 256);
  if (typeof size === "number") {
    dv.setUint32(8, size % 2 ** 32, true);
    dv.setUint32(12, Math.floor(size / 2 ** 32), true);
  } else {
    dv.setBigUint64(8, size, true);
  }
  d.set(rootHash.subarray(0, DIGEST_SIZE[alg]), 16);
  return d;
}

/** Reused by digestFromRoot (never escapes; hashing is synchronous). */
const descScratch = new Uint8Array(256);

/** digest = H(descriptor). */
export function digestFromRoot(alg: HashAlg, size: number | bigint, rootHash: Uint8Array): Uint8Array {
  const out = new Uint8Array(DIGEST_SIZE[alg]);
  hashInto(alg, descriptor(alg, size, rootHash, descScratch), out, 0);
  return out;
}

/**
 * Builds the upper tree levels from leaf hashes given in file order, in
 * memory O(tree height). `finish(size)` gives the file's fs-verity digest.
 */
export class MerkleBuilder {
  readonly alg: HashAlg;
  private readonly ds: number;
  /** levels[i]: the partially filled block of level-i hashes (level 0 = leaf hashes). */
  private readonly levels: Uint8Array[] = [];
  private readonly fill: number[] = [];
  /** Hashes ever added to each level. */
  private readonly count: number[] = [];
  private finished = false;

  constructor(alg: HashAlg) {
    this.alg = alg;
    this.ds = DIGEST_SIZE[alg];
  }

  /** Number of leaf hashes added so far. */
  get leaves(): number {
    return this.count[0] ?? 0;
  }

  /** Adds consecutive leaf hashes (a multiple of the digest size). */
  addLeafHashes(hashes: Uint8Array): void {
    if (this.finished) throw new Error("MerkleBuilder: already finished");
    if (hashes.byteLength % this.ds !== 0) throw new RangeError("MerkleBuilder: not a whole number of hashes");
    this.addAt(0, hashes);
  }

  private level(i: number): Uint8Array {
    while (this.levels.length <= i) {
      this.levels.push(new Uint8Array(BLOCK_SIZE));
      this.fill.push(0);
      this.count.push(0);
    }
    return this.levels[i]!;
  }

  private addAt(i: number, hashes: Uint8Array): void {
    const buf = this.level(i);
    let off = 0;
    while (off < hashes.byteLength) {
      const f = this.fill[i]!;
      const take = Math.min(BLOCK_SIZE - f, hashes.byteLength - off);
      buf.set(hashes.subarray(off, off + take), f);
      off += take;
      this.fill[i] = f + take;
      this.count[i] = this.count[i]! + take / this.ds;
      if (this.fill[i] === BLOCK_SIZE) this.emit(i);
    }
  }

  /** Hashes level i's (zero-padded) block into level i+1 and empties it. */
  private emit(i: number): void {
    const buf = this.levels[i]!;
    const f = this.fill[i]!;
    if (f < BLOCK_SIZE) buf.fill(0, f);
    const h = new Uint8Array(this.ds);
    hashInto(this.alg, buf, h, 0);
    this.fill[i] = 0;
    this.addAt(i + 1, h);
  }

  /** The root hash (all zeros for no leaves). Ends the builder. */
  root(): Uint8Array {
    this.finished = true;
    const root = new Uint8Array(this.ds);
    if (this.leaves === 0) return root;
    for (let i = 0; ; i++) {
      const top = i === this.levels.length - 1;
      if (top && this.count[i] === 1) {
        root.set(this.levels[i]!.subarray(0, this.ds));
        return root;
      }
      if (this.fill[i]! > 0) this.emit(i);
    }
  }

  /** The fs-verity digest of a file of `size` bytes whose leaf hashes were added. */
  finish(size: number | bigint): Uint8Array {
    const expected = leafCount(size);
    if (expected !== this.leaves) {
      throw new Error(`MerkleBuilder: ${this.leaves} leaf hashes for a file of ${size} bytes (needs ${expected})`);
    }
    return digestFromRoot(this.alg, size, this.root());
  }
}

/** Leaf hashes computed per batch in FsVerityHasher.update (batch × 64 bytes of scratch). */
const LEAF_BATCH = 256;

/**
 * Scratch for leaf hashes, shared by every hasher: update() never yields and
 * the builder copies what it is given, so one buffer per process suffices.
 */
const leafScratch = new Uint8Array(LEAF_BATCH * 64);

/** Streaming fs-verity digest: feed the file in chunks of any size. */
export class FsVerityHasher {
  readonly alg: HashAlg;
  private readonly builder: MerkleBuilder;
  /** The incomplete last block seen so far (allocated when first needed). */
  private partial: Uint8Array | undefined;
  private partialLen = 0;
  private size = 0;

  constructor(alg: HashAlg) {
    if (!isHashAlg(alg)) throw new CfsError(String(alg), "unknown hash algorithm (expected sha256 or sha512)");
    this.alg = alg;
    this.builder = new MerkleBuilder(alg);
  }

  /** Bytes fed so far. */
  get length(): number {
    return this.size;
  }

  update(chunk: Uint8Array): void {
    let off = 0;
    const len = chunk.byteLength;
    this.size += len;
    const scratch = leafScratch;
    if (this.partialLen > 0) {
      const partial = this.partial!;
      const take = Math.min(BLOCK_SIZE - this.partialLen, len);
      partial.set(chunk.subarray(0, take), this.partialLen);
      this.partialLen += take;
      off = take;
      if (this.partialLen < BLOCK_SIZE) return;
      hashInto(this.alg, partial, scratch, 0);
      this.builder.addLeafHashes(scratch.subarray(0, DIGEST_SIZE[this.alg]));
      this.partialLen = 0;
    }
    const ds = DIGEST_SIZE[this.alg];
    while (len - off >= BLOCK_SIZE) {
      const n = Math.min(LEAF_BATCH, Math.floor((len - off) / BLOCK_SIZE));
      impl[this.alg](chunk, off, BLOCK_SIZE, n, scratch, 0);
      this.builder.addLeafHashes(scratch.subarray(0, n * ds));
      off += n * BLOCK_SIZE;
    }
    if (off < len) {
      const partial = (this.partial ??= new Uint8Array(BLOCK_SIZE));
      partial.set(chunk.subarray(off), 0);
      this.partialLen = len - off;
    }
  }

  /** The digest of everything fed. Ends the hasher. */
  digest(): Uint8Array {
    if (this.partialLen > 0) {
      const partial = this.partial!;
      partial.fill(0, this.partialLen);
      hashInto(this.alg, partial, leafScratch, 0);
      this.builder.addLeafHashes(leafScratch.subarray(0, DIGEST_SIZE[this.alg]));
      this.partialLen = 0;
    }
    return this.builder.finish(this.size);
  }
}

/** One tree block, reused by the small-file path of fsverityDigest. */
const smallBlock = new Uint8Array(BLOCK_SIZE);

/**
 * fs-verity digest of a whole buffer. Files whose leaf hashes fit in one tree
 * block (≤ 512 KiB for sha256, ≤ 256 KiB for sha512: most files of an OS
 * image) take a path without per-level buffers.
 */
export function fsverityDigest(data: Uint8Array, alg: HashAlg): Uint8Array {
  if (!isHashAlg(alg)) throw new CfsError(String(alg), "unknown hash algorithm (expected sha256 or sha512)");
  const ds = DIGEST_SIZE[alg];
  const size = data.byteLength;
  const n = Math.ceil(size / BLOCK_SIZE);
  if (n > BLOCK_SIZE / ds) {
    const h = new FsVerityHasher(alg);
    h.update(data);
    return h.digest();
  }
  const leaves = hashLeaves(alg, data, leafScratch);
  if (n <= 1) return digestFromRoot(alg, size, n === 0 ? new Uint8Array(ds) : leaves);
  smallBlock.set(leaves);
  smallBlock.fill(0, leaves.byteLength);
  const root = new Uint8Array(ds);
  hashInto(alg, smallBlock, root, 0);
  return digestFromRoot(alg, size, root);
}

/** Digest of the empty file (all-zero root). */
export function emptyDigest(alg: HashAlg): Uint8Array {
  return digestFromRoot(alg, 0, new Uint8Array(DIGEST_SIZE[alg]));
}

/** Object path form `XX/<rest>` of a hex digest (repository objects, payloads). */
export function objectPath(hex: string): string {
  return `${hex.slice(0, 2)}/${hex.slice(2)}`;
}
