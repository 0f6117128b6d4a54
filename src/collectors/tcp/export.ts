/**
 * The TCP collector's export stage: its metric families, and the labels a
 * kernel key becomes (service, process, direction, port, and where a
 * process runs), capped at collectors.tcp.maxSeries.
 */
import type client from 'prom-client';
import type { Config } from '../../config/schema.js';
import { KernelHistogram } from '../../metrics/kernel-histogram.js';
import { LabelLimiter } from '../../metrics/label-limiter.js';
import type { Labels, MetricsRegistry } from '../../metrics/registry.js';
import { META_LABELS, metadataOn, type ServiceNamer } from '../../process/names.js';
import { COUNTER_FIELDS, portLabel, type CounterField, type HistKind, type TcpLayout } from './decode.js';

const LABELS = ['service', 'process', 'direction', 'port'] as const;

const COUNTERS: Record<CounterField, [string, string]> = {
  opened: ['kernscope_tcp_connections_opened_total', 'TCP connections established (outbound: connect completed; inbound: handshake completed on a listener).'],
  closed: ['kernscope_tcp_connections_closed_total', 'Established TCP connections that closed.'],
  sentBytes: ['kernscope_tcp_sent_bytes_total', 'Bytes sent and acknowledged on TCP connections, counted when each connection closes.'],
  receivedBytes: ['kernscope_tcp_received_bytes_total', 'Bytes received on TCP connections, counted when each connection closes.'],
  retransmits: ['kernscope_tcp_retransmits_total', 'TCP segments retransmitted.'],
  resetsSent: ['kernscope_tcp_resets_sent_total', 'TCP resets sent (service "unknown" when no socket owned the segment).'],
  resetsReceived: ['kernscope_tcp_resets_received_total', 'TCP resets received.'],
  connectFailed: ['kernscope_tcp_connect_failures_total', 'Outbound TCP connections that closed before the handshake completed (refused, reset, timed out).'],
};

/** Kernel slots are µs (slot i: [2^i, 2^(i+1)) µs); each histogram keeps a useful range. */
const HISTOGRAMS: ReadonlyArray<{ kind: HistKind; name: string; help: string; min: number; max: number }> = [
  { kind: 'connect', name: 'kernscope_tcp_connect_duration_seconds', help: 'Time from SYN sent to connection established.', min: 3, max: 24 },
  { kind: 'rtt', name: 'kernscope_tcp_rtt_seconds', help: 'Smoothed round-trip time: one sample per connection at close, or per socket and interval from incoming segments (collectors.tcp.rtt).', min: 3, max: 21 },
  { kind: 'lifetime', name: 'kernscope_tcp_connection_duration_seconds', help: 'Lifetime of closed connections, from establishment to close.', min: 9, max: 31 },
];

export interface Named {
  id: string;
  labels: Labels;
}

export class TcpExport {
  readonly counters = new Map<CounterField, client.Counter<string>>();
  readonly histograms = new Map<HistKind, KernelHistogram>();
  readonly open: client.Gauge<string>;
  private readonly limiter: LabelLimiter;

  constructor(
    config: Config,
    metrics: MetricsRegistry,
    private readonly layout: TcpLayout,
    private readonly namer: ServiceNamer,
    overflow: () => void,
  ) {
    const labelNames = metadataOn(config) ? [...LABELS, ...META_LABELS] : [...LABELS];
    for (const f of COUNTER_FIELDS) this.counters.set(f, metrics.counter(COUNTERS[f][0], COUNTERS[f][1], labelNames));
    this.open = metrics.gauge('kernscope_tcp_connections_open', 'TCP connections open now (established, or closed by the peer only), as of the last collection; where the kernel has the TCP socket iterator.', labelNames);
    for (const h of HISTOGRAMS) {
      const hist = new KernelHistogram(h.name, h.help, labelNames, h.min, h.max, 1e-6);
      metrics.register(hist);
      this.histograms.set(h.kind, hist);
    }
    this.limiter = new LabelLimiter(config.collectors.tcp.maxSeries, overflow);
  }

  /** A kernel key's labels, or nothing for a process out of scope. */
  labels(keyBuf: Buffer): Named | undefined {
    const k = this.layout.decodeKey(keyBuf);
    const names = this.namer.names(k.tgid, k.comm, k.port);
    if (!names.inScope) return undefined;
    const labels: Labels = {
      service: names.service,
      process: names.process,
      direction: k.dir,
      port: portLabel(k.port),
      ...names.meta,
    };
    const id = (l: Labels): string => Object.values(l).join('\0');
    const admitted = this.limiter.admit(id(labels), labels);
    return { id: id(admitted), labels: admitted };
  }
}
