// Child-process helper (run as root with bun): mount a composefs image the way
// the boot agent does and compare the mounted tree with the directory it was
// built from.
//
//   bun test/helpers/mount-compare.ts IMAGE STORE SOURCE [--no-hardlinks]
//
// In a private mount namespace: the image as a file-backed EROFS mount, then
// overlayfs `lowerdir=<erofs>::<store>` (the store as a data-only layer) with
// `ro,metacopy=on,redirect_dir=on`, attached to a temporary directory. Every
// entry is compared with the source: type, permission bits, uid/gid, mtime to
// the nanosecond, size, symlink target, rdev, nlink, xattrs, and the sha256 of
// every regular file's content (read through the overlay, so from the store).
// Prints one JSON object: {entries, regular, bytes, mismatches: [...]}.

import { createHash } from "node:crypto";
import { closeSync, lstatSync, mkdtempSync, openSync, readSync, readdirSync, readlinkSync, rmdirSync, type BigIntStats } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import * as sys from "../../shared/sys.ts";

const [image, store, source, ...flags] = process.argv.slice(2);
if (!image || !store || !source) {
  process.stderr.write("usage: mount-compare.ts IMAGE STORE SOURCE [--no-hardlinks]\n");
  process.exit(2);
}
const keepLinks = !flags.includes("--no-hardlinks");

sys.unshare(sys.CLONE_NEWNS);
sys.mount(null, "/", null, sys.MS_REC | sys.MS_PRIVATE);

const top = mkdtempSync(join(tmpdir(), "cfsboot-mc-"));
const erofs = sys.mountFs("erofs", [["source", image], ["ro", true]], sys.MOUNT_ATTR_RDONLY);
const overlay = sys.mountFs(
  "overlay",
  [
    ["lowerdir", `/proc/self/fd/${erofs}::${store}`],
    ["metacopy", "on"],
    ["redirect_dir", "on"],
    ["ro", true],
  ],
  sys.MOUNT_ATTR_RDONLY,
);
sys.attachMount(overlay, top);

const mismatches: string[] = [];
let entries = 0;
let regular = 0;
let bytes = 0;
const bad = (path: string, what: string) => {
  if (mismatches.length < 50) mismatches.push(`${JSON.stringify(path)}: ${what}`);
};

const B = (s: string) => Buffer.from(s, "latin1");
const buf = new Uint8Array(1 << 20);
function sha256(path: string): string {
  const h = createHash("sha256");
  const fd = openSync(B(path), "r");
  try {
    for (let n; (n = readSync(fd, buf, 0, buf.byteLength, null)) > 0; ) h.update(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return h.digest("hex");
}
function xattrs(path: string): string {
  const m = sys.readXattrs(path);
  return JSON.stringify([...m].map(([k, v]) => [k, Buffer.from(v).toString("hex")]).sort());
}

// Links inside the source tree per inode: what the image's nlink must be.
const links = new Map<string, number>();
{
  const stack = [source];
  while (stack.length) {
    const d = stack.pop()!;
    for (const n of readdirSync(B(d), { encoding: "buffer" }) as Buffer[]) {
      const p = `${d}/${n.toString("latin1")}`;
      const st = lstatSync(B(p), { bigint: true });
      if (st.isDirectory()) stack.push(p);
      else if (st.nlink > 1n) links.set(`${st.dev}:${st.ino}`, (links.get(`${st.dev}:${st.ino}`) ?? 0) + 1);
    }
  }
}

function compare(rel: string, s: BigIntStats, m: BigIntStats): void {
  const src = `${source}${rel}`;
  const mnt = `${top}${rel}`;
  const show = rel || "/";
  const type = (st: BigIntStats) => Number(st.mode) & 0o170000;
  if (type(s) !== type(m)) return bad(show, `type ${type(s).toString(8)} vs ${type(m).toString(8)}`);
  if ((s.mode & 0o7777n) !== (m.mode & 0o7777n)) bad(show, `mode ${(s.mode & 0o7777n).toString(8)} vs ${(m.mode & 0o7777n).toString(8)}`);
  if (s.uid !== m.uid || s.gid !== m.gid) bad(show, `owner ${s.uid}:${s.gid} vs ${m.uid}:${m.gid}`);
  if (s.mtimeNs !== m.mtimeNs) bad(show, `mtime ${s.mtimeNs} vs ${m.mtimeNs}`);
  const xs = xattrs(src);
  const xm = xattrs(mnt);
  if (xs !== xm) bad(show, `xattrs ${xs} vs ${xm}`);
  if (s.isDirectory()) return;
  const want = s.nlink > 1n && keepLinks ? BigInt(links.get(`${s.dev}:${s.ino}`) ?? 1) : 1n;
  if (m.nlink !== want) bad(show, `nlink ${m.nlink}, expected ${want}`);
  if (s.isSymbolicLink()) {
    const ts = readlinkSync(B(src), { encoding: "buffer" });
    const tm = readlinkSync(B(mnt), { encoding: "buffer" });
    if (!ts.equals(tm)) bad(show, `symlink target ${ts.toString("latin1")} vs ${tm.toString("latin1")}`);
  } else if (s.isFile()) {
    regular++;
    bytes += Number(s.size);
    if (s.size !== m.size) bad(show, `size ${s.size} vs ${m.size}`);
    else if (sha256(src) !== sha256(mnt)) bad(show, "content differs");
  } else if (s.isCharacterDevice() || s.isBlockDevice()) {
    if (s.rdev !== m.rdev) bad(show, `rdev ${s.rdev} vs ${m.rdev}`);
  }
}

const stack = [""];
while (stack.length) {
  const rel = stack.pop()!;
  entries++;
  const s = lstatSync(B(`${source}${rel}`), { bigint: true });
  const m = lstatSync(B(`${top}${rel}`), { bigint: true });
  compare(rel, s, m);
  if (!s.isDirectory() || !m.isDirectory()) continue;
  const ns = (readdirSync(B(`${source}${rel}`), { encoding: "buffer" }) as Buffer[]).map((n) => n.toString("latin1")).sort();
  const nm = (readdirSync(B(`${top}${rel}`), { encoding: "buffer" }) as Buffer[]).map((n) => n.toString("latin1")).sort();
  const sm = new Set(nm);
  if (ns.join("\0") !== nm.join("\0")) {
    const ss = new Set(ns);
    const extra = nm.filter((n) => !ss.has(n)).slice(0, 5);
    const missing = ns.filter((n) => !sm.has(n)).slice(0, 5);
    bad(rel || "/", `entries differ: missing ${JSON.stringify(missing)}, extra ${JSON.stringify(extra)}`);
  }
  for (const n of ns) if (sm.has(n)) stack.push(`${rel}/${n}`);
}

sys.umount2(top, sys.MNT_DETACH);
sys.close(overlay);
sys.close(erofs);
rmdirSync(top);
process.stdout.write(`${JSON.stringify({ entries, regular, bytes, mismatches })}\n`);
