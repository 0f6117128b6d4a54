import client from 'prom-client';
import { BpfObject, type BpfMap, type BpfProgram, type RingBuffer } from '../../bpf/object.js';
import { bpfObjectPath } from '../../paths.js';
import type { Config } from '../../config/schema.js';
import type { KernelFeatures } from '../../capabilities/features.js';
import { LabelLimiter } from '../../metrics/label-limiter.js';
import type { Labels } from '../../metrics/registry.js';
import { sumField } from '../tcp/decode.js';
import type { HookChoice } from '../hooks.js';
import type { Collector, CollectorContext, CollectorPlan } from '../types.js';
import { DROP_REASONS, END_CLOSED, END_EXTRA, ROLE_SERVER, decodeEvent, type HttpEvent } from './decode.js';
import { parseResponseHead, splitRequests, type RequestHead } from './parse.js';
import { RouteMatcher, templatePath } from './route.js';

const OBJECT = 'http.bpf.o';

/** Syscall exits the collector hooks, with their programs (bpf/http.bpf.c). */
const SYSCALLS: Array<[string, string]> = [
  ['sys_exit_accept4', 'http_accept4'],
  ['sys_exit_accept', 'http_accept'],
  ['sys_exit_connect', 'http_connect'],
  ['sys_exit_close', 'http_close'],
  ['sys_exit_read', 'http_read'],
  ['sys_exit_recvfrom', 'http_recvfrom'],
  ['sys_exit_readv', 'http_readv'],
  ['sys_exit_recvmsg', 'http_recvmsg'],
  ['sys_exit_write', 'http_write'],
  ['sys_exit_sendto', 'http_sendto'],
  ['sys_exit_writev', 'http_writev'],
  ['sys_exit_sendmsg', 'http_sendmsg'],
  ['sys_exit_sendfile64', 'http_sendfile'],
];

const SERVER_LABELS = ['service_name', 'http_request_method', 'http_response_status_code', 'http_route'];
const CLIENT_LABELS = ['service_name', 'http_request_method', 'http_response_status_code', 'server_address', 'server_port', 'error_type'];
/** Body sizes: powers of two from 32 B to 1 MiB, and 0 for empty bodies. */
const SIZE_BUCKETS = [0, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536, 262144, 1048576];

/** Body length from a head: Content-Length, else what follows the blank line. */
function bodySize(head: Buffer, total: number, contentLength: number | undefined, chunked: boolean): number | undefined {
  if (contentLength !== undefined) return contentLength;
  if (chunked) return undefined; // framing we do not follow
  const end = head.indexOf('\r\n\r\n', 0, 'latin1');
  return end < 0 ? undefined : Math.max(0, total - end - 4);
}

export class HttpCollector implements Collector {
  readonly name = 'http';
  private obj: BpfObject | undefined;
  private rb: RingBuffer | undefined;
  private ctx!: CollectorContext;
  private serverDuration!: client.Histogram<string>;
  private clientDuration!: client.Histogram<string>;
  private sizes!: Record<'serverReq' | 'serverResp' | 'clientReq' | 'clientResp', client.Histogram<string>>;
  private aborted!: client.Counter<string>;
  private unparsed!: client.Counter<string>;
  private serverLimiter!: LabelLimiter;
  private clientLimiter!: LabelLimiter;
  private routes = new Map<string, Set<string>>();
  private matchers = new Map<string, RouteMatcher>();
  private lastDrops: number[] = [];
  /** Pipelined requests waiting for their response, per (tgid, fd). */
  private pending = new Map<string, RequestHead[]>();

  plan(f: KernelFeatures, config: Config): CollectorPlan {
    const hooks: HookChoice[] = SYSCALLS.map(([event, program]) =>
      f.hasTracepoint(event) ? { event, kind: 'tracepoint', program } : { event, kind: null, reason: 'tracepoint not in this kernel (or tracefs not mounted)' },
    ) as HookChoice[];
    if (!config.collectors.http.enabled) return { collector: this.name, runnable: false, reason: 'disabled in config', hooks };
    if (!f.tracepoint) return { collector: this.name, runnable: false, reason: 'tracepoint programs cannot be loaded', hooks };
    const missing = hooks.filter((h) => !h.kind && h.event !== 'sys_exit_accept' && h.event !== 'sys_exit_sendfile64');
    if (missing.length) return { collector: this.name, runnable: false, reason: `${missing[0]!.event}: ${missing[0]!.reason}`, hooks };
    return { collector: this.name, runnable: true, hooks };
  }

