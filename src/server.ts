import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type tls from 'node:tls';
import { KernscopeError } from './errors.js';
import { wantsOpenMetrics, type MetricsRegistry } from './metrics/registry.js';
import { BasicAuth, accepts, loadWebConfig, secureOptions, type WebConfig } from './web.js';

export interface ListenAddress {
  host: string;
  port: number;
}

export function parseListen(s: string): ListenAddress {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw new KernscopeError('ERR_KERNSCOPE_USAGE', `--listen: expected HOST:PORT (e.g. 127.0.0.1:9527), got "${s}"`);
  }
  return { host: m[1] ?? m[2]!, port };
}

/** Live events for any number of readers; a reader too slow to keep up loses events, counted. */
export class EventStream {
  private readonly clients = new Set<http.ServerResponse>();
  constructor(private readonly onLoss: () => void = () => {}) {}

  attach(res: http.ServerResponse): void {
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'keep-alive' });
    res.write(': kernscope events\n\n');
    this.clients.add(res);
    res.on('close', () => this.clients.delete(res));
  }

  publish(event: object): void {
    if (!this.clients.size) return;
    const line = `data: ${JSON.stringify(event)}\n\n`;
    for (const c of this.clients) {
      if (c.writableLength > 1 << 20) this.onLoss();
      else c.write(line);
    }
  }

  close(): void {
    for (const c of this.clients) c.end();
    this.clients.clear();
  }
}

/**
 * /metrics (Prometheus text or OpenMetrics, by Accept), /events (live,
 * server-sent events) and /healthz; over TLS and behind basic auth when a
 * web configuration file says so.
 */
export async function serve(metrics: MetricsRegistry, addr: ListenAddress, events?: EventStream, web?: WebConfig, log: (m: string) => void = () => {}): Promise<{ server: http.Server; reload: () => void }> {
  let auth = new BasicAuth(web?.users ?? new Map());
  let headers = web?.headers ?? {};
  const route = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const url = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD' }).end();
      return;
    }
    if (url === '/events' && events) {
      events.attach(res);
      return;
    }
    if (url === '/healthz') {
      res.writeHead(200, { 'Content-Type': 'text/plain' }).end('ok\n');
      return;
    }
    if (url === '/metrics') {
      metrics.render(wantsOpenMetrics(req.headers.accept)).then(
        ({ body, contentType }) => res.writeHead(200, { 'Content-Type': contentType }).end(body),
        (e: Error) => res.writeHead(500, { 'Content-Type': 'text/plain' }).end(`collect failed: ${e.message}\n`),
      );
      return;
    }
    if (url === '/') {
      res.writeHead(200, { 'Content-Type': 'text/html' }).end('<a href="/metrics">/metrics</a> <a href="/events">/events</a> <a href="/healthz">/healthz</a>\n');
      return;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n');
  };
  const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
    if (web?.tls && !accepts(web, req.socket as tls.TLSSocket)) {
      res.writeHead(403, { 'Content-Type': 'text/plain' }).end('client certificate refused\n');
      return;
    }
    if (!auth.enabled) return route(req, res);
    auth.check(req).then(
      (ok) => (ok ? route(req, res) : res.writeHead(401, { 'WWW-Authenticate': 'Basic', 'Content-Type': 'text/plain' }).end('unauthorized\n')),
      () => res.writeHead(500).end(),
    );
  };
  const server = web?.tls ? https.createServer(secureOptions(web), handler) : http.createServer(handler);
  let reload = (): void => {};
  if (web) {
    // The file, and the certificate and key it names, are read again when
    // they change (certificates are rotated); a bad change keeps the last.
    const files = [web.file, web.tls?.cert, web.tls?.key, web.tls?.ca].filter((f): f is string => !!f);
    reload = (): void => {
      try {
        const next = loadWebConfig(web.file);
        if (!!next.tls !== !!web.tls) throw new Error('TLS cannot be turned on or off without a restart');
        if (next.tls) (server as https.Server).setSecureContext(secureOptions(next));
        auth = new BasicAuth(next.users);
        headers = next.headers;
        log(`web config: ${web.file} reloaded`);
      } catch (e) {
        log(`web config: ${(e as Error).message}; the last one stays in force`);
      }
    };
    for (const f of files) fs.watchFile(f, { interval: 2000 }, (cur, prev) => cur.mtimeMs !== prev.mtimeMs && reload());
    server.once('close', () => files.forEach((f) => fs.unwatchFile(f)));
  }
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => {
      const where = `${addr.host.includes(':') ? `[${addr.host}]` : addr.host}:${addr.port}`;
      if (e.code === 'EADDRINUSE') reject(new KernscopeError('ERR_KERNSCOPE_LISTEN', `listen ${where}: address already in use (is another agent running?)`));
      else if (e.code === 'EADDRNOTAVAIL') reject(new KernscopeError('ERR_KERNSCOPE_LISTEN', `listen ${where}: address not available on this host`));
      else if (e.code === 'EACCES') reject(new KernscopeError('ERR_KERNSCOPE_LISTEN', `listen ${where}: permission denied`));
      else reject(new KernscopeError('ERR_KERNSCOPE_LISTEN', `listen ${where}: ${e.message}`));
    });
    server.listen(addr.port, addr.host, () => resolve());
  });
  return { server, reload: () => reload() };
}
