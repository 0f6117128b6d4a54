import fs from 'node:fs';
import { Ajv, type ErrorObject } from 'ajv';
import { KernscopeError } from '../errors.js';
import { describeError, errorParts, keyPath, parseYaml } from '../config/errors.js';
import type { ProcessInfo } from '../process/table.js';

export const SEVERITIES = ['info', 'low', 'medium', 'high', 'critical'] as const;
export const EVENTS = ['exec', 'open', 'connect', 'ptrace', 'setuid', 'stdio_socket', 'module', 'unlink', 'rename', 'truncate', 'link'] as const;
/** Events on a path the kernel watches by prefix. */
const PATH_EVENTS: ReadonlySet<string> = new Set(['open', 'unlink', 'rename', 'truncate', 'link']);
export type RuleEvent = (typeof EVENTS)[number];
export type Severity = (typeof SEVERITIES)[number];

/** What a process must be: every key present must hold. */
export interface ProcMatch {
  /** Globs on the executable's name (`sh`, `python3*`). */
  name?: string[];
  /** Globs on the executable's path (`/tmp/*`, `memfd:*`). */
  exe?: string[];
  /** Globs on the argument list joined by spaces, or `/regex/` forms. */
  args?: string[];
  uid?: number[];
  /** Globs on the cgroup path. */
  cgroup?: string[];
  /** The process listens on a TCP socket: it serves. */
  server?: boolean;
}

export interface RuleMatch extends ProcMatch {
  /** open, unlink, rename, truncate, link: globs on the path (made absolute when relative to the working directory) */
  path?: string[];
  /** open: what the open allows; `truncate`: it empties the file (O_TRUNC) */
  access?: 'read' | 'write' | 'truncate';
  /** connect: destination ports */
  port?: number[];
  /**
   * connect: the destination port is none that the nearest serving process
   * of the chain (itself or an ancestor) listens on, nor in `allow`. Makes
   * the kernel report every connect: opt-in.
   */
  unlistedPort?: { allow?: number[] };
  /** exec: a TCP/UDP socket is on the new program's fd 0, 1 or 2 */
  stdioSocket?: boolean;
  /** exec in a container: the file run was written after the container (its pid namespace) started */
  exeNew?: boolean;
  parent?: ProcMatch;
  /** Some ancestor within `depth` generations (default 4) matches. */
  ancestor?: ProcMatch & { depth?: number };
  /** The rule does not fire if this matches, or any of these (same keys as a rule's match). */
  not?: Omit<RuleMatch, 'not'> | Array<Omit<RuleMatch, 'not'>>;
}

export interface Rule {
  name: string;
  description?: string;
  severity: Severity;
  /** One event, or several the same match applies to (`[open, rename, unlink]`). */
  event: RuleEvent | RuleEvent[];
  match: RuleMatch;
  /** `kill`: SIGKILL from the kernel at the exec or connect that matched. */
  actions?: Array<'alert' | 'kill'>;
  /** `{name}`, `{exe}`, `{args}`, `{parent}`, `{ancestry}`, `{pid}`, `{cwd}` (and per event `{path}`, `{port}`, `{target}`, `{fd}`, `{peer}`) are filled in. */
  message?: string;
  enabled?: boolean;
}

const procMatch = {
  type: 'object',
  additionalProperties: false,
  properties: {
    name: { type: 'array', items: { type: 'string', minLength: 1 }, minItems: 1 },
    exe: { type: 'array', items: { type: 'string', minLength: 1 }, minItems: 1 },
    args: { type: 'array', items: { type: 'string', minLength: 1, format: 'glob-or-regex' }, minItems: 1 },
    uid: { type: 'array', items: { type: 'integer', minimum: 0 }, minItems: 1 },
    cgroup: { type: 'array', items: { type: 'string', minLength: 1 }, minItems: 1 },
    server: { type: 'boolean' },
  },
} as const;

const ruleMatchProps = {
  ...procMatch.properties,
  path: { type: 'array', items: { type: 'string', pattern: '^/' }, minItems: 1 },
  access: { enum: ['read', 'write', 'truncate'] },
  port: { type: 'array', items: { type: 'integer', minimum: 1, maximum: 65535 }, minItems: 1 },
  stdioSocket: { type: 'boolean' },
  exeNew: { type: 'boolean' },
  unlistedPort: { type: 'object', additionalProperties: false, properties: { allow: { type: 'array', items: { type: 'integer', minimum: 1, maximum: 65535 } } } },
  parent: procMatch,
  ancestor: { ...procMatch, properties: { ...procMatch.properties, depth: { type: 'integer', minimum: 1, maximum: 32 } } },
};

