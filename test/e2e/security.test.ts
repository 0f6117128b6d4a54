import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { eventually, isRoot, runCli, startAgent, sum, tmpDir, type RunningAgent } from '../helpers.js';
import { fixtureCopy, startPeer } from '../peers.js';

interface AlertLine {
  rule: string;
  action: string;
  path?: string;
  access?: string;
  port?: number;
  severity: string;
  message: string;
  process: { pid: number; name: string; exe: string; args: string[] };
  ancestry: string;
  parents: Array<{ pid: number; name: string }>;
}

let agent: RunningAgent;
let dir: string;
let alertsFile: string;
let rulesFile: string;

before(async () => {
  assert.ok(isRoot, 'the agent needs root (CI runs as root)');
  dir = tmpDir('ks-sec');
  alertsFile = path.join(dir, 'alerts.jsonl');
  // An extra rule that counts one marker program exactly, for the storm test.
  const rules = path.join(dir, 'rules.yaml');
  rulesFile = rules;
  fs.writeFileSync(
    rules,
    `rules:
  - name: storm-marker
    severity: info
    match: { exe: ["*/kstrue"] }
  - name: watched-file-written
    severity: medium
    event: open
    match: { path: ["${dir}/watched.txt"], access: write }
  - name: short-prefix-read
    severity: info
    event: open
    match: { path: ["/kq*"] }
  - name: kill-on-port
    severity: critical
    event: connect
    match: { port: [14445] }
    actions: [kill]
  - name: kill-by-name
    severity: critical
    match: { name: [ks-evil-touch] }
    actions: [kill]
  - name: socket-dup-onto-stdio
    severity: info
    event: stdio_socket
    match: { name: [ks-dup-python] }
`,
  );
  agent = await startAgent(`collectIntervalSeconds: 0.5\nsecurity:\n  rules: [${rules}]\n  output:\n    stdout: false\n    file: ${alertsFile}\n`);
});

after(async () => {
  assert.equal(await agent.stop(), 0);
  fs.rmSync(dir, { recursive: true, force: true });
});

function alerts(filter: (a: AlertLine) => boolean): AlertLine[] {
  if (!fs.existsSync(alertsFile)) return [];
  return fs
    .readFileSync(alertsFile, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as AlertLine)
    .filter(filter);
}

/** Alerts about processes that descend from `pid`. */
const under = (pid: number) => (a: AlertLine): boolean => a.parents.some((p) => p.pid === pid);

test('a server spawning sh -c curl and nc: exactly those alerts, with ancestry and arguments', async () => {
  const f = fixtureCopy('spawner.mjs', 'web');
  const p = startPeer(f.script, ['server']);
  try {
    await p.line(/^ready$/);
    p.send('go\n');
    await p.line(/^done$/);
    const pid = p.child.pid!;
    assert.ok(await eventually(async () => alerts(under(pid)).length >= 3, 5000));
    await new Promise((r) => setTimeout(r, 500)); // nothing more may come
    const got = alerts(under(pid)).map((a) => `${a.rule}: ${a.ancestry.split(' -> ').slice(-3).join(' -> ')}`).sort();
    assert.deepEqual(got, [
      'network-tool-spawned-by-server: node -> node -> nc',
      'network-tool-spawned-by-server: node -> sh -> curl',
      'shell-spawned-by-server: node -> node -> sh',
    ]);
    const sh = alerts(under(pid)).find((a) => a.rule === 'shell-spawned-by-server')!;
    assert.deepEqual(sh.process.args, ['/bin/sh', '-c', 'curl -s -m 1 -o /dev/null http://127.0.0.1:9/kernscope-test']);
    assert.equal(sh.severity, 'critical');
    assert.equal(sh.parents[0]!.pid, pid);
    const nc = alerts(under(pid)).find((a) => a.process.name === 'nc')!;
    assert.deepEqual(nc.process.args, ['nc', '-z', '-w', '1', '127.0.0.1', '9']);
  } finally {
    await p.end();
    f.cleanup();
  }
});

