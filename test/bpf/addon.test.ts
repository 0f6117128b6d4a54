import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { addon } from '../../src/bpf/addon.js';
import { BpfObject, MapUpdate } from '../../src/bpf/object.js';
import { ProgramStatsSampler } from '../../src/bpf/stats.js';
import { ensureTracefs } from '../../src/capabilities/features.js';
import { HOOK_TARGETS_PATH, ROOT, bpfObjectPath } from '../../src/paths.js';
import { hookTargets } from '../../src/capabilities/hook-cost.js';
import { eventually, isRoot } from '../helpers.js';

const SELFTEST = bpfObjectPath('selftest.bpf.o');
const ALL = ['selftest_tp', 'selftest_btf', 'selftest_raw', 'selftest_uprobe', 'selftest_uretprobe', 'selftest_egress', 'selftest_sockops', 'selftest_perf', 'selftest_usdt'];
const only = (...keep: string[]): string[] => ALL.filter((p) => !keep.includes(p));

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

function hits(obj: BpfObject, kind: number): number {
  const v = obj.map('hits').lookup(u32(kind));
  return v ? Number(v.readBigUInt64LE(0)) : 0;
}

before(() => {
  assert.ok(isRoot, 'BPF tests run as root (CI runs as root)');
  assert.ok(ensureTracefs().ok, 'tracefs must be mountable');
});

test('rodata, three tracepoint kinds, maps and the ring buffer agree exactly', async () => {
  const N = 1000;
  const obj = BpfObject.load(SELFTEST, {
    rodata: { target_tgid: process.pid, cookie: 0xdeadbeefn },
    skipPrograms: only('selftest_tp', 'selftest_btf', 'selftest_raw'),
  });
  try {
    const seen: Array<{ tgid: number; seq: number; cookie: bigint }> = [];
    const rb = obj.ringBuffer('events', (r) => seen.push({ tgid: r.readUInt32LE(0), seq: r.readUInt32LE(4), cookie: r.readBigUInt64LE(8) }));
    obj.attach('selftest_tp', { kind: 'tracepoint', category: 'syscalls', name: 'sys_enter_getppid' });
    obj.attach('selftest_btf', { kind: 'tp_btf' });
    obj.attach('selftest_raw', { kind: 'raw_tp', name: 'sys_enter' });
    hookTargets().benchCall('getppid', N);
    assert.equal(hits(obj, 0), N, 'syscall tracepoint');
    assert.equal(hits(obj, 1), N, 'tp_btf');
    assert.equal(hits(obj, 2), N, 'raw_tp');

    // Per-CPU map: the sum over CPUs is exact.
    const pc = obj.map('percpu_hits');
    assert.ok(pc.percpu);
    const entries = pc.entries();
    assert.equal(entries.length, 3);
    for (const e of entries) assert.equal(pc.sumPerCpu(e.value).readBigUInt64LE(0), BigInt(N));

    // 3N records overflow the 64 KiB ring while this thread is busy in the
    // loop above: what did not fit is counted, so delivered + dropped is exact.
    const drops = (): number => Number(obj.map('drops').sumPerCpu(obj.map('drops').lookup(u32(0))!).readBigUInt64LE(0));
    assert.ok(await eventually(async () => seen.length + drops() === 3 * N, 5000, 10), `ring buffer gave ${seen.length}, dropped ${drops()}`);
    assert.ok(drops() > 0, 'the ring overflowed');
    assert.ok(seen.every((e) => e.tgid === process.pid && e.cookie === 0xdeadbeefn));
    assert.equal(new Set(seen.map((e) => e.seq)).size, seen.length);

    // A burst that fits arrives whole, in order, in one or more batches.
    const before = seen.length;
    hookTargets().benchCall('getppid', 100);
    assert.ok(await eventually(async () => seen.length === before + 300, 5000, 10), `got ${seen.length - before} of 300`);
    const tail = seen.slice(before).map((e) => e.seq);
    assert.deepEqual(tail, [...tail].sort((a, b) => a - b));
    assert.equal(drops(), 3 * N - before);
    rb.close();
  } finally {
    obj.close();
  }
});

test('map update, lookup, delete and dump', () => {
  const obj = BpfObject.load(SELFTEST, { skipPrograms: ALL, maxEntries: { hits: 100 } });
  try {
    const m = obj.map('hits');
    assert.equal(m.info.maxEntries, 100);
    const v = (n: number): Buffer => {
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(BigInt(n));
      return b;
    };
    for (let i = 10; i < 60; i++) m.update(u32(i), v(i * 3));
    assert.equal(m.lookup(u32(11))!.readBigUInt64LE(0), 33n);
    assert.equal(m.lookup(u32(9)), null);
    assert.throws(() => m.update(u32(11), v(1), MapUpdate.NOEXIST), { code: 'ERR_KERNSCOPE_BPF', errno: 17 });
    assert.equal(m.delete(u32(11)), true);
    assert.equal(m.delete(u32(11)), false);
    const all = m.entries();
    assert.equal(all.length, 49);
    for (const e of all) assert.equal(e.value.readBigUInt64LE(0), BigInt(e.key.readUInt32LE(0) * 3));
    // The array of drops has all its slots.
    assert.equal(obj.map('drops').entries().length, 16);
  } finally {
    obj.close();
  }
});

