import fs from 'node:fs';
import path from 'node:path';
import type { ServiceRule } from '../config/schema.js';

export interface ProcessNames {
  /** The executable's name (`comm`). */
  process: string;
  /** A pid-free name for the workload: a rule's name, else the main script, else comm. */
  service: string;
  /** Inside the agent's scope (config `scope.cgroup`); always true without one. */
  inScope: boolean;
  /** Container and Kubernetes labels (config `metadata`); {} when off. */
  meta: Record<string, string>;
}

/** Labels the metadata adds, in this order, when it is on. */
export const META_LABELS = ['container_id', 'systemd_unit', 'k8s_namespace_name', 'k8s_pod_name', 'k8s_container_name', 'k8s_deployment_name'] as const;

/** Whether the config asks for metadata labels. */
export function metadataOn(config: { metadata: { containers: boolean; kubernetes: string } }): boolean {
  return config.metadata.containers || config.metadata.kubernetes !== 'off';
}

/** Turns a process's cgroup text into metadata labels; `complete` is false while a lookup is pending. */
export type MetaResolver = (cgroup: string) => { labels: Record<string, string>; complete: boolean };

interface ProcFacts {
  comm: string;
  exe: string;
  argv: string[];
  cgroup: string;
}

const INTERPRETERS = /^(node|nodejs|bun|deno|python[0-9.]*|pypy[0-9.]*|ruby[0-9.]*|perl[0-9.]*|php[0-9.]*|java|Rscript)$/;
/** Interpreter flags whose value is the next argument. */
const FLAGS_WITH_VALUE = new Set([
  '-r', '--require', '--import', '--loader', '--experimental-loader', '--env-file', '--title',
  '-W', '-X', '-Q', '-cp', '-classpath', '--class-path', '-I', '-M',
]);
/** Script names too generic to name a service: use their folder instead. */
const GENERIC = new Set(['index', 'main', 'app', '__main__', 'server', 'start']);

/** The service an interpreter runs, from its argument list; undefined if not found. */
export function mainScript(argv: readonly string[]): string | undefined {
  const java = path.basename(argv[0] ?? '') === 'java';
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '-m' || a === '-jar') {
      const v = argv[i + 1];
      return v ? strip(a === '-m' ? v.split('.')[0]! : v, false) : undefined;
    }
    if (a === '-e' || a === '--eval' || a === '-c' || a === '-p' || a === '--print') return undefined;
    if (FLAGS_WITH_VALUE.has(a)) {
      i++;
      continue;
    }
    if (a.startsWith('-')) continue;
    return strip(a, java);
  }
  return undefined;
}

function strip(arg: string, javaClass: boolean): string | undefined {
  const base = path.basename(arg).replace(/\.(m?js|cjs|ts|mts|py|rb|pl|php|jar)$/, '');
  if (!base) return undefined;
  if (GENERIC.has(base)) {
    const dir = path.basename(path.dirname(path.resolve('/', arg)));
    if (dir && dir !== '/' && dir !== '.') return dir;
  }
  // A main class such as com.example.Billing names its service by the last part.
  return javaClass ? base.split('.').pop() : base;
}

function readProc(tgid: number): ProcFacts | undefined {
  try {
    const comm = fs.readFileSync(`/proc/${tgid}/comm`, 'utf8').trim();
    const argv = fs.readFileSync(`/proc/${tgid}/cmdline`, 'utf8').split('\0');
    if (argv.at(-1) === '') argv.pop();
    let exe = '';
    try {
      exe = fs.readlinkSync(`/proc/${tgid}/exe`);
    } catch {
      // kernel threads and exited processes have no exe
    }
    let cgroup = '';
    try {
      cgroup = fs.readFileSync(`/proc/${tgid}/cgroup`, 'utf8');
    } catch {
      // not fatal: rules by cgroup just won't match
    }
    return { comm, exe, argv, cgroup };
  } catch {
    return undefined;
  }
}

/**
 * Names processes for labels. Looked up once per (pid, comm) and cached: the
 * kernel key carries comm, so a reused pid running something else is a new
 * entry. A process gone before it is first seen keeps its kernel comm.
 */
export class ServiceNamer {
  /** By tgid, then by comm and port: a process's names are forgotten in one step. */
  private readonly cache = new Map<number, Map<string, ProcessNames & { until?: number }>>();
  private cached = 0;
  private readonly rules: Array<ServiceRule & { re?: RegExp }>;

  constructor(
    rules: readonly ServiceRule[],
    private readonly maxCache = 16384,
    /** Only processes whose /proc/PID/cgroup contains this are in scope ("" : all). */
    private readonly scope = '',
    private readonly meta?: MetaResolver,
  ) {
    this.rules = rules.map((r) => ({ ...r, ...(r.match.cmdline ? { re: new RegExp(r.match.cmdline) } : {}) }));
  }

