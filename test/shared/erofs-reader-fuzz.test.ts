// Fuzzing the EROFS reader: mutations of valid images (truncations at every
// structure boundary, bit flips, random values in superblock / inode /
// xattr / dirent fields, random byte runs) must each either read or fail
// with a CfsError — never another exception, a hang or a huge allocation —
// in every reader entry point (tree, strict tree, C view + dump + ls,
// object references).

import { readFileSync } from "node:fs";
import fc from "fast-check";
import { expect, test } from "vitest";
import { parseDumpfile } from "../../shared/dumpfile.ts";
import { cDump, cList } from "../../shared/erofs/cdump.ts";
import { ErofsImage, imageObjects, loadImageC, type RawInode, readImage } from "../../shared/erofs/reader.ts";
import { writeErofs } from "../../shared/erofs/writer.ts";
import { CfsError } from "../../shared/errors.ts";
import { S_IFDIR, S_IFMT } from "../../shared/tree.ts";
import { arbTree } from "../helpers/arbitrary-tree.ts";
import { vectorsDir } from "../helpers/env.ts";

/** Deterministic PRNG (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Field {
  off: number;
  width: 1 | 2 | 4 | 8;
  what: string;
}

/** Every structure field of an image (header, superblock, reachable inodes, xattrs, dirents). */
function fieldsOf(image: Uint8Array): Field[] {
  const img = new ErofsImage(image);
  const out: Field[] = [];
  const add = (off: number, width: Field["width"], what: string) => out.push({ off, width, what });
  for (const o of [0, 4, 8, 12]) add(o, 4, `header+${o}`);
  for (const [o, w] of [[0, 4], [8, 4], [12, 1], [13, 1], [14, 2], [16, 8], [24, 8], [32, 4], [36, 4], [40, 4], [44, 4], [80, 4], [84, 2], [86, 2], [91, 1], [96, 8]] as const) {
    add(1024 + o, w, `superblock+${o}`);
  }
  const seen = new Set<number>();
  const todo = [img.sb.rootNid];
  while (todo.length > 0) {
    const nid = todo.pop()!;
    if (seen.has(nid)) continue;
    seen.add(nid);
    const ino: RawInode = img.inode(nid, 0);
    const base = ino.offset;
    const layout: [number, Field["width"]][] = ino.extended
      ? [[0, 2], [2, 2], [4, 2], [8, 8], [16, 4], [20, 4], [24, 4], [28, 4], [32, 8], [40, 4], [44, 4]]
      : [[0, 2], [2, 2], [4, 2], [6, 2], [8, 4], [16, 4], [20, 4], [24, 2], [26, 2]];
    for (const [o, w] of layout) add(base + o, w, `inode ${nid}+${o}`);
    if (ino.xattrIcount > 0) {
      add(ino.xattrStart, 4, `xattr filter ${nid}`);
      add(ino.xattrStart + 4, 1, `xattr shared count ${nid}`);
      for (const x of img.xattrs(ino)) {
        add(x.offset, 1, `xattr name_len ${nid}`);
        add(x.offset + 1, 1, `xattr index ${nid}`);
        add(x.offset + 2, 2, `xattr value_size ${nid}`);
      }
      const shared = image[ino.xattrStart + 4]!;
      for (let i = 0; i < shared; i++) add(ino.xattrStart + 12 + 4 * i, 4, `shared ref ${nid}`);
    }
    if ((ino.mode & S_IFMT) === S_IFDIR) {
      for (const d of img.dirents(ino)) {
        add(d.offset, 8, `dirent nid in ${nid}`);
        add(d.offset + 8, 2, `dirent nameoff in ${nid}`);
        add(d.offset + 10, 1, `dirent type in ${nid}`);
        if (d.name !== "." && d.name !== "..") todo.push(d.nid);
      }
    }
  }
  return out;
}

function put(b: Uint8Array, off: number, width: number, v: bigint): void {
  for (let i = 0; i < width && off + i < b.length; i++) b[off + i] = Number((v >> BigInt(8 * i)) & 0xffn);
}

interface Mutation {
  what: string;
  image: Uint8Array;
}

function* mutations(name: string, image: Uint8Array, seed: number, budget: number): Generator<Mutation> {
  const r = rng(seed);
  const int = (n: number) => Math.floor(r() * n);
  const fields = fieldsOf(image);
  // Truncations at every structure boundary (and next to it), block boundaries.
  const cuts = new Set<number>();
  for (const f of fields) for (const c of [f.off, f.off + 1, f.off + f.width, f.off + f.width - 1]) cuts.add(c);
  for (let b = 4096; b < image.length; b += 4096) for (const c of [b - 1, b, b + 1]) cuts.add(c);
  cuts.add(image.length - 1);
  const cutList = [...cuts].filter((c) => c > 0 && c < image.length).sort((a, b) => a - b);
  const maxCuts = Math.floor(budget * 0.25);
  const step = Math.max(1, cutList.length / maxCuts);
  for (let i = 0; i < cutList.length; i += step) {
    const c = cutList[Math.floor(i)]!;
    yield { what: `${name}: truncated to ${c}`, image: image.slice(0, c) };
  }
  const specials = (w: number): bigint[] => {
    const max = (1n << BigInt(8 * w)) - 1n;
    return [0n, 1n, 2n, 3n, 12n, 36n, max, max - 1n, max >> 1n, (max >> 1n) + 1n, BigInt(image.length), BigInt(image.length >> 5), BigInt(image.length >> 12), BigInt((image.length >> 5) - 1)].map((v) => v & max);
  };
  const rest = budget - Math.min(maxCuts, cutList.length);
  for (let i = 0; i < rest; i++) {
    const m = image.slice();
    const kind = i % 4;
    let what: string;
    if (kind === 0 || kind === 1) {
      // One or two fields set to a boundary or random value.
      const n = kind === 0 ? 1 : 2;
      const parts: string[] = [];
      for (let k = 0; k < n; k++) {
        const f = fields[int(fields.length)]!;
        const sp = specials(f.width);
        const v = r() < 0.6 ? sp[int(sp.length)]! : BigInt(int(2 ** 32)) & ((1n << BigInt(8 * f.width)) - 1n);
        put(m, f.off, f.width, v);
        parts.push(`${f.what} = ${v}`);
      }
      what = parts.join(", ");
    } else if (kind === 2) {
      // Bit flips, mostly in the metadata (inodes, xattrs), some anywhere.
      const n = 1 + int(4);
      const parts: string[] = [];
      for (let k = 0; k < n; k++) {
        const hot = r() < 0.7 && fields.length > 0;
        const off = hot ? fields[int(fields.length)]!.off + int(8) : int(m.length);
        if (off >= m.length) continue;
        const bit = int(8);
        m[off]! ^= 1 << bit;
        parts.push(`${off}.${bit}`);
      }
      what = `bit flips ${parts.join(" ")}`;
    } else {
      // A run of random bytes.
      const len = 1 + int(64);
      const off = r() < 0.7 && fields.length > 0 ? fields[int(fields.length)]!.off : int(m.length);
      for (let k = 0; k < len && off + k < m.length; k++) m[off + k] = int(256);
      what = `${len} random bytes at ${off}`;
    }
    yield { what: `${name}: ${what}`, image: m };
  }
}

