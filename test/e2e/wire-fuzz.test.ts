// Hostile bytes on the wire, at scale: 1,500 connections to a watched Node
// server, each carrying random bytes, a valid request with one byte changed,
// an adversarial shape (huge heads, deep paths, responses sent as requests,
// TLS and HTTP/2 prefaces, junk after pipelined requests) or a clean
// request. The cases come from fast-check with a fixed seed. The agent must
// stay up, make no series that is not HTTP (every method known, every
// status a real one, every route label-safe and within the cap), and count
// the clean requests exactly.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import fc from 'fast-check';
import { METHODS } from '../../src/collectors/http/parse.js';
import { eventually, isRoot, startAgent, sum, type RunningAgent } from '../helpers.js';
import { fixtureCopy, startPeer, type Peer } from '../peers.js';

const SEED = 20261203;
let agent: RunningAgent;
let server: Peer;
let srv: ReturnType<typeof fixtureCopy>;
let port = 0;

before(async () => {
  assert.ok(isRoot, 'the agent needs root (CI runs as root)');
  agent = await startAgent('collectIntervalSeconds: 1\n');
  srv = fixtureCopy('http-server.mjs', 'wirefuzz');
  server = startPeer(srv.script, []);
  port = Number((await server.line(/^\d+$/)).trim());
});

after(async () => {
  await server?.end();
  srv?.cleanup();
  if (agent) assert.equal(await agent.stop(), 0);
});

const latin1 = (s: string): Buffer => Buffer.from(s, 'latin1');
const valid = (path: string): string => `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`;

type Case = { kind: 'clean'; bytes: Buffer } | { kind: 'hostile'; bytes: Buffer };

const ADVERSARIAL: Buffer[] = [
  latin1(`GET / HTTP/1.1\r\nX: ${'A'.repeat(70_000)}\r\n\r\n`),
  latin1(`GET /${'a/'.repeat(600)} HTTP/1.1\r\nConnection: close\r\n\r\n`),
  latin1('GET /a\x00b HTTP/1.1\r\n\r\n'),
  latin1('GET /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n'),
  latin1('GET /x HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n'),
  latin1('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'),
  latin1('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
  Buffer.from('160301020001000100fc03030000000000000000000000000000000000000000000000000000000000000000', 'hex'),
  latin1(`${valid('/users/1').replace('Connection: close', 'Connection: keep-alive').repeat(5)}\x01\x02junk`),
  latin1('GET  /double-space HTTP/1.1\r\n\r\n'),
  latin1('G'),
  latin1('GET /unfinished HTTP/1.1\r\nHost: x'),
  latin1('\r\n\r\n\r\n'),
];

function cases(): Case[] {
  const random = fc.uint8Array({ minLength: 1, maxLength: 600 }).map((a): Case => ({ kind: 'hostile', bytes: Buffer.from(a) }));
  const mutated = fc.tuple(fc.nat(1e6), fc.nat(), fc.integer({ min: 0, max: 255 })).map(([id, at, byte]): Case => {
    const b = latin1(valid(`/users/${id}`));
    b[at % b.length] = byte;
    return { kind: 'hostile', bytes: b };
  });
  const clean = fc.nat(1e6).map((id): Case => ({ kind: 'clean', bytes: latin1(valid(`/valid/${id}`)) }));
  const adversarial = fc.constantFrom(...ADVERSARIAL).map((bytes): Case => ({ kind: 'hostile', bytes }));
  return fc.sample(fc.oneof(random, mutated, clean, adversarial), { numRuns: 1500, seed: SEED });
}

/** Sends one case on its own connection; the status of the response, if any. */
function send(bytes: Buffer): Promise<number | undefined> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let got = '';
    const done = (): void => {
      clearTimeout(t);
      s.destroy();
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(got);
      resolve(m ? Number(m[1]) : undefined);
    };
    const t = setTimeout(done, 1000);
    s.on('connect', () => s.write(bytes));
    s.on('data', (d) => (got += d.toString('latin1')));
    s.on('end', done);
    s.on('error', done);
  });
}

test('1,500 connections of hostile and clean bytes: no bogus series, the clean requests counted exactly, the agent up', async () => {
  const all = cases();
  let cleanAnswered = 0;
  for (let i = 0; i < all.length; i += 50) {
    const batch = all.slice(i, i + 50);
    const statuses = await Promise.all(batch.map((c) => send(c.bytes)));
    batch.forEach((c, j) => c.kind === 'clean' && statuses[j] === 404 && cleanAnswered++);
  }
  const clean = all.filter((c) => c.kind === 'clean').length;
  assert.ok(clean > 200, `${clean} clean requests`);
  assert.equal(cleanAnswered, clean, 'the server answered every clean request');
  const count = async (): Promise<number> => sum(await agent.scrape(), 'http_server_request_duration_seconds_count', { service_name: srv.service, http_route: '/valid/*', http_response_status_code: '404' });
  assert.ok(await eventually(async () => (await count()) === clean, 10_000), `counted ${await count()} of ${clean}`);
  // Nothing that is not HTTP: every series of this server's, and of the
  // client side (this process), is a known method, a real status and a
  // label-safe route.
  const m = await agent.scrape();
  const methods = new Set<string>([...METHODS, '_OTHER']);
  let series = 0;
  for (const x of m) {
    if (!x.name.startsWith('http_server_') && !x.name.startsWith('http_client_')) continue;
    if (x.labels.service_name !== srv.service && !x.name.startsWith('http_client_')) continue;
    series++;
    assert.ok(methods.has(x.labels.http_request_method!), `${x.name} ${JSON.stringify(x.labels)}`);
    const status = x.labels.http_response_status_code;
    assert.ok(status === undefined || status === '' || /^[1-5]\d\d$/.test(status), `${x.name} ${JSON.stringify(x.labels)}`);
    const route = x.labels.http_route;
    assert.ok(route === undefined || route === '_unknown' || route === '_other' || /^\/([\w.~*-]*)(\/[\w.~*-]*)*$/.test(route), `${x.name} ${JSON.stringify(x.labels)}`);
  }
  assert.ok(series > 0);
  assert.equal(agent.child.exitCode, null);
  console.log(`# wire fuzz: ${all.length} connections, ${clean} clean and counted, ${series} series checked`);
});
