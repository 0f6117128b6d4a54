import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { ROOT } from '../../src/paths.js';
import { eventually, isRoot, mapKeysOf, sleep, startAgent, subscribeEvents, sum, type Sample } from '../helpers.js';
import { startPeer, type Peer } from '../peers.js';

// The agent's cost controls: in-kernel filters, sampling with exact counts,
// and a CPU budget that the agent holds by sampling.

const SERVER = path.join(ROOT, 'test', 'fixtures', 'http-server.mjs');
const LOAD = path.join(ROOT, 'test', 'fixtures', 'http-load.mjs');
const TALKER = path.join(ROOT, 'test', 'fixtures', 'tcp-talker.mjs');

before(() => assert.ok(isRoot, 'the agent needs root (CI runs as root)'));

async function server(): Promise<{ peer: Peer; port: number }> {
  const peer = startPeer(SERVER, []);
  return { peer, port: Number((await peer.line(/^\d+$/)).trim()) };
}

function load(port: number, total: number, conns = 4): number {
  return Number(execFileSync(process.execPath, [LOAD, String(port), String(total), String(conns)], { encoding: 'utf8', timeout: 120_000 }).trim());
}


test('watch list in the kernel: connections of unwatched processes are never tracked', async () => {
  const a = await server();
  const b = await server();
  const agent = await startAgent(`collectors:\n  http:\n    watch:\n      - { pid: ${a.peer.child.pid!} }\n`);
  try {
    assert.equal(load(a.port, 50), 50);
    assert.equal(load(b.port, 50), 50);
    let m: Sample[] = [];
    await eventually(async () => sum((m = await agent.scrape()), 'kernscope_http_requests_total', { direction: 'server' }) >= 50, 5000);
    assert.equal(sum(m, 'kernscope_http_requests_total', { direction: 'server', status_class: '2xx' }), 50);
    assert.equal(sum(m, 'http_server_request_duration_seconds_count'), 50);
    // The kernel itself counted requests of the watched server only: the
    // other one's connections were skipped at accept, before any payload.
    const tgids = new Set(mapKeysOf(agent.child.pid!, 'http_agg').map((k) => k.readUInt32LE(0)));
    assert.ok(tgids.has(a.peer.child.pid!), 'the watched server is counted in the kernel');
    assert.ok(!tgids.has(b.peer.child.pid!), 'the unwatched server is not tracked at all');
    // A process started after the agent that never speaks HTTP: the kernel
    // asks for a verdict at its first connection, and stops tracking it.
    const talker = startPeer(TALKER, [String(b.port)]);
    try {
      await talker.line(/^connected$/);
      const pid = talker.child.pid!;
      assert.ok(
        await eventually(async () => !mapKeysOf(agent.child.pid!, 'conns').some((k) => k.readUInt32LE(0) === pid), 5000),
        'its connection left the kernel table',
      );
    } finally {
      await talker.end();
    }
  } finally {
    await agent.stop();
    await a.peer.end();
    await b.peer.end();
  }
});

test('sampling the live stream leaves the histograms exact', async () => {
  const s = await server();
  const agent = await startAgent('collectors:\n  http:\n    records: true\n    sampleEvery: 4\n');
  try {
    assert.equal(load(s.port, 800), 800);
    let m: Sample[] = [];
    const server = { service_name: 'http-server', direction: 'server', status_class: '2xx' };
    await eventually(async () => sum((m = await agent.scrape()), 'kernscope_http_requests_total', server) >= 800, 5000);
    assert.equal(sum(m, 'kernscope_http_requests_total', server), 800);
    assert.equal(sum(m, 'kernscope_http_sample_every'), 4);
    // Every request is in the histograms: they are aggregated in the kernel.
    assert.equal(sum(m, 'http_server_request_duration_seconds_count', { service_name: 'http-server', http_route: '/users/*' }), 800);
  } finally {
    await agent.stop();
    await s.peer.end();
  }
});

