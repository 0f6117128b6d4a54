// The kernel matrix: one agent, every collector, one exact count each. It
// runs on this machine in `npm test` and, unchanged, inside a VM on Debian
// 12's own 6.1 kernel (`npm run test:kernels`, scripts/vm.sh): the same
// objects must load there, and give the same values, through CO-RE and
// probing alone. One agent start only: under emulation a start takes a
// minute. KS_MATRIX_WITHOUT (features, comma-separated) runs it again with
// kernel.without set, every collector on its fallback hooks
// (test/kernels/fallbacks.test.ts).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from '../../src/paths.js';
import { eventually, isRoot, runCli, startAgent, sum, tmpDir, SLOW, type RunningAgent, type Sample } from '../helpers.js';
import { fixtureCopy, peerScript, startPeer, type Peer } from '../peers.js';

const inVm = !!process.env.KS_VM;
const without = (process.env.KS_MATRIX_WITHOUT ?? '').split(',').filter(Boolean);
const kernelYaml = without.length ? `kernel:\n  without: [${without.join(', ')}]\n` : '';
let agent: RunningAgent;
let dir: string;
let payment: string;
let alertsFile: string;
let target: ChildProcess;

before(async () => {
  assert.ok(isRoot, 'the agent needs root (CI runs as root)');
  dir = tmpDir('ks-matrix');
  payment = path.join(dir, 'payment');
  alertsFile = path.join(dir, 'alerts.jsonl');
  execFileSync('gcc', ['-O2', '-g', '-o', payment, path.join(ROOT, 'examples', 'payment', 'payment.c')]);
  // kill(2) aimed at this process is what the tracepoint probe counts.
  target = spawn('sleep', ['600'], { stdio: 'ignore' });
  const probes = fs.readFileSync(path.join(ROOT, 'examples', 'payment', 'kernscope.yaml'), 'utf8').replace('PAYMENT_BINARY', payment);
  agent = await startAgent(`${kernelYaml}collectIntervalSeconds: 0.5
${probes}
  - name: kills
    tracepoint: syscalls:sys_enter_kill
    args:
      target: { field: pid }
      sig: { field: sig }
    metrics:
      - name: ks_matrix_kills_total
        type: counter
        filter: { from: target, op: "==", value: ${target.pid} }
        label: { name: sig, from: sig }
security:
  output:
    stdout: false
    file: ${alertsFile}
`);
});

after(async () => {
  target?.kill('SIGKILL');
  if (agent) assert.equal(await agent.stop(), 0);
  fs.rmSync(dir, { recursive: true, force: true });
});

async function settle(check: (m: Sample[]) => boolean): Promise<Sample[]> {
  let m: Sample[] = [];
  await eventually(async () => check((m = await agent.scrape())), 10_000);
  return m;
}

