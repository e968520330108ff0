// `cfsboot mount.composefs [-o OPTIONS] IMAGE TARGETDIR`: C composefs'
// mount helper (also what runs when the executable is invoked through a
// link named `mount.composefs`, e.g. by `mount -t composefs IMAGE DIR -o …`
// with the link in /sbin).
//
// Options (comma-separated, as mount(8) passes them):
//   basedir=PATH[:PATH…]  object directories (mkcomposefs --digest-store)
//   digest=HEX            the image's kernel-measured fs-verity digest must be
//                         this (implies verity)
//   verity                overlayfs verity=require: every file's fs-verity
//                         digest is checked against the image on open
//   ro / rw               read-only (default without upperdir) / writable
//   upperdir=DIR,workdir=DIR  a writable overlay layer over the image
// mount(8)'s helper flags -n -s -v -f are accepted.
//
// The EROFS is mounted from the open image file (file-backed, or a loop
// device on kernels that cannot), overlayfs stacks it over the basedirs as
// data-only layers (metacopy=on, redirect_dir=on) and the result is attached
// at TARGETDIR. Any failure leaves nothing mounted.

import { fstatSync } from "node:fs";
import type { Argv } from "yargs";

import { toHex } from "../../shared/bytes.ts";
import { CfsError, describeError } from "../../shared/errors.ts";
import * as sys from "../../shared/sys.ts";
import { defineCommand } from "../cli.ts";

interface Args {
  image: string;
  target: string;
  o?: string[];
  f?: boolean;
}

export interface MountOptions {
  basedirs: string[];
  digest: string | null;
  verity: boolean;
  readOnly: boolean;
  upperdir: string | null;
  workdir: string | null;
}

/** Parse `-o` values (each comma-separated). */
export function parseMountOptions(values: readonly string[]): MountOptions {
  const o: MountOptions = { basedirs: [], digest: null, verity: false, readOnly: true, upperdir: null, workdir: null };
  let roGiven: boolean | null = null;
  for (const opt of values.flatMap((v) => v.split(",")).filter((s) => s !== "")) {
    const eq = opt.indexOf("=");
    const key = eq < 0 ? opt : opt.slice(0, eq);
    const value = eq < 0 ? null : opt.slice(eq + 1);
    const need = (): string => {
      if (value === null || value === "") throw new CfsError(`-o ${key}`, "needs a value");
      return value;
    };
    switch (key) {
      case "basedir":
        o.basedirs.push(...need().split(":").filter((p) => p !== ""));
        break;
      case "digest": {
        const d = need().toLowerCase();
        if (!/^([0-9a-f]{64}|[0-9a-f]{128})$/.test(d)) throw new CfsError(`-o digest=${value}`, "not a sha256 or sha512 fs-verity digest (64 or 128 hex digits)");
        o.digest = d;
        o.verity = true;
        break;
      }
      case "verity":
        o.verity = true;
        break;
      case "ro":
        roGiven = true;
        break;
      case "rw":
        roGiven = false;
        break;
      case "upperdir":
        o.upperdir = need();
        break;
      case "workdir":
        o.workdir = need();
        break;
      default:
        throw new CfsError(`-o ${opt}`, "unknown option (expected basedir=, digest=, verity, ro, rw, upperdir=, workdir=)");
    }
  }
  if ((o.upperdir === null) !== (o.workdir === null)) throw new CfsError(o.upperdir === null ? "-o workdir" : "-o upperdir", "upperdir= and workdir= go together");
  o.readOnly = roGiven ?? o.upperdir === null;
  if (!o.readOnly && o.upperdir === null) throw new CfsError("-o rw", "a writable mount needs upperdir= and workdir=");
  return o;
}

/** A detached EROFS mount of the open image file (file-backed, or through a loop device). */
function mountErofs(fd: number, image: string): number {
  try {
    return sys.mountFs("erofs", [["source", `/proc/self/fd/${fd}`], ["ro", true]], sys.MOUNT_ATTR_RDONLY);
  } catch (e) {
    if (!sys.isErrno(e, "ENOTBLK")) throw new CfsError(image, `cannot mount the EROFS image: ${describeError(e)}`);
  }
  const loop = sys.loopAttach(fd, { readOnly: true });
  try {
    return sys.mountFs("erofs", [["source", loop.path], ["ro", true]], sys.MOUNT_ATTR_RDONLY);
  } catch (e) {
    throw new CfsError(image, `cannot mount the EROFS image (${loop.path}): ${describeError(e)}`);
  } finally {
    sys.close(loop.fd); // autoclear: the device goes with the mount
  }
}