test('uprobe and uretprobe by symbol and by offset, for one pid', () => {
  const N = 500;
  const obj = BpfObject.load(SELFTEST, {
    rodata: { target_tgid: process.pid },
    skipPrograms: only('selftest_uprobe', 'selftest_uretprobe'),
  });
  try {
    obj.attach('selftest_uprobe', { kind: 'uprobe', binary: HOOK_TARGETS_PATH, symbol: 'kernscope_probe_emulated', pid: process.pid });
    obj.attach('selftest_uretprobe', { kind: 'uretprobe', binary: HOOK_TARGETS_PATH, offset: fileOffset(HOOK_TARGETS_PATH, 'kernscope_probe_emulated') });
    hookTargets().benchCall('emulated', N);
    hookTargets().benchCall('stepped', 7); // another function: not counted
    assert.equal(hits(obj, 3), N);
    assert.equal(hits(obj, 4), N);
  } finally {
    obj.close();
  }
});

test('run-time statistics count runs only while enabled', async () => {
  const N = 300;
  const alwaysOn = fs.readFileSync('/proc/sys/kernel/bpf_stats_enabled', 'utf8').trim() === '1';
  const obj = BpfObject.load(SELFTEST, { rodata: { target_tgid: process.pid }, skipPrograms: only('selftest_uprobe') });
  try {
    obj.attach('selftest_uprobe', { kind: 'uprobe', binary: HOOK_TARGETS_PATH, symbol: 'kernscope_probe_emulated', pid: process.pid });
    const prog = obj.program('selftest_uprobe');
    const sampler = new ProgramStatsSampler({ intervalMs: 60_000, windowMs: 1000 });
    sampler.add([prog]);
    const fd = addon().enableStats();
    const before = addon().progInfo(prog.info.fd);
    hookTargets().benchCall('emulated', N);
    const during = addon().progInfo(prog.info.fd);
    addon().closeFd(fd);
    hookTargets().benchCall('emulated', N);
    const afterOff = addon().progInfo(prog.info.fd);
    assert.equal(during.runCount - before.runCount, N);
    assert.ok(during.runTimeNs > before.runTimeNs);
    assert.equal(afterOff.runCount - during.runCount, alwaysOn ? N : 0);

    // The sampler's window sees exactly the runs made inside it.
    const p = sampler.sampleOnce(100);
    hookTargets().benchCall('emulated', N);
    await p;
    const [t] = sampler.snapshot();
    assert.equal(t!.runs, N);
    assert.ok(t!.lastNsPerRun > 0);
    assert.ok(sampler.sampledSeconds >= 0.1);
  } finally {
    obj.close();
  }
});

test('cgroup_skb and sockops programs see exactly their cgroup', async () => {
  const cgroot = fs.readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' ')).find((m) => m[2] === 'cgroup2')?.[1];
  assert.ok(cgroot, 'cgroup v2 is mounted');
  const cg = path.join(cgroot, `kernscope-test-${process.pid}`);
  fs.mkdirSync(cg);
  const obj = BpfObject.load(SELFTEST, { skipPrograms: only('selftest_egress', 'selftest_sockops') });
  const udp = dgram.createSocket('udp4');
  const tcp = net.createServer((s) => s.destroy());
  try {
    await new Promise<void>((r) => udp.bind(0, '127.0.0.1', () => r()));
    await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', () => r()));
    const udpPort = (udp.address() as net.AddressInfo).port;
    const tcpPort = (tcp.address() as net.AddressInfo).port;
    let got = 0;
    udp.on('message', () => got++);

    const inCgroup = (script: string): Promise<number | null> =>
      new Promise((resolve) => {
        // The shell joins the cgroup, then becomes node: every packet is the child's.
        const c = spawn('sh', ['-c', `echo $$ > ${cg}/cgroup.procs && exec "${process.execPath}" -e '${script}'`], { stdio: 'inherit' });
        c.once('exit', resolve);
      });

    const egress = obj.attach('selftest_egress', { kind: 'cgroup', path: cg });
    const code = await inCgroup(
      `const s=require("dgram").createSocket("udp4");let n=0;const f=()=>s.send("x",${udpPort},"127.0.0.1",()=>{if(++n<25)f();else s.close()});f();`,
    );
    assert.equal(code, 0);
    assert.ok(await eventually(async () => got === 25, 3000, 10));
    assert.equal(hits(obj, 5), 25);
    egress.detach();

    obj.attach('selftest_sockops', { kind: 'cgroup', path: cg });
    const code2 = await inCgroup(
      `const net=require("net");let n=0;const f=()=>{const c=net.connect(${tcpPort},"127.0.0.1");c.on("close",()=>{if(++n<4)f()});c.on("error",()=>{})};f();`,
    );
    assert.equal(code2, 0);
    assert.equal(hits(obj, 6), 4);
    assert.equal(hits(obj, 5), 25, 'egress detached: no more counts');
  } finally {
    obj.close();
    udp.close();
    tcp.close();
    fs.rmdirSync(cg);
  }
});