/** A case a rule must not alert on, added from another file (a default rule's noise on this node). */
export interface RuleException {
  rule: string;
  description?: string;
  match: Omit<RuleMatch, 'not'>;
}

export const RULES_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: {
    exceptions: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['rule', 'match'],
        properties: {
          rule: { type: 'string', minLength: 1 },
          description: { type: 'string' },
          match: { type: 'object', additionalProperties: false, minProperties: 1, properties: ruleMatchProps },
        },
      },
    },
    rules: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'severity', 'match'],
        properties: {
          name: { type: 'string', pattern: '^[a-z0-9][a-z0-9_-]{0,63}$' },
          description: { type: 'string' },
          severity: { enum: SEVERITIES },
          event: { oneOf: [{ enum: EVENTS }, { type: 'array', items: { enum: EVENTS }, minItems: 1, uniqueItems: true }] },
          actions: { type: 'array', items: { enum: ['alert', 'kill'] } },
          message: { type: 'string' },
          enabled: { type: 'boolean' },
          match: {
            type: 'object',
            additionalProperties: false,
            minProperties: 1,
            properties: {
              ...ruleMatchProps,
              not: {
                oneOf: [
                  { type: 'object', additionalProperties: false, properties: ruleMatchProps },
                  { type: 'array', minItems: 1, items: { type: 'object', additionalProperties: false, properties: ruleMatchProps } },
                ],
              },
            },
          },
        },
      },
    },
  },
} as const;

function isRegex(s: string): boolean {
  return s.length > 2 && s.startsWith('/') && s.endsWith('/');
}

const ajv = new Ajv({ allErrors: false, strict: true });
ajv.addFormat('glob-or-regex', {
  validate: (s: string) => {
    if (!isRegex(s)) return true;
    try {
      new RegExp(s.slice(1, -1));
      return true;
    } catch {
      return false;
    }
  },
});
const validate = ajv.compile(RULES_SCHEMA);

/** "rule "name": key.path", or the key's path outside a rule. */
function where(e: ErrorObject, doc: { rules?: Array<{ name?: unknown }> }): string {
  const parts = errorParts(e);
  let rule = '';
  if (parts[0] === 'rules' && parts[1] !== undefined) {
    const n = doc.rules?.[Number(parts[1])]?.name;
    rule = `rule ${typeof n === 'string' ? `"${n}"` : `#${Number(parts[1]) + 1}`}: `;
    parts.splice(0, 2);
  }
  return `${rule}${keyPath(parts)}`;
}

/** Parses and validates a rules document; errors name the rule and the key. */
export function parseRules(text: string, source: string): Rule[] {
  return parseRuleFile(text, source).rules;
}

