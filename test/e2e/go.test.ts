import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from '../../src/paths.js';
import { eventually, isRoot, startAgent, sum, tmpDir, type Sample } from '../helpers.js';
import { startPeer } from '../peers.js';

// Go's net/http reads and writes from goroutines on many threads, and reads
// ahead for the next request while a handler runs: every request must keep
// its method and route.

test('a Go net/http server under wrk: every request with its method and route, none as _OTHER', async () => {
  assert.ok(isRoot, 'the agent runs as root here (CI runs as root)');
  const dir = tmpDir('ks-go');
  const bin = path.join(dir, 'ksgo');
  const src = path.join(ROOT, 'test', 'fixtures', 'go-server');
  execFileSync('go', ['build', '-o', bin, '.'], { cwd: src, env: { ...process.env, GOCACHE: path.join(dir, 'cache'), GOPATH: path.join(dir, 'gopath'), GOFLAGS: '-mod=mod', GO111MODULE: 'on' }, stdio: 'pipe' });
  const agent = await startAgent('collectIntervalSeconds: 0.5\n');
  const server = startPeer(bin, [], undefined, true);
  try {
    const port = (await server.line(/^\d+$/)).trim();
    // Bounded: 16 connections for 2 seconds, loopback only.
    execFileSync('wrk', ['-t1', '-c16', '-d2s', `http://127.0.0.1:${port}/users/7`], { stdio: 'pipe' });
    const served = Number(await (await fetch(`http://127.0.0.1:${port}/count`)).text());
    assert.ok(served > 1000, `served ${served}`);
    let m: Sample[] = [];
    const s = { service_name: 'ksgo' };
    const users = { ...s, http_route: '/users/*', http_request_method: 'GET', http_response_status_code: '200' };
    // Requests in flight when wrk stops (one per connection at most) are
    // handled by Go but may fail to be written back; the kernel then counts
    // them as aborted once Go closes the connection, which it may do later.
    const counted = (x: Sample[]): number => sum(x, 'http_server_request_duration_seconds_count', users) + sum(x, 'kernscope_http_server_requests_aborted_total', s);
    await eventually(async () => counted((m = await agent.scrape())) >= served, 5000);
    const c = counted(m);
    assert.ok(c <= served && served - c <= 16, `${c} counted, ${served} served`);
    assert.ok(sum(m, 'http_server_request_duration_seconds_count', users) >= served - 16);
    assert.equal(sum(m, 'http_server_request_duration_seconds_count', { ...s, http_request_method: '_OTHER' }), 0);
    assert.equal(sum(m, 'http_server_request_duration_seconds_count', { ...s, http_route: '_unknown' }), 0);
    assert.equal(sum(m, 'kernscope_http_unparsed_total'), 0);
  } finally {
    await server.end();
    await agent.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