  start(ctx: CollectorContext): void {
    this.ctx = ctx;
    const cfg = ctx.config.collectors.http;
    const plan = this.plan(ctx.features, ctx.config);
    if (!plan.runnable) throw new Error(`http collector cannot run: ${plan.reason}`);
    const chosen = plan.hooks.filter((h) => h.kind);
    this.obj = BpfObject.load(bpfObjectPath(OBJECT), {
      skipPrograms: plan.hooks.filter((h) => !h.kind).map((h) => SYSCALLS.find(([e]) => e === h.event)![1]),
      rodata: { self_tgid: process.pid },
      maxEntries: { conns: cfg.maps.connections },
    });
    for (const [service, routes] of Object.entries(cfg.routes)) this.matchers.set(service, new RouteMatcher(routes));

    const m = ctx.metrics.registry;
    const buckets = [...cfg.durationBuckets].sort((a, b) => a - b);
    this.serverDuration = new client.Histogram({ name: 'http_server_request_duration_seconds', help: 'Duration of HTTP server requests, from the request\'s first byte read to the response\'s first byte written.', labelNames: SERVER_LABELS, buckets, registers: [m] });
    this.clientDuration = new client.Histogram({ name: 'http_client_request_duration_seconds', help: 'Duration of HTTP client requests, from the request\'s first byte written to the response\'s first byte read.', labelNames: CLIENT_LABELS, buckets, registers: [m] });
    const size = (name: string, help: string, labels: string[]) => new client.Histogram({ name, help, labelNames: labels, buckets: SIZE_BUCKETS, registers: [m] });
    this.sizes = {
      serverReq: size('http_server_request_body_size_bytes', 'Size of HTTP server request bodies (Content-Length, or bytes after the head).', SERVER_LABELS),
      serverResp: size('http_server_response_body_size_bytes', 'Size of HTTP server response bodies (Content-Length, or bytes after the head in the first write).', SERVER_LABELS),
      clientReq: size('http_client_request_body_size_bytes', 'Size of HTTP client request bodies.', CLIENT_LABELS),
      clientResp: size('http_client_response_body_size_bytes', 'Size of HTTP client response bodies.', CLIENT_LABELS),
    };
    this.aborted = ctx.metrics.counter('kernscope_http_server_requests_aborted_total', 'HTTP server requests whose connection closed before any response.', ['service_name']);
    this.unparsed = ctx.metrics.counter('kernscope_http_unparsed_total', 'Records whose bytes were not a well-formed HTTP/1.x head, ignored.', ['side']);
    this.serverLimiter = new LabelLimiter(cfg.maxSeries, () => ctx.drops.inc({ source: 'http', reason: 'label_overflow' }));
    this.clientLimiter = new LabelLimiter(cfg.maxSeries, () => ctx.drops.inc({ source: 'http', reason: 'label_overflow' }));
    for (const reason of [...DROP_REASONS, 'label_overflow', 'route_overflow']) ctx.drops.inc({ source: 'http', reason }, 0);

    try {
      this.rb = this.obj.ringBuffer('http_events', (rec) => this.onRecord(rec));
      for (const h of chosen) this.obj.attach(h.program!, { kind: 'auto' });
    } catch (e) {
      this.stop();
      throw e;
    }
  }

  programs(): BpfProgram[] {
    return this.obj ? [...this.obj.programs.values()] : [];
  }

  private route(service: string, path: string, complete: boolean): string {
    const configured = this.matchers.get(service)?.match(path);
    const route = configured ?? templatePath(path, complete);
    let seen = this.routes.get(service);
    if (!seen) this.routes.set(service, (seen = new Set()));
    if (seen.has(route)) return route;
    if (seen.size >= this.ctx.config.collectors.http.maxRoutesPerService) {
      this.ctx.drops.inc({ source: 'http', reason: 'route_overflow' });
      return '_other';
    }
    seen.add(route);
    return route;
  }

