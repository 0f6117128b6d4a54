// The protected endpoint: a web configuration file in exporter-toolkit's
// format (TLS, client certificates, bcrypt basic auth) guards /metrics,
// /events and /healthz; a real Prometheus scrapes through it; a bad file is
// refused with the key named; a changed file takes effect without a restart.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import http from 'node:http';
import path from 'node:path';
import bcrypt from 'bcryptjs';
import { eventually, freePort, isRoot, runCli, startAgent, tmpDir, type RunningAgent } from '../helpers.js';

let dir: string;
let agent: RunningAgent;
let prom: ChildProcess | undefined;
const f = (name: string): string => path.join(dir, name);

function openssl(args: string[]): void {
  execFileSync('openssl', args, { stdio: 'ignore' });
}

/** A CA, and a certificate it signs for `cn` (with an IP SAN for a server). */
function pki(): void {
  for (const ca of ['ca', 'rogue']) {
    openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', `/CN=ks-${ca}`, '-keyout', f(`${ca}.key`), '-out', f(`${ca}.crt`)]);
  }
  const issue = (name: string, ca: string, ext: string): void => {
    openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', `/CN=${name}`, '-keyout', f(`${name}.key`), '-out', f(`${name}.csr`)]);
    fs.writeFileSync(f(`${name}.ext`), ext);
    openssl(['x509', '-req', '-in', f(`${name}.csr`), '-CA', f(`${ca}.crt`), '-CAkey', f(`${ca}.key`), '-CAcreateserial', '-days', '2', '-extfile', f(`${name}.ext`), '-out', f(`${name}.crt`)]);
  };
  issue('server', 'ca', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  issue('client', 'ca', 'extendedKeyUsage=clientAuth\n');
  issue('intruder', 'rogue', 'extendedKeyUsage=clientAuth\n');
}

function webConfig(users: Record<string, string>): string {
  return `tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.crt
  min_version: TLS12
http_server_config:
  headers:
    X-Content-Type-Options: nosniff
basic_auth_users:
${Object.entries(users).map(([u, p]) => `  ${u}: '${bcrypt.hashSync(p, 4)}'`).join('\n')}
`;
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One GET over TLS with a client certificate (or none) and credentials (or none). */
function get(urlPath: string, opts: { cert?: string; user?: string; password?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port: agent.port,
        path: urlPath,
        ca: fs.readFileSync(f('ca.crt')),
        ...(opts.cert ? { cert: fs.readFileSync(f(`${opts.cert}.crt`)), key: fs.readFileSync(f(`${opts.cert}.key`)) } : {}),
        ...(opts.user ? { auth: `${opts.user}:${opts.password}` } : {}),
        agent: false,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        // /events never ends: its first line is enough.
        res.on('data', (d: string) => {
          body += d;
          if (urlPath === '/events') res.destroy();
        });
        const done = (): void => resolve({ status: res.statusCode!, headers: res.headers, body });
        res.on('end', done);
        res.on('close', done);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

before(async () => {
  assert.ok(isRoot, 'the agent needs root (CI runs as root)');
  dir = tmpDir('ks-web');
  pki();
  fs.writeFileSync(f('web.yml'), webConfig({ prometheus: 'scrape-me', ops: 'another one' }));
  agent = await startAgent('', ['--web.config.file', f('web.yml')]);
});

after(async () => {
  if (prom?.pid && prom.exitCode === null) {
    process.kill(prom.pid, 'SIGTERM');
    await new Promise((r) => prom!.once('exit', r));
  }
  if (agent) assert.equal(await agent.stop(), 0);
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test('every endpoint wants a client certificate from the CA and a user with the right password', async () => {
  assert.match(agent.stderr(), new RegExp(`serving metrics at https://127\\.0\\.0\\.1:${agent.port}/metrics \\(basic auth\\)`));
  const auth = { cert: 'client', user: 'prometheus', password: 'scrape-me' };
  for (const p of ['/metrics', '/events', '/healthz']) {
    // No certificate, or one from another CA: no TLS session at all.
    await assert.rejects(get(p, { user: 'prometheus', password: 'scrape-me' }), p);
    await assert.rejects(get(p, { ...auth, cert: 'intruder' }), p);
    const none = await get(p, { cert: 'client' });
    assert.equal(none.status, 401, p);
    assert.equal(none.headers['www-authenticate'], 'Basic');
    assert.equal((await get(p, { ...auth, password: 'scrape-me!' })).status, 401, p);
    assert.equal((await get(p, { ...auth, user: 'nobody' })).status, 401, p);
    const ok = await get(p, auth);
    assert.equal(ok.status, 200, p);
    assert.equal(ok.headers['x-content-type-options'], 'nosniff');
  }
  assert.match((await get('/metrics', auth)).body, /^kernscope_build_info\{/m);
  assert.equal((await get('/healthz', { cert: 'client', user: 'ops', password: 'another one' })).body, 'ok\n');
  assert.match((await get('/events', auth)).body, /^: kernscope events/);
  // Plain HTTP gets no answer from a TLS port.
  await assert.rejects(fetch(`http://127.0.0.1:${agent.port}/healthz`));
});

test('a real Prometheus scrapes over TLS with its client certificate and basic auth', async () => {
  const promPort = await freePort();
  fs.writeFileSync(
    f('prometheus.yml'),
    `global: { scrape_interval: 1s, scrape_timeout: 1s }
scrape_configs:
  - job_name: ks
    scheme: https
    tls_config: { ca_file: ${f('ca.crt')}, cert_file: ${f('client.crt')}, key_file: ${f('client.key')} }
    basic_auth: { username: prometheus, password: scrape-me }
    static_configs: [{ targets: ['127.0.0.1:${agent.port}'] }]
  - job_name: ks-no-auth
    scheme: https
    tls_config: { ca_file: ${f('ca.crt')}, cert_file: ${f('client.crt')}, key_file: ${f('client.key')} }
    static_configs: [{ targets: ['127.0.0.1:${agent.port}'] }]
`,
  );
  prom = spawn('prometheus', [`--config.file=${f('prometheus.yml')}`, `--storage.tsdb.path=${f('data')}`, `--web.listen-address=127.0.0.1:${promPort}`], { stdio: ['ignore', 'ignore', fs.openSync(f('prometheus.log'), 'a')] });
  const q = async (expr: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>> => {
    const r = await fetch(`http://127.0.0.1:${promPort}/api/v1/query?query=${encodeURIComponent(expr)}`).catch(() => undefined);
    if (!r?.ok) return [];
    return ((await r.json()) as { data: { result: Array<{ metric: Record<string, string>; value: [number, string] }> } }).data.result;
  };
  const scraped = await eventually(async () => (await q('kernscope_build_info')).length === 1 && (await q('up{job="ks-no-auth"}')).length === 1, 30_000, 250);
  assert.ok(scraped, fs.readFileSync(f('prometheus.log'), 'utf8').slice(-1500));
  assert.equal((await q('up{job="ks"}'))[0]!.value[1], '1');
  assert.equal((await q('up{job="ks-no-auth"}'))[0]!.value[1], '0');
  assert.equal((await q('kernscope_build_info'))[0]!.metric.job, 'ks');
});

test('a changed file takes effect without a restart; a broken one leaves the last in force', async () => {
  const auth = { cert: 'client', user: 'prometheus', password: 'scrape-me' };
  fs.writeFileSync(f('web.yml'), webConfig({ prometheus: 'rotated' }));
  assert.ok(await eventually(async () => (await get('/healthz', auth)).status === 401, 15_000, 250), 'the old password still works');
  assert.equal((await get('/healthz', { ...auth, password: 'rotated' })).status, 200);
  fs.writeFileSync(f('web.yml'), 'basic_auth_users: {prometheus: not-a-hash}\n');
  assert.ok(await eventually(async () => /web config: .*basic_auth_users\.prometheus: expected a bcrypt hash.*the last one stays in force/.test(agent.stderr()), 15_000, 250), agent.stderr());
  assert.equal((await get('/healthz', { ...auth, password: 'rotated' })).status, 200);
  // SIGHUP reads it again too, whether or not it changed.
  fs.writeFileSync(f('web.yml'), webConfig({ prometheus: 'after-hup' }));
  process.kill(agent.child.pid!, 'SIGHUP');
  assert.ok(await eventually(async () => (await get('/healthz', { ...auth, password: 'after-hup' })).status === 200, 5000));
});

test('a bad web config file: exit 2, the key named', async () => {
  const cases: Array<[string, RegExp]> = [
    ['tls_server_config: {cert_file: server.crt, key_file: server.key, colour: red}\n', /tls_server_config\.colour: unknown key/],
    ['basic_auth_users: {prometheus: plain-text}\n', /basic_auth_users\.prometheus: expected a bcrypt hash/],
    ['tls_server_config: {cert_file: server.crt}\n', /tls_server_config: cert_file and key_file go together/],
    ['tls_server_config: {cert_file: server.crt, key_file: server.key, client_ca_file: ca.crt}\n', /tls_server_config\.client_auth_type: client_ca_file is set/],
    ['tls_server_config: {cert_file: server.crt, key_file: client.key}\n', /tls_server_config: the key does not go with the certificate/],
    ['tls_server_config: {cert_file: missing.crt, key_file: server.key}\n', /tls_server_config\.cert_file: ENOENT/],
    ['tls_server_config: {cert_file: server.crt, key_file: server.key, min_version: TLS14}\n', /tls_server_config\.min_version: expected one of/],
    ['%TAG ! tag:x\n--- !nope\n', /invalid YAML/],
  ];
  for (const [yaml, re] of cases) {
    fs.writeFileSync(f('bad.yml'), yaml);
    const r = await runCli(['run', '--listen', '127.0.0.1:0', '--web.config.file', f('bad.yml')]);
    assert.equal(r.code, 2, `${yaml}: ${r.stderr}`);
    assert.match(r.stderr, re, yaml);
    assert.match(r.stderr, new RegExp(`^kernscope: ${f('bad.yml').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `));
  }
});
