/**
 * The HTTP collector's export stage: the metric families and the series of
 * each label set. The fold (fold.ts) adds the kernel tables' growth here;
 * the slow path (records.ts) observes requests one at a time. Labels follow
 * OpenTelemetry's semantic conventions:
 *   server: service_name, http_request_method, http_response_status_code, http_route
 *   client: service_name, http_request_method, http_response_status_code,
 *           server_address, server_port, error_type
 */
import type client from 'prom-client';
import type { Config } from '../../config/schema.js';
import { META_LABELS, metadataOn } from '../../process/names.js';
import { LabelLimiter } from '../../metrics/label-limiter.js';
import type { Labels, MetricsRegistry } from '../../metrics/registry.js';
import { BucketHistogram, type Series } from '../../metrics/bucket-histogram.js';
import type { Tally } from '../../recorder/tally.js';

/** Body sizes: powers of two from 32 B to 1 MiB, and 0 for empty bodies. */
export const SIZE_BUCKETS = [0, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536, 262144, 1048576];

/** The series of one label set: its duration and body size histograms. */
export interface Bundle {
  duration: Series;
  req: Series;
  resp: Series;
  /** Its service_name, for the flight recorder's per-service summary. */
  service: string;
}

/** Where each histogram of a kernel entry is, in u64 slots (HttpLayout.hist). */
export interface HistSlots {
  duration: number;
  reqBody: number;
  respBody: number;
  count: number;
  sum: number;
  buckets: number;
  nbuckets: number;
}

/** Metadata labels of a process (container, pod); {} when off. */
export type Meta = Record<string, string>;

export class HttpExport {
  private readonly duration: { server: BucketHistogram; client: BucketHistogram };
  private readonly sizes: { server: [BucketHistogram, BucketHistogram]; client: [BucketHistogram, BucketHistogram] };
  private readonly totals: client.Counter<string>;
  private readonly abortedTotal: client.Counter<string>;
  private readonly unparsedTotal: client.Counter<string>;
  readonly sampleGauge: client.Gauge<string>;
  private readonly limiters: { server: LabelLimiter; client: LabelLimiter };
  /** Series of one label set, by a key of its raw values: one Map lookup per request. */
  private readonly bundles = new Map<string, Bundle>();
  readonly bodySizes: boolean;
  /** Requests, errors and durations per service for the flight recorder, when it is on. */
  tally: Tally | undefined;

  constructor(
    metrics: MetricsRegistry,
    private readonly config: Config,
    durationBounds: number[],
    /** Called once per label set refused by the series cap. */
    onLabelOverflow: () => void,
  ) {
    const cfg = config.collectors.http;
    this.bodySizes = cfg.bodySizes;
    const hist = (name: string, help: string, bounds: number[], register = true): BucketHistogram => {
      const h = new BucketHistogram(name, help, bounds);
      if (register) metrics.register(h);
      return h;
    };
    this.duration = {
      server: hist('http_server_request_duration_seconds', 'Duration of HTTP server requests, from the request\'s first byte read to the response\'s first byte written.', durationBounds),
      client: hist('http_client_request_duration_seconds', 'Duration of HTTP client requests, from the request\'s first byte written to the response\'s first byte read.', durationBounds),
    };
    // Body sizes triple the series of each label set: they can be turned off.
    const on = cfg.bodySizes;
    this.sizes = {
      server: [
        hist('http_server_request_body_size_bytes', 'Size of HTTP server request bodies (Content-Length, or bytes after the head).', SIZE_BUCKETS, on),
        hist('http_server_response_body_size_bytes', 'Size of HTTP server response bodies (Content-Length, or bytes after the head in the first write).', SIZE_BUCKETS, on),
      ],
      client: [
        hist('http_client_request_body_size_bytes', 'Size of HTTP client request bodies.', SIZE_BUCKETS, on),
        hist('http_client_response_body_size_bytes', 'Size of HTTP client response bodies.', SIZE_BUCKETS, on),
      ],
    };
    this.totals = metrics.counter('kernscope_http_requests_total', 'HTTP requests, exact: by service, direction and status class (1xx..5xx; "none": no response).', ['service_name', 'direction', 'status_class', ...(metadataOn(config) ? META_LABELS : [])]);
    this.sampleGauge = metrics.gauge('kernscope_http_sample_every', 'The live stream of requests (collectors.http.records) shows 1 in this many; the http_* histograms are aggregated in the kernel and exact whatever it is.');
    this.abortedTotal = metrics.counter('kernscope_http_server_requests_aborted_total', 'HTTP server requests whose connection closed before any response.', ['service_name']);
    this.unparsedTotal = metrics.counter('kernscope_http_unparsed_total', 'Records whose bytes were not a well-formed HTTP/1.x head, ignored.', ['side']);
    this.limiters = { server: new LabelLimiter(cfg.maxSeries, onLabelOverflow), client: new LabelLimiter(cfg.maxSeries, onLabelOverflow) };
  }

