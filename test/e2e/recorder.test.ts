// The flight recorder on this kernel: a known workload's events in the
// journal, in order and exact; kill -9 of the agent and a restart leave the
// journal whole; the size cap holds under 10,000 execs; a full disk is
// counted and the agent keeps serving.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { KERNSCOPE, eventually, runCli, sleep, startAgent, sum, tmpDir } from '../helpers.js';
import { WORKLOAD, workloadEvents, type Entry, type WorkloadFacts } from '../recorder-expect.js';
import { listSegments } from '../../src/recorder/journal.js';

const PY = '/usr/bin/python3';

async function show(dir: string, args: string[] = []): Promise<{ entries: Entry[]; journal: { corrupt: number; torn: number } }> {
  const r = await runCli(['recorder', 'show', '--dir', dir, '--json', ...args]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as { entries: Entry[]; journal: { corrupt: number; torn: number } };
}

function runWorkload(): WorkloadFacts {
  return JSON.parse(execFileSync(PY, [WORKLOAD], { encoding: 'utf8', timeout: 20_000 })) as WorkloadFacts;
}

test('a workload\'s execs, exits, signals, resets and send on a closed socket, in order, exactly', async () => {
  const dir = tmpDir('ks-rec');
  const agent = await startAgent(`recorder: { path: ${dir}/j }\n`);
  // `recorder tail` follows the journal while the agent writes it.
  const tail = spawn(process.execPath, [KERNSCOPE, 'recorder', 'tail', '--dir', `${dir}/j`, '--lines', '1'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let tailed = '';
  tail.stdout.on('data', (d: Buffer) => (tailed += d.toString()));
  try {
    const facts = runWorkload();
    // Socket errors are folded at the recorder's second.
    await sleep(1500);
    assert.ok(await eventually(async () => /send_not_established .*error=EPIPE/.test(tailed)), `tail showed: ${tailed.slice(-2000)}`);
    assert.match(tailed, new RegExp(`exit +pid=${facts.killed.pid} comm=sleep signal=9 signal_name=SIGKILL`));
    process.kill(tail.pid!, 'SIGTERM');
    assert.equal(await agent.stop(), 0);
    const t = await show(`${dir}/j`);
    workloadEvents(t.entries, facts);
    assert.deepEqual([t.journal.corrupt, t.journal.torn], [0, 0]);
    const agentRecs = t.entries.filter((e) => e.k === 'agent').map((e) => e.event);
    assert.deepEqual(agentRecs, ['start', 'stop']);
    assert.equal(t.entries.at(-1)!.k, 'agent');
    // A summary each second with the node's memory and the agent's own.
    const summaries = t.entries.filter((e) => e.k === 'summary');
    assert.ok(summaries.length >= 2 && summaries.every((s) => typeof s.mem_used_bytes === 'number' && typeof s.agent_rss_bytes === 'number'));
    const text = (await runCli(['recorder', 'show', '--dir', `${dir}/j`])).stdout;
    assert.match(text, /send_not_established .*op=send error=EPIPE count=1/);
  } finally {
    if (tail.exitCode === null) process.kill(tail.pid!, 'SIGKILL');
    await agent.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('kill -9 of the agent and a restart leave the journal whole', async () => {
  const dir = tmpDir('ks-rec');
  const j = `${dir}/j`;
  let agent = await startAgent(`recorder: { path: ${j} }\n`);
  try {
    const facts = runWorkload();
    await sleep(1500); // one sync
    process.kill(agent.child.pid!, 'SIGKILL');
    await agent.exited;
    agent = await startAgent(`recorder: { path: ${j} }\n`);
    assert.doesNotMatch(agent.stderr(), /recorder: off/);
    await sleep(1200);
    assert.equal(await agent.stop(), 0);
    const t = await show(j);
    workloadEvents(t.entries, facts);
    assert.deepEqual([t.journal.corrupt, t.journal.torn], [0, 0]);
    // The first agent never wrote its stop; the second started a segment of its own.
    assert.deepEqual(t.entries.filter((e) => e.k === 'agent').map((e) => e.event), ['start', 'start', 'stop']);
    assert.equal(listSegments(j).length, 2);
  } finally {
    await agent.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the size cap holds under a storm of 10,000 execs, and the journal stays readable', async () => {
  const dir = tmpDir('ks-rec');
  const j = `${dir}/j`;
  const cap = 262144;
  const agent = await startAgent(`recorder: { path: ${j}, maxBytes: ${cap}, segmentBytes: 32768, maxRecordsPerSecond: 1000000 }\nsecurity: { output: { stdout: false } }\n`);
  try {
    let biggest = 0;
    let storming = true;
    const watch = (async () => {
      while (storming) {
        biggest = Math.max(biggest, listSegments(j).reduce((a, s) => a + s.bytes, 0));
        await sleep(50);
      }
    })();
    // 10,000 execs of /bin/true from one shell, then a marker.
    const r = spawnSync('/bin/sh', ['-c', 'i=0; while [ $i -lt 10000 ]; do /bin/true; i=$((i+1)); done; /bin/echo storm-done > /dev/null'], { timeout: 120_000 });
    assert.equal(r.status, 0);
    await sleep(1500);
    storming = false;
    await watch;
    const samples = await agent.scrape();
    const recorded = sum(samples, 'kernscope_recorder_records_total', { kind: 'exec' });
    assert.ok(recorded >= 10_001, `${recorded} exec records`);
    assert.equal(sum(samples, 'kernscope_recorder_records_dropped_total'), 0);
    // A segment rotates before the record that would take it past its size.
    assert.ok(biggest <= cap, `the journal reached ${biggest} bytes (cap ${cap})`);
    assert.ok(sum(samples, 'kernscope_recorder_journal_bytes') <= cap);
    assert.equal(await agent.stop(), 0);
    const t = await show(j);
    assert.ok(t.entries.some((e) => e.k === 'exec' && e.args === '/bin/echo storm-done'), 'the storm\'s last exec is in the journal');
    assert.deepEqual([t.journal.corrupt, t.journal.torn], [0, 0]);
  } finally {
    await agent.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a disk that fills up is counted, the agent keeps serving, and recording resumes when there is room', async () => {
  const dir = tmpDir('ks-rec');
  const mnt = path.join(dir, 'small');
  fs.mkdirSync(mnt);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=512k', 'tmpfs', mnt]);
  const agent = await startAgent(`recorder: { path: ${mnt}/j, maxBytes: 1048576, segmentBytes: 65536, maxRecordsPerSecond: 1000000 }\nsecurity: { output: { stdout: false } }\n`);
  try {
    await sleep(1200);
    // Something else fills the disk.
    spawnSync('dd', ['if=/dev/zero', `of=${mnt}/fill`, 'bs=4k'], { stdio: 'ignore' });
    spawnSync('/bin/sh', ['-c', 'i=0; while [ $i -lt 3000 ]; do /bin/true; i=$((i+1)); done'], { timeout: 60_000 });
    assert.ok(await eventually(async () => sum(await agent.scrape(), 'kernscope_recorder_write_errors_total', { error: 'ENOSPC' }) > 0), 'ENOSPC counted');
    assert.match(await agent.scrapeText(), /kernscope_collector_up\{collector="process"\} 1/);
    fs.rmSync(`${mnt}/fill`);
    spawnSync('/bin/sh', ['-c', '/bin/echo after-the-fill > /dev/null']);
    await sleep(1500);
    assert.equal(await agent.stop(), 0);
    const t = await show(`${mnt}/j`);
    assert.ok(t.entries.some((e) => e.k === 'exec' && e.args === '/bin/echo after-the-fill'), 'records after the disk has room again');
    assert.ok(t.entries.some((e) => e.k === 'agent' && e.event === 'stop'));
  } finally {
    await agent.stop();
    spawnSync('umount', [mnt]);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
