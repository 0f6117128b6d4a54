import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { ROOT } from '../../src/paths.js';
import { eventually, freePort, isRoot, startAgent, subscribeEvents, sum, tmpDir } from '../helpers.js';

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
  const stream = subscribeEvents<{ rule: string; process: { pid: number } }>(agent.port);
  const seen = stream.seen;
  try {
    await new Promise((r) => setTimeout(r, 200));
    const pids = await runTimes(bin, 3);
    assert.ok(await eventually(async () => seen.length === 3, 5000), `saw ${seen.length}`);
    assert.deepEqual(seen.map((a) => a.process.pid), pids);
  } finally {
    stream.close();
    await agent.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('process events with exit codes and signals, to a file rotated by size', async () => {
  const dir = tmpDir('ks-events');
  const file = path.join(dir, 'events.jsonl');
  const agent = await startAgent(`security:\n  defaultRules: false\n  output:\n    stdout: false\n    file: ${file}\n    maxFileBytes: 4096\n    keepFiles: 2\n    processEvents: true\n`);
  try {
    const exit3 = spawn('sh', ['-c', 'exit 3'], { stdio: 'ignore' });
    await new Promise((r) => exit3.once('exit', r));
    const killed = spawn('sh', ['-c', 'kill -TERM $$'], { stdio: 'ignore' });
    await new Promise((r) => killed.once('exit', r));
    const lines = (): Array<{ kind: string; exitCode?: number; signal?: number; process: { pid: number } }> =>
      [`${file}.2`, `${file}.1`, file]
        .filter((f) => fs.existsSync(f))
        .flatMap((f) => fs.readFileSync(f, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)));
    const exitOf = (pid: number) => lines().find((l) => l.kind === 'exit' && l.process.pid === pid);
    assert.ok(await eventually(async () => !!exitOf(exit3.pid!) && !!exitOf(killed.pid!), 5000));
    assert.deepEqual([exitOf(exit3.pid!)!.exitCode, exitOf(exit3.pid!)!.signal], [3, 0]);
    assert.deepEqual([exitOf(killed.pid!)!.exitCode, exitOf(killed.pid!)!.signal], [0, 15]);
    assert.ok(lines().some((l) => l.kind === 'exec' && l.process.pid === exit3.pid));
    // Enough events to rotate: the file stays under its bound, older ones move aside.
    await runTimes('/bin/true', 30);
    assert.ok(await eventually(async () => fs.existsSync(`${file}.1`), 5000), 'rotated');
    assert.ok(fs.statSync(file).size <= 4096);
    assert.ok(!fs.existsSync(`${file}.3`), 'keeps 2 old files at most');
  } finally {
    await agent.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the alert file\'s disk fills: every line lost is counted, the file keeps whole lines, the agent serves on, and writing resumes when there is room', async () => {
  const dir = tmpDir('ks-full');
  const disk = path.join(dir, 'disk');
  fs.mkdirSync(disk);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'ks-full', disk]);
  const file = path.join(disk, 'alerts.jsonl');
  const marker = path.join(dir, 'ks-full-marker');
  fs.copyFileSync('/bin/true', marker);
  fs.chmodSync(marker, 0o755);
  const rules = path.join(dir, 'rules.yaml');
  fs.writeFileSync(rules, 'rules:\n  - name: full-disk-marker\n    severity: info\n    match: { name: [ks-full-marker] }\n');
  // All but 16 KiB taken by another file.
  fs.writeFileSync(path.join(disk, 'filler'), Buffer.alloc(48 << 10));
  const agent = await startAgent(`security:\n  defaultRules: false\n  rules: [${rules}]\n  output:\n    stdout: false\n    file: ${file}\n    maxFileBytes: 1048576\n`);
  const lost = async (): Promise<number> => sum(await agent.scrape(), 'kernscope_events_dropped_total', { source: 'process', reason: 'alert_output_failed' });
  const raised = async (): Promise<number> => sum(await agent.scrape(), 'kernscope_security_alerts_total', { rule: 'full-disk-marker' });
  // Whole lines are what the file holds at rest: while a write the disk
  // cuts short is under way, its torn part is there until it is cut off.
  const inFile = (atRest = false): number => {
    const text = fs.readFileSync(file, 'utf8');
    if (atRest) assert.ok(text === '' || text.endsWith('\n'), 'whole lines only');
    const lines = text.split('\n').slice(0, -1);
    for (const l of lines) assert.equal(JSON.parse(l).rule, 'full-disk-marker');
    return lines.length;
  };
  try {
    await runTimes(marker, 100);
    assert.ok(await eventually(async () => (await raised()) === 100 && inFile() + (await lost()) === 100, 10_000), `${await raised()} raised, ${inFile()} in the file, ${await lost()} lost`);
    assert.equal(inFile(true) + (await lost()), 100);
    assert.ok((await lost()) > 0, 'the disk filled');
    assert.match(agent.stderr(), /security: .*alerts\.jsonl: (ENOSPC|short_write): lines lost/);
    const before = await lost();
    fs.rmSync(path.join(disk, 'filler'));
    await runTimes(marker, 20);
    assert.ok(await eventually(async () => (await raised()) === 120 && inFile() + (await lost()) === 120, 10_000));
    assert.equal(inFile(true) + (await lost()), 120);
    assert.equal(await lost(), before, 'with room again, nothing more is lost');
    assert.equal(agent.child.exitCode, null);
  } finally {
    await agent.stop();
    execFileSync('umount', [disk]);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('webhook: a receiver down for a while, then back: the queue holds its bound, what it held arrives in order, the rest is counted', async () => {
  const { dir, bin, rules } = setup();
  const port = await freePort(); // nobody listens yet
  const agent = await startAgent(
    `security:\n  defaultRules: false\n  rules: [${rules}]\n  output:\n    stdout: false\n    webhook: { url: "http://127.0.0.1:${port}/", batchSize: 5, flushIntervalMs: 50, backoffMs: 50, maxRetries: 100, maxQueue: 5 }\n`,
  );
  const got: Array<{ process: { pid: number } }> = [];
  const receiver = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      got.push(...(JSON.parse(body) as typeof got));
      res.writeHead(204).end();
    });
  });
  const dropped = async (reason: string): Promise<number> => sum(await agent.scrape(), 'kernscope_events_dropped_total', { source: 'process', reason });
  try {
    const down = await runTimes(bin, 12);
    // Five wait in the queue, seven find it full.
    assert.ok(await eventually(async () => (await dropped('webhook_queue_full')) === 7, 8000), `queue_full ${await dropped('webhook_queue_full')}`);
    await new Promise<void>((r) => receiver.listen(port, '127.0.0.1', () => r()));
    assert.ok(await eventually(async () => got.length === 5, 15_000), `received ${got.length}`);
    assert.deepEqual(got.map((a) => a.process.pid), down.slice(0, 5));
    const up = await runTimes(bin, 3);
    assert.ok(await eventually(async () => got.length === 8, 8000), `received ${got.length}`);
    assert.deepEqual(got.slice(5).map((a) => a.process.pid), up);
    assert.equal(await dropped('webhook_queue_full'), 7);
    assert.equal(await dropped('webhook_failed'), 0);
    assert.equal(sum(await agent.scrape(), 'kernscope_security_alerts_total', { rule: 'hook-marker' }), 15);
  } finally {
    receiver.close();
    await agent.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('live stream: a reader that stops reading loses events, each counted, while a reader that keeps up loses none', async () => {
  const dir = tmpDir('ks-slow');
  const agent = await startAgent('security:\n  defaultRules: false\n  output:\n    stdout: false\n    processEvents: true\n');
  // Both readers count the events between two execs: of these files.
  const [begin, marker] = ['begin', 'end'].map((w) => {
    const f = path.join(dir, `ks-stream-${w}`);
    fs.copyFileSync('/bin/true', f);
    fs.chmodSync(f, 0o755);
    return f;
  }) as [string, string];
  const run = (f: string): Promise<unknown> => new Promise((r) => spawn(f, [], { stdio: 'ignore' }).once('exit', r));
  let fastGot = -1;
  let fastDone = false;
  const fast = http.get(`http://127.0.0.1:${agent.port}/events`, (res) => {
    let buf = '';
    res.on('data', (d) => {
      if (fastDone) return;
      buf += d;
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const ev = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (!ev.startsWith('data: ') || fastDone) continue;
        if (fastGot < 0) {
          if (ev.includes(`"exe":"${begin}"`)) fastGot = 0;
          continue;
        }
        fastGot++;
        if (ev.includes(`"exe":"${marker}"`)) fastDone = true;
      }
    });
  });
  fast.on('error', () => {});
  const flag = path.join(dir, 'read-now');
  const slow = spawn('python3', [path.join(ROOT, 'test', 'fixtures', 'slow-reader.py'), String(agent.port), flag, begin, marker], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  slow.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const lost = async (): Promise<number> => sum(await agent.scrape(), 'kernscope_event_stream_dropped_total');
  try {
    assert.ok(await eventually(async () => out.includes('connected'), 5000));
    await new Promise((r) => setTimeout(r, 500)); // both attached
    await run(begin);
    // 8,000 runs with long arguments: an exec and an exit event each, more
    // than the sockets' buffers and the agent's 1 MiB per reader hold.
    const long = 'x'.repeat(120);
    await new Promise<void>((resolve) => {
      const c = spawn('sh', ['-c', `i=0; while [ $i -lt 8000 ]; do /bin/true ${long} ${long} ${long} ${long}; i=$((i+1)); done`], { stdio: 'ignore' });
      c.once('exit', () => resolve());
    });
    assert.ok(await eventually(async () => (await lost()) > 0, 10_000), 'the slow reader lost nothing');
    // The slow reader catches up, then the marker ends both counts.
    fs.writeFileSync(flag, '');
    await new Promise((r) => setTimeout(r, 5000));
    await run(marker);
    const code = await Promise.race([new Promise((r) => slow.once('exit', r)), new Promise((r) => setTimeout(() => r('timeout'), 30_000))]);
    assert.equal(code, 0, 'the slow reader saw the marker');
    assert.ok(await eventually(async () => fastDone, 5000), 'the fast reader saw the marker');
    const slowGot = Number(out.trim().split('\n').at(-1));
    const dropped = await lost();
    assert.ok(fastGot >= 16_000, `the fast reader got ${fastGot}`);
    assert.equal(slowGot + dropped, fastGot, `slow ${slowGot} + lost ${dropped} = fast ${fastGot}`);
    console.log(`# live stream: ${fastGot} events, the slow reader got ${slowGot} and lost ${dropped}`);
  } finally {
    fast.destroy();
    if (slow.exitCode === null) slow.kill();
    await agent.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
