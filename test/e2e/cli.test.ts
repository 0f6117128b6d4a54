import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { allProgramIds, eventually, exited, isRoot, programsOf, runCli, startAgent, tmpDir } from '../helpers.js';

function configFile(yaml: string): string {
  const f = path.join(tmpDir('ks-cfg'), 'config.yaml');
  fs.writeFileSync(f, yaml);
  return f;
}

test('bad config exits 2 and names the key', async () => {
  const cases: Array<[string, RegExp]> = [
    ['collectors:\n  tcp:\n    bogus: 1\n', /collectors\.tcp\.bogus: unknown key$/m],
    ['collectors:\n  tcp:\n    maxSeries: lots\n', /collectors\.tcp\.maxSeries: must be integer$/m],
    ['bpfStats:\n  intervalSeconds: -1\n', /bpfStats\.intervalSeconds: must be >= 1$/m],
    ['services:\n  - name: a\n    match: { cmdline: "[" }\n', /services\[0\]\.match\.cmdline: not a valid regular expression$/m],
    ['listen: [1, 2]\n', /listen: must be string$/m],
    ['collectors:\n  tcp:\n    rtt: yes\n', /collectors\.tcp\.rtt: expected one of "close", "segments", "off"$/m],
    ['a: [\n', /invalid YAML/],
    ['a: 1\na: 2\n', /invalid YAML: Map keys must be unique at line 2, column 1:$/m],
  ];
  for (const [yaml, re] of cases) {
    const f = configFile(yaml);
    const r = await runCli(['run', '--config', f]);
    assert.equal(r.code, 2, `${yaml}: ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    assert.ok(r.stderr.startsWith(`kernscope: ${f}: `));
  }
  const missing = await runCli(['run', '--config', '/nonexistent/k.yaml']);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /^kernscope: \/nonexistent\/k\.yaml: cannot read: ENOENT/);
});

test('bad flags and commands exit 2 with usage', async () => {
  for (const args of [['run', '--bogus'], ['run', 'extra'], ['frobnicate'], ['run', '--listen'], ['doctor', '--listen', '1.2.3.4:5'], []]) {
    const r = await runCli(args);
    assert.equal(r.code, 2, args.join(' '));
    assert.match(r.stderr, /usage: kernscope/);
  }
  const bad = await runCli(['run', '--listen', 'localhost']);
  assert.equal(bad.code, 2);
  assert.equal(bad.stderr, 'kernscope: --listen: expected HOST:PORT (e.g. 127.0.0.1:9527), got "localhost"\n');
  const help = await runCli(['--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^usage: kernscope <command>/);
});

test('a port in use: one clear line, exit 1, nothing left loaded', async () => {
  const blocker = net.createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
  const port = (blocker.address() as net.AddressInfo).port;
  const before = allProgramIds();
  try {
    const r = await runCli(['run', '--listen', `127.0.0.1:${port}`]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `kernscope: listen 127.0.0.1:${port}: address already in use (is another agent running?)\n`);
  } finally {
    blocker.close();
  }
  const leaked = [...allProgramIds()].filter((id) => !before.has(id));
  assert.deepEqual(leaked, []);
});

test('without privileges the error names the capability', async () => {
  assert.ok(isRoot);
  const r = await runCli(['run'], { prefix: ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', '--bounding-set=-all'] });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^kernscope: missing capability CAP_BPF and CAP_PERFMON \(or CAP_SYS_ADMIN\)/);
});

test('a kernel without BTF: one clear line', async () => {
  // A private mount namespace hides the kernel's BTF from the agent only.
  const r = await runCli(['run'], { prefix: ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs none /sys/kernel/btf && exec "$0" "$@"'] });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^kernscope: this kernel has no BTF \(\/sys\/kernel\/btf\/vmlinux is missing\)/);
});

test('SIGTERM detaches every program and exits 0', async () => {
  const agent = await startAgent();
  let ids: number[];
  try {
    ids = programsOf(agent.child.pid!);
    // TCP: state, retransmit, send and receive reset, destroy, the socket
    // iterator for open connections' bytes; HTTP: the 2 socket tracepoints
    // for reads and writes, the socket state change (connections start and
    // end there: no syscall hook) and 6 TLS uprobe programs;
    // process: exec, fork, exit,
    // openat, openat2, connect, ptrace, the 3 setuid calls, dup2, dup3, dup,
    // the 2 module calls, unlink, unlinkat, truncate, ftruncate, rename,
    // renameat, renameat2, symlink, symlinkat, link, linkat (the default
    // rules use them all; the module ones are loaded, not attached, on a
    // kernel without modules); the flight recorder: oom:mark_victim.
    assert.equal(ids.length, 6 + 3 + 6 + 26 + 1, `programs held by the agent: ${ids}`);
    for (const id of ids) assert.ok(allProgramIds().has(id));
  } finally {
    assert.equal(await agent.stop(), 0);
  }
  assert.ok(await eventually(async () => ids.every((id) => !allProgramIds().has(id)), 3000));
  assert.match(agent.stderr(), /SIGTERM: detaching and exiting/);
});

test('SIGINT too', async () => {
  const agent = await startAgent();
  const ids = programsOf(agent.child.pid!);
  process.kill(agent.child.pid!, 'SIGINT');
  assert.equal(await agent.exited, 0);
  await agent.stop();
  assert.match(agent.stderr(), /SIGINT: detaching and exiting/);
  assert.equal(ids.length, 6 + 3 + 6 + 26 + 1);
  // The kernel frees programs after an RCU grace period: allow it a moment.
  assert.ok(await eventually(async () => ids.every((id) => !allProgramIds().has(id)), 3000));
});

test('doctor reports features, hook costs and plans', async () => {
  const r = await runCli(['doctor', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const rep = JSON.parse(r.stdout) as {
    features: Record<string, { ok: boolean; detail?: string }>;
    hookCosts: Array<{ hook: string; ns: number | null }>;
    collectors: Array<{ collector: string; runnable: boolean; hooks: Array<{ event: string; kind: string | null }> }>;
  };
  for (const f of ['btf', 'tracefs', 'bpffs', 'cgroup v2', 'tracepoint', 'raw_tp', 'tp_btf', 'kprobe', 'fentry', 'uprobe', 'ring buffer', 'perf_event', 'cgroup_skb', 'sockops', 'lockdown']) {
    assert.ok(f in rep.features, f);
  }
  // What every kernel this project runs on must offer (see docs/architecture.md).
  for (const f of ['btf', 'tracefs', 'raw_tp', 'tp_btf', 'uprobe', 'ring buffer']) assert.equal(rep.features[f]!.ok, true, f);
  // A missing feature says why.
  for (const [k, v] of Object.entries(rep.features)) if (!v.ok) assert.ok(v.detail, k);
  assert.equal(rep.hookCosts.length, 7);
  for (const c of rep.hookCosts) assert.ok(typeof c.ns === 'number' && c.ns >= 0, c.hook);
  const tcp = rep.collectors.find((c) => c.collector === 'tcp')!;
  assert.equal(tcp.runnable, true);
  assert.deepEqual(tcp.hooks.map((h) => `${h.event}=${h.kind}`), [
    'inet_sock_set_state=tp_btf',
    'tcp_retransmit_skb=tp_btf',
    'tcp_send_reset=tp_btf',
    'tcp_receive_reset=tp_btf',
    'tcp_destroy_sock=tp_btf',
  ]);
  // HTTP's reads and writes: the socket tracepoints, present here (6.3+).
  const http = rep.collectors.find((c) => c.collector === 'http')!;
  assert.equal(http.runnable, true);
  assert.deepEqual(http.hooks.filter((h) => !h.event.startsWith('sys_')).map((h) => `${h.event}=${h.kind}`), [
    'sock_recv_length=tp_btf',
    'sock_send_length=tp_btf',
    'inet_sock_set_state=tp_btf',
    'SSL_read/SSL_write=uprobe',
  ]);

  const text = await runCli(['doctor', '--no-measure']);
  assert.equal(text.code, 0);
  assert.match(text.stdout, /^  tcp: will run$/m);
  assert.doesNotMatch(text.stdout, /hook cost/);
});

test('a kernel without tp_btf, raw_tp and the ring buffer (kernel.without): doctor says so, each collector that needs them does not start and says why, the rest run', async () => {
  const dir = tmpDir('ks-without');
  try {
    const cfg = path.join(dir, 'config.yaml');
    fs.writeFileSync(cfg, 'kernel:\n  without: [tp_btf, raw_tp, ring_buffer, uprobe]\n');
    const d = await runCli(['doctor', '--no-measure', '--config', cfg]);
    assert.equal(d.code, 0, d.stderr);
    for (const f of ['raw_tp', 'tp_btf', 'uprobe', 'ring buffer']) assert.match(d.stdout, new RegExp(`^  ${f} +NO  turned off by kernel.without$`, 'm'), f);
    assert.match(d.stdout, /^  tcp: cannot run: inet_sock_set_state: neither tp_btf nor raw_tp programs can be loaded$/m);
    assert.match(d.stdout, /^  process: cannot run: sched_process_exec: neither tp_btf nor raw_tp programs can be loaded$/m);
    assert.match(d.stdout, /^  http: cannot run: no BPF ring buffer \(Linux 5\.8\+\)$/m);
    assert.match(d.stdout, /^  recorder: cannot run: no BPF ring buffer \(Linux 5\.8\+\)$/m);
    assert.match(d.stdout, /^  resources: will run$/m);

    const agent = await startAgent('kernel:\n  without: [tp_btf, raw_tp, ring_buffer, uprobe]\n');
    try {
      const err = agent.stderr();
      assert.match(err, /kernel features turned off by kernel\.without: tp_btf, raw_tp, ring_buffer, uprobe/);
      assert.match(err, /collector tcp: not started: inet_sock_set_state: neither tp_btf nor raw_tp programs can be loaded/);
      assert.match(err, /collector http: not started: no BPF ring buffer \(Linux 5\.8\+\)/);
      const text = await agent.scrapeText();
      for (const c of ['tcp', 'http', 'process', 'recorder']) assert.match(text, new RegExp(`kernscope_collector_up\\{collector="${c}"\\} 0`), c);
      assert.match(text, /kernscope_collector_up\{collector="resources"\} 1/);
      assert.match(text, /process_cpu_time_seconds_total\{/);
    } finally {
      assert.equal(await agent.stop(), 0);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('killed under load and started again: nothing is left loaded, and the new agent counts afresh, exactly', async () => {
  const { fixtureCopy, startPeer } = await import('../peers.js');
  const { spawn, execFileSync } = await import('node:child_process');
  const { sum } = await import('../helpers.js');
  const { ROOT } = await import('../../src/paths.js');
  const srv = fixtureCopy('http-server.mjs', 'restart');
  const server = startPeer(srv.script, []);
  let second: Awaited<ReturnType<typeof startAgent>> | undefined;
  try {
    const port = (await server.line(/^\d+$/)).trim();
    const first = await startAgent();
    const ids = programsOf(first.child.pid!);
    // Load all through the kill and the start of the next agent (bounded: 200,000 requests).
    const load = spawn(process.execPath, [path.join(ROOT, 'test', 'fixtures', 'http-load.mjs'), port, '200000', '8'], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 1000));
    process.kill(first.child.pid!, 'SIGKILL');
    await first.stop(); // reaps it, removes its files
    assert.ok(await eventually(async () => ids.every((id) => !allProgramIds().has(id)), 5000), 'programs of the killed agent still loaded');
    second = await startAgent();
    assert.equal(programsOf(second.child.pid!).length, ids.length);
    // On a fast machine the load may have ended already: its exit came and went.
    const loadDone = exited(load);
    load.kill('SIGTERM');
    await loadDone;
    // Traffic after the load: exactly what this agent must count anew.
    const count = async (): Promise<number> => sum(await second!.scrape(), 'http_server_request_duration_seconds_count', { service_name: srv.service, http_route: '/ping/*' });
    assert.equal(await count(), 0);
    for (let i = 0; i < 7; i++) execFileSync('curl', ['-s', '-o', '/dev/null', `http://127.0.0.1:${port}/ping/${i}`]);
    assert.ok(await eventually(async () => (await count()) === 7, 10_000), `counted ${await count()}`);
  } finally {
    if (second) assert.equal(await second.stop(), 0);
    await server.end();
    srv.cleanup();
  }
});
