import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { eventually, isRoot, startAgent, sum, type RunningAgent, type Sample } from '../helpers.js';
import { fixtureCopy, startPeer } from '../peers.js';
import { templatePath } from '../../src/collectors/http/route.js';

// The kernel computes each request's route key (bpf/http.bpf.c); user space
// templates the path it stands for (src/collectors/http/route.ts). If the
// kernel collapsed a segment that TypeScript keeps, two templates would
// share a key and one path would be counted under the other's route. Each
// path of the corpus is sent a distinct number of times, so a wrong label
// shows as a wrong count.

let agent: RunningAgent;
before(async () => {
  assert.ok(isRoot, 'the agent needs root (CI runs as root)');
  agent = await startAgent('collectIntervalSeconds: 0.5\ncollectors:\n  http:\n    maxRoutesPerService: 1000\n');
});
after(async () => {
  assert.equal(await agent.stop(), 0);
});

const long = (n: number, c = 'a'): string => c.repeat(n);

export const CORPUS = [
  '/', '/users', '/users/', '//x', '/a//b', '/users/42', '/users/-42', '/users/+7', '/users/4.2', '/users/4,2',
  '/users/4.', '/users/.4', '/users/1.2.3', '/users/+', '/users/-', '/users/+-1', '/v1/2024/report',
  '/items/550e8400-e29b-41d4-a716-446655440000', '/items/550e8400-e29b-41d4-a716-44665544000',
  '/items/550E8400-E29B-41D4-A716-446655440000', '/items/550e8400xe29b-41d4-a716-446655440000',
  '/h/deadbeef', '/h/deadbee', '/h/abcdefab', '/h/abcdef12', '/h/0xdeadbeef', '/h/0Xdeadbeef', '/h/0x1234567',
  '/h/0xg1234567', '/h/DEADBEEF99', '/t/abcdefghijklmno1', '/t/abcdefghijklmn1', '/t/aaaaaaaaaaaaaaaa',
  '/t/1111111111111111a', '/t/a1-b2_c3.d4~e5f6', `/l/${long(64)}`, `/l/${long(65)}`, `/l/${long(70, 'b')}/tail`,
  '/p/caf%C3%A9', '/p/%31%32%33', '/p/a%20b', '/p/%zz', '/s/*', '/s/*/x', '/s/a*', '/q/7?x=1', '/q/abc?id=9#f',
  '/q/abc#frag', '/m/Users/ID', '/m/users/ID-2', '/u/a!b', '/u/a@b', '/u/a:b', '/u/~x.y-z_',
  '/1/2/3/4/5/6/7/8/9/10/11/12', '/a/b/c/d/e/f/g/h/i/j/k/l/m', '/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o',
  `/deep/${'seg/'.repeat(30)}end`, `/cut/${long(150, 'c')}`, `/cut/x/${long(140, 'd')}`, `/cut/${'9'.repeat(150)}`,
];

/** Sends `paths` as GET requests on one keep-alive connection, each answered before the next. */
async function send(port: number, paths: string[]): Promise<void> {
  const sock = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject));
  let buf = '';
  for (const p of paths) {
    const answered = new Promise<void>((resolve) => {
      const onData = (d: Buffer): void => {
        buf += d.toString('latin1');
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const len = Number(/content-length: *(\d+)/i.exec(buf.slice(0, end))?.[1] ?? 0);
        if (buf.length < end + 4 + len) return;
        buf = buf.slice(end + 4 + len);
        sock.off('data', onData);
        resolve();
      };
      sock.on('data', onData);
    });
    sock.write(`GET ${p} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
    await answered;
  }
  sock.end();
}

test('route keys: the kernel and TypeScript agree on every path of the corpus', async () => {
  const srv = fixtureCopy('http-server.mjs', 'routes');
  const server = startPeer(srv.script, []);
  const port = Number((await server.line(/^\d+$/)).trim());
  try {
    // Path i is sent i + 1 times: every template's count is known exactly.
    const plan: string[] = [];
    const want: Record<string, number> = {};
    CORPUS.forEach((p, i) => {
      for (let n = 0; n <= i; n++) plan.push(p);
      const path = p.replace(/[?#].*$/, '');
      // The kernel keeps a path's first 128 bytes: past them, like the
      // agent's copy of a head before, its last segment is cut to "*".
      const complete = path.length < 128;
      const t = templatePath(complete ? path : path.slice(0, 128), complete);
      want[t] = (want[t] ?? 0) + i + 1;
    });
    await send(port, plan);
    let m: Sample[] = [];
    const s = { service_name: srv.service };
    await eventually(async () => sum((m = await agent.scrape()), 'http_server_request_duration_seconds_count', s) >= plan.length, 10_000);
    const got: Record<string, number> = {};
    for (const x of m) {
      if (x.name !== 'http_server_request_duration_seconds_count' || x.labels.service_name !== srv.service) continue;
      got[x.labels.http_route!] = (got[x.labels.http_route!] ?? 0) + x.value;
    }
    assert.deepEqual(got, want);
    assert.equal(sum(m, 'kernscope_http_unparsed_total'), 0);
  } finally {
    await server.end();
    srv.cleanup();
  }
});

test('a full aggregation table: requests go to the overflow entry, counts stay exact and the overflow is counted', async () => {
  const small = await startAgent('collectIntervalSeconds: 0.5\ncollectors:\n  http:\n    maps: { aggregation: 4 }\n');
  const srv = fixtureCopy('http-server.mjs', 'full');
  const server = startPeer(srv.script, []);
  const port = Number((await server.line(/^\d+$/)).trim());
  try {
    // 12 routes, 5 requests each: 4 series fit in the kernel's table.
    const plan: string[] = [];
    for (let r = 0; r < 12; r++) for (let n = 0; n < 5; n++) plan.push(`/route${String.fromCharCode(97 + r)}/x`);
    await send(port, plan);
    let m: Sample[] = [];
    const s = { service_name: srv.service };
    await eventually(async () => sum((m = await small.scrape()), 'http_server_request_duration_seconds_count', s) >= plan.length, 10_000);
    assert.equal(sum(m, 'http_server_request_duration_seconds_count', s), plan.length);
    assert.equal(sum(m, 'kernscope_http_requests_total', { ...s, direction: 'server' }), plan.length);
    const overflowed = sum(m, 'http_server_request_duration_seconds_count', { ...s, http_route: '_overflow', http_request_method: '_OTHER' });
    assert.ok(overflowed >= 5 * 8, `${overflowed} requests in the overflow entry`);
    // Clients on the node (this test's own) share the table: at least these.
    assert.ok(sum(m, 'kernscope_events_dropped_total', { source: 'http', reason: 'aggregation_table_full' }) >= overflowed);
    assert.equal(sum(m, 'kernscope_events_dropped_total', { source: 'http', reason: 'overflow_table_full' }), 0);
  } finally {
    await server.end();
    srv.cleanup();
    await small.stop();
  }
});
