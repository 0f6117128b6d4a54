// The flight recorder's promise, on a real panic: Debian's 6.1 kernel in the
// VM runner keeps the journal on a virtio disk; a workload makes known
// events, the guest panics, boots again, and `recorder show --last-boot`
// lists those events in order, the last record within a second of the
// panic, merged with the kernel's own panic log from pstore (ramoops).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync, spawn } from 'node:child_process';
import { ROOT } from '../../src/paths.js';
import { tmpDir } from '../helpers.js';
import { workloadEvents, type Entry, type WorkloadFacts } from '../recorder-expect.js';

test('after a kernel panic, the last boot\'s events are read back in order, to within a second of the panic', { timeout: 900_000 }, async () => {
  const dir = tmpDir('ks-crash');
  const img = path.join(dir, 'disk.img');
  fs.writeFileSync(img, '');
  fs.truncateSync(img, 128 << 20);
  execFileSync('mkfs.ext4', ['-q', '-F', img]);
  const vm = spawn('sh', ['scripts/vm.sh', 'sh', 'test/fixtures/recorder-crash.sh'], {
    cwd: ROOT,
    env: { ...process.env, KS_VM_BOOTS: '2', KS_VM_DISK: img, KS_VM_TIMEOUT: '840' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  vm.stdout.on('data', (d: Buffer) => (out += d.toString()));
  vm.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((r) => vm.once('exit', r));
  try {
    assert.equal(code, 0, out.slice(-4000));
    const line = (tag: string): string => {
      const m = new RegExp(`^.*${tag} (.*)$`, 'm').exec(out);
      assert.ok(m, `no ${tag} line in the VM's output: ${out.slice(-4000)}`);
      return m[1]!.trim();
    };
    const facts = JSON.parse(line('WORKLOAD')) as WorkloadFacts;
    const panicAt = Number(line('PANIC_AT'));
    const shown = JSON.parse(Buffer.from(line('SHOW'), 'base64').toString('utf8')) as { boot: string; current: boolean; entries: Entry[]; kernelLines: number; journal: { corrupt: number } };
    assert.equal(shown.current, false);
    const records = shown.entries.filter((e) => e.k !== 'kernel');
    workloadEvents(records, facts);
    const last = records.at(-1)!;
    // PANIC_AT is stamped just before the trigger, which takes tens of ms
    // under emulation: a record (the summary a second) may land in between.
    assert.ok(panicAt - last.t >= -250 && panicAt - last.t <= 1000, `the last record is ${panicAt - last.t} ms before the panic`);
    // The kernel's own account, placed on the same clock.
    const panic = shown.entries.find((e) => e.k === 'kernel' && /Kernel panic - not syncing: sysrq triggered crash/.test(String(e.msg)));
    assert.ok(panic, `no panic line from pstore (${shown.kernelLines} kernel lines)`);
    assert.ok(Math.abs(panic.t - panicAt) < 2000, `the panic line is ${panic.t - panicAt} ms from the panic`);
    assert.ok(shown.entries.indexOf(panic) > shown.entries.indexOf(records.find((e) => e.k === 'send_not_established')!));
    console.log(`# crash: ${records.length} records in the last 30 s, the last ${panicAt - last.t} ms before the panic; ${shown.kernelLines} pstore lines; panic line ${panic.t - panicAt} ms off`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