test('every collector runs; doctor names kprobe and fentry where the kernel has them', async () => {
  for (const c of ['tcp', 'http', 'process', 'custom', 'resources']) assert.match(agent.stderr(), new RegExp(`collector ${c}: running`), c);
  const cfg = path.join(dir, 'doctor.yaml');
  fs.writeFileSync(cfg, kernelYaml);
  const r = await runCli(['doctor', '--json', '--no-measure', '--config', cfg], { timeoutMs: 20_000 * SLOW });
  assert.equal(r.code, 0, r.stderr);
  const rep = JSON.parse(r.stdout) as { kernel: string; features: Record<string, { ok: boolean; detail?: string }>; collectors: Array<{ collector: string; hooks: Array<{ event: string; kind: string | null }> }> };
  for (const f of ['btf', 'tracefs', 'raw_tp', 'tp_btf', 'uprobe', 'ring buffer'].filter((x) => !without.includes(x))) assert.equal(rep.features[f]!.ok, true, f);
  for (const f of without) {
    const shown = rep.features[f.replace('_', ' ')] ?? rep.features[f];
    assert.deepEqual(shown, { ok: false, detail: 'turned off by kernel.without' }, f);
  }
  // Each collector on the hook this kernel, less what is turned off, allows.
  const kinds = (c: string): string[] => [...new Set(rep.collectors.find((x) => x.collector === c)!.hooks.map((h) => h.kind ?? 'none'))].sort();
  const btf = !without.includes('tp_btf');
  assert.deepEqual(kinds('tcp'), [btf ? 'tp_btf' : 'raw_tp']);
  assert.deepEqual(kinds('process'), [btf ? 'tp_btf' : 'raw_tp']);
  const socket = rep.features['socket tracepoints']!.ok && btf;
  // HTTP with the socket tracepoints has no syscall hook at all.
  assert.deepEqual(kinds('http'), socket ? ['tp_btf', 'uprobe'] : ['tracepoint', 'uprobe']);
  for (const c of ['tcp', 'http', 'process']) assert.match(agent.stderr(), new RegExp(`collector ${c}: running \\(${c === 'http' ? (socket ? 'sock_recv_length=tp_btf' : 'sys_exit_accept4=tracepoint') : `[a-z_]+=${btf ? 'tp_btf' : 'raw_tp'}`}`), c);
  if (inVm) {
    // Debian's own kernel has both; this machine's has neither.
    assert.equal(rep.features.kprobe!.ok, true, rep.features.kprobe!.detail);
    assert.equal(rep.features.fentry!.ok, true, rep.features.fentry!.detail);
  } else {
    console.log(`# kprobe ${rep.features.kprobe!.ok ? 'present' : 'absent'} and fentry ${rep.features.fentry!.ok ? 'present' : 'absent'} on ${rep.kernel}: asserted in the VM only`);
  }
});

test('TCP: connections and bytes, both ends', async () => {
  const N = 3;
  const REQ = 1000;
  const RESP = 20000;
  const srv = peerScript('msrv');
  const cli = peerScript('mcli');
  const server = startPeer(srv.script, ['server', '127.0.0.1', String(RESP)]);
  let client: Peer | undefined;
  try {
    const port = (await server.line(/^\d+$/)).trim();
    client = startPeer(cli.script, ['client', '127.0.0.1', port, String(N), String(REQ)]);
    await client.line(/^done$/);
    const c = { service: cli.service, direction: 'outbound', port };
    const s = { service: srv.service, direction: 'inbound', port };
    const m = await settle((x) => sum(x, 'kernscope_tcp_connections_closed_total', c) === N && sum(x, 'kernscope_tcp_connections_closed_total', s) === N);
    assert.equal(sum(m, 'kernscope_tcp_connections_opened_total', c), N);
    assert.equal(sum(m, 'kernscope_tcp_sent_bytes_total', c), N * REQ);
    assert.equal(sum(m, 'kernscope_tcp_received_bytes_total', c), N * RESP);
    assert.equal(sum(m, 'kernscope_tcp_sent_bytes_total', s), N * RESP);
    assert.equal(sum(m, 'kernscope_tcp_received_bytes_total', s), N * REQ);
  } finally {
    await client?.end();
    await server.end();
    srv.cleanup();
    cli.cleanup();
  }
});

test('HTTP: server and client counts by status', async () => {
  const srv = fixtureCopy('http-server.mjs', 'mhttp');
  const server: Peer = startPeer(srv.script, []);
  try {
    const port = (await server.line(/^\d+$/)).trim();
    const get = (p: string): void => void execFileSync('curl', ['-s', '-o', '/dev/null', `http://127.0.0.1:${port}${p}`]);
    for (const p of ['/users/1', '/users/2', '/users/3', '/missing/9', '/missing/10']) get(p);
    const m = await settle((x) => sum(x, 'http_server_request_duration_seconds_count', { service_name: srv.service }) === 5);
    assert.equal(sum(m, 'http_server_request_duration_seconds_count', { service_name: srv.service, http_route: '/users/*', http_response_status_code: '200' }), 3);
    assert.equal(sum(m, 'http_server_request_duration_seconds_count', { service_name: srv.service, http_route: '/missing/*', http_response_status_code: '404' }), 2);
    const client = { service_name: 'curl', server_port: port };
    assert.equal(sum(m, 'http_client_request_duration_seconds_count', { ...client, http_response_status_code: '200' }), 3);
    assert.equal(sum(m, 'http_client_request_duration_seconds_count', { ...client, http_response_status_code: '404' }), 2);
  } finally {
    await server.end();
    srv.cleanup();
  }
});

