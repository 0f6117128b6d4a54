import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { ROOT } from '../../src/paths.js';

// deploy/: the Kubernetes manifests against Kubernetes' own schemas, the
// Helm chart against the manifests, the Prometheus rules through promtool,
// the dashboards' shape.

const DEPLOY = path.join(ROOT, 'deploy');

type Obj = { apiVersion: string; kind: string; metadata: { name: string } } & Record<string, unknown>;

const MODELS: Record<string, [string, string]> = {
  'v1/Namespace': ['kubernetes-models/v1/Namespace', 'Namespace'],
  'v1/ServiceAccount': ['kubernetes-models/v1/ServiceAccount', 'ServiceAccount'],
  'v1/ConfigMap': ['kubernetes-models/v1/ConfigMap', 'ConfigMap'],
  'v1/Service': ['kubernetes-models/v1/Service', 'Service'],
  'apps/v1/DaemonSet': ['kubernetes-models/apps/v1/DaemonSet', 'DaemonSet'],
  'rbac.authorization.k8s.io/v1/ClusterRole': ['kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole', 'ClusterRole'],
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': ['kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding', 'ClusterRoleBinding'],
  'monitoring.coreos.com/v1/ServiceMonitor': ['@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor', 'ServiceMonitor'],
};

function docs(text: string): Obj[] {
  return YAML.parseAllDocuments(text).map((d) => d.toJS() as Obj).filter(Boolean);
}

