// The /etc merge planner: one test per row of etc-merge.md §4 (cfsboot
// column), named regressions for the upstream bugs, and properties.

import { describe, expect, test } from "vitest";
import fc from "fast-check";
import { createHash } from "node:crypto";
import {
  type Action,
  applyPlan,
  comparePaths,
  configDiff,
  conflictSummary,
  type EtcNode,
  type EtcTree,
  formatConflict,
  formatReport,
  mergeSummary,
  nodesEqual,
  planEtcMerge,
  type PlanResult,
  validateTree,
} from "../../shared/etcmerge.ts";
import { CfsError } from "../../shared/errors.ts";

const enc = (s: string) => new Uint8Array(Buffer.from(s));
const sha = (s: string) => createHash("sha256").update(s).digest("hex");
type Extra = { uid?: number; gid?: number; xattrs?: [string, string][]; mtime?: { sec: number; nsec: number } };
const base = (mode: number, e: Extra) => ({ mode, uid: e.uid ?? 0, gid: e.gid ?? 0, xattrs: new Map((e.xattrs ?? []).map(([k, v]) => [k, enc(v)])), ...(e.mtime ? { mtime: e.mtime } : {}) });
const D = (mode = 0o755, e: Extra = {}): EtcNode => ({ kind: "dir", ...base(mode, e) });
const F = (content: string, mode = 0o644, e: Extra = {}): EtcNode => ({ kind: "file", sha256: sha(content), ...base(mode, e) });
const L = (target: string, e: Extra = {}): EtcNode => ({ kind: "link", target: enc(target), ...base(0o777, e) });
const T = (o: Record<string, EtcNode> = {}): EtcTree => new Map(Object.entries(o));

function plan(r: PlanResult) {
  if (!("plan" in r)) throw new Error(`expected a plan, got conflicts ${JSON.stringify(r.conflicts)}`);
  return r.plan;
}
const acts = (r: PlanResult): string[] => plan(r).actions.map((a) => `${a.op} ${a.path}`);
const reps = (r: PlanResult): string[] => ("plan" in r ? r.plan.reports : r.reports).map((x) => `${x.code} ${x.path}`);
const confl = (r: PlanResult): string[] => {
  if ("plan" in r) throw new Error("expected conflicts, got a plan");
  return r.conflicts.map((c) => `${c.reason} ${c.path}`);
};

/** Run a row: plan, check operations and reports, apply, and return the resulting tree. */
function row(O: EtcTree, C: EtcTree, N: EtcTree, want: { actions: string[]; reports?: string[] }): EtcTree {
  const r = planEtcMerge(O, C, N);
  expect(acts(r)).toEqual(want.actions);
  expect(reps(r)).toEqual(want.reports ?? []);
  return applyPlan(plan(r), C, N);
}
const same = (a: EtcNode | undefined, b: EtcNode | undefined) => expect(nodesEqual(a, b), `${JSON.stringify(a)} vs ${JSON.stringify(b)}`).toBe(true);

