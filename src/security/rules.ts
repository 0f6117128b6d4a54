import fs from 'node:fs';
import { Ajv, type ErrorObject } from 'ajv';
import YAML from 'yaml';
import { KernscopeError } from '../errors.js';
import { describeError, errorParts, keyPath } from '../config/errors.js';
import type { ProcessInfo } from '../process/table.js';

export const SEVERITIES = ['info', 'low', 'medium', 'high', 'critical'] as const;
export const EVENTS = ['exec', 'open', 'connect', 'ptrace', 'setuid'] as const;
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
  /** open: globs on the path as the process passed it */
  path?: string[];
  /** open: what the open allows */
  access?: 'read' | 'write';
  /** connect: destination ports */
  port?: number[];
  parent?: ProcMatch;
  /** Some ancestor within `depth` generations (default 4) matches. */
  ancestor?: ProcMatch & { depth?: number };
  /** The rule does not fire if this matches (same keys as a rule's match). */
  not?: Omit<RuleMatch, 'not'>;
}

export interface Rule {
  name: string;
  description?: string;
  severity: Severity;
  event: RuleEvent;
  match: RuleMatch;
  /** `kill`: SIGKILL from the kernel at the exec or connect that matched. */
  actions?: Array<'alert' | 'kill'>;
  /** `{name}`, `{exe}`, `{args}`, `{parent}`, `{ancestry}`, `{pid}` are filled in. */
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
  access: { enum: ['read', 'write'] },
  port: { type: 'array', items: { type: 'integer', minimum: 1, maximum: 65535 }, minItems: 1 },
  parent: procMatch,
  ancestor: { ...procMatch, properties: { ...procMatch.properties, depth: { type: 'integer', minimum: 1, maximum: 32 } } },
};

export const RULES_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['rules'],
  properties: {
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
          event: { enum: EVENTS },
          actions: { type: 'array', items: { enum: ['alert', 'kill'] } },
          message: { type: 'string' },
          enabled: { type: 'boolean' },
          match: {
            type: 'object',
            additionalProperties: false,
            minProperties: 1,
            properties: { ...ruleMatchProps, not: { type: 'object', additionalProperties: false, properties: ruleMatchProps } },
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
  let doc: unknown;
  try {
    doc = YAML.parse(text, { uniqueKeys: true });
  } catch (e) {
    throw new KernscopeError('ERR_KERNSCOPE_CONFIG', `${source}: invalid YAML: ${(e as Error).message.split('\n')[0]}`);
  }
  if (!validate(doc)) {
    const e = validate.errors![0]!;
    throw new KernscopeError('ERR_KERNSCOPE_CONFIG', `${source}: ${where(e, doc as never)}: ${describeError(e)}`);
  }
  const rules = (doc as { rules: Rule[] }).rules.map((r) => ({ ...r, event: r.event ?? 'exec' }));
  const seen = new Set<string>();
  for (const r of rules) {
    const bad = (msg: string): never => {
      throw new KernscopeError('ERR_KERNSCOPE_CONFIG', `${source}: rule "${r.name}": ${msg}`);
    };
    if (seen.has(r.name)) bad('name used twice');
    seen.add(r.name);
    const keys = Object.keys(r.match);
    if ((r.match.path || r.match.access) && r.event !== 'open') bad('match.path and match.access need event: open');
    if (r.match.port && r.event !== 'connect') bad('match.port needs event: connect');
    if (r.event === 'open' && !r.match.path) bad('event open needs match.path (the kernel watches those paths only)');
    if (r.event === 'connect' && !r.match.port) bad('event connect needs match.port (the kernel watches those ports only)');
    if (r.actions?.includes('kill')) {
      // The kernel decides alone: by the file's name at exec, by the port at connect.
      const decidable =
        (r.event === 'exec' && keys.length === 1 && r.match.name?.every((n) => !/[*?]/.test(n))) ||
        (r.event === 'connect' && keys.length === 1);
      if (!decidable) bad('actions: kill needs a match the kernel can decide alone: only exact names for exec, only ports for connect');
    }
  }
  return rules;
}

export function loadRules(file: string): Rule[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new KernscopeError('ERR_KERNSCOPE_CONFIG', `${file}: cannot read: ${(e as Error).message}`);
  }
  return parseRules(text, file);
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
}

