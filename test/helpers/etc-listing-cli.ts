// `bun test/helpers/etc-listing-cli.ts DIR`: print the listing of DIR as JSON
// (run inside a private mount namespace to list an overlay mount).
import { listing } from "./etc-disk.ts";
process.stdout.write(JSON.stringify(listing(process.argv[2]!)));
