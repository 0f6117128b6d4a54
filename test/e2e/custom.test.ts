import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from '../../src/paths.js';
import { eventually, expectConfigErrors, isRoot, startAgent, sum, tmpDir, type Sample } from '../helpers.js';
import { startPeer, type Peer } from '../peers.js';

let dir: string;
let payment: string;
let usdt: string;

before(() => {
  assert.ok(isRoot, 'uprobes need root (CI runs as root)');
  dir = tmpDir('ks-custom');
  payment = path.join(dir, 'payment');
  usdt = path.join(dir, 'usdt-target');
  execFileSync('gcc', ['-O2', '-g', '-o', payment, path.join(ROOT, 'examples', 'payment', 'payment.c')]);
  execFileSync('gcc', ['-O2', '-o', usdt, path.join(ROOT, 'test', 'fixtures', 'usdt-target.c')]);
});

after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A binary run as a peer: lines in, lines out. */
function run(bin: string, args: string[] = []): Peer {
  return startPeer(bin, args, undefined, true);
}

async function pay(p: Peer, amounts: number[]): Promise<void> {
  for (const a of amounts) {
    p.send(`${a} 1\n`);
    await p.line(new RegExp(`^[02]$`));
  }
}

test('the payment example: counts per result and per $100 bucket are exact, for processes started before and after the agent', async () => {
  const early = run(payment);
  await early.line(/^ready$/);
  const cfg = fs.readFileSync(path.join(ROOT, 'examples', 'payment', 'kernscope.yaml'), 'utf8').replace('PAYMENT_BINARY', payment);
  const agent = await startAgent(cfg);
  const late = run(payment);
  try {
    await late.line(/^ready$/);
    // Deterministic amounts: 1..2000 in steps of 37, split between both processes.
    const amounts = Array.from({ length: 54 }, (_, i) => 1 + i * 37);
    const a1 = amounts.filter((_, i) => i % 2 === 0);
    const a2 = amounts.filter((_, i) => i % 2 === 1);
    // One call at a time per process, each waited for: the counts are of calls made.
    await pay(early, a1);
    await pay(late, a2);
    let m: Sample[] = [];
    await eventually(async () => sum((m = await agent.scrape()), 'payment_amount_dollars_count') === amounts.length, 5000);
    const ok = amounts.filter((a) => a <= 1000).length;
    assert.equal(sum(m, 'payments_total', { result: 'ok' }), ok);
    assert.equal(sum(m, 'payments_total', { result: 'declined' }), amounts.length - ok);
    for (const le of [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]) {
      assert.equal(sum(m, 'payment_amount_dollars_bucket', { le: String(le) }), amounts.filter((a) => a <= le).length, `le ${le}`);
    }
    assert.equal(sum(m, 'payment_amount_dollars_bucket', { le: '+Inf' }), amounts.length);
    assert.equal(sum(m, 'payment_amount_dollars_sum'), amounts.reduce((s, a) => s + a, 0));
  } finally {
    await agent.stop();
    await early.end();
    await late.end();
  }
});

test('a USDT probe and a call duration, declared in YAML', async () => {
  const config = (extra: string): string => `probes:
  - name: ticks
    usdt: ${usdt}:kernscope:tick
    args:
      n: { arg: 0 }
    metrics:
      - name: ticks_total
        type: counter
      - name: tick_value
        type: histogram
        value: n
        buckets: [5, 10]
  - name: batches
    usdt: ${usdt}:kernscope:batch_start
    until: kernscope:batch_done
    metrics:
      - name: batch_seconds
        type: histogram
        value: duration
        buckets: [0.001, 1]
  - name: payment-time
    uprobe: ${payment}:process_payment
    args:
      amount: { arg: 0, member: payment.amount }   # from DWARF
    metrics:
      - name: payment_call_seconds
        type: histogram
        value: duration
        buckets: log2
      - name: big_payments_total
        type: counter
        filter: { from: amount, op: ">", value: 1000 }
${extra}`;
  // An unknown key is refused, naming it.
  const refused = await startAgent(config('        args_note: unused\n')).catch((e: Error) => e);
  assert.ok(refused instanceof Error);
  assert.match(refused.message, /probes\[2\]\.metrics\[1\]\.args_note: unknown key/);

  const good = await startAgent(config(''));
  const t = run(usdt, ['12']);
  const p = run(payment);
  try {
    await t.line(/^ready$/);
    await p.line(/^ready$/);
    t.send('go\n');
    await t.line(/^fired$/);
    await pay(p, [10, 2000, 3000, 20]);
    let m: Sample[] = [];
    await eventually(async () => sum((m = await good.scrape()), 'payment_call_seconds_count') === 4 && sum(m, 'ticks_total') === 12, 5000);
    assert.equal(sum(m, 'ticks_total'), 12);
    // A pair of USDT probes: one duration per batch, start to done.
    assert.equal(sum(m, 'batch_seconds_count'), 1);
    assert.equal(sum(m, 'batch_seconds_bucket', { le: '1' }), 1);
    assert.equal(sum(m, 'tick_value_bucket', { le: '5' }), 5);
    assert.equal(sum(m, 'tick_value_bucket', { le: '10' }), 10);
    assert.equal(sum(m, 'tick_value_sum'), 78);
    assert.equal(sum(m, 'payment_call_seconds_count'), 4);
    assert.ok(sum(m, 'payment_call_seconds_sum') > 0 && sum(m, 'payment_call_seconds_sum') < 1);
    assert.equal(sum(m, 'big_payments_total'), 2);
  } finally {
    await good.stop();
    await t.end();
    await p.end();
  }
});

