// shared/sys.ts against the running kernel: every wrapper does the real
// syscall here, and where this kernel lacks a feature (fs-verity) the error
// is the clean, recognisable one callers degrade on.

import { spawnSync } from "node:child_process";
import {
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { fsverityDigest } from "../../shared/fsverity.ts";
import * as sys from "../../shared/sys.ts";
import { canRun, hasTool, isRoot, projectRoot } from "../helpers/env.ts";

let dir: string;
beforeAll(() => {
  // On the real filesystem (not tmpfs): xattr and O_TMPFILE behaviour is the disk's.
  dir = mkdtempSync(join(tmpdir(), "cfsboot-sys-"));
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function errorOf(f: () => unknown): sys.SysError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(sys.SysError);
    return e as sys.SysError;
  }
  throw new Error("expected a SysError");
}

describe("errors", () => {
  test("a failed call names the path, the call and the errno", () => {
    const e = errorOf(() => sys.lgetxattr(join(dir, "missing"), "user.x"));
    expect(e.message).toBe(`${join(dir, "missing")}: lgetxattr user.x failed: No such file or directory (ENOENT)`);
    expect(e.code).toBe("ENOENT");
    expect(e.errno).toBe(2);
    expect(e.input).toBe(join(dir, "missing"));
  });

  test("non-UTF-8 path bytes are shown escaped", () => {
    const e = errorOf(() => sys.statx(`${dir}/bad\xff\n`));
    expect(e.message).toBe(`${dir}/bad\\xff\\x0a: statx failed: No such file or directory (ENOENT)`);
  });

  test("Node fs errors convert to the same form", () => {
    let err: unknown;
    try {
      readFileSync(join(dir, "nope"));
    } catch (e) {
      err = e;
    }
    expect(sys.fromNodeError(join(dir, "nope"), "open", err).message).toBe(
      `${join(dir, "nope")}: open failed: No such file or directory (ENOENT)`,
    );
  });
});

describe("xattrs (no symlink following)", () => {
  test("set, list, get, remove on a file; binary and empty values", () => {
    const f = join(dir, "x1");
    writeFileSync(f, "data");
    const bin = new Uint8Array([0, 1, 2, 255, 0x3d, 10]);
    sys.lsetxattr(f, "user.bin", bin);
    sys.lsetxattr(f, "user.empty", new Uint8Array());
    sys.lsetxattr(f, "user.a=b c", new Uint8Array([0x41]));
    expect(sys.llistxattr(f).sort()).toEqual(["user.a=b c", "user.bin", "user.empty"]);
    expect([...sys.lgetxattr(f, "user.bin")]).toEqual([...bin]);
    expect(sys.lgetxattr(f, "user.empty").byteLength).toBe(0);
    const all = sys.readXattrs(f);
    expect(all.size).toBe(3);
    expect([...all.get("user.a=b c")!]).toEqual([0x41]);
    expect([...sys.readXattrs(f, (n) => n.endsWith("bin")).keys()]).toEqual(["user.bin"]);
    // getfattr (attr package) sees what we set.
    if (hasTool("getfattr")) {
      const r = spawnSync("getfattr", ["--absolute-names", "-e", "hex", "-n", "user.bin", f], { encoding: "utf8" });
      expect(r.stdout).toContain("user.bin=0x000102ff3d0a");
    }
    sys.lremovexattr(f, "user.bin");
    expect(errorOf(() => sys.lgetxattr(f, "user.bin")).code).toBe("ENODATA");
    expect(errorOf(() => sys.lremovexattr(f, "user.bin")).code).toBe("ENODATA");
    expect(errorOf(() => sys.lsetxattr(f, "user.empty", new Uint8Array([1]), sys.XATTR_CREATE)).code).toBe("EEXIST");
    expect(errorOf(() => sys.lsetxattr(f, "user.new", new Uint8Array([1]), sys.XATTR_REPLACE)).code).toBe("ENODATA");
  });

  test("a symlink's own xattrs, not its target's", () => {
    if (!canRun(isRoot, "trusted.* xattrs on a symlink need root")) return;
    const target = join(dir, "x2");
    const link = join(dir, "x2.link");
    writeFileSync(target, "t");
    symlinkSync("x2", link);
    sys.lsetxattr(target, "user.t", new Uint8Array([1]));
    sys.lsetxattr(link, "trusted.l", new Uint8Array([2]));
    expect(sys.llistxattr(link)).toEqual(["trusted.l"]);
    expect(sys.llistxattr(target)).toEqual(["user.t"]);
    expect([...sys.readXattrs(link).keys()]).toEqual(["trusted.l"]);
    // The kernel refuses user.* on symlinks: the error says so.
    expect(errorOf(() => sys.lsetxattr(link, "user.x", new Uint8Array([1]))).code).toBe("EPERM");
  });

  test("several namespaces and a 64 KiB value", () => {
    if (!canRun(isRoot, "trusted.* and security.* xattrs need root")) return;
    const f = join(dir, "x3");
    writeFileSync(f, "");
    const big = new Uint8Array(4000).map((_, i) => i & 0xff);
    sys.lsetxattr(f, "trusted.overlay.redirect", new TextEncoder().encode("/ab/cd"));
    sys.lsetxattr(f, "security.test", new Uint8Array([7]));
    sys.lsetxattr(f, "user.big", big);
    const all = sys.readXattrs(f);
    expect([...all.keys()].sort()).toEqual(["security.test", "trusted.overlay.redirect", "user.big"]);
    expect(Buffer.from(all.get("user.big")!).equals(Buffer.from(big))).toBe(true);
  });
});

describe("fs-verity ioctls", () => {
  test("ioctl numbers follow the _IOC encoding of this architecture", () => {
    if (process.arch === "x64" || process.arch === "arm64" || process.arch === "riscv64" || process.arch === "s390x") {
      expect(sys.FS_IOC_ENABLE_VERITY).toBe(0x40806685);
      expect(sys.FS_IOC_MEASURE_VERITY).toBe(0xc0046686);
      expect(sys.FICLONE).toBe(0x40049409);
    }
    // _IOWR is READ|WRITE in both layouts; the alternative layout differs only for _IOW.
    expect(sys.iowr(0x66, 134, 4)).toBe(0xc0046686);
  });

  test("enable + measure: the kernel's digest, or a clear 'not supported' error", () => {
    const f = join(dir, "v1");
    const data = new Uint8Array(10000).map((_, i) => (i * 31 + 7) % 251);
    writeFileSync(f, data);
    const fd = sys.open(f, sys.O_RDONLY);
    try {
      let supported = true;
      try {
        sys.enableVerity(fd, "sha256", f);
      } catch (e) {
        expect(sys.isVerityUnsupported(e)).toBe(true);
        expect((e as sys.SysError).message).toMatch(
          new RegExp(`^${f}: ioctl\\(FS_IOC_ENABLE_VERITY\\) failed: .* \\((EOPNOTSUPP|ENOTTY)\\)$`),
        );
        supported = false;
      }
      if (supported) {
        const m = sys.measureVerity(fd, f);
        expect(m?.algorithm).toBe("sha256");
        expect(Buffer.from(m!.digest).toString("hex")).toBe(Buffer.from(fsverityDigest(data, "sha256")).toString("hex"));
        expect(sys.statx(f).verity).toBe(true);
        expect(errorOf(() => sys.enableVerity(fd, "sha256")).code).toBe("EEXIST");
      } else {
        const e = errorOf(() => sys.measureVerity(fd, f));
        expect(sys.isVerityUnsupported(e)).toBe(true);
        expect(sys.statx(f).verity).toBe(false);
      }
    } finally {
      sys.close(fd);
    }
  });

  test("a writable fd is refused (EBADF/ETXTBSY/EOPNOTSUPP, never success)", () => {
    const f = join(dir, "v2");
    writeFileSync(f, "abc");
    const fd = sys.open(f, sys.O_RDWR);
    try {
      const e = errorOf(() => sys.enableVerity(fd));
      expect(["EBADF", "ETXTBSY", "EOPNOTSUPP", "ENOTTY", "EACCES"]).toContain(e.code);
    } finally {
      sys.close(fd);
    }
  });
});

describe("files", () => {
  test("O_TMPFILE is invisible until linked; linking over a name is EEXIST", () => {
    const d = join(dir, "tmpf");
    mkdirSync(d);
    const dfd = sys.open(d, sys.O_RDONLY | sys.O_DIRECTORY);
    try {
      const fd = sys.openTmpfile(d, 0o640);
      writeSync(fd, "temp content");
      expect(readdirSync(d)).toEqual([]);
      sys.linkTmpfile(fd, dfd, "named");
      sys.close(fd);
      expect(readdirSync(d)).toEqual(["named"]);
      expect(readFileSync(join(d, "named"), "utf8")).toBe("temp content");
      expect(statSync(join(d, "named")).mode & 0o777).toBe(0o640 & ~process.umask());
      const fd2 = sys.openTmpfile(d);
      expect(errorOf(() => sys.linkTmpfile(fd2, dfd, "named")).code).toBe("EEXIST");
      sys.close(fd2);
      expect(readdirSync(d)).toEqual(["named"]);
    } finally {
      sys.close(dfd);
    }
  });

  test("openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS refuses escapes and symlinks", () => {
    const root = join(dir, "o2");
    mkdirSync(join(root, "sub"), { recursive: true });
    writeFileSync(join(root, "sub", "ok"), "fine");
    writeFileSync(join(dir, "outside"), "secret");
    symlinkSync("../outside", join(root, "esc"));
    symlinkSync("ok", join(root, "sub", "inner"));
    const rfd = sys.open(root, sys.O_RDONLY | sys.O_DIRECTORY | sys.O_PATH);
    try {
      const fd = sys.openat2(rfd, "sub/ok", sys.O_RDONLY);
      expect(readFileSync(fd, "utf8")).toBe("fine");
      sys.close(fd);
      expect(errorOf(() => sys.openat2(rfd, "../outside", sys.O_RDONLY)).code).toBe("EXDEV");
      expect(errorOf(() => sys.openat2(rfd, `${dir}/outside`, sys.O_RDONLY)).code).toBe("EXDEV");
      expect(errorOf(() => sys.openat2(rfd, "esc", sys.O_RDONLY)).code).toBe("ELOOP");
      expect(errorOf(() => sys.openat2(rfd, "sub/inner", sys.O_RDONLY)).code).toBe("ELOOP");
      // Only beneath: a symlink staying inside is allowed.
      const fd2 = sys.openat2(rfd, "sub/inner", sys.O_RDONLY, { resolve: sys.RESOLVE_BENEATH });
      sys.close(fd2);
      expect(errorOf(() => sys.openat2(rfd, "esc", sys.O_RDONLY, { resolve: sys.RESOLVE_BENEATH })).code).toBe("EXDEV");
    } finally {
      sys.close(rfd);
    }
  });

  test("renameat2: RENAME_EXCHANGE swaps, RENAME_NOREPLACE refuses to clobber", () => {
    const a = join(dir, "ra");
    const b = join(dir, "rb");
    writeFileSync(a, "A");
    mkdirSync(b);
    writeFileSync(join(b, "inside"), "B");
    sys.renameat2(sys.AT_FDCWD, a, sys.AT_FDCWD, b, sys.RENAME_EXCHANGE);
    expect(readFileSync(join(a, "inside"), "utf8")).toBe("B");
    expect(readFileSync(b, "utf8")).toBe("A");
    expect(errorOf(() => sys.renameat2(sys.AT_FDCWD, b, sys.AT_FDCWD, a, sys.RENAME_NOREPLACE)).code).toBe("EEXIST");
    expect(readFileSync(b, "utf8")).toBe("A");
    sys.renameat2(sys.AT_FDCWD, b, sys.AT_FDCWD, join(dir, "rc"), sys.RENAME_NOREPLACE);
    expect(existsSync(b)).toBe(false);
  });

  test("mknod / mkfifo, statx and utimensat with nanoseconds", () => {
    const fifo = join(dir, "fifo");
    sys.mkfifo(fifo, 0o600);
    expect(lstatSync(fifo).isFIFO()).toBe(true);
    expect(lstatSync(fifo).mode & 0o777).toBe(0o600 & ~process.umask());
    if (canRun(isRoot, "mknod of a device needs root")) {
      const dev = join(dir, "chr");
      sys.mknod(dev, sys.S_IFCHR | 0o644, sys.makedev(4, 300));
      const st = sys.statx(dev);
      expect(st.mode & 0o170000).toBe(sys.S_IFCHR);
      expect([st.rdevMajor, st.rdevMinor]).toEqual([4, 300]);
      expect(BigInt(lstatSync(dev).rdev)).toBe(sys.makedev(4, 300));
      expect([sys.major(sys.makedev(4095, 1 << 20)), sys.minor(sys.makedev(4095, 1 << 20))]).toEqual([4095, 1 << 20]);
    }
    const f = join(dir, "times");
    writeFileSync(f, "t");
    symlinkSync("times", join(dir, "times.link"));
    sys.utimensat(f, null, [1234567890, 123456789]);
    sys.utimensat(join(dir, "times.link"), [5, 6], [42, 999999999]);
    const st = sys.statx(f);
    expect([st.mtimeSec, st.mtimeNsec]).toEqual([1234567890, 123456789]);
    expect(lstatSync(f, { bigint: true }).mtimeNs).toBe(1234567890123456789n);
    const ls = sys.statx(join(dir, "times.link"));
    expect([ls.mtimeSec, ls.mtimeNsec]).toEqual([42, 999999999]);
    expect(ls.mode & 0o170000).toBe(0o120000);
    expect(Number(ls.size)).toBe(5);
    // statx follows with flags 0.
    expect(sys.statx(join(dir, "times.link"), 0).mtimeSec).toBe(1234567890);
    const n = sys.statx(f);
    expect(n.nlink).toBe(1);
    linkSync(f, join(dir, "times.hard"));
    expect(sys.statx(f).nlink).toBe(2);
    expect(sys.statx(join(dir, "times.hard")).ino).toBe(n.ino);
  });

  test("flock is exclusive between open file descriptions", () => {
    const f = join(dir, "lock");
    writeFileSync(f, "");
    const a = sys.open(f, sys.O_RDONLY);
    const b = sys.open(f, sys.O_RDONLY);
    try {
      sys.flock(a, sys.LOCK_EX | sys.LOCK_NB);
      expect(errorOf(() => sys.flock(b, sys.LOCK_SH | sys.LOCK_NB)).code).toBe("EAGAIN");
      sys.flock(a, sys.LOCK_UN);
      sys.flock(b, sys.LOCK_SH | sys.LOCK_NB);
      sys.flock(a, sys.LOCK_SH | sys.LOCK_NB);
    } finally {
      sys.close(a);
      sys.close(b);
    }
  });

  test("fsync, fdatasync, syncfs on files and directories; a bad fd is EBADF", () => {
    const f = join(dir, "sync");
    writeFileSync(f, "s");
    const fd = sys.open(f, sys.O_RDWR);
    sys.fsync(fd);
    sys.fdatasync(fd);
    sys.syncfs(fd);
    sys.close(fd);
    sys.fsyncPath(dir);
    const e = errorOf(() => sys.fsync(987654));
    expect(e.message).toBe("fd 987654: fsync failed: Bad file descriptor (EBADF)");
  });

  test("copy_file_range copies in the kernel", () => {
    const src = join(dir, "cfr-src");
    const dst = join(dir, "cfr-dst");
    const data = new Uint8Array(300000).map((_, i) => i % 253);
    writeFileSync(src, data);
    const i = sys.open(src, sys.O_RDONLY);
    const o = sys.open(dst, sys.O_WRONLY | sys.O_CREAT | sys.O_TRUNC);
    let n = 0;
    for (let r; (r = sys.copyFileRange(i, o, 1 << 20)) > 0; ) n += r;
    sys.close(i);
    sys.close(o);
    expect(n).toBe(data.byteLength);
    expect(Buffer.from(readFileSync(dst)).equals(Buffer.from(data))).toBe(true);
  });
});

// ---- mounts ---------------------------------------------------------------------------
// Detached mounts (fsmount fds) are never attached in the test process: their
// contents are reached through /proc/self/fd/N, and closing the fd unmounts.

const mountOk = () => canRun(isRoot, "mounting needs root");
const erofsOk = () =>
  canRun(readFileSync("/proc/filesystems", "utf8").includes("erofs"), "kernel has no erofs") &&
  canRun(hasTool("mkfs.erofs"), "mkfs.erofs (erofs-utils) not installed");

function makeErofs(name: string, files: Record<string, string>): string {
  const src = join(dir, `${name}.src`);
  mkdirSync(src, { recursive: true });
  for (const [p, c] of Object.entries(files)) {
    mkdirSync(join(src, p, ".."), { recursive: true });
    writeFileSync(join(src, p), c);
  }
  const img = join(dir, `${name}.erofs`);
  const r = spawnSync("mkfs.erofs", ["--quiet", img, src], { encoding: "utf8" });
  expect(r.status, r.stderr).toBe(0);
  return img;
}

describe("new mount API", () => {
  test("file-backed erofs: fsopen, fsconfig, fsmount; read through the detached mount", () => {
    if (!mountOk() || !erofsOk()) return;
    const img = makeErofs("m1", { "a/b": "hello", top: "x" });
    const m = sys.mountFs("erofs", [["source", img], ["ro", true]], sys.MOUNT_ATTR_RDONLY);
    try {
      expect(readdirSync(`/proc/self/fd/${m}`).sort()).toEqual(["a", "top"]);
      expect(readFileSync(`/proc/self/fd/${m}/a/b`, "utf8")).toBe("hello");
      expect(errorOf(() => writeFileSyncChecked(`/proc/self/fd/${m}/new`)).code).toBe("EROFS");
    } finally {
      sys.close(m);
    }
  });

  test("overlay of erofs + a data-only layer, with metacopy and redirect_dir", () => {
    if (!mountOk() || !erofsOk()) return;
    const img = makeErofs("m2", { "f": "lower" });
    const e = sys.mountFs("erofs", [["source", img], ["ro", true]], sys.MOUNT_ATTR_RDONLY);
    const data = join(dir, "m2.data");
    mkdirSync(data);
    try {
      for (const opts of [
        [["lowerdir", `/proc/self/fd/${e}::${data}`]],
        [["lowerdir+", `/proc/self/fd/${e}`], ["datadir+", data]],
        [["lowerdir+", { fd: e }], ["datadir+", data]],
      ] as sys.FsOption[][]) {
        const ov = sys.mountFs("overlay", [...opts, ["metacopy", "on"], ["redirect_dir", "on"], ["ro", true]], sys.MOUNT_ATTR_RDONLY);
        try {
          expect(readFileSync(`/proc/self/fd/${ov}/f`, "utf8")).toBe("lower");
        } finally {
          sys.close(ov);
        }
      }
    } finally {
      sys.close(e);
    }
  });

  test("fsconfig errors carry the kernel's fs-context message", () => {
    if (!mountOk()) return;
    const fd = sys.fsopen("overlay");
    try {
      const e = errorOf(() => sys.fsconfigSetString(fd, "nonsense", "x"));
      expect(e.message).toBe("nonsense=x: fsconfig failed: Invalid argument (EINVAL): e overlay: Unknown parameter 'nonsense'");
    } finally {
      sys.close(fd);
    }
    expect(errorOf(() => sys.fsopen("no-such-fs")).message).toBe("no-such-fs: fsopen failed: No such device (ENODEV)");
    expect(errorOf(() => sys.mountFs("erofs", [["source", join(dir, "absent.img")]])).code).toBe("ENOENT");
  });

  test("open_tree clone + mount_setattr read-only", () => {
    if (!mountOk()) return;
    const d = join(dir, "ot");
    mkdirSync(d);
    writeFileSync(join(d, "f"), "x");
    const t = sys.openTree(sys.AT_FDCWD, d, sys.OPEN_TREE_CLONE | sys.OPEN_TREE_CLOEXEC);
    try {
      expect(readFileSync(`/proc/self/fd/${t}/f`, "utf8")).toBe("x");
      writeFileSync(`/proc/self/fd/${t}/g`, "writable");
      sys.mountSetattr(t, "", { set: sys.MOUNT_ATTR_RDONLY });
      expect(errorOf(() => writeFileSyncChecked(`/proc/self/fd/${t}/h`)).code).toBe("EROFS");
      expect(readFileSync(join(d, "g"), "utf8")).toBe("writable");
    } finally {
      sys.close(t);
    }
  });

  test("in a private mount namespace: move_mount, mount(2) bind, umount2, loop devices", () => {
    if (!mountOk() || !erofsOk()) return;
    const img = makeErofs("m3", { "in/file": "from loop" });
    const script = join(dir, "ns.ts");
    const mnt = join(dir, "ns-mnt");
    mkdirSync(mnt);
    writeFileSync(
      script,
      `import * as sys from ${JSON.stringify(join(projectRoot, "shared/sys.ts"))};
import { readFileSync, readdirSync, mkdirSync } from "node:fs";
const out = {};
sys.unshare(sys.CLONE_NEWNS);
sys.mount(null, "/", null, sys.MS_REC | sys.MS_PRIVATE);
const m = sys.mountFs("erofs", [["source", ${JSON.stringify(img)}], ["ro", true]], sys.MOUNT_ATTR_RDONLY);
sys.attachMount(m, ${JSON.stringify(mnt)});
out.attached = readFileSync(${JSON.stringify(mnt + "/in/file")}, "utf8");
out.mountinfo = readFileSync("/proc/self/mountinfo", "utf8").split("\\n").filter((l) => l.includes(${JSON.stringify(mnt)})).length;
sys.mount(${JSON.stringify(mnt + "/in")}, ${JSON.stringify(mnt + "/in")}, null, sys.MS_BIND);
sys.umount2(${JSON.stringify(mnt + "/in")});
sys.umount2(${JSON.stringify(mnt)}, sys.MNT_DETACH);
out.afterUmount = readdirSync(${JSON.stringify(mnt)}).length;
try { sys.umount2(${JSON.stringify(mnt)}); } catch (e) { out.umountAgain = e.code; }
const f = sys.open(${JSON.stringify(img)}, sys.O_RDONLY);
const loop = sys.loopAttach(f);
sys.close(f);
out.loopPath = loop.path;
out.loopRo = readFileSync("/sys/block/" + loop.path.slice(5) + "/ro", "utf8").trim();
out.backing = readFileSync("/sys/block/" + loop.path.slice(5) + "/loop/backing_file", "utf8").trim();
out.autoclear = readFileSync("/sys/block/" + loop.path.slice(5) + "/loop/autoclear", "utf8").trim();
const lm = sys.mountFs("erofs", [["source", loop.path], ["ro", true]], sys.MOUNT_ATTR_RDONLY);
out.viaLoop = readFileSync("/proc/self/fd/" + lm + "/in/file", "utf8");
sys.close(lm);
sys.loopDetach(loop);
out.detached = (() => { try { return readFileSync("/sys/block/" + loop.path.slice(5) + "/loop/backing_file", "utf8"); } catch { return "gone"; } })();
console.log(JSON.stringify(out));
`,
    );
    const r = spawnSync(process.execPath, [script], { encoding: "utf8", timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.attached).toBe("from loop");
    expect(out.mountinfo).toBe(1);
    expect(out.afterUmount).toBe(0);
    expect(out.umountAgain).toBe("EINVAL");
    expect(out.loopPath).toMatch(/^\/dev\/loop\d+$/);
    expect(out.loopRo).toBe("1");
    expect(out.backing).toBe(img);
    expect(out.autoclear).toBe("1");
    expect(out.viaLoop).toBe("from loop");
    expect(out.detached).toBe("gone");
    // Nothing leaked into this namespace.
    expect(readFileSync("/proc/self/mountinfo", "utf8")).not.toContain(mnt);
  });
});

function writeFileSyncChecked(path: string): void {
  try {
    writeFileSync(path, "x");
  } catch (e) {
    throw sys.fromNodeError(path, "open", e);
  }
}
