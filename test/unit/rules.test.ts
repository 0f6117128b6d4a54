// Rule matching without root: the default rules against process chains made
// by hand, exceptions folded in, events given as lists, the kernel's watched
// prefixes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from '../../src/paths.js';
import { RuleSet, parseRuleFile, withExceptions, type EventFacts } from '../../src/security/rules.js';
import type { ProcessInfo } from '../../src/process/table.js';

const DEFAULTS = parseRuleFile(fs.readFileSync(path.join(ROOT, 'rules', 'default.yaml'), 'utf8'), 'default.yaml').rules;

let nextPid = 100;
function proc(name: string, args: string[] = [name], exe = `/usr/bin/${name}`): ProcessInfo {
  return { pid: nextPid++, ppid: 1, name, exe, args, argsTruncated: false, uid: 0, cgroup: '/' };
}

/** Rules raised for `chain` (the process first) with `servers` listening. */
function raised(set: RuleSet, chain: ProcessInfo[], ev: EventFacts = { event: 'exec' }, servers: ProcessInfo[] = []): string[] {
  const ids = new Set(servers.map((s) => s.pid));
  return set.evaluate(chain, { isServer: (pid) => ids.has(pid) }, ev).map((a) => a.rule).sort();
}

test('inline code under a server, by language, and not the same interpreter running a file', () => {
  const set = new RuleSet(DEFAULTS);
  const web = proc('node');
  for (const args of [['python3', '-c', 'x'], ['perl', '-e', 'x'], ['ruby', '-rsocket', '-e', 'x'], ['node', '-e', 'x'], ['php', '-r', 'x'], ['python3', '-Sc', 'x'], ['node', '--eval', 'x']]) {
    assert.deepEqual(raised(set, [proc(args[0]!, args), web], { event: 'exec' }, [web]), ['inline-code-spawned-by-server'], args.join(' '));
  }
  assert.deepEqual(raised(set, [proc('python3', ['python3', 'app.py']), web], { event: 'exec' }, [web]), []);
  assert.deepEqual(raised(set, [proc('python3', ['python3', '-c', 'x']), proc('bash')]), [], 'no server above: no alert');
});

test('a reverse shell: a socket on the streams of a shell, not of a server process', () => {
  const set = new RuleSet(DEFAULTS);
  const ev: EventFacts = { event: 'stdio_socket', fd: 0, peer: '10.0.0.1:4444' };
  assert.deepEqual(raised(set, [proc('bash')], ev), ['reverse-shell']);
  assert.deepEqual(raised(set, [proc('nginx')], ev), []);
  assert.deepEqual(raised(set, [proc('sh')], { event: 'exec', stdioSocket: true }), ['shell-with-socket-stdio']);
  assert.deepEqual(raised(set, [proc('sh')], { event: 'exec', stdioSocket: false }), []);
});

