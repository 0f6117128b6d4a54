import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from '../../src/paths.js';
import { eventually, isRoot, startAgent, sum, tmpDir, type Sample } from '../helpers.js';

// Kernel tracepoints as custom metrics: the shipped examples, against real
// block devices and the real OOM killer.

const QUIET = `collectors: { tcp: { enabled: false }, http: { enabled: false }, process: { enabled: false } }
security: { enabled: false }
`;
let dir: string;

before(() => {
  assert.ok(isRoot, 'tracepoints, loop devices and cgroups need root (CI runs as root)');
  dir = tmpDir('ks-custom-kernel');
});

after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** The example's config with every metric filtered to one device. */
function blockConfig(devT: number): string {
  const text = fs.readFileSync(path.join(ROOT, 'examples', 'block-io', 'kernscope.yaml'), 'utf8');
  return QUIET + text.replace(/^(\s+)type: (histogram|counter)$/gm, `$1type: $2\n$1filter: { from: dev, op: "==", value: ${devT} }`);
}

test('block I/O example: one latency and the bytes per request of a loop device, matched issue to completion', async () => {
  const img = path.join(dir, 'disk.img');
  fs.writeFileSync(img, '');
  fs.truncateSync(img, 16 << 20);
  const loop = execFileSync('losetup', ['-f', '--show', img], { encoding: 'utf8' }).trim();
  try {
    const st = fs.statSync(loop);
    const major = Number(BigInt(st.rdev) >> 8n) & 0xfff;
    const minor = st.rdev & 0xff;
    const agent = await startAgent(blockConfig((major << 20) | minor));
    try {
      // Direct, synchronous 4 KiB writes: one request each, never merged.
      execFileSync('dd', ['if=/dev/zero', `of=${loop}`, 'bs=4096', 'count=64', 'oflag=direct,sync'], { stdio: 'pipe' });
      execFileSync('dd', [`if=${loop}`, 'of=/dev/null', 'bs=4096', 'count=16', 'iflag=direct'], { stdio: 'pipe' });
      const dev = { device: `${major}:${minor}` };
      let m: Sample[] = [];
      await eventually(async () => sum((m = await agent.scrape()), 'block_io_duration_seconds_count', dev) >= 80, 8000);
      const writes = m.filter((s) => s.name === 'block_io_duration_seconds_count' && s.labels.op?.startsWith('W'));
      const reads = m.filter((s) => s.name === 'block_io_duration_seconds_count' && s.labels.op?.startsWith('R'));
      assert.equal(writes.reduce((a, s) => a + s.value, 0), 64, JSON.stringify(writes));
      assert.equal(reads.reduce((a, s) => a + s.value, 0), 16, JSON.stringify(reads));
      assert.equal(sum(m, 'block_io_bytes_total', dev), 80 * 4096);
      assert.equal(sum(m, 'block_io_bytes_total', { ...dev, op: 'WS' }), 64 * 4096);
      assert.ok(m.every((s) => !s.name.startsWith('block_io') || s.labels.device === dev.device), 'only the loop device passes the filter');
      const secs = sum(m, 'block_io_duration_seconds_sum', dev);
      assert.ok(secs > 0 && secs < 80, `durations add up to ${secs} s`);
      // Each request is matched once: every write and read has its +Inf bucket; flushes
      // (op F..., from the writes' sync) carry no bytes.
      const inf = m.filter((s) => s.name === 'block_io_duration_seconds_bucket' && s.labels.le === '+Inf' && /^[WR]/.test(s.labels.op ?? ''));
      assert.equal(inf.reduce((a, s) => a + s.value, 0), 80);
      const flushBytes = m.filter((s) => s.name === 'block_io_bytes_total' && s.labels.op?.startsWith('F'));
      assert.equal(flushBytes.reduce((a, s) => a + s.value, 0), 0);
    } finally {
      await agent.stop();
    }
  } finally {
    execFileSync('losetup', ['-d', loop]);
  }
});

test('OOM example: each process the OOM killer ends is counted once, by command', async () => {
  const hog = path.join(dir, 'ks-hog');
  execFileSync('gcc', ['-O1', '-o', hog, path.join(ROOT, 'test', 'fixtures', 'hog.c')]);
  // The memory controller is on cgroup v2 or, on hybrid hosts like this one, v1.
  const v2 = ['/sys/fs/cgroup', '/sys/fs/cgroup/unified'].find((d) => {
    try {
      return fs.readFileSync(`${d}/cgroup.controllers`, 'utf8').split(/\s+/).includes('memory');
    } catch {
      return false;
    }
  });
  const cg = v2 ? `${v2}/ks-oom-${process.pid}` : `/sys/fs/cgroup/memory/ks-oom-${process.pid}`;
  fs.mkdirSync(cg);
  try {
    fs.writeFileSync(`${cg}/${v2 ? 'memory.max' : 'memory.limit_in_bytes'}`, String(16 << 20));
    for (const f of ['memory.swap.max', 'memory.memsw.limit_in_bytes']) {
      if (fs.existsSync(`${cg}/${f}`)) fs.writeFileSync(`${cg}/${f}`, f.endsWith('max') ? '0' : String(16 << 20));
    }
    const agent = await startAgent(QUIET + fs.readFileSync(path.join(ROOT, 'examples', 'oom', 'kernscope.yaml'), 'utf8'));
    try {
      for (let i = 0; i < 3; i++) {
        // The shell joins the cgroup, then becomes the hog.
        const child = spawn('sh', ['-c', `echo $$ > ${cg}/cgroup.procs && exec ${hog}`], { stdio: 'ignore' });
        const signal = await new Promise<string | null>((resolve) => child.on('exit', (_c, s) => resolve(s)));
        assert.equal(signal, 'SIGKILL');
      }
      let m: Sample[] = [];
      await eventually(async () => sum((m = await agent.scrape()), 'oom_kills_total') >= 3, 5000);
      assert.equal(sum(m, 'oom_kills_total', { comm: 'ks-hog' }), 3);
      assert.equal(sum(m, 'oom_kills_total'), 3);
      assert.equal(sum(m, 'oom_victim_anon_rss_kilobytes_count'), 3);
      // Each held about the cgroup's 16 MiB when chosen.
      const kb = sum(m, 'oom_victim_anon_rss_kilobytes_sum') / 3;
      assert.ok(kb > 8 * 1024 && kb <= 16 * 1024, `${kb} kB`);
    } finally {
      await agent.stop();
    }
  } finally {
    fs.rmdirSync(cg);
  }
});
