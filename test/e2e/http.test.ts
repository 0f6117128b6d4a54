import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { eventually, freePort, isRoot, startAgent, sum, tmpDir, type RunningAgent, type Sample } from '../helpers.js';
import { fixtureCopy, startPeer } from '../peers.js';

let agent: RunningAgent;

before(async () => {
  assert.ok(isRoot, 'the agent needs root (CI runs as root)');
  agent = await startAgent('collectIntervalSeconds: 0.5\n');
});

after(async () => {
  assert.equal(await agent.stop(), 0);
});

/** An HTTP fixture under a unique file name: its service_name is that name. */
function fixture(name: string): ReturnType<typeof fixtureCopy> {
  return fixtureCopy(`http-${name}.mjs`, name);
}

const PLAN = [
  ...[1, 2, 3, 4, 5].map((i) => ({ method: 'GET', path: `/users/${i}` })),
  ...[1, 2, 3].map((i) => ({ method: 'GET', path: `/missing/${i}` })),
  { method: 'POST', path: '/orders', body: 100 },
  { method: 'POST', path: '/orders', body: 2500 },
  { method: 'GET', path: '/fail' },
  { method: 'GET', path: '/fail' },
  { method: 'GET', path: '/chunked' },
  { method: 'GET', path: '/slow/35' },
];

for (const keepAlive of [true, false]) {
  test(`Node server and client, keep-alive ${keepAlive ? 'on' : 'off'}: exact counts per series`, async () => {
    const srv = fixture('server');
    const cli = fixture('client');
    const server = startPeer(srv.script, []);
    const port = (await server.line(/^\d+$/)).trim();
    const client = startPeer(cli.script, [port, keepAlive ? '1' : '0', JSON.stringify(PLAN)]);
    try {
      const measured = JSON.parse(await client.line(/^\[/)) as Array<{ status: number; seconds: number }>;
      assert.equal(measured.length, PLAN.length);
      let m: Sample[] = [];
      const s = { service_name: srv.service };
      await eventually(async () => sum((m = await agent.scrape()), 'http_server_request_duration_seconds_count', s) === PLAN.length, 5000);
      const series = m.filter((x) => x.name === 'http_server_request_duration_seconds_count' && x.labels.service_name === srv.service);
      const got = Object.fromEntries(series.map((x) => [`${x.labels.http_request_method} ${x.labels.http_route} ${x.labels.http_response_status_code}`, x.value]));
      assert.deepEqual(got, {
        'GET /users/* 200': 5,
        'GET /missing/* 404': 3,
        'POST /orders 201': 2,
        'GET /fail 500': 2,
        'GET /chunked 200': 1,
        'GET /slow/* 200': 1,
      });

      // The client's side of the same requests.
      const c = { service_name: cli.service, server_address: '127.0.0.1', server_port: port };
      assert.equal(sum(m, 'http_client_request_duration_seconds_count', c), PLAN.length);
      assert.equal(sum(m, 'http_client_request_duration_seconds_count', { ...c, http_response_status_code: '404', error_type: '404' }), 3);
      assert.equal(sum(m, 'http_client_request_duration_seconds_count', { ...c, http_response_status_code: '500', error_type: '500' }), 2);
      assert.equal(sum(m, 'http_client_request_duration_seconds_count', { ...c, http_request_method: 'POST', http_response_status_code: '201', error_type: '' }), 2);

      // Bodies: the POSTs sent 100 and 2500 bytes; each answer's Content-Length.
      const orders = { service_name: srv.service, http_route: '/orders' };
      assert.equal(sum(m, 'http_server_request_body_size_bytes_sum', orders), 2600);
      assert.equal(sum(m, 'http_server_request_body_size_bytes_count', orders), 2);
      assert.equal(sum(m, 'http_server_response_body_size_bytes_sum', orders), '{"received":100}'.length + '{"received":2500}'.length);
      assert.equal(sum(m, 'http_client_request_body_size_bytes_sum', { ...c, http_request_method: 'POST' }), 2600);

      // The slow request's latency lands where the client measured it: the
      // server's view (first byte in to first byte out) is within it.
      const slow = measured.at(-1)!.seconds;
      const bucket = (name: string, labels: Record<string, string>, le: string): number =>
        m.find((x) => x.name === name && x.labels.le === le && Object.entries(labels).every(([k, v]) => x.labels[k] === v))!.value;
      const slowLabels = { service_name: srv.service, http_route: '/slow/*' };
      const seen = sum(m, 'http_server_request_duration_seconds_sum', slowLabels);
      // Node's timers count from the loop's cached clock, which can be a little
      // older than the read that started the request: the 35 ms may end early.
      assert.ok(seen >= 0.03 && seen <= slow, `server saw ${seen} s, the client measured ${slow} s`);
      // The one observation is in the bucket its value belongs to, and not below.
      const bounds = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10];
      const i = bounds.findIndex((b) => seen <= b);
      assert.equal(bucket('http_server_request_duration_seconds_bucket', slowLabels, String(bounds[i])), 1);
      assert.equal(bucket('http_server_request_duration_seconds_bucket', slowLabels, String(bounds[i - 1])), 0);
      // And where the client's own measure falls, the server's count is there too.
      const j = bounds.findIndex((b) => slow <= b);
      if (j >= 0) assert.equal(bucket('http_server_request_duration_seconds_bucket', slowLabels, String(bounds[j])), 1);
      assert.equal(sum(m, 'kernscope_http_unparsed_total'), 0);
      assert.equal(sum(m, 'kernscope_events_dropped_total', { source: 'http' }), 0);
    } finally {
      await client.end();
      await server.end();
      srv.cleanup();
      cli.cleanup();
    }
  });
}