test('paths: event lists, truncation, package managers and python caches excepted', () => {
  const set = new RuleSet(DEFAULTS);
  const touch = proc('touch');
  assert.deepEqual(raised(set, [touch], { event: 'open', path: '/usr/bin/ls', write: true }), ['write-below-binary-dir']);
  assert.deepEqual(raised(set, [touch], { event: 'open', path: '/usr/bin/ls', write: false }), []);
  assert.deepEqual(raised(set, [proc('mv')], { event: 'rename', path: '/usr/local/bin/x', flags: 1 }), ['write-below-binary-dir']);
  assert.deepEqual(raised(set, [proc('dpkg')], { event: 'rename', path: '/usr/bin/ls' }), []);
  assert.deepEqual(raised(set, [proc('python3')], { event: 'open', path: '/usr/lib/python3/dist-packages/__pycache__/a.pyc', write: true }), []);
  assert.deepEqual(raised(set, [proc('python3')], { event: 'open', path: '/usr/lib/x86_64-linux-gnu/libc.so.6', write: true }), ['write-below-binary-dir']);
  // An append to a log is no clearing; an O_TRUNC open, truncate and unlink are.
  const sh = proc('sh');
  assert.deepEqual(raised(set, [sh], { event: 'open', path: '/var/log/auth.log', write: true }), []);
  assert.deepEqual(raised(set, [sh], { event: 'open', path: '/var/log/auth.log', write: true, truncate: true }), ['log-or-history-cleared']);
  assert.deepEqual(raised(set, [proc('rm')], { event: 'unlink', path: '/root/.bash_history' }), ['log-or-history-cleared']);
  assert.deepEqual(raised(set, [proc('logrotate')], { event: 'truncate', path: '/var/log/syslog' }), []);
  assert.deepEqual(raised(set, [proc('ln')], { event: 'link', path: '/etc/shadow', flags: 1 }), ['link-to-sensitive-file']);
  assert.deepEqual(raised(set, [proc('grep', ['grep', '-r', 'BEGIN RSA PRIVATE KEY', '/'])]), ['credential-search']);
  assert.deepEqual(raised(set, [proc('find', ['find', '/', '-name', 'id_ed25519'])]), ['credential-search']);
  assert.deepEqual(raised(set, [proc('grep', ['grep', 'TODO', 'src'])]), []);
});

test('the kernel watches each prefix once, reads only where a rule reads', () => {
  const set = new RuleSet(DEFAULTS);
  const p = new Map(set.watchedPrefixes().map((x) => [x.prefix, x.writesOnly]));
  assert.equal(p.get('/lib'), true); // no read open of a library is sent
  assert.equal(p.get('/var/log/'), true);
  assert.equal(p.get('/etc/shadow'), false); // read rules watch it
  assert.equal(p.has('/etc/sudoers.d/'), false, 'covered by /etc/sudoers');
  assert.ok(p.size <= 32, `${p.size} prefixes`);
  // A narrower prefix a read rule needs is kept under a writes-only one.
  const mixed = new RuleSet(parseRuleFile(`rules:
  - { name: w, severity: low, event: unlink, match: { path: ["/srv/*"] } }
  - { name: r, severity: low, event: open, match: { path: ["/srv/secret"], access: read } }
`, 't').rules);
  assert.deepEqual(mixed.watchedPrefixes(), [{ prefix: '/srv/', writesOnly: true }, { prefix: '/srv/secret', writesOnly: false }]);
});

test('exceptions from another file fold into the rule; one naming no rule is an error', () => {
  const local = parseRuleFile(`exceptions:
  - rule: exec-from-temporary-location
    match: { exe: ["/tmp/build/*"], parent: { name: [make] } }
`, 'local.yaml');
  const set = new RuleSet(withExceptions(DEFAULTS, local.exceptions.map((e) => ({ ...e, source: 'local.yaml' }))));
  const t = proc('t', ['./t'], '/tmp/build/t');
  assert.deepEqual(raised(set, [t, proc('make')]), []);
  assert.deepEqual(raised(set, [proc('t', ['./t'], '/tmp/build/t'), proc('sh')]), ['exec-from-temporary-location']);
  assert.deepEqual(raised(new RuleSet(DEFAULTS), [proc('t', ['./t'], '/tmp/build/t'), proc('make')]), ['exec-from-temporary-location']);
  assert.throws(() => withExceptions(DEFAULTS, [{ rule: 'nope', match: { name: ['x'] }, source: 'local.yaml' }]), /local\.yaml: exception for rule "nope": no such rule/);
  assert.throws(() => parseRuleFile('exceptions:\n  - rule: x\n    match: { colour: red }\n', 'l.yaml'), /l\.yaml: exceptions\[0\]\.match\.colour: unknown key/);
  assert.throws(() => parseRuleFile('rules:\n  - { name: a, severity: low, event: [open, exec], match: { path: ["/x"] } }\n', 'l.yaml'), /rule "a": match\.path needs events on paths only/);
});
