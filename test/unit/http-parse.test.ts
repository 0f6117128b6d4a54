import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { parseRequestHead, parseResponseHead } from '../../src/collectors/http/parse.js';
import { RouteMatcher, templatePath } from '../../src/collectors/http/route.js';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');

test('request heads', () => {
  assert.deepEqual(parseRequestHead(b('GET /users/42?x=1 HTTP/1.1\r\nHost: a.b:80\r\nContent-Length: 12\r\n\r\n')), {
    method: 'GET', path: '/users/42', pathComplete: true, chunked: false, contentLength: 12, host: 'a.b:80',
  });
  assert.deepEqual(parseRequestHead(b('POST /x HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n')), {
    method: 'POST', path: '/x', pathComplete: true, chunked: true,
  });
  // Cut inside the target: the path is partial.
  assert.deepEqual(parseRequestHead(b('GET /very/long/pa')), { method: 'GET', path: '/very/long/pa', pathComplete: false, chunked: false });
  assert.equal(parseRequestHead(b('GET http://h.example/a/b HTTP/1.1\r\n'))!.path, '/a/b');
  assert.equal(parseRequestHead(b('OPTIONS * HTTP/1.1\r\n'))!.path, '');
  for (const bad of ['GET  / HTTP/1.1', 'get / HTTP/1.1', 'FETCH / HTTP/1.1', 'GET /a\x01b HTTP/1.1', 'GET / HTTP/2.0\r\n', 'GET x HTTP/1.1', '', 'GET', 'SSH-2.0-OpenSSH', '\x16\x03\x01\x02\x00']) {
    assert.equal(parseRequestHead(b(bad)), undefined, JSON.stringify(bad));
  }
});

test('response heads', () => {
  assert.deepEqual(parseResponseHead(b('HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\n')), { status: 404, chunked: false, contentLength: 9 });
  assert.deepEqual(parseResponseHead(b('HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n')), { status: 200, chunked: true });
  assert.deepEqual(parseResponseHead(b('HTTP/1.1 204\r\n')), { status: 204, chunked: false });
  assert.deepEqual(parseResponseHead(b('HTTP/1.1 200')), { status: 200, chunked: false }, 'cut after the code');
  for (const bad of ['HTTP/1.1 600 X\r\n', 'HTTP/1.1 20 OK', 'HTTP/2 200 OK\r\n', 'http/1.1 200 OK\r\n', 'HTTP/1.1 2000 OK', 'HTTP/1.1 20']) {
    assert.equal(parseResponseHead(b(bad)), undefined, JSON.stringify(bad));
  }
  assert.equal(parseResponseHead(b('HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n'))!.contentLength, undefined);
});

test('route templating', () => {
  const cases: Array<[string, string]> = [
    ['/users/42/orders/7', '/users/*/orders/*'],
    ['/', '/'],
    ['', '/'],
    ['/health', '/health'],
    ['/items/3f2504e0-4f89-11d3-9a0c-0305e82c3301', '/items/*'],
    ['/blobs/deadbeef01', '/blobs/*'],
    ['/t/eyJhbGciOiJIUzI1NiJ9abc123', '/t/*'],
    ['/api/v1/users', '/api/v1/users'],
    ['/a%20b/1', '/a_20b/*'],
    ['/static/app.js', '/static/app.js'],
    ['/p/-1.5', '/p/*'],
  ];
  for (const [p, want] of cases) assert.equal(templatePath(p), want, p);
  assert.equal(templatePath('/users/42/ord', false), '/users/*/*');
  assert.equal(templatePath('/a/b/c/d/e/f/g/h/i/j/k/l/m/n'), '/a/b/c/d/e/f/g/h/i/j/k/l/**');
});

test('configured routes', () => {
  const m = new RouteMatcher(['/users/{id}', '/users/{id}/orders/*', '/static/**', '/']);
  assert.equal(m.match('/users/42'), '/users/{id}');
  assert.equal(m.match('/users/42/orders/9'), '/users/{id}/orders/*');
  assert.equal(m.match('/users/42/orders'), undefined);
  assert.equal(m.match('/static/js/app.js'), '/static/**');
  assert.equal(m.match('/'), '/');
  assert.equal(m.match('/other'), undefined);
});

test('fuzz: random and hostile bytes never throw and never invent a request', () => {
  let accepted = 0;
  for (let i = 0; i < 20_000; i++) {
    const len = i % 300;
    const buf = randomBytes(len);
    // Half the inputs start like HTTP, to reach deep into the parser.
    if (i % 2) buf.write(['GET /', 'POST ', 'HTTP/1.1 2', 'PUT /a?', 'HEAD /%'][i % 5]!, 0, 'latin1');
    const r = parseRequestHead(buf);
    const s = parseResponseHead(buf);
    if (r) {
      accepted++;
      assert.ok(r.path === '' || r.path.startsWith('/'));
      assert.ok(/^[\x21-\x7e]*$/.test(r.path), 'only visible ASCII in a path');
      assert.ok(!templatePath(r.path, r.pathComplete).includes(' '));
    }
    if (s) assert.ok(s.status >= 100 && s.status <= 599);
    templatePath(buf.toString('latin1'));
  }
  assert.ok(accepted > 0, 'the fuzzer reached accepted inputs');
  // A 64 KiB header line and a slowloris-style trickle are just bytes.
  assert.equal(parseRequestHead(Buffer.alloc(65536, 'A')), undefined);
  assert.deepEqual(parseRequestHead(b('GET /' + 'a'.repeat(70000))), { method: 'GET', path: '/' + 'a'.repeat(8191), pathComplete: false, chunked: false });
});

test('pipelined requests are split in order', async () => {
  const { splitRequests } = await import('../../src/collectors/http/parse.js');
  const two = splitRequests(b('GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /c HTTP/1.1\r\n\r\nGET /d'));
  assert.deepEqual(two.map((r) => `${r.method} ${r.path} ${r.pathComplete}`), ['GET /a true', 'POST /b true', 'GET /c true', 'GET /d false']);
  assert.deepEqual(splitRequests(b('GET /a HTTP/1.1\r\n\r\n\x00\x01')).length, 1);
  assert.deepEqual(splitRequests(b('garbage')), []);
});
