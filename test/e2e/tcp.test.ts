import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { eventually, isRoot, startAgent, sum, type RunningAgent, type Sample } from '../helpers.js';
import { peerScript, startPeer } from '../peers.js';

let agent: RunningAgent;

before(async () => {
  assert.ok(isRoot, 'the agent needs root (CI runs as root)');
  agent = await startAgent('collectIntervalSeconds: 0.5\n');
});

after(async () => {
  assert.equal(await agent.stop(), 0);
});

test('N connections with known bytes: exact counts for client and server', async () => {
  const N = 7;
  const REQ = 1234;
  const RESP = 56789;
  const srv = peerScript('srv');
  const cli = peerScript('cli');
  const server = startPeer(srv.script, ['server', '127.0.0.1', String(RESP)]);
  const port = (await server.line(/^\d+$/)).trim();
  const client = startPeer(cli.script, ['client', '127.0.0.1', port, String(N), String(REQ)]);
  try {
    await client.line(/^done$/);
    const c = { service: cli.service, direction: 'outbound', port };
    const s = { service: srv.service, direction: 'inbound', port };
    let m: Sample[] = [];
    const settled = await eventually(async () => {
      m = await agent.scrape();
      return sum(m, 'kernscope_tcp_connections_closed_total', c) === N && sum(m, 'kernscope_tcp_connections_closed_total', s) === N;
    });
    assert.ok(settled, `closed: client ${sum(m, 'kernscope_tcp_connections_closed_total', c)}, server ${sum(m, 'kernscope_tcp_connections_closed_total', s)}`);

    assert.equal(sum(m, 'kernscope_tcp_connections_opened_total', c), N);
    assert.equal(sum(m, 'kernscope_tcp_sent_bytes_total', c), N * REQ);
    assert.equal(sum(m, 'kernscope_tcp_received_bytes_total', c), N * RESP);
    assert.equal(sum(m, 'kernscope_tcp_connect_failures_total', c), 0);
    assert.equal(sum(m, 'kernscope_tcp_connect_duration_seconds_count', c), N);
    assert.equal(sum(m, 'kernscope_tcp_connection_duration_seconds_count', c), N);
    assert.ok(sum(m, 'kernscope_tcp_connect_duration_seconds_sum', c) > 0);

    assert.equal(sum(m, 'kernscope_tcp_connections_opened_total', s), N);
    assert.equal(sum(m, 'kernscope_tcp_sent_bytes_total', s), N * RESP);
    assert.equal(sum(m, 'kernscope_tcp_received_bytes_total', s), N * REQ);
    assert.equal(sum(m, 'kernscope_tcp_connection_duration_seconds_count', s), N);
    // By default one smoothed-RTT sample per connection, taken at close.
    assert.equal(sum(m, 'kernscope_tcp_rtt_seconds_count', s), N);
    assert.equal(sum(m, 'kernscope_tcp_rtt_seconds_count', c), N);

    // Labels are the process's executable and its script, never a pid.
    const series = m.filter((x) => x.name === 'kernscope_tcp_connections_opened_total' && x.labels.service === cli.service);
    assert.deepEqual(series.map((x) => x.labels), [{ service: cli.service, process: 'node', direction: 'outbound', port }]);
    assert.equal(sum(m, 'kernscope_events_dropped_total'), 0);
  } finally {
    await client.end();
    await server.end();
    srv.cleanup();
    cli.cleanup();
  }
});

test('a listener that existed before the agent is attributed from /proc', async () => {
  // This test's own process listens; the agent was started before, so use a new
  // agent to see a pre-existing listener.
  const srv = peerScript('old');
  const cli = peerScript('cli');
  const server = startPeer(srv.script, ['server', '127.0.0.1', '10']);
  const port = (await server.line(/^\d+$/)).trim();
  const late = await startAgent('collectIntervalSeconds: 0.5\n');
  const client = startPeer(cli.script, ['client', '127.0.0.1', port, '3', '5']);
  try {
    await client.line(/^done$/);
    const s = { service: srv.service, direction: 'inbound', port };
    assert.ok(await eventually(async () => sum(await late.scrape(), 'kernscope_tcp_connections_closed_total', s) === 3));
    assert.equal(sum(await late.scrape(), 'kernscope_tcp_connections_opened_total', s), 3);
  } finally {
    await client.end();
    await server.end();
    assert.equal(await late.stop(), 0);
    srv.cleanup();
    cli.cleanup();
  }
});

test('histogram buckets are cumulative and end in +Inf = _count', async () => {
  const m = await agent.scrape();
  const buckets = m.filter((x) => x.name === 'kernscope_tcp_connect_duration_seconds_bucket');
  assert.ok(buckets.length > 0);
  const bySeries = new Map<string, Sample[]>();
  for (const b of buckets) {
    const k = JSON.stringify({ ...b.labels, le: undefined });
    bySeries.set(k, [...(bySeries.get(k) ?? []), b]);
  }
  for (const [k, bs] of bySeries) {
    const values = bs.map((b) => b.value);
    assert.deepEqual(values, [...values].sort((a, b) => a - b), `cumulative: ${k}`);
    assert.equal(bs.at(-1)!.labels.le, '+Inf');
    const labels = JSON.parse(k) as Record<string, string>;
    assert.equal(bs.at(-1)!.value, sum(m, 'kernscope_tcp_connect_duration_seconds_count', labels));
  }
});

