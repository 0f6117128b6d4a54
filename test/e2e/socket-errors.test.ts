// Socket calls that fail, counted per service, operation and errno: a send
// to a reset peer, a send after shutdown, a refused connect; and, where the
// syscall exits are hooked, a write to a socket's fd already closed (EBADF,
// the use-after-close of a connection pool) and an accept out of
// descriptors (EMFILE): the socket hooks see neither.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eventually, isRoot, startAgent, sum, type RunningAgent } from '../helpers.js';
import { fixtureCopy, startPeer } from '../peers.js';

function errs(m: Awaited<ReturnType<RunningAgent['scrape']>>, service: string, operation: string, error: string): number {
  return sum(m, 'kernscope_socket_errors_total', { service_name: service, operation, error });
}

test('a send to a reset peer, a send after shutdown, a refused connect', async (t) => {
  assert.ok(isRoot, 'the agent needs root (CI runs as root)');
  const agent = await startAgent('collectIntervalSeconds: 0.5\n');
  try {
    const f = fixtureCopy('sock-errors.py', 'sockerr');
    const peer = startPeer('/usr/bin/python3', [f.script], undefined, true);
    t.after(async () => {
      await peer.end();
      f.cleanup();
    });
    let out = '';
    peer.child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    for (const c of ['reset', 'shutdown', 'refused']) {
      peer.send(`${c}\n`);
      await peer.line(new RegExp(`^done ${c}$`));
    }
    // Counted by the peer itself: what each call returned.
    const seen = (op: string, e: string): number => out.split('\n').filter((l) => l === `${op} ${e}`).length;
    assert.ok(seen('send', 'ECONNRESET') + seen('send', 'EPIPE') >= 3, out);
    assert.equal(seen('connect', 'ECONNREFUSED'), 1, out);
    let m = await agent.scrape();
    assert.ok(
      await eventually(async () => {
        m = await agent.scrape();
        return errs(m, f.service, 'send', 'EPIPE') === seen('send', 'EPIPE') && errs(m, f.service, 'send', 'ECONNRESET') === seen('send', 'ECONNRESET') && errs(m, f.service, 'connect', 'ECONNREFUSED') === 1;
      }),
      `agent: ${JSON.stringify(m.filter((s) => s.name === 'kernscope_socket_errors_total' && s.labels.service_name === f.service))}, peer: ${out}`,
    );
  } finally {
    assert.equal(await agent.stop(), 0);
  }
});

test('where the syscall exits are hooked: a write to a closed socket\'s fd is EBADF, an accept out of descriptors EMFILE', async () => {
  const agent = await startAgent('collectIntervalSeconds: 0.5\ncollectors:\n  http:\n    hooks: syscalls\n');
  try {
    const f = fixtureCopy('sock-errors.py', 'sockerr');
    const peer = startPeer('/usr/bin/python3', [f.script], undefined, true);
    try {
      peer.send('closed\n');
      assert.equal(await peer.line(/^send /), 'send EBADF');
      await peer.line(/^done closed$/);
      assert.ok(await eventually(async () => errs(await agent.scrape(), f.service, 'send', 'EBADF') === 1));
      // accept(2)'s own errors: only its exit says them.
      peer.send('emfile\n');
      assert.equal(await peer.line(/^accept /), 'accept EMFILE');
      await peer.line(/^done emfile$/);
      assert.ok(await eventually(async () => errs(await agent.scrape(), f.service, 'accept', 'EMFILE') === 1));
    } finally {
      await peer.end();
      f.cleanup();
    }
  } finally {
    assert.equal(await agent.stop(), 0);
  }
});
