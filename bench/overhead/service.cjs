// The service every configuration serves: JSON responses, a route with an
// id, one request in 20 a 500. CommonJS, so every APM agent's require hooks
// see `http` as they would in most production services.
'use strict';
const http = require('http');

const users = [];
for (let i = 0; i < 1000; i++) {
  users.push({ id: i, name: `user-${i}`, email: `user-${i}@example.com`, plan: i % 3 ? 'free' : 'pro', tags: ['a', 'b', String(i % 7)] });
}

const server = http.createServer((req, res) => {
  const m = /^\/users\/(\d+)$/.exec(req.url);
  if (m) {
    const id = Number(m[1]);
    if (id % 20 === 0) {
      res.writeHead(500, { 'content-type': 'application/json' });
      res.end('{"error":"backend unavailable"}');
      return;
    }
    const body = JSON.stringify(users[id % users.length]);
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
    return;
  }
  if (req.url === '/health') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"ok":true}');
    return;
  }
  res.writeHead(404);
  res.end();
});

server.keepAliveTimeout = 60_000;
server.listen(Number(process.argv[2]), '127.0.0.1', () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => process.exit(0));
