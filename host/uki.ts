// UKI deployments: what a sealed UKI's own karg means for the host that
// deploys it (bootc-composefs.md §4.3, §5.1). The UKI's `.cmdline` is fixed
// at build time, so its `?` (fs-verity optional) decides how it boots,
// whatever the install was told:
//   - UKI sealed (no `?`) on an insecure install: the initramfs requires
//     fs-verity on meta.json, the image and every object, which an insecure
//     repository does not have — the deployment cannot boot until the host is
//     sealed (`cfsboot seal`);
//   - UKI insecure (`?`) on a secure install: it boots without enforcing
//     fs-verity although the repository has it.
// bootc only warns about the difference; cfsboot warns and says which case.

import type { ComposefsKarg } from "../shared/kargs.ts";

/** The warning for a UKI whose karg disagrees with the install's verity mode, or null. */
export function ukiVerityWarning(karg: ComposefsKarg, installInsecure: boolean, name = "the UKI"): string | null {
  if (karg.insecure === installInsecure) return null;
  if (!karg.insecure) {
    return `${name} requires fs-verity (its composefs karg has no '?'), but this host is installed without it: the deployment will not boot until fs-verity is enabled (cfsboot seal)`;
  }
  return `${name} does not enforce fs-verity (its composefs karg has '?'), although this host requires it`;
}
