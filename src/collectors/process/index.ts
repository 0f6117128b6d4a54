import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type client from 'prom-client';
import { u64, type BpfObject, type BpfProgram, type RingBuffer } from '../../bpf/object.js';
import { ROOT } from '../../paths.js';
import type { Config } from '../../config/schema.js';
import type { KernelFeatures } from '../../capabilities/features.js';
import { listeningPorts } from '../../process/sockets.js';
import { RuleSet, ancestryString, loadRuleFile, withExceptions, type EventFacts, type Rule, type RuleEvent } from '../../security/rules.js';
import { Webhook } from '../../security/webhook.js';
import { JsonlFile } from '../../security/jsonl-file.js';
import { NO_RINGBUF, chooseHook } from '../hooks.js';
import type { Collector, CollectorContext, CollectorPlan } from '../types.js';
import { KernelDrops } from '../drops.js';
import { PATH_KINDS, type ProcLayout, type ProcEvent } from './decode.js';
import { PROC_HOOKS, ProcKernel } from './kernel.js';
import { ProcessTable, type ProcessInfo } from '../../process/table.js';

export const DEFAULT_RULES = path.join(ROOT, 'rules', 'default.yaml');


/** All rules the config asks for: the shipped defaults, then the user's files. */
export function configuredRules(config: Config): Rule[] {
  const s = config.security;
  const files = [...(s.defaultRules ? [DEFAULT_RULES] : []), ...s.rules].map((f) => ({ f, ...loadRuleFile(f) }));
  const rules = files.flatMap((x) => x.rules);
  const names = new Set<string>();
  for (const r of rules) {
    if (names.has(r.name)) throw new Error(`security rules: "${r.name}" is defined twice`);
    names.add(r.name);
  }
  return withExceptions(rules, files.flatMap((x) => x.exceptions.map((e) => ({ ...e, source: x.f }))));
}

/** A process's end and what it used in all, as the kernel summed it. */
export interface ProcessExit {
  pid: number;
  comm: string;
  argv: string[];
  utimeSeconds: number;
  stimeSeconds: number;
  readBytes: number;
  writeBytes: number;
}


/**
 * Whether an open with O_TRUNC emptied a file. With O_CREAT it may have made
 * the file instead, and the kernel truncates only a file that was there
 * (bash creates its history file this way): the file's birth, read now,
 * tells. Birth times come from the clock's coarse tick, so a birth up to
 * 10 ms before the call counts as the call's own: so young a file held
 * nothing to clear. Where the birth cannot be read, the open emptied.
 */
function emptied(flags: number, pid: number, file: string, atMs: number): boolean {
  if (!(flags & 0o1000)) return false;
  if (!(flags & 0o100)) return true;
  const st = statBirth(`/proc/${pid}/root${file}`) ?? statBirth(file);
  return !st || st < atMs - 10;
}

