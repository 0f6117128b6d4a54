import { test } from 'node:test';
import fs from 'node:fs';
import assert from 'node:assert/strict';
import { mainScript, ServiceNamer } from '../../src/process/names.js';

test('main script of interpreters', () => {
  const cases: Array<[string[], string | undefined]> = [
    [['node', '/srv/payments/server.js'], 'payments'],
    [['node', '/srv/api/billing.mjs'], 'billing'],
    [['node', '--require', 'otel.js', 'orders.js'], 'orders'],
    [['node', '--max-old-space-size=512', 'dist/index.js'], 'dist'],
    [['node', '-e', 'console.log(1)'], undefined],
    [['node'], undefined],
    [['python3', '-u', 'worker.py'], 'worker'],
    [['python3', '-m', 'http.server', '8000'], 'http'],
    [['python3', '-c', 'print(1)'], undefined],
    [['java', '-Xmx1g', '-jar', '/opt/app/inventory.jar'], 'inventory'],
    [['java', '-cp', 'lib/*', 'com.example.Billing'], 'Billing'],
    [['ruby', 'app/main.rb'], 'app'],
  ];
  for (const [argv, want] of cases) assert.equal(mainScript(argv), want, argv.join(' '));
});

test('names of this very process', () => {
  const n = new ServiceNamer([]);
  const me = n.names(process.pid, 'whatever');
  assert.equal(me.process, 'node');
  // Node's test runner runs this file directly: the service is the file's name.
  assert.equal(me.service, 'names.test');
  assert.deepEqual(n.names(0, ''), { process: 'unknown', service: 'unknown', inScope: true, meta: {} });
});

test('a vanished process keeps its kernel comm', () => {
  const n = new ServiceNamer([]);
  assert.deepEqual(n.names(2 ** 22 + 7, 'curl'), { process: 'curl', service: 'curl', inScope: true, meta: {} });
});

test('rules name services, first match wins', () => {
  const n = new ServiceNamer([
    { name: 'by-port', match: { port: 5432, comm: 'node' } },
    { name: 'by-cmdline', match: { cmdline: 'names\\.test' } },
    { name: 'never', match: { pid: 1 } },
  ]);
  assert.equal(n.names(process.pid, 'node', 5432).service, 'by-port');
  assert.equal(n.names(process.pid, 'node', 80).service, 'by-cmdline');
});

test('a scope: processes of other cgroups are out of it, as is one that vanished', () => {
  const own = fs.readFileSync('/proc/self/cgroup', 'utf8').split('\n')[0]!.split(':').pop()!;
  const inside = new ServiceNamer([], 100, own || '/');
  assert.equal(inside.names(process.pid, 'node').inScope, true);
  const elsewhere = new ServiceNamer([], 100, '/no-such-cgroup-here');
  assert.equal(elsewhere.names(process.pid, 'node').inScope, false);
  assert.equal(inside.names(2 ** 22 + 7, 'curl').inScope, false);
});
