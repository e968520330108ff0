// Child process for concurrency and crash tests: writes a deterministic set
// of objects and streams into a repository through host/repo.ts.
//
//   bun test/helpers/repo-writer.ts REPO SEED COUNT [--named] [--size N] [--stream NAME] [--hold MS]
//
// Object i has content bytesOf(`${SEED}/${i}`, size_i) (size_i = N, default a
// mix of 100 B .. 3 MiB), written through the streaming ObjectWriter in
// uneven chunks. With --stream NAME, a layer splitstream referring to all of
// them is stored as streams/NAME with ref streams/refs/NAME. With --hold MS,
// the repository (shared lock) is held that long before exiting. Prints
// "ready" once the repository is open, then one line per object
// ("<index> <hex> new|existed"), then "done".

import { toHex } from "../../shared/bytes.ts";
import { CONTENT_TYPE, encodeSplitStream } from "../../shared/splitstream.ts";
import { Repository } from "../../host/repo.ts";
import { bytesPieces } from "./repo-fixture.ts";

const [path, seed, countStr, ...rest] = process.argv.slice(2);
if (!path || !seed || !countStr) {
  process.stderr.write("usage: repo-writer.ts REPO SEED COUNT [--named] [--size N] [--stream NAME] [--hold MS]\n");
  process.exit(2);
}
const opt = (name: string) => {
  const i = rest.indexOf(name);
  return i >= 0 ? rest[i + 1] : undefined;
};
const named = rest.includes("--named");
const fixedSize = opt("--size") === undefined ? undefined : Number(opt("--size"));
const streamName = opt("--stream");
const hold = Number(opt("--hold") ?? 0);

function sizeOf(i: number): number {
  return fixedSize ?? [100, 4096, 70_000, 1_000_000, 3_000_000][i % 5]!;
}

const repo = Repository.open(path, { writable: true, namedTemporaries: named });
process.stdout.write("ready\n");
const ids: { id: Uint8Array; size: number }[] = [];
for (let i = 0; i < Number(countStr); i++) {
  // The temporary exists while the content is generated and written, piece by piece.
  const w = repo.createObjectWriter();
  for (const piece of bytesPieces(`${seed}/${i}`, sizeOf(i), 1 + ((i * 104729) % 300_000))) w.write(piece);
  const r = await w.finish();
  ids.push({ id: r.digest, size: sizeOf(i) });
  process.stdout.write(`${i} ${toHex(r.digest)} ${r.existed ? "existed" : "new"}\n`);
}
if (streamName !== undefined) {
  const file = await encodeSplitStream({
    algorithm: repo.alg,
    contentType: CONTENT_TYPE.ociLayer,
    chunks: ids.flatMap((x) => [{ inline: new Uint8Array(512) }, { external: x.id, size: x.size }]),
  });
  await repo.writeStream(streamName, file, { ref: streamName });
}
if (hold > 0) await Bun.sleep(hold);
process.stdout.write("done\n");
repo.close();
