import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { eventually, isRoot, sleep, startAgent, sum, type RunningAgent, type Sample } from '../helpers.js';
import { fixtureCopy, startPeer } from '../peers.js';

// Shapes real clients and servers produce that a library would hide: a
// peek before a read, a protocol upgrade, HTTP/2 with prior knowledge, and
// clients that exit before the agent reads its tables.

let agent: RunningAgent;
before(async () => {
  assert.ok(isRoot, 'the agent needs root (CI runs as root)');
  agent = await startAgent('collectIntervalSeconds: 0.5\n');
});
after(async () => {
  assert.equal(await agent.stop(), 0);
});

/** The Python peer (test/fixtures/http-shapes.py) under a unique script name: its service_name. */
function python(): ReturnType<typeof fixtureCopy> {
  return fixtureCopy('http-shapes.py', 'py');
}

async function nodeServer(): Promise<{ service: string; port: string; end: () => Promise<void> }> {
  const srv = fixtureCopy('http-server.mjs', 'shape');
  const server = startPeer(srv.script, []);
  const port = (await server.line(/^\d+$/)).trim();
  return { service: srv.service, port, end: async () => (await server.end(), srv.cleanup()) };
}

async function settle(check: (m: Sample[]) => boolean): Promise<Sample[]> {
  let m: Sample[] = [];
  await eventually(async () => check((m = await agent.scrape())), 8000);
  return m;
}

test('a client that peeks at a response before reading it is counted once', async () => {
  const server = await nodeServer();
  const py = python();
  const client = startPeer('python3', [py.script, 'peek-client', server.port, '5'], undefined, true);
  try {
    assert.equal((await client.line(/^done/)).trim(), 'done');
    const c = { service_name: py.service, server_port: server.port };
    const m = await settle((x) => sum(x, 'http_client_request_duration_seconds_count', c) >= 5 && sum(x, 'http_server_request_duration_seconds_count', { service_name: server.service }) >= 5);
    await sleep(600);
    const again = await agent.scrape();
    assert.equal(sum(again, 'http_client_request_duration_seconds_count', c), 5, JSON.stringify(again.filter((x) => x.name === 'http_client_request_duration_seconds_count' && x.labels.server_port === server.port)));
    assert.equal(sum(again, 'http_client_request_duration_seconds_count', { ...c, http_response_status_code: '200', error_type: '' }), 5);
    assert.equal(sum(m, 'http_server_request_duration_seconds_count', { service_name: server.service }), 5);
  } finally {
    await client.end();
    await server.end();
    py.cleanup();
  }
});

test('an Upgrade answered by 101 ends the request there; what follows is not parsed as HTTP/1', async () => {
  const py = python();
  const srv = python();
  const server = startPeer('python3', [srv.script, 'upgrade-server'], undefined, true);
  const port = (await server.line(/^\d+$/)).trim();
  const client = startPeer('python3', [py.script, 'upgrade-client', port], undefined, true);
  try {
    assert.equal((await client.line(/^done/)).trim(), 'done');
    const m = await settle((x) => sum(x, 'http_server_request_duration_seconds_count', { service_name: srv.service }) >= 1 && sum(x, 'http_client_request_duration_seconds_count', { service_name: py.service }) >= 1);
    await sleep(600);
    const after = await agent.scrape();
    const s = { service_name: srv.service };
    assert.equal(sum(after, 'http_server_request_duration_seconds_count', s), 1);
    assert.equal(sum(after, 'http_server_request_duration_seconds_count', { ...s, http_response_status_code: '101', http_route: '/socket' }), 1);
    assert.equal(sum(after, 'kernscope_http_server_requests_aborted_total', s), 0);
    const c = { service_name: py.service };
    assert.equal(sum(after, 'http_client_request_duration_seconds_count', c), 1);
    assert.equal(sum(after, 'http_client_request_duration_seconds_count', { ...c, http_response_status_code: '101', error_type: '' }), 1);
    assert.equal(sum(m, 'kernscope_http_unparsed_total'), 0);
  } finally {
    await client.end();
    await server.end();
    py.cleanup();
    srv.cleanup();
  }
});

test('HTTP/2 with prior knowledge makes no HTTP/1 series', async () => {
  const server = await nodeServer();
  const py = python();
  const client = startPeer('python3', [py.script, 'h2c-client', server.port], undefined, true);
  try {
    assert.equal((await client.line(/^done/)).trim(), 'done');
    await sleep(1200);
    const m = await agent.scrape();
    for (const name of ['http_server_request_duration_seconds_count', 'http_client_request_duration_seconds_count', 'kernscope_http_server_requests_aborted_total']) {
      assert.equal(sum(m, name, { service_name: server.service }), 0, name);
      assert.equal(sum(m, name, { service_name: py.service }), 0, name);
    }
  } finally {
    await client.end();
    await server.end();
    py.cleanup();
  }
});

test('short-lived curl clients are named after what the kernel saw, though gone before the scrape', async () => {
  const server = await nodeServer();
  try {
    for (let i = 0; i < 6; i++) execFileSync('curl', ['-s', '-o', '/dev/null', `http://127.0.0.1:${server.port}/users/${i}`]);
    const c = { service_name: 'curl', server_port: server.port };
    const m = await settle((x) => sum(x, 'http_client_request_duration_seconds_count', c) >= 6);
    assert.equal(sum(m, 'http_client_request_duration_seconds_count', { ...c, http_response_status_code: '200' }), 6);
    assert.equal(sum(m, 'http_client_request_duration_seconds_count', { service_name: 'unknown' }), 0);
  } finally {
    await server.end();
  }
});