export function mountComposefs(image: string, target: string, o: MountOptions): void {
  const fds: number[] = [];
  try {
    const fd = sys.open(image, sys.O_RDONLY | sys.O_CLOEXEC);
    fds.push(fd);
    const st = fstatSync(fd);
    if (!st.isFile()) throw new CfsError(image, "not a regular file");
    if (o.digest !== null) {
      let m: sys.VerityMeasurement | null = null;
      try {
        m = sys.measureVerity(fd, image);
      } catch (e) {
        if (!sys.isVerityUnsupported(e)) throw e;
      }
      if (m === null) throw new CfsError(image, "digest= given, but the image has no fs-verity (its digest cannot be checked)");
      if (toHex(m.digest) !== o.digest) throw new CfsError(image, `fs-verity digest ${toHex(m.digest)} is not the expected ${o.digest}`);
    }
    const erofs = mountErofs(fd, image);
    fds.push(erofs);
    const data: number[] = [];
    for (const b of o.basedirs) {
      const bfd = sys.open(b, sys.O_PATH | sys.O_DIRECTORY | sys.O_CLOEXEC);
      fds.push(bfd);
      data.push(bfd);
    }
    const common: sys.FsOption[] = [
      ["metacopy", "on"],
      ["redirect_dir", "on"],
      ...(o.verity ? ([["verity", "require"]] as sys.FsOption[]) : []),
      ...(o.upperdir !== null ? ([["upperdir", o.upperdir], ["workdir", o.workdir!]] as sys.FsOption[]) : []),
      ...(o.readOnly ? ([["ro", true]] as sys.FsOption[]) : []),
    ];
    let ovl: number;
    try {
      ovl = sys.mountFs("overlay", [["source", "composefs"], ["lowerdir+", { fd: erofs }], ...data.map((d): sys.FsOption => ["datadir+", { fd: d }]), ...common], o.readOnly ? sys.MOUNT_ATTR_RDONLY : 0);
    } catch (e) {
      if (!(e instanceof sys.SysError)) throw e;
      // Kernels without lowerdir+/datadir+: the string form, data-only layers after "::".
      const lower = [`/proc/self/fd/${erofs}`, ...data.map((d) => `/proc/self/fd/${d}`)].join("::");
      try {
        ovl = sys.mountFs("overlay", [["source", "composefs"], ["lowerdir", lower], ...common], o.readOnly ? sys.MOUNT_ATTR_RDONLY : 0);
      } catch (e2) {
        throw new CfsError(target, `cannot mount the overlay: ${describeError(e)}`, { cause: e2 });
      }
    }
    fds.push(ovl);
    sys.attachMount(ovl, target);
  } finally {
    for (const f of fds.reverse()) {
      try {
        sys.close(f);
      } catch {}
    }
  }
}

export const mountComposefsCommand = defineCommand<Args>({
  command: "mount.composefs <image> <target>",
  describe: "mount a composefs image over its object directories (C mount.composefs compatible; the mount -t composefs helper)",
  builder: (y: Argv) =>
    y
      .positional("image", { type: "string", describe: "composefs (EROFS) image file" })
      .positional("target", { type: "string", describe: "directory to mount on" })
      .option("o", { type: "string", array: true, nargs: 1, describe: "mount options: basedir=PATH[:PATH…], digest=HEX, verity, ro, rw, upperdir=DIR, workdir=DIR" })
      .option("n", { type: "boolean", describe: "mount(8) helper flag: no mtab (ignored)" })
      .option("s", { type: "boolean", describe: "mount(8) helper flag: sloppy options (ignored)" })
      .option("v", { type: "boolean", describe: "mount(8) helper flag: verbose (ignored)" })
      .option("f", { type: "boolean", describe: "mount(8) helper flag: fake, check the options and mount nothing" }) as unknown as Argv<Args>,
  handler: (args) => {
    const image = String(args.image);
    const target = String(args.target);
    const opts = parseMountOptions(args.o ?? []);
    const tfd = sys.open(target, sys.O_PATH | sys.O_CLOEXEC);
    let isDir: boolean;
    try {
      isDir = fstatSync(tfd).isDirectory();
    } finally {
      sys.close(tfd);
    }
    if (!isDir) throw new CfsError(target, "mount point is not a directory");
    if (args.f) return;
    mountComposefs(image, target, opts);
  },
});
