// The HTTP suites again, with the collector forced onto its fallback data
// hooks: the syscall tracepoints that kernels before 6.3 (without
// sock:sock_recv_length and sock:sock_send_length) use. What they assert is
// unchanged; only the hooks differ, and the agent must say which it runs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isRoot, startAgent } from '../helpers.js';

process.env.KS_TEST_HTTP_HOOKS = 'syscalls';

test('forced onto the syscall tracepoints, the agent says so', async () => {
  assert.ok(isRoot, 'the agent needs root (CI runs as root)');
  const agent = await startAgent('collectIntervalSeconds: 0.5\n');
  try {
    const line = /collector http: running \(([^)]*)\)/.exec(agent.stderr())?.[1] ?? '';
    assert.match(line, /sys_exit_read=tracepoint/);
    assert.match(line, /sys_exit_writev=tracepoint/);
    assert.doesNotMatch(line, /sock_recv_length/);
  } finally {
    assert.equal(await agent.stop(), 0);
  }
});

await import('./http.test.js');
await import('./http-shapes.test.js');
