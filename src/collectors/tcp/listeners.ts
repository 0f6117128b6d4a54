import fs from 'node:fs';

export interface Listener {
  netns: number;
  port: number;
  tgid: number;
  comm: string;
}

function netnsOf(pid: string): number | undefined {
  try {
    const m = /\[(\d+)\]/.exec(fs.readlinkSync(`/proc/${pid}/ns/net`));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Inode -> local port of every listening TCP socket in one netns, as /proc shows it. */
function listeningInodes(pid: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const f of ['tcp', 'tcp6']) {
    let text: string;
    try {
      text = fs.readFileSync(`/proc/${pid}/net/${f}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
      if (cols.length < 10 || cols[3] !== '0A') continue;
      const port = parseInt(cols[1]!.split(':')[1] ?? '', 16);
      if (Number.isFinite(port) && cols[9] !== '0') out.set(cols[9]!, port);
    }
  }
  return out;
}

/**
 * Listening sockets that existed before the agent started, with their owners:
 * the kernel only sees listen() calls made after it loads. One /proc/PID/net
 * read per network namespace, then every process's fds for socket inodes.
 */
export function scanListeners(): Listener[] {
  const pids = fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p));
  const byNetns = new Map<number, Map<string, number>>();
  const out: Listener[] = [];
  for (const pid of pids) {
    const ns = netnsOf(pid);
    if (ns === undefined) continue;
    let inodes = byNetns.get(ns);
    if (!inodes) {
      inodes = listeningInodes(pid);
      byNetns.set(ns, inodes);
    }
    if (!inodes.size) continue;
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    let comm: string | undefined;
    for (const fd of fds) {
      let target: string;
      try {
        target = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      const m = /^socket:\[(\d+)\]$/.exec(target);
      const port = m ? inodes.get(m[1]!) : undefined;
      if (port === undefined) continue;
      try {
        comm ??= fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
      } catch {
        comm = '';
      }
      out.push({ netns: ns, port, tgid: Number(pid), comm });
    }
  }
  return out;
}
