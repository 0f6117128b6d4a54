/**
 * The cgroups services run in: where the memory and cpu controllers are
 * mounted (v2, else v1), a process's path in each, and each known cgroup's
 * memory, limit, OOM kills and CPU throttling read from its files at each
 * walk, as growth since the last one.
 */
import fs from 'node:fs';
import type client from 'prom-client';
import type { FileReader } from './procfs.js';
import { parseCgroupV2, parseKeyValues, parseLimit } from './procfs.js';

/** Where a controller's files are, and which names they have. */
export interface Controller {
  root: string;
  v2: boolean;
}

/** A v1 limit this large is no limit (the page-rounded LONG_MAX). */
const V1_NO_LIMIT = 2 ** 62;

/** The memory and cpu controllers: in the v2 hierarchy when it has them, else their v1 mounts. */
export function controllers(): { memory?: Controller; cpu?: Controller; v1Names: Map<string, string> } {
  const out: { memory?: Controller; cpu?: Controller; v1Names: Map<string, string> } = { v1Names: new Map() };
  let mountinfo = '';
  try {
    mountinfo = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return out;
  }
  for (const line of mountinfo.split('\n')) {
    const [pre, post] = line.split(' - ');
    if (!pre || !post) continue;
    const mnt = pre.split(' ')[4]!;
    const [type, , opts = ''] = post.split(' ');
    if (type === 'cgroup2') {
      let have: string[] = [];
      try {
        have = fs.readFileSync(`${mnt}/cgroup.controllers`, 'utf8').trim().split(/\s+/);
      } catch {
        // no controllers file: nothing here
      }
      if (have.includes('memory')) out.memory = { root: mnt, v2: true };
      if (have.includes('cpu')) out.cpu = { root: mnt, v2: true };
    } else if (type === 'cgroup') {
      const o = opts.split(',');
      if (o.includes('memory') && !out.memory) out.memory = { root: mnt, v2: false };
      if (o.includes('cpu') && !out.cpu) out.cpu = { root: mnt, v2: false };
      for (const c of ['memory', 'cpu']) if (o.includes(c)) out.v1Names.set(c, o.filter((x) => ['memory', 'cpu', 'cpuacct'].includes(x)).join(','));
    }
  }
  return out;
}

/** A process's path in a controller's hierarchy, from /proc/PID/cgroup. */
export function cgroupOf(text: string, c: Controller | undefined, v1Name: string | undefined): string | undefined {
  if (!c) return undefined;
  if (c.v2) return parseCgroupV2(text);
  for (const line of text.split('\n')) {
    const [, names, path] = line.split(':');
    if (names && path !== undefined && names === v1Name) return path;
  }
  return undefined;
}

export interface Cgroup {
  service: string;
  meta: Record<string, string>;
  oomKills?: number;
  throttledPeriods?: number;
  throttledNs?: number;
}

export interface CgroupFamilies {
  cgMemory: client.Gauge<string>;
  cgLimit: client.Gauge<string>;
  cgOom: client.Counter<string>;
  cgThrottledPeriods: client.Counter<string>;
  cgThrottled: client.Counter<string>;
}

/**
 * Every cgroup a service ran in, while its directory lives (an OOM kill
 * may have emptied it); a cgroup whose files are gone is forgotten.
 */
export function walkCgroups(r: FileReader, ctl: ReturnType<typeof controllers>, cgroups: Map<string, Cgroup>, m: CgroupFamilies): void {
  const { memory, cpu } = ctl;
  m.cgMemory.reset();
  m.cgLimit.reset();
  for (const [path, cg] of cgroups) {
    const labels = { cgroup: path, service_name: cg.service, ...cg.meta };
    let alive = false;
    if (memory) {
      const dir = memory.root + path;
      const usage = parseLimit(r.read(`${dir}/${memory.v2 ? 'memory.current' : 'memory.usage_in_bytes'}`));
      if (usage !== undefined) {
        alive = true;
        m.cgMemory.set(labels, usage);
        const limit = parseLimit(r.read(`${dir}/${memory.v2 ? 'memory.max' : 'memory.limit_in_bytes'}`));
        if (limit !== undefined && limit < V1_NO_LIMIT) m.cgLimit.set(labels, limit);
        const ev = parseKeyValues(r.read(`${dir}/${memory.v2 ? 'memory.events' : 'memory.oom_control'}`) ?? '');
        const kills = ev.get('oom_kill');
        if (kills !== undefined) {
          if (cg.oomKills !== undefined && kills > cg.oomKills) m.cgOom.inc(labels, kills - cg.oomKills);
          else m.cgOom.inc(labels, 0);
          cg.oomKills = kills;
        }
      }
    }
    if (cpu) {
      const st = r.read(`${cpu.root + path}/cpu.stat`);
      if (st !== undefined) {
        alive = true;
        const kv = parseKeyValues(st);
        const periods = kv.get('nr_throttled');
        const ns = cpu.v2 ? (kv.get('throttled_usec') ?? NaN) * 1000 : kv.get('throttled_time');
        if (periods !== undefined) {
          m.cgThrottledPeriods.inc(labels, cg.throttledPeriods !== undefined ? Math.max(0, periods - cg.throttledPeriods) : 0);
          cg.throttledPeriods = periods;
        }
        if (ns !== undefined && Number.isFinite(ns)) {
          m.cgThrottled.inc(labels, cg.throttledNs !== undefined ? Math.max(0, ns - cg.throttledNs) / 1e9 : 0);
          cg.throttledNs = ns;
        }
      }
    }
    if (!alive) cgroups.delete(path);
  }
}
