// What each service costs the node, checked against truths known from
// outside: CPU a child burns (and /proc's own figure), memory it holds and
// frees, bytes dd writes, a memory-limited cgroup's limit and its OOM kill.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { eventually, exited, isRoot, startAgent, sum, tmpDir, type RunningAgent, type Sample } from '../helpers.js';
import { fixtureCopy, startPeer, type Peer } from '../peers.js';
import { readJournal } from '../../src/recorder/read.js';

let agent: RunningAgent;
const journal = tmpDir('ks-res-journal');
before(async () => {
  assert.ok(isRoot, 'the agent needs root (CI runs as root)');
  agent = await startAgent(`collectIntervalSeconds: 0.5\nrecorder: { path: ${journal} }\n`);
});
after(async () => {
  assert.equal(await agent.stop(), 0);
  fs.rmSync(journal, { recursive: true, force: true });
});

const TICK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

function python(): { peer: Peer; service: string; cleanup: () => void } {
  const f = fixtureCopy('resources.py', 'res');
  return { peer: startPeer('/usr/bin/python3', [f.script], undefined, true), service: f.service, cleanup: f.cleanup };
}

/** A scrape once the agent has walked /proc after `since` (its walks are a second apart at most). */
async function freshScrape(check: (m: Sample[]) => boolean, ms = 10_000): Promise<Sample[]> {
  let m: Sample[] = [];
  assert.ok(await eventually(async () => check((m = await agent.scrape())), ms), 'the agent never showed it');
  return m;
}

function procCpuSeconds(pid: number): number {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').slice(fs.readFileSync(`/proc/${pid}/stat`, 'utf8').lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / TICK;
}

test('CPU a child burns: at least that, within a tick of /proc', async () => {
  const { peer, service, cleanup } = python();
  try {
    peer.send('burn 300\n');
    const burnt = Number((await peer.line(/^burnt/)).split(' ')[1]) / 1000;
    assert.ok(burnt >= 0.3);
    const truth = procCpuSeconds(peer.child.pid!); // idle from here on: it waits on stdin
    const m = await freshScrape((s) => sum(s, 'process_cpu_time_seconds_total', { service_name: service }) >= truth - 1e-9);
    const shown = sum(m, 'process_cpu_time_seconds_total', { service_name: service });
    // /proc counts whole ticks, rounded down: what the child burnt, less at most one.
    assert.ok(shown >= burnt - 1 / TICK - 1e-9, `shown ${shown}, burnt ${burnt}`);
    assert.ok(Math.abs(shown - truth) <= 1 / TICK + 1e-9, `shown ${shown}, /proc ${truth}`);
    assert.ok(sum(m, 'process_cpu_time_seconds_total', { service_name: service, cpu_mode: 'user' }) > 0);
    assert.equal(sum(m, 'kernscope_service_processes', { service_name: service }), 1);
    assert.ok(sum(m, 'process_thread_count', { service_name: service }) >= 1);
  } finally {
    await peer.end();
    cleanup();
  }
});

test('200 MiB held shows as in use, and less once freed', async () => {
  const { peer, service, cleanup } = python();
  const MiB = 1 << 20;
  try {
    peer.send('alloc 200\n');
    await peer.line(/^allocated/);
    await freshScrape((s) => sum(s, 'process_memory_usage_bytes', { service_name: service }) >= 200 * MiB);
    peer.send('free\n');
    await peer.line(/^freed/);
    const m = await freshScrape((s) => {
      const v = sum(s, 'process_memory_usage_bytes', { service_name: service });
      return v > 0 && v < 100 * MiB;
    });
    assert.ok(sum(m, 'process_memory_usage_bytes', { service_name: service }) > 1 * MiB); // python itself
  } finally {
    await peer.end();
    cleanup();
  }
});

