import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from '../../src/paths.js';
import { eventually, isRoot, sleep, startAgent, sum, type Sample } from '../helpers.js';

// The PostgreSQL example against Debian's postgresql-15 under pgbench: query
// counts equal pg_stat_statements', and durations agree with the server's
// own log_min_duration_statement lines.

const BIN = '/usr/lib/postgresql/15/bin';
const QUIET = `collectors: { tcp: { enabled: false }, http: { enabled: false }, process: { enabled: false } }
security: { enabled: false }
`;
let dir: string;
let server: ChildProcess | undefined;
const owner = { uid: 0, gid: 0 };

/** Runs a PostgreSQL tool as the postgres user; its output, whole. */
function pg(tool: string, args: string[]): string {
  return execFileSync(path.join(BIN, tool), args, { ...owner, cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 120_000 });
}

function psql(sql: string): string {
  return pg('psql', ['-h', dir, '-U', 'postgres', '-d', 'postgres', '-At', '-c', sql]).trim();
}

before(async () => {
  assert.ok(isRoot, 'uprobes need root (CI runs as root)');
  owner.uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }));
  owner.gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }));
  dir = fs.mkdtempSync('/tmp/ks-pg-');
  fs.chownSync(dir, owner.uid, owner.gid);
  pg('initdb', ['-D', `${dir}/data`, '-A', 'trust', '-U', 'postgres', '--no-sync']);
  // Unix socket in our directory only; every statement's duration logged.
  server = spawn(
    path.join(BIN, 'postgres'),
    ['-D', `${dir}/data`, '-k', dir, '-c', "listen_addresses=", '-c', 'shared_preload_libraries=pg_stat_statements', '-c', 'log_min_duration_statement=0', '-c', 'fsync=off', '-c', `log_directory=${dir}`, '-c', 'logging_collector=off'],
    { ...owner, cwd: dir, stdio: ['ignore', 'ignore', fs.openSync(`${dir}/server.log`, 'a')] },
  );
  const ready = await eventually(async () => {
    try {
      pg('pg_isready', ['-h', dir, '-q']);
      return true;
    } catch {
      return false;
    }
  }, 30_000, 200);
  assert.ok(ready, `postgres did not start: ${fs.readFileSync(`${dir}/server.log`, 'utf8').slice(-2000)}`);
  psql('CREATE EXTENSION pg_stat_statements');
  pg('pgbench', ['-h', dir, '-U', 'postgres', '-i', '-s', '1', '-q', 'postgres']);
});

after(async () => {
  if (server?.pid && server.exitCode === null) {
    process.kill(server.pid, 'SIGINT'); // fast shutdown
    await new Promise((r) => server!.once('exit', r));
  }
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test('PostgreSQL example: query counts equal pg_stat_statements under pgbench, durations agree with the server log', async () => {
  const agent = await startAgent(QUIET + fs.readFileSync(path.join(ROOT, 'examples', 'postgresql', 'kernscope.yaml'), 'utf8'));
  try {
    psql('SELECT pg_stat_statements_reset()');
    const logStart = fs.statSync(`${dir}/server.log`).size;
    // Select-only: one query per transaction, 2 clients x 300.
    const out = pg('pgbench', ['-h', dir, '-U', 'postgres', '-n', '-S', '-c', '2', '-t', '300', 'postgres']);
    assert.match(out, /number of transactions actually processed: 600\/600/);
    const calls = Number(psql("SELECT calls FROM pg_stat_statements WHERE query LIKE 'SELECT abalance FROM pgbench_accounts WHERE aid = %'"));
    assert.equal(calls, 600);
    const label = { query: 'SELECT abalance FROM pgbench_ac' };
    let m: Sample[] = [];
    await eventually(async () => sum((m = await agent.scrape()), 'postgresql_query_duration_seconds_count', label) >= calls, 5000);
    assert.equal(sum(m, 'postgresql_query_duration_seconds_count', label), calls);
    assert.equal(sum(m, 'postgresql_query_duration_seconds_bucket', { ...label, le: '+Inf' }), calls);
    // The server logs each statement's duration: our mean is of the same span
    // (start to done of the query in its backend), within what logging adds.
    await sleep(200);
    const log = fs.readFileSync(`${dir}/server.log`, 'utf8').slice(logStart);
    const logged = [...log.matchAll(/duration: ([\d.]+) ms\s+statement: SELECT abalance FROM pgbench_accounts/g)].map((x) => Number(x[1]) / 1000);
    assert.equal(logged.length, calls);
    const ours = sum(m, 'postgresql_query_duration_seconds_sum', label) / calls;
    const theirs = logged.reduce((a, b) => a + b, 0) / logged.length;
    assert.ok(ours > theirs * 0.3 && ours < theirs * 3 + 0.0005, `mean ${ours * 1e6} µs ours, ${theirs * 1e6} µs in the log`);
  } finally {
    await agent.stop();
  }
});
