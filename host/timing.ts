// CFSBOOT_TIMING=1: phase timings on stderr, for profiling a command.
//
// Each mark prints the wall time since the previous one, the CPU time of the
// calling thread and of the whole process (workers included), the minor page
// faults (fresh memory is expensive: ~20 µs of CPU per 4 KiB page on the
// development VM) and the resident set size.

import { readdirSync, readFileSync } from "node:fs";

/** CPU time of the calling thread in ms (utime + stime of /proc/thread-self/stat), or NaN. */
function threadCpuMs(): number {
  try {
    const f = readFileSync("/proc/thread-self/stat", "latin1");
    const fields = f.slice(f.lastIndexOf(")") + 2).split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return NaN;
  }
}

/** A function that prints one line per phase when CFSBOOT_TIMING is set, else does nothing. */
export function phaseTimer(prefix = "timing"): (phase: string) => void {
  if (!process.env.CFSBOOT_TIMING) return () => {};
  let last = performance.now();
  let lastThread = threadCpuMs();
  let lastProc = process.cpuUsage();
  let lastFaults = process.resourceUsage().minorPageFault;
  return (phase) => {
    const now = performance.now();
    const thread = threadCpuMs();
    const proc = process.cpuUsage(lastProc);
    const faults = process.resourceUsage().minorPageFault;
    const rss = process.memoryUsage.rss() / 2 ** 20;
    process.stderr.write(
      `${prefix}: ${phase} ${(now - last).toFixed(0)} ms (cpu: main thread ${(thread - lastThread).toFixed(0)} ms, ` +
        `process ${((proc.user + proc.system) / 1000).toFixed(0)} ms; ${faults - lastFaults} page faults; rss ${rss.toFixed(0)} MiB)\n`,
    );
    last = performance.now();
    lastThread = threadCpuMs();
    lastProc = process.cpuUsage();
    lastFaults = process.resourceUsage().minorPageFault;
  };
}

/** CPU time (ms) of every thread of this process, by thread name, largest first (CFSBOOT_TIMING only). */
export function threadCpuReport(): string {
  const byName = new Map<string, number>();
  let tids: string[] = [];
  try {
    tids = readdirSync("/proc/self/task");
  } catch {
    return "";
  }
  for (const tid of tids) {
    try {
      const f = readFileSync(`/proc/self/task/${tid}/stat`, "latin1");
      const name = f.slice(f.indexOf("(") + 1, f.lastIndexOf(")"));
      const fields = f.slice(f.lastIndexOf(")") + 2).split(" ");
      const ms = ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
      byName.set(name, (byName.get(name) ?? 0) + ms);
    } catch {}
  }
  return [...byName].sort((a, b) => b[1] - a[1]).map(([n, ms]) => `${n} ${ms.toFixed(0)}`).join(", ");
}