/** Runs a raw peer until it prints "done ..."; returns what it printed. */
async function rawPeer(name: string, args: string[]): Promise<{ service: string; said: string; end: () => Promise<void> }> {
  const f = fixture('raw');
  const p = startPeer(f.script, args);
  const said = await p.line(/^done |^\d+$/);
  return { service: f.service, said, end: async () => (await p.end(), f.cleanup()) };
}

async function settle(check: (m: Sample[]) => boolean): Promise<Sample[]> {
  let m: Sample[] = [];
  await eventually(async () => check((m = await agent.scrape())), 5000);
  return m;
}

function seriesOf(m: Sample[], name: string, service: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const x of m) {
    if (x.name !== name || x.labels.service_name !== service) continue;
    const k = `${x.labels.http_request_method} ${x.labels.http_route ?? x.labels.error_type} ${x.labels.http_response_status_code}`;
    out[k] = (out[k] ?? 0) + x.value;
  }
  return out;
}

test('pipelining: several requests in one write, each counted with its status', async () => {
  const srv = fixture('server');
  const server = startPeer(srv.script, []);
  const port = (await server.line(/^\d+$/)).trim();
  const N = 4;
  const client = await rawPeer('raw', ['pipeline', port, String(N)]);
  try {
    assert.equal(client.said, `done ${N}`);
    const m = await settle((x) => sum(x, 'http_server_request_duration_seconds_count', { service_name: srv.service }) === N);
    assert.deepEqual(seriesOf(m, 'http_server_request_duration_seconds_count', srv.service), { 'GET /users/* 200': 3, 'GET /missing/* 404': 1 });
  } finally {
    await client.end();
    await server.end();
    srv.cleanup();
  }
});