describe("decision table (etc-merge.md §4, cfsboot column)", () => {
  test("row 1: untouched file follows the image", () => {
    same(row(T({ f: F("1") }), T({ f: F("1") }), T({ f: F("2") }), { actions: [] }).get("f"), F("2"));
  });
  test("row 2: local edit, upstream unchanged → local", () => {
    same(row(T({ f: F("1") }), T({ f: F("2") }), T({ f: F("1") }), { actions: ["put-local f"] }).get("f"), F("2"));
  });
  test("row 3: both changed → local, reported", () => {
    same(row(T({ f: F("1") }), T({ f: F("2") }), T({ f: F("3") }), { actions: ["put-local f"], reports: ["upstream-also-changed f"] }).get("f"), F("2"));
  });
  test("row 4: chmod/chown only → local metadata", () => {
    same(row(T({ f: F("1") }), T({ f: F("1", 0o400, { uid: 5 }) }), T({ f: F("1") }), { actions: ["put-local f"] }).get("f"), F("1", 0o400, { uid: 5 }));
  });
  test("row 5: chmod locally, content upstream → local node (old content, local mode), reported", () => {
    same(row(T({ f: F("1") }), T({ f: F("1", 0o600) }), T({ f: F("2") }), { actions: ["put-local f"], reports: ["upstream-also-changed f"] }).get("f"), F("1", 0o600));
  });
  test("row 6: a changed user/ACL/capability xattr is a local change", () => {
    const c = F("1", 0o644, { xattrs: [["user.note", "x"], ["security.capability", "cap"]] });
    same(row(T({ f: F("1") }), T({ f: c }), T({ f: F("1") }), { actions: ["put-local f"] }).get("f"), c);
    same(row(T({ f: F("1") }), T({ f: c }), T({ f: F("2") }), { actions: ["put-local f"], reports: ["upstream-also-changed f"] }).get("f"), c);
  });
  test("row 7: only security.selinux differs → not a local change, new image wins", () => {
    const o = F("1", 0o644, { xattrs: [["security.selinux", "system_u:object_r:etc_t:s0"]] });
    const c = F("1", 0o644, { xattrs: [["security.selinux", "unconfined_u:object_r:etc_t:s0"]] });
    same(row(T({ f: o }), T({ f: c }), T({ f: F("2") }), { actions: [] }).get("f"), F("2"));
  });
  test("row 8: only mtime differs (touch) → new image wins", () => {
    same(row(T({ f: F("1", 0o644, { mtime: { sec: 1, nsec: 0 } }) }), T({ f: F("1", 0o644, { mtime: { sec: 99, nsec: 5 } }) }), T({ f: F("2") }), { actions: [] }).get("f"), F("2"));
  });
  test("row 9: locally deleted, upstream unchanged → stays deleted", () => {
    expect(row(T({ f: F("1") }), T(), T({ f: F("1") }), { actions: ["remove f"] }).has("f")).toBe(false);
  });
  test("row 10: locally deleted, upstream changed → stays deleted, reported", () => {
    expect(row(T({ f: F("1") }), T(), T({ f: F("2") }), { actions: ["remove f"], reports: ["upstream-also-changed f"] }).has("f")).toBe(false);
  });
  test("row 11: untouched file removed upstream → removed", () => {
    expect(row(T({ f: F("1") }), T({ f: F("1") }), T(), { actions: [] }).has("f")).toBe(false);
  });
  test("row 12: edited file whose directory upstream removed → kept, directory re-created from the local node", () => {
    const r = row(T({ d: D(), "d/f": F("1") }), T({ d: D(0o750), "d/f": F("2") }), T(), {
      actions: ["put-local d", "put-local d/f"],
      reports: ["upstream-also-changed d", "upstream-also-changed d/f"],
    });
    same(r.get("d/f"), F("2"));
    // with the directory itself untouched locally
    const r2 = row(T({ d: D(), "d/f": F("1") }), T({ d: D(), "d/f": F("2") }), T(), {
      actions: ["mkdir-local d", "put-local d/f"],
      reports: ["orphaned-local d", "upstream-also-changed d/f"],
    });
    same(r2.get("d"), D());
    same(r2.get("d/f"), F("2"));
  });
  test("row 13: new local file → kept", () => {
    same(row(T(), T({ f: F("x") }), T(), { actions: ["put-local f"] }).get("f"), F("x"));
  });
  test("row 14: added on both sides differently → local, reported", () => {
    same(row(T(), T({ f: F("1") }), T({ f: F("2") }), { actions: ["put-local f"], reports: ["upstream-also-changed f"] }).get("f"), F("1"));
  });
  test("row 15: files compared by content hash even when the walker saw fs-verity (local edit kept)", () => {
    // The snapshot always carries the SHA-256 of the bytes, verity or not; an
    // empty hash (upstream's quirk) is not a valid snapshot.
    same(row(T({ f: F("1") }), T({ f: F("2") }), T({ f: F("1") }), { actions: ["put-local f"] }).get("f"), F("2"));
    expect(() => validateTree(T({ f: { ...F("1"), sha256: "" } as EtcNode }), "current")).toThrow(CfsError);
  });
  test("row 16: retargeted symlink → local", () => {
    same(row(T({ l: L("a") }), T({ l: L("b") }), T({ l: L("a") }), { actions: ["put-local l"] }).get("l"), L("b"));
    same(row(T({ l: L("a") }), T({ l: L("b") }), T({ l: L("c") }), { actions: ["put-local l"], reports: ["upstream-also-changed l"] }).get("l"), L("b"));
  });
  test("row 17: new dangling symlink → copied as a link, never resolved", () => {
    same(row(T(), T({ l: L("/no/such/file") }), T(), { actions: ["put-local l"] }).get("l"), L("/no/such/file"));
  });
  test("row 18: file replaced by a symlink locally → local", () => {
    same(row(T({ p: F("1") }), T({ p: L("x") }), T({ p: F("1") }), { actions: ["put-local p"] }).get("p"), L("x"));
  });
  test("row 19: locally removed, new image has a symlink out of /etc → removed (the link itself)", () => {
    const n = T({ "ext-symlink": L("/usr/share/x") });
    expect(row(T({ "ext-symlink": L("/usr/share/x") }), T(), n, { actions: ["remove ext-symlink"] }).size).toBe(0);
    expect(row(T({ "ext-symlink": F("1") }), T(), n, { actions: ["remove ext-symlink"], reports: ["upstream-also-changed ext-symlink"] }).size).toBe(0);
  });
  test("row 20: directory chmod locally → local mode on N's directory", () => {
    same(row(T({ d: D(0o755) }), T({ d: D(0o700) }), T({ d: D(0o755) }), { actions: ["meta-local d"] }).get("d"), D(0o700));
  });
  test("row 21: file edited inside a directory whose mode changed upstream → upstream mode + local file", () => {
    const r = row(T({ d: D(0o755), "d/x": F("1") }), T({ d: D(0o755), "d/x": F("2") }), T({ d: D(0o700), "d/x": F("1") }), { actions: ["put-local d/x"] });
    same(r.get("d"), D(0o700));
    same(r.get("d/x"), F("2"));
  });
  test("row 22: new local directory tree with custom modes → kept, parents first", () => {
    const c = T({ t: D(0o700), "t/a": D(0o770), "t/a/f": F("f", 0o600), "t/b": D(0o777), "t/c": D(0o707) });
    const r = row(T(), c, T(), { actions: ["put-local t", "put-local t/a", "put-local t/a/f", "put-local t/b", "put-local t/c"] });
    for (const [p, n] of c) same(r.get(p), n);
  });
  test("row 23: file added in a directory that upstream removed → directory re-created from C, reported", () => {
    const r = row(T({ d: D(), "d/a": F("a") }), T({ d: D(), "d/a": F("a"), "d/b": F("b") }), T(), { actions: ["mkdir-local d", "put-local d/b"], reports: ["orphaned-local d"] });
    expect([...r.keys()].sort()).toEqual(["d", "d/b"]);
  });
  test("row 24: directory removed locally, upstream added a file in it → stays removed, addition reported", () => {
    const r = row(T({ d: D(), "d/a": F("a") }), T(), T({ d: D(), "d/a": F("a"), "d/c": F("c") }), { actions: ["remove d"], reports: ["dropped-upstream d/c"] });
    expect(r.size).toBe(0);
  });
  test("row 25: untouched directory gains children upstream → they appear", () => {
    const r = row(T({ d: D() }), T({ d: D() }), T({ d: D(), "d/afile": F("a"), "d/bfile": F("b") }), { actions: [] });
    expect([...r.keys()].sort()).toEqual(["d", "d/afile", "d/bfile"]);
    row(T(), T(), T({ e: D(), "e/x": F("x") }), { actions: [] });
  });
  test("row 26: locally modified file, upstream made it a directory → refused", () => {
    const r = planEtcMerge(T({ p: F("1") }), T({ p: F("2") }), T({ p: D(), "p/z": F("z") }));
    expect(confl(r)).toEqual(["file-now-directory p"]);
  });
  test("row 27: file added locally, directory added upstream → refused", () => {
    expect(confl(planEtcMerge(T(), T({ p: F("1") }), T({ p: D() })))).toEqual(["file-now-directory p"]);
  });
  test("row 28: directory added locally, file added upstream → refused", () => {
    expect(confl(planEtcMerge(T(), T({ p: D(), "p/x": F("x") }), T({ p: F("1") })))).toEqual(["directory-now-file p"]);
  });
  test("row 29: file replaced by a directory locally, upstream unchanged → the local directory wins (both peers refuse)", () => {
    const r = row(T({ p: F("1") }), T({ p: D(0o750), "p/x": F("x") }), T({ p: F("1") }), { actions: ["put-local p", "put-local p/x"] });
    same(r.get("p"), D(0o750));
    same(r.get("p/x"), F("x"));
  });
  test("row 30: directory replaced by a file locally, upstream unchanged → the local file wins, N's subtree removed", () => {
    const r = row(T({ p: D(), "p/a": F("a") }), T({ p: F("1") }), T({ p: D(), "p/a": F("a") }), { actions: ["put-local p"] });
    same(r.get("p"), F("1"));
    expect(r.has("p/a")).toBe(false);
  });
  test("row 31: untouched directory became a symlink upstream → symlink", () => {
    const r = row(T({ ssl: D(), "ssl/certs": D(), "ssl/certs/a.pem": F("a") }), T({ ssl: D(), "ssl/certs": D(), "ssl/certs/a.pem": F("a") }), T({ ssl: D(), "ssl/certs": L("/usr/share/pki/certs") }), { actions: [] });
    same(r.get("ssl/certs"), L("/usr/share/pki/certs"));
  });
  test("row 32: edit inside a directory that became a symlink upstream → refused, the link is never followed", () => {
    const r = planEtcMerge(T({ d: D(), "d/a": F("a") }), T({ d: D(), "d/a": F("a2") }), T({ d: L("/abs/dir") }));
    expect(confl(r)).toEqual(["parent-now-not-directory d"]);
  });
  test("row 33: file deleted locally, upstream made it a directory → stays deleted, addition reported", () => {
    const r = row(T({ p: F("1") }), T(), T({ p: D(), "p/x": F("x") }), { actions: ["remove p"], reports: ["upstream-also-changed p", "dropped-upstream p/x"] });
    expect(r.size).toBe(0);
  });
  test("row 34: directory deleted locally, upstream made it a file → stays deleted, reported", () => {
    expect(row(T({ p: D(), "p/a": F("a") }), T(), T({ p: F("1") }), { actions: ["remove p"], reports: ["upstream-also-changed p"] }).size).toBe(0);
  });
  test("row 35: fifo, socket or device in current /etc → ignored, reported", () => {
    const r = planEtcMerge(T(), T(), T(), { specials: [{ path: "sock-to-ignore", type: "socket" }, { path: "fifo-to-ignore", type: "fifo" }] });
    expect(acts(r)).toEqual([]);
    expect(reps(r)).toEqual(["ignored-special fifo-to-ignore", "ignored-special sock-to-ignore"]);
    expect(formatReport(plan(r).reports[1]!)).toBe("etc merge: /etc/sock-to-ignore: ignored special file (socket)");
  });
  test("row 36: hardlinked pair edited in place → two separate files", () => {
    const r = row(T({ a: F("1"), b: F("1") }), T({ a: F("2"), b: F("2") }), T(), { actions: ["put-local a", "put-local b"], reports: ["upstream-also-changed a", "upstream-also-changed b"] });
    same(r.get("a"), F("2"));
    same(r.get("b"), F("2"));
  });
});