function baseImages(): [string, Uint8Array][] {
  const out: [string, Uint8Array][] = [];
  for (const n of ["empty", "simple"]) out.push([`${n}.v2.img`, new Uint8Array(readFileSync(`${vectorsDir}/erofs-v2/${n}.v2.img`))]);
  const names = [
    "a02-inline-sizes", "a03-inline-large", "a04-external", "a07-symlinks", "a08-symlinks-long", "a09-hardlinks",
    "a13-devices", "a15-whiteouts", "a17-xattrs", "a18-xattrs-shared", "a19-xattrs-big", "a20-long-names",
    "a22-deep", "a28-names-escapes", "a31-os-like", "a32-mixed-1", "a33-mixed-2",
  ];
  for (const n of names) {
    const tree = parseDumpfile(new Uint8Array(readFileSync(`${vectorsDir}/erofs-v1/${n}.dump`)), { mode: "c" });
    for (const version of [0, 1, 2] as const) {
      try {
        out.push([`${n} V${version}`, writeErofs(tree, { version })]);
      } catch (e) {
        if (!(e instanceof CfsError) || version !== 2) throw e; // V2 refuses C-only trees
      }
    }
  }
  // A few generated trees with everything in them.
  const trees = fc.sample(arbTree({ size: "medium" }), { numRuns: 3, seed: 42 });
  trees.forEach((t, i) => {
    for (const version of [0, 1, 2] as const) out.push([`arbTree#${i} V${version}`, writeErofs(t, { version })]);
  });
  return out;
}

const TOTAL = 10_500;

test(`${TOTAL} mutated images read or fail with a CfsError`, () => {
  const bases = baseImages();
  // Large images cost more per case and add little: weight the budget.
  const weight = (img: Uint8Array) => Math.min(1, 32768 / img.length);
  const totalWeight = bases.reduce((a, [, img]) => a + weight(img), 0);
  const failures: string[] = [];
  let cases = 0, parsed = 0, rejected = 0, slowest = 0, slowestWhat = "";
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  bases.forEach(([name, image], i) => {
    for (const m of mutations(name, image, 1000 + i, Math.ceil((TOTAL * weight(image)) / totalWeight))) {
      cases++;
      const start = performance.now();
      let ok = 0;
      // Every entry point on every mutation would take too long on two
      // cores; ls and the object list (a tree read plus a walk) get one in four.
      const extra = cases % 4 === 0;
      const ops: (() => unknown)[] = [
        () => readImage(m.image, { name: "fuzz" }),
        () => readImage(m.image, { name: "fuzz", strict: true, info: true }),
        () => {
          const root = loadImageC(m.image, { name: "fuzz" });
          cDump(root);
          if (extra) cList(root);
        },
      ];
      if (extra) ops.push(() => imageObjects(m.image, { name: "fuzz" }));
      for (const op of ops) {
        try {
          op();
          ok++;
        } catch (e) {
          if (!(e instanceof CfsError)) {
            failures.push(`${m.what}: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
          } else if (!/^fuzz: offset \d+$/.test(e.input)) {
            failures.push(`${m.what}: CfsError input ${JSON.stringify(e.input)} does not name the byte offset`);
          }
        }
      }
      if (ok > 0) parsed++;
      else rejected++;
      const ms = performance.now() - start;
      if (ms > slowest) {
        slowest = ms;
        slowestWhat = m.what;
      }
    }
  });
  const total = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  process.stderr.write(
    `erofs reader fuzz: ${cases} mutations of ${bases.length} images in ${(total / 1000).toFixed(1)} s ` +
      `(${((cpu.user + cpu.system) / 1e6).toFixed(1)} s CPU); ` +
      `${parsed} read by at least one reader, ${rejected} rejected by all; slowest ${slowest.toFixed(1)} ms (${slowestWhat})\n`,
  );
  expect(failures.slice(0, 20)).toEqual([]);
  expect(cases).toBeGreaterThanOrEqual(10_000);
  // Something must survive mutation (the readers are not just rejecting everything)…
  expect(parsed).toBeGreaterThan(cases / 10);
  // …and nothing may take long (a loaded 2-core machine; unmutated images take a few ms).
  expect(slowest).toBeLessThan(2000);
});
