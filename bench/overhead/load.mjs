// Load for one measurement: `amount` requests over `connections` keep-alive
// connections, at most `rate` per second when given; GET /users/<n>, n
// counting up, so routes carry ids and one in 20 is a 500. Prints one JSON line.
import autocannon from 'autocannon';

const [url, amount, connections, rate] = process.argv.slice(2);
let n = 1;
const opts = {
  url,
  amount: Number(amount),
  connections: Number(connections),
  requests: [{ method: 'GET', setupRequest: (req) => ({ ...req, path: `/users/${n++}` }) }],
};
if (rate && Number(rate) > 0) opts.overallRate = Number(rate);
const r = await autocannon(opts);
const ok = r['2xx'];
const failed = r['5xx'];
process.stdout.write(`${JSON.stringify({ requests: ok + failed + r['4xx'], ok, failed, errors: r.errors + r.timeouts, seconds: r.duration, rps: (ok + failed) / r.duration, p50: r.latency.p50, p99: r.latency.p99 })}\n`);
