// What the flight recorder must show of test/fixtures/recorder-workload.py,
// on the host and after a crash in the VM: each event, exactly, in order.
import assert from 'node:assert/strict';

export interface WorkloadFacts {
  pid: number;
  exit7: { code: number };
  killed: { pid: number };
  reset: { server_port: number; client_port: number };
  epipe: { error: string };
}

export interface Entry {
  t: number;
  k: string;
  [f: string]: unknown;
}

export const WORKLOAD = 'test/fixtures/recorder-workload.py';

/** The workload's events in the timeline, checked field by field and for order; returns them in order. */
export function workloadEvents(entries: Entry[], f: WorkloadFacts): Entry[] {
  assert.equal(f.exit7.code, 7);
  assert.equal(f.epipe.error, 'EPIPE');
  const find = (what: string, pred: (e: Entry) => boolean): number => {
    const i = entries.findIndex(pred);
    assert.ok(i >= 0, `no ${what} in the timeline: ${JSON.stringify(entries.filter((e) => e.k !== 'summary').slice(-40))}`);
    return i;
  };
  const exec7 = find('exec of sh -c "exit 7"', (e) => e.k === 'exec' && e.ppid === f.pid && e.args === '/bin/sh -c exit 7');
  const sh = entries[exec7]!.pid;
  const exit7 = find('exit 7', (e) => e.k === 'exit' && e.pid === sh);
  assert.equal(entries[exit7]!.code, 7);
  assert.equal(entries[exit7]!.signal, undefined);
  const execSleep = find('exec of sleep', (e) => e.k === 'exec' && e.pid === f.killed.pid);
  assert.equal(entries[execSleep]!.args, '/bin/sleep 30');
  assert.equal(entries[execSleep]!.ppid, f.pid);
  const killed = find('the kill', (e) => e.k === 'exit' && e.pid === f.killed.pid);
  assert.equal(entries[killed]!.signal, 9);
  assert.equal(entries[killed]!.signal_name, 'SIGKILL');
  const server = `127.0.0.1:${f.reset.server_port}`;
  const client = `127.0.0.1:${f.reset.client_port}`;
  const sent = find('the reset sent', (e) => e.k === 'tcp_reset_sent' && e.local === server && e.remote === client);
  assert.equal(entries[sent]!.pid, f.pid);
  const received = find('the reset received', (e) => e.k === 'tcp_reset_received' && e.local === client && e.remote === server);
  assert.equal(entries[received]!.state, 'ESTABLISHED');
  const epipe = find('the send on a closed socket', (e) => e.k === 'send_not_established' && e.pid === f.pid);
  assert.deepEqual([entries[epipe]!.op, entries[epipe]!.error, entries[epipe]!.count], ['send', 'EPIPE', 1]);
  const order = [exec7, exit7, execSleep, killed, Math.min(sent, received), epipe];
  assert.deepEqual([...order].sort((a, b) => a - b), order, 'events out of order');
  assert.ok(Math.max(sent, received) < epipe);
  return [exec7, exit7, execSleep, killed, sent, received, epipe].map((i) => entries[i]!);
}
