import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from '../../src/paths.js';
import { cgroup2Mount, eventually, exited, freePort, isRoot, sleep, startAgent, sum, tmpDir, type RunningAgent, type Sample } from '../helpers.js';

// A real Prometheus (Debian's) scraping two agents on this machine, each
// scoped to its own cgroup as if on two nodes: PromQL across both, the
// shipped rules, and every dashboard panel's query.

const DEPLOY = path.join(ROOT, 'deploy');
let dir: string;
let prom: ChildProcess | undefined;
let promPort = 0;
const agents: RunningAgent[] = [];
const cgroups: string[] = [];

async function query(expr: string, time?: number): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>> {
  const r = await fetch(`http://127.0.0.1:${promPort}/api/v1/query?query=${encodeURIComponent(expr)}${time ? `&time=${time}` : ''}`);
  const body = (await r.json()) as { status: string; error?: string; data?: { result: Array<{ metric: Record<string, string>; value: [number, string] }> } };
  assert.equal(body.status, 'success', `${expr}: ${body.error}`);
  return body.data!.result;
}

async function scalar(expr: string, time?: number): Promise<number> {
  const r = await query(expr, time);
  assert.equal(r.length, 1, `${expr}: ${JSON.stringify(r)}`);
  return Number(r[0]!.value[1]);
}

before(async () => {
  assert.ok(isRoot, 'the agents need root (CI runs as root)');
  dir = tmpDir('ks-prom');
  const base = cgroup2Mount();
  for (const node of ['a', 'b']) {
    const cg = `${base}/ks-node-${node}-${process.pid}`;
    fs.mkdirSync(cg);
    cgroups.push(cg);
    agents.push(await startAgent(`scope:\n  cgroup: ks-node-${node}-${process.pid}\ncollectIntervalSeconds: 1\n`));
  }
  promPort = await freePort();
  fs.writeFileSync(
    path.join(dir, 'prometheus.yml'),
    `global: { scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s }
rule_files: [${path.join(DEPLOY, 'prometheus', 'kernscope.rules.yml')}]
scrape_configs:
  - job_name: kernscope
    static_configs:
      - targets: ['127.0.0.1:${agents[0]!.port}']
        labels: { node: a }
      - targets: ['127.0.0.1:${agents[1]!.port}']
        labels: { node: b }
`,
  );
  prom = spawn('prometheus', [`--config.file=${dir}/prometheus.yml`, `--storage.tsdb.path=${dir}/data`, `--web.listen-address=127.0.0.1:${promPort}`], { stdio: ['ignore', 'ignore', fs.openSync(`${dir}/prometheus.log`, 'a')] });
  const ready = await eventually(async () => fetch(`http://127.0.0.1:${promPort}/-/ready`).then((r) => r.ok, () => false), 30_000, 200);
  assert.ok(ready, `prometheus did not start: ${fs.readFileSync(`${dir}/prometheus.log`, 'utf8').slice(-1500)}`);
  // Both agents up before any traffic.
  const up = await eventually(async () => (await query('sum(up{job="kernscope"})')).some((r) => Number(r.value[1]) === 2), 30_000, 250);
  assert.ok(up, 'both agents scraped');
});