test('a request and a response written one byte at a time', async () => {
  const srv = fixture('server');
  const server = startPeer(srv.script, []);
  const port = (await server.line(/^\d+$/)).trim();
  const client = await rawPeer('raw', ['trickle', port]);
  const tsrv = fixture('raw');
  const tserver = startPeer(tsrv.script, ['server-trickle']);
  const tport = (await tserver.line(/^\d+$/)).trim();
  const tclient = await rawPeer('raw', ['get', tport, '/slowly/7']);
  try {
    assert.equal(client.said, 'done 201');
    assert.equal(tclient.said, 'done 200');
    const m = await settle(
      (x) =>
        sum(x, 'http_server_request_duration_seconds_count', { service_name: srv.service }) === 1 &&
        sum(x, 'http_server_request_duration_seconds_count', { service_name: tsrv.service }) === 1,
    );
    // Split reads: the server saw a 5-byte body after the head.
    assert.deepEqual(seriesOf(m, 'http_server_request_duration_seconds_count', srv.service), { 'POST /orders 201': 1 });
    assert.equal(sum(m, 'http_server_request_body_size_bytes_sum', { service_name: srv.service }), 5);
    // Split writes: a status line in 1-byte writes, on both ends.
    assert.deepEqual(seriesOf(m, 'http_server_request_duration_seconds_count', tsrv.service), { 'GET /slowly/* 200': 1 });
    assert.equal(sum(m, 'http_client_request_duration_seconds_count', { service_name: tclient.service, http_response_status_code: '200' }), 1);
  } finally {
    await Promise.all([client.end(), tclient.end(), server.end(), tserver.end()]);
    srv.cleanup();
    tsrv.cleanup();
  }
});

test('100-continue is one request, answered by its final status', async () => {
  const srv = fixture('server');
  const server = startPeer(srv.script, []);
  const port = (await server.line(/^\d+$/)).trim();
  const client = await rawPeer('raw', ['continue', port]);
  try {
    assert.equal(client.said, 'done 201');
    const m = await settle((x) => sum(x, 'http_server_request_duration_seconds_count', { service_name: srv.service }) === 1);
    assert.deepEqual(seriesOf(m, 'http_server_request_duration_seconds_count', srv.service), { 'POST /orders 201': 1 });
    assert.deepEqual(seriesOf(m, 'http_client_request_duration_seconds_count', client.service), { 'POST  201': 1 });
  } finally {
    await client.end();
    await server.end();
    srv.cleanup();
  }
});

test('hostile bytes on a socket never make a bogus series', async () => {
  const srv = fixture('server');
  const server = startPeer(srv.script, []);
  const port = (await server.line(/^\d+$/)).trim();
  const client = await rawPeer('raw', ['hostile', port]);
  try {
    assert.equal(client.said, 'done hostile');
    const m = await settle((x) => sum(x, 'http_server_request_duration_seconds_count', { service_name: srv.service }) === 3);
    // Node answers what it could parse: 431 to the huge header, 400 to the
    // head cut short; the random bytes never started a request.
    assert.deepEqual(seriesOf(m, 'http_server_request_duration_seconds_count', srv.service), { 'GET /big 431': 1, 'GET /slow 400': 1, 'GET /users/* 200': 1 });
    assert.equal(sum(m, 'kernscope_http_server_requests_aborted_total', { service_name: srv.service }), 0);
    assert.equal(sum(m, 'kernscope_http_unparsed_total'), 0);
  } finally {
    await client.end();
    await server.end();
    srv.cleanup();
  }
});

test('a server that is down: each attempt is a client error', async () => {
  const port = String(await freePort()); // nobody listens there
  const a = await rawPeer('raw', ['get', port, '/x']);
  try {
    assert.equal(a.said, 'done ECONNREFUSED');
    // curl too: its own non-blocking connect, with another error path.
    try {
      execFileSync('curl', ['-s', '-o', '/dev/null', `http://127.0.0.1:${port}/y`]);
    } catch {
      // curl exits 7: could not connect
    }
    const refused = { server_port: port, error_type: 'connection_refused', http_response_status_code: '', http_request_method: '_OTHER' };
    const m = await settle((x) => sum(x, 'http_client_request_duration_seconds_count', refused) === 2);
    assert.equal(sum(m, 'http_client_request_duration_seconds_count', { ...refused, service_name: a.service }), 1);
    assert.equal(sum(m, 'http_client_request_duration_seconds_count', { ...refused, service_name: 'curl' }), 1);
  } finally {
    await a.end();
  }
});