describe("upstream regressions", () => {
  test("bootc#1924: a directory removed upstream that holds local files does not fail the merge", () => {
    // Upstream: finalize failed with "Creating symlink …: No such file or directory"
    // and the update never applied.
    const O = T({ "NetworkManager": D(), "NetworkManager/conf.d": D(), "NetworkManager/conf.d/00-default.conf": F("d") });
    const C = T({ "NetworkManager": D(), "NetworkManager/conf.d": D(), "NetworkManager/conf.d/00-default.conf": F("d"), "NetworkManager/conf.d/99-local.conf": F("mine"), "NetworkManager/conf.d/dns": L("../dns.conf") });
    const r = planEtcMerge(O, C, T());
    expect(acts(r)).toEqual(["mkdir-local NetworkManager", "mkdir-local NetworkManager/conf.d", "put-local NetworkManager/conf.d/99-local.conf", "put-local NetworkManager/conf.d/dns"]);
    const out = applyPlan(plan(r), C, T());
    same(out.get("NetworkManager/conf.d/99-local.conf"), F("mine"));
    same(out.get("NetworkManager/conf.d/dns"), L("../dns.conf"));
  });

  test("composefs-rs#335: an untouched directory that became a symlink upstream is not an error", () => {
    // bootc 1.15.2 failed in the diff ("Directory entry \"certs\" is not a subdirectory").
    const O = T({ ssl: D(), "ssl/certs": D(), "ssl/certs/ca.pem": F("ca"), "ssl/openssl.cnf": F("cnf") });
    const C = T({ ssl: D(), "ssl/certs": D(), "ssl/certs/ca.pem": F("ca"), "ssl/openssl.cnf": F("my cnf") });
    const N = T({ ssl: D(), "ssl/certs": L("../pki/tls/certs"), "ssl/openssl.cnf": F("cnf") });
    const r = planEtcMerge(O, C, N);
    expect(acts(r)).toEqual(["put-local ssl/openssl.cnf"]);
    const out = applyPlan(plan(r), C, N);
    same(out.get("ssl/certs"), L("../pki/tls/certs"));
    expect(out.has("ssl/certs/ca.pem")).toBe(false);
  });

  test("bootc#2278: removing a symlink that points out of /etc touches only the link", () => {
    // Upstream followed the link ("a path led outside of the filesystem") and
    // every reboot returned to the old image.
    const O = T({ "ext-symlink": L("/usr/lib/foo"), keep: F("k") });
    const N = T({ "ext-symlink": L("/usr/lib/foo"), keep: F("k") });
    const C = T({ keep: F("k") });
    const r = planEtcMerge(O, C, N);
    expect(plan(r).actions).toEqual([{ op: "remove", path: "ext-symlink" }]);
    // The planner never treats a link as a directory: nothing below it is addressed.
    const withBelow = planEtcMerge(O, T({ keep: F("k"), "ext-symlink": L("/usr/lib/foo") }), T({ "ext-symlink": L("/usr/lib/bar"), keep: F("k") }));
    expect(plan(withBelow).actions).toEqual([]);
  });
});

