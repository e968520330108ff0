// `cfsboot repo images [--json]`: the OCI images (tags) as `cfsctl oci images`
// lists them (NAME, DIGEST, ARCH, LAYERS, REFS), followed by the named EROFS
// images (`images/refs/…`, e.g. from create-image) as `cfsctl images` lists
// them. JSON: {"images": [cfsctl oci images entries], "image_refs": [{"name", "digest"}]}.
// A tag whose image cannot be read is reported on stderr and skipped.

import type { Argv } from "yargs";

import { describeError } from "../../../shared/errors.ts";
import { isContainerImage, parseImageConfig, parseManifest } from "../../../shared/oci.ts";
import { defineCommand } from "../../cli.ts";
import { type Repository, encodeTag } from "../../repo.ts";
import { type RepoGlobalArgs, print, utf8Table, withRepo } from "./common.ts";

interface Args extends RepoGlobalArgs {
  json: boolean;
  "no-trunc": boolean;
}

export interface OciImageEntry {
  name: string;
  manifest_digest: string;
  is_container: boolean;
  architecture: string;
  os: string;
  created: string | null;
  layer_count: number;
  referrer_count: number;
}

/** Every tagged image with its summary (cfsctl `list_images`). */
export async function listOciImages(repo: Repository, warn: (msg: string) => void = () => {}): Promise<OciImageEntry[]> {
  const out: OciImageEntry[] = [];
  for (const t of repo.listTags()) {
    try {
      const img = await repo.openOciImage(t.name);
      const m = parseManifest(img.manifest, `manifest ${img.manifestDigest}`);
      const container = isContainerImage(m);
      const c = container && img.config ? parseImageConfig(img.config, `config ${img.configDigest}`) : null;
      out.push({
        name: t.name,
        manifest_digest: img.manifestDigest,
        is_container: container,
        architecture: c?.architecture ?? "",
        os: c?.os ?? "",
        created: c?.created ?? null,
        layer_count: m.layers.length,
        referrer_count: repo.listRefs(`streams/refs/oci-referrers/${encodeTag(img.manifestDigest)}`).length,
      });
    } catch (e) {
      warn(`cfsboot: skipping image ${t.name}: ${describeError(e)}`);
    }
  }
  return out;
}

export const imagesCommand = defineCommand<Args>({
  command: "images",
  describe: "list the repository's images (OCI tags and named EROFS images)",
  builder: (y: Argv) =>
    y
      .option("json", { type: "boolean", default: false, describe: "print JSON" })
      .option("no-trunc", { type: "boolean", default: false, describe: "full digests in the table" }) as unknown as Argv<Args>,
  handler: async (args) => {
    const { oci, refs } = await withRepo(args, {}, async (repo) => ({
      oci: await listOciImages(repo, (m) => process.stderr.write(`${m}\n`)),
      refs: repo.listImageRefs(),
    }));
    if (args.json) {
      await print(`${JSON.stringify({ images: oci, image_refs: refs }, null, 2)}\n`);
      return;
    }
    if (oci.length === 0 && refs.length === 0) {
      await print("No images found\n");
      return;
    }
    const short = (d: string) => (args["no-trunc"] || d.length <= 12 ? d : d.slice(0, 12));
    let out = "";
    if (oci.length > 0) {
      out += utf8Table(
        ["NAME", "DIGEST", "ARCH", "LAYERS", "REFS"],
        oci.map((i) => [i.name, short(i.manifest_digest.replace(/^sha256:/, "")), i.architecture || "artifact", String(i.layer_count), String(i.referrer_count)]),
      );
    }
    if (refs.length > 0) out += utf8Table(["NAME", "DIGEST"], refs.map((r) => [`refs/${r.name}`, short(r.digest)]));
    await print(out);
  },
});