/** A rules document: its rules, and its exceptions to rules of any file. */
export function parseRuleFile(text: string, source: string): { rules: Rule[]; exceptions: RuleException[] } {
  const doc = parseYaml(text, source);
  if (!validate(doc)) {
    const e = validate.errors![0]!;
    throw new KernscopeError('ERR_KERNSCOPE_CONFIG', `${source}: ${where(e, doc as never)}: ${describeError(e)}`);
  }
  const rules = ((doc as { rules?: Rule[] }).rules ?? []).map((r) => ({ ...r, event: r.event ?? 'exec' }));
  const exceptions = (doc as { exceptions?: RuleException[] }).exceptions ?? [];
  const events = (r: Rule): RuleEvent[] => [r.event].flat();
  const seen = new Set<string>();
  for (const r of rules) {
    const bad = (msg: string): never => {
      throw new KernscopeError('ERR_KERNSCOPE_CONFIG', `${source}: rule "${r.name}": ${msg}`);
    };
    if (seen.has(r.name)) bad('name used twice');
    seen.add(r.name);
    const keys = Object.keys(r.match);
    const evs = events(r);
    const only = (e: RuleEvent[]): boolean => evs.every((x) => e.includes(x));
    if (r.match.path && !evs.every((e) => PATH_EVENTS.has(e))) bad('match.path needs events on paths only: open, unlink, rename, truncate, link');
    // access narrows opens; the other path events change files by nature.
    if (r.match.access && !evs.includes('open')) bad('match.access needs event: open');
    if (r.match.access === 'read' && !only(['open'])) bad('match.access read needs event: open alone');
    if (r.match.port && !only(['connect'])) bad('match.port needs event: connect');
    if (r.match.unlistedPort && !only(['connect'])) bad('match.unlistedPort needs event: connect');
    if (r.match.stdioSocket !== undefined && !only(['exec'])) bad('match.stdioSocket needs event: exec');
    if (r.match.exeNew !== undefined && !only(['exec'])) bad('match.exeNew needs event: exec');
    for (const e of evs) if (PATH_EVENTS.has(e) && !r.match.path) bad(`event ${e} needs match.path (the kernel watches those paths only)`);
    if (evs.includes('connect') && !r.match.port && !r.match.unlistedPort) bad('event connect needs match.port (the kernel watches those ports only) or match.unlistedPort');
    if (r.match.path?.some((p) => p.split(/[*?]/)[0]!.length > 62)) bad('match.path: the kernel compares at most 62 characters before a wildcard');
    if (r.actions?.includes('kill')) {
      // The kernel decides alone: by the file's name at exec, by the port at connect.
      const decidable =
        (r.event === 'exec' && keys.length === 1 && r.match.name?.every((n) => !/[*?]/.test(n))) ||
        (r.event === 'connect' && keys.length === 1);
      if (!decidable) bad('actions: kill needs a match the kernel can decide alone: only exact names for exec, only ports for connect');
    }
  }
  return { rules, exceptions };
}

export function loadRules(file: string): Rule[] {
  return loadRuleFile(file).rules;
}

export function loadRuleFile(file: string): { rules: Rule[]; exceptions: RuleException[] } {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new KernscopeError('ERR_KERNSCOPE_CONFIG', `${file}: cannot read: ${(e as Error).message}`);
  }
  return parseRuleFile(text, file);
}

/**
 * The rules with every file's exceptions folded into their `not` lists.
 * An exception names a rule of any file; one naming no rule is an error.
 */
export function withExceptions(rules: Rule[], exceptions: Array<RuleException & { source: string }>): Rule[] {
  const byName = new Map(rules.map((r) => [r.name, r]));
  const out = new Map(rules.map((r) => [r.name, r]));
  for (const x of exceptions) {
    const r = byName.get(x.rule);
    if (!r) throw new KernscopeError('ERR_KERNSCOPE_CONFIG', `${x.source}: exception for rule "${x.rule}": no such rule`);
    const cur = out.get(x.rule)!;
    out.set(x.rule, { ...cur, match: { ...cur.match, not: [...[cur.match.not ?? []].flat(), x.match] } });
  }
  return rules.map((r) => out.get(r.name)!);
}

