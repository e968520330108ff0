// Mounting a repository image (composefs-rs `Repository::mount_at`).
//
// The image is opened and MEASURED (Repository.openImageFd: kernel fs-verity,
// or a userspace digest in an insecure repository) and the kernel mounts
// exactly that open file (`/proc/self/fd/N` as the EROFS source), read-only.
// overlayfs then stacks it over `objects/` as a data-only lower layer:
//
//   overlay  lowerdir+=<erofs mount>  datadir+=<objects/>  metacopy=on  redirect_dir=on  [verity=require]  ro
//
// (the `lowerdir=<erofs>::<objects>` string form on kernels without
// lowerdir+/datadir+). `verity=require` makes overlayfs check every file's
// fs-verity digest against the image's metacopy xattr on open; it is set
// whenever the repository is secure. An insecure repository mounts without it.

import { CfsError } from "../shared/errors.ts";
import * as sys from "../shared/sys.ts";
import type { Repository } from "./repo.ts";

export interface MountResult {
  /** The image's hex id. */
  hex: string;
  /** overlayfs enforces fs-verity on every file (verity=require). */
  verity: boolean;
}

/** A detached read-only composefs mount of image `name` (hex or refs/NAME): an fd for attachMount/move_mount. */
export function mountImageDetached(repo: Repository, name: string): { fd: number } & MountResult {
  const img = repo.openImageFd(name);
  let erofs = -1;
  let objects = -1;
  try {
    try {
      erofs = sys.mountFs("erofs", [["source", `/proc/self/fd/${img.fd}`], ["ro", true]], sys.MOUNT_ATTR_RDONLY);
    } catch (e) {
      throw new CfsError(`images/${img.hex}`, `cannot mount the EROFS image: ${(e as CfsError).what ?? String(e)}`);
    }
    const verity = repo.secure;
    const common: sys.FsOption[] = [
      ["metacopy", "on"],
      ["redirect_dir", "on"],
      ...(verity ? ([["verity", "require"]] as sys.FsOption[]) : []),
      ["ro", true],
    ];
    let fd: number;
    try {
      objects = sys.open(`${repo.path}/objects`, sys.O_PATH | sys.O_DIRECTORY);
      fd = sys.mountFs("overlay", [["source", "composefs"], ["lowerdir+", { fd: erofs }], ["datadir+", { fd: objects }], ...common], sys.MOUNT_ATTR_RDONLY);
    } catch (e) {
      if (!(e instanceof sys.SysError)) throw e;
      // Older kernels: the string form, the objects directory as a data-only layer after "::".
      fd = sys.mountFs("overlay", [["source", "composefs"], ["lowerdir", `/proc/self/fd/${erofs}::${repo.path}/objects`], ...common], sys.MOUNT_ATTR_RDONLY);
    }
    return { fd, hex: img.hex, verity };
  } finally {
    if (objects >= 0) sys.close(objects);
    if (erofs >= 0) sys.close(erofs);
    sys.close(img.fd);
  }
}

/** Mount image `name` read-only at `mountpoint` (a directory). */
export function mountImage(repo: Repository, name: string, mountpoint: string): MountResult {
  const m = mountImageDetached(repo, name);
  try {
    sys.attachMount(m.fd, mountpoint);
  } finally {
    sys.close(m.fd);
  }
  return { hex: m.hex, verity: m.verity };
}
