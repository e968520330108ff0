// `rollback`: the rollback deployment becomes the next boot; run again, the
// queued rollback is reverted (bootc-composefs.md §5.4, with §11 #5 fixed:
// any number of entries, each keeps its own osid, and an entry that is still
// being counted is never renamed — finalize-and-boot-counting.md §6.3).
//
// The new entry set is written beside the live one and exchanged with it in
// one renameat2(RENAME_EXCHANGE); a staged deployment is dropped first
// (marker, then staged entries), as bootc does.

import { parseCounter, planRollback } from "../shared/bls.ts";
import { CfsError } from "../shared/errors.ts";
import { loadHostState, removeStagedMarker } from "./deployments.ts";
import { carrySkipped, loaderConfDefault, orderForGrub, removeStaged, writeEntrySet, writeGrubCfg } from "./entries.ts";
import { migratePrefixesQuietly } from "./hostgc.ts";
import { ALGORITHM, type Host, readLoaderEfiVar, withLock } from "./sysroot.ts";

export async function rollback(host: Host, out: (line: string) => void): Promise<number> {
  return withLock(host, async () => {
    migratePrefixesQuietly(host);
    const st = loadHostState(host);
    for (const p of st.problems) process.stderr.write(`cfsboot: warning: ${p}\n`);
    if (st.booted === null) throw new CfsError(host.directory ? "--booted-cmdline" : "/proc/cmdline", "not booted into a composefs deployment (no composefs karg)");
    if (st.bootedEntry === null) throw new CfsError(`deployment ${st.booted.id}`, "the booted deployment has no boot entry");
    const menu = st.loader.menu;
    if (new Set(menu.map((e) => e.id)).size < 2) throw new CfsError("rollback", "No rollback available");
    const wasQueued = st.slots.rollbackQueued;
    if (st.loader.bootloader === "systemd") {
      // A pinned default wins over the order rollback changes (finalize-and-boot-counting.md §6.4).
      const pin = loaderConfDefault(host.esp) ?? (host.directory ? null : readLoaderEfiVar("LoaderEntryDefault"));
      if (pin !== null && !pin.startsWith("@")) out(`warning: the default boot entry is pinned to "${pin}"; the rollback changes the menu order only`);
    }

    if (st.bootedEntry.source === "grub-menu") {
      // GRUB + UKIs: user.cfg order is the menu order; GRUB boots the first.
      const menus = menu.filter((e) => e.source === "grub-menu");
      const def = menus[st.loader.defaultIndex ?? 0] ?? menus[0]!;
      const target = wasQueued ? st.bootedEntry : menus.find((e) => e.id !== st.booted!.id)!;
      const second = wasQueued ? def : st.bootedEntry;
      const rest = menus.filter((e) => e !== target && e !== second);
      if (st.marker !== null) removeStagedMarker(host);
      removeStaged(host);
      writeGrubCfg(`${host.grubDir}/user.cfg`, [target, second, ...rest].map((e) => e.menu!));
    } else {
      const keep = new Set(menu.filter((e) => parseCounter(e.fileName) !== null && parseCounter(e.fileName)!.left > 0).map((e) => e.fileName));
      const plan = planRollback({ sorted: menu.filter((e) => e.source === "bls"), defaultIndex: st.loader.defaultIndex, bootedId: st.booted.id, algorithm: ALGORITHM, keepFileNames: keep });
      if (st.marker !== null) removeStagedMarker(host);
      removeStaged(host);
      writeEntrySet(host.entriesDir, orderForGrub(plan.entries, st.loader.bootloader), carrySkipped(st.loader));
    }
    if (wasQueued) out("notice: Reverting queued rollback state");
    out(wasQueued ? "Next boot: current deployment" : "Next boot: rollback deployment");
    return 0;
  });
}
