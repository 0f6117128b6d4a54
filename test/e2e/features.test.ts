// The feature probe's kernel BTF: the agent frees it once its collectors are
// planned (~6 MB); what was asked stays answered, and a new question parses
// it again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { addon } from '../../src/bpf/addon.js';
import { detectFeatures } from '../../src/capabilities/features.js';

test('the kernel BTF is freed after planning: answers stay, a new question parses it again', () => {
  const f = detectFeatures();
  assert.equal(f.hasBtfType('bpf_iter__tcp'), true);
  assert.equal(f.hasBtfType('kernscope_no_such_type'), false);
  addon().vmlinuxRelease();
  assert.equal(f.hasBtfType('bpf_iter__tcp'), true);
  assert.equal(f.hasBtfType('kernscope_no_such_type'), false);
  assert.equal(addon().vmlinuxHasType('task_struct'), true);
  assert.equal(addon().vmlinuxHasType('kernscope_no_such_type'), false);
  addon().vmlinuxRelease();
  addon().vmlinuxRelease(); // a second release is harmless
});
