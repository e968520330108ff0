// Helper process for bench/pull.bench.ts: starts the test registry
// (test/helpers/registry.ts), pushes the image layout given as argv[2] as
// bench/os:v1, prints one JSON line {ref, creds, caDir}, then keeps running
// (its own event loop drains the registry's log pipes, which the benchmark
// runner's synchronous child runs would otherwise block) until stdin closes.

import { pushImage } from "../test/helpers/oci-image.ts";
import { startRegistry } from "../test/helpers/registry.ts";

const layout = process.argv[2]!;
const reg = await startRegistry({ auth: "basic" });
await pushImage(layout, "latest", reg, "bench/os", "v1");
process.stdout.write(JSON.stringify({ ref: reg.ref("bench/os", "v1"), creds: reg.creds, caDir: reg.caDir }) + "\n");
process.stdin.on("end", () => void reg.stop().then(() => process.exit(0)));
process.stdin.on("close", () => void reg.stop().then(() => process.exit(0)));
process.stdin.resume();