test('the same commands from a process that serves nothing raise no alert', async () => {
  const f = fixtureCopy('spawner.mjs', 'cli');
  const p = startPeer(f.script, []);
  try {
    await p.line(/^ready$/);
    const execs = sum(await agent.scrape(), 'kernscope_process_execs_total');
    p.send('go\n');
    await p.line(/^done$/);
    // sh, curl and nc ran, and were seen...
    assert.ok(await eventually(async () => sum(await agent.scrape(), 'kernscope_process_execs_total') >= execs + 3, 5000));
    await new Promise((r) => setTimeout(r, 300));
    // ...and none is an alert.
    assert.deepEqual(alerts(under(p.child.pid!)), []);
  } finally {
    await p.end();
    f.cleanup();
  }
});

test('a fake miner and a program run from a memfd', async () => {
  const miner = path.join(dir, 'xmrig');
  fs.copyFileSync('/bin/true', miner);
  fs.chmodSync(miner, 0o755);
  execFileSync(miner, ['--donate-level', '1', '-o', 'stratum+tcp://pool.invalid:3333']);
  // python3 runs /bin/true from an anonymous memory file, as fileless malware does.
  execFileSync('python3', ['-c', "import os; fd = os.memfd_create('payload'); os.write(fd, open('/bin/true','rb').read()); os.execv(f'/proc/self/fd/{fd}', ['payload'])"]);
  const byMiner = (a: AlertLine): boolean => a.process.exe === miner;
  const byMemfd = (a: AlertLine): boolean => a.process.exe.startsWith('memfd:payload');
  assert.ok(await eventually(async () => alerts(byMiner).length === 3 && alerts(byMemfd).length === 1, 5000));
  assert.deepEqual(alerts(byMiner).map((a) => a.rule).sort(), ['cryptominer', 'cryptominer-arguments', 'exec-from-temporary-location']);
  assert.deepEqual(alerts(byMemfd).map((a) => a.rule), ['exec-from-temporary-location']);
  const m = await agent.scrape();
  assert.ok(sum(m, 'kernscope_security_alerts_total', { rule: 'cryptominer', severity: 'critical' }) >= 1);
});

test('a storm of 10,000 execs: each counted, or its loss is', async () => {
  const bin = path.join(dir, 'kstrue');
  fs.copyFileSync('/bin/true', bin);
  fs.chmodSync(bin, 0o755);
  const before = await agent.scrape();
  const base = sum(before, 'kernscope_security_alerts_total', { rule: 'storm-marker' });
  // An exec lost is counted as one; forks and exits lost are counted apart.
  const lost = { source: 'process', reason: 'exec_ringbuf_full' };
  const lostBase = sum(before, 'kernscope_events_dropped_total', lost);
  const N = 10_000;
  const t0 = Date.now();
  await new Promise<void>((resolve, reject) => {
    const c = spawn('sh', ['-c', `i=0; while [ $i -lt ${N} ]; do ${bin}; i=$((i+1)); done`], { stdio: 'ignore' });
    c.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`storm exited ${code}`))));
  });
  const seconds = (Date.now() - t0) / 1000;
  const counted = async (): Promise<number> => {
    const m = await agent.scrape();
    return sum(m, 'kernscope_security_alerts_total', { rule: 'storm-marker' }) - base + sum(m, 'kernscope_events_dropped_total', lost) - lostBase;
  };
  assert.ok(await eventually(async () => (await counted()) >= N, 10_000), `counted ${await counted()} of ${N} in ${seconds} s`);
  // A full ring buffer loses whatever execs the node makes then, not only
  // the storm's: the losses may hold other processes' too, the alerts
  // never more than the storm's, and with no loss the alerts are exact.
  const m = await agent.scrape();
  const alerts = sum(m, 'kernscope_security_alerts_total', { rule: 'storm-marker' }) - base;
  const drops = sum(m, 'kernscope_events_dropped_total', lost) - lostBase;
  assert.ok(alerts <= N, `${alerts} alerts for ${N} execs`);
  if (drops === 0) assert.equal(alerts, N);
  console.log(`# ${alerts} alerts and ${drops} execs lost for a storm of ${N} in ${seconds} s`);
});

