// The /etc merge on disk: one case per row of etc-merge.md §4 (cfsboot
// column, all 36). Each case writes the three trees for real — pristine O
// and new N as image directories turned into EROFS images and read back
// through the project's reader, current C as a live directory (contents,
// modes, owners, xattrs incl. ACLs, capabilities and SELinux labels, times,
// symlinks, fifos, sockets, devices, hardlinks) — takes the snapshots the
// finalize takes, plans, builds the result beside a staged copy of N and
// exchanges it in (host/finalize.ts buildAndSwap), then compares the whole
// resulting /etc with the expected one, node by node, times included.
// Conflict rows must leave the staged copy untouched. Every case carries a
// symlink trap: absolute links in the images point at a directory outside,
// which must never change. Plus the named upstream regressions end to end
// through the same path.

import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { etcFromDisk, etcFromImage } from "../../host/etcsnap.ts";
import { type MergeInputs, buildAndSwap, planMerge, withoutUpdated } from "../../host/finalize.ts";
import { writeTree } from "../../host/materialize.ts";
import { canRun, isRoot } from "../helpers/env.ts";
import { type Spec, type TreeSpec, aclReadFor, chr, d, f, fifo, hl, imageOf, l, listing, sock, specListing, writeSpec } from "../helpers/etc-disk.ts";

const T0 = 1_600_000_000; // O and N
const T1 = 1_700_000_000; // C
const CAP = new Uint8Array(Buffer.from("AQAAAgAgAAAAAAAAAAAAAAAAAAA=", "base64")); // cap_net_bind_service+ep

let dir: string;
let trap: string;
let trapBefore: Record<string, string>;
let n = 0;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "cfsboot-etcmerge-disk-"));
  trap = join(dir, "trap");
  mkdirSync(join(trap, "sub"), { recursive: true });
  writeFileSync(join(trap, "victim"), "outside /etc\n");
  trapBefore = listing(trap);
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

type Expect = "C" | "N" | Spec;
interface Row {
  O: TreeSpec;
  C: TreeSpec;
  N: TreeSpec;
  /** The resulting /etc, complete: path → C's node, N's node, or a node of its own (default time T0). */
  result?: Record<string, Expect>;
  reports?: string[];
  conflicts?: string[];
}

async function run(r: Row): Promise<void> {
  const base = join(dir, `case-${++n}`);
  writeSpec(join(base, "O/etc"), r.O, { mtime: T0 });
  writeSpec(join(base, "N/etc"), r.N, { mtime: T0 });
  writeSpec(join(base, "C"), r.C, { mtime: T1 });
  const O = await imageOf(join(base, "O"));
  const N = await imageOf(join(base, "N"));
  const inputs: MergeInputs = {
    O: withoutUpdated(etcFromImage(O.etc, O.content, "O")),
    C: withoutUpdated(etcFromDisk(join(base, "C"))),
    N: withoutUpdated(etcFromImage(N.etc, N.content, "N")),
    currentRoot: join(base, "C"),
    bootedMode: "bind",
    newMode: "bind",
    newEtc: N.etc,
    content: N.content,
    newLabel: "N",
  };
  // The staged copy of N, as upgrade writes it.
  const state = join(base, "state");
  mkdirSync(join(state, "etc"), { recursive: true });
  writeTree(N.etc!, join(state, "etc"), N.content, "N", { skipTop: new Set([".updated"]) });
  const staged = listing(join(state, "etc"));
  const m = planMerge(inputs);
  const reports = ("plan" in m ? m.plan.reports : m.reports).map((x) => `${x.code} ${x.path}`);
  expect(reports).toEqual(r.reports ?? []);
  if (r.conflicts !== undefined) {
    expect("conflicts" in m ? m.conflicts.map((c) => `${c.reason} ${c.path}`) : "a plan").toEqual(r.conflicts);
    // Refused: nothing is built, the staged copy stays as it was.
    expect(listing(join(state, "etc"))).toEqual(staged);
  } else {
    if (!("plan" in m)) throw new Error(`unexpected conflicts: ${JSON.stringify(m.conflicts)}`);
    buildAndSwap(state, inputs, m.plan, m.result);
    const want: Record<string, string> = {};
    for (const [p, e] of Object.entries(r.result ?? {})) {
      const [spec, t] = e === "C" ? [r.C[p], T1] : e === "N" ? [r.N[p], T0] : [e, T0];
      if (spec === undefined) throw new Error(`row spec: ${p} is not in ${e}`);
      Object.assign(want, specListing({ [p]: spec }, t as number));
    }
    expect(listing(join(state, "etc"))).toEqual(Object.fromEntries(Object.entries(want).sort(([a], [b]) => (a < b ? -1 : 1))));
    // …which is the tree the pure planner predicts.
    expect([...m.result.keys()].sort()).toEqual(Object.keys(want).sort());
    // Nothing left beside it.
    expect(readdirSync(state)).toEqual(["etc"]);
  }
  expect(listing(trap)).toEqual(trapBefore);
}