after(async () => {
  if (prom?.pid && prom.exitCode === null) {
    process.kill(prom.pid, 'SIGTERM');
    await new Promise((r) => prom!.once('exit', r));
  }
  for (const a of agents) await a.stop();
  for (const cg of cgroups) {
    try {
      fs.rmdirSync(cg);
    } catch {
      // a process still leaving it; the kernel frees it when empty
    }
  }
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test('Prometheus over two agents: rate, error ratio, p99 and RTT across nodes, rules and dashboards', async () => {
  // One "checkout" replica per node: a server, and a client making new
  // connections for every request (RTT samples at each close).
  const server = fs.readFileSync(path.join(ROOT, 'test', 'fixtures', 'http-server.mjs'), 'utf8');
  const script = path.join(dir, 'checkout.mjs');
  fs.writeFileSync(script, server);
  const plans: Array<[number, number]> = [[270, 30], [180, 20]]; // [ok, failed] per node
  const servers: ChildProcess[] = [];
  const clients: ChildProcess[] = [];
  /** A Node process in a cgroup, kept until the test ends; resolves at its first line of output. */
  const alive = async (cg: string, args: string[]): Promise<void> => {
    const c = spawn('sh', ['-c', `echo $$ > ${cg}/cgroup.procs && exec "$0" "$@"`, process.execPath, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
    clients.push(c);
    await new Promise<void>((resolve, reject) => {
      c.stdout!.once('data', () => resolve());
      c.once('exit', (code) => reject(new Error(`${args.join(' ').slice(0, 80)} exited ${code}`)));
    });
  };
  try {
    const ports: number[] = [];
    for (const cg of cgroups) {
      const s = spawn('sh', ['-c', `echo $$ > ${cg}/cgroup.procs && exec "$0" "$@"`, process.execPath, script], { stdio: ['pipe', 'pipe', 'inherit'] });
      servers.push(s);
      ports.push(await new Promise<number>((resolve) => s.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim())))));
    }
    // One request first on each node, so that the series exist before the
    // rest: rate() needs a series to grow between two scrapes.
    // Clients stay alive until the end: a process is named (and placed in
    // its node's cgroup) while it runs.
    const client = path.join(ROOT, 'test', 'fixtures', 'http-client.mjs');
    for (const [i, cg] of cgroups.entries()) await alive(cg, [client, String(ports[i]), '0', JSON.stringify([{ method: 'GET', path: '/users/0' }])]);
    assert.ok(await eventually(async () => (await query('sum(http_server_request_duration_seconds_count{service_name="checkout"})')).some((r) => Number(r.value[1]) === 2), 15_000, 250), 'the first requests scraped');
    for (const [i, cg] of cgroups.entries()) {
      const [ok0, failed] = plans[i]!;
      const ok = ok0 - 1;
      const plan = [...Array.from({ length: ok }, (_, j) => ({ method: 'GET', path: `/users/${j}` })), ...Array.from({ length: failed }, () => ({ method: 'GET', path: '/fail' }))];
      await alive(cg, [client, String(ports[i]), '0', JSON.stringify(plan)]);
    }
    // And a connection refused on each node: failures and resets have series too.
    for (const cg of cgroups) {
      await alive(cg, ['-e', `require('net').connect(${await freePort()}, '127.0.0.1').on('error', () => console.log('refused')); process.stdin.resume()`]);
    }
    // A security alert on node a only: each agent raises its own node's.
    await alive(cgroups[0]!, ['-e', `require('fs').readFileSync('/etc/shadow'); console.log('read'); process.stdin.resume()`]);
    const rule = { rule: 'shadow-file-read' };
    assert.ok(await eventually(async () => sum(await agents[0]!.scrape(), 'kernscope_security_alerts_total', rule) === 1, 5000), 'node a raised it');
    assert.equal(sum(await agents[1]!.scrape(), 'kernscope_security_alerts_total', rule), 0);
    // Each agent sees its own node only.
    const own = async (a: RunningAgent): Promise<Sample[]> => a.scrape();
    await eventually(async () => sum(await own(agents[0]!), 'http_server_request_duration_seconds_count', { service_name: 'checkout' }) === 300, 10_000);
    await eventually(async () => sum(await own(agents[1]!), 'http_server_request_duration_seconds_count', { service_name: 'checkout' }) === 200, 10_000);
    // Prometheus has both once it scraped after the traffic.
    const total = 'sum(http_server_request_duration_seconds_count{service_name="checkout"})';
    assert.ok(await eventually(async () => (await query(total)).some((r) => Number(r.value[1]) === 500), 15_000, 500), 'both nodes scraped');
    assert.equal(await scalar(`sum by (node) (http_server_request_duration_seconds_count{service_name="checkout",node="a"})`), 300);
    assert.equal(await scalar(`sum(kernscope_http_requests_total{service_name="checkout",direction="server"})`), 500);
    // Error ratio across both nodes: 50 of 500.
    assert.equal(await scalar('sum(http_server_request_duration_seconds_count{service_name="checkout",http_response_status_code=~"5.."}) / sum(http_server_request_duration_seconds_count{service_name="checkout"})'), 0.1);
    // Request rate per service summed over nodes: the sum of each node's rate.
    await sleep(3000);
    const at = Date.now() / 1000; // one evaluation time for both queries
    const rate = await scalar('sum by (service_name) (rate(http_server_request_duration_seconds_count{service_name="checkout"}[1m]))', at);
    const perNode = (await query('sum by (node) (rate(http_server_request_duration_seconds_count{service_name="checkout"}[1m]))', at)).map((r) => Number(r.value[1]));
    assert.equal(perNode.length, 2);
    assert.ok(rate > 0 && Math.abs(rate - perNode[0]! - perNode[1]!) < 1e-9, `${rate} vs ${perNode.join(' + ')}`);
    // p99 from the merged histogram: inside the bucket that holds the 99th request.
    const p99 = await scalar('histogram_quantile(0.99, sum by (le) (http_server_request_duration_seconds_bucket{service_name="checkout"}))');
    const buckets = (await query('sum by (le) (http_server_request_duration_seconds_bucket{service_name="checkout"})')).map((r) => [r.metric.le === '+Inf' ? Infinity : Number(r.metric.le), Number(r.value[1])] as [number, number]).sort((x, y) => x[0] - y[0]);
    const upper = buckets.find(([, c]) => c >= 0.99 * 500)![0];
    const lower = [...buckets].reverse().find(([le, c]) => le < upper && c < 0.99 * 500)?.[0] ?? 0;
    assert.ok(p99 > lower && p99 <= upper, `p99 ${p99} in (${lower}, ${upper}]`);
    // TCP RTT quantiles: one sample per closed connection, both nodes.
    const rtt = await scalar('histogram_quantile(0.5, sum by (le) (kernscope_tcp_rtt_seconds_bucket{service="checkout"}))');
    assert.ok(rtt > 0 && rtt < 0.1, `loopback RTT p50 ${rtt} s`);
    // The shipped rules load and evaluate here.
    const rules = (await (await fetch(`http://127.0.0.1:${promPort}/api/v1/rules`)).json()) as { data: { groups: Array<{ rules: Array<{ health: string; name: string }> }> } };
    const all = rules.data.groups.flatMap((g) => g.rules);
    assert.ok(all.length >= 11 && all.every((r) => r.health !== 'err'), JSON.stringify(all.filter((r) => r.health === 'err')));
    assert.ok(await eventually(async () => (await query('service:http_server_requests:rate5m{service_name="checkout"}')).length === 1, 10_000, 500));
    // Every dashboard panel's query parses and returns data while traffic ran.
    for (const f of fs.readdirSync(path.join(DEPLOY, 'grafana')).filter((x) => x.endsWith('.json'))) {
      const d = JSON.parse(fs.readFileSync(path.join(DEPLOY, 'grafana', f), 'utf8')) as { panels: Array<{ title: string; targets: Array<{ expr: string }> }> };
      for (const p of d.panels) {
        for (const t of p.targets) {
          const expr = t.expr.replace(/\$__rate_interval/g, '1m').replace(/\$service/g, '.*');
          const r = await query(expr);
          // Some panels have data only where something went wrong (a security
          // alert, a failed socket call, a cgroup throttled by a CPU quota),
          // where a cgroup has a memory limit, or while connections are open
          // (the traffic here has ended).
          if (!/security_alerts|socket_errors|cpu_throttled|memory_limit|connections_open/.test(expr)) assert.ok(r.length > 0, `${f}: "${p.title}": no data for ${expr}`);
        }
      }
    }
  } finally {
    for (const s of [...servers, ...clients]) {
      s.stdin!.end();
      await exited(s);
    }
  }
});