test('a server that resets: a client error, and an aborted request on the server', async () => {
  const rsrv = fixture('raw');
  const server = startPeer(rsrv.script, ['server-reset']);
  const port = (await server.line(/^\d+$/)).trim();
  const client = await rawPeer('raw', ['get', port, '/x']);
  try {
    assert.equal(client.said, 'done ECONNRESET');
    const m = await settle((x) => sum(x, 'http_client_request_duration_seconds_count', { service_name: client.service }) === 1);
    assert.equal(sum(m, 'http_client_request_duration_seconds_count', { service_name: client.service, error_type: 'connection_closed', http_response_status_code: '' }), 1);
    assert.equal(sum(m, 'kernscope_http_server_requests_aborted_total', { service_name: rsrv.service }), 1);
    assert.equal(sum(m, 'http_server_request_duration_seconds_count', { service_name: rsrv.service }), 0);
  } finally {
    await client.end();
    await server.end();
    rsrv.cleanup();
  }
});

test('a client that half-closes after its request still has its response counted', async () => {
  const srv = fixture('server');
  const server = startPeer(srv.script, []);
  const port = (await server.line(/^\d+$/)).trim();
  const client = await rawPeer('raw', ['halfclose', port, '/users/5']);
  try {
    assert.equal(client.said, 'done 200');
    const m = await settle((x) => sum(x, 'http_client_request_duration_seconds_count', { service_name: client.service }) === 1);
    assert.deepEqual(seriesOf(m, 'http_client_request_duration_seconds_count', client.service), { 'GET  200': 1 });
    assert.deepEqual(seriesOf(m, 'http_server_request_duration_seconds_count', srv.service), { 'GET /users/* 200': 1 });
  } finally {
    await client.end();
    await server.end();
    srv.cleanup();
  }
});

test('a client that exits mid-request, closing nothing itself: a client error', async (t) => {
  // Its sockets are closed by the kernel as it exits, without close(2):
  // seen by the socket's state change, which the syscall hooks lack.
  if (process.env.KS_TEST_HTTP_HOOKS === 'syscalls') {
    t.skip('the syscall hooks see only close(2), not a socket closed as its process exits');
    return;
  }
  const srv = fixture('server');
  const server = startPeer(srv.script, []);
  const port = (await server.line(/^\d+$/)).trim();
  const client = await rawPeer('raw', ['vanish', port, '/slow/300']);
  try {
    assert.equal(client.said, 'done sent');
    const m = await settle(
      (x) =>
        sum(x, 'http_client_request_duration_seconds_count', { service_name: client.service }) === 1 &&
        sum(x, 'kernscope_http_server_requests_aborted_total', { service_name: srv.service }) === 1,
    );
    assert.equal(sum(m, 'http_client_request_duration_seconds_count', { service_name: client.service, error_type: 'connection_closed', http_response_status_code: '' }), 1);
    // Node's server shuts its socket at the end of input, before answering.
    assert.deepEqual(seriesOf(m, 'http_server_request_duration_seconds_count', srv.service), {});
  } finally {
    await client.end();
    await server.end();
    srv.cleanup();
  }
});

// With the socket tracepoints a server's connection is tracked at its
// first read, by the task that reads it; the syscall hooks would give it to
// the process whose accept() returned it.
test('a connection accepted by one process and served by another (handed over, as Node\'s cluster does): counted under the one that serves it', async (t) => {
  if (process.env.KS_TEST_HTTP_HOOKS === 'syscalls') {
    t.skip('the syscall hooks give a connection to the process whose accept() returned it');
    return;
  }
  const acceptor = fixtureCopy('http-handoff.py', 'acceptor');
  const worker = fixtureCopy('http-handoff-worker.py', 'worker');
  const p = startPeer('/usr/bin/python3', [acceptor.script, worker.script], undefined, true);
  try {
    const port = (await p.line(/^\d+$/)).trim();
    for (let i = 0; i < 4; i++) assert.equal(execFileSync('curl', ['-sf', `http://127.0.0.1:${port}/orders/${i}`], { encoding: 'utf8' }), 'ok');
    const m = await settle((m) => sum(m, 'http_server_request_duration_seconds_count', { service_name: worker.service }) === 4);
    assert.deepEqual(seriesOf(m, 'http_server_request_duration_seconds_count', worker.service), { 'GET /orders/* 200': 4 });
    assert.equal(sum(m, 'http_server_request_duration_seconds_count', { service_name: acceptor.service }), 0);
  } finally {
    await p.end();
    acceptor.cleanup();
    worker.cleanup();
  }
});

