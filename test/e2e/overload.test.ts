// Bounds hit on purpose, each loss counted exactly: the HTTP connection
// table, the TCP socket table and the process table. The agent keeps
// serving once the pressure is gone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { eventually, freePort, startAgent, sum, type RunningAgent, type Sample } from '../helpers.js';
import { fixtureCopy, startPeer } from '../peers.js';

const HELD = 24;
const TABLE = 16;

async function settle(agent: RunningAgent, check: (m: Sample[]) => boolean): Promise<Sample[]> {
  let m: Sample[] = [];
  await eventually(async () => check((m = await agent.scrape())), 10_000);
  return m;
}

test('the HTTP connection table: 24 connections into 16 entries, 8 counted lost, the rest exact', async () => {
  const port = await freePort();
  const f = fixtureCopy('conn-burst.py', 'conntable');
  const p = startPeer('/usr/bin/python3', [f.script, String(port)], undefined, true);
  await p.line(/^ready$/);
  // Watched by port: only the servers on it take entries. The process runs
  // before the agent, so it is judged at the start: its clients take none.
  const agent = await startAgent(`collectIntervalSeconds: 0.5\ncollectors:\n  http:\n    watch: [{ port: ${port} }]\n    maps: { connections: ${TABLE} }\n`);
  try {
    p.send(`open ${HELD}\n`);
    await p.line(/^held$/);
    p.send('close\n');
    await p.line(/^closed$/);
    const s = { service_name: f.service };
    const counted = (m: Sample[]): number => sum(m, 'http_server_request_duration_seconds_count', s);
    const lost = (m: Sample[]): number => sum(m, 'kernscope_events_dropped_total', { source: 'http', reason: 'connection_table_full' });
    let m = await settle(agent, (m) => counted(m) + lost(m) >= HELD);
    // Every connection either holds an entry and has its request counted, or is counted lost.
    assert.equal(lost(m), HELD - TABLE);
    assert.equal(counted(m), TABLE);
    assert.equal(sum(m, 'http_client_request_duration_seconds_count', s), 0);
    // Room again once they close: the next connections are all counted.
    p.send('again 3\n');
    await p.line(/^done$/);
    m = await settle(agent, (m) => counted(m) >= TABLE + 3);
    assert.equal(counted(m), TABLE + 3);
    assert.equal(lost(m), HELD - TABLE);
  } finally {
    await p.end();
    f.cleanup();
    assert.equal(await agent.stop(), 0);
  }
});

test('the TCP socket table: sockets past it are counted lost, one for one with what their series miss', async () => {
  const port = await freePort();
  const agent = await startAgent(`collectIntervalSeconds: 0.5\ncollectors:\n  http: { enabled: false }\n  process: { enabled: false }\n  tcp:\n    maps: { sockets: ${TABLE} }\nsecurity: { enabled: false }\n`);
  const f = fixtureCopy('conn-burst.py', 'socktable');
  const p = startPeer('/usr/bin/python3', [f.script, String(port)], undefined, true);
  try {
    await p.line(/^ready$/);
    // No scrape while the table is full: the scrape's own connection would take a place.
    p.send(`open ${HELD}\n`);
    await p.line(/^held$/);
    p.send('close\n');
    await p.line(/^closed$/);
    const s = { service: f.service, port: String(port) };
    const opened = (m: Sample[]): number => sum(m, 'kernscope_tcp_connections_opened_total', { ...s, direction: 'outbound' });
    const closedIn = (m: Sample[]): number => sum(m, 'kernscope_tcp_connections_closed_total', { ...s, direction: 'inbound' });
    const lost = (m: Sample[]): number => sum(m, 'kernscope_events_dropped_total', { source: 'tcp', reason: 'socket_table_full' });
    // A lost outbound socket's open is charged to "unknown"; a lost inbound one's close is.
    let m = await settle(agent, (m) => lost(m) > 0 && sum(m, 'kernscope_tcp_connections_closed_total', { ...s, direction: 'outbound' }) === opened(m));
    const lostOut = HELD - opened(m);
    const lostIn = HELD - closedIn(m);
    assert.ok(lostOut + lostIn >= 2 * HELD - TABLE, `${lostOut} + ${lostIn} sockets untracked`);
    assert.equal(lost(m), lostOut + lostIn);
    p.send('again 3\n');
    await p.line(/^done$/);
    m = await settle(agent, (m) => closedIn(m) >= HELD - lostIn + 3);
    assert.equal(opened(m), HELD - lostOut + 3);
    assert.equal(closedIn(m), HELD - lostIn + 3);
    assert.equal(lost(m), lostOut + lostIn);
  } finally {
    await p.end();
    f.cleanup();
    assert.equal(await agent.stop(), 0);
  }
});

test('the process table: held at its bound, the oldest forgotten and counted; alerts still carry the ancestry that is left', async () => {
  const agent = await startAgent('collectIntervalSeconds: 0.5\ncollectors:\n  process: { maxProcesses: 32 }\n');
  try {
    const tracked = (m: Sample[]): number => sum(m, 'kernscope_processes_tracked');
    const lost = (m: Sample[]): number => sum(m, 'kernscope_events_dropped_total', { source: 'process', reason: 'process_table_full' });
    let m = await agent.scrape();
    // This node runs more than 32 processes: the table was full from the start.
    const before = lost(m);
    assert.ok(before > 0);
    assert.equal(tracked(m), 32);
    // 40 new processes at once, each a new entry: at least 40 more forgotten.
    const kids = Array.from({ length: 40 }, () => spawn('sleep', ['30'], { stdio: 'ignore' }));
    try {
      m = await settle(agent, (m) => lost(m) >= before + 40);
      assert.equal(tracked(m), 32);
      // A rule still fires, from a process whose parents may be gone.
      execFileSync('sh', ['-c', 'cat /etc/shadow > /dev/null']);
      m = await settle(agent, (m) => sum(m, 'kernscope_security_alerts_total', { rule: 'shadow-file-read' }) >= 1);
    } finally {
      for (const k of kids) k.kill('SIGKILL');
    }
  } finally {
    assert.equal(await agent.stop(), 0);
  }
});
