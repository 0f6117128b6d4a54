// Least privilege: the agent as root with every capability but those it
// names taken away (setpriv's bounding set, as systemd's
// CapabilityBoundingSet and the DaemonSet's drop: [ALL] do). TCP, HTTP,
// security with a kill action, what each service costs and the recorder
// all work with CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE and
// CAP_DAC_READ_SEARCH; doctor says what CAP_SYS_ADMIN would add.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { eventually, isRoot, runCli, startAgent, sum, tmpDir, type RunningAgent } from '../helpers.js';
import { fixtureCopy, peerScript, startPeer } from '../peers.js';

const CAPS = ['bpf', 'perfmon', 'sys_ptrace', 'dac_read_search'];
const SETPRIV = ['setpriv', `--bounding-set=-all,${CAPS.map((c) => `+${c}`).join(',')}`, '--inh-caps=-all', '--'];
// CapEff bits: DAC_READ_SEARCH 2, SYS_PTRACE 19, PERFMON 38, BPF 39.
const CAP_EFF = ((1n << 2n) | (1n << 19n) | (1n << 38n) | (1n << 39n)).toString(16).padStart(16, '0');
let agent: RunningAgent;
let dir: string;
let alertsFile: string;

before(async () => {
  assert.ok(isRoot, 'setpriv narrows root (CI runs as root)');
  dir = tmpDir('ks-caps');
  alertsFile = path.join(dir, 'alerts.jsonl');
  const rules = path.join(dir, 'rules.yaml');
  fs.writeFileSync(rules, 'rules:\n  - name: kill-caps-test\n    severity: critical\n    match: { name: [ks-caps-touch] }\n    actions: [kill]\n');
  agent = await startAgent(`collectIntervalSeconds: 0.5\nsecurity:\n  rules: [${rules}]\n  output:\n    stdout: false\n    file: ${alertsFile}\n`, [], SETPRIV);
});

after(async () => {
  if (agent) assert.equal(await agent.stop(), 0);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('the agent holds exactly the four capabilities, and every collector that needs no more runs', async () => {
  const status = fs.readFileSync(`/proc/${agent.child.pid}/status`, 'utf8');
  assert.equal(/^CapEff:\s*(\w+)$/m.exec(status)?.[1], CAP_EFF);
  assert.equal(/^CapBnd:\s*(\w+)$/m.exec(status)?.[1], CAP_EFF);
  for (const c of ['tcp', 'http', 'process', 'resources', 'recorder']) assert.match(agent.stderr(), new RegExp(`collector ${c}: running`), c);
  // Uprobes want CAP_SYS_ADMIN here: TLS is left out, and said so.
  assert.match(agent.stderr(), /SSL_read\/SSL_write=none \(attach probe_uprobe \(uprobe\): Permission denied\)/);
  const d = await runCli(['doctor', '--no-measure'], { prefix: SETPRIV });
  assert.equal(d.code, 0, d.stderr);
  assert.match(d.stdout, /^ {2}CAP_SYS_ADMIN +NO +uprobes \(HTTP over TLS, custom uprobes and USDT\)/m);
  for (const c of ['CAP_BPF', 'CAP_PERFMON', 'CAP_SYS_PTRACE', 'CAP_DAC_READ_SEARCH']) assert.match(d.stdout, new RegExp(`^  ${c} +yes `, 'm'), c);
  assert.match(d.stdout, /^ {2}tcp: will run$/m);
  assert.match(d.stdout, /^ {4}needs CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN \(MISSING\)$/m);
});

test('TCP and HTTP counts are exact', async () => {
  const srv = fixtureCopy('http-server.mjs', 'capshttp');
  const server = startPeer(srv.script, []);
  try {
    const port = (await server.line(/^\d+$/)).trim();
    for (const p of ['/users/1', '/users/2', '/missing/3']) execFileSync('curl', ['-s', '-o', '/dev/null', `http://127.0.0.1:${port}${p}`]);
    let m = await agent.scrape();
    assert.ok(await eventually(async () => sum((m = await agent.scrape()), 'http_server_request_duration_seconds_count', { service_name: srv.service }) === 3, 10_000));
    assert.equal(sum(m, 'http_server_request_duration_seconds_count', { service_name: srv.service, http_route: '/users/*', http_response_status_code: '200' }), 2);
    assert.equal(sum(m, 'http_client_request_duration_seconds_count', { service_name: 'curl', server_port: port, http_response_status_code: '404' }), 1);
    assert.ok(await eventually(async () => sum((m = await agent.scrape()), 'kernscope_tcp_connections_closed_total', { service: srv.service, direction: 'inbound' }) === 3, 10_000));
  } finally {
    await server.end();
    srv.cleanup();
  }
  const tcp = peerScript('capstcp');
  const client = peerScript('capscli');
  const s = startPeer(tcp.script, ['server', '127.0.0.1', '5000']);
  try {
    const port = (await s.line(/^\d+$/)).trim();
    const cli = startPeer(client.script, ['client', '127.0.0.1', port, '2', '700']);
    await cli.line(/^done$/);
    await cli.end();
    let m = await agent.scrape();
    assert.ok(await eventually(async () => sum((m = await agent.scrape()), 'kernscope_tcp_connections_closed_total', { service: tcp.service, direction: 'inbound', port }) === 2, 10_000));
    assert.equal(sum(m, 'kernscope_tcp_received_bytes_total', { service: tcp.service, direction: 'inbound', port }), 1400);
    assert.equal(sum(m, 'kernscope_tcp_sent_bytes_total', { service: tcp.service, direction: 'inbound', port }), 10_000);
  } finally {
    await s.end();
    tcp.cleanup();
    client.cleanup();
  }
});

test('a kill action at exec still kills: the program never runs', async () => {
  const evil = path.join(dir, 'ks-caps-touch');
  fs.copyFileSync('/usr/bin/touch', evil);
  fs.chmodSync(evil, 0o755);
  const marker = path.join(dir, 'marker');
  const c = spawn(evil, [marker], { stdio: 'ignore' });
  const sig = await new Promise((r) => c.once('exit', (_code, s) => r(s)));
  assert.equal(sig, 'SIGKILL');
  assert.equal(fs.existsSync(marker), false);
  const alerts = (): Array<{ rule: string; action?: string; process: { pid: number } }> =>
    fs.existsSync(alertsFile) ? fs.readFileSync(alertsFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [];
  assert.ok(await eventually(async () => alerts().some((a) => a.process.pid === c.pid && a.rule === 'kill-caps-test' && a.action === 'killed'), 5000));
});
