import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { eventually, freePort, isRoot, startAgent, sum, tmpDir, type Sample } from '../helpers.js';

// Apache with the prefork MPM: a process per connection, every one of them
// reading and writing its own sockets. Under `ab -k` it used to lose a third
// of its records to a full ring buffer; aggregated in the kernel, every
// request is counted.

test('Apache prefork under ab -k: every request counted, with its route and status', async () => {
  assert.ok(isRoot, 'the agent runs as root here (CI runs as root)');
  const dir = tmpDir('ks-apache');
  fs.chmodSync(dir, 0o755);
  fs.mkdirSync(path.join(dir, 'www'));
  fs.writeFileSync(path.join(dir, 'www', 'index.html'), '<h1>hello</h1>\n');
  fs.chmodSync(path.join(dir, 'www'), 0o755);
  fs.chmodSync(path.join(dir, 'www', 'index.html'), 0o644);
  const port = await freePort();
  const conf = path.join(dir, 'httpd.conf');
  fs.writeFileSync(conf, `ServerRoot ${dir}
LoadModule mpm_prefork_module /usr/lib/apache2/modules/mod_mpm_prefork.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
Listen 127.0.0.1:${port}
ServerName localhost
User www-data
Group www-data
PidFile ${dir}/httpd.pid
ErrorLog ${dir}/error.log
DocumentRoot ${dir}/www
KeepAlive On
MaxKeepAliveRequests 0
StartServers 4
MinSpareServers 4
MaxSpareServers 8
MaxRequestWorkers 16
<Directory ${dir}/www>
Require all granted
</Directory>
`);
  const agent = await startAgent('collectIntervalSeconds: 0.5\n');
  execFileSync('/usr/sbin/apache2', ['-f', conf, '-k', 'start']);
  try {
    assert.ok(await eventually(async () => fetch(`http://127.0.0.1:${port}/index.html`).then((r) => r.ok, () => false), 5000), 'apache starts');
    const before = sum(await agent.scrape(), 'http_server_request_duration_seconds_count', { service_name: 'apache2' });
    // Bounded: 3000 requests over 8 keep-alive connections, loopback only.
    const N = 3000;
    const out = execFileSync('ab', ['-q', '-k', '-c', '8', '-n', String(N), `http://127.0.0.1:${port}/index.html`], { encoding: 'utf8' });
    assert.match(out, /Complete requests:\s+3000/);
    assert.match(out, /Failed requests:\s+0/);
    let m: Sample[] = [];
    const s = { service_name: 'apache2', http_route: '/index.html', http_response_status_code: '200', http_request_method: 'GET' };
    await eventually(async () => sum((m = await agent.scrape()), 'http_server_request_duration_seconds_count', s) - before >= N, 8000);
    assert.equal(sum(m, 'http_server_request_duration_seconds_count', s) - before, N);
    assert.equal(sum(m, 'http_client_request_duration_seconds_count', { service_name: 'ab', server_port: String(port), http_response_status_code: '200' }), N);
    assert.equal(sum(m, 'kernscope_events_dropped_total', { source: 'http' }), 0);
  } finally {
    execFileSync('/usr/sbin/apache2', ['-f', conf, '-k', 'stop']);
    await agent.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