test('security: an exec from a temporary location by a relative path, with its ancestry; a module load where the kernel has modules', async (t) => {
  const bin = path.join(dir, 'payload');
  fs.copyFileSync('/bin/true', bin);
  fs.chmodSync(bin, 0o755);
  // The kernel builds the path from dentries, across this kernel's mounts.
  const sh = spawn('/bin/sh', ['-c', `cd ${dir} && ./payload; exit 0`], { stdio: 'ignore' });
  await new Promise((r) => sh.once('exit', r));
  const mine = (): Array<{ rule: string; ancestry: string; process: { exe: string } }> =>
    (fs.existsSync(alertsFile) ? fs.readFileSync(alertsFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)) : []).filter(
      (a: { process: { exe: string } }) => a.process.exe === bin,
    );
  assert.ok(await eventually(async () => mine().length > 0, 10_000), 'no alert');
  const a = mine();
  assert.equal(a.length, 1);
  assert.equal(a[0]!.rule, 'exec-from-temporary-location');
  assert.match(a[0]!.ancestry, / -> sh -> payload$/);
  if (!fs.readFileSync('/sys/kernel/tracing/available_events', 'utf8').includes('syscalls:sys_enter_finit_module')) {
    t.diagnostic('no module support in this kernel: the module rule is not tried here');
    return;
  }
  const nr = process.arch === 'arm64' ? 273 : 313;
  // A bad fd: refused with EBADF, nothing is loaded.
  execFileSync('/usr/bin/python3', ['-c', `import ctypes;ctypes.CDLL(None).syscall(${nr},-1,b'',0)`]);
  const loads = (): Array<{ rule: string; syscall: string; process: { name: string } }> =>
    (fs.existsSync(alertsFile) ? fs.readFileSync(alertsFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)) : []).filter((x: { rule: string }) => x.rule === 'kernel-module-load');
  assert.ok(await eventually(async () => loads().length > 0, 10_000), 'no module alert');
  assert.deepEqual(loads().map((x) => [x.process.name, x.syscall]), [['python3', 'finit_module']]);
});

test('custom probes: a uprobe counter and histogram, and a tracepoint counter', async () => {
  const p = startPeer(payment, [], undefined, true);
  try {
    await p.line(/^ready$/);
    const amounts = [50, 150, 1500, 999, 2000];
    for (const a of amounts) {
      p.send(`${a} 1\n`);
      await p.line(/^[02]$/);
    }
    for (let i = 0; i < 4; i++) process.kill(target.pid!, 0);
    process.kill(target.pid!, 'SIGCONT');
    const m = await settle(
      (x) => sum(x, 'payment_amount_dollars_count') === amounts.length && sum(x, 'ks_matrix_kills_total') === 5,
    );
    assert.equal(sum(m, 'payments_total', { result: 'ok' }), 3);
    assert.equal(sum(m, 'payments_total', { result: 'declined' }), 2);
    assert.equal(sum(m, 'payment_amount_dollars_bucket', { le: '100' }), 1);
    assert.equal(sum(m, 'payment_amount_dollars_bucket', { le: '1000' }), 3);
    assert.equal(sum(m, 'ks_matrix_kills_total', { sig: '0' }), 4);
    assert.equal(sum(m, 'ks_matrix_kills_total', { sig: '18' }), 1);
  } finally {
    await p.end();
  }
});
