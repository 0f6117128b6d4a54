// Soak (`npm run bench:soak -- --minutes N [--out FILE]`; never run by
// tests). For N minutes one agent with its defaults, a custom uprobe and a
// rules file rewritten every 30 s watches a mixed, bounded load:
//   HTTP to a Node service, half keep-alive, half a new connection each
//   (connection churn), about 200 requests a second;
//   an exec storm, 40 execs a second in bursts;
//   a custom uprobe hit 10 times a second;
//   Debian's Prometheus scraping the agent every second.
// Every 10 s it samples the agent's RSS, V8 heap, CPU, open fds, every drop
// counter and the fill of its hash maps. After a warm-up (the first fifth,
// at least a minute) it fits a line to each and reports the slope per hour;
// the run passes when memory, CPU (2 % of a core an hour, scaled by the
// machine's speed of the moment, which a fixed loop measures), fds and
// drops stay flat.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { ROOT } from '../src/paths.js';
import { freePort, sleep, startAgent, sum, tmpDir, type Sample } from '../test/helpers.js';
import { fixtureCopy, startPeer, type Peer } from '../test/peers.js';
import { calibrate, median } from './speed.js';

const arg = (name: string, def: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : def;
};
const MINUTES = Number(arg('minutes', '10'));
const OUT = arg('out', '');
const SAMPLE_MS = 10_000;

interface Point {
  t: number; // seconds since start
  rssMiB: number;
  anonMiB: number;
  heapMiB: number;
  heapTotalMiB: number;
  externalMiB: number;
  cpuPct: number;
  /** CPU ms this process spent on a fixed loop: the machine's speed at the time. */
  calibMs: number;
  fds: number;
  drops: Record<string, number>;
  maps: Record<string, number>;
  requests: number;
  execs: number;
  payments: number;
  alerts: number;
  reloads: number;
  scrapes: number;
}

/** Least-squares slope of y over x, and the fit's residual spread. */
function fit(xs: number[], ys: number[]): { slope: number; mean: number } {
  const n = xs.length;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my);
    den += (xs[i]! - mx) ** 2;
  }
  return { slope: den ? num / den : 0, mean: my };
}

function procStat(pid: number): { rssMiB: number; anonMiB: number; cpuS: number; fds: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0) / 1024;
  const rss = kib('VmRSS');
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const cpuS = (Number(f[11]) + Number(f[12])) / 100;
  return { rssMiB: rss, anonMiB: kib('RssAnon'), cpuS, fds: fs.readdirSync(`/proc/${pid}/fd`).length };
}

