/**
 * Container and pod identity from a process's cgroup path, for the shapes
 * container runtimes give it: Docker (cgroupfs and systemd drivers),
 * containerd and CRI-O under Kubernetes (kubepods, both drivers), Podman;
 * and the systemd unit of a plain host service.
 */
export interface CgroupIdentity {
  /** 64 hex digits; absent outside a container. */
  containerId?: string;
  runtime?: 'docker' | 'containerd' | 'cri-o' | 'podman';
  /** Kubernetes pod UID, with dashes. */
  podUid?: string;
  /** e.g. nginx.service, for processes of host services. */
  systemdUnit?: string;
}

const ID = '([0-9a-f]{64})';
const SHAPES: Array<[RegExp, CgroupIdentity['runtime']]> = [
  [new RegExp(`cri-containerd-${ID}\\.scope`), 'containerd'],
  [new RegExp(`crio-(?:conmon-)?${ID}(?:\\.scope)?`), 'cri-o'],
  [new RegExp(`docker-${ID}\\.scope`), 'docker'],
  [new RegExp(`libpod-(?:conmon-)?${ID}(?:\\.scope)?`), 'podman'],
  [new RegExp(`/docker/${ID}`), 'docker'],
  // cgroupfs driver under kubepods: the container's own directory is its id
  [new RegExp(`/kubepods[^\\n]*/pod[0-9a-f-]{36}/${ID}`), 'containerd'],
];

/** The path that names the process: the v2 line ("0::/..."), else the first v1 one. */
function cgroupPath(text: string): string {
  const lines = text.split('\n').filter(Boolean);
  const v2 = lines.find((l) => l.startsWith('0::'));
  return (v2 ?? lines.find((l) => /:(name=systemd|memory|pids|cpu)/.test(l)) ?? lines[0] ?? '').replace(/^[^:]*:[^:]*:/, '');
}

/** Parses the contents of /proc/PID/cgroup. */
export function parseCgroup(text: string): CgroupIdentity {
  const out: CgroupIdentity = {};
  const all = text.split('\n').map((l) => l.replace(/^[^:]*:[^:]*:/, '')).join('\n');
  for (const [re, runtime] of SHAPES) {
    const m = re.exec(all);
    if (m) {
      out.containerId = m[1]!;
      out.runtime = runtime;
      break;
    }
  }
  // systemd driver: kubepods-besteffort-pod<uid with underscores>.slice;
  // cgroupfs: /kubepods/besteffort/pod<uid>/
  const pod = /kubepods[^\n]*?pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})/.exec(all);
  if (pod) out.podUid = pod[1]!.replace(/_/g, '-');
  if (!out.containerId) {
    const unit = /\/([^/]+\.service)(?:\/|$)/.exec(cgroupPath(text));
    if (unit) out.systemdUnit = unit[1]!;
  }
  return out;
}
