import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decode, formatIPv6, Ksyms } from '../../src/collectors/objects/decode.js';

test('decoders: integers, strings, addresses, ports, devices', () => {
  const u32 = Buffer.alloc(4);
  u32.writeUInt32LE(4000000000);
  assert.equal(decode('uint', u32), '4000000000');
  assert.equal(decode('int', u32), String(4000000000 - 2 ** 32));
  assert.equal(decode('string', Buffer.from('bash\0\0garbage')), 'bash');
  assert.equal(decode('string', Buffer.from('no-nul')), 'no-nul');
  assert.equal(decode('hex', Buffer.from([0xde, 0xad])), 'dead');
  assert.equal(decode('inet', Buffer.from([10, 0, 0, 7])), '10.0.0.7');
  assert.equal(decode('port', Buffer.from([0x1f, 0x90])), '8080');
  const dev = Buffer.alloc(4);
  dev.writeUInt32LE((254 << 20) | 3);
  assert.equal(decode('dev', dev), '254:3');
});

test('IPv6: the longest zero run is "::", v4-mapped addresses are dotted', () => {
  const v6 = (s: string): Buffer => Buffer.from(s.replace(/:/g, ''), 'hex');
  assert.equal(formatIPv6(v6('2001:0db8:0000:0000:0000:ff00:0042:8329')), '2001:db8::ff00:42:8329');
  assert.equal(formatIPv6(Buffer.alloc(16)), '::');
  const lo = Buffer.alloc(16);
  lo[15] = 1;
  assert.equal(formatIPv6(lo), '::1');
  assert.equal(formatIPv6(v6('0000:0000:0000:0000:0000:ffff:7f00:0001')), '::ffff:127.0.0.1');
  assert.equal(formatIPv6(v6('2001:0db8:0000:0001:0000:0000:0000:0001')), '2001:db8:0:1::1');
  assert.equal(formatIPv6(v6('2001:0db8:0001:0002:0003:0004:0005:0006')), '2001:db8:1:2:3:4:5:6');
});

test('ksym: an address names the function that contains it', () => {
  const k = new Ksyms('ffffffff81000000 T _stext\nffffffff81001000 t do_one\nffffffff81002000 D some_data\nffffffff81003000 T do_two\n');
  assert.equal(k.name(0xffffffff81001000n), 'do_one');
  assert.equal(k.name(0xffffffff81001234n), 'do_one');
  assert.equal(k.name(0xffffffff81003001n), 'do_two');
  assert.equal(k.name(0x1000n), '0x1000');
});
