// The process collector's contract with bpf/proc.h, without root: the
// compiled object's BTF (opened, not loaded) gives every offset and enum
// value, and a record written by those offsets decodes to what was written.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BpfObject } from '../../src/bpf/object.js';
import { bpfObjectPath } from '../../src/paths.js';
import { ProcLayout } from '../../src/collectors/process/decode.js';

const obj = BpfObject.openUnloaded(bpfObjectPath('proc.bpf.o'));
const L = new ProcLayout(obj);
const head = obj.struct('ks_proc_head', ['kind', 'pid', 'ppid', 'uid', 'pad', 'comm'] as const);
const exec = obj.struct('ks_proc_exec', ['args_len', 'args_truncated', 'filename', 'file_name', 'args'] as const);
const io = obj.struct('ks_proc_io', ['flags', 'port', 'family', 'killed', 'addr', 'path'] as const);
const kinds = obj.enumValues('ks_proc_kind', ['PROC_EXEC', 'PROC_CONNECT', 'PROC_EXIT'] as const);

test('an exec record decodes field by field, killed from the head', () => {
  const b = Buffer.alloc(exec.size);
  b.writeUInt32LE(kinds.PROC_EXEC, head.kind);
  b.writeUInt32LE(4242, head.pid);
  b.writeUInt32LE(1, head.ppid);
  b.writeUInt32LE(1000, head.uid);
  b.writeUInt32LE(1, head.pad);
  b.write('bash', head.comm);
  b.write('/usr/bin/bash', exec.filename);
  b.write('bash', exec.file_name);
  const args = 'bash\0-c\0echo hi\0';
  b.write(args, exec.args);
  b.writeUInt16LE(args.length, exec.args_len);
  const e = L.decode(b)!;
  assert.equal(e.kind, 'exec');
  assert.deepEqual([e.pid, e.ppid, e.uid, e.comm, e.filename, e.fileName, e.killed, e.argsTruncated], [4242, 1, 1000, 'bash', '/usr/bin/bash', 'bash', true, false]);
  assert.deepEqual(e.args, ['bash', '-c', 'echo hi']);
  assert.equal(L.decode(b.subarray(0, exec.size - 1)), undefined); // short: refused
});

test('a connect record, an unknown kind, and the drop reasons', () => {
  const b = Buffer.alloc(io.size);
  b.writeUInt32LE(kinds.PROC_CONNECT, head.kind);
  b.writeUInt16LE(4444, io.port);
  b.writeUInt8(2, io.family);
  b.writeUInt8(1, io.killed);
  Buffer.from([10, 0, 0, 7]).copy(b, io.addr);
  const e = L.decode(b)!;
  assert.deepEqual([e.kind, e.port, e.address, e.killed], ['connect', 4444, '10.0.0.7', true]);
  b.writeUInt32LE(999, head.kind);
  assert.equal(L.decode(b), undefined);
  assert.deepEqual(L.dropReasons, ['exec_ringbuf_full', 'fork_ringbuf_full', 'exit_ringbuf_full', 'open_ringbuf_full', 'connect_ringbuf_full', 'privilege_ringbuf_full']);
  assert.ok(L.exit.size > head.comm);
});
