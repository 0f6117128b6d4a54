/**
 * The flight recorder's writer in the agent: collectors note notable events
 * here (execs, exits, alerts, resets, OOM kills...), and once a second a
 * summary of the main counters is added and the journal is synced. A severe
 * event (an alert, an OOM kill, the agent's stop) is synced at once.
 *
 * It never stops the agent: a journal that cannot be opened turns the
 * recorder off with a log line, and write errors and lost records are
 * counted (kernscope_recorder_*).
 */
import fs from 'node:fs';
import type client from 'prom-client';
import type { MetricsRegistry } from '../metrics/registry.js';
import { Journal, JournalBusy, bootId } from './journal.js';

export interface RecorderOptions {
  path: string;
  maxBytes: number;
  segmentBytes: number;
  maxRecordsPerSecond: number;
}

/** A part of the summary line: its fields for the second just ended, or nothing to say. */
export type SummaryPart = () => object | undefined;

/** Milliseconds since the epoch at which this boot started, by the monotonic clock printk uses. */
export function bootWallMs(): number {
  return Date.now() - Number(process.hrtime.bigint() / 1_000_000n);
}

export class Recorder {
  private journal: Journal | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly parts = new Map<string, SummaryPart>();
  private second = 0;
  private inSecond = 0;
  private suppressed = new Map<string, number>();
  private readonly records: client.Counter<string>;
  private readonly dropped: client.Counter<string>;
  private readonly errors: client.Counter<string>;
  private readonly written: client.Counter<string>;
  private readonly syncs: client.Counter<string>;
  private lastCpu: { busy: number; total: number } | undefined;
  readonly boot = bootId();

  constructor(
    private readonly o: RecorderOptions,
    metrics: MetricsRegistry,
    private readonly log: (m: string) => void,
  ) {
    this.records = metrics.counter('kernscope_recorder_records_total', 'Records written to the flight recorder\'s journal, by kind.', ['kind']);
    this.dropped = metrics.counter('kernscope_recorder_records_dropped_total', 'Records not written to the journal: rate_limited (past recorder.maxRecordsPerSecond), queue_full, write_failed (the disk stayed full), too_large.', ['reason']);
    this.errors = metrics.counter('kernscope_recorder_write_errors_total', 'Failed journal writes and syncs, by errno code (ENOSPC: the disk is full).', ['error']);
    this.written = metrics.counter('kernscope_recorder_written_bytes_total', 'Bytes written to the journal.');
    this.syncs = metrics.counter('kernscope_recorder_syncs_total', 'fdatasync calls on the journal (once a second, and after each severe event).');
    const size = metrics.gauge('kernscope_recorder_journal_bytes', 'Bytes the journal\'s segments take on disk (at most recorder.maxBytes).');
    const segs = metrics.gauge('kernscope_recorder_segments', 'Segment files in the journal.');
    metrics.onScrape(() => {
      size.set(this.journal?.bytes ?? 0);
      segs.set(this.journal?.segments ?? 0);
    });
  }

  get on(): boolean {
    return this.journal !== undefined;
  }

  get dir(): string {
    return this.o.path;
  }

  /** Opens the journal and writes the agent's start; false (logged) when it cannot. */
  start(fields: object): boolean {
    const segmentBytes = this.o.segmentBytes || Math.max(64 * 1024, Math.floor(this.o.maxBytes / 8));
    const j = new Journal({
      dir: this.o.path,
      maxBytes: this.o.maxBytes,
      segmentBytes: Math.min(segmentBytes, this.o.maxBytes),
      boot: this.boot,
      onError: (code) => this.errors.inc({ error: code }),
      onDrop: (reason, n) => this.dropped.inc({ reason }, n),
      onWrite: (n) => this.written.inc(n),
      onSync: () => this.syncs.inc(),
    });
    try {
      j.open();
    } catch (e) {
      const why = e instanceof JournalBusy ? e.message : `${(e as NodeJS.ErrnoException).code ?? ''} ${(e as Error).message}`.trim();
      this.log(`recorder: off: ${why}`);
      return false;
    }
    this.journal = j;
    this.note('agent', { event: 'start', pid: process.pid, boot_ms: bootWallMs(), ...fields }, true);
    this.timer = setInterval(() => this.tick(), 1000);
    this.timer.unref();
    return true;
  }