test('connections opened before the agent started are watched too', async () => {
  const srv = fixture('server');
  const server = startPeer(srv.script, []);
  const port = (await server.line(/^\d+$/)).trim();
  const cli = fixture('raw');
  const client = startPeer(cli.script, ['keepalive', port, '3']);
  await client.line(/^connected$/);
  const late = await startAgent('collectIntervalSeconds: 0.5\n');
  try {
    client.send('go\n');
    assert.equal(await client.line(/^done /), 'done 3');
    let m: Sample[] = [];
    await eventually(async () => sum((m = await late.scrape()), 'http_server_request_duration_seconds_count', { service_name: srv.service }) === 3, 5000);
    assert.deepEqual(seriesOf(m, 'http_server_request_duration_seconds_count', srv.service), { 'GET /users/* 200': 3 });
    assert.equal(sum(m, 'http_client_request_duration_seconds_count', { service_name: cli.service, server_port: port, http_response_status_code: '200' }), 3);
  } finally {
    assert.equal(await late.stop(), 0);
    await client.end();
    await server.end();
    srv.cleanup();
    cli.cleanup();
  }
});

test('HTTPS: Node server, Node client and curl, counted once with route and status', async () => {
  const dir = tmpDir('ks-tls');
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-subj', '/CN=localhost', '-days', '1'], { stdio: 'ignore' });
  const srv = fixture('server');
  const server = startPeer(srv.script, [key, cert]);
  const port = (await server.line(/^\d+$/)).trim();
  const cli = fixture('client');
  const plan = [...[1, 2, 3].map((i) => ({ method: 'GET', path: `/users/${i}` })), { method: 'POST', path: '/orders', body: 300 }, { method: 'GET', path: '/fail' }];
  const client = startPeer(cli.script, [port, '1', JSON.stringify(plan), 'https']);
  try {
    assert.equal(JSON.parse(await client.line(/^\[/)).length, plan.length);
    for (const p of ['/users/9', '/missing/1']) {
      execFileSync('curl', ['-sk', '-o', '/dev/null', `https://127.0.0.1:${port}${p}`]);
    }
    const m = await settle((x) => sum(x, 'http_server_request_duration_seconds_count', { service_name: srv.service }) >= plan.length + 2);
    assert.deepEqual(seriesOf(m, 'http_server_request_duration_seconds_count', srv.service), {
      'GET /users/* 200': 4,
      'POST /orders 201': 1,
      'GET /fail 500': 1,
      'GET /missing/* 404': 1,
    });
    assert.equal(sum(m, 'http_server_request_body_size_bytes_sum', { service_name: srv.service, http_route: '/orders' }), 300);
    const c = { service_name: cli.service, server_port: port };
    assert.equal(sum(m, 'http_client_request_duration_seconds_count', c), plan.length);
    assert.equal(sum(m, 'http_client_request_duration_seconds_count', { ...c, http_response_status_code: '500' }), 1);
    // curl links Debian's libssl: probed there.
    const curl = { service_name: 'curl', server_port: port };
    assert.equal(sum(m, 'http_client_request_duration_seconds_count', { ...curl, http_response_status_code: '200' }), 1);
    assert.equal(sum(m, 'http_client_request_duration_seconds_count', { ...curl, http_response_status_code: '404' }), 1);
    assert.equal(sum(m, 'kernscope_http_unparsed_total'), 0);
  } finally {
    await client.end();
    await server.end();
    srv.cleanup();
    cli.cleanup();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
