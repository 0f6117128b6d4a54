import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from '../../src/paths.js';
import { parseCgroup } from '../../src/process/containers.js';
import { KubeMetadata } from '../../src/process/kubernetes.js';

const ID = '3f1c9e0d2b7a4c5e8f6a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6a';

test('container ids and pod UIDs from the cgroup path shapes of each runtime', () => {
  const cases: Array<[string, string, ReturnType<typeof parseCgroup>]> = [
    ['docker, cgroupfs (v1)', `12:memory:/docker/${ID}\n11:pids:/docker/${ID}\n0::/\n`, { containerId: ID, runtime: 'docker' }],
    ['docker, systemd (v2)', `0::/system.slice/docker-${ID}.scope\n`, { containerId: ID, runtime: 'docker' }],
    ['containerd under kubepods, systemd driver', `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6b2d1b1e_5c3d_4f8a_9e2b_0c1d2e3f4a5b.slice/cri-containerd-${ID}.scope\n`, { containerId: ID, runtime: 'containerd', podUid: '6b2d1b1e-5c3d-4f8a-9e2b-0c1d2e3f4a5b' }],
    ['containerd under kubepods, cgroupfs driver (v1)', `11:memory:/kubepods/besteffort/pod6b2d1b1e-5c3d-4f8a-9e2b-0c1d2e3f4a5b/${ID}\n1:name=systemd:/kubepods/besteffort/pod6b2d1b1e-5c3d-4f8a-9e2b-0c1d2e3f4a5b/${ID}\n`, { containerId: ID, runtime: 'containerd', podUid: '6b2d1b1e-5c3d-4f8a-9e2b-0c1d2e3f4a5b' }],
    ['cri-o, guaranteed pod, systemd driver', `0::/kubepods.slice/kubepods-pod6b2d1b1e_5c3d_4f8a_9e2b_0c1d2e3f4a5b.slice/crio-${ID}.scope\n`, { containerId: ID, runtime: 'cri-o', podUid: '6b2d1b1e-5c3d-4f8a-9e2b-0c1d2e3f4a5b' }],
    ['cri-o, cgroupfs driver', `0::/kubepods/burstable/pod6b2d1b1e-5c3d-4f8a-9e2b-0c1d2e3f4a5b/crio-${ID}\n`, { containerId: ID, runtime: 'cri-o', podUid: '6b2d1b1e-5c3d-4f8a-9e2b-0c1d2e3f4a5b' }],
    ['podman', `0::/machine.slice/libpod-${ID}.scope/container\n`, { containerId: ID, runtime: 'podman' }],
    ['a host service', '0::/system.slice/nginx.service\n', { systemdUnit: 'nginx.service' }],
    ['a host service, hybrid hierarchy', '12:pids:/system.slice/postgresql@15-main.service\n1:name=systemd:/system.slice/postgresql@15-main.service\n0::/system.slice/postgresql@15-main.service\n', { systemdUnit: 'postgresql@15-main.service' }],
    ['a login session', '0::/user.slice/user-0.slice/session-1.scope\n', {}],
    ['the root cgroup', '0::/\n', {}],
  ];
  for (const [what, text, want] of cases) assert.deepEqual(parseCgroup(text), want, what);
});

test('pods from the API: container, pod, namespace and owning Deployment', () => {
  const list = fs.readFileSync(path.join(ROOT, 'test', 'fixtures', 'k8s', 'podlist.json'), 'utf8').replace('POD_UID', '6b2d1b1e-5c3d-4f8a-9e2b-0c1d2e3f4a5b').replace('CONTAINER_ID', ID);
  const k = new KubeMetadata({ url: 'http://127.0.0.1:1', path: '/api/v1/pods' });
  k.load(list);
  assert.deepEqual(k.lookup(ID, undefined), { namespace: 'shop', pod: 'checkout-7d9c5b6f8-x2k4p', container: 'web', deployment: 'checkout' });
  // By pod UID alone (a container not listed yet): no container name.
  assert.deepEqual(k.lookup(undefined, '6b2d1b1e-5c3d-4f8a-9e2b-0c1d2e3f4a5b'), { namespace: 'shop', pod: 'checkout-7d9c5b6f8-x2k4p', deployment: 'checkout' });
  assert.deepEqual(k.lookup('9c1e0b7a6f5d4c3b2a19087f6e5d4c3b2a19087f6e5d4c3b2a19087f6e5d4c3b', undefined), { namespace: 'shop', pod: 'ledger-0', container: 'db', deployment: 'ledger' });
  assert.throws(() => k.load('{"kind":"Status","status":"Failure"}'), /not a PodList \(kind Status\)/);
});
