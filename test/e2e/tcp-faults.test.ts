import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { eventually, isRoot, runCli, sleep, startAgent, sum, tmpDir, type RunningAgent, type Sample } from '../helpers.js';
import { peerScript, startPeer } from '../peers.js';

// Faults are made in a network namespace of the test's own, so the loss
// rule and the kernel's own counters (/proc/net/snmp) concern only our peers.
const NS = `ks-faults-${process.pid}`;
const JOURNAL = `${tmpDir('ks-faults')}/journal`;
let agent: RunningAgent;

function ns(...cmd: string[]): string {
  return execFileSync('ip', ['netns', 'exec', NS, ...cmd], { encoding: 'utf8' });
}

/** TCP RetransSegs of the namespace, as the kernel counts it. */
function retransSegs(): number {
  const lines = ns('cat', '/proc/net/snmp').split('\n').filter((l) => l.startsWith('Tcp:'));
  const names = lines[0]!.split(/\s+/);
  const values = lines[1]!.split(/\s+/);
  return Number(values[names.indexOf('RetransSegs')]);
}

before(async () => {
  assert.ok(isRoot, 'network namespaces and the agent need root (CI runs as root)');
  execFileSync('ip', ['netns', 'add', NS]);
  ns('ip', 'link', 'set', 'lo', 'up');
  // A burst is 2 retransmits of one connection within a second here: the
  // first two come 200 and 600 ms into the loss.
  agent = await startAgent(`collectIntervalSeconds: 0.5\nrecorder: { path: ${JOURNAL}, retransmitBurst: 2 }\n`);
});

after(async () => {
  assert.equal(await agent.stop(), 0);
  execFileSync('ip', ['netns', 'del', NS]);
  fs.rmSync(path.dirname(JOURNAL), { recursive: true, force: true });
});

async function settle(check: (m: Sample[]) => boolean): Promise<Sample[]> {
  let m: Sample[] = [];
  await eventually(async () => check((m = await agent.scrape())), 8000);
  return m;
}

test('connection refused: the client sees a reset and a failed connect', async () => {
  const K = 3;
  const cli = peerScript('refused');
  const srv = peerScript('srv');
  // A listener that is closed at once gives a port where nobody listens.
  const server = startPeer(srv.script, ['server', '127.0.0.1', '1'], NS);
  const port = (await server.line(/^\d+$/)).trim();
  await server.end();
  const client = startPeer(cli.script, ['refused', '127.0.0.1', port, String(K)], NS);
  try {
    await client.line(/^done$/);
    const c = { service: cli.service, direction: 'outbound', port };
    const m = await settle((s) => sum(s, 'kernscope_tcp_connect_failures_total', c) === K);
    assert.equal(sum(m, 'kernscope_tcp_connect_failures_total', c), K);
    assert.equal(sum(m, 'kernscope_tcp_resets_received_total', c), K);
    assert.equal(sum(m, 'kernscope_tcp_connections_opened_total', c), 0);
    assert.equal(sum(m, 'kernscope_tcp_connections_closed_total', c), 0);
  } finally {
    await client.end();
    cli.cleanup();
    srv.cleanup();
  }
});

test('SO_LINGER 0: one reset sent by the client, received by the server', async () => {
  const K = 4;
  const srv = peerScript('srv');
  const cli = peerScript('rst');
  const server = startPeer(srv.script, ['server', '127.0.0.1', '1'], NS);
  const port = (await server.line(/^\d+$/)).trim();
  const client = startPeer(cli.script, ['reset', '127.0.0.1', port, String(K)], NS);
  try {
    await client.line(/^done$/);
    const c = { service: cli.service, direction: 'outbound', port };
    const s = { service: srv.service, direction: 'inbound', port };
    const m = await settle((x) => sum(x, 'kernscope_tcp_resets_received_total', s) === K && sum(x, 'kernscope_tcp_connections_closed_total', s) === K);
    assert.equal(sum(m, 'kernscope_tcp_resets_sent_total', c), K);
    assert.equal(sum(m, 'kernscope_tcp_resets_received_total', c), 0);
    assert.equal(sum(m, 'kernscope_tcp_resets_received_total', s), K);
    assert.equal(sum(m, 'kernscope_tcp_resets_sent_total', s), 0);
    assert.equal(sum(m, 'kernscope_tcp_connections_opened_total', c), K);
    assert.equal(sum(m, 'kernscope_tcp_connections_closed_total', c), K);
    assert.equal(sum(m, 'kernscope_tcp_connections_closed_total', s), K);
  } finally {
    await client.end();
    await server.end();
    cli.cleanup();
    srv.cleanup();
  }
});

test('packet loss: retransmits equal the kernel\'s own RetransSegs', async () => {
  const srv = peerScript('srv');
  const cli = peerScript('lossy');
  const server = startPeer(srv.script, ['server', '127.0.0.1', '1'], NS);
  const port = (await server.line(/^\d+$/)).trim();
  const client = startPeer(cli.script, ['hold', '127.0.0.1', port, '3000'], NS);
  const table = 'kernscope_test';
  try {
    await client.line(/^connected$/);
    const before = retransSegs();
    // Drop every segment to the server on its way in (a drop on the way out
    // fails the send locally, which the kernel does not count as a retransmit).
    ns('nft', 'add', 'table', 'inet', table);
    ns('nft', 'add', 'chain', 'inet', table, 'in', '{ type filter hook input priority 0 ; }');
    ns('nft', 'add', 'rule', 'inet', table, 'in', 'tcp', 'dport', port, 'drop');
    client.send('send\n');
    await sleep(1600); // RTO starts at 200 ms and doubles: several retransmits
    ns('nft', 'delete', 'table', 'inet', table);
    await client.line(/^written$/);
    const c = { service: cli.service, direction: 'outbound', port };
    let kernel = 0;
    const m = await settle((x) => {
      kernel = retransSegs() - before;
      return kernel > 0 && sum(x, 'kernscope_tcp_retransmits_total', c) === kernel;
    });
    assert.ok(kernel >= 2, `the kernel retransmitted ${kernel} times`);
    assert.equal(sum(m, 'kernscope_tcp_retransmits_total', c), kernel);
    assert.equal(sum(m, 'kernscope_tcp_retransmits_total', { service: srv.service }), 0);
    // The flight recorder has the burst, once, charged to its connection.
    let bursts: Array<Record<string, unknown>> = [];
    await eventually(async () => {
      const r = await runCli(['recorder', 'show', '--dir', JOURNAL, '--json']);
      bursts = (JSON.parse(r.stdout) as { entries: Array<Record<string, unknown>> }).entries.filter((e) => e.k === 'tcp_retransmit_burst');
      return bursts.length > 0;
    });
    assert.equal(bursts.length, 1, JSON.stringify(bursts));
    assert.equal(bursts[0]!.service, cli.service);
    assert.equal(bursts[0]!.remote, `127.0.0.1:${port}`);
    assert.equal(bursts[0]!.retransmits, 2);
  } finally {
    if (ns('nft', 'list', 'tables').includes(table)) ns('nft', 'delete', 'table', 'inet', table);
    await client.end();
    await server.end();
    cli.cleanup();
    srv.cleanup();
  }
});
