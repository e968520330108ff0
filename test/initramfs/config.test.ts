// cfsboot's extension of setup-root-conf.toml: [composefs] allow-unenforced-object-verity.
import { describe, expect, test } from "vitest";
import { CfsError } from "../../shared/errors.ts";
import { defaultSetupRootConf, parseSetupRootConf } from "../../shared/setuprootconf.ts";

const F = "/usr/lib/composefs/setup-root-conf.toml";

describe("[composefs] allow-unenforced-object-verity", () => {
  test("off unless set; a file without the section keeps bootc's meaning", () => {
    expect(defaultSetupRootConf().composefs.allowUnenforcedObjectVerity).toBe(false);
    expect(parseSetupRootConf('[etc]\nmount = "overlay"\n', F).composefs.allowUnenforcedObjectVerity).toBe(false);
    expect(parseSetupRootConf("[composefs]\nallow-unenforced-object-verity = false\n", F).composefs.allowUnenforcedObjectVerity).toBe(false);
  });

  test("true allows it, and the section is no longer an unknown key", () => {
    const c = parseSetupRootConf("[composefs]\nallow-unenforced-object-verity = true\n", F);
    expect(c.composefs.allowUnenforcedObjectVerity).toBe(true);
    expect(c.unknownKeys).toEqual([]);
  });

  test("unknown keys in the section are listed, not fatal", () => {
    expect(parseSetupRootConf("[composefs]\nallow-unenforced-object-verity = true\nfuture = 1\n", F).unknownKeys).toEqual(["composefs.future"]);
  });

  test.each([
    ['"yes"', `${F}: line 3: [composefs] allow-unenforced-object-verity must be true or false`],
    ["1", `${F}: line 3: [composefs] allow-unenforced-object-verity must be true or false`],
  ])("a non-boolean (%s) is an error naming the file and line", (v, msg) => {
    let err: unknown;
    try {
      parseSetupRootConf(`# comment\n[composefs]\nallow-unenforced-object-verity = ${v}\n`, F);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CfsError);
    expect((err as CfsError).message).toBe(msg);
  });
});