test('strings as labels (uprobe and USDT), a gauge, and a uretprobe', async () => {
  const agent = await startAgent(`probes:
  - name: words
    uprobe: ${usdt}:handle_word
    args:
      word: { arg: 0, type: string, size: 8 }
    metrics:
      - name: words_total
        type: counter
        label: { name: word, from: word }
  - name: usdt-words
    usdt: ${usdt}:kernscope:word
    args:
      word: { arg: 0, type: string }
    metrics:
      - name: usdt_words_total
        type: counter
        label: { name: word, from: word, values: { pear: fruit } }
  - name: lengths
    uretprobe: ${usdt}:handle_word
    metrics:
      - name: word_length
        type: histogram
        value: ret
        buckets: [4, 8]
      - name: last_word_length
        type: gauge
        value: ret
`);
  const t = run(usdt, ['1']);
  try {
    await t.line(/^ready$/);
    for (const w of ['apple', 'pear', 'apple', 'watermelons', 'apple']) {
      t.send(`${w} and more\n`);
      await t.line(/^fired$/);
    }
    let m: Sample[] = [];
    await eventually(async () => sum((m = await agent.scrape()), 'word_length_count') === 5, 5000);
    assert.equal(sum(m, 'words_total', { word: 'apple' }), 3);
    assert.equal(sum(m, 'words_total', { word: 'pear' }), 1);
    // Cut to the declared 8 bytes.
    assert.equal(sum(m, 'words_total', { word: 'watermel' }), 1);
    assert.equal(sum(m, 'usdt_words_total', { word: 'fruit' }), 1);
    assert.equal(sum(m, 'usdt_words_total', { word: 'watermelons' }), 1);
    assert.equal(sum(m, 'usdt_words_total'), 5);
    assert.equal(sum(m, 'word_length_bucket', { le: '4' }), 1);
    assert.equal(sum(m, 'word_length_bucket', { le: '8' }), 4);
    assert.equal(sum(m, 'word_length_sum'), 5 + 4 + 5 + 11 + 5);
    assert.equal(sum(m, 'last_word_length'), 5);
  } finally {
    await agent.stop();
    await t.end();
  }
});

test('two labels from numbers: the result and a struct member', async () => {
  const agent = await startAgent(`probes:
  - name: by-currency
    uprobe: ${payment}:process_payment
    args: { cur: { arg: 0, member: payment.currency } }
    metrics:
      - name: payments_by_currency_total
        type: counter
        labels: [{ name: result, from: ret, values: { "0": ok }, other: declined }, { name: currency, from: cur, values: { "1": usd, "2": eur } }]
`);
  const p = run(payment);
  try {
    await p.line(/^ready$/);
    for (const [amount, cur] of [[50, 1], [2000, 1], [70, 2], [80, 2], [90, 3]]) {
      p.send(`${amount} ${cur}\n`);
      await p.line(/^[02]$/);
    }
    let m: Sample[] = [];
    await eventually(async () => sum((m = await agent.scrape()), 'payments_by_currency_total') === 5, 5000);
    assert.equal(sum(m, 'payments_by_currency_total', { result: 'ok', currency: 'usd' }), 1);
    assert.equal(sum(m, 'payments_by_currency_total', { result: 'declined', currency: 'usd' }), 1);
    assert.equal(sum(m, 'payments_by_currency_total', { result: 'ok', currency: 'eur' }), 2);
    assert.equal(sum(m, 'payments_by_currency_total', { result: 'ok', currency: '3' }), 1);
  } finally {
    await agent.stop();
    await p.end();
  }
});

