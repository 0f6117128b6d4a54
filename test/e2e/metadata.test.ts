import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { ROOT } from '../../src/paths.js';
import { cgroup2Mount, eventually, exited, isRoot, startAgent, sum, tmpDir, type Sample } from '../helpers.js';

// Container and pod labels: a real process in a cgroup shaped as containerd
// makes it under Kubernetes, pods from a local server that answers with the
// Kubernetes API's own PodList JSON (no cluster runs here).

const ID = 'c0ffee00112233445566778899aabbccddeeff00112233445566778899aabbcc';
const UID = '6b2d1b1e-5c3d-4f8a-9e2b-0c1d2e3f4a5b';
let dir: string;
let base: string;
const made: string[] = [];

/** Makes a cgroup path (parents first) to be removed after. */
function mkcg(rel: string): string {
  let p = base;
  for (const part of rel.split('/')) {
    p = `${p}/${part}`;
    if (!fs.existsSync(p)) {
      fs.mkdirSync(p);
      made.unshift(p);
    }
  }
  return p;
}

/** The HTTP test server, started inside a cgroup; resolves with it and its port. */
async function serverIn(cg: string): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn('sh', ['-c', `echo $$ > ${cg}/cgroup.procs && exec "$0" "$@"`, process.execPath, path.join(ROOT, 'test', 'fixtures', 'http-server.mjs')], { stdio: ['pipe', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve) => child.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))));
  return { child, port };
}

before(() => {
  assert.ok(isRoot, 'cgroups and the agent need root (CI runs as root)');
  dir = tmpDir('ks-meta');
  base = cgroup2Mount();
});

after(() => {
  for (const p of made) {
    try {
      fs.rmdirSync(p);
    } catch {
      // still populated for a moment
    }
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

test('Kubernetes labels from the API for a containerd container; container id and systemd unit without it', async () => {
  const pod = mkcg(`kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID.replace(/-/g, '_')}.slice/cri-containerd-${ID}.scope`);
  const unit = mkcg(`ks-test.slice/ks-web-${process.pid}.service`);
  const list = fs.readFileSync(path.join(ROOT, 'test', 'fixtures', 'k8s', 'podlist.json'), 'utf8').replace('POD_UID', UID).replace('CONTAINER_ID', ID);
  let asked = 0;
  const paths: string[] = [];
  const api = http.createServer((req, res) => {
    // The agent asks as the API (or a kubelet, at /pods) expects: the pod
    // list, with its bearer token.
    paths.push(req.url ?? '');
    if (!(req.url?.startsWith('/api/v1/pods') || req.url === '/pods') || req.headers.authorization !== 'Bearer test-token') {
      res.writeHead(403, { 'content-type': 'application/json' });
      res.end('{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403}');
      return;
    }
    asked++;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(list);
  });
  await new Promise<void>((r) => api.listen(0, '127.0.0.1', () => r()));
  const apiPort = (api.address() as { port: number }).port;
  fs.writeFileSync(path.join(dir, 'token'), 'test-token\n');
  const web = await serverIn(pod);
  const svc = await serverIn(unit);
  const agent = await startAgent(`metadata:\n  kubernetes: auto\n  url: http://127.0.0.1:${apiPort}\n  tokenFile: ${dir}/token\n`);
  try {
    assert.match(agent.stderr(), /metadata: pods from http:\/\/127\.0\.0\.1/);
    assert.ok(asked >= 1);
    for (const port of [web.port, svc.port]) execFileSync('curl', ['-s', '-o', '/dev/null', `http://127.0.0.1:${port}/users/1`]);
    let m: Sample[] = [];
    await eventually(async () => sum((m = await agent.scrape()), 'http_server_request_duration_seconds_count', { service_name: 'http-server' }) >= 2, 5000);
    assert.equal(sum(m, 'http_server_request_duration_seconds_count', { k8s_namespace_name: 'shop', k8s_pod_name: 'checkout-7d9c5b6f8-x2k4p', k8s_container_name: 'web', k8s_deployment_name: 'checkout', container_id: ID }), 1);
    assert.equal(sum(m, 'http_server_request_duration_seconds_count', { systemd_unit: `ks-web-${process.pid}.service`, k8s_pod_name: '' }), 1);
    // The exact kernel counts and TCP metrics carry them too.
    assert.equal(sum(m, 'kernscope_http_requests_total', { direction: 'server', k8s_pod_name: 'checkout-7d9c5b6f8-x2k4p' }), 1);
    assert.ok(m.some((s) => s.name.startsWith('kernscope_tcp_') && s.labels.k8s_deployment_name === 'checkout'));
  } finally {
    await agent.stop();
  }
  // No API to ask: said once, and the container id stays.
  const bare = await startAgent('metadata:\n  kubernetes: auto\n');
  try {
    execFileSync('curl', ['-s', '-o', '/dev/null', `http://127.0.0.1:${web.port}/users/2`]);
    let m: Sample[] = [];
    await eventually(async () => sum((m = await bare.scrape()), 'http_server_request_duration_seconds_count', { container_id: ID }) >= 1, 5000);
    assert.equal(sum(m, 'http_server_request_duration_seconds_count', { container_id: ID, k8s_pod_name: '' }), 1);
    assert.equal(bare.stderr().match(/no Kubernetes API here/g)?.length, 1);
  } finally {
    await bare.stop();
  }
  // A kubelet answers the same PodList at /pods.
  const viaKubelet = await startAgent(`metadata:\n  kubernetes: auto\n  kubelet: true\n  url: http://127.0.0.1:${apiPort}\n  tokenFile: ${dir}/token\n`);
  try {
    assert.equal(paths.at(-1), '/pods');
    execFileSync('curl', ['-s', '-o', '/dev/null', `http://127.0.0.1:${web.port}/users/3`]);
    await eventually(async () => sum(await viaKubelet.scrape(), 'http_server_request_duration_seconds_count', { k8s_pod_name: 'checkout-7d9c5b6f8-x2k4p' }) === 1, 5000);
    assert.equal(sum(await viaKubelet.scrape(), 'http_server_request_duration_seconds_count', { k8s_pod_name: 'checkout-7d9c5b6f8-x2k4p', k8s_container_name: 'web' }), 1);
  } finally {
    await viaKubelet.stop();
    for (const s of [web, svc]) {
      s.child.stdin!.end();
      await exited(s.child);
    }
    api.close();
  }
});