test('a CPU budget: past it the agent turns its sampling up, and the counts and histograms stay exact', async () => {
  const s = await server();
  // A budget any load passes (the programs' own run time counts in it), so
  // that the steering shows whatever the machine's speed; no timing is asserted.
  const budget = 0.05;
  const agent = await startAgent(`overhead:\n  maxCpuPercent: ${budget}\n`);
  try {
    let sent = 0;
    let sampled = false;
    for (let round = 0; round < 12 && !sampled; round++) {
      sent += load(s.port, 4000);
      sampled = sum(await agent.scrape(), 'kernscope_http_sample_every') > 1;
    }
    assert.ok(sampled, 'the budget raised the sampling');
    sent += load(s.port, 2000);
    await sleep(200);
    const m = await agent.scrape();
    assert.equal(sum(m, 'kernscope_http_requests_total', { service_name: 'http-server', direction: 'server', status_class: '2xx' }), sent);
    assert.equal(sum(m, 'http_server_request_duration_seconds_count', { service_name: 'http-server', http_route: '/users/*' }), sent);
    assert.ok(sum(m, 'kernscope_overhead_sampling_changes_total', { direction: 'fewer_records' }) >= 1);
    assert.equal(sum(m, 'kernscope_overhead_budget_cpu_percent'), budget);
  } finally {
    await agent.stop();
    await s.peer.end();
  }
});

test('the live stream\'s ring buffer, filled while the agent is stopped: each record is shown or counted lost, the histograms stay exact', async () => {
  const s = await server();
  const agent = await startAgent('collectIntervalSeconds: 0.5\ncollectors:\n  http:\n    records: true\n');
  const stream = subscribeEvents<{ type: string; service_name: string; direction: string; server_port?: number }>(agent.port);
  const N = 6000;
  try {
    await sleep(200);
    // A stopped agent reads nothing: the kernel's 1 MiB ring holds about
    // 2,000 records, and the rest find it full. Each request makes two,
    // the server's and the client's.
    process.kill(agent.child.pid!, 'SIGSTOP');
    let sent: number;
    try {
      sent = load(s.port, N, 8);
    } finally {
      process.kill(agent.child.pid!, 'SIGCONT');
    }
    assert.equal(sent, N);
    const shown = (): number =>
      stream.seen.filter(
        (e) => e.type === 'http_request' && ((e.direction === 'server' && e.service_name === 'http-server') || (e.direction === 'client' && e.server_port === s.port)),
      ).length;
    const ringLost = (m: Sample[]): number => sum(m, 'kernscope_events_dropped_total', { source: 'http', reason: 'ringbuf_full' });
    const lost = (m: Sample[]): number => ringLost(m) + sum(m, 'kernscope_event_stream_dropped_total');
    let m: Sample[] = [];
    assert.ok(await eventually(async () => shown() + lost((m = await agent.scrape())) >= 2 * N, 15_000), `${shown()} shown, ${lost(m)} lost`);
    await sleep(500);
    m = await agent.scrape();
    assert.ok(ringLost(m) > 0, 'the ring never filled');
    assert.equal(shown() + lost(m), 2 * N);
    assert.equal(sum(m, 'http_server_request_duration_seconds_count', { service_name: 'http-server' }), N);
  } finally {
    stream.close();
    await agent.stop();
    await s.peer.end();
  }
});

test('the live stream: sampled requests at /events, already counted, with route and status', async () => {
  const s = await server();
  const agent = await startAgent('collectIntervalSeconds: 0.5\ncollectors:\n  http:\n    records: true\n');
  const stream = subscribeEvents<{ type: string; service_name: string; direction: string; method: string; path: string; status: number }>(agent.port);
  const seen = stream.seen;
  try {
    await sleep(200);
    assert.equal(load(s.port, 40), 40);
    const mine = (): typeof seen => seen.filter((e) => e.type === 'http_request' && e.service_name === 'http-server' && e.direction === 'server');
    assert.ok(await eventually(async () => mine().length >= 40, 5000), `saw ${mine().length}`);
    await sleep(300);
    // sampleEvery 1: each request once, as the server saw it.
    assert.equal(mine().length, 40);
    assert.ok(mine().every((e) => e.method === 'GET' && e.path.startsWith('/users/') && e.status === 200));
    // Shown, not counted again.
    const m = await agent.scrape();
    assert.equal(sum(m, 'http_server_request_duration_seconds_count', { service_name: 'http-server', http_route: '/users/*' }), 40);
  } finally {
    stream.close();
    await agent.stop();
    await s.peer.end();
  }
});
