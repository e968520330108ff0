import { describe, expect, test } from "vitest";
import fc from "fast-check";
import { defaultSetupRootConf, effectiveMounts, parseSetupRootConf, type MountType } from "../../shared/setuprootconf.ts";
import { CfsError } from "../../shared/errors.ts";

const F = "setup-root-conf.toml";

function errorOf(f: () => unknown): CfsError {
  try {
    f();
  } catch (e) {
    if (e instanceof CfsError) return e;
    throw e;
  }
  throw new Error("expected a CfsError");
}

describe("parsing (bootc's schema)", () => {
  test.each([
    ["empty file", "", {}],
    ['mount = "none"', '[etc]\nmount = "none"', { etc: { mount: "none", transient: false } }],
    ['alias root = none', '[etc]\nmount = "root"', { etc: { mount: "none", transient: false } }],
    ['alias volatile = transient', '[var]\nmount = "volatile"', { var: { mount: "transient", transient: false } }],
    ["transient flag leaves mount unset", "[etc]\ntransient = true", { etc: { mount: null, transient: true } }],
    ["var none", '[var]\nmount = "none"', { var: { mount: "none", transient: false } }],
    ["root transient", "[root]\ntransient = true", { root: { transient: true } }],
    ["combined", '[root]\ntransient = true\n[etc]\nmount = "root"', { root: { transient: true }, etc: { mount: "none", transient: false } }],
    ["dotted keys", 'etc.mount = "overlay"\nvar.transient = true', { etc: { mount: "overlay", transient: false }, var: { mount: null, transient: true } }],
  ])("%s", (_n, text, expected) => {
    expect(parseSetupRootConf(text, F)).toEqual({ ...defaultSetupRootConf(), ...expected });
  });

  test("unknown keys are ignored but listed", () => {
    const c = parseSetupRootConf('[etc]\nmount = "bind"\nfoo = 1\n[extra]\nx = 2\n[root]\ny = 3', F);
    expect(c.etc.mount).toBe("bind");
    expect(c.unknownKeys.sort()).toEqual(["etc.foo", "extra", "root.y"]);
  });

  test.each([
    ['[etc]\nmount = "tmpfs"', `${F}: line 2`, '[etc] mount: unknown mount type "tmpfs"'],
    ["[etc]\nmount = 3", `${F}: line 2`, "[etc] mount: unknown mount type 3"],
    ['[etc]\nmount = "bind"\n\n[var]\ntransient = "yes"', `${F}: line 5`, "[var] transient must be true or false"],
    ["[root]\ntransient = 1", `${F}: line 2`, "[root] transient must be true or false"],
    ["etc = 5", `${F}: line 1`, "'etc' must be a table"],
    ['[etc]\nmount = "bind', `${F}: line 2`, ""],
    ["[etc\nmount = 1", `${F}: line 1`, ""],
  ])("error %#", (text, input, what) => {
    const e = errorOf(() => parseSetupRootConf(text, F));
    expect(e.input).toBe(input);
    expect(e.what).toContain(what);
  });
});

describe("effective mounts", () => {
  const p = (t: string) => parseSetupRootConf(t, F);
  test.each([
    ["no file → bootc defaults", null, [], { rootTransient: false, etc: "bind", var: "bind" }],
    ["mount wins over transient", p('[etc]\nmount = "overlay"\ntransient = true'), [], { etc: "overlay" }],
    ["transient when mount absent", p("[etc]\ntransient = true"), [], { etc: "transient" }],
    ["systemd.volatile=state → var none", null, ["rw", "systemd.volatile=state"], { var: "none", etc: "bind" }],
    ["systemd.volatile=overlay → var none", null, ["systemd.volatile=overlay"], { var: "none" }],
    ["systemd.volatile=yes does not", null, ["systemd.volatile=yes"], { var: "bind" }],
    ["bare systemd.volatile does not", null, ["systemd.volatile"], { var: "bind" }],
    ["explicit [var] mount wins over volatile", p('[var]\nmount = "bind"'), ["systemd.volatile=state"], { var: "bind" }],
    ["explicit [var] transient wins over volatile", p("[var]\ntransient = true"), ["systemd.volatile=state"], { var: "transient" }],
    ["[etc] settings do not block the volatile rule", p('[etc]\nmount = "overlay"'), ["systemd.volatile=state"], { var: "none", etc: "overlay" }],
    ["root transient", p("[root]\ntransient = true"), [], { rootTransient: true }],
  ])("%s", (_n, conf, cmdline, expected) => {
    expect(effectiveMounts(conf, cmdline)).toMatchObject(expected);
  });

  test("composefs-setup-root defaults can be asked for", () => {
    expect(effectiveMounts(null, [], { etc: "overlay", var: "bind" })).toEqual({ rootTransient: false, etc: "overlay", var: "bind" });
  });

  test("property: an explicit mount is always what is applied", () => {
    const mt = fc.constantFrom("none", "bind", "overlay", "transient", "root", "volatile");
    fc.assert(
      fc.property(mt, mt, fc.boolean(), fc.boolean(), fc.constantFrom([], ["systemd.volatile=state"]), (e, v, et, vt, cmd) => {
        const conf = p(`[etc]\nmount = "${e}"\ntransient = ${et}\n[var]\nmount = "${v}"\ntransient = ${vt}\n`);
        const alias = (x: string): MountType => (x === "root" ? "none" : x === "volatile" ? "transient" : (x as MountType));
        expect(effectiveMounts(conf, cmd)).toEqual({ rootTransient: false, etc: alias(e), var: alias(v) });
      }),
    );
  });
});
