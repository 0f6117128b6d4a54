// The kernel's index of watched path prefixes, without root: a path reaches
// through its bucket exactly the prefixes a compare with every prefix finds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from '../../src/paths.js';
import { RuleSet, parseRuleFile } from '../../src/security/rules.js';
import { firstWord, prefixBucket, prefixBuckets, type PrefixBucket, type WatchedPrefix } from '../../src/collectors/process/prefixes.js';

const DEFAULTS = parseRuleFile(fs.readFileSync(path.join(ROOT, 'rules', 'default.yaml'), 'utf8'), 'default.yaml').rules;

/** The kernel's walk (report_if_watched in bpf/proc.bpf.c): the path's bucket, then only its prefixes. */
function watchedThroughBuckets(path: string, readOnlyOpen: boolean, prefixes: readonly WatchedPrefix[], masks: readonly PrefixBucket[]): boolean {
  const b = masks[prefixBucket(firstWord(Buffer.from(path, 'utf8')), masks.length)]!;
  const mask = readOnlyOpen ? b.reads : b.any;
  return prefixes.some((p, i) => ((mask >>> i) & 1) === 1 && path.startsWith(p.prefix));
}

function everyPrefix(p: string, readOnly: boolean, prefixes: readonly WatchedPrefix[]): boolean {
  return prefixes.some((w) => p.startsWith(w.prefix) && !(readOnly && w.writesOnly));
}

/** A small deterministic generator, so a failure names a path that fails again. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

test('the default rules: every path and access finds the prefixes a full compare finds', () => {
  const prefixes = new RuleSet(DEFAULTS).watchedPrefixes();
  assert.ok(prefixes.length > 8 && prefixes.length <= 32, `${prefixes.length} prefixes`);
  const masks = prefixBuckets(prefixes, 64);
  const paths = ['/', '/e', '/et', '/etc', '/etc/', '/etc/shadow', '/etc/passwd', '/usr/lib/x.so', '/usr/bin/ls', '/tmp/a', '/root/.ssh/id_rsa', '/var/log/syslog', '/proc/self/maps', '/dev/null', 'relative'];
  // Each prefix, each prefix cut short, each prefix with more after it.
  for (const { prefix } of prefixes) paths.push(prefix, prefix.slice(0, -1), `${prefix}x`, `${prefix}/deeper/file`);
  const next = rng(7);
  const alphabet = '/etcusrbinlogvarhomeroot.ssh_-0123456789';
  for (let i = 0; i < 5000; i++) {
    const base = paths[Math.floor(next() * paths.length)]!;
    let tail = '';
    for (let n = Math.floor(next() * 6); n > 0; n--) tail += alphabet[Math.floor(next() * alphabet.length)];
    paths.push(base.slice(0, Math.floor(next() * (base.length + 1))) + tail);
  }
  let hits = 0;
  for (const p of paths) {
    for (const readOnly of [true, false]) {
      const want = everyPrefix(p, readOnly, prefixes);
      assert.equal(watchedThroughBuckets(p, readOnly, prefixes, masks), want, `${p} (${readOnly ? 'read' : 'write'})`);
      if (want) hits++;
    }
  }
  assert.ok(hits > 100, `${hits} watched paths in the corpus`);
});

test('short prefixes are in every bucket; a write-only prefix is not in any read mask', () => {
  const prefixes: WatchedPrefix[] = [
    { prefix: '/k', writesOnly: false },
    { prefix: '/usr/lib/', writesOnly: true },
    { prefix: '/etc/shadow', writesOnly: false },
  ];
  const masks = prefixBuckets(prefixes, 64);
  assert.equal(masks.length, 64);
  for (const m of masks) {
    assert.equal(m.any & 1, 1);
    assert.equal(m.reads & 2, 0);
  }
  assert.equal(masks.filter((m) => m.any & 2).length, 1);
  assert.equal(masks.filter((m) => m.reads & 4).length, 1);
  assert.equal(watchedThroughBuckets('/usr/lib/libc.so.6', true, prefixes, masks), false);
  assert.equal(watchedThroughBuckets('/usr/lib/libc.so.6', false, prefixes, masks), true);
  assert.equal(watchedThroughBuckets('/kq', true, prefixes, masks), true);
  assert.throws(() => prefixBuckets(Array.from({ length: 33 }, (_, i) => ({ prefix: `/p${i}`, writesOnly: false })), 64), /33 watched path prefixes/);
  assert.throws(() => prefixBuckets(prefixes, 48), /not a power of two/);
});
