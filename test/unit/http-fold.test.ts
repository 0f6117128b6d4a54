// The HTTP fold without root: kernel entries are written here by the
// layout of the compiled object's BTF (opened, never loaded), folded twice,
// and the exported series checked exactly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BpfObject, type MapEntry } from '../../src/bpf/object.js';
import { bpfObjectPath } from '../../src/paths.js';
import { DEFAULT_CONFIG } from '../../src/config/schema.js';
import { MetricsRegistry } from '../../src/metrics/registry.js';
import { HttpLayout } from '../../src/collectors/http/decode.js';
import { HttpExport } from '../../src/collectors/http/export.js';
import { HttpFold, type KeyName, type KernelProc } from '../../src/collectors/http/fold.js';
import { parseMetrics, type Sample } from '../helpers.js';

const obj = BpfObject.openUnloaded(bpfObjectPath('http.bpf.o'));
const L = new HttpLayout(obj);
const methods = obj.enumValues('ks_http_method', ['HTTP_METHOD_GET', 'HTTP_METHOD_POST'] as const);
const VALUE = obj.struct('ks_http_agg', ['duration'] as const).size;
const DURATION_BOUNDS = [0.005, 0.01, 0.025, 0.05];

interface Entry {
  tgid: number;
  server: boolean;
  method?: number;
  status: number;
  port: number;
  name?: bigint;
  /** Requests by duration bucket (seconds), and response body sizes. */
  durations: number[];
  respBody?: number;
}

function key(e: Entry): Buffer {
  const k = Buffer.alloc(L.key.size);
  k.writeUInt32LE(e.tgid, L.key.tgid);
  k.writeUInt8(e.server ? L.roles.server : L.roles.client, L.key.role);
  k.writeUInt8(e.method ?? methods.HTTP_METHOD_GET, L.key.method);
  k.writeUInt16LE(e.status, L.key.status);
  k.writeUInt16LE(e.port, L.key.port);
  if (e.name) k.writeBigUInt64LE(e.name, L.key.name);
  if (!e.server) {
    k.writeUInt8(2, L.key.family);
    Buffer.from([127, 0, 0, 1]).copy(k, L.key.addr);
  }
  return k;
}

/** A summed value as the addon hands it over: u64 slots of struct ks_http_agg. */
function value(e: Entry): Buffer {
  const v = Buffer.alloc(VALUE);
  const H = L.hist;
  const put = (slot: number, n: number): void => {
    v.writeBigUInt64LE(BigInt(Math.round(n)), slot * 8);
  };
  const bucket = (s: number): number => DURATION_BOUNDS.findIndex((b) => s <= b);
  put(H.duration + H.count, e.durations.length);
  put(H.duration + H.sum, e.durations.reduce((a, s) => a + s * 1e9, 0));
  for (const s of e.durations) {
    const b = bucket(s) < 0 ? DURATION_BOUNDS.length : bucket(s);
    const slot = H.duration + H.buckets + b;
    put(slot, Number(v.readBigUInt64LE(slot * 8)) + 1);
  }
  if (e.respBody !== undefined) {
    put(H.respBody + H.count, e.durations.length);
    put(H.respBody + H.sum, e.respBody * e.durations.length);
    put(H.respBody + H.buckets + 3, e.durations.length); // (64, 128]
  }
  return v;
}

function setup(names: Record<string, KeyName>, procs: Record<number, KernelProc>) {
  const metrics = new MetricsRegistry();
  const drops: Record<string, number> = {};
  const forgotten: string[] = [];
  const config = { ...DEFAULT_CONFIG, collectors: { ...DEFAULT_CONFIG.collectors, http: { ...DEFAULT_CONFIG.collectors.http, maxRoutesPerService: 2 } } };
  const out = new HttpExport(metrics, config, DURATION_BOUNDS, () => (drops.label_overflow = (drops.label_overflow ?? 0) + 1));
  const fold = new HttpFold(L, {
    proc: (tgid) => procs[tgid] ?? { live: false, comm: '', argv: [] },
    name: (hex) => names[hex],
    forget: (k) => forgotten.push(k.toString('hex')),
  }, out, {
    namer: { names: (tgid, comm) => ({ process: comm, service: comm || `pid-${tgid}`, inScope: true, meta: {} }) },
    routes: { api: ['/users/{id}'] },
    maxRoutesPerService: 2,
    drop: (reason, n) => (drops[reason] = (drops[reason] ?? 0) + n),
  });
  const scrape = async (): Promise<Sample[]> => parseMetrics((await metrics.render(false)).body);
  return { fold, drops, forgotten, scrape };
}

const hex = (n: bigint): string => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return b.toString('hex');
};

function pick(m: Sample[], name: string, labels: Record<string, string>): number {
  return m.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((a, s) => a + s.value, 0);
}