/** A glob (`*` any run, `?` one character) as an anchored RegExp. */
export function globToRegExp(glob: string): RegExp {
  const re = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${re}$`);
}

type Compiled = { test: (s: string) => boolean };

function compileList(list: string[] | undefined, regexAllowed: boolean): Compiled | undefined {
  if (!list) return undefined;
  const res = list.map((s) => (regexAllowed && isRegex(s) ? new RegExp(s.slice(1, -1)) : globToRegExp(s)));
  return { test: (s) => res.some((r) => r.test(s)) };
}

interface CompiledProc {
  name?: Compiled;
  exe?: Compiled;
  args?: Compiled;
  uid?: Set<number>;
  cgroup?: Compiled;
  server?: boolean;
}

function compileProc(m: ProcMatch | undefined): CompiledProc | undefined {
  if (!m) return undefined;
  const c: CompiledProc = {};
  const name = compileList(m.name, false);
  const exe = compileList(m.exe, false);
  const args = compileList(m.args, true);
  const cgroup = compileList(m.cgroup, false);
  if (name) c.name = name;
  if (exe) c.exe = exe;
  if (args) c.args = args;
  if (cgroup) c.cgroup = cgroup;
  if (m.uid) c.uid = new Set(m.uid);
  if (m.server !== undefined) c.server = m.server;
  return c;
}

export interface Facts {
  /** Whether a process listens on a TCP socket (asked only when a rule needs it). */
  isServer(pid: number): boolean;
  /** The TCP ports it listens on (asked only by `unlistedPort`). */
  listenPorts?(pid: number): ReadonlySet<number>;
}

/** What happened, beyond the process: an open's path and mode, a connect's port. */
export interface EventFacts {
  event: RuleEvent;
  path?: string;
  write?: boolean;
  /** open: O_TRUNC */
  truncate?: boolean;
  port?: number;
  /** ptrace: the process taken hold of */
  target?: number;
  /** exec: a TCP/UDP socket on fd 0, 1 or 2 */
  stdioSocket?: boolean;
  /** exec in a container: the file was written after the container started */
  exeNew?: boolean;
  /** stdio_socket: the stream written (0-2), and the socket's peer */
  fd?: number;
  peer?: string;
  /** rename: 1 when the new name is the watched one; link: 1 for a symlink */
  flags?: number;
}

function procMatches(c: CompiledProc, p: ProcessInfo, facts: Facts): boolean {
  if (c.name && !c.name.test(p.name)) return false;
  if (c.exe && !c.exe.test(p.exe)) return false;
  if (c.uid && !c.uid.has(p.uid)) return false;
  if (c.cgroup && !c.cgroup.test(p.cgroup)) return false;
  if (c.args && !c.args.test(p.args.slice(1).join(' '))) return false;
  if (c.server !== undefined && facts.isServer(p.pid) !== c.server) return false;
  return true;
}

interface CompiledMatch {
  path?: Compiled;
  access?: 'read' | 'write' | 'truncate';
  ports?: Set<number>;
  stdioSocket?: boolean;
  exeNew?: boolean;
  unlisted?: { allow: ReadonlySet<number> };
  self: CompiledProc;
  parent?: CompiledProc;
  ancestor?: CompiledProc;
  depth: number;
  not?: CompiledMatch[];
}

function compileMatch(m: RuleMatch): CompiledMatch {
  const c: CompiledMatch = { self: compileProc(m)!, depth: m.ancestor?.depth ?? 4 };
  const path = compileList(m.path, false);
  if (path) c.path = path;
  if (m.access) c.access = m.access;
  if (m.port) c.ports = new Set(m.port);
  if (m.stdioSocket !== undefined) c.stdioSocket = m.stdioSocket;
  if (m.exeNew !== undefined) c.exeNew = m.exeNew;
  if (m.unlistedPort) c.unlisted = { allow: new Set(m.unlistedPort.allow ?? []) };
  const parent = compileProc(m.parent);
  const ancestor = compileProc(m.ancestor);
  if (parent) c.parent = parent;
  if (ancestor) c.ancestor = ancestor;
  if (m.not) c.not = [m.not].flat().map(compileMatch);
  return c;
}

function matches(c: CompiledMatch, chain: ProcessInfo[], facts: Facts, ev: EventFacts): boolean {
  if (c.path && !(ev.path !== undefined && c.path.test(ev.path))) return false;
  if (ev.event === 'open' && (c.access === 'truncate' ? !ev.truncate : c.access && (ev.write ? 'write' : 'read') !== c.access)) return false;
  if (c.ports && !(ev.port !== undefined && c.ports.has(ev.port))) return false;
  if (c.stdioSocket !== undefined && (ev.stdioSocket ?? false) !== c.stdioSocket) return false;
  if (c.exeNew !== undefined && (ev.exeNew ?? false) !== c.exeNew) return false;
  if (c.unlisted && !unlisted(c.unlisted.allow, chain, facts, ev.port)) return false;
  const [self, parent] = chain;
  if (!self || !procMatches(c.self, self, facts)) return false;
  if (c.parent && !(parent && procMatches(c.parent, parent, facts))) return false;
  if (c.ancestor && !chain.slice(1, 1 + c.depth).some((a) => procMatches(c.ancestor!, a, facts))) return false;
  if (c.not?.some((n) => matches(n, chain, facts, ev))) return false;
  return true;
}

/** A port neither allowed nor listened on by the chain's nearest server; no server: no judgement. */
function unlisted(allow: ReadonlySet<number>, chain: ProcessInfo[], facts: Facts, port: number | undefined): boolean {
  if (port === undefined || allow.has(port)) return false;
  const server = chain.find((p) => facts.isServer(p.pid));
  if (!server) return false;
  return !(facts.listenPorts?.(server.pid) ?? new Set()).has(port);
}

export interface Alert {
  rule: string;
  severity: Severity;
  message: string;
  /** The rule asked the kernel to kill the process. */
  kill: boolean;
}

/** Rules compiled once; `evaluate` runs per exec event. */
export class RuleSet {
  private readonly compiled: Array<{ rule: Rule; events: ReadonlySet<RuleEvent>; match: CompiledMatch }>;

  constructor(readonly rules: readonly Rule[]) {
    this.compiled = rules.filter((r) => r.enabled !== false).map((rule) => ({ rule, events: new Set([rule.event].flat()), match: compileMatch(rule.match) }));
  }

  /** `chain`: the process first, then its parents. */
  evaluate(chain: ProcessInfo[], facts: Facts, ev: EventFacts = { event: 'exec' }): Alert[] {
    const out: Alert[] = [];
    for (const { rule, events, match } of this.compiled) {
      if (!events.has(ev.event) || !matches(match, chain, facts, ev)) continue;
      out.push({ rule: rule.name, severity: rule.severity, message: render(rule, chain, ev), kill: rule.actions?.includes('kill') ?? false });
    }
    return out;
  }

  /**
   * Path prefixes the kernel must watch: each path rule's paths up to their
   * first wildcard. A prefix only rules on writes use is `writesOnly`: the
   * kernel then sends no read open under it (a library directory is read
   * by every program start). One covered by a shorter prefix at least as
   * wide is left out: each is a compare for the opens of its bucket.
   */
  watchedPrefixes(): Array<{ prefix: string; writesOnly: boolean }> {
    const all = new Map<string, boolean>();
    for (const { rule, events } of this.compiled) {
      const writes = !events.has('open') || rule.match.access === 'write' || rule.match.access === 'truncate';
      for (const p of rule.match.path ?? []) {
        const prefix = p.split(/[*?]/)[0]!;
        all.set(prefix, (all.get(prefix) ?? true) && writes);
      }
    }
    const sorted = [...all].sort((a, b) => a[0].length - b[0].length);
    const kept: Array<{ prefix: string; writesOnly: boolean }> = [];
    for (const [prefix, writesOnly] of sorted) {
      if (kept.some((k) => prefix.startsWith(k.prefix) && (!k.writesOnly || writesOnly))) continue;
      kept.push({ prefix, writesOnly });
    }
    return kept;
  }

  /** Whether a rule needs every connect (`unlistedPort`), not only watched ports. */
  allConnects(): boolean {
    return this.compiled.some(({ rule }) => rule.match.unlistedPort !== undefined);
  }

  /** Ports the kernel must watch, with whether a match kills. */
  watchedPorts(): Map<number, boolean> {
    const out = new Map<number, boolean>();
    for (const { rule } of this.compiled) {
      for (const p of rule.match.port ?? []) out.set(p, (out.get(p) ?? false) || (rule.actions?.includes('kill') ?? false));
    }
    return out;
  }

  /** Whether any rule needs an event the kernel reports only on demand. */
  uses(event: RuleEvent): boolean {
    return this.compiled.some(({ events }) => events.has(event));
  }

  /** File names the kernel kills at exec. */
  killedNames(): string[] {
    return this.compiled.filter(({ rule, events }) => events.size === 1 && events.has('exec') && rule.actions?.includes('kill')).flatMap(({ rule }) => rule.match.name ?? []);
  }
}

export function ancestryString(chain: ProcessInfo[]): string {
  return [...chain].reverse().map((p) => p.name).join(' -> ');
}

function render(rule: Rule, chain: ProcessInfo[], ev: EventFacts): string {
  const [p, parent] = chain;
  const vars: Record<string, string> = {
    path: ev.path ?? '',
    port: ev.port !== undefined ? String(ev.port) : '',
    target: ev.target !== undefined ? String(ev.target) : '',
    fd: ev.fd !== undefined ? String(ev.fd) : '',
    peer: ev.peer ?? '',
    name: p?.name ?? '',
    exe: p?.exe ?? '',
    cwd: p?.cwd ?? '',
    args: p?.args.join(' ') ?? '',
    pid: String(p?.pid ?? ''),
    uid: String(p?.uid ?? ''),
    parent: parent?.name ?? '',
    ancestry: ancestryString(chain),
  };
  return (rule.message ?? `${rule.name}: {ancestry}`).replace(/\{(\w+)\}/g, (m, k: string) => vars[k] ?? m);
}