test('Kubernetes manifests validate against the API schemas', async () => {
  const objs = docs(fs.readFileSync(path.join(DEPLOY, 'kubernetes', 'kernscope.yaml'), 'utf8'));
  assert.deepEqual(objs.map((o) => o.kind), ['Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'ConfigMap', 'DaemonSet', 'Service', 'ServiceMonitor']);
  for (const o of objs) {
    const m = MODELS[`${o.apiVersion}/${o.kind}`];
    assert.ok(m, `no schema for ${o.apiVersion} ${o.kind}`);
    const mod = (await import(m[0])) as Record<string, new (o: object) => { validate(): void }>;
    new mod[m[1]]!(o).validate();
  }
  // A mistake is caught: the validator is really validating.
  const ds = structuredClone(objs.find((o) => o.kind === "DaemonSet")!) as unknown as { spec: { template: { spec: { hostPID: unknown } } } };
  ds.spec.template.spec.hostPID = 'yes';
  const { DaemonSet } = await import('kubernetes-models/apps/v1/DaemonSet');
  assert.throws(() => new DaemonSet(ds as never).validate(), /hostPID must be boolean/);
  // Not privileged: the capabilities are named one by one.
  const c = (objs.find((o) => o.kind === 'DaemonSet') as unknown as { spec: { template: { spec: { containers: Array<{ securityContext: { privileged: boolean; capabilities: { add: string[] } } }> } } } }).spec.template.spec.containers[0]!;
  assert.equal(c.securityContext.privileged, false);
  assert.ok(c.securityContext.capabilities.add.includes('BPF') && c.securityContext.capabilities.add.includes('PERFMON'));
  // The config it ships is one the agent accepts.
  const cm = objs.find((o) => o.kind === 'ConfigMap') as unknown as { data: Record<string, string> };
  const { parseConfig } = await import('../../src/config/load.js');
  parseConfig(YAML.parse(cm.data['kernscope.yaml']!), 'configmap');
});

/**
 * Renders the chart's templates for the subset of Go templates they use:
 * values and release fields, `toYaml X | nindent N`, `if`/`end`, and
 * whitespace trimming with `{{-`.
 */
function renderChart(dir: string, release: { Name: string; Namespace: string }): string {
  const values = YAML.parse(fs.readFileSync(path.join(dir, 'values.yaml'), 'utf8')) as Record<string, unknown>;
  const chart = YAML.parse(fs.readFileSync(path.join(dir, 'Chart.yaml'), 'utf8')) as Record<string, unknown>;
  const ctx: Record<string, unknown> = { Values: values, Release: release, Chart: { ...chart, AppVersion: chart.appVersion } };
  const lookup = (ref: string): unknown => ref.replace(/^\./, '').split('.').reduce<unknown>((o, k) => (o as Record<string, unknown> | undefined)?.[k], ctx);
  let out = '';
  for (const f of fs.readdirSync(path.join(dir, 'templates')).sort()) {
    const text = fs.readFileSync(path.join(dir, 'templates', f), 'utf8');
    const parts = text.split(/(\{\{-?\s*[^}]*?\s*-?\}\})/);
    const skip: boolean[] = [];
    let acc = '';
    for (const p of parts) {
      const m = /^\{\{(-?)\s*(.*?)\s*(-?)\}\}$/.exec(p);
      if (!m) {
        if (!skip.includes(true)) acc += p;
        continue;
      }
      if (m[1]) acc = acc.replace(/\s+$/, '');
      const expr = m[2]!;
      let v: string;
      if (expr.startsWith('if ')) {
        skip.push(!lookup(expr.slice(3).trim()));
        continue;
      } else if (expr === 'end') {
        skip.pop();
        continue;
      } else if (skip.includes(true)) continue;
      const y = /^toYaml (\S+) \| nindent (\d+)$/.exec(expr);
      if (y) {
        const pad = ' '.repeat(Number(y[2]));
        v = `\n${YAML.stringify(lookup(y[1]!)).trimEnd().split('\n').map((l) => pad + l).join('\n')}`;
      } else if (/^\.[\w.]+$/.test(expr)) v = String(lookup(expr));
      else throw new Error(`${f}: template construct not handled here: ${expr}`);
      acc += v;
    }
    out += `${acc}\n---\n`;
  }
  return out;
}

test('the Helm chart renders to the same objects as the manifests', () => {
  const rendered = docs(renderChart(path.join(DEPLOY, 'helm', 'kernscope'), { Name: 'kernscope', Namespace: 'kernscope' }));
  const manifests = docs(fs.readFileSync(path.join(DEPLOY, 'kubernetes', 'kernscope.yaml'), 'utf8'));
  assert.deepEqual(rendered, manifests);
  // Values reach the objects.
  const other = docs(renderChart(path.join(DEPLOY, 'helm', 'kernscope'), { Name: 'k', Namespace: 'observability' }));
  assert.ok(other.filter((o) => o.kind !== 'ClusterRole' && o.kind !== 'ClusterRoleBinding' && o.kind !== 'Namespace').every((o) => (o.metadata as { namespace?: string }).namespace === 'observability'));
});

test('Prometheus rules pass promtool check and their unit tests', () => {
  const dir = path.join(DEPLOY, 'prometheus');
  const check = execFileSync('promtool', ['check', 'rules', 'kernscope.rules.yml'], { cwd: dir, encoding: 'utf8' });
  assert.match(check, /SUCCESS: \d+ rules found/);
  const unit = execFileSync('promtool', ['test', 'rules', 'kernscope.rules.test.yml'], { cwd: dir, encoding: 'utf8' });
  assert.match(unit, /SUCCESS/);
});

test('dashboards: Grafana JSON with a PromQL target on every panel', () => {
  const dir = path.join(DEPLOY, 'grafana');
  const uids = new Set<string>();
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.json'));
  assert.deepEqual(files.sort(), ['kernscope-agent.json', 'kernscope-network.json', 'kernscope-red.json', 'kernscope-resources.json', 'kernscope-security.json']);
  for (const f of files) {
    const d = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as { uid: string; panels: Array<{ title: string; targets: Array<{ expr: string }> }> };
    assert.ok(!uids.has(d.uid));
    uids.add(d.uid);
    assert.ok(d.panels.length >= 4, f);
    for (const p of d.panels) assert.ok(p.targets.length > 0 && p.targets.every((t) => t.expr.length > 0), `${f}: ${p.title}`);
  }
});
