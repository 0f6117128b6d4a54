/**
 * The HTTP collector's fold: from the kernel's tables (`http_agg` and its
 * overflow, values summed over CPUs by the addon) to the exported series.
 * Each entry's growth since the last fold is added to the series its labels
 * name, so several kernel keys (processes of one service, routes of one
 * template) add up. Pure: it sees the kernel only through `FoldSources`, so
 * it is tested without root (test/unit/http-fold.test.ts).
 */
import type { MapEntry } from '../../bpf/object.js';
import type { ProcessNames } from '../../process/names.js';
import { u64, type HttpLayout } from './decode.js';
import type { HttpExport } from './export.js';
import { RouteMatcher, templatePath } from './route.js';

/** A process as the kernel saw it, and whether it still runs. */
export interface KernelProc {
  live: boolean;
  comm: string;
  argv: string[];
}

/** What a route or host key stands for (bpf/http.h struct ks_http_name). */
export interface KeyName {
  kind: number;
  complete: boolean;
  text: string;
}

/** The kernel as the fold sees it. */
export interface FoldSources {
  proc(tgid: number): KernelProc;
  /** undefined when the kernel lost the key's bytes. */
  name(hex: string): KeyName | undefined;
  /** An entry of an exited process, read a last time: delete it. */
  forget(key: Buffer, overflow: boolean): void;
}

export interface FoldOptions {
  namer: { names(tgid: number, comm: string, port?: number, argv?: readonly string[]): ProcessNames };
  /** Whether a process (and a server's port) is watched. */
  accepts?: (tgid: number, comm: string, port: number | undefined) => boolean;
  /** Route patterns per service (collectors.http.routes). */
  routes: Record<string, string[]>;
  maxRoutesPerService: number;
  /** kernscope_events_dropped_total{source="http"} by reason. */
  drop: (reason: 'route_overflow' | 'name_lost', n: number) => void;
}

/** A service's routes: configured patterns first, else templated paths, bounded. */
export class Routes {
  private readonly cache = new Map<string, string>();
  private readonly seen = new Map<string, Set<string>>();
  private readonly matchers = new Map<string, RouteMatcher>();

  constructor(
    routes: Record<string, string[]>,
    private readonly max: number,
    private readonly onOverflow: () => void,
  ) {
    for (const [service, patterns] of Object.entries(routes)) this.matchers.set(service, new RouteMatcher(patterns));
  }

  of(service: string, path: string, complete: boolean): string {
    const ck = `${service}\0${complete ? path : `${path}\0`}`;
    const cached = this.cache.get(ck);
    if (cached !== undefined) return cached;
    let route = this.matchers.get(service)?.match(path) ?? templatePath(path, complete);
    let seen = this.seen.get(service);
    if (!seen) this.seen.set(service, (seen = new Set()));
    if (!seen.has(route)) {
      if (seen.size >= this.max) {
        this.onOverflow();
        route = '_other';
      } else {
        seen.add(route);
      }
    }
    if (this.cache.size >= 20_000) this.cache.clear();
    this.cache.set(ck, route);
    return route;
  }
}

export class HttpFold {
  /** Last cumulative values of each kernel entry, by its key's bytes. */
  private readonly last = new Map<string, Float64Array>();
  /** Growth of the entry being folded, one u64 slot each: reused. */
  private delta = new Float64Array(0);
  readonly routes: Routes;

  constructor(
    private readonly layout: HttpLayout,
    private readonly src: FoldSources,
    private readonly out: HttpExport,
    private readonly opts: FoldOptions,
  ) {
    this.routes = new Routes(opts.routes, opts.maxRoutesPerService, () => opts.drop('route_overflow', 1));
  }

  /** Entries of one table: `overflow` for http_agg_overflow (no method, no route). */
  fold(entries: Iterable<MapEntry>, overflow: boolean): void {
    const L = this.layout;
    const H = L.hist;
    for (const { key, value } of entries) {
      const fields = value.length >> 3;
      if (this.delta.length !== fields) this.delta = new Float64Array(fields);
      const d = this.delta;
      // Most entries have not moved since the last fold: one field tells,
      // before anything is decoded or allocated.
      const hex = key.toString('hex');
      const prev = this.last.get(hex);
      const proc = this.src.proc(key.readUInt32LE(L.key.tgid));
      const total = u64(value, (H.duration + H.count) * 8);
      if (!proc.live) {
        this.src.forget(key, overflow); // read a last time below, then forgotten
        this.last.delete(hex);
      }
      if (prev && total === prev[H.duration + H.count]) continue;
      const cur = new Float64Array(fields);
      for (let f = 0; f < fields; f++) {
        cur[f] = u64(value, f * 8);
        d[f] = cur[f]! - (prev?.[f] ?? 0);
      }
      if (proc.live) this.last.set(hex, cur);
      const count = d[H.duration + H.count]!;
      if (count <= 0) continue;
      this.entry(key, proc, overflow, count, d);
    }
  }

  private entry(key: Buffer, proc: KernelProc, overflow: boolean, count: number, d: Float64Array): void {
    const L = this.layout;
    const k = L.decodeKey(key);
    const server = k.role === L.roles.server;
    if (this.opts.accepts && !this.opts.accepts(k.tgid, proc.comm, server ? k.port : undefined)) return;
    const n = this.opts.namer.names(k.tgid, proc.comm, server ? k.port || undefined : undefined, proc.argv);
    if (!n.inScope) return;
    this.out.countTotal(n.service, server, k.status, count, n.meta);
    const status = k.status ? String(k.status) : '';
    let b;
    if (server) {
      if (!k.status) {
        this.out.aborted(n.service, count);
        return;
      }
      let route = '_overflow';
      if (!overflow) {
        const name = k.name ? this.src.name(k.name) : undefined;
        if (!name) {
          this.opts.drop('name_lost', count);
          route = '_unknown';
        } else route = this.routes.of(n.service, name.text, name.complete);
      }
      b = this.out.serverBundle(n.service, overflow ? '_OTHER' : k.method, status, route, n.meta);
    } else {
      let address = overflow ? '_overflow' : k.addr;
      const host = k.name ? this.src.name(k.name) : undefined;
      if (host) address = host.text.replace(/^\[(.*)\]$/, '$1');
      const error = k.status ? (k.status >= 400 ? status : '') : 'connection_closed';
      b = this.out.clientBundle(n.service, overflow ? '_OTHER' : k.method, status, address, k.port, error, n.meta);
    }
    this.out.addDeltas(server, b, d, L.hist);
  }
}