test('dd of 64 MiB to a file shows 64 MiB written', async () => {
  // dd reads a FIFO the test keeps open, so it is still running when scraped.
  const dir = tmpDir('ks-dd');
  const fifo = path.join(dir, 'in');
  spawnSync('mkfifo', [fifo]);
  const before = await agent.scrape();
  const dd = spawn('dd', [`if=${fifo}`, `of=${path.join(dir, 'out')}`, 'bs=1M'], { stdio: 'ignore' });
  const w = fs.openSync(fifo, 'w');
  try {
    const chunk = Buffer.alloc(1 << 20, 7);
    for (let i = 0; i < 64; i++) fs.writeSync(w, chunk);
    const written = (s: Sample[]): number => sum(s, 'process_disk_io_bytes_total', { service_name: 'dd', disk_io_direction: 'write' }) - sum(before, 'process_disk_io_bytes_total', { service_name: 'dd', disk_io_direction: 'write' });
    const m = await freshScrape((s) => written(s) >= 64 << 20);
    assert.ok(written(m) < 65 << 20, `dd wrote ${written(m)} bytes`);
  } finally {
    fs.closeSync(w);
    await exited(dd);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a process shorter than a walk is counted from its exit: dd and a CPU burst', async () => {
  const dir = tmpDir('ks-dd');
  const before = await agent.scrape();
  const written = (s: Sample[]): number => sum(s, 'process_disk_io_bytes_total', { service_name: 'dd', disk_io_direction: 'write' }) - sum(before, 'process_disk_io_bytes_total', { service_name: 'dd', disk_io_direction: 'write' });
  const dd = spawnSync('dd', ['if=/dev/zero', `of=${path.join(dir, 'out')}`, 'bs=1M', 'count=32'], { stdio: 'ignore' });
  assert.equal(dd.status, 0);
  const f = fixtureCopy('resources.py', 'brief');
  const py = spawnSync('/usr/bin/python3', [f.script], { input: 'burn 200\n', encoding: 'utf8' });
  const burnt = Number(/burnt (\d+)/.exec(py.stdout)?.[1]) / 1000;
  assert.ok(burnt >= 0.2, py.stdout);
  try {
    const m = await freshScrape((s) => written(s) >= 32 << 20 && sum(s, 'process_cpu_time_seconds_total', { service_name: f.service }) >= 0.2);
    assert.ok(written(m) < 33 << 20, `dd wrote ${written(m)} bytes`);
    // All of its CPU, and not much more than it reported (start-up and exit).
    assert.ok(sum(m, 'process_cpu_time_seconds_total', { service_name: f.service }) < burnt + 0.5);
  } finally {
    f.cleanup();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** The memory controller: the v2 hierarchy when it has it, else v1's. */
function memoryRoot(): { root: string; v2: boolean } | undefined {
  for (const v2 of ['/sys/fs/cgroup', '/sys/fs/cgroup/unified']) {
    try {
      if (fs.readFileSync(`${v2}/cgroup.controllers`, 'utf8').split(/\s+/).includes('memory')) return { root: v2, v2: true };
    } catch {
      // not a v2 root
    }
  }
  return fs.existsSync('/sys/fs/cgroup/memory/memory.limit_in_bytes') ? { root: '/sys/fs/cgroup/memory', v2: false } : undefined;
}

test('a memory-limited cgroup shows its limit and its OOM kill', async (t) => {
  const mem = memoryRoot();
  if (!mem) {
    t.skip('no memory cgroup controller on this kernel');
    return;
  }
  const name = `/ks-oom-${process.pid}-${Math.floor(Math.random() * 1e6)}`;
  const dir = mem.root + name;
  fs.mkdirSync(dir);
  const LIMIT = 64 << 20;
  const { peer, service, cleanup } = python();
  try {
    fs.writeFileSync(`${dir}/${mem.v2 ? 'memory.max' : 'memory.limit_in_bytes'}`, String(LIMIT));
    if (mem.v2) fs.writeFileSync(`${dir}/memory.swap.max`, '0');
    else if (fs.existsSync(`${dir}/memory.swappiness`)) fs.writeFileSync(`${dir}/memory.swappiness`, '0');
    fs.writeFileSync(`${dir}/cgroup.procs`, String(peer.child.pid));
    const labels = { cgroup: name, service_name: service };
    let m = await freshScrape((s) => sum(s, 'kernscope_cgroup_memory_limit_bytes', labels) === LIMIT);
    // Usage is there (v1 leaves a moved process's old pages where they were charged: it may be 0).
    assert.ok(m.some((x) => x.name === 'kernscope_cgroup_memory_usage_bytes' && x.labels.cgroup === name));
    assert.equal(sum(m, 'kernscope_cgroup_oom_kills_total', labels), 0);
    peer.send('alloc 200\n');
    await exited(peer.child);
    assert.equal(peer.child.signalCode, 'SIGKILL');
    m = await freshScrape((s) => sum(s, 'kernscope_cgroup_oom_kills_total', labels) >= 1);
    assert.equal(sum(m, 'kernscope_cgroup_oom_kills_total', labels), 1);
    // The flight recorder has the kill, synced at once (a severe record).
    const kills = readJournal(journal).records.filter((r) => r.k === 'oom_kill' && r.victim === peer.child.pid);
    assert.equal(kills.length, 1);
    assert.equal(kills[0]!.victim_comm, 'python3');
    assert.ok(Number(kills[0]!.anon_rss_kb) > 32 << 10, `anon_rss_kb ${kills[0]!.anon_rss_kb}`);
  } finally {
    await peer.end();
    cleanup();
    for (let i = 0; i < 50 && fs.existsSync(dir); i++) {
      try {
        fs.rmdirSync(dir);
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
});

test('10,000 sleeping processes: every walk completes, and says what it cost', async (t) => {
  const f = fixtureCopy('sleepers.py', 'crowd');
  const crowd = startPeer('/usr/bin/python3', [f.script, '10000'], undefined, true);
  try {
    await crowd.line(/^ready 10000/);
    // A walk that met the crowd still forking took ~1 s, so the next one is
    // spaced up to a minute later (2 % of a core): wait for it.
    const m = await freshScrape((s) => sum(s, 'kernscope_service_processes', { service_name: 'sleep' }) >= 10000, 150_000);
    const seconds = sum(m, 'kernscope_resources_collection_seconds');
    const files = sum(m, 'kernscope_resources_collection_files');
    assert.ok(seconds > 0);
    assert.ok(files >= 3 * 10000, `files ${files}`); // stat, io, schedstat of each
    assert.ok(sum(m, 'process_thread_count', { service_name: 'sleep' }) >= 10000);
    t.diagnostic(`a walk over ${files} files took ${seconds.toFixed(3)} s`);
  } finally {
    await crowd.end();
    f.cleanup();
  }
});
