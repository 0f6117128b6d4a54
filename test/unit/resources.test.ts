import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseCgroupV2, parseKeyValues, parseLimit, parseSchedstat, parseStat } from '../../src/collectors/resources/procfs.js';

test('/proc/PID/stat: a comm with spaces and parentheses does not shift the fields', () => {
  const rest = 'S 1 100 100 0 -1 4194560 500 0 0 0 1234 567 0 0 20 0 7 0 98765 1000000 250 18446744073709551615';
  const s = parseStat(`4242 (my (odd) name) ${rest}`)!;
  assert.equal(s.comm, 'my (odd) name');
  assert.equal(s.utime, 1234);
  assert.equal(s.stime, 567);
  assert.equal(s.threads, 7);
  assert.equal(s.start, 98765);
  assert.equal(s.rss, 250);
  assert.equal(parseStat('garbage'), undefined);
  assert.equal(parseStat('1 (x) S 1'), undefined);
});

test('io, schedstat, cgroup and limits', () => {
  const io = parseKeyValues('rchar: 100\nwchar: 200\nsyscr: 3\nread_bytes: 4096\nwrite_bytes: 67108864\ncancelled_write_bytes: 0\n');
  assert.equal(io.get('read_bytes'), 4096);
  assert.equal(io.get('write_bytes'), 67108864);
  assert.equal(parseKeyValues('oom_kill_disable 0\nunder_oom 0\noom_kill 3\n').get('oom_kill'), 3);
  assert.deepEqual(parseSchedstat('123456 7890 12\n'), { runNs: 123456, waitNs: 7890 });
  assert.equal(parseSchedstat('x'), undefined);
  assert.equal(parseCgroupV2('12:memory:/a\n0::/system.slice/nginx.service\n'), '/system.slice/nginx.service');
  assert.equal(parseCgroupV2('4:memory:/a\n'), undefined);
  assert.equal(parseLimit('max\n'), Infinity);
  assert.equal(parseLimit('67108864\n'), 67108864);
  assert.equal(parseLimit('bogus'), undefined);
  assert.equal(parseLimit(undefined), undefined);
});