  /** kernscope_http_requests_total: `status` 0 is a request with no response. */
  countTotal(service: string, server: boolean, status: number, n: number, meta: Meta): void {
    const cls = Math.floor(status / 100);
    const side = server ? 'server' : 'client';
    const labels = this.limiters[side].admit(`t\0${service}\0${server}\0${cls}\0${Object.values(meta).join('\0')}`, {
      service_name: service,
      direction: side,
      status_class: cls >= 1 && cls <= 5 ? `${cls}xx` : 'none',
      ...meta,
    });
    this.totals.inc(labels, n);
    if (this.tally) {
      this.tally.add(service, `${side}_req`, n);
      if (status >= 500 || status < 100) this.tally.add(service, `${side}_err`, n);
    }
  }

  /** A server request closed before any response: not a latency sample. */
  aborted(service: string, n: number): void {
    this.abortedTotal.inc({ service_name: service }, n);
  }

  unparsed(side: 'server' | 'client'): void {
    this.unparsedTotal.inc({ side });
  }

  serverBundle(service: string, method: string, status: string, route: string, meta: Meta): Bundle {
    return this.bundle(true, `${service}\0${method}\0${status}\0${route}${metaKey(meta)}`, () => ({
      service_name: service,
      http_request_method: method,
      http_response_status_code: status,
      http_route: route,
      ...meta,
    }));
  }

  clientBundle(service: string, method: string, status: string, address: string, port: number, error: string, meta: Meta): Bundle {
    return this.bundle(false, `${service}\0${method}\0${status}\0${address}\0${port}\0${error}${metaKey(meta)}`, () => ({
      service_name: service,
      http_request_method: method,
      http_response_status_code: status,
      server_address: address,
      server_port: String(port),
      error_type: error,
      ...meta,
    }));
  }

  /** A kernel entry's growth (`d`, u64 slots as Numbers) into a bundle's histograms. */
  addDeltas(server: boolean, b: Bundle, d: Float64Array, H: HistSlots): void {
    const side = server ? 'server' : 'client';
    const add = (h: BucketHistogram, s: Series, base: number, scale: number): void => {
      const c = d[base + H.count]!;
      if (c > 0) h.addBuckets(s, d.subarray(base + H.buckets, base + H.buckets + H.nbuckets), c, d[base + H.sum]! * scale);
    };
    add(this.duration[side], b.duration, H.duration, 1e-9);
    if (this.tally && d[H.duration + H.count]! > 0) {
      this.tally.add(b.service, `${side}_dur_n`, d[H.duration + H.count]!);
      this.tally.add(b.service, `${side}_dur_s`, d[H.duration + H.sum]! * 1e-9);
    }
    if (!this.bodySizes) return;
    add(this.sizes[side][0], b.req, H.reqBody, 1);
    add(this.sizes[side][1], b.resp, H.respBody, 1);
  }

  /** One request of the slow path; body sizes undefined when unknown. */
  observe(server: boolean, b: Bundle, seconds: number, reqBody: number | undefined, respBody: number | undefined): void {
    const side = server ? 'server' : 'client';
    this.duration[side].observe(b.duration, seconds);
    if (this.tally) {
      this.tally.add(b.service, `${side}_dur_n`, 1);
      this.tally.add(b.service, `${side}_dur_s`, seconds);
    }
    if (!this.bodySizes) return;
    if (reqBody !== undefined) this.sizes[side][0].observe(b.req, reqBody);
    if (respBody !== undefined) this.sizes[side][1].observe(b.resp, respBody);
  }

  /** The series of a label set; labels are built and admitted once per set. */
  private bundle(server: boolean, key: string, raw: () => Labels): Bundle {
    const k = `${server ? 's' : 'c'}\0${key}`;
    let b = this.bundles.get(k);
    if (!b) {
      const side = server ? 'server' : 'client';
      const labels = this.limiters[side].admit(k, raw());
      const id = Object.values(labels).join('\0');
      const [q, p] = this.sizes[side];
      b = { duration: this.duration[side].series(id, labels), req: q.series(id, labels), resp: p.series(id, labels), service: labels.service_name ?? '' };
      // A cache only (the series live in the histograms): bounded by clearing.
      if (this.bundles.size >= this.config.collectors.http.maxSeries * 4) this.bundles.clear();
      this.bundles.set(k, b);
    }
    return b;
  }
}

function metaKey(meta: Meta): string {
  let k = '';
  for (const v in meta) k += `\0${meta[v]}`;
  return k;
}