  /**
   * `kernelArgv`: the arguments as the kernel saw them, for a process that
   * may have exited before it is first named (an interpreter is then still
   * named after its script).
   */
  names(tgid: number, kernelComm: string, port?: number, kernelArgv?: readonly string[]): ProcessNames {
    if (tgid === 0) return { process: 'unknown', service: 'unknown', inScope: !this.scope, meta: this.meta ? this.meta('').labels : {} };
    const key = `${kernelComm}\0${port ?? ''}`;
    let mine = this.cache.get(tgid);
    let n = mine?.get(key);
    // Names whose pod lookup was pending are looked at again a little later.
    if (n?.until !== undefined && Date.now() > n.until) n = undefined;
    if (!n) {
      n = this.resolve(tgid, kernelComm, port, kernelArgv);
      if (this.cached >= this.maxCache) {
        this.cache.clear();
        this.cached = 0;
        mine = undefined;
      }
      if (!mine) this.cache.set(tgid, (mine = new Map()));
      if (!mine.has(key)) this.cached++;
      mine.set(key, n);
    }
    return n;
  }

  /** Forgets a process that has exited. */
  forget(tgid: number): void {
    const mine = this.cache.get(tgid);
    if (!mine) return;
    this.cached -= mine.size;
    this.cache.delete(tgid);
  }

  /** Names held, for tests and the soak. */
  get size(): number {
    return this.cached;
  }

  private resolve(tgid: number, kernelComm: string, port?: number, kernelArgv?: readonly string[]): ProcessNames & { until?: number } {
    let info = readProc(tgid);
    // No arguments in /proc (a zombie, or a process inside execve): what the
    // kernel saw at its connections, when there is that.
    if (info && !info.argv.length && kernelArgv?.length) info = { ...info, argv: [...kernelArgv] };
    info ??= kernelArgv?.length ? { comm: kernelComm, exe: '', argv: [...kernelArgv], cgroup: '' } : undefined;
    const comm = info?.comm || kernelComm || 'unknown';
    // A process gone before it was looked at cannot be placed: out of a scope.
    const inScope = !this.scope || (info?.cgroup ?? '').includes(this.scope);
    const m = this.meta?.(info?.cgroup ?? '');
    // A process caught inside execve has its new comm but no arguments yet
    // (an interpreter would be named after itself, not its script): such a
    // name is not kept; one whose pod lookup is pending is looked at again.
    const early = info !== undefined && info.argv.length === 0;
    const extra = { inScope, meta: m?.labels ?? {}, ...((m && !m.complete) || early ? { until: Date.now() + (early ? 0 : 5000) } : {}) };
    for (const r of this.rules) {
      if (matches(r.match, r.re, tgid, comm, info, port)) return { process: comm, service: r.name, ...extra };
    }
    let service = comm;
    if (info && INTERPRETERS.test(comm)) service = mainScript(info.argv) ?? comm;
    return { process: comm, service, ...extra };
  }
}

type Match = ServiceRule['match'];

/** Whether a process (and the connection's port) fits every key of `m`. */
function matches(m: Match, re: RegExp | undefined, tgid: number, comm: string, info: ProcFacts | undefined, port?: number): boolean {
  if (m.pid !== undefined && m.pid !== tgid) return false;
  if (m.port !== undefined && m.port !== port) return false;
  if (m.comm !== undefined && m.comm !== comm) return false;
  if (m.exe !== undefined && m.exe !== info?.exe) return false;
  if (re && !re.test(info?.argv.join(' ') ?? '')) return false;
  if (m.cgroup !== undefined && !(info?.cgroup ?? '').includes(m.cgroup)) return false;
  return true;
}

/**
 * Which processes a collector watches: any of `rules` (all when empty),
 * decided once per (pid, comm, port) and cached.
 */
export class ProcessFilter {
  private readonly cache = new Map<string, boolean>();
  private readonly rules: Array<{ m: Match; re?: RegExp }>;

  constructor(rules: readonly Match[], private readonly maxCache = 16384) {
    this.rules = rules.map((m) => ({ m, ...(m.cmdline ? { re: new RegExp(m.cmdline) } : {}) }));
  }

  get all(): boolean {
    return this.rules.length === 0;
  }

  accepts(tgid: number, kernelComm: string, port?: number): boolean {
    if (this.rules.length === 0) return true;
    const key = `${tgid}\0${kernelComm}\0${port ?? ''}`;
    let ok = this.cache.get(key);
    if (ok === undefined) {
      const info = readProc(tgid);
      const comm = info?.comm || kernelComm;
      ok = this.rules.some((r) => matches(r.m, r.re, tgid, comm, info, port));
      if (this.cache.size >= this.maxCache) this.cache.clear();
      this.cache.set(key, ok);
    }
    return ok;
  }

  /** Ports that rules name alone: a connection on one is watched whoever owns it. */
  portsAlone(): number[] {
    return this.rules.filter((r) => r.m.port !== undefined && Object.keys(r.m).length === 1).map((r) => r.m.port!);
  }

  /**
   * Whether some rule other than a port-only one can match this process, on
   * some port: the kernel skips every connection of a process judged false
   * (except on the ports that rules name alone).
   */
  mayWatchProcess(tgid: number, kernelComm: string): boolean {
    if (this.rules.length === 0) return true;
    const info = readProc(tgid);
    const comm = info?.comm || kernelComm;
    return this.rules.some((r) => {
      if (r.m.port !== undefined && Object.keys(r.m).length === 1) return false;
      const { port: _port, ...rest } = r.m;
      return matches(rest, r.re, tgid, comm, info);
    });
  }
}