describe("conflicts and messages", () => {
  test("every conflict is listed, sorted, once", () => {
    const O = T({ b: F("1"), d: D(), "d/a": F("a") });
    const C = T({ b: F("2"), d: D(), "d/a": F("a2"), "d/n": F("n"), z: D(), "z/x": F("x") });
    const N = T({ b: D(), d: L("/x"), z: F("z") });
    const r = planEtcMerge(O, C, N);
    expect(confl(r)).toEqual(["file-now-directory b", "parent-now-not-directory d", "directory-now-file z"]);
    if ("conflicts" in r) {
      expect(r.conflicts.map(formatConflict)).toEqual([
        "etc merge conflict: /etc/b: locally modified file, but the new image has a directory here",
        "etc merge conflict: /etc/d: local changes below it, but the new image replaced the directory with a symlink",
        "etc merge conflict: /etc/z: locally modified directory, but the new image has a file here",
      ]);
    }
    expect(conflictSummary(3)).toBe("Merge conflicts found in etc (3 paths); nothing was staged");
  });

  test("invalid snapshots are refused with the tree named", () => {
    const e = (() => {
      try {
        planEtcMerge(T({ "a/b": F("1") }), T(), T());
      } catch (x) {
        return x as CfsError;
      }
    })();
    expect(e).toBeInstanceOf(CfsError);
    expect(e!.message).toBe("pristine /etc: /etc/a/b has no parent entry");
    expect(() => planEtcMerge(T(), T({ f: F("1"), "f/x": F("2") }), T())).toThrow("below /etc/f, which is a file");
    expect(() => planEtcMerge(T(), T(), T({ "/abs": F("1") }))).toThrow("not a normalised relative path");
    expect(() => planEtcMerge(T(), T(), T({ "a/../b": F("1") }))).toThrow("not a normalised relative path");
  });
});

