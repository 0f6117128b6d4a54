// Hostile input, fuzzed with fast-check: the parsers that read bytes and
// documents the agent does not control. Each property either holds for
// every generated case or fast-check prints the smallest case that breaks
// it (replay it with the printed seed). The counts of cases run are printed.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import YAML from 'yaml';
import { METHODS, headEnd, parseRequestHead, parseResponseHead, splitRequests } from '../../src/collectors/http/parse.js';
import { RouteMatcher, templatePath } from '../../src/collectors/http/route.js';
import { loadConfig, parseConfig } from '../../src/config/load.js';
import { KernscopeError } from '../../src/errors.js';
import { RuleSet, parseRuleFile } from '../../src/security/rules.js';
import { parseCgroup } from '../../src/process/containers.js';
import { KubeMetadata } from '../../src/process/kubernetes.js';
import { parseFormat } from '../../src/collectors/custom/tracefs.js';
import type { ProcessInfo } from '../../src/process/table.js';
import { tmpDir } from '../helpers.js';

// One seed, so that a run here and on CI try the same cases; FUZZ_SEED and
// FUZZ_SCALE (a multiplier of the case counts) explore further by hand.
const SEED = Number(process.env.FUZZ_SEED ?? 20261203);
const SCALE = Number(process.env.FUZZ_SCALE ?? 1);
const counts = new Map<string, number>();
function check<T>(name: string, arb: fc.Arbitrary<T>, prop: (v: T) => void, runs = 2000): void {
  const numRuns = Math.round(runs * SCALE);
  fc.assert(fc.property(arb, prop), { numRuns, seed: SEED });
  counts.set(name, numRuns);
}
after(() => {
  const total = [...counts.values()].reduce((a, b) => a + b, 0);
  console.log(`# fuzzed ${total} cases (seed ${SEED}): ${[...counts].map(([k, v]) => `${k} ${v}`).join(', ')}`);
});

/** Only the agent's own error, with a message, may come out of a loader. */
function configErrorOnly(fn: () => unknown): void {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof KernscopeError) || e.code !== 'ERR_KERNSCOPE_CONFIG' || !e.message) throw e;
  }
}

const TOKEN = /^[\x21-\x7e]*$/;
const LABEL_SAFE = /^\/([\w.~*-]*)(\/[\w.~*-]*)*$/;

// ---- HTTP heads, as the kernel copies them -----------------------------------

const seg = fc.oneof(
  fc.stringMatching(/^[a-z]{1,8}$/),
  fc.nat({ max: 1e9 }).map(String),
  fc.uuid(),
  fc.stringMatching(/^[0-9a-f]{8,24}$/),
  fc.stringMatching(/^[\w.~%-]{0,20}$/),
);
const pathArb = fc.array(seg, { maxLength: 16 }).map((xs) => `/${xs.join('/')}`);
const requestArb = fc.record({
  method: fc.constantFrom(...METHODS.filter((m) => m !== 'CONNECT')),
  path: pathArb,
  query: fc.option(fc.stringMatching(/^[\w=&%]{0,12}$/), { nil: undefined }),
  body: fc.nat({ max: 64 }),
  host: fc.option(fc.domain(), { nil: undefined }),
  extra: fc.array(fc.tuple(fc.stringMatching(/^[A-Za-z][\w-]{0,15}$/), fc.stringMatching(/^[\x20-\x7e]{0,30}$/)), { maxLength: 5 }),
});
type Req = typeof requestArb extends fc.Arbitrary<infer T> ? T : never;
function wire(r: Req): string {
  const fields = r.extra.filter(([k]) => !/^(content-length|transfer-encoding|host)$/i.test(k));
  const head = `${r.method} ${r.path}${r.query !== undefined ? `?${r.query}` : ''} HTTP/1.1\r\n${r.host ? `Host: ${r.host}\r\n` : ''}${fields.map(([k, v]) => `${k}: ${v}\r\n`).join('')}Content-Length: ${r.body}\r\n\r\n`;
  return head + 'x'.repeat(r.body);
}
const latin1 = (s: string): Buffer => Buffer.from(s, 'latin1');

