// The process collector's contract with bpf/proc.h, without root: the
// compiled object's BTF (opened, not loaded) gives every offset and enum
// value, and a record written by those offsets decodes to what was written.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BpfObject } from '../../src/bpf/object.js';
import { bpfObjectPath } from '../../src/paths.js';
import { ProcLayout, type ProcEvent } from '../../src/collectors/process/decode.js';
import { executable } from '../../src/process/table.js';

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
  assert.deepEqual(L.dropReasons, ['exec_ringbuf_full', 'fork_ringbuf_full', 'exit_ringbuf_full', 'open_ringbuf_full', 'connect_ringbuf_full', 'privilege_ringbuf_full', 'stdio_socket_ringbuf_full', 'module_ringbuf_full', 'file_ringbuf_full']);
  assert.ok(L.exit.size > head.comm);
});

const execPaths = obj.struct('ks_proc_exec', ['exe_flags', 'cwd_flags', 'stdio_sockets', 'exe_path', 'cwd'] as const);
const pathFlags = obj.enumValues('ks_proc_path_flag', ['PROC_PATH_DELETED', 'PROC_PATH_SCRIPT', 'PROC_PATH_DEEP'] as const);

/** An exec record as the kernel writes it, for `executable`. */
function execRecord(o: { filename: string; fileName: string; exePath: string; cwd: string; exeFlags?: number; stdio?: number }): ProcEvent {
  const b = Buffer.alloc(exec.size);
  b.writeUInt32LE(kinds.PROC_EXEC, head.kind);
  b.write(o.filename, exec.filename);
  b.write(o.fileName, exec.file_name);
  b.write(o.exePath, execPaths.exe_path);
  b.write(o.cwd, execPaths.cwd);
  b.writeUInt8(o.exeFlags ?? 0, execPaths.exe_flags);
  b.writeUInt8(o.stdio ?? 0, execPaths.stdio_sockets);
  return L.decode(b)!;
}

test('exec paths: the file the kernel found, the name it was called by', () => {
  const rel = execRecord({ filename: './payload', fileName: 'payload', exePath: '/tmp/w/payload', cwd: '/tmp/w', stdio: 0b101 });
  assert.deepEqual([rel.exePath, rel.cwd, rel.stdioSockets, rel.exeFlags?.deleted], ['/tmp/w/payload', '/tmp/w', 0b101, false]);
  assert.deepEqual(executable(rel), { exe: '/tmp/w/payload', name: 'payload' });
  // A symlink: named as called, the real file as exe.
  assert.deepEqual(executable(execRecord({ filename: '/usr/bin/python3', fileName: 'python3.11', exePath: '/usr/bin/python3.11', cwd: '/' })), { exe: '/usr/bin/python3.11', name: 'python3' });
  // By descriptor: named after the file, not the number.
  assert.deepEqual(executable(execRecord({ filename: '/proc/self/fd/5', fileName: 'tool', exePath: '/opt/x/tool', cwd: '/' })), { exe: '/opt/x/tool', name: 'tool' });
  // A memory file.
  assert.deepEqual(executable(execRecord({ filename: '/proc/self/fd/3', fileName: 'memfd:payload', exePath: '/memfd:payload', cwd: '/' })), { exe: 'memfd:payload', name: 'memfd:payload' });
  // A script: the kernel holds the interpreter; the script's path is made absolute.
  assert.deepEqual(executable(execRecord({ filename: '../x.sh', fileName: 'dash', exePath: '/usr/bin/dash', cwd: '/tmp/a/b', exeFlags: pathFlags.PROC_PATH_SCRIPT })), { exe: '/tmp/a/x.sh', name: 'x.sh', interpreter: '/usr/bin/dash' });
  // Deeper than the kernel walks: marked, so no rule on a prefix can match it.
  const deep = executable(execRecord({ filename: './x', fileName: 'x', exePath: '/d31/x', cwd: '/', exeFlags: pathFlags.PROC_PATH_DEEP }));
  assert.equal(deep.exe, '…/d31/x');
  assert.equal(execRecord({ filename: '/a', fileName: 'a', exePath: '/a', cwd: '/', exeFlags: pathFlags.PROC_PATH_DELETED }).exeFlags?.deleted, true);
});
