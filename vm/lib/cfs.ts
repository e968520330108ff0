// What a booted cfsboot guest reports, and how the host reads it: the report
// commands of a composefs boot (status, which image is /, verity of meta.json
// and of the booted image, /etc and /var through the state directory, the
// agent's log) and typed accessors over the GuestReport.

import { spawnSync } from "node:child_process";
import { closeSync, fsyncSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Disk } from "./disk.ts";
import { ext4Read } from "./disk.ts";
import { PAYLOAD_PATH, payload } from "./osimage.ts";
import type { ReportCommand, GuestReport } from "./report.ts";
import { run } from "./util.ts";

/** The booted image id from `/`'s mount source (`composefs:<hex>`). */
const BOOTED_ID = `id=$(findmnt -no SOURCE /); id=\${id#composefs:}`;

/** Report commands every cfsboot boot runs (names: see CfsReport). */
export function cfsCommands(): ReportCommand[] {
  return [
    { name: "status", cmd: "cfsboot status --json" },
    { name: "booted_id", cmd: `${BOOTED_ID}; echo "$id"` },
    { name: "image_verity", cmd: `${BOOTED_ID}; fsverity measure /sysroot/composefs/meta.json "/sysroot/composefs/images/$id"` },
    { name: "version", cmd: "cat /usr/share/cfsboot-demo/version" },
    { name: "payload", cmd: `sha256sum ${PAYLOAD_PATH}` },
    { name: "etc", cmd: "cd /etc/cfsboot-demo && for f in *; do echo \"== $f\"; cat \"$f\"; done" },
    { name: "var", cmd: "cd /var/lib/cfsboot-demo && for f in *; do echo \"== $f\"; cat \"$f\"; done" },
    { name: "root_ro", cmd: "touch /usr/cfsvm-write-test" },
    { name: "agent_log", cmd: "journalctl -b -o cat --no-pager -u cfsboot-setup-root.service; dmesg | grep -a 'cfsboot' || true" },
    { name: "entries", cmd: "for f in /efi/loader/entries/*.conf; do echo \"== ${f##*/}\"; cat \"$f\"; done; ls -1 /efi/EFI/Linux/bootc 2>/dev/null; true" },
  ];
}

/** Write into /etc and /var, then read the same files back through /sysroot/state (proves where they land). */
export function stateWriteCommand(tag: string): ReportCommand {
  return {
    name: `state_write_${tag}`,
    cmd: `${BOOTED_ID}; set -e; echo "etc written in ${tag}" > /etc/cfsboot-demo/written-${tag}; mkdir -p /var/lib/cfsboot-demo; ` +
      `echo "var written in ${tag}" > /var/lib/cfsboot-demo/written-${tag}; sync; ` +
      `cat "/sysroot/state/deploy/$id/etc/cfsboot-demo/written-${tag}" /sysroot/state/os/default/var/lib/cfsboot-demo/written-${tag}`,
  };
}

export interface StatusEntry {
  image: { image: { image: string; transport: string }; version: string | null; imageDigest: string } | null;
  composefs: { verity: string; bootType: string; bootloader: string; missingVerityAllowed: boolean } | null;
  downloadOnly: boolean;
}

export interface HostStatus {
  apiVersion: string;
  kind: string;
  spec: { bootOrder: string; image: { image: string } | null };
  status: { staged: StatusEntry | null; booted: StatusEntry | null; rollback: StatusEntry | null; rollbackQueued: boolean; otherDeployments: StatusEntry[] };
}

/** Typed view of a cfsboot boot's report. */
export class CfsReport {
  constructor(readonly r: GuestReport) {}

  /** `cfsboot status --json` (the named hook; default the standard one). */
  status(name = "status"): HostStatus {
    const h = this.r.hook(name);
    if (h.rc !== 0) throw new Error(`cfsboot status (${name}) failed: exit ${h.rc}: ${h.err.trim()}`);
    return JSON.parse(h.text) as HostStatus;
  }

  /** The image id / is mounted from (`composefs:<hex>`). */
  get bootedId(): string {
    const src = this.r.root.source;
    const m = /^composefs:([0-9a-f]+)$/.exec(src);
    if (!m?.[1]) throw new Error(`/ is not a composefs mount: source ${src} (${this.r.root.fstype})`);
    return m[1];
  }

  get version(): string {
    return this.r.hook("version").text;
  }

