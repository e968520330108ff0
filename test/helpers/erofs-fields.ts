// Development aid: a field-by-field listing of a composefs EROFS image, in
// the spirit of composefs-rs's insta snapshots (vectors/erofs-v2/mkfs__*.snap).
// Two listings diffed line by line show where two images differ far faster
// than a byte comparison. Not a validating reader: it trusts the image.
//
//   import { describeImage, firstDifference } from "../helpers/erofs-fields.ts";
//   console.log(describeImage(img).join("\n"));
//   console.log(firstDifference(describeImage(ours), describeImage(theirs)));
//
// Command line: bun test/helpers/erofs-fields.ts IMAGE [OTHER-IMAGE]

import { readFileSync } from "node:fs";
import {
  BLOCK_SIZE,
  DataLayout,
  DIRENT_SIZE,
  EROFS_SUPER_OFFSET,
  INODE_SLOT_SIZE,
  XATTR_ENTRY_HEADER_SIZE,
  XATTR_IBODY_HEADER_SIZE,
  XATTR_PREFIXES,
  iFormatDataLayout,
  inodeHeaderSize,
  readComposefsHeader,
  readDirent,
  readInodeHeader,
  readSuperblock,
  readXattrEntryHeader,
  readXattrIbodyHeader,
  xattrBlockSize,
} from "../../shared/erofs/format.ts";

const LAYOUT_NAMES: Record<number, string> = {
  [DataLayout.FLAT_PLAIN]: "FLAT_PLAIN",
  [DataLayout.FLAT_INLINE]: "FLAT_INLINE",
  [DataLayout.CHUNK_BASED]: "CHUNK_BASED",
};

function show(bytes: Uint8Array): string {
  let printable = true;
  for (const b of bytes) if (b < 0x20 || b > 0x7e) printable = false;
  if (printable) return JSON.stringify(Buffer.from(bytes).toString("latin1"));
  return "0x" + Buffer.from(bytes).toString("hex");
}

function xattrEntry(img: Uint8Array, dv: DataView, p: number): { text: string; size: number } {
  const h = readXattrEntryHeader(dv, p);
  const start = p + XATTR_ENTRY_HEADER_SIZE;
  const suffix = Buffer.from(img.subarray(start, start + h.nameLen)).toString("latin1");
  const value = img.subarray(start + h.nameLen, start + h.nameLen + h.valueSize);
  const name = (XATTR_PREFIXES[h.nameIndex] ?? `<index ${h.nameIndex}>`) + suffix;
  return {
    text: `{index ${h.nameIndex}, name_len ${h.nameLen}, value_size ${h.valueSize}} ${JSON.stringify(name)} = ${show(value)}`,
    size: (XATTR_ENTRY_HEADER_SIZE + h.nameLen + h.valueSize + 3) & ~3,
  };
}

