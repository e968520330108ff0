// The Debian mirror, read from the host's apt configuration at run time.
//
// Its address is never written into any file: not into the project, not into
// the guest image, not into the cache metadata or logs (every log goes through
// redact(), which replaces it with `$MIRROR`).

import { existsSync, readFileSync } from "node:fs";
import { addRedaction } from "./util.ts";

const DEB822 = "/etc/apt/sources.list.d/debian.sources";
const LEGACY = "/etc/apt/sources.list";

/** The first `URIs:` of debian.sources (or the first `deb` line of sources.list). */
export function debianMirror(): string {
  const env = process.env.CFSBOOT_VM_MIRROR;
  let url: string | undefined = env;
  if (!url && existsSync(DEB822)) {
    const m = /^URIs:\s*(\S+)/m.exec(readFileSync(DEB822, "utf8"));
    url = m?.[1];
  }
  if (!url && existsSync(LEGACY)) {
    const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)/m.exec(readFileSync(LEGACY, "utf8"));
    url = m?.[1];
  }
  if (!url) throw new Error(`no Debian mirror configured in ${DEB822} or ${LEGACY} (or CFSBOOT_VM_MIRROR)`);
  addRedaction(url);
  addRedaction(url.replace(/\/+$/, ""));
  return url;
}