describe("config-diff", () => {
  test("added (with descendants), modified, removed (topmost only)", () => {
    const O = T({ a: F("1"), b: F("1"), gone: D(), "gone/x": F("x"), keep: D(), "keep/y": F("y"), sel: F("s", 0o644, { xattrs: [["security.selinux", "a"]] }) });
    const C = T({ a: F("1"), b: F("2"), keep: D(0o700), newd: D(), "newd/f": F("f"), sel: F("s", 0o644, { xattrs: [["security.selinux", "b"]] }) });
    const d = configDiff(O, C);
    expect(d).toEqual({ added: ["newd", "newd/f"], modified: ["b", "keep"], removed: ["gone", "keep/y"] });
    expect(mergeSummary(d)).toBe("Copying /etc changes: 2 modified, 2 removed, 2 added");
  });
});

// ---- properties ------------------------------------------------------------------------

const UNIVERSE = ["a", "a/b", "a/b/c", "a/d", "e", "e/f", "g", "h"];
const VARIANTS: EtcNode[] = [D(0o755), D(0o700), F("1"), F("2"), F("1", 0o600), F("1", 0o644, { xattrs: [["security.selinux", "x"]] }), L("a"), L("/usr/x")];
const choice = fc.integer({ min: -1, max: VARIANTS.length - 1 });

