// host/commands/index.ts lists every command by the words that select it and
// loads its module on demand (host/cli.ts loads only the invoked one): the
// words must be those of the module's `command`, and every entry must load.

import { describe, expect, test } from "vitest";
import { commands } from "../../host/commands/index.ts";

describe("command index", () => {
  test("names match the modules' command words; no name twice", async () => {
    const seen = new Set<string>();
    for (const entry of commands) {
      const m = await entry.load();
      const forms = Array.isArray(m.command) ? m.command : [m.command];
      const words = forms.map((f) => String(f).split(/\s+/)[0]);
      expect(entry.names, words.join(", ")).toEqual(words);
      expect(typeof m.describe === "string" && m.describe.length > 0).toBe(true);
      for (const n of entry.names) {
        expect(seen.has(n), n).toBe(false);
        seen.add(n);
      }
    }
    expect(commands.length).toBeGreaterThanOrEqual(15);
  });
});