/** One line per field of the header, superblock, every reachable inode and the shared xattrs. */
export function describeImage(img: Uint8Array): string[] {
  const dv = new DataView(img.buffer, img.byteOffset, img.byteLength);
  const out: string[] = [];
  const hdr = readComposefsHeader(dv, 0);
  out.push(`@0 composefs: magic 0x${hdr.magic.toString(16)} version ${hdr.version} flags ${hdr.flags} composefs_version ${hdr.composefsVersion}`);
  const sb = readSuperblock(dv, EROFS_SUPER_OFFSET);
  out.push(
    `@1024 superblock: magic 0x${sb.magic.toString(16)} compat ${sb.featureCompat} blkszbits ${sb.blkszbits} root_nid ${sb.rootNid} ` +
      `inos ${sb.inos} build_time ${sb.buildTime}.${sb.buildTimeNsec} blocks ${sb.blocks} meta_blkaddr ${sb.metaBlkaddr} ` +
      `xattr_blkaddr ${sb.xattrBlkaddr} incompat ${sb.featureIncompat}`,
  );
  out.push(`length ${img.byteLength}`);

  // Walk every inode reachable from the root, then list them in nid order.
  const seen = new Set<number>();
  const todo = [sb.rootNid];
  const lines = new Map<number, string[]>();
  const sharedRefs = new Set<number>();
  while (todo.length > 0) {
    const nid = todo.pop()!;
    if (seen.has(nid)) continue;
    seen.add(nid);
    const off = nid * INODE_SLOT_SIZE;
    const l: string[] = [];
    lines.set(nid, l);
    const ino = readInodeHeader(dv, off);
    const layout = iFormatDataLayout(ino.format);
    l.push(
      `@${off} nid ${nid} ${ino.extended ? "extended" : "compact"} ${LAYOUT_NAMES[layout] ?? layout} mode 0${ino.mode.toString(8)} ` +
        `nlink ${ino.nlink} size ${ino.size} u ${ino.u} ino ${ino.ino} uid ${ino.uid} gid ${ino.gid}` +
        (ino.extended ? ` mtime ${ino.mtime}.${ino.mtimeNsec}` : "") + ` xattr_icount ${ino.xattrIcount}`,
    );
    let p = off + inodeHeaderSize(ino.format);
    const xsize = xattrBlockSize(ino.xattrIcount);
    if (xsize > 0) {
      const xh = readXattrIbodyHeader(dv, p);
      l.push(`  xattrs: name_filter 0x${xh.nameFilter.toString(16)} shared ${xh.sharedCount}`);
      let q = p + XATTR_IBODY_HEADER_SIZE;
      for (let i = 0; i < xh.sharedCount; i++, q += 4) {
        const ref = dv.getUint32(q, true);
        sharedRefs.add(sb.xattrBlkaddr * BLOCK_SIZE + ref * 4);
        const e = xattrEntry(img, dv, sb.xattrBlkaddr * BLOCK_SIZE + ref * 4);
        l.push(`  shared ref ${ref}: ${e.text}`);
      }
      while (q < p + xsize) {
        const e = xattrEntry(img, dv, q);
        l.push(`  local @${q}: ${e.text}`);
        q += e.size;
      }
    }
    p += xsize;
    const size = Number(ino.size);
    const tail = layout === DataLayout.FLAT_INLINE ? size % BLOCK_SIZE : 0;
    const type = ino.mode & 0o170000;
    if (layout === DataLayout.CHUNK_BASED) {
      const first = p + 4 <= img.byteLength ? dv.getUint32(p, true).toString(16) : "-";
      l.push(`  chunk format ${ino.u & 0x1f} (i_u 0x${ino.u.toString(16)}), word after xattrs 0x${first}`);
    }
    if (type === 0o040000) {
      const blocks = Math.floor(size / BLOCK_SIZE) + (layout === DataLayout.FLAT_PLAIN && size % BLOCK_SIZE ? 1 : 0);
      const parts: { at: number; len: number; what: string }[] = [];
      for (let b = 0; b < blocks; b++) parts.push({ at: (ino.u + b) * BLOCK_SIZE, len: BLOCK_SIZE, what: `block ${ino.u + b}` });
      if (tail > 0) parts.push({ at: p, len: tail, what: "inline" });
      for (const part of parts) {
        const first = readDirent(dv, part.at);
        const n = first.nameoff / DIRENT_SIZE;
        l.push(`  dir ${part.what} @${part.at}: ${n} entries`);
        for (let i = 0; i < n; i++) {
          const d = readDirent(dv, part.at + i * DIRENT_SIZE);
          const end = i + 1 < n ? readDirent(dv, part.at + (i + 1) * DIRENT_SIZE).nameoff : (() => {
            // last name ends at the first NUL or at the end of the block/tail
            let e = d.nameoff;
            while (e < part.len && img[part.at + e] !== 0) e++;
            return e;
          })();
          const name = Buffer.from(img.subarray(part.at + d.nameoff, part.at + end)).toString("latin1");
          l.push(`    ${JSON.stringify(name)} -> nid ${d.nid} type ${d.fileType} (nameoff ${d.nameoff})`);
          if (name !== "." && name !== "..") todo.push(d.nid);
        }
      }
    } else if (tail > 0) {
      l.push(`  inline ${tail} bytes: ${show(img.subarray(p, p + Math.min(tail, 64)))}${tail > 64 ? "…" : ""}`);
    }
  }
  for (const nid of [...lines.keys()].sort((a, b) => a - b)) out.push(...lines.get(nid)!);
  for (const at of [...sharedRefs].sort((a, b) => a - b)) out.push(`shared @${at}: ${xattrEntry(img, dv, at).text}`);
  return out;
}

/** The first line where two listings differ, with a little context; "" when equal. */
export function firstDifference(a: string[], b: string[]): string {
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i]) {
      const from = Math.max(0, i - 2);
      return [
        `listings differ at line ${i}:`,
        ...a.slice(from, i).map((s) => `  ${s}`),
        `- ${a[i] ?? "<end>"}`,
        `+ ${b[i] ?? "<end>"}`,
      ].join("\n");
    }
  }
  return "";
}

if (import.meta.main) {
  const [a, b] = process.argv.slice(2);
  if (a === undefined) {
    process.stderr.write("usage: bun test/helpers/erofs-fields.ts IMAGE [OTHER-IMAGE]\n");
    process.exit(2);
  }
  const la = describeImage(new Uint8Array(readFileSync(a)));
  if (b === undefined) process.stdout.write(la.join("\n") + "\n");
  else process.stdout.write((firstDifference(la, describeImage(new Uint8Array(readFileSync(b)))) || "no difference") + "\n");
}