function wellFormed(t: EtcTree): EtcTree {
  const out: EtcTree = new Map();
  for (const p of [...t.keys()].sort(comparePaths)) {
    const i = p.lastIndexOf("/");
    if (i >= 0 && out.get(p.slice(0, i))?.kind !== "dir") continue;
    out.set(p, t.get(p)!);
  }
  return out;
}
const treeFrom = (cs: number[]): EtcTree => wellFormed(new Map(UNIVERSE.flatMap((p, i) => (cs[i]! < 0 ? [] : [[p, VARIANTS[cs[i]!]!] as [string, EtcNode]]))));
/** O, then C and N as mostly-unchanged variations of O. */
const triple = fc
  .tuple(fc.array(choice, { minLength: UNIVERSE.length, maxLength: UNIVERSE.length }), fc.array(fc.option(choice, { freq: 2, nil: null }), { minLength: UNIVERSE.length, maxLength: UNIVERSE.length }), fc.array(fc.option(choice, { freq: 2, nil: null }), { minLength: UNIVERSE.length, maxLength: UNIVERSE.length }))
  .map(([o, c, n]) => ({ O: treeFrom(o), C: treeFrom(c.map((x, i) => x ?? o[i]!)), N: treeFrom(n.map((x, i) => x ?? o[i]!)) }));

