import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from '../../src/paths.js';
import { eventually, freePort, isRoot, startAgent, sum, tmpDir, type Sample } from '../helpers.js';
import { startPeer } from '../peers.js';

test('Python http.server, a service named by port, and a watch list', async () => {
  assert.ok(isRoot, 'the agent needs root (CI runs as root)');
  const dir = tmpDir('ks-py');
  fs.writeFileSync(path.join(dir, 'a.txt'), 'hello\n');
  const pyPort = await freePort();
  // Python's server reads with recv_into and answers with send: other syscalls than Node's.
  const py = spawn('python3', ['-m', 'http.server', String(pyPort), '--bind', '127.0.0.1', '--directory', dir], { stdio: 'ignore' });
  const node = startPeer(path.join(ROOT, 'test', 'fixtures', 'http-server.mjs'), []);
  const nodePort = (await node.line(/^\d+$/)).trim();
  const agent = await startAgent(
    `collectIntervalSeconds: 0.5
services:
  - name: static-files
    match: { port: ${pyPort} }
collectors:
  http:
    watch:
      - { port: ${pyPort} }
`,
  );
  try {
    assert.ok(await eventually(async () => fetch(`http://127.0.0.1:${pyPort}/a.txt`).then((r) => r.ok, () => false), 5000));
    const before = await agent.scrape();
    const s = { service_name: 'static-files' };
    const total = sum(before, 'http_server_request_duration_seconds_count', s);
    const base = sum(before, 'http_server_request_duration_seconds_count', { ...s, http_route: '/a.txt', http_response_status_code: '200' });
    for (const p of ['/a.txt', '/a.txt', '/nope']) execFileSync('curl', ['-s', '-o', '/dev/null', `http://127.0.0.1:${pyPort}${p}`]);
    for (const p of ['/users/1', '/users/2']) execFileSync('curl', ['-s', '-o', '/dev/null', `http://127.0.0.1:${nodePort}${p}`]);
    let m: Sample[] = [];
    assert.ok(await eventually(async () => sum((m = await agent.scrape()), 'http_server_request_duration_seconds_count', s) === total + 3, 5000));
    assert.equal(sum(m, 'http_server_request_duration_seconds_count', { service_name: 'static-files', http_route: '/a.txt', http_response_status_code: '200' }) - base, 2);
    assert.equal(sum(m, 'http_server_request_duration_seconds_count', { service_name: 'static-files', http_route: '/nope', http_response_status_code: '404' }), 1);
    // Not on the watch list: the Node server and every client.
    assert.equal(m.filter((x) => x.name === 'http_server_request_duration_seconds_count' && x.labels.service_name !== 'static-files').length, 0);
    assert.equal(sum(m, 'http_client_request_duration_seconds_count'), 0);
  } finally {
    await agent.stop();
    process.kill(py.pid!, 'SIGTERM');
    await node.end();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
