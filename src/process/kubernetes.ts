import fs from 'node:fs';
import https from 'node:https';
import http from 'node:http';

/** What a container is, in Kubernetes' words. */
export interface PodInfo {
  namespace: string;
  pod: string;
  container: string;
  /** The Deployment owning the pod's ReplicaSet, or the owner's name (StatefulSet, DaemonSet, Job). */
  deployment: string;
}

/** The parts of the API's Pod object read here (core/v1 Pod). */
interface ApiPod {
  metadata: { name: string; namespace: string; uid: string; labels?: Record<string, string>; ownerReferences?: Array<{ kind: string; name: string; controller?: boolean }> };
  status?: { containerStatuses?: Array<{ name: string; containerID?: string }>; initContainerStatuses?: Array<{ name: string; containerID?: string }> };
}

export interface KubeSource {
  /** API server (or kubelet) base URL. */
  url: string;
  /** Path listing this node's pods. */
  path: string;
  token?: string;
  ca?: Buffer;
  /** A kubelet's serving certificate is often self-signed. */
  insecure?: boolean;
}

const SA = '/var/run/secrets/kubernetes.io/serviceaccount';

/**
 * Where pods can be listed from, in order: the config's URL; the node's
 * kubelet (`kubelet`: https://NODE_IP:10250/pods, whose serving certificate
 * is often self-signed); in a cluster, the API server (service account,
 * pods of NODE_NAME); else none.
 */
export function kubeSource(configUrl: string, tokenFile: string, kubelet = false): KubeSource | undefined {
  const nodeName = process.env.NODE_NAME ?? '';
  const selector = nodeName ? `?fieldSelector=${encodeURIComponent(`spec.nodeName=${nodeName}`)}` : '';
  const read = (f: string): string | undefined => {
    try {
      return fs.readFileSync(f, 'utf8').trim();
    } catch {
      return undefined;
    }
  };
  if (configUrl) {
    const token = tokenFile ? read(tokenFile) : undefined;
    return { url: configUrl.replace(/\/$/, ''), path: kubelet ? '/pods' : `/api/v1/pods${selector}`, ...(token ? { token } : {}), ...(kubelet ? { insecure: true } : {}) };
  }
  if (kubelet && process.env.NODE_IP) {
    const token = read(tokenFile || `${SA}/token`);
    const ip = process.env.NODE_IP;
    return { url: `https://${ip.includes(':') ? `[${ip}]` : ip}:10250`, path: '/pods', ...(token ? { token } : {}), insecure: true };
  }
  const host = process.env.KUBERNETES_SERVICE_HOST;
  const token = read(tokenFile || `${SA}/token`);
  if (!host || !token) return undefined;
  const port = process.env.KUBERNETES_SERVICE_PORT ?? '443';
  let ca: Buffer | undefined;
  try {
    ca = fs.readFileSync(`${SA}/ca.crt`);
  } catch {
    // no CA: the request fails and metadata degrades
  }
  return { url: `https://${host.includes(':') ? `[${host}]` : host}:${port}`, path: `/api/v1/pods${selector}`, token, ...(ca ? { ca } : {}) };
}

function get(src: KubeSource, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const u = new URL(src.path, src.url);
    const lib = u.protocol === 'https:' ? https : http;
    const req = lib.get(
      u,
      {
        headers: { accept: 'application/json', ...(src.token ? { authorization: `Bearer ${src.token}` } : {}) },
        timeout: timeoutMs,
        ...(src.ca ? { ca: src.ca } : {}),
        ...(src.insecure ? { rejectUnauthorized: false } : {}),
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          body += d;
          if (body.length > 64 << 20) req.destroy(new Error('pod list larger than 64 MiB'));
        });
        res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`HTTP ${res.statusCode}: ${body.slice(0, 200)}`))));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
  });
}

/** The workload owning a pod: a ReplicaSet's Deployment (its name less the template hash), else the owner itself. */
function workload(p: ApiPod): string {
  const refs = Array.isArray(p.metadata.ownerReferences) ? p.metadata.ownerReferences.filter((o) => isText(o?.name) && isText(o.kind)) : [];
  const owner = refs.find((o) => o.controller === true) ?? refs[0];
  if (!owner) return '';
  if (owner.kind === 'ReplicaSet') {
    const hash = p.metadata.labels?.['pod-template-hash'];
    if (isText(hash) && owner.name.endsWith(`-${hash}`)) return owner.name.slice(0, -hash.length - 1);
    return owner.name.replace(/-[a-z0-9]{5,10}$/, '');
  }
  return owner.name;
}

const isText = (v: unknown): v is string => typeof v === 'string' && v.length > 0;

/** The container statuses of a pod that name a container and its id. */
function statuses(p: ApiPod): Array<{ name: string; containerID: string }> {
  const all = [p.status?.containerStatuses, p.status?.initContainerStatuses].flatMap((l) => (Array.isArray(l) ? l : []));
  return all.filter((c): c is { name: string; containerID: string } => isText(c?.name) && isText(c.containerID));
}

/** Pods of this node by container id and by pod UID, refreshed from the API. */
export class KubeMetadata {
  private byContainer = new Map<string, PodInfo>();
  private byPod = new Map<string, Omit<PodInfo, 'container'>>();
  private refreshing: Promise<void> | undefined;
  private lastRefresh = 0;
  lastError = '';
  ok = false;

  constructor(
    private readonly src: KubeSource,
    private readonly minRefreshMs = 5000,
  ) {}

  /** Parses a PodList (core/v1) into the lookup tables. */
  load(podList: string): void {
    const doc = JSON.parse(podList) as { kind?: unknown; items?: ApiPod[] } | null;
    if (!doc || typeof doc !== 'object' || !Array.isArray(doc.items)) throw new Error(`not a PodList (kind ${isText(doc?.kind) ? doc.kind : 'missing'})`);
    const byContainer = new Map<string, PodInfo>();
    const byPod = new Map<string, Omit<PodInfo, 'container'>>();
    for (const p of doc.items) {
      // An item without a name, namespace and uid labels nothing: passed over.
      const md = p?.metadata;
      if (!md || !isText(md.name) || !isText(md.namespace) || !isText(md.uid)) continue;
      const base = { namespace: md.namespace, pod: md.name, deployment: workload(p) };
      byPod.set(md.uid, base);
      for (const c of statuses(p)) {
        const id = c.containerID.replace(/^[\w-]+:\/\//, '');
        if (id) byContainer.set(id, { ...base, container: c.name });
      }
    }
    this.byContainer = byContainer;
    this.byPod = byPod;
  }

  async refresh(): Promise<void> {
    this.refreshing ??= (async () => {
      try {
        this.load(await get(this.src));
        this.ok = true;
        this.lastError = '';
      } catch (e) {
        this.lastError = (e as Error).message;
        this.ok = false;
      } finally {
        this.lastRefresh = Date.now();
        this.refreshing = undefined;
      }
    })();
    return this.refreshing;
  }

  /** What is known now; a miss asks for a refresh (at most every minRefreshMs). */
  lookup(containerId: string | undefined, podUid: string | undefined): Partial<PodInfo> | undefined {
    const hit = (containerId && this.byContainer.get(containerId)) || (podUid && this.byPod.get(podUid));
    if (!hit && (containerId || podUid) && Date.now() - this.lastRefresh > this.minRefreshMs) void this.refresh();
    return hit || undefined;
  }
}