test('a uprobe at an address (as nm prints it) and at symbol+offset', async () => {
  // nm's address of process_payment, and of its second instruction.
  const addr = execFileSync('nm', [payment], { encoding: 'utf8' }).split('\n').find((l) => / T process_payment$/.test(l))!.split(' ')[0]!;
  const second = execFileSync('objdump', ['-d', `--start-address=0x${addr}`, `--stop-address=0x${(parseInt(addr, 16) + 16).toString(16)}`, payment], { encoding: 'utf8' })
    .split('\n').filter((l) => /^\s+[0-9a-f]+:/.test(l)).map((l) => parseInt(l.trim().split(':')[0]!, 16))[1]!;
  const delta = second - parseInt(addr, 16);
  const agent = await startAgent(`probes:
  - name: by-address
    uprobe: ${payment}:0x${addr}
    args: { amount: { arg: 0, offset: 8, type: u64 } }
    metrics: [{ name: addr_calls_total, type: counter }, { name: addr_amount, type: histogram, value: amount, buckets: [100] }]
  - name: by-offset
    uprobe: ${payment}:process_payment+${delta}
    metrics: [{ name: offset_calls_total, type: counter }]
`);
  const p = run(payment);
  try {
    await p.line(/^ready$/);
    await pay(p, [50, 150, 250]);
    let m: Sample[] = [];
    await eventually(async () => sum((m = await agent.scrape()), 'addr_calls_total') === 3 && sum(m, 'offset_calls_total') === 3, 5000);
    assert.equal(sum(m, 'addr_calls_total'), 3);
    assert.equal(sum(m, 'offset_calls_total'), 3);
    assert.equal(sum(m, 'addr_amount_bucket', { le: '100' }), 1);
  } finally {
    await agent.stop();
    await p.end();
  }
});

test('mistakes in probes get plain messages and exit 2', async () => {
  const stripped = path.join(dir, 'payment-stripped');
  execFileSync('gcc', ['-O2', '-s', '-o', stripped, path.join(ROOT, 'examples', 'payment', 'payment.c')]);
  const cases: Array<[string, RegExp]> = [
    [`probes:\n  - name: a\n    uprobe: /nonexistent/bin:f\n    metrics: [{ name: a_total, type: counter }]\n`, /probe "a": no such binary \/nonexistent\/bin/],
    [`probes:\n  - name: b\n    uprobe: ${payment}:process_paymnt\n    metrics: [{ name: b_total, type: counter }]\n`, /probe "b": no symbol process_paymnt in .* \(nearest: [^)]*process_payment/],
    [`probes:\n  - name: c\n    usdt: ${usdt}:kernscope:tock\n    metrics: [{ name: c_total, type: counter }]\n`, /probe "c": no USDT probe kernscope:tock in .* \(it has: [^)]*kernscope:tick/],
    [`probes:\n  - name: d\n    usdt: ${usdt}:kernscope:tick\n    metrics: [{ name: d_total, type: counter, label: { name: r, from: ret } }]\n`, /probe "d": metric "d_total": ret needs a uprobe/],
    [`probes:\n  - name: e\n    uprobe: ${payment}:process_payment\n    metrics: [{ name: e_total, type: counter, label: { name: r, from: amount } }]\n`, /probe "e": metric "e_total": "amount" is not ret, duration or one of args \(none\)/],
    [`probes:\n  - name: f\n    metrics: [{ name: f_total, type: counter }]\n`, /probes\[0\]: give one of uprobe, uretprobe, usdt or tracepoint/],
    [`probes:\n  - name: i\n    tracepoint: sched:sched_process_exek\n    metrics: [{ name: i_total, type: counter }]\n`, /probe "i": no tracepoint sched:sched_process_exek \(sched has: [^)]*sched_process_exec/],
    [`probes:\n  - name: j\n    tracepoint: sched:sched_process_exec\n    args: { f: { field: filenam } }\n    metrics: [{ name: j_total, type: counter }]\n`, /probe "j": args\.f: sched:sched_process_exec has no field filenam \(it has: common_pid, filename, pid, old_pid\)/],
    [`probes:\n  - name: k\n    tracepoint: sched:sched_process_exec\n    args: { f: { field: filename } }\n    metrics: [{ name: k, type: histogram, value: f, buckets: log2 }]\n`, /probe "k": metric "k": f is a string: it can only be a label/],
    [`probes:\n  - name: l\n    tracepoint: sched:sched_process_exec\n    metrics: [{ name: l, type: histogram, value: duration, buckets: log2 }]\n`, /probe "l": metric "l": duration needs "until", the tracepoint that ends it/],
    [`probes:\n  - name: n\n    uprobe: ${payment}:process_payment\n    metrics: [{ name: n, type: gauge }]\n`, /probe "n": metric "n": a gauge needs value/],
    [`probes:\n  - name: g\n    uprobe: ${payment}:process_payment\n    args: { x: { arg: 0, member: payment.amont } }\n    metrics: [{ name: g, type: histogram, value: x, buckets: log2 }]\n`, /probe "g": args\.x: struct payment has no member amont \(it has: id, amount, currency\)/],
    [`probes:\n  - name: h\n    uprobe: ${stripped}:process_payment\n    args: { x: { arg: 0, member: payment.amount } }\n    metrics: [{ name: h, type: histogram, value: x, buckets: log2 }]\n`, /probe "h": args\.x: .* has no debug info \(stripped\?\): give offset and type instead of member/],
  ];
  await expectConfigErrors(dir, cases);
});