function statBirth(file: string): number | undefined {
  try {
    const ms = fs.statSync(file, { throwIfNoEntry: false })?.birthtimeMs;
    return ms ? ms : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Process executions with their ancestry, matched against the security
 * rules. Alerts go out as JSON lines, to a webhook, to /events and as
 * metrics. kernel.ts holds the hooks and each rule set's kernel side;
 * this file folds the kernel's records into the process table and rules.
 */
export class ProcessCollector implements Collector {
  readonly name = 'process';
  private kernel: ProcKernel | undefined;
  private get obj(): BpfObject | undefined {
    return this.kernel?.obj;
  }
  private get layout(): ProcLayout | undefined {
    return this.kernel?.layout;
  }
  private exitListeners: Array<(e: ProcessExit) => void> = [];

  /** Called at each process's end with what it used in all (the resources collector's last delta). */
  onExit(fn: (e: ProcessExit) => void): void {
    this.exitListeners.push(fn);
  }
  private rb: RingBuffer | undefined;
  private ctx!: CollectorContext;
  private drops!: KernelDrops;
  private drain: NodeJS.Timeout | undefined;
  private table!: ProcessTable;
  private rules!: RuleSet;
  private execs!: client.Counter<string>;
  private alerts!: client.Counter<string>;
  private reloads!: client.Counter<string>;
  private out: JsonlFile | undefined;
  private webhook: Webhook | undefined;

  plan(f: KernelFeatures, config: Config): CollectorPlan {
    const hooks = PROC_HOOKS.map((h) => chooseHook(h, f));
    if (!config.collectors.process.enabled) return { collector: this.name, runnable: false, reason: 'disabled in config', hooks };
    const missing = hooks.find((h) => !h.kind);
    if (missing) return { collector: this.name, runnable: false, reason: `${missing.event}: ${missing.reason}`, hooks };
    if (!f.ringbuf) return { collector: this.name, runnable: false, reason: NO_RINGBUF, hooks };
    return { collector: this.name, runnable: true, hooks };
  }

  start(ctx: CollectorContext): void {
    this.ctx = ctx;
    const plan = this.plan(ctx.features, ctx.config);
    if (!plan.runnable) throw new Error(`process collector cannot run: ${plan.reason}`);
    this.table = new ProcessTable(ctx.config.collectors.process.maxProcesses, 60_000, () => ctx.drops.inc({ source: 'process', reason: 'process_table_full' }));
    this.rules = new RuleSet(ctx.config.security.enabled ? configuredRules(ctx.config) : []);
    const m = ctx.metrics;
    this.execs = m.counter('kernscope_process_execs_total', 'Programs executed (execve) on the node.');
    this.alerts = m.counter('kernscope_security_alerts_total', 'Security alerts raised, by rule and severity.', ['rule', 'severity']);
    for (const r of this.rules.rules) this.alerts.inc({ rule: r.name, severity: r.severity }, 0);
    this.reloads = m.counter('kernscope_security_rule_reloads_total', 'Rule file reloads, by result (ok, or error: the previous rules stay).', ['result']);
    const tracked = m.gauge('kernscope_processes_tracked', 'Processes in the agent\'s process table (running, and exited in the last minute).');
    m.onScrape(() => tracked.set(this.table.size));
    const o = ctx.config.security.output;
    if (o.file) {
      const told = new Set<string>();
      this.out = new JsonlFile(o.file, o.maxFileBytes, o.keepFiles, (lines, why) => {
        this.ctx.drops.inc({ source: 'process', reason: 'alert_output_failed' }, lines);
        if (!told.has(why)) this.ctx.log(`security: ${o.file}: ${why}: lines lost, counted in kernscope_events_dropped_total{reason="alert_output_failed"}`);
        told.add(why);
      });
    }
    const wh = ctx.config.security.output.webhook;
    if (wh.url) {
      const retries = m.counter('kernscope_security_webhook_retries_total', 'Webhook posts tried again after a failure.');
      this.webhook = new Webhook({ ...wh, timeoutMs: 5000 }, (reason, n) => ctx.drops.inc({ source: 'process', reason }, n), () => retries.inc());
    }

    ctx.recorder.summary('proc', () => {
      const c = this.counts;
      if (!c.execs && !c.exits) return undefined;
      this.counts = { execs: 0, exits: 0, signaled: 0 };
      return c;
    });
    this.table.seedFromProc();
    const kernel = (this.kernel = new ProcKernel(plan.hooks.filter((h) => h.kind), ctx.features, ctx.log));
    this.drops = new KernelDrops(kernel.obj.map('drops'), 'process', kernel.layout.dropReasons, ctx.drops, ['alert_output_full', 'alert_output_failed', 'process_table_full', ...(wh.url ? ['webhook_queue_full', 'webhook_failed'] : [])]);
    try {
      this.rb = kernel.obj.ringBuffer('proc_events', (rec) => this.onRecord(rec));
      this.drain = setInterval(() => {
        this.rb?.consume();
        this.table.sweep();
      }, 200);
      this.drain.unref();
      kernel.attach();
      kernel.apply(this.rules);
      this.watchRuleFiles();
    } catch (e) {
      clearInterval(this.drain);
      kernel.obj.close();
      this.kernel = undefined;
      throw e;
    }
  }

  /**
   * Rule files are reloaded when they change. A file with an error is
   * reported and counted, and the rules in force stay as they were.
   */
  private watchRuleFiles(): void {
    const s = this.ctx.config.security;
    if (!s.enabled) return;
    const files = [...(s.defaultRules ? [DEFAULT_RULES] : []), ...s.rules];
    let timer: NodeJS.Timeout | undefined;
    const reload = (): void => this.reload();
    for (const f of files) {
      try {
        // Editors replace files: watch the folder, filter on the name.
        const w = fs.watch(path.dirname(f), (_event, name) => {
          if (name !== path.basename(f)) return;
          clearTimeout(timer);
          timer = setTimeout(reload, 100); // one reload per burst of writes
        });
        w.unref();
        this.watchers.push(w);
      } catch (e) {
        this.ctx.log(`security: cannot watch ${f}: ${(e as Error).message}`);
      }
    }
  }

  private watchers: fs.FSWatcher[] = [];

  /** The rule files read again (on a change, or SIGHUP); a broken set leaves the last in force. */
  reload(): void {
    if (!this.ctx.config.security.enabled || !this.kernel) return;
    try {
      const next = new RuleSet(configuredRules(this.ctx.config));
      this.kernel.apply(next);
      this.rules = next;
      for (const r of next.rules) this.alerts.inc({ rule: r.name, severity: r.severity }, 0);
      this.reloads.inc({ result: 'ok' });
      this.ctx.log(`security: rules reloaded (${next.rules.length})`);
    } catch (e) {
      this.reloads.inc({ result: 'error' });
      this.ctx.log(`security: rules not reloaded, the previous ones stay: ${(e as Error).message}`);
    }
  }

  programs(): BpfProgram[] {
    return this.obj ? [...this.obj.programs.values()] : [];
  }

  private portsCache = new Map<number, { at: number; ports: ReadonlySet<number> }>();

  /** The ports a process listens on; asked only when a rule needs it, cached briefly. */
  private listenPorts = (pid: number): ReadonlySet<number> => {
    const now = Date.now();
    const c = this.portsCache.get(pid);
    if (c && now - c.at < 5000) return c.ports;
    const ports = listeningPorts(pid);
    if (this.portsCache.size > 4096) this.portsCache.clear();
    this.portsCache.set(pid, { at: now, ports });
    return ports;
  };

  /** Whether a process listens on TCP: one cache with the ports. */
  private isServer = (pid: number): boolean => this.listenPorts(pid).size > 0;

  private exited(rec: Buffer, e: ProcEvent, p: ProcessInfo | undefined): void {
    const L = this.layout?.exit;
    if (!L || rec.length < L.size || !this.exitListeners.length) return;
    const x: ProcessExit = {
      pid: e.pid,
      comm: e.comm,
      argv: p?.args ?? [],
      utimeSeconds: u64(rec, L.utime_ns) / 1e9,
      stimeSeconds: u64(rec, L.stime_ns) / 1e9,
      readBytes: u64(rec, L.read_bytes),
      writeBytes: u64(rec, L.write_bytes),
    };
    for (const fn of this.exitListeners) fn(x);
  }

  private onRecord(rec: Buffer): void {
    const e = this.layout?.decode(rec);
    if (!e) return;
    let ev: EventFacts;
    let p: ProcessInfo | undefined;
    if (e.kind === 'ptrace' || e.kind === 'setuid' || e.kind === 'module' || e.kind === 'stdio_socket') {
      p = this.table.get(e.pid);
      if (!p) return;
      p.uid = e.uid; // the uid it runs with now, not at exec
      ev =
        e.kind === 'ptrace' ? { event: 'ptrace', target: e.target! }
        : e.kind === 'stdio_socket' ? { event: 'stdio_socket', fd: e.fd!, peer: peerOf(e.address ?? '', e.port ?? 0) }
        : { event: e.kind };
      // A shell takes a connection onto 0, 1 and 2 in turn, and what it runs
      // does again: one event per connection.
      if (ev.event === 'stdio_socket' && this.seenStdio(e.socketIno ?? 0)) return;
    } else if (PATH_KINDS.has(e.kind) || e.kind === 'connect') {
      p = this.table.get(e.pid);
      if (!p) return;
      // O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_APPEND all change the file.
      ev =
        e.kind === 'open' ? { event: 'open', path: e.path!, write: ((e.flags ?? 0) & (0o3 | 0o100 | 0o1000 | 0o2000)) !== 0, truncate: emptied(e.flags ?? 0, e.pid, e.path!, this.ctx.recorder.at(e.tsNs)) }
        : e.kind === 'connect' ? { event: 'connect', port: e.port! }
        : { event: e.kind as RuleEvent, path: e.path!, flags: e.flags ?? 0 };
    } else {
      p = this.table.apply(e);
      if (e.kind === 'exit') {
        this.exited(rec, e, p);
        // Its names go once every collector has read its entries a last time.
        this.ctx.procs.exited(e.pid);
      }
      this.record(e, p);
      if (!p) return;
      if (this.ctx.config.security.output.processEvents && e.kind !== 'fork') {
        // exec and exit as events of their own; an exit's status is the wait(2) one.
        const exit = e.kind === 'exit' ? { exitCode: (e.exitCode >> 8) & 0xff, signal: e.exitCode & 0x7f } : {};
        this.emit({ time: new Date().toISOString(), kind: e.kind === 'exec' ? 'exec' : 'exit', ...exit, process: view(p, e), ancestry: ancestryString(this.table.ancestry(p.pid)) });
      }
      if (e.kind !== 'exec') return;
      this.execs.inc();
      ev = { event: 'exec', stdioSocket: (p.stdioSockets ?? 0) !== 0, exeNew: p.exeNew ?? false };
    }
    // An agent scoped to a cgroup raises alerts for its processes only.
    const scope = this.ctx.config.scope.cgroup;
    if (scope && !p.cgroup.includes(scope)) return;
    const chain = this.table.ancestry(p.pid);
    for (const a of this.rules.evaluate(chain, { isServer: this.isServer, listenPorts: this.listenPorts }, ev)) {
      this.alerts.inc({ rule: a.rule, severity: a.severity });
      this.ctx.recorder.note('alert', { t: this.ctx.recorder.at(e.tsNs), rule: a.rule, severity: a.severity, event: ev.event, pid: p.pid, name: p.name, exe: p.exe, message: a.message, ancestry: ancestryString(chain) }, true);
      const detail =
        ev.event === 'open' ? { path: ev.path, access: ev.write ? 'write' : 'read', ...(ev.truncate ? { truncate: true } : {}) }
        : ev.event === 'rename' ? { path: ev.path, name: ev.flags ? 'new' : 'old' }
        : ev.event === 'link' ? { target: ev.path, link: ev.flags ? 'symbolic' : 'hard' }
        : ev.event === 'unlink' || ev.event === 'truncate' ? { path: ev.path }
        : ev.event === 'connect' ? { port: ev.port, address: e.address }
        : ev.event === 'ptrace' ? { target: ev.target, targetName: this.table.get(ev.target!)?.name ?? '', request: e.request }
        : ev.event === 'stdio_socket' ? { fd: ev.fd, peer: ev.peer }
        : ev.event === 'module' ? { syscall: e.fromFd ? 'finit_module' : 'init_module', ...(e.fromFd ? { moduleFd: e.target } : {}) }
        : ev.event === 'exec' && p.stdioSockets ? { stdioSockets: [0, 1, 2].filter((i) => (p!.stdioSockets! >> i) & 1) }
        : {};
      this.emit({
        time: new Date().toISOString(),
        kind: 'alert',
        event: ev.event,
        rule: a.rule,
        severity: a.severity,
        message: a.message,
        ...detail,
        // Only the kernel kills, at the exec or connect itself.
        action: a.kill ? (e.killed ? 'killed' : 'kill-missed') : 'alert',
        process: view(p, e),
        ancestry: ancestryString(chain),
        parents: chain.slice(1).map((x) => ({ pid: x.pid, name: x.name, exe: x.exe })),
      });
    }
  }

  private counts = { execs: 0, exits: 0, signaled: 0 };
  /** Socket inodes already reported on a standard stream. */
  private stdioSeen = new Set<number>();

  private seenStdio(ino: number): boolean {
    if (this.stdioSeen.has(ino)) return true;
    if (this.stdioSeen.size >= 4096) this.stdioSeen.clear();
    this.stdioSeen.add(ino);
    return false;
  }

  /** Execs and exits for the flight recorder, with their codes and signals. */
  private record(e: ProcEvent, p: ProcessInfo | undefined): void {
    const r = this.ctx.recorder;
    if (!r.on || e.kind === 'fork') return;
    if (e.kind === 'exec') {
      this.counts.execs++;
      const args = (p?.args ?? []).join(' ');
      r.note('exec', { t: r.at(e.tsNs), pid: e.pid, ppid: e.ppid, uid: e.uid, comm: e.comm, exe: p?.exe ?? '', args: args.length > 256 ? `${args.slice(0, 256)}…` : args });
    } else if (e.kind === 'exit') {
      this.counts.exits++;
      const signal = e.exitCode & 0x7f;
      if (signal) this.counts.signaled++;
      r.note('exit', { t: r.at(e.tsNs), pid: e.pid, comm: e.comm, ...(signal ? { signal, signal_name: signalName(signal) } : { code: (e.exitCode >> 8) & 0xff }) });
    }
  }

  private emit(obj: object): void {
    const line = `${JSON.stringify(obj)}\n`;
    const cfg = this.ctx.config.security.output;
    // A reader that stopped reading must not grow the agent without bound.
    if (cfg.stdout) {
      if (process.stdout.writableLength > 4 << 20) this.ctx.drops.inc({ source: 'process', reason: 'alert_output_full' });
      else process.stdout.write(line);
    }
    if (this.out && !this.out.write(line)) this.ctx.drops.inc({ source: 'process', reason: 'alert_output_full' });
    this.webhook?.push(obj);
    this.ctx.publish(obj);
  }

  collect(): void {
    if (!this.obj) return;
    this.rb?.consume();
    this.drops.fold();
  }

  async stop(): Promise<void> {
    for (const w of this.watchers) w.close();
    clearInterval(this.drain);
    this.rb?.close();
    this.rb = undefined;
    const obj = this.obj;
    this.kernel = undefined;
    obj?.close();
    await this.webhook?.close();
    await this.out?.close();
  }
}

function view(p: ProcessInfo, e: ProcEvent): object {
  return {
    pid: p.pid, ppid: p.ppid, name: p.name, exe: p.exe, args: p.args, argsTruncated: p.argsTruncated, uid: p.uid, cgroup: p.cgroup, comm: e.comm,
    ...(p.requested !== undefined ? { requested: p.requested } : {}),
    ...(p.cwd ? { cwd: p.cwd } : {}),
    ...(p.interpreter ? { interpreter: p.interpreter } : {}),
    ...(p.deleted ? { deleted: true } : {}),
    ...(p.exeNew ? { exeNew: true } : {}),
  };
}

const SIGNALS = new Map<number, string>(Object.entries(os.constants.signals).map(([name, n]) => [n, name]));

/** host:port, with an IPv6 host in brackets. */
function peerOf(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

function signalName(n: number): string {
  return SIGNALS.get(n) ?? `SIG${n}`;
}
