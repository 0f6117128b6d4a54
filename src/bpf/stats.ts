import fs from 'node:fs';
import { addon } from './addon.js';
import type { BpfProgram } from './object.js';

/** Per-program totals counted while the kernel's run-time statistics were on. */
export interface ProgramTotals {
  program: string;
  runs: number;
  runTimeNs: number;
  /** Average cost of one run in the last window, in ns (0 if it did not run). */
  lastNsPerRun: number;
}

export interface StatsOptions {
  intervalMs: number;
  windowMs: number;
}

/**
 * Kernel run-time statistics cost about 75 ns per program run, so they are
 * switched on only in short windows: BPF_ENABLE_STATS holds them on while
 * its fd is open. If an operator already turned them on for good
 * (kernel.bpf_stats_enabled=1), every run is counted instead.
 */
export class ProgramStatsSampler {
  private readonly programs = new Map<string, BpfProgram>();
  private readonly totals = new Map<string, ProgramTotals>();
  private sampledNs = 0;
  private timer: NodeJS.Timeout | undefined;
  private windowTimer: NodeJS.Timeout | undefined;
  private statsFd = -1;
  private windowStart: Map<string, { runs: number; ns: number }> | undefined;
  private windowStartedAt = 0n;
  /** CPU the programs used in the last window, in % of one core. */
  lastCpuPercent = 0;

  constructor(private readonly opts: StatsOptions) {}

  add(programs: Iterable<BpfProgram>): void {
    for (const p of programs) {
      this.programs.set(p.name, p);
      if (!this.totals.has(p.name)) {
        this.totals.set(p.name, { program: p.name, runs: 0, runTimeNs: 0, lastNsPerRun: 0 });
      }
    }
  }

  remove(programs: Iterable<BpfProgram>): void {
    for (const p of programs) this.programs.delete(p.name);
  }

  start(): void {
    this.timer = setInterval(() => this.openWindow(), this.opts.intervalMs);
    this.timer.unref();
    this.openWindow();
  }

  stop(): void {
    clearInterval(this.timer);
    clearTimeout(this.windowTimer);
    this.closeWindow();
  }

  /** Seconds during which statistics were being counted. */
  get sampledSeconds(): number {
    return this.sampledNs / 1e9;
  }

  snapshot(): ProgramTotals[] {
    return [...this.totals.values()];
  }

  /** Runs one window now and resolves when it is closed (doctor, tests). */
  async sampleOnce(windowMs: number): Promise<void> {
    this.openWindow();
    clearTimeout(this.windowTimer);
    await new Promise((r) => setTimeout(r, windowMs));
    this.closeWindow();
  }

  private read(): Map<string, { runs: number; ns: number }> {
    const m = new Map<string, { runs: number; ns: number }>();
    for (const [name, p] of this.programs) {
      try {
        const i = addon().progInfo(p.info.fd);
        m.set(name, { runs: i.runCount, ns: i.runTimeNs });
      } catch {
        // A program closed between two reads has nothing more to report.
      }
    }
    return m;
  }

  private openWindow(): void {
    if (this.windowStart) return;
    if (!alwaysOn()) {
      try {
        this.statsFd = addon().enableStats();
      } catch {
        return; // kernel without BPF_ENABLE_STATS: nothing to sample
      }
    }
    this.windowStart = this.read();
    this.windowStartedAt = process.hrtime.bigint();
    this.windowTimer = setTimeout(() => this.closeWindow(), this.opts.windowMs);
    this.windowTimer.unref();
  }

  private closeWindow(): void {
    if (!this.windowStart) return;
    const end = this.read();
    if (this.statsFd >= 0) {
      addon().closeFd(this.statsFd);
      this.statsFd = -1;
    }
    const wall = Number(process.hrtime.bigint() - this.windowStartedAt);
    this.sampledNs += wall;
    let windowNs = 0;
    for (const [name, e] of end) {
      const s = this.windowStart.get(name);
      const t = this.totals.get(name);
      if (!s || !t) continue;
      const runs = e.runs - s.runs;
      const ns = e.ns - s.ns;
      t.runs += runs;
      t.runTimeNs += ns;
      t.lastNsPerRun = runs > 0 ? ns / runs : 0;
      windowNs += ns;
    }
    this.lastCpuPercent = wall > 0 ? (windowNs / wall) * 100 : 0;
    this.windowStart = undefined;
  }
}

function alwaysOn(): boolean {
  try {
    return fs.readFileSync('/proc/sys/kernel/bpf_stats_enabled', 'utf8').trim() === '1';
  } catch {
    return false;
  }
}