const rowTest = (name: string, r: () => Row) =>
  test(name, async () => {
    if (!canRun(isRoot, "needs root (owners, devices, trusted.* and security.* xattrs)")) return;
    await run(r());
  });

describe("decision table on disk (etc-merge.md §4, cfsboot column)", () => {
  rowTest("row 1: untouched file follows the image", () => ({ O: { f: f("F1") }, C: { f: f("F1") }, N: { f: f("F2") }, result: { f: "N" } }));
  rowTest("row 2: local edit, image unchanged → local", () => ({ O: { f: f("F1") }, C: { f: f("F2") }, N: { f: f("F1") }, result: { f: "C" } }));
  rowTest("row 3: both changed → local + report", () => ({ O: { f: f("F1") }, C: { f: f("F2") }, N: { f: f("F3") }, result: { f: "C" }, reports: ["upstream-also-changed f"] }));
  rowTest("row 4: chmod 0400 + chown → local metadata", () => ({ O: { f: f("F1") }, C: { f: f("F1", { mode: 0o400, uid: 5, gid: 6 }) }, N: { f: f("F1") }, result: { f: "C" } }));
  rowTest("row 5: chmod locally, content upstream → old content with local mode + report", () => ({
    O: { f: f("F1") },
    C: { f: f("F1", { mode: 0o600 }) },
    N: { f: f("F2") },
    result: { f: "C" },
    reports: ["upstream-also-changed f"],
  }));
  rowTest("row 6: user.*, ACL and capability xattrs are local changes", () => ({
    O: { f: f("F1"), g: f("F1") },
    C: { f: f("F1", { x: { "user.note": "mine", "system.posix_acl_access": aclReadFor(1234) } }), g: f("F1", { mode: 0o755, x: { "security.capability": CAP, "trusted.tag": "t" } }) },
    N: { f: f("F1"), g: f("F2") },
    result: { f: "C", g: "C" },
    reports: ["upstream-also-changed g"],
  }));
  rowTest("row 7: only security.selinux differs → the image's new file (with its label)", () => ({
    O: { f: f("F1", { x: { "security.selinux": "system_u:object_r:etc_t:s0" } }) },
    C: { f: f("F1", { x: { "security.selinux": "unconfined_u:object_r:etc_t:s0" } }) },
    N: { f: f("F2", { x: { "security.selinux": "system_u:object_r:net_conf_t:s0" } }) },
    result: { f: "N" },
  }));
  rowTest("row 8: only mtime differs (touch) → the image's new file", () => ({ O: { f: f("F1") }, C: { f: f("F1", { mtime: T1 + 99 }) }, N: { f: f("F2") }, result: { f: "N" } }));
  rowTest("row 9: deleted locally, image unchanged → stays deleted", () => ({ O: { f: f("F1"), k: f("k") }, C: { k: f("k") }, N: { f: f("F1"), k: f("k") }, result: { k: "N" } }));
  rowTest("row 10: deleted locally, image changed → stays deleted + report", () => ({ O: { f: f("F1") }, C: {}, N: { f: f("F2") }, result: {}, reports: ["upstream-also-changed f"] }));
  rowTest("row 11: untouched file removed upstream → removed", () => ({ O: { f: f("F1") }, C: { f: f("F1") }, N: {}, result: {} }));
  rowTest("row 12: edited file in a directory upstream removed → kept, directory re-created from C + report", () => ({
    O: { d: d(), "d/f": f("F1") },
    C: { d: d(), "d/f": f("F2") },
    N: {},
    result: { d: "C", "d/f": "C" },
    reports: ["orphaned-local d", "upstream-also-changed d/f"],
  }));
  rowTest("row 13: new local file → kept", () => ({ O: {}, C: { f: f("F") }, N: {}, result: { f: "C" } }));
  rowTest("row 14: added on both sides → local + report", () => ({ O: {}, C: { f: f("F1") }, N: { f: f("F2") }, result: { f: "C" }, reports: ["upstream-also-changed f"] }));
  rowTest("row 15: edited file compared by content (fs-verity never short-cuts it) → local", () => ({
    // This kernel has no fs-verity, so the O and C copies cannot report it;
    // the walker never looks at verity: content SHA-256 is the comparison.
    O: { f: f("F1".repeat(40)) },
    C: { f: f("F2".repeat(40)) },
    N: { f: f("F1".repeat(40)) },
    result: { f: "C" },
  }));
  rowTest("row 16: retargeted symlink → local (image unchanged or changed)", () => ({
    O: { l1: l("a"), l2: l("a") },
    C: { l1: l("b"), l2: l("b") },
    N: { l1: l("a"), l2: l("c") },
    result: { l1: "C", l2: "C" },
    reports: ["upstream-also-changed l2"],
  }));
  rowTest("row 17: new dangling symlink → copied as a link, never resolved", () => ({ O: {}, C: { l: l("/ENOENT/no-such-file") }, N: {}, result: { l: "C" } }));
  rowTest("row 18: file replaced by a symlink locally → the link", () => ({ O: { p: f("F") }, C: { p: l("x") }, N: { p: f("F") }, result: { p: "C" } }));
  rowTest("row 19: removed locally, image has a symlink out of /etc → removed, only the link", () => ({
    O: { p1: f("F"), p2: l(`${trap}/victim`) },
    C: {},
    N: { p1: l(`${trap}/victim`), p2: l(`${trap}/victim`) },
    result: {},
    reports: ["upstream-also-changed p1"],
  }));
  rowTest("row 20: directory chmod 0700 locally → kept", () => ({ O: { d: d(), "d/x": f("x") }, C: { d: d({ mode: 0o700 }), "d/x": f("x") }, N: { d: d(), "d/x": f("x") }, result: { d: "C", "d/x": "N" } }));
  rowTest("row 21: file edited in a directory whose mode changed upstream → upstream mode + local file", () => ({
    O: { d: d(), "d/x": f("F1") },
    C: { d: d(), "d/x": f("F2") },
    N: { d: d({ mode: 0o700 }), "d/x": f("F1") },
    result: { d: "N", "d/x": "C" },
  }));
  rowTest("row 22: new local directory tree with custom modes → kept", () => ({
    O: {},
    C: { a: d({ mode: 0o700 }), "a/long": d({ mode: 0o770 }), "a/long/dir": d({ mode: 0o777 }), "a/long/dir/chain": d({ mode: 0o707 }), "a/long/dir/forking": d({ mode: 0o700 }), "a/long/dir/chain/f": f("f", { mode: 0o600, uid: 7 }) },
    N: {},
    result: { a: "C", "a/long": "C", "a/long/dir": "C", "a/long/dir/chain": "C", "a/long/dir/forking": "C", "a/long/dir/chain/f": "C" },
  }));
  rowTest("row 23: file added in a directory upstream removed → directory re-created from C with the local file + report", () => ({
    O: { d: d(), "d/a": f("a") },
    C: { d: d(), "d/a": f("a"), "d/b": f("b") },
    N: {},
    result: { d: "C", "d/b": "C" },
    reports: ["orphaned-local d"],
  }));
  rowTest("row 24: directory removed locally, upstream added into it → stays removed + report", () => ({
    O: { d: d(), "d/a": f("a") },
    C: {},
    N: { d: d(), "d/a": f("a"), "d/c": f("c") },
    result: {},
    reports: ["dropped-upstream d/c"],
  }));
  rowTest("row 25: untouched or new directories gain children upstream → they appear", () => ({
    O: { d: d() },
    C: { d: d() },
    N: { d: d(), "d/afile": f("a"), "d/bfile": f("b"), e: d(), "e/x": f("x") },
    result: { d: "N", "d/afile": "N", "d/bfile": "N", e: "N", "e/x": "N" },
  }));
  rowTest("row 26: locally modified file, upstream made it a directory → refused", () => ({ O: { p: f("F1") }, C: { p: f("F2") }, N: { p: d(), "p/z": f("z") }, conflicts: ["file-now-directory p"], reports: ["dropped-upstream p/z"] }));
  rowTest("row 27: file added locally, directory added upstream → refused", () => ({ O: {}, C: { p: f("F") }, N: { p: d() }, conflicts: ["file-now-directory p"] }));
  rowTest("row 28: directory added locally, file added upstream → refused", () => ({ O: {}, C: { p: d(), "p/x": f("x") }, N: { p: f("F") }, conflicts: ["directory-now-file p"] }));
  rowTest("row 29: file replaced by a directory locally, image unchanged → the local directory", () => ({
    O: { p: f("F") },
    C: { p: d({ mode: 0o750 }), "p/x": f("x") },
    N: { p: f("F") },
    result: { p: "C", "p/x": "C" },
  }));
  rowTest("row 30: directory replaced by a file locally, image unchanged → the local file, N's subtree gone", () => ({
    O: { p: d(), "p/a": f("a") },
    C: { p: f("F") },
    N: { p: d(), "p/a": f("a") },
    result: { p: "C" },
  }));
  rowTest("row 31: untouched directory became a symlink upstream → the symlink", () => ({
    O: { ssl: d(), "ssl/certs": d(), "ssl/certs/a.pem": f("a") },
    C: { ssl: d(), "ssl/certs": d(), "ssl/certs/a.pem": f("a") },
    N: { ssl: d(), "ssl/certs": l("../pki/tls/certs"), pki: d(), "pki/tls": d(), "pki/tls/certs": d(), "pki/tls/certs/a.pem": f("a") },
    result: { ssl: "N", "ssl/certs": "N", pki: "N", "pki/tls": "N", "pki/tls/certs": "N", "pki/tls/certs/a.pem": "N" },
  }));
  rowTest("row 32: edit inside a directory that became an absolute symlink upstream → refused, never followed", () => ({
    O: { d: d(), "d/a": f("a") },
    C: { d: d(), "d/a": f("a2") },
    N: { d: l(trap) },
    conflicts: ["parent-now-not-directory d"],
    reports: ["upstream-also-changed d/a"],
  }));
  rowTest("row 33: file deleted locally, upstream made it a directory → stays deleted + reports", () => ({
    O: { p: f("F1") },
    C: {},
    N: { p: d(), "p/x": f("x") },
    result: {},
    reports: ["upstream-also-changed p", "dropped-upstream p/x"],
  }));
  rowTest("row 34: directory deleted locally, upstream made it a file → stays deleted + report", () => ({ O: { p: d(), "p/a": f("a") }, C: {}, N: { p: f("F") }, result: {}, reports: ["upstream-also-changed p"] }));
  rowTest("row 35: fifo, socket and device node in the live /etc → ignored + reported", () => ({
    O: {},
    C: { "fifo-to-ignore": fifo(), "sock-to-ignore": sock(), null: chr(), keep: f("k") },
    N: { keep: f("k") },
    result: { keep: "N" },
    reports: ["ignored-special fifo-to-ignore", "ignored-special null", "ignored-special sock-to-ignore"],
  }));
  rowTest("row 36: hardlinked pair edited in place → two separate files", () => ({
    O: { a: f("F1"), b: hl("a") },
    C: { a: f("F2"), b: hl("a") },
    N: {},
    result: { a: f("F2", { mtime: T1 }), b: f("F2", { mtime: T1 }) },
    reports: ["upstream-also-changed a", "upstream-also-changed b"],
  }));
});