test('HTTP: any bytes parse to nothing or to a well-formed head, never a throw', () => {
  const bytes = fc.uint8Array({ maxLength: 600 }).map((a) => Buffer.from(a));
  const prefixed = fc.tuple(fc.constantFrom('GET /', 'POST /a ', 'HTTP/1.1 200 ', 'HTTP/1.0 ', 'PUT /x HTTP/1.1\r\n', ''), bytes).map(([p, b]) => Buffer.concat([latin1(p), b]));
  check('http-bytes', fc.oneof(bytes, prefixed), (b) => {
    const req = parseRequestHead(b);
    if (req) {
      assert.ok((METHODS as readonly string[]).includes(req.method), req.method);
      assert.ok(req.path === '' || (req.path.startsWith('/') && TOKEN.test(req.path)), req.path);
      assert.ok(req.contentLength === undefined || (Number.isSafeInteger(req.contentLength) && req.contentLength >= 0));
    }
    const resp = parseResponseHead(b);
    if (resp) assert.ok(resp.status >= 100 && resp.status <= 599, String(resp.status));
    assert.ok(splitRequests(b).length <= 32);
    assert.ok(headEnd(b) <= b.length);
  }, 5000);
});

test('HTTP: generated requests parse back to their method, path and length; pipelined ones split in order', () => {
  check('http-requests', fc.array(requestArb, { minLength: 1, maxLength: 6 }), (rs) => {
    const one = parseRequestHead(latin1(wire(rs[0]!)));
    assert.ok(one);
    assert.equal(one.method, rs[0]!.method);
    assert.equal(one.path, rs[0]!.path);
    assert.equal(one.contentLength, rs[0]!.body);
    const split = splitRequests(latin1(rs.map(wire).join('')));
    assert.deepEqual(split.map((h) => `${h.method} ${h.path}`), rs.map((r) => `${r.method} ${r.path}`));
  });
});

test('HTTP: a byte changed anywhere in a request still parses to nothing or to a well-formed head', () => {
  check('http-mutations', fc.tuple(requestArb, fc.nat(), fc.integer({ min: 0, max: 255 })), ([r, at, byte]) => {
    const b = latin1(wire(r));
    b[at % b.length] = byte;
    const req = parseRequestHead(b);
    if (req) {
      assert.ok((METHODS as readonly string[]).includes(req.method));
      assert.ok(req.path === '' || (req.path.startsWith('/') && TOKEN.test(req.path)), req.path);
    }
    for (const h of splitRequests(b)) assert.ok((METHODS as readonly string[]).includes(h.method));
  });
});

test('routes: any path templates to a bounded, label-safe route; configured patterns match or not, never throw', () => {
  const anyPath = fc.oneof(pathArb, fc.string({ maxLength: 300 }).map((s) => `/${s}`), fc.string({ unit: 'binary', maxLength: 200 }).map((s) => `/${s}`));
  const matcher = new RouteMatcher(['/users/{id}', '/users/{id}/orders/*', '/static/**', '/']);
  check('routes', fc.tuple(anyPath, fc.boolean()), ([p, complete]) => {
    const t = templatePath(p, complete);
    assert.match(t, LABEL_SAFE);
    assert.ok(t.split('/').length <= 14, t);
    const m = matcher.match(p);
    assert.ok(m === undefined || ['/users/{id}', '/users/{id}/orders/*', '/static/**', '/'].includes(m));
  }, 5000);
});

// ---- documents: config, probe specs, own objects, rules ---------------------

const KEYS = ['listen', 'collectors', 'tcp', 'http', 'enabled', 'probes', 'objects', 'security', 'rules', 'name', 'uprobe', 'uretprobe', 'usdt', 'tracepoint', 'binary', 'args', 'metrics', 'type', 'filter', 'label', 'buckets', 'path', 'maps', 'kernel', 'without', 'recorder', 'maxBytes', 'services', 'match', 'port'];
const doc = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: 'small' }, fc.string({ maxLength: 20 }), fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.array(tie('value'), { maxLength: 4 }), tie('object')),
  object: fc.dictionary(fc.oneof(fc.constantFrom(...KEYS), fc.string({ maxLength: 8 })), tie('value'), { maxKeys: 5 }),
})).object;