test('OpenMetrics on request, self-metrics present', async () => {
  const om = await agent.scrapeText('application/openmetrics-text; version=1.0.0');
  assert.match(om, /^# TYPE kernscope_tcp_connections_opened counter$/m);
  assert.match(om, /# EOF\n$/);
  const m = await agent.scrape();
  assert.ok(sum(m, 'process_cpu_seconds_total') > 0);
  assert.ok(sum(m, 'process_resident_memory_bytes') > 1e6);
  assert.equal(sum(m, 'kernscope_collector_up', { collector: 'tcp' }), 1);
  const progs = m.filter((x) => x.name === 'kernscope_bpf_program_runs_total' && x.labels.collector === 'tcp').map((x) => x.labels.program).sort();
  assert.deepEqual(progs, ['tcp_destroy_btf', 'tcp_live_bytes', 'tcp_receive_reset_btf', 'tcp_retransmit_btf', 'tcp_send_reset_btf', 'tcp_state_btf']);
  const health = await fetch(`http://127.0.0.1:${agent.port}/healthz`);
  assert.equal(await health.text(), 'ok\n');
  assert.equal((await fetch(`http://127.0.0.1:${agent.port}/nope`)).status, 404);
});

test('rtt: segments samples incoming segments, at most once per socket and interval', async () => {
  const seg = await startAgent('collectIntervalSeconds: 0.5\ncollectors:\n  tcp:\n    rtt: segments\n    rttIntervalMs: 3600000\n');
  const srv = peerScript('srv');
  const cli = peerScript('cli');
  const server = startPeer(srv.script, ['server', '127.0.0.1', '200000']);
  const port = (await server.line(/^\d+$/)).trim();
  const client = startPeer(cli.script, ['client', '127.0.0.1', port, '3', '100000']);
  try {
    await client.line(/^done$/);
    const s = { service: srv.service, direction: 'inbound', port };
    let m: Sample[] = [];
    assert.ok(await eventually(async () => sum((m = await seg.scrape()), 'kernscope_tcp_connections_closed_total', s) === 3));
    // Many segments per connection, but an hour-long interval: one sample each.
    assert.equal(sum(m, 'kernscope_tcp_rtt_seconds_count', s), 3);
    assert.equal(sum(m, 'kernscope_tcp_rtt_seconds_count', { service: cli.service }), 3);
    assert.ok(m.some((x) => x.name === 'kernscope_bpf_program_runs_total' && x.labels.program === 'tcp_probe_btf'));
  } finally {
    await client.end();
    await server.end();
    assert.equal(await seg.stop(), 0);
    srv.cleanup();
    cli.cleanup();
  }
});

test('50 MB over one open connection shows within a collection, and is not counted again at close', async () => {
  const BYTES = 50_000_000;
  const srv = peerScript('streamsrv');
  const cli = peerScript('streamcli');
  const server = startPeer(srv.script, ['server', '127.0.0.1', '0']);
  const port = (await server.line(/^\d+$/)).trim();
  const client = startPeer(cli.script, ['hold', '127.0.0.1', port, String(BYTES)]);
  const c = { service: cli.service, direction: 'outbound', port };
  const s = { service: srv.service, direction: 'inbound', port };
  try {
    await client.line(/^connected$/);
    client.send('send\n');
    await client.line(/^written$/);
    // Still open: scraped mid-stream, the bytes are there.
    let m: Sample[] = [];
    const live = await eventually(async () => {
      m = await agent.scrape();
      return sum(m, 'kernscope_tcp_sent_bytes_total', c) === BYTES && sum(m, 'kernscope_tcp_received_bytes_total', s) === BYTES;
    });
    assert.ok(live, `open: sent ${sum(m, 'kernscope_tcp_sent_bytes_total', c)}, received ${sum(m, 'kernscope_tcp_received_bytes_total', s)}`);
    assert.equal(sum(m, 'kernscope_tcp_connections_closed_total', c), 0);
    assert.equal(sum(m, 'kernscope_tcp_connections_open', c), 1);
    assert.equal(sum(m, 'kernscope_tcp_connections_open', s), 1);
  } finally {
    await client.end();
  }
  try {
    let m: Sample[] = [];
    const closed = await eventually(async () => {
      m = await agent.scrape();
      return sum(m, 'kernscope_tcp_connections_closed_total', c) === 1 && sum(m, 'kernscope_tcp_connections_closed_total', s) === 1;
    });
    assert.ok(closed);
    assert.equal(sum(m, 'kernscope_tcp_sent_bytes_total', c), BYTES);
    assert.equal(sum(m, 'kernscope_tcp_received_bytes_total', s), BYTES);
    assert.ok(await eventually(async () => sum(await agent.scrape(), 'kernscope_tcp_connections_open', c) === 0));
  } finally {
    await server.end();
    srv.cleanup();
    cli.cleanup();
  }
});
