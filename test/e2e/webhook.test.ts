import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { eventually, freePort, isRoot, startAgent, sum, tmpDir } from '../helpers.js';

async function runTimes(bin: string, n: number): Promise<number[]> {
  const pids: number[] = [];
  for (let i = 0; i < n; i++) {
    const c = spawn(bin, [], { stdio: 'ignore' });
    pids.push(c.pid!);
    await new Promise((r) => c.once('exit', r));
  }
  return pids;
}

function setup(): { dir: string; bin: string; rules: string } {
  const dir = tmpDir('ks-hook');
  const bin = path.join(dir, 'ks-hook-marker');
  fs.copyFileSync('/bin/true', bin);
  fs.chmodSync(bin, 0o755);
  const rules = path.join(dir, 'rules.yaml');
  fs.writeFileSync(rules, 'rules:\n  - name: hook-marker\n    severity: low\n    match: { exe: ["*/ks-hook-marker"] }\n');
  return { dir, bin, rules };
}

test('webhook: alerts arrive once each, in order, through failures and retries', async () => {
  assert.ok(isRoot, 'the agent needs root (CI runs as root)');
  const { dir, bin, rules } = setup();
  const got: Array<{ rule: string; process: { pid: number } }> = [];
  let posts = 0;
  const receiver = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      posts++;
      if (posts <= 2) return res.writeHead(503).end(); // the receiver is unwell at first
      got.push(...(JSON.parse(body) as typeof got));
      res.writeHead(204).end();
    });
  });
  const port = await freePort();
  await new Promise<void>((r) => receiver.listen(port, '127.0.0.1', () => r()));
  const agent = await startAgent(
    `security:\n  defaultRules: false\n  rules: [${rules}]\n  output:\n    stdout: false\n    webhook: { url: "http://127.0.0.1:${port}/alerts", batchSize: 2, flushIntervalMs: 100, backoffMs: 50, maxRetries: 5 }\n`,
  );
  try {
    const pids = await runTimes(bin, 5);
    assert.ok(await eventually(async () => got.length >= 5, 8000), `received ${got.length}`);
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(got.map((a) => a.process.pid), pids);
    assert.ok(got.every((a) => a.rule === 'hook-marker'));
    const m = await agent.scrape();
    assert.equal(sum(m, 'kernscope_security_webhook_retries_total'), 2);
    assert.equal(sum(m, 'kernscope_events_dropped_total', { source: 'process', reason: 'webhook_failed' }), 0);
  } finally {
    await agent.stop();
    receiver.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('webhook: a receiver that stays down costs counted alerts, never the agent', async () => {
  const { dir, bin, rules } = setup();
  const port = await freePort(); // nobody listens
  const agent = await startAgent(
    `security:\n  defaultRules: false\n  rules: [${rules}]\n  output:\n    stdout: false\n    webhook: { url: "http://127.0.0.1:${port}/", batchSize: 1, flushIntervalMs: 50, backoffMs: 20, maxRetries: 1 }\n`,
  );
  try {
    await runTimes(bin, 3);
    const lost = async (): Promise<number> => sum(await agent.scrape(), 'kernscope_events_dropped_total', { source: 'process', reason: 'webhook_failed' });
    assert.ok(await eventually(async () => (await lost()) === 3, 8000), `lost ${await lost()}`);
    assert.equal(sum(await agent.scrape(), 'kernscope_security_alerts_total', { rule: 'hook-marker' }), 3);
  } finally {
    await agent.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('live stream: GET /events sends each alert as a server-sent event', async () => {
  const { dir, bin, rules } = setup();
  const agent = await startAgent(`security:\n  defaultRules: false\n  rules: [${rules}]\n  output:\n    stdout: false\n`);
  const seen: Array<{ rule: string; process: { pid: number } }> = [];
  const req = http.get(`http://127.0.0.1:${agent.port}/events`, (res) => {
    let buf = '';
    res.on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const ev = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (ev.startsWith('data: ')) seen.push(JSON.parse(ev.slice(6)));
      }
    });
  });
  req.on('error', () => {});
  try {
    await new Promise((r) => setTimeout(r, 200));
    const pids = await runTimes(bin, 3);
    assert.ok(await eventually(async () => seen.length === 3, 5000), `saw ${seen.length}`);
    assert.deepEqual(seen.map((a) => a.process.pid), pids);
  } finally {
    req.destroy();
    await agent.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
