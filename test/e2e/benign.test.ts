import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from '../../src/paths.js';
import { isRoot, startAgent, sum, tmpDir } from '../helpers.js';

// Everyday work under the default rules: package queries, npm ci, compilers,
// this project's own BPF build, tar, a test binary built in a temporary
// directory and run there by make. Every alert it raised would be a false
// positive (the rule would be fixed), so the count must be 0. The one noisy
// by nature, a build running its tests from /tmp, is excepted the way a
// user would: an `exceptions` entry in a rules file of their own.
test('a benign workload raises no alert under the default rules', async () => {
  assert.ok(isRoot, 'the agent needs root (CI runs as root)');
  const dir = tmpDir('ks-benign');
  const alerts = path.join(dir, 'alerts.jsonl');
  fs.mkdirSync(path.join(dir, 'npmproj'));
  fs.writeFileSync(path.join(dir, 'npmproj', 'package.json'), '{"name":"p","version":"1.0.0","private":true}');
  fs.writeFileSync(path.join(dir, 'npmproj', 'package-lock.json'), '{"name":"p","version":"1.0.0","lockfileVersion":3,"requires":true,"packages":{"":{"name":"p","version":"1.0.0"}}}');
  const build = path.join(dir, 'build');
  fs.mkdirSync(build);
  fs.copyFileSync(path.join(ROOT, 'test', 'fixtures', 'usdt-target.c'), path.join(build, 't.c'));
  fs.writeFileSync(path.join(build, 'Makefile'), 'check: t\n\t./t 1\nt: t.c\n\t$(CC) -O2 -o t t.c\n');
  const local = path.join(dir, 'local-rules.yaml');
  fs.writeFileSync(
    local,
    `exceptions:\n  - rule: exec-from-temporary-location\n    description: make runs the tests it built in a temporary build directory\n    match: { exe: ["${build}/*"], parent: { name: [make] } }\n`,
  );
  const agent = await startAgent(`security:\n  rules: [${local}]\n  output:\n    stdout: false\n    file: ${alerts}\n`);
  const bpf = path.join(ROOT, 'bpf');
  const script = [
    'dpkg --audit',
    'apt-cache policy nginx > /dev/null',
    `cd ${dir}/npmproj && npm ci --no-audit --no-fund --loglevel=error`,
    `gcc -O2 -o ${dir}/usdt ${ROOT}/test/fixtures/usdt-target.c`,
    `clang -g -O2 -Wall -target bpf -D__TARGET_ARCH_x86 -I${bpf} -I/usr/include/x86_64-linux-gnu -c ${bpf}/tcp.bpf.c -o ${dir}/tcp.bpf.o`,
    `bpftool gen object ${dir}/linked.o ${dir}/tcp.bpf.o`,
    `${process.execPath} ${ROOT}/node_modules/typescript/bin/tsc --version > /dev/null`,
    'git --version > /dev/null',
    `tar -C ${dir} -czf ${dir}/npmproj.tgz npmproj && tar -C ${build} -xzf ${dir}/npmproj.tgz`,
    `make -s -C ${build} check`,
  ].join(' && ');
  try {
    const execs0 = sum(await agent.scrape(), 'kernscope_process_execs_total');
    const code = await new Promise((r) => spawn('sh', ['-c', script], { stdio: 'ignore' }).once('exit', r));
    assert.equal(code, 0, 'the workload ran');
    await new Promise((r) => setTimeout(r, 500));
    const m = await agent.scrape();
    const execs = sum(m, 'kernscope_process_execs_total') - execs0;
    const raised = fs.existsSync(alerts) ? fs.readFileSync(alerts, 'utf8').trim().split('\n').filter(Boolean) : [];
    process.stdout.write(`# benign workload: ${execs} execs, ${raised.length} alerts\n`);
    assert.ok(execs >= 10, `the workload ran programs (${execs})`);
    assert.deepEqual(raised, []);
  } finally {
    await agent.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
