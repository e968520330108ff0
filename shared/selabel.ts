// SELinux file labelling of boot images (oci.md §7), pure.
//
// The policy comes from the image itself: /etc/selinux/config names the
// policy (SELINUXTYPE=), /etc/selinux/<name>/contexts/files/ holds
// file_contexts (+ .local, .homedirs) and the substitution files
// file_contexts.subs(_dist). Labels must come out exactly as composefs-rs
// computes them, because they are part of the boot image digest:
//
//   - each spec `REGEX [-T] CONTEXT` is matched as `^(REGEX)T$` (or
//     `^(REGEX).$` without a type) against "<path><type char>";
//   - the LAST matching spec wins (file order: file_contexts, .local, .homedirs);
//   - `<<none>>` means no label;
//   - substitutions apply to whole paths during the walk (an aliased directory
//     passes its aliased path down to its children);
//   - hardlinks: the first occurrence labels the leaf; an occurrence needing a
//     different label gets its own copy of the leaf.
//
// Regex dialect. composefs-rs compiles the patterns with the Rust regex
// engine (bytes, Unicode off, `.` matching every byte but NUL — its
// line_terminator is set to 0) and falls back to PCRE2 for patterns that
// engine cannot parse (lookarounds). Patterns are translated here into
// JavaScript RegExp source over byte strings (one char per byte, no `u`
// flag, `s` flag so `.` matches every byte; paths never contain NUL):
// literals, escapes (`\.` `\d` `\w` `\s` `\b` `\A` `\z` `\Z` `\xHH` `\Q…\E`
// …), classes with POSIX names (`[[:alpha:]]`), groups (captures become
// non-capturing), lookarounds, alternation, greedy/lazy quantifiers, atomic
// groups and possessive quantifiers (emulated with a lookahead and a named
// backreference). Everything else — backreferences, inline flags, \p{…},
// recursion, conditionals, set operations in classes — is refused with an
// error naming the file, line and construct, rather than guessed at.
//
// Lookup speed: each spec is filed under its literal prefix (the fixed text
// it must start with); a path only tries the specs whose prefix it starts
// with, newest first, and a spec's RegExp is compiled when first tried.

import { bstrFromUtf8, type BStr } from "./bytes.ts";
import { CfsError } from "./errors.ts";
import { sortedNames, type Dir, type Leaf, type Node } from "./tree.ts";

export const XATTR_SELINUX = "security.selinux";
export const NO_LABEL = "<<none>>";

/** selabel_file(5) type codes, and the character matched for each node type. */
export const TYPE_CHARS = ["b", "c", "d", "p", "l", "s", "-"] as const;
export type TypeChar = (typeof TYPE_CHARS)[number];

export interface FileContextSpec {
  /** The REGEX field as written (a byte string). */
  regex: BStr;
  /** The -T type, or null for "any type". */
  type: TypeChar | null;
  context: string;
  /** Where it came from, for messages: "file_contexts line 12". */
  where: string;
}

// Unicode White_Space (Rust's split_whitespace), as a character class.
const WS = "[\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";
const WS_SPLIT = new RegExp(`${WS}+`);
const WS_TRIM = new RegExp(`^${WS}+|${WS}+$`, "g");

function decodeUtf8(bytes: Uint8Array, name: string): string {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new CfsError(name, "not valid UTF-8");
  }
}