  /** fs-verity digests `fsverity measure` printed for meta.json and the booted image (path → sha512:hex, or null). */
  get imageVerity(): { meta: string | null; image: string | null; rc: number; err: string } {
    const h = this.r.hook("image_verity");
    const out: { meta: string | null; image: string | null; rc: number; err: string } = { meta: null, image: null, rc: h.rc, err: h.err };
    for (const line of h.text.split("\n")) {
      const [d, p] = line.split(" ");
      if (!d || !p) continue;
      if (p.endsWith("/meta.json")) out.meta = d;
      else if (p.includes("/images/")) out.image = d;
    }
    return out;
  }

  /** `== name` sections of the etc/var hooks. */
  files(name: "etc" | "var" | string): Record<string, string> {
    const out: Record<string, string> = {};
    let cur: string | null = null;
    for (const line of this.r.hook(name).text.split("\n")) {
      const m = /^== (.+)$/.exec(line);
      if (m?.[1]) {
        cur = m[1];
        out[cur] = "";
      } else if (cur !== null) out[cur] += `${line}\n`;
    }
    return out;
  }
}

/** The sha512 fs-verity digest (hex) of the payload file, computed on the host (its object name in the repository). */
export function payloadObjectDigest(): string {
  const d = mkdtempSync(join(tmpdir(), "cfsvm-payload-"));
  try {
    writeFileSync(join(d, "p"), payload());
    const r = spawnSync("fsverity", ["digest", "--hash-alg=sha512", "--compact", join(d, "p")]);
    const hex = r.stdout.toString().trim();
    if (r.status !== 0 || !/^[0-9a-f]{128}$/.test(hex)) throw new Error(`fsverity digest: ${r.stderr.toString()}`);
    return hex;
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
}

export function objectPath(hex: string): string {
  return `/composefs/objects/${hex.slice(0, 2)}/${hex.slice(2)}`;
}

// ---------------------------------------------------------------------------
// Tampering with a powered-off disk, in place (the file keeps its inode, its
// fs-verity flag and Merkle tree; only the data block changes): debugfs finds
// the physical block, the byte is flipped at that offset of the disk image.

/** Resolve a symlink chain in the ext4 root with debugfs (absolute or relative targets). */
export function ext4Resolve(disk: Disk, path: string): string {
  let p = path;
  for (let i = 0; i < 8; i++) {
    const st = debugfsOut(disk, `stat "${p}"`);
    if (!/Type: symlink/.test(st)) return p;
    const m = /Fast link dest: "(.*)"/.exec(st);
    let target = m?.[1];
    if (target === undefined) target = ext4Read(disk, p).toString();
    p = target.startsWith("/") ? target : join(p, "..", target);
  }
  throw new Error(`${path}: too many symlinks`);
}

function debugfsOut(disk: Disk, cmd: string): string {
  const r = run(["debugfs", "-R", cmd, `${disk.path}?offset=${disk.rootOffset}`]);
  return r.stdout.toString();
}

export interface Flip {
  path: string;
  fileOffset: number;
  diskOffset: number;
  before: number;
  after: number;
}

/** Flip (xor 0xff) the byte at `fileOffset` of a file in the ext4 root, in place. */
export function flipByte(disk: Disk, path: string, fileOffset: number): Flip {
  const real = ext4Resolve(disk, path);
  const lblk = Math.floor(fileOffset / 4096);
  const out = debugfsOut(disk, `bmap "${real}" ${lblk}`).trim();
  const pblk = Number(out.split(/\s+/).pop());
  if (!Number.isInteger(pblk) || pblk <= 0) throw new Error(`debugfs bmap ${real} ${lblk}: ${out}`);
  const blockSize = Number(/Block size:\s+(\d+)/.exec(debugfsOut(disk, "stats"))?.[1] ?? "4096");
  const diskOffset = disk.rootOffset + pblk * blockSize + (fileOffset % blockSize);
  const fd = openSync(disk.path, "r+");
  try {
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, diskOffset);
    const before = b[0] ?? 0;
    b[0] = before ^ 0xff;
    writeSync(fd, b, 0, 1, diskOffset);
    fsyncSync(fd);
    return { path: real, fileOffset, diskOffset, before, after: b[0] ?? 0 };
  } finally {
    closeSync(fd);
  }
}

/** Undo a flip. */
export function unflip(disk: Disk, f: Flip): void {
  const fd = openSync(disk.path, "r+");
  try {
    writeSync(fd, Buffer.from([f.before]), 0, 1, f.diskOffset);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
