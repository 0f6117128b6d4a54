import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from '../../src/paths.js';
import { DEFAULT_CONFIG } from '../../src/config/schema.js';
import { eventually, isRoot, startAgent, sum, tmpDir } from '../helpers.js';
import { startPeer } from '../peers.js';

// The series formula of docs/scale.md, checked: services x label sets x
// series per label set, with and without body size histograms.

const QUIET = 'collectors: { tcp: { enabled: false }, process: { enabled: false } }\nsecurity: { enabled: false }\n';

/** Lines of a family prefix for one service (other processes on the machine make traffic too). */
function countLines(text: string, prefix: string, service: RegExp): number {
  return text.split('\n').filter((l) => l.startsWith(prefix) && service.test(l)).length;
}

test('series per node follow the documented formula', async () => {
  assert.ok(isRoot, 'the agent needs root (CI runs as root)');
  const dir = tmpDir('ks-scale');
  const servers = [];
  try {
    const ports: number[] = [];
    for (const name of ['svc-one', 'svc-two']) {
      const script = path.join(dir, `${name}.mjs`);
      fs.copyFileSync(path.join(ROOT, 'test', 'fixtures', 'http-server.mjs'), script);
      const p = startPeer(script, []);
      servers.push(p);
      ports.push(Number((await p.line(/^\d+$/)).trim()));
    }
    const D = DEFAULT_CONFIG.collectors.http.durationBuckets.length;
    for (const bodySizes of [true, false]) {
      const agent = await startAgent(`${QUIET}collectors:\n  tcp: { enabled: false }\n  process: { enabled: false }\n  http:\n    bodySizes: ${bodySizes}\n`.replace(/^collectors: .*\n/, ''));
      try {
        // Per service, three label sets: (GET, 200, /users/*), (GET, 500, /fail), (GET, 404, /missing/*).
        for (const port of ports) for (const p of ['/users/1', '/fail', '/missing/1']) execFileSync('curl', ['-s', '-o', '/dev/null', `http://127.0.0.1:${port}${p}`]);
        await eventually(async () => sum(await agent.scrape(), 'http_server_request_duration_seconds_count') === 6, 5000);
        const text = await agent.scrapeText();
        const perLabelSet = (D + 3) * (bodySizes ? 3 : 1); // buckets, +Inf, _sum, _count; x3 with body sizes
        const ours = /service_name="svc-(one|two)"/;
        assert.equal(countLines(text, 'http_server_', ours), 2 * 3 * perLabelSet, `bodySizes ${bodySizes}`);
        // curl is the client: one label set per (server port, status).
        const curl = new RegExp(`service_name="curl".*server_port="(${ports.join('|')})"`);
        assert.equal(countLines(text, 'http_client_', curl), 2 * 3 * perLabelSet);
        assert.equal(countLines(text, 'kernscope_http_requests_total{', ours), 2 * 3);
      } finally {
        await agent.stop();
      }
    }
  } finally {
    for (const p of servers) await p.end();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