function textLines(data: Uint8Array | string, name: string): string[] {
  const text = typeof data === "string" ? data : decodeUtf8(data, name);
  const lines = text.split("\n");
  if (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  return lines.map((l) => (l.endsWith("\r") ? l.slice(0, -1) : l));
}

function tokens(line: string): string[] {
  return line.replace(WS_TRIM, "").split(WS_SPLIT).filter((t) => t !== "");
}

/** Parse a file_contexts file. `name` names it in errors. */
export function parseFileContexts(data: Uint8Array | string, name = "file_contexts"): FileContextSpec[] {
  const out: FileContextSpec[] = [];
  textLines(data, name).forEach((line, i) => {
    const where = `${name}: line ${i + 1}`;
    const t = tokens(line);
    if (t.length === 0 || t[0]!.startsWith("#")) return;
    if (t.length < 2) throw new CfsError(where, "missing context after the regular expression");
    let type: TypeChar | null = null;
    let context: string;
    let rest: number;
    if (t[1]!.startsWith("-")) {
      const code = t[1]!.slice(1);
      if (!(TYPE_CHARS as readonly string[]).includes(code)) throw new CfsError(where, `invalid file type code ${t[1]}`);
      type = code as TypeChar;
      if (t.length < 3) throw new CfsError(where, "missing context after the file type");
      context = t[2]!;
      rest = 3;
    } else {
      context = t[1]!;
      rest = 2;
    }
    if (t.length > rest) throw new CfsError(where, `trailing data "${t.slice(rest).join(" ").slice(0, 60)}"`);
    out.push({ regex: bstrFromUtf8(t[0]!), type, context, where });
  });
  return out;
}

/** Parse file_contexts.subs / .subs_dist: `ALIAS ORIGINAL` per line. */
export function parseSubs(data: Uint8Array | string, name = "file_contexts.subs", into = new Map<BStr, BStr>()): Map<BStr, BStr> {
  textLines(data, name).forEach((line, i) => {
    const where = `${name}: line ${i + 1}`;
    const t = tokens(line);
    if (t.length === 0 || t[0]!.startsWith("#")) return;
    if (t.length < 2) throw new CfsError(where, "missing original path");
    if (t.length > 2) throw new CfsError(where, "trailing data");
    into.set(bstrFromUtf8(t[0]!), bstrFromUtf8(t[1]!));
  });
  return into;
}

/** /etc/selinux/config: the trimmed value of the first `SELINUXTYPE=` line (key case-insensitive), or null. */
export function parseSelinuxConfig(data: Uint8Array | string, name = "/etc/selinux/config"): string | null {
  for (const line of textLines(data, name)) {
    const eq = line.indexOf("=");
    if (eq < 0) continue;
    if (line.slice(0, eq).replace(WS_TRIM, "").toLowerCase() === "selinuxtype") return line.slice(eq + 1).replace(WS_TRIM, "");
  }
  return null;
}

// ---- PCRE subset → JavaScript ------------------------------------------------------------

export interface TranslatedRegex {
  /** JavaScript RegExp source (use with flag "s", no "u"). */
  source: string;
  /** Text every match must start with ("" when unknown). */
  prefix: BStr;
}

const POSIX_CLASSES: Record<string, string> = {
  alpha: "A-Za-z",
  digit: "0-9",
  alnum: "0-9A-Za-z",
  upper: "A-Z",
  lower: "a-z",
  space: "\\t\\n\\v\\f\\r ",
  blank: "\\t ",
  punct: "!-\\/:-@\\[-`{-~",
  print: " -~",
  graph: "!-~",
  cntrl: "\\x00-\\x1f\\x7f",
  xdigit: "0-9A-Fa-f",
  word: "0-9A-Za-z_",
};

const SPACE_CHARS = "\\t\\n\\v\\f\\r ";

/** A byte as a literal in JS regex source (outside or inside a class). */
function lit(c: string): string {
  const code = c.charCodeAt(0);
  if ((code >= 0x30 && code <= 0x39) || (code >= 0x41 && code <= 0x5a) || (code >= 0x61 && code <= 0x7a) || c === "_") return c;
  if (code >= 0x21 && code <= 0x7e) return "\\" + c;
  return "\\x" + code.toString(16).padStart(2, "0");
}

const SIMPLE_ESCAPES: Record<string, string> = { n: "\n", t: "\t", r: "\r", f: "\f", v: "\v", e: "\x1b", a: "\x07" };

class Translator {
  private i = 0;
  private named = 0;
  constructor(private readonly p: BStr, private readonly where: string) {}

  private fail(what: string): never {
    throw new CfsError(this.where, `regular expression ${JSON.stringify(this.p).slice(0, 120)}: ${what}`);
  }

  /** An escape outside a class: returns [js source, literal char or null]. */
  private escape(): [string, string | null] {
    const c = this.p[this.i++];
    if (c === undefined) this.fail("trailing backslash");
    switch (c) {
      case "d":
      case "D":
      case "w":
      case "W":
      case "b":
      case "B":
        return ["\\" + c, null];
      case "s":
        return [`[${SPACE_CHARS}]`, null];
      case "S":
        return [`[^${SPACE_CHARS}]`, null];
      case "A":
        return ["^", null];
      case "z":
        return ["$", null];
      case "Z":
        return ["(?=\\n?$)", null];
      case "x":
        return this.hexEscape();
      case "0": {
        const m = /^[0-7]{0,2}/.exec(this.p.slice(this.i))![0];
        this.i += m.length;
        const ch = String.fromCharCode(parseInt("0" + m, 8));
        return [lit(ch), ch];
      }
    }
    if (c in SIMPLE_ESCAPES) {
      const ch = SIMPLE_ESCAPES[c]!;
      return [lit(ch), ch];
    }
    if (/[0-9A-Za-z]/.test(c)) this.fail(`unsupported escape \\${c}`);
    return [lit(c), c];
  }

  private hexEscape(): [string, string] {
    let code: number;
    if (this.p[this.i] === "{") {
      const end = this.p.indexOf("}", this.i);
      const hex = end < 0 ? "" : this.p.slice(this.i + 1, end);
      if (!/^[0-9A-Fa-f]{1,8}$/.test(hex)) this.fail("malformed \\x{…} escape");
      code = parseInt(hex, 16);
      this.i = end + 1;
    } else {
      const m = /^[0-9A-Fa-f]{0,2}/.exec(this.p.slice(this.i))![0];
      this.i += m.length;
      code = m === "" ? 0 : parseInt(m, 16);
    }
    if (code > 0xff) this.fail("\\x escape above 0xff (patterns match bytes)");
    const ch = String.fromCharCode(code);
    return [lit(ch), ch];
  }

  private cls(): string {
    // this.p[this.i - 1] === "["
    let out = "[";
    if (this.p[this.i] === "^") {
      out += "^";
      this.i++;
    }
    let first = true;
    for (;;) {
      const c = this.p[this.i];
      if (c === undefined) this.fail("unterminated character class");
      if (c === "]" && !first) {
        this.i++;
        break;
      }
      first = false;
      if (c === "[") {
        const m = /^\[:(\^?)([a-z]+):\]/.exec(this.p.slice(this.i));
        if (m !== null) {
          const body = POSIX_CLASSES[m[2]!];
          if (body === undefined) this.fail(`unknown POSIX class [:${m[2]}:]`);
          if (m[1] === "^") this.fail("negated POSIX classes are not supported");
          out += body;
          this.i += m[0].length;
          continue;
        }
        if (/^\[[.=]/.test(this.p.slice(this.i))) this.fail("collating elements in a class are not supported");
        this.fail("'[' inside a character class (nested classes are ambiguous between PCRE2 and the Rust regex engine)");
      }
      if ((c === "&" && this.p[this.i + 1] === "&") || (c === "~" && this.p[this.i + 1] === "~")) {
        this.fail("class set operations are not supported");
      }
      if (c === "\\") {
        this.i++;
        const e = this.p[this.i];
        if (e === undefined) this.fail("trailing backslash");
        if ("dDwW".includes(e)) {
          out += "\\" + e;
          this.i++;
        } else if (e === "s") {
          out += SPACE_CHARS;
          this.i++;
        } else if (e === "b") {
          out += "\\x08";
          this.i++;
        } else if (e === "x") {
          this.i++;
          out += this.hexEscape()[0];
        } else if (e in SIMPLE_ESCAPES) {
          out += lit(SIMPLE_ESCAPES[e]!);
          this.i++;
        } else if (/[0-9A-Za-z]/.test(e)) {
          this.fail(`unsupported escape \\${e} in a character class`);
        } else {
          out += lit(e);
          this.i++;
        }
        continue;
      }
      if (c === "-") {
        out += "-";
        this.i++;
        continue;
      }
      out += lit(c);
      this.i++;
    }
    return out + "]";
  }

  /** Parse an alternation up to `)` or the end. Returns the source and, at top level, the literal prefix. */
  alternation(depth: number): { source: string; prefix: BStr } {
    const branches: string[] = [];
    let prefix: BStr = "";
    let prefixOpen = depth === 0;
    let atoms: string[] = [];
    let lits: (string | null)[] = [];
    const endBranch = () => {
      branches.push(atoms.join(""));
      atoms = [];
      lits = [];
    };
    for (;;) {
      const c = this.p[this.i];
      if (c === undefined || c === ")") {
        if (c === ")" && depth === 0) this.fail("unmatched ')'");
        if (c === undefined && depth > 0) this.fail("missing ')'");
        endBranch();
        break;
      }
      this.i++;
      if (c === "|") {
        endBranch();
        prefixOpen = false;
        prefix = "";
        continue;
      }
      // Quantifiers apply to the previous atom.
      const q = this.quantifier(c);
      if (q !== null) {
        if (atoms.length === 0) this.fail(`quantifier '${c}' with nothing to repeat`);
        const k = atoms.length - 1;
        if (lits[k] !== null && prefixOpen) {
          prefix = prefix.slice(0, -1);
          prefixOpen = false;
        }
        const atom = atoms[k]!;
        let mod = "";
        if (this.p[this.i] === "?") {
          mod = "?";
          this.i++;
        } else if (this.p[this.i] === "+") {
          mod = "+";
          this.i++;
        }
        if (this.p[this.i] !== undefined && this.quantifierStart(this.p[this.i]!)) this.fail("nested quantifier");
        const base = `(?:${atom})${q}`;
        atoms[k] = mod === "+" ? this.atomic(base) : base + mod;
        lits[k] = null;
        continue;
      }
      let src: string;
      let literal: string | null = null;
      switch (c) {
        case "\\": {
          if (this.p[this.i] === "Q") {
            this.i++;
            let end = this.p.indexOf("\\E", this.i);
            if (end < 0) end = this.p.length;
            const text = this.p.slice(this.i, end);
            this.i = Math.min(this.p.length, end + 2);
            for (const ch of text) {
              atoms.push(lit(ch));
              lits.push(ch);
              if (prefixOpen) prefix += ch;
            }
            continue;
          }
          [src, literal] = this.escape();
          break;
        }
        case ".":
          src = ".";
          break;
        case "^":
        case "$":
          src = c;
          break;
        case "[":
          src = this.cls();
          break;
        case "(":
          src = this.group(depth);
          break;
        default:
          src = lit(c);
          literal = c;
      }
      atoms.push(src);
      lits.push(literal);
      if (prefixOpen) {
        if (literal !== null) prefix += literal;
        else prefixOpen = false;
      }
    }
    return { source: branches.join("|"), prefix };
  }

  /** Does the text at this.i (its first char is `c`) start a quantifier? */
  private quantifierStart(c: string): boolean {
    return c === "*" || c === "+" || c === "?" || (c === "{" && /^\{\d+(,\d*)?\}/.test(this.p.slice(this.i)));
  }

  /** If `c` (already consumed) starts a quantifier, consume it and return its JS form. */
  private quantifier(c: string): string | null {
    if (c === "*" || c === "+" || c === "?") return c;
    if (c !== "{") return null;
    const m = /^(\d*)(?:(,)(\d*))?\}/.exec(this.p.slice(this.i));
    if (m === null || (m[1] === "" && (m[3] ?? "") === "")) return null; // a literal '{'
    if (m[1] === "") this.fail("quantifier {,n} is read differently by PCRE2 versions");
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : m[3] === "" ? Infinity : Number(m[3]);
    if (hi < lo) this.fail(`quantifier {${lo},${hi}} out of order`);
    if (lo > 1000 || (hi !== Infinity && hi > 1000)) this.fail("repetition count above 1000");
    this.i += m[0].length;
    return m[2] === undefined ? `{${lo}}` : hi === Infinity ? `{${lo},}` : `{${lo},${hi}}`;
  }

  private atomic(inner: string): string {
    const n = `a${this.named++}`;
    return `(?=(?<${n}>${inner}))\\k<${n}>`;
  }

  private group(depth: number): string {
    if (this.p[this.i] !== "?") return `(?:${this.close(depth)})`;
    const rest = this.p.slice(this.i + 1);
    const take = (n: number) => {
      this.i += 1 + n;
    };
    if (rest.startsWith(":")) return take(1), `(?:${this.close(depth)})`;
    if (rest.startsWith("=")) return take(1), `(?=${this.close(depth)})`;
    if (rest.startsWith("!")) return take(1), `(?!${this.close(depth)})`;
    if (rest.startsWith("<=")) return take(2), `(?<=${this.close(depth)})`;
    if (rest.startsWith("<!")) return take(2), `(?<!${this.close(depth)})`;
    if (rest.startsWith(">")) return take(1), this.atomic(this.close(depth));
    if (rest.startsWith("#")) {
      const end = this.p.indexOf(")", this.i);
      if (end < 0) this.fail("unterminated comment group");
      this.i = end + 1;
      return "";
    }
    const named = /^(?:P?<([A-Za-z_][A-Za-z0-9_]*)>|'([A-Za-z_][A-Za-z0-9_]*)')/.exec(rest);
    if (named !== null) return take(named[0].length), `(?:${this.close(depth)})`;
    this.fail(`unsupported group construct (?${rest.slice(0, 3)}`);
  }

  /** The body of a group up to its ')', consumed. */
  private close(depth: number): string {
    const { source } = this.alternation(depth + 1);
    if (this.p[this.i] !== ")") this.fail("missing ')'");
    this.i++;
    return source;
  }
}

/** Translate one file_contexts regular expression (a byte string). */
export function translateRegex(pattern: BStr, where = "regular expression"): TranslatedRegex {
  const t = new Translator(pattern, where);
  const { source, prefix } = t.alternation(0);
  return { source, prefix };
}

// ---- the policy ----------------------------------------------------------------------------

interface CompiledSpec {
  spec: FileContextSpec;
  source: string;
  re: RegExp | null;
}

export class SelinuxPolicy {
  readonly specs: readonly FileContextSpec[];
  readonly aliases: ReadonlyMap<BStr, BStr>;
  private readonly compiled: CompiledSpec[];
  /** Literal prefix → spec indexes, highest (newest) first. */
  private readonly buckets = new Map<BStr, number[]>();
  private readonly prefixLengths: number[];

  /** Translates every spec now, so an unsupported pattern fails here, not halfway through a walk. */
  constructor(specs: readonly FileContextSpec[], aliases: ReadonlyMap<BStr, BStr> = new Map()) {
    this.specs = specs;
    this.aliases = aliases;
    this.compiled = specs.map((spec, i) => {
      const { source, prefix } = translateRegex(spec.regex, spec.where);
      const type = spec.type === null ? "." : lit(spec.type);
      const full = `^(?:${source})${type}$`;
      let b = this.buckets.get(prefix);
      if (b === undefined) this.buckets.set(prefix, (b = []));
      b.push(i);
      return { spec, source: full, re: null };
    });
    for (const b of this.buckets.values()) b.reverse();
    this.prefixLengths = [...new Set([...this.buckets.keys()].map((k) => k.length))].sort((a, b) => a - b);
  }

  private regex(c: CompiledSpec): RegExp {
    if (c.re === null) {
      try {
        c.re = new RegExp(c.source, "s");
      } catch (e) {
        throw new CfsError(c.spec.where, `regular expression ${JSON.stringify(c.spec.regex).slice(0, 120)}: ${(e as Error).message}`);
      }
    }
    return c.re;
  }

  /** Index of the winning spec for (path, type), or -1. */
  matchIndex(path: BStr, type: TypeChar): number {
    const key = path + type;
    let cands: number[] | null = null;
    let merged = false;
    for (const len of this.prefixLengths) {
      if (len > key.length) break;
      const b = this.buckets.get(key.slice(0, len));
      if (b === undefined) continue;
      if (cands === null) cands = b;
      else {
        if (!merged) {
          cands = [...cands];
          merged = true;
        }
        cands.push(...b);
      }
    }
    if (cands === null) return -1;
    if (merged) cands.sort((a, b) => b - a);
    for (const i of cands) {
      const c = this.compiled[i]!;
      if (c.spec.type !== null && c.spec.type !== type) continue;
      if (this.regex(c).test(key)) return i;
    }
    return -1;
  }

  /** The label for (path, type), or null (no match, or <<none>>). */
  lookup(path: BStr, type: TypeChar): string | null {
    const i = this.matchIndex(path, type);
    if (i < 0) return null;
    const ctx = this.specs[i]!.context;
    return ctx === NO_LABEL ? null : ctx;
  }

  /** The path a node at `path` is looked up as (substitutions), or `path`. */
  aliased(path: BStr): BStr {
    return this.aliases.get(path) ?? path;
  }
}

// ---- reading the policy from a tree ----------------------------------------------------------------

/**
 * Reads a regular file's bytes. Returns null for a file whose bytes are not
 * available (a sparse file); the host reads inline data or the object.
 */
export type ReadFile = (leaf: Leaf, path: BStr) => Uint8Array | null;

function child(dir: Dir, name: BStr): Node | undefined {
  return dir.entries.get(name);
}

function dirOrNull(root: Dir, path: BStr, required: boolean): Dir | null {
  let d = root;
  let at = "";
  for (const part of path.slice(1).split("/")) {
    at += "/" + part;
    const n = child(d, part);
    if (n === undefined) {
      if (required) throw new CfsError(at, "no such directory in the image");
      return null;
    }
    if (n.kind !== "dir") throw new CfsError(at, "not a directory in the image");
    d = n;
  }
  return d;
}

function fileOrNull(dir: Dir, dirPath: BStr, name: BStr, read: ReadFile): Uint8Array | null {
  const n = child(dir, name);
  const path = `${dirPath}/${name}`;
  if (n === undefined) return null;
  if (n.kind === "dir") throw new CfsError(path, "is a directory, expected a file");
  if (n.content.type !== "regular") throw new CfsError(path, "is not a regular file");
  return read(n, path);
}

/**
 * The policy an image asks for, or null when it has none (no /etc/selinux,
 * no config, or no SELINUXTYPE line). A named policy without file_contexts is
 * an error.
 */
export function loadPolicy(root: Dir, read: ReadFile): SelinuxPolicy | null {
  const etc = dirOrNull(root, "/etc/selinux", false);
  if (etc === null) return null;
  const config = fileOrNull(etc, "/etc/selinux", "config", read);
  if (config === null) return null;
  const name = parseSelinuxConfig(config);
  if (name === null) return null;
  const dirPath = `/etc/selinux/${bstrFromUtf8(name)}/contexts/files`;
  if (name === "" || name.includes("/")) throw new CfsError("/etc/selinux/config", `invalid SELINUXTYPE "${name}"`);
  const dir = dirOrNull(root, dirPath, true)!;
  const specs: FileContextSpec[] = [];
  for (const suffix of ["", ".local", ".homedirs"]) {
    const data = fileOrNull(dir, dirPath, `file_contexts${suffix}`, read);
    if (data === null) {
      if (suffix === "") throw new CfsError(`${dirPath}/file_contexts`, "the SELinux policy has no file_contexts");
      continue;
    }
    specs.push(...parseFileContexts(data, `${dirPath}/file_contexts${suffix}`));
  }
  const aliases = new Map<BStr, BStr>();
  for (const suffix of [".subs", ".subs_dist"]) {
    const data = fileOrNull(dir, dirPath, `file_contexts${suffix}`, read);
    if (data !== null) parseSubs(data, `${dirPath}/file_contexts${suffix}`, aliases);
  }
  return new SelinuxPolicy(specs, aliases);
}

// ---- labelling a tree ----------------------------------------------------------------------------

function typeChar(node: Node): TypeChar {
  if (node.kind === "dir") return "d";
  switch (node.content.type) {
    case "regular":
      return "-";
    case "symlink":
      return "l";
    case "chr":
      return "c";
    case "blk":
      return "b";
    case "fifo":
      return "p";
    case "socket":
      return "s";
  }
}

function setLabel(xattrs: Map<BStr, Uint8Array>, label: string | null): void {
  if (label === null) xattrs.delete(XATTR_SELINUX);
  else xattrs.set(XATTR_SELINUX, new Uint8Array(Buffer.from(label, "utf8")));
}

/** Label every node of `root` per `policy` (in place). */
export function relabel(root: Dir, policy: SelinuxPolicy): void {
  const labeled = new Map<Leaf, string | null>();
  const walkDir = (dir: Dir, path: BStr) => {
    setLabel(dir.stat.xattrs, policy.lookup(path, "d"));
    const base = path === "/" ? "" : path;
    for (const name of sortedNames(dir)) {
      const node = dir.entries.get(name)!;
      const effective = policy.aliased(`${base}/${name}`);
      if (node.kind === "dir") {
        walkDir(node, effective);
        continue;
      }
      const label = policy.lookup(effective, typeChar(node));
      const key = label;
      const prev = labeled.get(node);
      let target = node;
      if (prev === undefined) {
        labeled.set(node, key);
      } else if (prev !== key) {
        // A hardlink that needs another label: this entry gets its own copy.
        target = { kind: "leaf", stat: { ...node.stat, xattrs: new Map(node.stat.xattrs) }, content: node.content };
        dir.entries.set(name, target);
      }
      setLabel(target.stat.xattrs, label);
    }
  };
  walkDir(root, "/");
}

/** Remove security.selinux from every node. */
export function stripLabels(root: Dir): void {
  const seen = new Set<Leaf>();
  const stack: Dir[] = [root];
  while (stack.length > 0) {
    const d = stack.pop()!;
    d.stat.xattrs.delete(XATTR_SELINUX);
    for (const c of d.entries.values()) {
      if (c.kind === "dir") stack.push(c);
      else if (!seen.has(c)) {
        seen.add(c);
        c.stat.xattrs.delete(XATTR_SELINUX);
      }
    }
  }
}

/**
 * composefs-rs `selabel`: label the tree from its own policy, or strip every
 * label when it has none. Returns whether a policy was applied.
 */
export function selabel(root: Dir, read: ReadFile): boolean {
  const policy = loadPolicy(root, read);
  if (policy === null) {
    stripLabels(root);
    return false;
  }
  relabel(root, policy);
  return true;
}