  private ticks: Array<() => void> = [];

  /** Runs before each summary: the agent folds the kernel's tables there. */
  onTick(fn: () => void): void {
    this.ticks.push(fn);
  }

  private bootMs = bootWallMs();

  at(ktimeNs: number): number {
    // Microseconds kept: records of one millisecond stay in the kernel's order.
    return Math.round((this.bootMs + ktimeNs / 1e6) * 1000) / 1000;
  }

  /** A part of the summary line, by name. */
  summary(name: string, part: SummaryPart): void {
    this.parts.set(name, part);
  }

  /**
   * One record. Past the per-second budget a record is counted by kind and
   * not written, unless it is severe; the summary says how many went.
   */
  note(kind: string, fields: object, severe = false): void {
    const j = this.journal;
    if (!j) return;
    const now = Date.now();
    const sec = Math.floor(now / 1000);
    if (sec !== this.second) {
      this.second = sec;
      this.inSecond = 0;
    }
    if (!severe && ++this.inSecond > this.o.maxRecordsPerSecond) {
      this.suppressed.set(kind, (this.suppressed.get(kind) ?? 0) + 1);
      this.dropped.inc({ reason: 'rate_limited' });
      return;
    }
    if (!j.append({ t: now, k: kind, ...fields })) return;
    this.records.inc({ kind });
    if (severe) j.flush(true);
  }

  /** The summary of the second just ended, then a sync. */
  tick(fold = true): void {
    const j = this.journal;
    if (!j) return;
    for (const fn of fold ? this.ticks : []) {
      try {
        fn();
      } catch (e) {
        this.log(`recorder: collection before the summary failed: ${(e as Error).message}`);
      }
    }
    this.bootMs = bootWallMs(); // the wall clock may have been set
    const s: Record<string, unknown> = { ...node(this) };
    for (const [name, part] of this.parts) {
      try {
        const v = part();
        if (v !== undefined) s[name] = v;
      } catch (e) {
        s[name] = { error: (e as Error).message };
      }
    }
    if (this.suppressed.size) {
      s.suppressed = Object.fromEntries(this.suppressed);
      this.suppressed = new Map();
    }
    if (j.append({ t: Date.now(), k: 'summary', ...s })) this.records.inc({ kind: 'summary' });
    j.flush(true);
  }

  /** The node's CPU busy share over the last second and its memory in use. */
  cpuBusy(): number | undefined {
    try {
      const f = fs.readFileSync('/proc/stat', 'latin1');
      const v = f.slice(0, f.indexOf('\n')).trim().split(/\s+/).slice(1).map(Number);
      const total = v.reduce((a, b) => a + b, 0);
      const idle = (v[3] ?? 0) + (v[4] ?? 0);
      const now = { busy: total - idle, total };
      const last = this.lastCpu;
      this.lastCpu = now;
      if (!last || now.total <= last.total) return undefined;
      return Math.round((1000 * (now.busy - last.busy)) / (now.total - last.total)) / 10;
    } catch {
      return undefined;
    }
  }

  /** The agent's stop, synced; then the journal is closed. */
  stop(reason: string): void {
    clearInterval(this.timer);
    if (!this.journal) return;
    // The collectors are stopped by now: their tables are gone, not folded again.
    this.tick(false);
    this.note('agent', { event: 'stop', reason }, true);
    this.journal.close();
    this.journal = undefined;
  }
}

function node(r: Recorder): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const cpu = r.cpuBusy();
  if (cpu !== undefined) out.cpu_pct = cpu;
  try {
    const m = fs.readFileSync('/proc/meminfo', 'latin1');
    const kb = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(m)?.[1] ?? 0);
    out.mem_used_bytes = (kb('MemTotal') - kb('MemAvailable')) * 1024;
  } catch {
    /* no /proc */
  }
  const mu = process.memoryUsage();
  out.agent_rss_bytes = mu.rss;
  return out;
}