test('config: any document, and any probe or object list in it, is accepted or refused with one named error', () => {
  check('config-docs', fc.oneof(fc.anything(), doc), (d) => configErrorOnly(() => parseConfig(d)));
  const probe = fc.record({ name: fc.string({ maxLength: 12 }), uprobe: fc.string({ maxLength: 20 }), usdt: fc.string({ maxLength: 20 }), tracepoint: fc.string({ maxLength: 20 }), binary: fc.string({ maxLength: 20 }), args: doc, metrics: fc.array(doc, { maxLength: 3 }) }, { requiredKeys: [] });
  check('probe-specs', fc.array(fc.oneof(probe, doc), { maxLength: 4 }), (ps) => configErrorOnly(() => parseConfig({ probes: ps })));
  check('own-objects', fc.array(fc.oneof(doc, fc.record({ path: fc.string(), maps: fc.array(doc, { maxLength: 3 }) }, { requiredKeys: [] })), { maxLength: 3 }), (os) => configErrorOnly(() => parseConfig({ objects: os })));
});

test('config files: any text is loaded or refused with one named error', () => {
  const dir = tmpDir('ks-fuzz');
  try {
    const file = path.join(dir, 'config.yaml');
    const text = fc.oneof(fc.string({ maxLength: 200 }), doc.map((d) => YAML.stringify(d)), fc.string({ unit: 'binary', maxLength: 200 }));
    check('config-files', text, (t) => {
      fs.writeFileSync(file, t);
      configErrorOnly(() => loadConfig(file));
    }, 500);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('rules: any text is loaded or refused with one named error, and loaded rules evaluate without a throw', () => {
  const proc = (pid: number, name: string): ProcessInfo => ({ pid, ppid: 1, name, exe: `/usr/bin/${name}`, args: [name, '-c', 'x'], argsTruncated: false, uid: 0, cgroup: '/' });
  const chain = [proc(3, 'sh'), proc(2, 'node'), proc(1, 'systemd')];
  const rule = fc.record({
    name: fc.string({ maxLength: 10 }),
    severity: fc.constantFrom('info', 'low', 'medium', 'high', 'critical', 'x'),
    event: fc.oneof(fc.constantFrom('exec', 'open', 'connect', 'unlink'), fc.array(fc.constantFrom('exec', 'open', 'ptrace'), { maxLength: 2 })),
    match: fc.oneof(doc, fc.record({ name: fc.array(fc.string({ maxLength: 8 }), { maxLength: 3 }), path: fc.array(fc.string({ maxLength: 12 }).map((s) => `/${s}`), { maxLength: 3 }), port: fc.array(fc.integer({ min: -1, max: 70000 }), { maxLength: 2 }) }, { requiredKeys: [] })),
    message: fc.string({ maxLength: 20 }),
    actions: fc.array(fc.constantFrom('kill', 'alert'), { maxLength: 1 }),
  }, { requiredKeys: ['name'] });
  const text = fc.oneof(fc.string({ maxLength: 300 }), doc.map((d) => YAML.stringify(d)), fc.array(rule, { maxLength: 3 }).map((rules) => YAML.stringify({ rules })));
  check('rules', text, (t) => {
    let rules;
    try {
      rules = parseRuleFile(t, 'fuzz.yaml').rules;
    } catch (e) {
      if (e instanceof KernscopeError && e.code === 'ERR_KERNSCOPE_CONFIG' && e.message.startsWith('fuzz.yaml')) return;
      throw e;
    }
    const set = new RuleSet(rules);
    for (const ev of [{ event: 'exec' }, { event: 'open', path: '/etc/shadow', write: false }, { event: 'connect', port: 3333 }] as const) {
      set.evaluate(chain, { isServer: (pid) => pid === 2 }, ev);
    }
    set.watchedPrefixes();
  }, 3000);
});

// ---- what the kernel and the cluster say ---------------------------------------

test('cgroup paths: any text gives an identity of the documented shapes, never a throw', () => {
  const id = fc.stringMatching(/^[0-9a-f]{64}$/);
  const lines = fc.array(fc.oneof(
    fc.string({ maxLength: 80 }),
    id.map((x) => `0::/system.slice/docker-${x}.scope`),
    fc.tuple(fc.uuid(), id).map(([u, x]) => `0::/kubepods.slice/kubepods-besteffort-pod${u.replace(/-/g, '_')}.slice/cri-containerd-${x}.scope`),
    fc.tuple(fc.nat(12), fc.string({ maxLength: 40 })).map(([n, s]) => `${n}:memory:/${s}`),
  ), { maxLength: 6 }).map((ls) => ls.join('\n'));
  check('cgroups', lines, (t) => {
    const c = parseCgroup(t);
    if (c.containerId !== undefined) assert.match(c.containerId, /^[0-9a-f]{64}$/);
    if (c.podUid !== undefined) assert.match(c.podUid, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    if (c.systemdUnit !== undefined) assert.match(c.systemdUnit, /^[^/]+\.service$/);
  }, 3000);
});

test('Kubernetes pod lists: any JSON loads or is refused as no PodList; what loads labels with strings only', () => {
  const str = fc.oneof(fc.string({ maxLength: 10 }), fc.constant(undefined), fc.integer(), fc.constant(null));
  const status = fc.record({ name: str, containerID: fc.oneof(str, fc.stringMatching(/^[0-9a-f]{12}$/).map((x) => `containerd://${x}`)) }, { requiredKeys: [] });
  const pod = fc.oneof(doc, fc.constant(null), fc.record({
    metadata: fc.oneof(doc, fc.record({ name: str, namespace: str, uid: str, labels: fc.oneof(doc, fc.constant('x')), ownerReferences: fc.oneof(doc, fc.array(fc.record({ kind: fc.oneof(str, fc.constant('ReplicaSet')), name: str, controller: fc.oneof(fc.boolean(), str) }, { requiredKeys: [] }), { maxLength: 2 })) }, { requiredKeys: [] })),
    status: fc.oneof(doc, fc.record({ containerStatuses: fc.oneof(doc, fc.array(fc.oneof(status, fc.constant(null)), { maxLength: 3 })), initContainerStatuses: fc.array(status, { maxLength: 2 }) }, { requiredKeys: [] })),
  }, { requiredKeys: [] }));
  const list = fc.oneof(fc.anything(), fc.record({ kind: str, items: fc.array(pod, { maxLength: 4 }) }, { requiredKeys: [] }));
  check('kubernetes', list, (l) => {
    const k = new KubeMetadata({ url: 'https://127.0.0.1:1', path: '/' }, Infinity);
    const json = JSON.stringify(l) ?? 'null';
    try {
      k.load(json);
    } catch (e) {
      assert.match((e as Error).message, /^not a PodList/);
      return;
    }
    const items = (l as { items?: unknown[] }).items ?? [];
    for (const p of items) {
      const md = (p as { metadata?: { uid?: unknown } } | null)?.metadata;
      if (typeof md?.uid !== 'string' || !md.uid) continue;
      const hit = k.lookup(undefined, md.uid);
      if (!hit) continue;
      for (const v of [hit.namespace, hit.pod, hit.deployment]) assert.equal(typeof v, 'string');
    }
  }, 3000);
});

test('tracefs format files: any text gives fields with whole offsets and sizes, never a throw', () => {
  const line = fc.oneof(
    fc.string({ maxLength: 60 }),
    fc.tuple(fc.stringMatching(/^[\w *[\]]{0,30}$/), fc.nat(4096), fc.nat(64), fc.nat(1)).map(([d, o, s, g]) => `\tfield:${d};\toffset:${o};\tsize:${s};\tsigned:${g};`),
  );
  check('tracefs', fc.array(line, { maxLength: 12 }).map((ls) => ls.join('\n')), (t) => {
    for (const f of parseFormat(t)) {
      assert.ok(Number.isInteger(f.offset) && Number.isInteger(f.size));
      assert.match(f.name, /^\w+$/);
    }
  });
});