const ancestors = (p: string): string[] => {
  const out: string[] = [];
  for (let i = p.lastIndexOf("/"); i >= 0; i = p.lastIndexOf("/", i - 1)) out.push(p.slice(0, i));
  return out;
};
const under = (t: EtcTree, p: string) => [...t.keys()].filter((k) => k === p || k.startsWith(`${p}/`));

describe("properties", () => {
  test("a path nobody changed locally (nor around it) always equals new", () => {
    fc.assert(
      fc.property(triple, ({ O, C, N }) => {
        const r = planEtcMerge(O, C, N);
        if (!("plan" in r)) return;
        const out = applyPlan(r.plan, C, N);
        for (const p of UNIVERSE) {
          const around = [...ancestors(p), ...under(O, p), ...under(C, p)];
          if (around.every((q) => nodesEqual(O.get(q), C.get(q)))) same(out.get(p), N.get(p));
        }
      }),
      { numRuns: 400 },
    );
  });

  test("a local change with no upstream change (here or above) always survives", () => {
    fc.assert(
      fc.property(triple, ({ O, C, N }) => {
        const r = planEtcMerge(O, C, N);
        if (!("plan" in r)) return;
        const out = applyPlan(r.plan, C, N);
        for (const p of UNIVERSE) {
          if (nodesEqual(O.get(p), C.get(p))) continue;
          if ([p, ...ancestors(p)].every((q) => nodesEqual(O.get(q), N.get(q)))) same(out.get(p), C.get(p));
        }
      }),
      { numRuns: 400 },
    );
  });

  test("plans and conflicts only name paths of the three trees; results are well-formed", () => {
    fc.assert(
      fc.property(triple, ({ O, C, N }) => {
        const r = planEtcMerge(O, C, N);
        const known = new Set([...O.keys(), ...C.keys(), ...N.keys()]);
        const named = "plan" in r ? [...r.plan.actions.map((a: Action) => a.path), ...r.plan.reports.map((x) => x.path)] : r.conflicts.map((c) => c.path);
        for (const p of named) expect(known.has(p)).toBe(true);
        if ("plan" in r) {
          const out = applyPlan(r.plan, C, N);
          expect(() => validateTree(out, "merged")).not.toThrow();
          const seen = r.plan.actions.map((a) => a.path);
          expect(new Set(seen).size).toBe(seen.length);
          expect([...seen].sort(comparePaths)).toEqual(seen);
        } else {
          const ps = r.conflicts.map((c) => c.path);
          expect([...new Set(ps)].sort(comparePaths)).toEqual(ps);
        }
      }),
      { numRuns: 400 },
    );
  });

  test("the planner is deterministic (independent of map order)", () => {
    const rev = (t: EtcTree): EtcTree => new Map([...t.entries()].reverse());
    fc.assert(
      fc.property(triple, ({ O, C, N }) => {
        expect(planEtcMerge(rev(O), rev(C), rev(N))).toEqual(planEtcMerge(O, C, N));
        expect(JSON.stringify(planEtcMerge(O, C, N))).toBe(JSON.stringify(planEtcMerge(O, C, N)));
      }),
      { numRuns: 200 },
    );
  });
});

test("the property generator reaches every outcome (plans of each kind, conflicts of each kind)", () => {
  const ops = new Set<string>();
  const reasons = new Set<string>();
  for (const { O, C, N } of fc.sample(triple, { numRuns: 1500, seed: 42 })) {
    const r = planEtcMerge(O, C, N);
    if ("plan" in r) r.plan.actions.forEach((a) => ops.add(a.op));
    else r.conflicts.forEach((c) => reasons.add(c.reason));
  }
  expect([...ops].sort()).toEqual(["keep-new", "meta-local", "mkdir-local", "put-local", "remove"]);
  expect([...reasons].sort()).toEqual(["directory-now-file", "file-now-directory", "parent-now-not-directory"]);
});