test('bad rules: one clear error naming the rule and the key', async () => {
  const cases: Array<[string, RegExp]> = [
    ['rules:\n  - name: a\n    severity: high\n    match: { name: [sh], colour: red }\n', /rule "a": match\.colour: unknown key$/],
    ['rules:\n  - name: b\n    severity: high\n    match: { args: ["/(unclosed/"] }\n', /rule "b": match\.args\[0\]: not a valid regular expression$/],
    ['rules:\n  - name: c\n    severity: loud\n    match: { name: [sh] }\n', /rule "c": severity: expected one of "info", "low", "medium", "high", "critical"$/],
    ['rules:\n  - name: d\n    severity: high\n    match: { uid: root }\n', /rule "d": match\.uid: must be array$/],
    ['rules:\n  - name: e\n    severity: high\n    match: { name: [sh], parent: { server: true } }\n    actions: [kill]\n', /rule "e": actions: kill needs a match the kernel can decide alone/],
    ['rules:\n  - name: f\n    severity: high\n    event: open\n    match: { name: [cat] }\n', /rule "f": event open needs match\.path/],
  ];
  for (const [yaml, re] of cases) {
    const f = path.join(dir, 'bad.yaml');
    fs.writeFileSync(f, yaml);
    const cfg = path.join(dir, 'cfg.yaml');
    fs.writeFileSync(cfg, `security:\n  rules: [${f}]\n`);
    const r = await runCli(['run', '--config', cfg]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr.trim(), re);
    assert.equal(r.stderr.trim().split('\n').length, 1);
  }
});

// Each path meets the kernel's prefix index: its own bucket (/etc/shadow, the
// watched file), a prefix shorter than a bucket's four bytes (/kq), reads
// under a prefix watched for writes only (/etc/passwd, the watched file).
test('file events: a read of /etc/shadow, a write to a watched file, not a read of it', async () => {
  const watched = path.join(dir, 'watched.txt');
  fs.writeFileSync(watched, 'a\n');
  const sh = spawn('sh', ['-c', `cat /etc/shadow > /dev/null; echo b >> ${watched}; cat ${watched} > /dev/null; cat /etc/passwd > /dev/null; cat /kqz-none 2>/dev/null; cat /k /kz 2>/dev/null; true`], { stdio: 'ignore' });
  const pid = sh.pid!;
  await new Promise((r) => sh.once('exit', r));
  const mine = (a: AlertLine): boolean => a.process.pid === pid || a.parents.some((p) => p.pid === pid);
  assert.ok(await eventually(async () => alerts(mine).length >= 3, 5000));
  await new Promise((r) => setTimeout(r, 300));
  const got = alerts(mine).map((a) => `${a.rule} ${a.process.name} ${a.path} ${a.access}`).sort();
  assert.deepEqual(got, [`shadow-file-read cat /etc/shadow read`, `short-prefix-read cat /kqz-none read`, `watched-file-written sh ${watched} write`]);
});

