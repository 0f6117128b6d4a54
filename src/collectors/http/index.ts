import fs from 'node:fs';
import type client from 'prom-client';
import { BpfObject, MapUpdate, type BpfMap, type BpfProgram, type RingBuffer } from '../../bpf/object.js';
import { scanSockets } from '../../process/sockets.js';
import { META_LABELS, ProcessFilter, metadataOn } from '../../process/names.js';
import { bpfObjectPath } from '../../paths.js';
import type { Config } from '../../config/schema.js';
import type { KernelFeatures } from '../../capabilities/features.js';
import { LabelLimiter } from '../../metrics/label-limiter.js';
import type { Labels } from '../../metrics/registry.js';
import { BucketHistogram, type Series } from '../../metrics/bucket-histogram.js';
import type { HookChoice } from '../hooks.js';
import type { Collector, CollectorContext, CollectorPlan } from '../types.js';
import { KernelDrops } from '../drops.js';
import { HttpLayout, type HttpEvent } from './decode.js';
import { headEnd, parseResponseHead, splitRequests, type RequestHead, type ResponseHead } from './parse.js';
import { RouteMatcher, templatePath } from './route.js';

const OBJECT = 'http.bpf.o';

/** Syscall exits the collector hooks, with their programs (bpf/http.bpf.c). */
const SYSCALLS: Array<[string, string]> = [
  ['sys_exit_accept4', 'http_accept4'],
  ['sys_exit_accept', 'http_accept'],
  ['sys_exit_connect', 'http_connect'],
  ['sys_exit_close', 'http_close'],
  ['sys_exit_getsockopt', 'http_getsockopt'],
];
/** Where reads and writes are seen without the socket tracepoints. */
const DATA_SYSCALLS: Array<[string, string]> = [
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
/** The socket layer's tracepoints (Linux 6.3+): only socket I/O pays for them. */
const DATA_SOCKET: Array<[string, string]> = [
  ['sock_recv_length', 'http_sock_recv'],
  ['sock_send_length', 'http_sock_send'],
];
/** Hooks the collector runs without. */
const OPTIONAL = ['sys_exit_accept', 'sys_exit_sendfile64', 'sys_exit_getsockopt', 'SSL_read/SSL_write'];

/** error_type of a client whose connect failed, by errno. */
const CONNECT_ERRORS: Record<number, string> = {
  111: 'connection_refused',
  110: 'timeout',
  113: 'host_unreachable',
  101: 'network_unreachable',
  104: 'connection_reset',
};

// Labels, as OpenTelemetry's semantic conventions name them:
//   server: service_name, http_request_method, http_response_status_code, http_route
//   client: service_name, http_request_method, http_response_status_code,
//           server_address, server_port, error_type
const TLS_PROGRAMS = ['tls_enter_rw', 'tls_enter_ex', 'tls_read_ret', 'tls_write_ret', 'tls_read_ex_ret', 'tls_write_ex_ret'];
/** Each OpenSSL entry point: the program at its entry and at its return. */
const TLS_PROBES: Array<[string, string, string]> = [
  ['SSL_read', 'tls_enter_rw', 'tls_read_ret'],
  ['SSL_write', 'tls_enter_rw', 'tls_write_ret'],
  ['SSL_read_ex', 'tls_enter_ex', 'tls_read_ex_ret'],
  ['SSL_write_ex', 'tls_enter_ex', 'tls_write_ex_ret'],
];
/** Where Debian and others put OpenSSL 3's libssl. */
const LIBSSL = ['/usr/lib/x86_64-linux-gnu/libssl.so.3', '/lib/x86_64-linux-gnu/libssl.so.3', '/usr/lib/aarch64-linux-gnu/libssl.so.3', '/usr/lib64/libssl.so.3', '/usr/lib/libssl.so.3'];

/** Body sizes: powers of two from 32 B to 1 MiB, and 0 for empty bodies. */
const SIZE_BUCKETS = [0, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536, 262144, 1048576];

/** u64 bounds for a rodata array of HTTP_MAX_BOUNDS (bpf/http.h). */
function bounds(values: readonly number[]): Buffer {
  const b = Buffer.alloc(15 * 8);
  values.forEach((v, i) => b.writeBigUInt64LE(BigInt(Math.round(v)), i * 8));
  return b;
}

/** Body length from a head: Content-Length, else what follows the blank line. */
function bodySize(head: Buffer, total: number, contentLength: number | undefined, chunked: boolean): number | undefined {
  if (contentLength !== undefined) return contentLength;
  if (chunked) return undefined; // framing we do not follow
  const end = headEnd(head);
  return end < 0 ? undefined : Math.max(0, total - end);
}

export class HttpCollector implements Collector {
  readonly name = 'http';
  private obj: BpfObject | undefined;
  private rb: RingBuffer | undefined;
  private ctx!: CollectorContext;
  private serverDuration!: BucketHistogram;
  private clientDuration!: BucketHistogram;
  private sizes!: Record<'serverReq' | 'serverResp' | 'clientReq' | 'clientResp', BucketHistogram>;
  /** Series of one label set, by a key of its raw values: one Map lookup per request. */
  private bundles = new Map<string, { duration: Series; req: Series; resp: Series }>();
  /** Route of each (service, path) seen, bounded. */
  private routeCache = new Map<string, string>();
  private aborted!: client.Counter<string>;
  private unparsed!: client.Counter<string>;
  private serverLimiter!: LabelLimiter;
  private clientLimiter!: LabelLimiter;
  private routes = new Map<string, Set<string>>();
  private matchers = new Map<string, RouteMatcher>();
  private drops!: KernelDrops;
  /** Pipelined requests waiting for their response, per (tgid, fd). */
  private pending = new Map<string, RequestHead[]>();
  private drain: NodeJS.Timeout | undefined;
  private filter!: ProcessFilter;
  /** Binaries whose SSL_read/SSL_write are probed. */
  tlsBinaries: string[] = [];
  private totals!: client.Counter<string>;
  private layout!: HttpLayout;
  /** Last cumulative values of each kernel series, by its key's bytes. */
  private lastAgg = new Map<string, Float64Array>();
  /** Growth of the entry being folded, one u64 field each: reused. */
  private delta = new Float64Array(0);
  /** What each route or host key stands for, once read from http_names. */
  private names = new Map<string, { kind: number; complete: boolean; text: string }>();
  private sampleGauge!: client.Gauge<string>;
  /** Metadata labels of the record at hand (container, pod), {} when off. */
  private meta: Record<string, string> = {};
  private metaKey(): string {
    let k = '';
    for (const v in this.meta) k += `\0${this.meta[v]}`;
    return k;
  }
  /** Processes whose verdict the kernel has, and those judged not watched. */
  private judged = new Set<number>();
  private ignored = new Set<number>();
  sampleEvery = 1;
  private bodySizes = true;

  plan(f: KernelFeatures, config: Config): CollectorPlan {
    const tracepoint = ([event, program]: [string, string]): HookChoice =>
      f.hasTracepoint(event) ? { event, kind: 'tracepoint', program } : { event, kind: null, reason: 'tracepoint not in this kernel (or tracefs not mounted)' };
    // Reads and writes: the socket tracepoints where the kernel has them,
    // else the syscall exits; collectors.http.hooks forces either.
    const want = config.collectors.http.hooks;
    const socketOk = f.tpBtf && DATA_SOCKET.every(([event]) => f.hasBtfType(`btf_trace_${event}`));
    const data: HookChoice[] = want === 'syscalls' || (want === 'auto' && !socketOk)
      ? DATA_SYSCALLS.map(tracepoint)
      : DATA_SOCKET.map(([event, program]) => (socketOk ? { event, kind: 'tp_btf', program } : { event, kind: null, reason: f.tpBtf ? 'tracepoint not in this kernel (Linux 6.3+)' : 'tp_btf programs cannot be loaded' }));
    const hooks: HookChoice[] = [...SYSCALLS.map(tracepoint), ...data];
    if (config.collectors.http.tls.enabled) {
      hooks.push(f.uprobe.ok ? { event: 'SSL_read/SSL_write', kind: 'uprobe' } : { event: 'SSL_read/SSL_write', kind: null, reason: f.uprobe.detail ?? 'uprobes unavailable' });
    }
    if (!config.collectors.http.enabled) return { collector: this.name, runnable: false, reason: 'disabled in config', hooks };
    if (!f.tracepoint) return { collector: this.name, runnable: false, reason: 'tracepoint programs cannot be loaded', hooks };
    const missing = hooks.filter((h) => !h.kind && !OPTIONAL.includes(h.event));
    if (missing.length) return { collector: this.name, runnable: false, reason: `${missing[0]!.event}: ${missing[0]!.reason}`, hooks };
    return { collector: this.name, runnable: true, hooks };
  }

  start(ctx: CollectorContext): void {
    this.ctx = ctx;
    const cfg = ctx.config.collectors.http;
    const plan = this.plan(ctx.features, ctx.config);
    if (!plan.runnable) throw new Error(`http collector cannot run: ${plan.reason}`);
    const durationBounds = [...cfg.durationBuckets].sort((a, b) => a - b);
    const chosen = plan.hooks.filter((h) => h.kind === 'tracepoint' || h.kind === 'tp_btf');
    const tls = plan.hooks.some((h) => h.kind === 'uprobe');
    const used = new Set(chosen.map((h) => h.program));
    this.obj = BpfObject.load(bpfObjectPath(OBJECT), {
      skipPrograms: [
        ...[...SYSCALLS, ...DATA_SYSCALLS, ...DATA_SOCKET].map(([, program]) => program).filter((p) => !used.has(p)),
        ...(tls ? [] : TLS_PROGRAMS),
      ],
      rodata: {
        self_tgid: process.pid,
        tls_enabled: tls ? 1 : 0,
        filter_on: cfg.watch.length || ctx.config.scope.cgroup ? 1 : 0,
        // Histogram bounds: the kernel counts each request in its bucket.
        dur_bounds: bounds(durationBounds.map((s) => Math.round(s * 1e9))),
        dur_nbounds: durationBounds.length,
        size_bounds: bounds(SIZE_BUCKETS),
        size_nbounds: SIZE_BUCKETS.length,
        body_sizes: cfg.bodySizes ? 1 : 0,
        sample_records: cfg.records ? 1 : 0,
      },
      maxEntries: { conns: cfg.maps.connections, http_agg: cfg.maps.aggregation },
    });
    this.layout = new HttpLayout(this.obj);
    for (const [service, routes] of Object.entries(cfg.routes)) this.matchers.set(service, new RouteMatcher(routes));
    // A scope (config scope.cgroup) narrows every watch rule to its cgroup.
    const scope = ctx.config.scope.cgroup;
    const rules = scope ? (cfg.watch.length ? cfg.watch : [{}]).map((r) => ({ ...r, cgroup: r.cgroup ?? scope })) : cfg.watch;
    this.filter = new ProcessFilter(rules);
    for (const port of this.filter.portsAlone()) {
      const k = Buffer.alloc(2);
      k.writeUInt16LE(port);
      this.obj.map('watch_ports').update(k, Buffer.from([1]));
    }
    this.totals = ctx.metrics.counter('kernscope_http_requests_total', 'HTTP requests, exact: by service, direction and status class (1xx..5xx; "none": no response).', ['service_name', 'direction', 'status_class', ...(metadataOn(ctx.config) ? META_LABELS : [])]);
    this.sampleGauge = ctx.metrics.gauge('kernscope_http_sample_every', 'The live stream of requests (collectors.http.records) shows 1 in this many; the http_* histograms are aggregated in the kernel and exact whatever it is.');
    this.setSampleEvery(cfg.sampleEvery);

    const buckets = durationBounds;
    this.bodySizes = cfg.bodySizes;
    const hist = (name: string, help: string, bounds: number[]): BucketHistogram => {
      const h = new BucketHistogram(name, help, bounds);
      ctx.metrics.register(h);
      return h;
    };
    this.serverDuration = hist('http_server_request_duration_seconds', 'Duration of HTTP server requests, from the request\'s first byte read to the response\'s first byte written.', buckets);
    this.clientDuration = hist('http_client_request_duration_seconds', 'Duration of HTTP client requests, from the request\'s first byte written to the response\'s first byte read.', buckets);
    // Body sizes triple the series of each label set: they can be turned off.
    const sizeHist = (name: string, help: string, bounds: number[]): BucketHistogram => (cfg.bodySizes ? hist(name, help, bounds) : new BucketHistogram(name, help, bounds));
    this.sizes = {
      serverReq: sizeHist('http_server_request_body_size_bytes', 'Size of HTTP server request bodies (Content-Length, or bytes after the head).', SIZE_BUCKETS),
      serverResp: sizeHist('http_server_response_body_size_bytes', 'Size of HTTP server response bodies (Content-Length, or bytes after the head in the first write).', SIZE_BUCKETS),
      clientReq: sizeHist('http_client_request_body_size_bytes', 'Size of HTTP client request bodies.', SIZE_BUCKETS),
      clientResp: sizeHist('http_client_response_body_size_bytes', 'Size of HTTP client response bodies.', SIZE_BUCKETS),
    };
    this.aborted = ctx.metrics.counter('kernscope_http_server_requests_aborted_total', 'HTTP server requests whose connection closed before any response.', ['service_name']);
    this.unparsed = ctx.metrics.counter('kernscope_http_unparsed_total', 'Records whose bytes were not a well-formed HTTP/1.x head, ignored.', ['side']);
    this.serverLimiter = new LabelLimiter(cfg.maxSeries, () => ctx.drops.inc({ source: 'http', reason: 'label_overflow' }));
    this.clientLimiter = new LabelLimiter(cfg.maxSeries, () => ctx.drops.inc({ source: 'http', reason: 'label_overflow' }));
    this.drops = new KernelDrops(this.obj.map('drops'), 'http', this.layout.dropReasons, ctx.drops, ['label_overflow', 'route_overflow', 'name_lost']);

    try {
      if (!this.filter.all) this.judgeRunning();
      this.seedConnections();
      this.rb = this.obj.ringBuffer('http_events', (rec) => this.onRecord(rec));
      // The kernel wakes the agent only once records pile up; the rest are
      // drained here, so a record waits at most this long.
      this.drain = setInterval(() => this.rb?.consume(), cfg.flushIntervalMs);
      this.drain.unref();
      for (const h of chosen) this.obj.attach(h.program!, { kind: 'auto' });
      if (tls) this.attachTls();
    } catch (e) {
      clearInterval(this.drain);
      this.obj.close();
      this.obj = undefined;
      throw e;
    }
  }

  /**
   * Connections open before the agent started: the kernel never saw their
   * accept() or connect(). A socket on a port its namespace listens on is a
   * server's; any other, a client's. Written with NOEXIST: a connection the
   * kernel has seen meanwhile is fresher.
   */
  private seedConnections(): void {
    const map = this.obj!.map('conns');
    const all = scanSockets();
    const listening = new Set(all.filter((s) => s.state === 'listen').map((s) => `${s.netns}:${s.localPort}`));
    for (const s of all) {
      if (s.state !== 'established' || s.tgid === process.pid || this.ignored.has(s.tgid)) continue;
      const key = Buffer.alloc(8);
      key.writeUInt32LE(s.tgid, 0);
      key.writeUInt32LE(s.fd, 4);
      const o = this.layout.conn; // struct conn, from the object's BTF
      const v = Buffer.alloc(map.info.valueSize);
      const server = listening.has(`${s.netns}:${s.localPort}`);
      v.writeUInt8(server ? this.layout.roles.server : this.layout.roles.client, o.role);
      v.writeUInt16LE(s.localPort, o.local_port);
      if (!server) {
        v.writeUInt8(s.family, o.family);
        v.writeUInt16LE(s.remotePort, o.peer_port);
        s.remoteAddr.copy(v, o.peer_addr);
      }
      try {
        map.update(key, v, MapUpdate.NOEXIST);
        const t = Buffer.alloc(4);
        t.writeUInt32LE(s.tgid);
        this.obj!.map('tracked_tgids').update(t, Buffer.from([1]));
      } catch {
        // EEXIST: seen by the kernel already; E2BIG: the table is full
      }
    }
  }

  /**
   * Uprobes on SSL_read/SSL_write (and _ex) in libssl and in binaries that
   * link OpenSSL statically, such as node. A binary without the symbols is
   * skipped, and said so.
   */
  private attachTls(): void {
    const cfg = this.ctx.config.collectors.http.tls;
    const candidates = new Set([...LIBSSL.filter((p) => fs.existsSync(p)).slice(0, 1), process.execPath, ...cfg.binaries]);
    this.tlsBinaries = [];
    for (const binary of candidates) {
      try {
        fs.accessSync(binary, fs.constants.R_OK);
      } catch {
        this.ctx.log(`http: TLS: ${binary}: not readable, skipped`);
        continue;
      }
      const links = [];
      try {
        for (const [symbol, enter, ret] of TLS_PROBES) {
          links.push(this.obj!.attach(enter, { kind: 'uprobe', binary, symbol }));
          links.push(this.obj!.attach(ret, { kind: 'uretprobe', binary, symbol }));
        }
        this.tlsBinaries.push(binary);
      } catch (e) {
        for (const l of links) l.detach();
        this.ctx.log(`http: TLS: ${binary}: ${(e as Error).message.split('\n')[0]}, skipped`);
      }
    }
  }

  programs(): BpfProgram[] {
    return this.obj ? [...this.obj.programs.values()] : [];
  }

  /** Sends records for 1 request in `n` (1: every one); counts stay exact in the kernel. */
  setSampleEvery(n: number): void {
    if (!this.obj) return;
    this.sampleEvery = Math.max(1, Math.min(65535, Math.round(n)));
    const v = Buffer.alloc(8);
    v.writeUInt32LE(this.sampleEvery);
    this.obj.map('http_config').update(Buffer.alloc(4), v);
    this.sampleGauge.set(this.sampleEvery);
  }

  /**
   * Tells the kernel whether a process may be watched, so that connections
   * of the others are never tracked (bpf/http.bpf.c `tgid_verdict`). Until
   * a process is judged its connections are tracked, and filtered here.
   */
  private judge(tgid: number, comm: string): void {
    if (this.judged.has(tgid) || !this.obj) return;
    if (this.judged.size >= 65536) {
      // the kernel map is an LRU of that size
      this.judged.clear();
      this.ignored.clear();
    }
    this.judged.add(tgid);
    const k = Buffer.alloc(4);
    k.writeUInt32LE(tgid);
    const watch = this.filter.mayWatchProcess(tgid, comm);
    this.obj.map('tgid_verdict').update(k, Buffer.from([watch ? 1 : 2]));
    if (!watch) this.ignored.add(tgid);
    if (!watch && comm) this.untrack(tgid);
  }

  /**
   * Stops tracking the connections a process opened before it was judged
   * (it started after the agent): once per ignored process that made HTTP
   * traffic, so one table walk is cheap beside what tracking would cost.
   */
  private untrack(tgid: number): void {
    const conns = this.obj!.map('conns');
    for (const { key } of conns.entries()) if (key.readUInt32LE(0) === tgid) conns.delete(key);
    // Its syscalls now leave at the first lookup again.
    const t = Buffer.alloc(4);
    t.writeUInt32LE(tgid);
    this.obj!.map('tracked_tgids').delete(t);
  }

  private judgeRunning(): void {
    for (const d of fs.readdirSync('/proc')) {
      const tgid = Number(d);
      if (Number.isInteger(tgid) && tgid > 0 && tgid !== process.pid) this.judge(tgid, '');
    }
  }

  /** What a route or host key stands for; undefined when the kernel lost it. */
  private nameOf(hex: string): { kind: number; complete: boolean; text: string } | undefined {
    let n = this.names.get(hex);
    if (!n) {
      const v = this.obj!.map('http_names').lookup(Buffer.from(hex, 'hex'));
      if (!v) return undefined;
      n = this.layout.decodeName(v);
      if (this.names.size >= 65536) this.names.clear(); // a cache: read again when needed
      this.names.set(hex, n);
    }
    return n;
  }

  /**
   * Folds the kernel's tables into the exported series: each entry's growth
   * since the last fold is added to the series its labels name, so several
   * kernel keys (processes of one service, routes of one template) add up.
   * Entries of processes that have exited are read a last time and deleted.
   */
  private foldAgg(map: BpfMap, overflow: boolean): void {
    const L = this.layout;
    const H = L.hist;
    const fields = map.info.valueSize / 8;
    if (this.delta.length !== fields) this.delta = new Float64Array(fields);
    const d = this.delta;
    for (const { key, value } of map.entries()) {
      // Most entries have not moved since the last fold: one field tells,
      // before anything is decoded or allocated.
      const hex = key.toString('hex');
      const prev = this.lastAgg.get(hex);
      const proc = this.procOf(key.readUInt32LE(L.key.tgid));
      const total = map.field(value, H.duration + H.count);
      if (!proc.live) {
        map.delete(key); // read a last time below, then forgotten
        this.lastAgg.delete(hex);
      }
      if (prev && total === prev[H.duration + H.count]) continue;
      const cur = new Float64Array(fields);
      for (let f = 0; f < fields; f++) {
        cur[f] = map.field(value, f);
        d[f] = cur[f]! - (prev?.[f] ?? 0);
      }
      if (proc.live) this.lastAgg.set(hex, cur);
      const count = d[H.duration + H.count]!;
      if (count <= 0) continue;
      const k = L.decodeKey(key);
      const server = k.role === L.roles.server;
      if (!this.filter.all && !this.filter.accepts(k.tgid, proc.comm, server ? k.port : undefined)) continue;
      const n = this.ctx.namer.names(k.tgid, proc.comm, server ? k.port || undefined : undefined, proc.argv);
      if (!n.inScope) continue;
      this.meta = n.meta;
      this.countTotal(n.service, server, k.status, count);
      const status = k.status ? String(k.status) : '';
      let b;
      if (server) {
        if (!k.status) {
          this.aborted.inc({ service_name: n.service }, count);
          continue;
        }
        let route = '_overflow';
        if (!overflow) {
          const name = k.name ? this.nameOf(k.name) : undefined;
          if (!name) {
            this.ctx.drops.inc({ source: 'http', reason: 'name_lost' }, count);
            route = '_unknown';
          } else route = this.route(n.service, name.text, name.complete);
        }
        b = this.serverBundle(n.service, overflow ? '_OTHER' : k.method, status, route);
      } else {
        let address = overflow ? '_overflow' : k.addr;
        const host = k.name ? this.nameOf(k.name) : undefined;
        if (host) address = host.text.replace(/^\[(.*)\]$/, '$1');
        const error = k.status ? (k.status >= 400 ? status : '') : 'connection_closed';
        b = this.clientBundle(n.service, overflow ? '_OTHER' : k.method, status, address, k.port, error);
      }
      const [dh, qh, ph] = server ? [this.serverDuration, this.sizes.serverReq, this.sizes.serverResp] : [this.clientDuration, this.sizes.clientReq, this.sizes.clientResp];
      this.addDelta(dh, b.duration, H.duration, 1e-9);
      if (this.bodySizes) {
        this.addDelta(qh, b.req, H.reqBody, 1);
        this.addDelta(ph, b.resp, H.respBody, 1);
      }
    }
  }

  /** Deltas of one kernel histogram (struct ks_http_hist at u64 slot `base`) into a series. */
  private addDelta(h: BucketHistogram, series: Series, base: number, scale: number): void {
    const H = this.layout.hist;
    const d = this.delta;
    const c = d[base + H.count]!;
    if (c > 0) h.addBuckets(series, d.subarray(base + H.buckets, base + H.buckets + H.nbuckets), c, d[base + H.sum]! * scale);
  }

  /** Per fold: whether a process lives, and its command as the kernel saw it. */
  private procs = new Map<number, { live: boolean; comm: string; argv: string[] }>();

  private procOf(tgid: number): { live: boolean; comm: string; argv: string[] } {
    let p = this.procs.get(tgid);
    if (!p) {
      const t = Buffer.alloc(4);
      t.writeUInt32LE(tgid);
      const v = this.obj!.map('proc_comms').lookup(t);
      p = { live: fs.existsSync(`/proc/${tgid}`), ...(v ? this.layout.decodeProc(v) : { comm: '', argv: [] }) };
      this.procs.set(tgid, p);
    }
    return p;
  }

  private countTotal(service: string, server: boolean, status: number, n: number): void {
    const cls = Math.floor(status / 100);
    const labels = (server ? this.serverLimiter : this.clientLimiter).admit(`t\0${service}\0${server}\0${cls}\0${Object.values(this.meta).join('\0')}`, {
      service_name: service,
      direction: server ? 'server' : 'client',
      status_class: cls >= 1 && cls <= 5 ? `${cls}xx` : 'none',
      ...this.meta,
    });
    this.totals.inc(labels, n);
  }

  private route(service: string, path: string, complete: boolean): string {
    const ck = `${service}\0${complete ? path : `${path}\0`}`;
    const cached = this.routeCache.get(ck);
    if (cached !== undefined) return cached;
    const configured = this.matchers.get(service)?.match(path);
    let route = configured ?? templatePath(path, complete);
    let seen = this.routes.get(service);
    if (!seen) this.routes.set(service, (seen = new Set()));
    if (!seen.has(route)) {
      if (seen.size >= this.ctx.config.collectors.http.maxRoutesPerService) {
        this.ctx.drops.inc({ source: 'http', reason: 'route_overflow' });
        route = '_other';
      } else {
        seen.add(route);
      }
    }
    if (this.routeCache.size >= 20_000) this.routeCache.clear();
    this.routeCache.set(ck, route);
    return route;
  }

  /** The series of a label set; labels are built and admitted once per set. */
  private bundle(server: boolean, key: string, raw: () => Labels): { duration: Series; req: Series; resp: Series } {
    const k = `${server ? 's' : 'c'}\0${key}`;
    let b = this.bundles.get(k);
    if (!b) {
      const r = raw();
      const limiter = server ? this.serverLimiter : this.clientLimiter;
      const labels = limiter.admit(k, r);
      const id = Object.values(labels).join('\0');
      const [d, q, p] = server ? [this.serverDuration, this.sizes.serverReq, this.sizes.serverResp] : [this.clientDuration, this.sizes.clientReq, this.sizes.clientResp];
      b = { duration: d.series(id, labels), req: q.series(id, labels), resp: p.series(id, labels) };
      // A cache only (the series live in the histograms): bounded by clearing.
      if (this.bundles.size >= this.ctx.config.collectors.http.maxSeries * 4) this.bundles.clear();
      this.bundles.set(k, b);
    }
    return b;
  }

  /**
   * The slow path: records for what the kernel does not aggregate itself
   * (pipelined requests, heads it could not parse, failed connects), each
   * counted here into the same series the kernel's tables feed.
   */
  private onRecord(rec: Buffer): void {
    const e = this.layout.decodeEvent(rec);
    if (!e) return;
    if (e.end === 'judge') {
      this.judged.delete(e.tgid); // asked by the kernel: its verdict was not there
      this.judge(e.tgid, e.comm);
      return;
    }
    if (!this.filter.all && !this.judged.has(e.tgid)) this.judge(e.tgid, e.comm);
    const server = e.role === this.layout.roles.server;
    const side = server ? 'server' : 'client';
    const conn = `${e.tgid}:${e.fd}`;
    if (e.end === 'pipeline') {
      // Several requests in one read: the kernel counts the first, the
      // responses of the others come as 'extra' records, oldest first.
      const all = splitRequests(e.reqHead);
      if (this.pending.size >= 10_000) this.pending.clear(); // bounded; stale entries go first
      if (all.length > 1) this.pending.set(conn, all.slice(1));
      return;
    }
    const port = server ? e.localPort || undefined : undefined;
    const accepted = (): boolean => this.filter.all || this.filter.accepts(e.tgid, e.comm, port);
    if (e.end === 'connect_failed') {
      // The server is down: a client request that never left, an error.
      if (!accepted()) return;
      const n = this.ctx.namer.names(e.tgid, e.comm);
      this.meta = n.meta;
      this.onClient(e, n.service, { method: '_OTHER', path: '', pathComplete: false, chunked: false }, undefined, e.durationNs / 1e9, CONNECT_ERRORS[e.error] ?? 'connect_error');
      return;
    }
    const seconds = e.durationNs / 1e9;
    const n = accepted() ? this.ctx.namer.names(e.tgid, e.comm, port) : undefined;
    if (n && !n.inScope) return;
    if (n) this.meta = n.meta;
    if (e.end === 'sample') {
      // The live stream: already counted by the kernel, only shown.
      if (!n) return;
      const req = splitRequests(e.reqHead)[0];
      const resp = parseResponseHead(e.respHead);
      this.ctx.publish({
        type: 'http_request',
        time: new Date().toISOString(),
        pid: e.tgid,
        service_name: n.service,
        direction: side,
        method: req?.method ?? '_OTHER',
        path: req?.path ?? '',
        ...(server ? {} : { server_address: req?.host ?? e.peerAddr, server_port: e.peerPort }),
        status: resp?.status ?? 0,
        duration_ms: Math.round(e.durationNs / 1e3) / 1e3,
        sample_every: this.sampleEvery,
      });
      return;
    }
    if (e.end === 'closed') {
      // Closed with requests unanswered: its own (one the kernel could not
      // parse) and pipelined ones still waiting here.
      const waiting = this.pending.get(conn) ?? [];
      this.pending.delete(conn);
      if (!n) return;
      const own = e.weight && e.reqHead.length ? splitRequests(e.reqHead).slice(0, 1) : [];
      if (e.weight && e.reqHead.length && !own.length) this.unparsed.inc({ side });
      for (const r of [...own, ...waiting]) {
        if (server) this.onServer(e, n.service, r, undefined, seconds, false);
        else this.onClient(e, n.service, r, undefined, seconds, undefined, false);
      }
      return;
    }
    let req: RequestHead | undefined;
    let withBodies = true;
    if (e.end === 'extra') {
      // A later response on a connection with pipelined requests: the
      // oldest request still waiting is the one it answers.
      req = this.pending.get(conn)?.shift() ?? { method: '_OTHER', path: '', pathComplete: false, chunked: false };
      withBodies = false;
    } else {
      req = splitRequests(e.reqHead)[0];
      if (!req) {
        this.unparsed.inc({ side });
        return;
      }
    }
    if (!n) return;
    const resp = parseResponseHead(e.respHead);
    if (!resp) {
      this.unparsed.inc({ side });
      return;
    }
    if (server) this.onServer(e, n.service, req, resp, seconds, withBodies);
    else this.onClient(e, n.service, req, resp, seconds, undefined, withBodies);
  }

  private serverBundle(service: string, method: string, status: string, route: string): { duration: Series; req: Series; resp: Series } {
    const meta = this.meta;
    return this.bundle(true, `${service}\0${method}\0${status}\0${route}${this.metaKey()}`, () => ({
      service_name: service,
      http_request_method: method,
      http_response_status_code: status,
      http_route: route,
      ...meta,
    }));
  }

  private clientBundle(service: string, method: string, status: string, address: string, port: number, error: string): { duration: Series; req: Series; resp: Series } {
    const meta = this.meta;
    return this.bundle(false, `${service}\0${method}\0${status}\0${address}\0${port}\0${error}${this.metaKey()}`, () => ({
      service_name: service,
      http_request_method: method,
      http_response_status_code: status,
      server_address: address,
      server_port: String(port),
      error_type: error,
      ...meta,
    }));
  }

  /** A request of the slow path (a record), counted as the kernel would have. */
  private onServer(e: HttpEvent, service: string, req: RequestHead, resp: ResponseHead | undefined, seconds: number, withBodies = true): void {
    this.countTotal(service, true, resp?.status ?? 0, 1);
    if (!resp) {
      // Documented rule: a request closed before any response is not a
      // latency sample; it is counted as aborted.
      this.aborted.inc({ service_name: service });
      return;
    }
    const route = req.method === '_OTHER' ? '_unknown' : this.route(service, req.path, req.pathComplete);
    const b = this.serverBundle(service, req.method, String(resp.status), route);
    this.serverDuration.observe(b.duration, seconds);
    if (!this.bodySizes) return;
    const reqBody = withBodies ? bodySize(e.reqHead, e.requestBytes, req.contentLength, req.chunked) : req.contentLength ?? 0;
    if (reqBody !== undefined) this.sizes.serverReq.observe(b.req, reqBody);
    const respBody = bodySize(e.respHead, e.responseBytes, resp.contentLength, resp.chunked);
    if (respBody !== undefined) this.sizes.serverResp.observe(b.resp, respBody);
  }

  private onClient(e: HttpEvent, service: string, req: RequestHead, resp: ResponseHead | undefined, seconds: number, failure?: string, withBodies = true): void {
    this.countTotal(service, false, resp?.status ?? 0, 1);
    const address = req.host ? req.host.replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1') : e.peerAddr;
    const status = resp ? String(resp.status) : '';
    const error = resp ? (resp.status >= 400 ? status : '') : (failure ?? 'connection_closed');
    const b = this.clientBundle(service, req.method, status, address, e.peerPort, error);
    this.clientDuration.observe(b.duration, seconds);
    if (!this.bodySizes) return;
    const reqBody = withBodies ? bodySize(e.reqHead, e.requestBytes, req.contentLength, req.chunked) : req.contentLength ?? 0;
    if (reqBody !== undefined) this.sizes.clientReq.observe(b.req, reqBody);
    if (resp) {
      const respBody = bodySize(e.respHead, e.responseBytes, resp.contentLength, resp.chunked);
      if (respBody !== undefined) this.sizes.clientResp.observe(b.resp, respBody);
    }
  }

  collect(): void {
    if (!this.obj) return;
    this.rb?.consume(); // a scrape sees every request made before it
    this.procs.clear();
    this.foldAgg(this.obj.map('http_agg'), false);
    this.foldAgg(this.obj.map('http_agg_overflow'), true);
    // Processes gone: their tables were read a last time, their names go too.
    for (const [tgid, p] of this.procs) {
      if (p.live) continue;
      const t = Buffer.alloc(4);
      t.writeUInt32LE(tgid);
      this.obj.map('proc_comms').delete(t);
    }
    this.drops.fold();
  }

  async stop(): Promise<void> {
    clearInterval(this.drain);
    this.rb?.close();
    this.rb = undefined;
    const obj = this.obj;
    this.obj = undefined;
    await obj?.closeAsync();
  }
}