describe("upstream regressions through the on-disk merge", () => {
  rowTest("etcmerge-bootc-1924: a directory removed upstream that holds local files", () => ({
    O: { NetworkManager: d(), "NetworkManager/conf.d": d(), "NetworkManager/conf.d/00-default.conf": f("d") },
    C: { NetworkManager: d(), "NetworkManager/conf.d": d(), "NetworkManager/conf.d/00-default.conf": f("d"), "NetworkManager/conf.d/99-local.conf": f("mine"), "NetworkManager/conf.d/dns": l("../dns.conf") },
    N: { hostname: f("h") },
    result: { hostname: "N", NetworkManager: "C", "NetworkManager/conf.d": "C", "NetworkManager/conf.d/99-local.conf": "C", "NetworkManager/conf.d/dns": "C" },
    reports: ["orphaned-local NetworkManager", "orphaned-local NetworkManager/conf.d"],
  }));
  rowTest("etcmerge-composefs-rs-335: an untouched directory that became a symlink upstream", () => ({
    O: { ssl: d(), "ssl/certs": d(), "ssl/certs/ca.pem": f("ca"), "ssl/openssl.cnf": f("cnf") },
    C: { ssl: d(), "ssl/certs": d(), "ssl/certs/ca.pem": f("ca"), "ssl/openssl.cnf": f("my cnf") },
    N: { ssl: d(), "ssl/certs": l("../pki/tls/certs"), "ssl/openssl.cnf": f("cnf") },
    result: { ssl: "N", "ssl/certs": "N", "ssl/openssl.cnf": "C" },
  }));
  rowTest("etcmerge-bootc-2278: a symlink out of /etc removed locally is unlinked, its target untouched", () => ({
    O: { "ext-symlink": l(`${trap}/victim`), "ext-dir": l(trap), keep: f("k") },
    C: { keep: f("k") },
    N: { "ext-symlink": l(`${trap}/victim`), "ext-dir": l(trap), keep: f("k") },
    result: { keep: "N" },
  }));
});
