// The VM test harness: everything a vm/*.test.ts needs, in one import.
//
//   const rootfs = await ensureRootfs(TRIXIE);          // cached debootstrap tree
//   const initrd = await ensureInitrd(rootfs, {...});   // cached dracut initrd
//   const disk = buildGuestDisk({ rootfs, initrd, path, entry: { id: "x", tries: 3 } });
//   const run = await runVm({ name: "boot1", runDir, disk });
//   const report = expectReport(run);                   // or throws with the console tail
//   espList(disk, "/loader/entries")                    // inspect the ESP after the boot
//
// See vm/README.md.
export * from "./lib/cfs.ts";
export * from "./lib/demo.ts";
export * from "./lib/disk.ts";
export * from "./lib/guest.ts";
export * from "./lib/initrd.ts";
export * from "./lib/osimage.ts";
export * from "./lib/provision.ts";
export * from "./lib/qemu.ts";
export * from "./lib/report.ts";
export * from "./lib/rootfs.ts";
export { cacheDir, projectDir, scratchDir, vmDir } from "./lib/util.ts";