test('perf_event programs run on a software clock', async () => {
  const obj = BpfObject.load(SELFTEST, { skipPrograms: only('selftest_perf') });
  try {
    obj.attach('selftest_perf', { kind: 'perf_event', cpu: 0, frequency: 1000 });
    assert.ok(await eventually(async () => hits(obj, 7) > 0, 3000, 20));
  } finally {
    obj.close();
  }
});

test('USDT probes of a running process, by provider and name', async () => {
  const dir = fs.mkdtempSync('/tmp/ks-usdt-');
  const bin = path.join(dir, 'usdt-target');
  execFileSync('gcc', ['-O2', '-o', bin, path.join(ROOT, 'test', 'fixtures', 'usdt-target.c')]);
  const N = 17;
  const child = spawn(bin, [String(N)], { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const obj = BpfObject.load(SELFTEST, { skipPrograms: only('selftest_usdt') });
  try {
    assert.ok(await eventually(async () => out.includes('ready'), 5000, 10));
    obj.attach('selftest_usdt', { kind: 'usdt', binary: bin, provider: 'kernscope', name: 'tick', pid: child.pid! });
    child.stdin!.write('go\n');
    child.stdin!.write('go\n');
    assert.ok(await eventually(async () => out.split('fired').length === 3, 5000, 10));
    assert.equal(hits(obj, 8), 2 * N);
    assert.equal(hits(obj, 9), 2 * ((N * (N + 1)) / 2), 'the argument is read');
    assert.throws(() => obj.attach('selftest_usdt', { kind: 'usdt', binary: bin, provider: 'kernscope', name: 'nope' }), { code: 'ERR_KERNSCOPE_BPF' });
  } finally {
    obj.close();
    child.stdin!.end();
    await new Promise((r) => child.once('exit', r));
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('errors carry errno and libbpf output', () => {
  assert.throws(() => BpfObject.load('/nonexistent.bpf.o'), (e: Error & { errno?: number }) => {
    assert.equal((e as { code?: string }).code, 'ERR_KERNSCOPE_BPF');
    assert.equal(e.errno, 2);
    assert.match(e.message, /open \/nonexistent\.bpf\.o: No such file or directory/);
    return true;
  });
  assert.throws(() => BpfObject.load(bpfObjectPath('selftest_reject.bpf.o')), (e: Error & { errno?: number; log?: string }) => {
    assert.equal(e.errno, 13);
    assert.match(e.message, /^load selftest_reject: Permission denied/);
    // The verifier's own words, from libbpf's log of the failed load.
    assert.match(e.log!, /BEGIN PROG LOAD LOG/);
    assert.match(e.log!, /invalid mem access 'map_value_or_null'/);
    return true;
  });
  assert.throws(() => BpfObject.load(SELFTEST, { rodata: { nope: 1 }, skipPrograms: ALL }), /no read-only variable "nope"/);
  const obj = BpfObject.load(SELFTEST, { skipPrograms: only('selftest_tp') });
  try {
    assert.throws(() => obj.attach('selftest_tp', { kind: 'tracepoint', category: 'syscalls', name: 'sys_enter_nonexistent' }), {
      code: 'ERR_KERNSCOPE_BPF',
      errno: 2,
    });
    assert.throws(() => obj.attach('nope', { kind: 'auto' }), { errno: 2, message: /no such program/ });
    assert.throws(() => obj.attach('selftest_tp', { kind: 'bogus' } as never), { errno: 22, message: /unknown kind bogus/ });
  } finally {
    obj.close();
  }
  assert.throws(() => addon().objectInfo(999), { errno: 9 });
});

/** File offset of a symbol in an ELF shared object, from readelf's own tables. */
function fileOffset(file: string, symbol: string): number {
  const syms = execFileSync('readelf', ['-Ws', file], { encoding: 'utf8' });
  const line = syms.split('\n').find((l) => l.trim().endsWith(` ${symbol}`));
  assert.ok(line, `${symbol} in ${file}`);
  const vaddr = parseInt(line.trim().split(/\s+/)[1]!, 16);
  const phdrs = execFileSync('readelf', ['-lW', file], { encoding: 'utf8' });
  for (const l of phdrs.split('\n')) {
    const c = l.trim().split(/\s+/);
    if (c[0] !== 'LOAD') continue;
    const [off, va, , , memsz] = [1, 2, 3, 4, 5].map((i) => parseInt(c[i]!, 16));
    if (vaddr >= va! && vaddr < va! + memsz!) return vaddr - va! + off!;
  }
  throw new Error(`no LOAD segment holds ${symbol}`);
}
