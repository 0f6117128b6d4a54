import fs from 'node:fs';

/** A TCP socket found in /proc, with the process holding it. */
export interface ProcSocket {
  netns: number;
  tgid: number;
  fd: number;
  comm: string;
  state: 'listen' | 'established';
  localPort: number;
  family: 2 | 10;
  /** Remote address in network byte order (4 or 16 bytes). */
  remoteAddr: Buffer;
  remotePort: number;
}

interface Row {
  state: 'listen' | 'established';
  localPort: number;
  family: 2 | 10;
  remoteAddr: Buffer;
  remotePort: number;
}

function netnsOf(pid: string): number | undefined {
  try {
    const m = /\[(\d+)\]/.exec(fs.readlinkSync(`/proc/${pid}/ns/net`));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** /proc/net/tcp prints each 32-bit word of an address as a host-order number. */
function address(hex: string): Buffer {
  const b = Buffer.alloc(hex.length / 2);
  for (let i = 0; i < hex.length / 8; i++) b.writeUInt32LE(parseInt(hex.slice(i * 8, i * 8 + 8), 16), i * 4);
  return b;
}

/** Inode -> socket of every listening or established TCP socket in one netns. */
function sockets(pid: string): Map<string, Row> {
  const out = new Map<string, Row>();
  for (const [file, family] of [['tcp', 2], ['tcp6', 10]] as const) {
    let text: string;
    try {
      text = fs.readFileSync(`/proc/${pid}/net/${file}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
      const cols = line.trim().split(/\s+/);
      if (cols.length < 10 || cols[9] === '0') continue;
      const state = cols[3] === '0A' ? 'listen' : cols[3] === '01' ? 'established' : undefined;
      if (!state) continue;
      const [, lport] = cols[1]!.split(':');
      const [raddr, rport] = cols[2]!.split(':');
      out.set(cols[9]!, { state, localPort: parseInt(lport!, 16), family, remoteAddr: address(raddr!), remotePort: parseInt(rport!, 16) });
    }
  }
  return out;
}

/**
 * TCP sockets that existed before the agent started, with their owners: the
 * kernel only shows the agent listen(), accept() and connect() calls made
 * after it loads. One /proc/PID/net read per network namespace, then every
 * process's fds for socket inodes.
 */
export function scanSockets(): ProcSocket[] {
  const pids = fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p));
  const byNetns = new Map<number, Map<string, Row>>();
  const out: ProcSocket[] = [];
  for (const pid of pids) {
    const ns = netnsOf(pid);
    if (ns === undefined) continue;
    let table = byNetns.get(ns);
    if (!table) {
      table = sockets(pid);
      byNetns.set(ns, table);
    }
    if (!table.size) continue;
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
      const row = m ? table.get(m[1]!) : undefined;
      if (!row) continue;
      try {
        comm ??= fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
      } catch {
        comm = '';
      }
      out.push({ netns: ns, tgid: Number(pid), fd: Number(fd), comm, ...row });
    }
  }
  return out;
}

/** The TCP ports a process listens on (reads only its own /proc entries). */
export function listeningPorts(pid: number): Set<number> {
  const listening = new Map([...sockets(String(pid))].filter(([, r]) => r.state === 'listen').map(([inode, r]) => [inode, r.localPort]));
  const out = new Set<number>();
  if (!listening.size) return out;
  let fds: string[];
  try {
    fds = fs.readdirSync(`/proc/${pid}/fd`);
  } catch {
    return out;
  }
  for (const fd of fds) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
      const port = m ? listening.get(m[1]!) : undefined;
      if (port !== undefined) out.add(port);
    } catch {
      // closed meanwhile
    }
  }
  return out;
}