test('a connection to a stratum port alerts; with action kill the process dies before it sends a byte', async () => {
  let received = 0;
  const listener = net.createServer((s) => s.on('data', (d) => (received += d.length)).on('error', () => {}));
  await new Promise<void>((r) => listener.listen(14445, '127.0.0.1', () => r()));
  try {
    const script = `const s = require('net').connect(PORT, '127.0.0.1', () => s.write('hello pool')); s.on('error', () => {}); setTimeout(() => process.exit(0), 500);`;
    // Alert only: the default rule on port 3333, where nothing listens.
    const alertOnly = spawn(process.execPath, ['-e', script.replace('PORT', '3333')], { stdio: 'ignore' });
    const [code1] = (await new Promise((r) => alertOnly.once('exit', (c, sig) => r([c, sig])))) as [number | null, string | null];
    assert.equal(code1, 0);
    // Kill: the process connects to 14445 and would write at once.
    const killed = spawn(process.execPath, ['-e', script.replace('PORT', '14445')], { stdio: 'ignore' });
    const [, sig2] = (await new Promise((r) => killed.once('exit', (c, sig) => r([c, sig])))) as [number | null, string | null];
    assert.equal(sig2, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(received, 0, 'not a byte reached the listener');
    const a1 = (a: AlertLine): boolean => a.process.pid === alertOnly.pid;
    const a2 = (a: AlertLine): boolean => a.process.pid === killed.pid;
    assert.ok(await eventually(async () => alerts(a1).length === 1 && alerts(a2).length === 1, 5000));
    assert.deepEqual(alerts(a1).map((a) => `${a.rule} ${a.port} ${a.action}`), ['mining-pool-connection 3333 alert']);
    assert.deepEqual(alerts(a2).map((a) => `${a.rule} ${a.port} ${a.action}`), ['kill-on-port 14445 killed']);
  } finally {
    listener.close();
  }
});

test('action kill at exec: the program never runs', async () => {
  const evil = path.join(dir, 'ks-evil-touch');
  fs.copyFileSync('/usr/bin/touch', evil);
  fs.chmodSync(evil, 0o755);
  const marker = path.join(dir, 'marker');
  const c = spawn(evil, [marker], { stdio: 'ignore' });
  const [, sig] = (await new Promise((r) => c.once('exit', (code, s) => r([code, s])))) as [number | null, string | null];
  assert.equal(sig, 'SIGKILL');
  assert.equal(fs.existsSync(marker), false, 'touch never created its file');
  const mine = (a: AlertLine): boolean => a.process.pid === c.pid && a.rule === 'kill-by-name';
  assert.ok(await eventually(async () => alerts(mine).length === 1, 5000));
  assert.equal(alerts(mine)[0]!.action, 'killed');
});

test('rules reload when their file changes; a broken file keeps the rules in force', async () => {
  const marker = path.join(dir, 'ks-reload-marker');
  fs.copyFileSync('/bin/true', marker);
  fs.chmodSync(marker, 0o755);
  const reloads = async (result: string): Promise<number> => sum(await agent.scrape(), 'kernscope_security_rule_reloads_total', { result });
  const runMarker = async (): Promise<number> => {
    const c = spawn(marker, [], { stdio: 'ignore' });
    await new Promise((r) => c.once('exit', r));
    return c.pid!;
  };
  const alerted = (pid: number) => (a: AlertLine): boolean => a.process.pid === pid && a.rule === 'reload-marker';
  const before = fs.readFileSync(rulesFile, 'utf8');
  const ok0 = await reloads('ok');
  fs.writeFileSync(rulesFile, `${before}  - name: reload-marker\n    severity: low\n    match: { exe: ["*/ks-reload-marker"] }\n`);
  assert.ok(await eventually(async () => (await reloads('ok')) === ok0 + 1, 5000), 'reloaded');
  const p1 = await runMarker();
  assert.ok(await eventually(async () => alerts(alerted(p1)).length === 1, 5000), 'the new rule alerts');

  const err0 = await reloads('error');
  fs.writeFileSync(rulesFile, 'rules:\n  - name: broken\n    severity: maybe\n    match: {}\n');
  assert.ok(await eventually(async () => (await reloads('error')) === err0 + 1, 5000), 'the error is counted');
  assert.match(agent.stderr(), /security: rules not reloaded, the previous ones stay: .*rule "broken": severity: expected one of/);
  const p2 = await runMarker();
  assert.ok(await eventually(async () => alerts(alerted(p2)).length === 1, 5000), 'the previous rules still alert');
  fs.writeFileSync(rulesFile, before);
});

test('ptrace of another process, and a non-root process making itself root', async () => {
  // Python through ctypes: PTRACE_ATTACH (16) on a sleeping child.
  const ptrace = spawn('python3', ['-c', [
    'import ctypes, os, time, signal',
    'libc = ctypes.CDLL(None, use_errno=True)',
    'child = os.fork()',
    'if child == 0:',
    '    time.sleep(5); os._exit(0)',
    'libc.ptrace(16, child, 0, 0)',
    'os.kill(child, signal.SIGKILL)',
  ].join('\n')], { stdio: 'ignore' });
  await new Promise((r) => ptrace.once('exit', r));
  // Root drops to nobody but keeps a saved uid of 0, then asks for root back.
  const setuid = spawn('python3', ['-c', 'import os; os.setresuid(65534, 65534, 0); os.setuid(0)'], { stdio: 'ignore' });
  await new Promise((r) => setuid.once('exit', r));
  const p1 = (a: AlertLine): boolean => a.process.pid === ptrace.pid;
  const p2 = (a: AlertLine): boolean => a.process.pid === setuid.pid;
  assert.ok(await eventually(async () => alerts(p1).length === 1 && alerts(p2).length === 1, 5000));
  assert.equal(alerts(p1)[0]!.rule, 'ptrace-of-another-process');
  assert.equal(alerts(p2)[0]!.rule, 'setuid-to-root-by-non-root');
  assert.match(alerts(p2)[0]!.message, /python3 \(uid 65534\) made itself root/);
});

test('SIGHUP reads the rules again; the agent keeps running', async () => {
  const ok = async (): Promise<number> => sum(await agent.scrape(), 'kernscope_security_rule_reloads_total', { result: 'ok' });
  const before = await ok();
  process.kill(agent.child.pid!, 'SIGHUP');
  assert.ok(await eventually(async () => (await ok()) === before + 1, 5000), 'one reload');
  assert.match(agent.stderr(), /SIGHUP: reading rules and the web config again/);
  assert.equal(agent.child.exitCode, null);
});

test('close(0); dup(socket): the socket lands on stdin, seen at dup(2)\'s entry', async () => {
  const py = path.join(dir, 'ks-dup-python');
  fs.copyFileSync('/usr/bin/python3', py);
  fs.chmodSync(py, 0o755);
  const srv = net.createServer((c) => c.on('error', () => undefined));
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  try {
    // dup lands on the lowest free descriptor: 0 once stdin is closed; a
    // dup while 0, 1 and 2 are all open lands past them and is no event.
    // dup(2) itself (Python's os.dup is fcntl(F_DUPFD_CLOEXEC)).
    const code = `import ctypes,os,socket;dup=ctypes.CDLL(None).dup;s=socket.create_connection(('127.0.0.1',${port}));assert dup(s.fileno())>2;os.close(0);fd=dup(s.fileno());assert fd==0,fd`;
    const c = spawn(py, ['-c', code], { stdio: ['pipe', 'ignore', 'inherit'] });
    const exit = await new Promise((r) => c.once('exit', r));
    assert.equal(exit, 0);
    const mine = (a: AlertLine): boolean => a.process.pid === c.pid && a.rule === 'socket-dup-onto-stdio';
    assert.ok(await eventually(async () => alerts(mine).length > 0, 5000), 'no alert');
    await new Promise((r) => setTimeout(r, 300));
    const got = alerts(mine) as Array<AlertLine & { fd: number; peer: string }>;
    assert.deepEqual(got.map((a) => [a.fd, a.peer]), [[0, `127.0.0.1:${port}`]]);
  } finally {
    srv.close();
  }
});
