import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from '../src/paths.js';
import { tmpDir } from './helpers.js';

/**
 * A copy of a fixture under a unique script name, so the agent's `service`
 * label (the main script's name) identifies this test's processes.
 */
export function fixtureCopy(fixture: string, role: string): { script: string; service: string; cleanup: () => void } {
  const dir = tmpDir('ks-peer');
  const service = `ks${role}${process.pid}${Math.floor(Math.random() * 1e6)}`;
  const script = path.join(dir, `${service}${path.extname(fixture)}`);
  fs.copyFileSync(path.join(ROOT, 'test', 'fixtures', fixture), script);
  return { script, service, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** The TCP peer (test/fixtures/tcp-peer.mjs) under a unique name. */
export function peerScript(role: string): ReturnType<typeof fixtureCopy> {
  return fixtureCopy('tcp-peer.mjs', role);
}

export interface Peer {
  child: ChildProcess;
  /** Resolves with the first line the peer prints that matches. */
  line(re: RegExp): Promise<string>;
  send(text: string): void;
  /** Closes stdin (the peer exits) and waits; kills by pid after 5 s. */
  end(): Promise<void>;
}

export function startPeer(script: string, args: string[], netns?: string, native = false): Peer {
  // A native binary runs as it is; a script runs under this node.
  const argv = native ? [script, ...args] : [process.execPath, script, ...args];
  const child = netns ? spawn('ip', ['netns', 'exec', netns, ...argv], { stdio: ['pipe', 'pipe', 'inherit'] }) : spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  const waiters: Array<{ re: RegExp; resolve: (s: string) => void }> = [];
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    for (const w of [...waiters]) {
      // Whole lines only: a line may come in pieces (print's parts, unbuffered).
      const m = out.split('\n').slice(0, -1).find((l) => w.re.test(l));
      if (m !== undefined) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(m);
      }
    }
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return {
    child,
    line: (re) =>
      new Promise((resolve, reject) => {
        const m = out.split('\n').slice(0, -1).find((l) => re.test(l));
        if (m !== undefined) return resolve(m);
        waiters.push({ re, resolve });
        child.once('exit', (code) => reject(new Error(`peer exited ${code} before printing ${re}`)));
      }),
    send: (t) => child.stdin!.write(t),
    end: async () => {
      child.stdin!.end();
      const t = setTimeout(() => child.exitCode === null && child.pid && process.kill(child.pid, 'SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}
