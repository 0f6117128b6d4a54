/**
 * The HTTP collector's slow path: records the kernel sends through its ring
 * buffer for what it does not aggregate itself (pipelined requests, heads it
 * leaves to user space, failed connects, processes to judge) and the sampled
 * live stream. Each request is counted into the same series the kernel's
 * tables feed (export.ts).
 */
import type { ProcessNames } from '../../process/names.js';
import type { HttpEvent, HttpLayout } from './decode.js';
import type { HttpExport } from './export.js';
import type { Routes } from './fold.js';
import { headEnd, parseResponseHead, splitRequests, type RequestHead, type ResponseHead } from './parse.js';

const UNKNOWN_REQUEST: RequestHead = { method: '_OTHER', path: '', pathComplete: false, chunked: false };

/** Body length from a head: Content-Length, else what follows the blank line. */
function bodySize(head: Buffer, total: number, contentLength: number | undefined, chunked: boolean): number | undefined {
  if (contentLength !== undefined) return contentLength;
  if (chunked) return undefined; // framing we do not follow
  const end = headEnd(head);
  return end < 0 ? undefined : Math.max(0, total - end);
}

export interface RecordHooks {
  namer: { names(tgid: number, comm: string, port?: number): ProcessNames };
  /** Whether a process (and a server's port) is watched; undefined: all are. */
  accepts?: (tgid: number, comm: string, port: number | undefined) => boolean;
  /** A process the kernel asks about, or one seen before it was judged. */
  judge: (tgid: number, comm: string, asked: boolean) => void;
  publish: (event: object) => void;
  sampleEvery: () => number;
}

export class HttpRecords {
  /** Pipelined requests waiting for their response, per (tgid, fd). */
  private readonly pending = new Map<string, RequestHead[]>();

  constructor(
    private readonly layout: HttpLayout,
    private readonly out: HttpExport,
    private readonly routes: Routes,
    private readonly hooks: RecordHooks,
  ) {}

  onRecord(rec: Buffer): void {
    const e = this.layout.decodeEvent(rec);
    if (!e) return;
    if (e.end === 'judge') {
      this.hooks.judge(e.tgid, e.comm, true);
      return;
    }
    this.hooks.judge(e.tgid, e.comm, false);
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
    const accepted = !this.hooks.accepts || this.hooks.accepts(e.tgid, e.comm, port);
    if (e.end === 'connect_failed') {
      // The server is down: a client request that never left, an error.
      if (!accepted) return;
      const n = this.hooks.namer.names(e.tgid, e.comm);
      this.client(e, n, UNKNOWN_REQUEST, undefined, this.layout.connectErrors[e.error] ?? 'connect_error');
      return;
    }
    const n = accepted ? this.hooks.namer.names(e.tgid, e.comm, port) : undefined;
    if (n && !n.inScope) return;
    if (e.end === 'sample') {
      if (n) this.sample(e, n, server);
      return;
    }
    if (e.end === 'closed') {
      // Closed with requests unanswered: its own (one the kernel could not
      // parse) and pipelined ones still waiting here.
      const waiting = this.pending.get(conn) ?? [];
      this.pending.delete(conn);
      if (!n) return;
      const own = e.weight && e.reqHead.length ? splitRequests(e.reqHead).slice(0, 1) : [];
      if (e.weight && e.reqHead.length && !own.length) this.out.unparsed(side);
      for (const r of [...own, ...waiting]) {
        if (server) this.server(e, n, r, undefined, false);
        else this.client(e, n, r, undefined, undefined, false);
      }
      return;
    }
    let req: RequestHead | undefined;
    let withBodies = true;
    if (e.end === 'extra') {
      // A later response on a connection with pipelined requests: the
      // oldest request still waiting is the one it answers.
      req = this.pending.get(conn)?.shift() ?? UNKNOWN_REQUEST;
      withBodies = false;
    } else {
      req = splitRequests(e.reqHead)[0];
      if (!req) {
        this.out.unparsed(side);
        return;
      }
    }
    if (!n) return;
    const resp = parseResponseHead(e.respHead);
    if (!resp) {
      this.out.unparsed(side);
      return;
    }
    if (server) this.server(e, n, req, resp, withBodies);
    else this.client(e, n, req, resp, undefined, withBodies);
  }

  /** The live stream: already counted by the kernel, only shown. */
  private sample(e: HttpEvent, n: ProcessNames, server: boolean): void {
    const req = splitRequests(e.reqHead)[0];
    const resp = parseResponseHead(e.respHead);
    this.hooks.publish({
      type: 'http_request',
      time: new Date().toISOString(),
      pid: e.tgid,
      service_name: n.service,
      direction: server ? 'server' : 'client',
      method: req?.method ?? '_OTHER',
      path: req?.path ?? '',
      ...(server ? {} : { server_address: req?.host ?? e.peerAddr, server_port: e.peerPort }),
      status: resp?.status ?? 0,
      duration_ms: Math.round(e.durationNs / 1e3) / 1e3,
      sample_every: this.hooks.sampleEvery(),
    });
  }

  /** A request of the slow path, counted as the kernel would have. */
  private server(e: HttpEvent, n: ProcessNames, req: RequestHead, resp: ResponseHead | undefined, withBodies: boolean): void {
    this.out.countTotal(n.service, true, resp?.status ?? 0, 1, n.meta);
    if (!resp) {
      // Documented rule: a request closed before any response is not a
      // latency sample; it is counted as aborted.
      this.out.aborted(n.service, 1);
      return;
    }
    const route = req.method === '_OTHER' ? '_unknown' : this.routes.of(n.service, req.path, req.pathComplete);
    const b = this.out.serverBundle(n.service, req.method, String(resp.status), route, n.meta);
    this.out.observe(true, b, e.durationNs / 1e9, this.requestBody(e, req, withBodies), bodySize(e.respHead, e.responseBytes, resp.contentLength, resp.chunked));
  }

  private client(e: HttpEvent, n: ProcessNames, req: RequestHead, resp: ResponseHead | undefined, failure?: string, withBodies = true): void {
    this.out.countTotal(n.service, false, resp?.status ?? 0, 1, n.meta);
    const address = req.host ? req.host.replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1') : e.peerAddr;
    const status = resp ? String(resp.status) : '';
    const error = resp ? (resp.status >= 400 ? status : '') : (failure ?? 'connection_closed');
    const b = this.out.clientBundle(n.service, req.method, status, address, e.peerPort, error, n.meta);
    const respBody = resp ? bodySize(e.respHead, e.responseBytes, resp.contentLength, resp.chunked) : undefined;
    this.out.observe(false, b, e.durationNs / 1e9, this.requestBody(e, req, withBodies), respBody);
  }

  private requestBody(e: HttpEvent, req: RequestHead, withBodies: boolean): number | undefined {
    return withBodies ? bodySize(e.reqHead, e.requestBytes, req.contentLength, req.chunked) : req.contentLength ?? 0;
  }
}
