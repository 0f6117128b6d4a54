import type client from 'prom-client';
import type { Config } from '../config/schema.js';
import type { MetricsRegistry } from '../metrics/registry.js';
import type { ServiceNamer } from '../process/names.js';
import type { Liveness } from '../process/liveness.js';
import type { BpfProgram } from '../bpf/object.js';
import type { KernelFeatures } from '../capabilities/features.js';
import type { HookChoice } from './hooks.js';
import type { Sampled } from '../overhead.js';

export interface CollectorContext {
  config: Config;
  metrics: MetricsRegistry;
  namer: ServiceNamer;
  /** Which processes live, asked once per collection round for every collector; a process gone is forgotten in one place. */
  procs: Liveness;
  /** kernscope_events_dropped_total{source,reason} */
  drops: client.Counter<string>;
  features: KernelFeatures;
  log: (msg: string) => void;
  /** Sends an event to live subscribers (GET /events). */
  publish: (event: object) => void;
  /** The flight recorder (config `recorder`); notes go nowhere when it is off. */
  recorder: RecorderSink;
}

/** What collectors see of the flight recorder. */
export interface RecorderSink {
  readonly on: boolean;
  /** A notable event; `severe` ones are synced to disk at once. */
  note(kind: string, fields: object, severe?: boolean): void;
  /** Wall-clock milliseconds of a kernel timestamp (bpf_ktime_get_ns): a note's `t`, so records keep the kernel's order. */
  at(ktimeNs: number): number;
  /** A part of the once-a-second summary line. */
  summary(name: string, part: () => object | undefined): void;
}

/** What a collector would do on this kernel, for `doctor` and the start-up log. */
export interface CollectorPlan {
  collector: string;
  runnable: boolean;
  reason?: string;
  hooks: HookChoice[];
}

export interface Collector {
  readonly name: string;
  plan(features: KernelFeatures, config: Config): CollectorPlan;
  start(ctx: CollectorContext): void;
  /**
   * Folds kernel maps into metrics; cheap enough to call before every scrape.
   * `forSummary`: the recorder's second asks, and work its summary does not
   * read (a walk of every open socket) may wait for the scrape.
   */
  collect(forSummary?: boolean): void;
  programs(): BpfProgram[];
  /** A per-request stream the CPU budget may thin out (config `overhead`), when the collector has one. */
  readonly sampled?: Sampled;
  /** Reads its files again (SIGHUP), when it has any. */
  reload?(): void;
  /** Detaches everything; perf-event links detach in parallel, off the main thread. */
  stop(): Promise<void> | void;
}