/** What happened, beyond the process: an open's path and mode, a connect's port. */
export interface EventFacts {
  event: RuleEvent;
  path?: string;
  write?: boolean;
  port?: number;
  /** ptrace: the process taken hold of */
  target?: number;
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
  access?: 'read' | 'write';
  ports?: Set<number>;
  self: CompiledProc;
  parent?: CompiledProc;
  ancestor?: CompiledProc;
  depth: number;
  not?: CompiledMatch;
}

function compileMatch(m: RuleMatch): CompiledMatch {
  const c: CompiledMatch = { self: compileProc(m)!, depth: m.ancestor?.depth ?? 4 };
  const path = compileList(m.path, false);
  if (path) c.path = path;
  if (m.access) c.access = m.access;
  if (m.port) c.ports = new Set(m.port);
  const parent = compileProc(m.parent);
  const ancestor = compileProc(m.ancestor);
  if (parent) c.parent = parent;
  if (ancestor) c.ancestor = ancestor;
  if (m.not) c.not = compileMatch(m.not);
  return c;
}

function matches(c: CompiledMatch, chain: ProcessInfo[], facts: Facts, ev: EventFacts): boolean {
  if (c.path && !(ev.path !== undefined && c.path.test(ev.path))) return false;
  if (c.access && (ev.write ? 'write' : 'read') !== c.access) return false;
  if (c.ports && !(ev.port !== undefined && c.ports.has(ev.port))) return false;
  const [self, parent] = chain;
  if (!self || !procMatches(c.self, self, facts)) return false;
  if (c.parent && !(parent && procMatches(c.parent, parent, facts))) return false;
  if (c.ancestor && !chain.slice(1, 1 + c.depth).some((a) => procMatches(c.ancestor!, a, facts))) return false;
  if (c.not && matches(c.not, chain, facts, ev)) return false;
  return true;
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
  private readonly compiled: Array<{ rule: Rule; match: CompiledMatch }>;

  constructor(readonly rules: readonly Rule[]) {
    this.compiled = rules.filter((r) => r.enabled !== false).map((rule) => ({ rule, match: compileMatch(rule.match) }));
  }

  /** `chain`: the process first, then its parents. */
  evaluate(chain: ProcessInfo[], facts: Facts, ev: EventFacts = { event: 'exec' }): Alert[] {
    const out: Alert[] = [];
    for (const { rule, match } of this.compiled) {
      if (rule.event !== ev.event || !matches(match, chain, facts, ev)) continue;
      out.push({ rule: rule.name, severity: rule.severity, message: render(rule, chain, ev), kill: rule.actions?.includes('kill') ?? false });
    }
    return out;
  }

  /** Path prefixes the kernel must watch: each open rule's path up to its first wildcard. */
  watchedPrefixes(): string[] {
    const out = new Set<string>();
    for (const { rule } of this.compiled) for (const p of rule.match.path ?? []) out.add(p.split(/[*?]/)[0]!);
    return [...out];
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
    return this.compiled.some(({ rule }) => rule.event === event);
  }

  /** File names the kernel kills at exec. */
  killedNames(): string[] {
    return this.compiled.filter(({ rule }) => rule.event === 'exec' && rule.actions?.includes('kill')).flatMap(({ rule }) => rule.match.name ?? []);
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
    name: p?.name ?? '',
    exe: p?.exe ?? '',
    args: p?.args.join(' ') ?? '',
    pid: String(p?.pid ?? ''),
    uid: String(p?.uid ?? ''),
    parent: parent?.name ?? '',
    ancestry: ancestryString(chain),
  };
  return (rule.message ?? `${rule.name}: {ancestry}`).replace(/\{(\w+)\}/g, (m, k: string) => vars[k] ?? m);
}
