// The kernel matrix again, with the features older kernels lack turned off
// (kernel.without): TCP and process on raw_tp, HTTP on the syscall
// tracepoints, TCP's open-connection bytes without the socket iterator.
// The same exact counts must come out.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

test('the kernel matrix on every fallback hook: tp_btf, the socket tracepoints and the TCP iterator turned off', () => {
  const matrix = path.join(path.dirname(fileURLToPath(import.meta.url)), 'matrix.test.js');
  // A run of its own, not a child of this one's test runner.
  const { NODE_TEST_CONTEXT: _, ...env } = process.env;
  const r = spawnSync(process.execPath, ['--test', '--test-reporter=spec', matrix], {
    env: { ...env, KS_MATRIX_WITHOUT: 'tp_btf,socket_tracepoints,tcp_iterator' },
    encoding: 'utf8',
    timeout: 20 * 60_000,
  });
  process.stdout.write(r.stdout.split('\n').map((l) => `# ${l}`).join('\n') + '\n');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /pass 5/);
  assert.match(r.stdout, /fail 0/);
});