  private onRecord(rec: Buffer): void {
    const e = decodeEvent(rec);
    if (!e) return;
    const server = e.role === ROLE_SERVER;
    const side = server ? 'server' : 'client';
    const conn = `${e.tgid}:${e.fd}`;
    let req: RequestHead | undefined;
    if (e.end === END_EXTRA) {
      // A later response on a connection with pipelined requests: the
      // oldest request still waiting is the one it answers.
      req = this.pending.get(conn)?.shift() ?? { method: '_OTHER', path: '', pathComplete: false, chunked: false };
    } else {
      const all = splitRequests(e.reqHead);
      req = all[0];
      if (!req) {
        this.unparsed.inc({ side });
        return;
      }
      if (all.length > 1) {
        if (this.pending.size >= 10_000) this.pending.clear(); // bounded; stale entries go first
        this.pending.set(conn, all.slice(1));
      } else {
        this.pending.delete(conn);
      }
    }
    const service = this.ctx.namer.names(e.tgid, e.comm).service;
    const resp = e.end === END_CLOSED ? undefined : parseResponseHead(e.respHead);
    if (e.end !== END_CLOSED && !resp) {
      this.unparsed.inc({ side });
      return;
    }
    const seconds = e.durationNs / 1e9;
    if (server) this.onServer(e, service, req, resp, seconds);
    else this.onClient(e, service, req, resp, seconds);
    if (e.end === END_CLOSED) {
      // Pipelined requests behind it were never answered either.
      for (const r of this.pending.get(conn) ?? []) {
        if (server) this.onServer(e, service, r, undefined, seconds);
        else this.onClient(e, service, r, undefined, seconds);
      }
      this.pending.delete(conn);
    }
  }

  private onServer(e: HttpEvent, service: string, req: RequestHead, resp: ReturnType<typeof parseResponseHead>, seconds: number): void {
    if (!resp) {
      // Documented rule: a request closed before any response is not a
      // latency sample; it is counted as aborted.
      this.aborted.inc({ service_name: service });
      return;
    }
    const raw: Labels = {
      service_name: service,
      http_request_method: req.method,
      http_response_status_code: String(resp.status),
      http_route: req.method === '_OTHER' ? '_unknown' : this.route(service, req.path, req.pathComplete),
    };
    const labels = this.serverLimiter.admit(Object.values(raw).join('\0'), raw);
    this.serverDuration.observe(labels, seconds);
    const reqBody = bodySize(e.reqHead, e.requestBytes, req.contentLength, req.chunked);
    if (reqBody !== undefined) this.sizes.serverReq.observe(labels, reqBody);
    const respBody = bodySize(e.respHead, e.responseBytes, resp.contentLength, resp.chunked);
    if (respBody !== undefined) this.sizes.serverResp.observe(labels, respBody);
  }

  private onClient(e: HttpEvent, service: string, req: RequestHead, resp: ReturnType<typeof parseResponseHead>, seconds: number): void {
    const host = req.host?.replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1');
    const raw: Labels = {
      service_name: service,
      http_request_method: req.method,
      http_response_status_code: resp ? String(resp.status) : '',
      server_address: host || e.peerAddr,
      server_port: String(e.peerPort),
      error_type: resp ? (resp.status >= 400 ? String(resp.status) : '') : 'connection_closed',
    };
    const labels = this.clientLimiter.admit(Object.values(raw).join('\0'), raw);
    this.clientDuration.observe(labels, seconds);
    const reqBody = bodySize(e.reqHead, e.requestBytes, req.contentLength, req.chunked);
    if (reqBody !== undefined) this.sizes.clientReq.observe(labels, reqBody);
    if (resp) {
      const respBody = bodySize(e.respHead, e.responseBytes, resp.contentLength, resp.chunked);
      if (respBody !== undefined) this.sizes.clientResp.observe(labels, respBody);
    }
  }

  collect(): void {
    if (!this.obj) return;
    const map: BpfMap = this.obj.map('drops');
    const ncpus = map.valueBytes / map.slotSize;
    for (const { key, value } of map.entries()) {
      const i = key.readUInt32LE(0);
      const reason = DROP_REASONS[i];
      if (!reason) continue;
      const cur = sumField(value, map.slotSize, ncpus, 0);
      const d = cur - (this.lastDrops[i] ?? 0);
      this.lastDrops[i] = cur;
      if (d > 0) this.ctx.drops.inc({ source: 'http', reason }, d);
    }
  }

  stop(): void {
    this.rb?.close();
    this.rb = undefined;
    this.obj?.close();
    this.obj = undefined;
  }
}
