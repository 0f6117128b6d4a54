import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { eventually, freePort, isRoot, sleep, startAgent, sum, tmpDir, type Sample } from '../helpers.js';

/** nginx from Debian's package, on loopback, with its own config and log. */
async function startNginx(): Promise<{ port: number; dir: string; stop: () => Promise<void> }> {
  const dir = tmpDir('ks-nginx');
  const port = await freePort();
  fs.mkdirSync(path.join(dir, 'www'));
  fs.writeFileSync(path.join(dir, 'www', 'index.html'), '<h1>hello</h1>\n');
  fs.writeFileSync(path.join(dir, 'www', 'big.bin'), Buffer.alloc(100_000, 7));
  fs.writeFileSync(
    path.join(dir, 'nginx.conf'),
    `user root;
daemon off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
events { worker_connections 256; }
http {
  sendfile on;
  keepalive_requests 100000;
  log_format st '$status $request_method $uri';
  access_log ${dir}/access.log st;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${port};
    root ${dir}/www;
    location = /teapot { return 418; }
    location = /err { return 503; }
  }
}
`,
  );
  const child = spawn('nginx', ['-c', path.join(dir, 'nginx.conf'), '-p', dir], { stdio: ['ignore', 'inherit', 'inherit'] });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  assert.ok(await eventually(async () => fetch(`http://127.0.0.1:${port}/index.html`).then((r) => r.ok, () => false), 5000), 'nginx starts');
  return {
    port,
    dir,
    stop: async () => {
      process.kill(child.pid!, 'SIGQUIT'); // graceful: workers finish and flush the log
      const t = setTimeout(() => child.exitCode === null && process.kill(child.pid!, 'SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}

test('nginx under wrk: counts per status equal nginx\'s access log', async () => {
  assert.ok(isRoot, 'nginx and the agent run as root here (CI runs as root)');
  const nginx = await startNginx();
  const agent = await startAgent('collectIntervalSeconds: 0.5\n');
  try {
    fs.writeFileSync(path.join(nginx.dir, 'access.log'), ''); // only the load below
    execFileSync('nginx', ['-c', path.join(nginx.dir, 'nginx.conf'), '-p', nginx.dir, '-s', 'reopen']);
    await sleep(200);
    const script = path.join(nginx.dir, 'paths.lua');
    fs.writeFileSync(
      script,
      `local paths = {"/index.html", "/big.bin", "/missing", "/teapot", "/err", "/index.html"}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
`,
    );
    // Bounded: 2 connections, 2 seconds, loopback only.
    execFileSync('wrk', ['-t1', '-c2', '-d2s', '-s', script, `http://127.0.0.1:${nginx.port}/`], { stdio: 'pipe' });
    await sleep(300);
    const log = fs.readFileSync(path.join(nginx.dir, 'access.log'), 'utf8').trim().split('\n').filter(Boolean);
    const want: Record<string, number> = {};
    for (const line of log) {
      const [status, method, uri] = line.split(' ');
      const route = uri === '/index.html' || uri === '/big.bin' ? uri : uri;
      const k = `${method} ${route} ${status}`;
      want[k] = (want[k] ?? 0) + 1;
    }
    assert.ok(log.length > 100, `wrk made ${log.length} requests`);
    let m: Sample[] = [];
    const s = { service_name: 'nginx' };
    const done = await eventually(async () => {
      m = await agent.scrape();
      const counted = sum(m, 'http_server_request_duration_seconds_count', s) + sum(m, 'kernscope_http_server_requests_aborted_total', s);
      return counted + sum(m, 'kernscope_events_dropped_total', { source: 'http' }) >= log.length;
    }, 8000);
    assert.ok(done, 'every request is counted or its loss is');
    assert.equal(sum(m, 'kernscope_events_dropped_total', { source: 'http' }), 0, 'no loss at this rate');
    const got: Record<string, number> = {};
    for (const x of m) {
      if (x.name !== 'http_server_request_duration_seconds_count' || x.labels.service_name !== 'nginx') continue;
      got[`${x.labels.http_request_method} ${x.labels.http_route} ${x.labels.http_response_status_code}`] = x.value;
    }
    // 499: wrk closed a connection with a request in flight at its end.
    const aborted = Object.entries(want).filter(([k]) => k.endsWith(' 499')).reduce((a, [, v]) => a + v, 0);
    for (const k of Object.keys(want)) if (k.endsWith(' 499')) delete want[k];
    assert.deepEqual(got, want);
    assert.equal(sum(m, 'kernscope_http_server_requests_aborted_total', s), aborted);
    // Static bodies go out through sendfile(2); their size comes from Content-Length.
    const big = { service_name: 'nginx', http_route: '/big.bin' };
    assert.equal(sum(m, 'http_server_response_body_size_bytes_sum', big), 100_000 * sum(m, 'http_server_response_body_size_bytes_count', big));
  } finally {
    await agent.stop();
    await nginx.stop();
    fs.rmSync(nginx.dir, { recursive: true, force: true });
  }
});

test('nginx under wrk at full speed: every request in the histograms, per status as in the access log, no drops', async () => {
  assert.ok(isRoot, 'nginx and the agent run as root here (CI runs as root)');
  const nginx = await startNginx();
  const agent = await startAgent('collectIntervalSeconds: 0.5\n');
  try {
    fs.writeFileSync(path.join(nginx.dir, 'access.log'), '');
    execFileSync('nginx', ['-c', path.join(nginx.dir, 'nginx.conf'), '-p', nginx.dir, '-s', 'reopen']);
    await sleep(200);
    const script = path.join(nginx.dir, 'mix.lua');
    fs.writeFileSync(script, `local paths = {"/index.html", "/index.html", "/index.html", "/missing", "/teapot"}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
`);
    // As fast as wrk goes, bounded: 32 connections for 3 seconds, loopback only.
    execFileSync('wrk', ['-t1', '-c32', '-d3s', '-s', script, `http://127.0.0.1:${nginx.port}/`], { stdio: 'pipe' });
    await sleep(300);
    const log = fs.readFileSync(path.join(nginx.dir, 'access.log'), 'utf8').trim().split('\n').filter(Boolean);
    const want: Record<string, number> = {};
    for (const line of log) {
      const status = line.split(' ')[0]!;
      want[status] = (want[status] ?? 0) + 1;
    }
    assert.ok(log.length > 5000, `wrk made ${log.length} requests`);
    const aborted = want['499'] ?? 0;
    delete want['499'];
    let m: Sample[] = [];
    const s = { service_name: 'nginx' };
    await eventually(async () => sum((m = await agent.scrape()), 'http_server_request_duration_seconds_count', s) + sum(m, 'kernscope_http_server_requests_aborted_total', s) >= log.length, 8000);
    const got: Record<string, number> = {};
    for (const x of m) {
      if (x.name !== 'http_server_request_duration_seconds_count' || x.labels.service_name !== 'nginx') continue;
      const st = x.labels.http_response_status_code!;
      got[st] = (got[st] ?? 0) + x.value;
    }
    assert.deepEqual(got, want);
    assert.equal(sum(m, 'kernscope_http_server_requests_aborted_total', s), aborted);
    assert.equal(sum(m, 'kernscope_events_dropped_total', { source: 'http' }), 0);
  } finally {
    await agent.stop();
    await nginx.stop();
    fs.rmSync(nginx.dir, { recursive: true, force: true });
  }
});