test('entries become series; a second fold adds only the growth', async () => {
  const route = 0x1234n;
  const { fold, scrape } = setup(
    { [hex(route)]: { kind: L.nameKinds.route, complete: true, text: '/users/42' } },
    { 10: { live: true, comm: 'api', argv: [] } },
  );
  const e: Entry = { tgid: 10, server: true, status: 200, port: 8080, name: route, durations: [0.001, 0.002, 0.03], respBody: 100 };
  const entries = (x: Entry[]): MapEntry[] => x.map((y) => ({ key: key(y), value: value(y) }));
  fold.fold(entries([e]), false);
  let m = await scrape();
  const labels = { service_name: 'api', http_request_method: 'GET', http_response_status_code: '200', http_route: '/users/{id}' };
  assert.equal(pick(m, 'http_server_request_duration_seconds_count', labels), 3);
  assert.equal(pick(m, 'http_server_request_duration_seconds_bucket', { ...labels, le: '0.005' }), 2);
  assert.equal(pick(m, 'http_server_request_duration_seconds_bucket', { ...labels, le: '0.025' }), 2);
  assert.equal(pick(m, 'http_server_request_duration_seconds_bucket', { ...labels, le: '0.05' }), 3);
  assert.ok(Math.abs(pick(m, 'http_server_request_duration_seconds_sum', labels) - 0.033) < 1e-9);
  assert.equal(pick(m, 'http_server_response_body_size_bytes_count', labels), 3);
  assert.equal(pick(m, 'kernscope_http_requests_total', { service_name: 'api', direction: 'server', status_class: '2xx' }), 3);

  // Cumulative in the kernel: the same values again add nothing, two more add two.
  fold.fold(entries([e]), false);
  fold.fold(entries([{ ...e, durations: [...e.durations, 0.004, 1] }]), false);
  m = await scrape();
  assert.equal(pick(m, 'http_server_request_duration_seconds_count', labels), 5);
  assert.equal(pick(m, 'http_server_request_duration_seconds_bucket', { ...labels, le: '0.005' }), 3);
  assert.equal(pick(m, 'http_server_request_duration_seconds_bucket', { ...labels, le: '+Inf' }), 5);
  assert.equal(pick(m, 'kernscope_http_requests_total', { direction: 'server' }), 5);
});

test('aborted, lost names, overflow, route cap and client errors', async () => {
  const [r1, r2, r3, host] = [0x11n, 0x22n, 0x33n, 0x44n];
  const { fold, drops, scrape } = setup(
    {
      [hex(r1)]: { kind: L.nameKinds.route, complete: true, text: '/a' },
      [hex(r2)]: { kind: L.nameKinds.route, complete: true, text: '/b' },
      [hex(r3)]: { kind: L.nameKinds.route, complete: true, text: '/c' },
      [hex(host)]: { kind: L.nameKinds.host, complete: true, text: '[::1]' },
    },
    { 20: { live: true, comm: 'web', argv: [] }, 30: { live: true, comm: 'cli', argv: [] } },
  );
  const srv = (x: Partial<Entry>): Entry => ({ tgid: 20, server: true, status: 200, port: 80, durations: [0.001], ...x });
  fold.fold([
    srv({ status: 0, name: r1, durations: [0.1, 0.2] }), // closed before any response
    srv({ name: 0x99n }), // its bytes lost in the kernel
    srv({ name: r1 }),
    srv({ name: r2, method: methods.HTTP_METHOD_POST }),
    srv({ name: r3 }), // a third route past the cap of 2
    { tgid: 30, server: false, status: 503, port: 8443, name: host, durations: [0.01] },
    { tgid: 30, server: false, status: 0, port: 8443, durations: [0.02] }, // no response
  ].map((e) => ({ key: key(e), value: value(e) })), false);
  fold.fold([srv({ durations: [0.001, 0.002, 0.003, 0.004] })].map((e) => ({ key: key(e), value: value(e) })), true);
  const m = await scrape();
  assert.equal(pick(m, 'kernscope_http_server_requests_aborted_total', { service_name: 'web' }), 2);
  assert.equal(pick(m, 'kernscope_http_requests_total', { service_name: 'web', status_class: 'none' }), 2);
  assert.equal(pick(m, 'http_server_request_duration_seconds_count', { http_route: '_unknown' }), 1);
  assert.equal(drops.name_lost, 1);
  assert.equal(pick(m, 'http_server_request_duration_seconds_count', { http_route: '/a', http_request_method: 'GET' }), 1);
  assert.equal(pick(m, 'http_server_request_duration_seconds_count', { http_route: '/b', http_request_method: 'POST' }), 1);
  assert.equal(pick(m, 'http_server_request_duration_seconds_count', { http_route: '_other' }), 1);
  assert.equal(drops.route_overflow, 1);
  assert.equal(pick(m, 'http_server_request_duration_seconds_count', { http_route: '_overflow', http_request_method: '_OTHER' }), 4);
  assert.equal(pick(m, 'http_client_request_duration_seconds_count', { service_name: 'cli', server_address: '::1', server_port: '8443', error_type: '503' }), 1);
  assert.equal(pick(m, 'http_client_request_duration_seconds_count', { service_name: 'cli', server_address: '127.0.0.1', error_type: 'connection_closed' }), 1);
  // Every request of the table is in the totals, whatever its labels.
  assert.equal(pick(m, 'kernscope_http_requests_total', {}), 2 + 1 + 1 + 1 + 1 + 1 + 1 + 4);
});

test('an exited process is read a last time, then forgotten', async () => {
  const { fold, forgotten, scrape } = setup({}, { 40: { live: false, comm: 'curl', argv: [] } });
  const e: Entry = { tgid: 40, server: false, status: 200, port: 80, durations: [0.003] };
  fold.fold([{ key: key(e), value: value(e) }], false);
  assert.deepEqual(forgotten, [key(e).toString('hex')]);
  const m = await scrape();
  assert.equal(pick(m, 'http_client_request_duration_seconds_count', { service_name: 'curl' }), 1);
});
