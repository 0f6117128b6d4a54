// Accepts whatever the APM agents send and discards it, counting what shows
// they instrumented each request: Datadog traces, OTLP server spans, Elastic
// transactions. GET /__counts returns the counts.
import http from 'node:http';
import zlib from 'node:zlib';

const counts = { datadog: 0, otlp: 0, elastic: 0, bytes: 0 };

function body(req) {
  return new Promise((resolve) => {
    const parts = [];
    req.on('data', (d) => parts.push(d));
    req.on('end', () => {
      let b = Buffer.concat(parts);
      counts.bytes += b.length;
      const enc = req.headers['content-encoding'];
      try {
        if (enc === 'gzip') b = zlib.gunzipSync(b);
        else if (enc === 'deflate') b = zlib.inflateSync(b);
      } catch {}
      resolve(b);
    });
  });
}

const server = http.createServer(async (req, res) => {
  const b = await body(req);
  const url = req.url ?? '';
  if (url === '/__counts') {
    res.end(JSON.stringify(counts));
    return;
  }
  if (/^\/v0\.[45]\/traces/.test(url)) {
    counts.datadog += Number(req.headers['x-datadog-trace-count'] ?? 0);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"rate_by_service":{}}');
    return;
  }
  if (url.startsWith('/v1/traces')) {
    try {
      const doc = JSON.parse(b.toString('utf8'));
      for (const rs of doc.resourceSpans ?? []) for (const ss of rs.scopeSpans ?? []) for (const s of ss.spans ?? []) if (s.kind === 2) counts.otlp++;
    } catch {}
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{}');
    return;
  }
  if (url.startsWith('/intake/v2/events')) {
    for (const line of b.toString('utf8').split('\n')) if (line.startsWith('{"transaction"')) counts.elastic++;
    res.writeHead(202);
    res.end();
    return;
  }
  if (url === '/' && req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"build_date":"2024-01-01T00:00:00Z","build_sha":"bench","publish_ready":true,"version":"8.15.0"}');
    return;
  }
  // Anything else (agent info, remote config, telemetry): accepted and dropped.
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end('{}');
});
server.keepAliveTimeout = 60_000;
server.listen(Number(process.argv[2]), '127.0.0.1', () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => process.exit(0));