/** Entries in each hash map the agent holds (its map fds' fdinfo names their ids). */
function mapFill(pid: number): Record<string, number> {
  const ids = new Set<number>();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`) !== 'anon_inode:bpf-map') continue;
      const id = /^map_id:\s+(\d+)$/m.exec(fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))?.[1];
      if (id) ids.add(Number(id));
    } catch {
      // closed meanwhile
    }
  }
  const out: Record<string, number> = {};
  const maps = JSON.parse(execFileSync('bpftool', ['map', 'show', '-j'], { encoding: 'utf8', maxBuffer: 64 << 20 })) as Array<{ id: number; name?: string; type: string; max_entries: number }>;
  for (const m of maps) {
    if (!ids.has(m.id) || !/hash/.test(m.type) || !m.name) continue;
    const keys = execFileSync('bpftool', ['map', 'dump', 'id', String(m.id), '-j'], { encoding: 'utf8', maxBuffer: 256 << 20 });
    out[`${m.name} (of ${m.max_entries})`] = (JSON.parse(keys) as unknown[]).length;
  }
  return out;
}

function drops(m: Sample[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of m) if (s.name === 'kernscope_events_dropped_total' && s.value > 0) out[`${s.labels.source}/${s.labels.reason}`] = s.value;
  return out;
}

async function main(): Promise<void> {
  const dir = tmpDir('ks-soak');
  const stopAt = Date.now() + MINUTES * 60_000;
  const children: ChildProcess[] = [];
  const peers: Peer[] = [];
  const cleanups: Array<() => void> = [];
  let requests = 0;
  let execs = 0;
  let payments = 0;
  try {
    // The custom probe's target and the rules the agent reloads.
    const payment = path.join(dir, 'payment');
    execFileSync('gcc', ['-O2', '-g', '-o', payment, path.join(ROOT, 'examples', 'payment', 'payment.c')]);
    const probes = fs.readFileSync(path.join(ROOT, 'examples', 'payment', 'kernscope.yaml'), 'utf8').replace('PAYMENT_BINARY', payment);
    const rules = path.join(dir, 'rules.yaml');
    const writeRules = (n: number): void => fs.writeFileSync(rules, `rules:\n  - name: soak-marker-${n % 2}\n    severity: info\n    match: { name: [ks-soak-true] }\n`);
    writeRules(0);
    const marker = path.join(dir, 'ks-soak-true');
    fs.copyFileSync('/bin/true', marker);
    fs.chmodSync(marker, 0o755);
    const agent = await startAgent(`${probes}security:\n  rules: [${rules}]\n  output:\n    stdout: false\n    file: ${dir}/alerts.jsonl\n`);
    const pid = agent.child.pid!;

    // Prometheus, every second.
    const promPort = await freePort();
    fs.writeFileSync(path.join(dir, 'prometheus.yml'), `global: { scrape_interval: 1s, scrape_timeout: 1s }\nscrape_configs:\n  - job_name: ks\n    static_configs: [{ targets: ['127.0.0.1:${agent.port}'] }]\n`);
    children.push(spawn('prometheus', [`--config.file=${dir}/prometheus.yml`, `--storage.tsdb.path=${dir}/prom`, `--web.listen-address=127.0.0.1:${promPort}`], { stdio: 'ignore' }));

    // HTTP: keep-alive and new connections, paced.
    const svc = fixtureCopy('http-server.mjs', 'soak');
    cleanups.push(svc.cleanup);
    const server = startPeer(svc.script, []);
    peers.push(server);
    const port = Number((await server.line(/^\d+$/)).trim());
    const keep = new http.Agent({ keepAlive: true, maxSockets: 4 });
    const get = (n: number, a: http.Agent | false): Promise<void> =>
      new Promise((resolve) => {
        const req = http.get({ host: '127.0.0.1', port, path: `/users/${n}`, agent: a }, (res) => {
          res.resume();
          res.on('end', () => {
            requests++;
            resolve();
          });
        });
        req.on('error', () => resolve());
      });
    const httpLoop = (async () => {
      for (let n = 0; Date.now() < stopAt; n++) {
        await Promise.all([get(n, keep), get(n, false)]);
        await sleep(10);
      }
      keep.destroy();
    })();

    // Exec storm: bursts of 20, twice a second.
    const execLoop = (async () => {
      while (Date.now() < stopAt) {
        await new Promise<void>((r) => {
          const c = spawn('sh', ['-c', `i=0; while [ $i -lt 20 ]; do ${marker}; i=$((i+1)); done`], { stdio: 'ignore' });
          c.once('exit', () => r());
        });
        execs += 20;
        await sleep(500);
      }
    })();

    // The uprobe, 10 times a second.
    const pay = startPeer(payment, [], undefined, true);
    peers.push(pay);
    await pay.line(/^ready$/);
    const payLoop = (async () => {
      for (let i = 0; Date.now() < stopAt; i++) {
        pay.send(`${(i * 37) % 2000} 1\n`);
        await pay.line(/^[02]$/);
        payments++;
        await sleep(100);
      }
    })();

    // Rules rewritten every 30 s.
    const rulesLoop = (async () => {
      for (let n = 1; Date.now() < stopAt; n++) {
        await sleep(30_000);
        if (Date.now() < stopAt) writeRules(n);
      }
    })();

    const points: Point[] = [];
    const t0 = Date.now();
    let last = procStat(pid);
    let lastT = t0;
    while (Date.now() < stopAt) {
      await sleep(SAMPLE_MS);
      const m = await agent.scrape();
      const now = procStat(pid);
      const t = Date.now();
      const p: Point = {
        t: (t - t0) / 1000,
        rssMiB: now.rssMiB,
        anonMiB: now.anonMiB,
        heapMiB: sum(m, 'nodejs_heap_size_used_bytes') / 2 ** 20,
        heapTotalMiB: sum(m, 'nodejs_heap_size_total_bytes') / 2 ** 20,
        externalMiB: sum(m, 'nodejs_external_memory_bytes') / 2 ** 20,
        cpuPct: ((now.cpuS - last.cpuS) / ((t - lastT) / 1000)) * 100,
        calibMs: calibrate(),
        fds: now.fds,
        drops: drops(m),
        maps: mapFill(pid),
        requests,
        execs,
        payments,
        alerts: sum(m, 'kernscope_security_alerts_total', {}),
        reloads: sum(m, 'kernscope_security_rule_reloads_total', { result: 'ok' }),
        scrapes: 0,
      };
      const up = await fetch(`http://127.0.0.1:${promPort}/api/v1/query?query=${encodeURIComponent('count_over_time(up{job="ks"}[1h])')}`).then((r) => r.json() as Promise<{ data?: { result?: Array<{ value: [number, string] }> } }>).catch(() => undefined);
      p.scrapes = Number(up?.data?.result?.[0]?.value[1] ?? 0);
      points.push(p);
      last = now;
      lastT = t;
      process.stderr.write(`soak: ${p.t.toFixed(0)} s rss ${p.rssMiB.toFixed(1)} MiB heap ${p.heapMiB.toFixed(1)} MiB cpu ${p.cpuPct.toFixed(1)} % fds ${p.fds} req ${requests} execs ${execs} drops ${JSON.stringify(p.drops)}\n`);
    }
    await Promise.all([httpLoop, execLoop, payLoop, rulesLoop]);
    const code = await agent.stop();
    report(points, code);
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
    for (const p of peers) await p.end();
    for (const c of cleanups) c();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function report(points: Point[], exitCode: number | null): void {
  const warm = Math.max(60, (MINUTES * 60) / 5);
  const kept = points.filter((p) => p.t >= warm);
  // Allocators and V8 grow toward a plateau: the second half's slope says
  // whether memory is still climbing once the first growth is over.
  const late = points.filter((p) => p.t >= (MINUTES * 60) / 2);
  const speed = median(kept.map((p) => p.calibMs));
  const line = (name: string, ys: number[], unit: string, limit?: number, over = kept): { row: string; ok: boolean } => {
    const { slope, mean } = fit(over.map((p) => p.t / 3600), ys);
    const ok = limit === undefined || Math.abs(slope) <= limit;
    return { row: `| ${name} | ${mean.toFixed(2)} ${unit} | ${slope >= 0 ? '+' : ''}${slope.toFixed(2)} ${unit}/h | ${limit === undefined ? '' : `${limit} ${unit}/h`} | ${limit === undefined ? '' : ok ? 'flat' : 'GROWS'} |`, ok };
  };
  const rows = [
    line('agent RSS', kept.map((p) => p.rssMiB), 'MiB', 8),
    line('agent RSS, second half', late.map((p) => p.rssMiB), 'MiB', undefined, late),
    line('  of it anonymous', kept.map((p) => p.anonMiB), 'MiB'),
    line('V8 heap used', kept.map((p) => p.heapMiB), 'MiB', 4),
    line('V8 heap reserved', kept.map((p) => p.heapTotalMiB), 'MiB'),
    line('memory outside V8 (buffers)', kept.map((p) => p.externalMiB), 'MiB'),
    line('open fds', kept.map((p) => p.fds), 'fds', 1),
    // A constant load's cost stays constant: CPU rising is work that piles
    // up. It is bounded as measured against the machine's speed at the time.
    line('agent CPU', kept.map((p) => p.cpuPct), '%'),
    line('machine: CPU for a fixed loop', kept.map((p) => p.calibMs), 'ms'),
    line('agent CPU at the run\'s median speed', kept.map((p) => (p.cpuPct * speed) / p.calibMs), '%', 2),
  ];
  const dropKeys = [...new Set(points.flatMap((p) => Object.keys(p.drops)))];
  for (const k of dropKeys) rows.push(line(`drops ${k}`, kept.map((p) => p.drops[k] ?? 0), 'events', 0));
  const mapKeys = [...new Set(points.flatMap((p) => Object.keys(p.maps)))].sort();
  for (const k of mapKeys) rows.push(line(`map ${k}`, kept.map((p) => p.maps[k] ?? 0), 'entries'));
  const ok = exitCode === 0 && rows.every((r) => r.ok);
  const lastP = points.at(-1)!;
  const text = [
    `# Soak, ${new Date().toISOString()}`,
    '',
    `${MINUTES} minutes, a sample every ${SAMPLE_MS / 1000} s, slopes fitted after a ${warm} s warm-up (\`npm run bench:soak -- --minutes ${MINUTES}\`).`,
    `Load: ${lastP.requests} HTTP requests (half keep-alive, half a new connection each), ${lastP.execs} execs, ${lastP.payments} uprobe hits, ${lastP.reloads} rule reloads, ${lastP.alerts} alerts, Prometheus scraping every second (${lastP.scrapes} scrapes in the last hour).`,
    '',
    '| series | mean | slope | allowed | verdict |',
    '| --- | ---: | ---: | ---: | --- |',
    ...rows.map((r) => r.row),
    '',
    `Agent exit code at the end: ${exitCode}. Verdict: ${ok ? 'PASS' : 'FAIL'}.`,
    '',
  ].join('\n');
  process.stdout.write(text);
  if (OUT) {
    fs.writeFileSync(OUT, text);
    fs.writeFileSync(OUT.replace(/(\.md)?$/, '.json'), JSON.stringify(points));
  }
  if (!ok) process.exitCode = 1;
}

main().catch((e) => {
  process.stderr.write(`soak: ${(e as Error).stack}\n`);
  process.exit(1);
});
