import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig } from '../../src/config/load.js';
import { DEFAULT_CONFIG } from '../../src/config/schema.js';
import { parseListen } from '../../src/server.js';

function configError(doc: unknown): string {
  try {
    parseConfig(doc, 'c.yaml');
  } catch (e) {
    assert.equal((e as { code: string }).code, 'ERR_KERNSCOPE_CONFIG');
    return (e as Error).message;
  }
  assert.fail('expected a config error');
}

test('empty config gives the defaults', () => {
  assert.deepEqual(parseConfig(null), DEFAULT_CONFIG);
  assert.deepEqual(parseConfig({}), DEFAULT_CONFIG);
});

test('partial config merges over defaults', () => {
  const c = parseConfig({ collectors: { tcp: { maxSeries: 10 } }, listen: '0.0.0.0:1234' });
  assert.equal(c.collectors.tcp.maxSeries, 10);
  assert.equal(c.collectors.tcp.enabled, true);
  assert.equal(c.collectors.tcp.maps.sockets, 65536);
  assert.equal(c.listen, '0.0.0.0:1234');
});

test('errors name the key path', () => {
  assert.equal(configError({ collectors: { tcp: { bogus: 1 } } }), 'c.yaml: collectors.tcp.bogus: unknown key');
  assert.equal(configError({ collectors: { tcp: { maxSeries: 'many' } } }), 'c.yaml: collectors.tcp.maxSeries: must be integer');
  assert.equal(configError({ collectors: { tcp: { maxSeries: 0 } } }), 'c.yaml: collectors.tcp.maxSeries: must be >= 1');
  assert.equal(configError({ listen: 'nope' }), 'c.yaml: listen: expected HOST:PORT');
  assert.equal(configError({ services: [{ name: 'x' }] }), 'c.yaml: services[0].match: missing required key');
  assert.equal(configError({ services: [{ name: 'x', match: { cmdline: '(' } }] }), 'c.yaml: services[0].match.cmdline: not a valid regular expression');
  assert.equal(configError({ services: [{ name: 'x', match: { port: 70000 } }] }), 'c.yaml: services[0].match.port: must be <= 65535');
  assert.equal(configError([1]), 'c.yaml: (top level): must be object');
  assert.equal(configError('text'), 'c.yaml: (top level): must be object');
});

test('listen addresses', () => {
  assert.deepEqual(parseListen('127.0.0.1:9527'), { host: '127.0.0.1', port: 9527 });
  assert.deepEqual(parseListen('[::1]:80'), { host: '::1', port: 80 });
  assert.deepEqual(parseListen('localhost:1'), { host: 'localhost', port: 1 });
  for (const bad of ['', ':80', '1.2.3.4', '1.2.3.4:99999', '::1:80', 'a b:1']) {
    assert.throws(() => parseListen(bad), { code: 'ERR_KERNSCOPE_USAGE' }, bad);
  }
});

test('the documented example config is valid and says the defaults', async () => {
  const { loadConfig } = await import('../../src/config/load.js');
  const { ROOT } = await import('../../src/paths.js');
  const c = loadConfig(`${ROOT}/docs/kernscope.example.yaml`);
  assert.deepEqual({ ...c, services: [] }, DEFAULT_CONFIG);
  assert.equal(c.services.length, 3);
});

test('the file schema: every key with a default may be left out; `config check` and `config schema`', async () => {
  const { spawnSync } = await import('node:child_process');
  const { Ajv } = await import('ajv');
  const { FILE_SCHEMA } = await import('../../src/config/schema.js');
  const { ROOT } = await import('../../src/paths.js');
  // As an editor would check a file: no defaults filled in.
  const check = new Ajv({ strict: false }).compile(FILE_SCHEMA as object);
  assert.equal(check({}), true);
  assert.equal(check({ collectors: { http: { hooks: 'socket' } } }), true);
  assert.equal(check({ collectors: { http: { hooks: 'kprobes' } } }), false);
  assert.equal(check({ services: [{ name: 'x' }] }), false);
  const cli = (...args: string[]) => spawnSync(`${ROOT}/bin/kernscope`, args, { encoding: 'utf8' });
  const schema = cli('config', 'schema');
  assert.equal(schema.status, 0);
  assert.deepEqual(JSON.parse(schema.stdout).properties.collectors.properties.http.properties.durationBuckets.default, DEFAULT_CONFIG.collectors.http.durationBuckets);
  const ok = cli('config', 'check', '--config', `${ROOT}/docs/kernscope.example.yaml`);
  assert.equal(ok.status, 0, ok.stderr);
  const bad = cli('config', 'check', '--config', `${ROOT}/test/unit/config.test.ts`);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /config\.test\.ts: /);
});
