// The initramfs agent's entry point: `cfsboot setup-root`.
//
// Kept free of host/ imports and of the CLI parser: this runs on every boot,
// before the root is mounted, and its start-up time is part of the boot.
//
//   cfsboot setup-root [--cmdline FILE] [--sysroot DIR] [--root DIR] [--config FILE]
//
//   --cmdline FILE   kernel command line (default /proc/cmdline)
//   --sysroot DIR    the physical root, already mounted (default /sysroot)
//   --root DIR       where the deployment's root is mounted (default: the
//                    sysroot, stacked over it as the initrd expects; a
//                    different directory is upstream's --target)
//   --config FILE    default /usr/lib/composefs/setup-root-conf.toml (missing = defaults)
// Test and diagnosis switches:
//   --log auto|stderr|FILE   step log destination (default auto: /dev/kmsg, else stderr)
//   --loop           mount the image through a loop device even where the
//                    kernel can mount the file (also CFSBOOT_FORCE_LOOP=1)
//   --overlay-form lowerdir+|data-only|two-layer   try only this layer form
//   --tmpdir DIR     temporary attachment points (default /run)
//   --json           print the result as one JSON object on stdout
//
// Exit status 0 when the root is mounted; 1 with one line on stderr
// (`cfsboot: setup-root: <input>: <what>`) and nothing left mounted otherwise.

import { CfsError, describeError } from "../shared/errors.ts";
import { SETUP_ROOT_CONF_PATH } from "../shared/setuprootconf.ts";
import { Log, writeFd } from "./log.ts";
import { OVERLAY_FORMS, type OverlayForm, type SetupOptions, setupRoot } from "./setup.ts";

const USAGE = `usage: cfsboot setup-root [--cmdline FILE] [--sysroot DIR] [--root DIR] [--config FILE]
                          [--log auto|stderr|FILE] [--loop] [--overlay-form FORM] [--tmpdir DIR] [--json]
Mount the composefs image named on the kernel command line as the root (initramfs agent).
`;

interface Parsed {
  opts: SetupOptions;
  log: string;
  json: boolean;
  help: boolean;
}

function parseArgs(args: readonly string[]): Parsed {
  const values: Record<string, string> = {};
  const flags = new Set<string>();
  const takesValue = new Set(["cmdline", "sysroot", "root", "config", "log", "overlay-form", "tmpdir"]);
  const isFlag = new Set(["loop", "json", "help"]);
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "-h") {
      flags.add("help");
      continue;
    }
    if (!a.startsWith("--")) throw new CfsError("usage", `unexpected argument ${JSON.stringify(a)}`);
    const eq = a.indexOf("=");
    const name = a.slice(2, eq < 0 ? undefined : eq);
    if (takesValue.has(name)) {
      let v: string | undefined;
      if (eq >= 0) v = a.slice(eq + 1);
      else v = args[++i];
      if (v === undefined || v === "") throw new CfsError(`--${name}`, "needs a value");
      values[name] = v;
    } else if (isFlag.has(name) && eq < 0) {
      flags.add(name);
    } else {
      throw new CfsError("usage", `unknown option ${JSON.stringify(a)}`);
    }
  }
  const form = values["overlay-form"];
  if (form !== undefined && !OVERLAY_FORMS.includes(form as OverlayForm)) {
    throw new CfsError("--overlay-form", `unknown form ${JSON.stringify(form)} (expected ${OVERLAY_FORMS.join(", ")})`);
  }
  const strip = (p: string): string => (p.length > 1 ? p.replace(/\/+$/, "") : p);
  const sysroot = strip(values.sysroot ?? "/sysroot");
  const root = strip(values.root ?? sysroot);
  return {
    opts: {
      cmdline: values.cmdline ?? "/proc/cmdline",
      sysroot,
      root,
      config: values.config ?? SETUP_ROOT_CONF_PATH,
      tmpdir: strip(values.tmpdir ?? "/run"),
      forceLoop: flags.has("loop") || process.env.CFSBOOT_FORCE_LOOP === "1",
      overlayForm: (form as OverlayForm | undefined) ?? null,
      gptAutoRoot: sysroot === "/sysroot" && root === "/sysroot",
    },
    log: values.log ?? "auto",
    json: flags.has("json"),
    help: flags.has("help"),
  };
}

export async function runSetupRoot(args: string[]): Promise<number> {
  const started = performance.now();
  let parsed: Parsed;
  try {
    parsed = parseArgs(args);
  } catch (e) {
    writeFd(2, `cfsboot: setup-root: ${describeError(e)}\n${USAGE}`);
    return 1;
  }
  if (parsed.help) {
    writeFd(1, USAGE);
    return 0;
  }
  const log = new Log(parsed.log);
  const cpu = process.cpuUsage();
  log.info(`started (${started.toFixed(0)} ms after exec, CPU ${((cpu.user + cpu.system) / 1000).toFixed(0)} ms): sysroot ${parsed.opts.sysroot}, root ${parsed.opts.root}`);
  try {
    const result = setupRoot(parsed.opts, log);
    if (parsed.json) writeFd(1, `${JSON.stringify({ ...result, startupMs: started })}\n`);
    return 0;
  } catch (e) {
    const line = e instanceof CfsError ? describeError(e) : `internal error: ${describeError(e)}`;
    // The console shows stderr (StandardError=journal+console): always one clear line there,
    // and the same in the kernel log next to the steps.
    if (!log.toStderr) log.error(`FAILED: ${line}`);
    writeFd(2, `cfsboot: setup-root: ${line}\n`);
    if (!(e instanceof CfsError) && process.env.CFSBOOT_DEBUG && e instanceof Error) writeFd(2, `${e.stack}\n`);
    return 1;
  } finally {
    log.close();
  }
}

