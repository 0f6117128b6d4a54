import { fileURLToPath } from 'node:url';
import path from 'node:path';
import fs from 'node:fs';

/** The repository (or installed package) root, found from this file's place
 * whether it runs from src/ (never) or dist/src/. */
function findRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    dir = path.dirname(dir);
  }
  throw new Error('kernscope: cannot find the package root');
}

export const ROOT = findRoot();
export const BPF_DIR = process.env.KERNSCOPE_BPF_DIR ?? path.join(ROOT, 'bpf', '.output');
export const ADDON_PATH = path.join(ROOT, 'build', 'Release', 'kernscope.node');
/** Probe targets and the timing loop of the hook-cost measurement (addon/hook-targets.c). */
export const HOOK_TARGETS_PATH = path.join(ROOT, 'build', 'Release', 'hook_targets.node');

export function bpfObjectPath(name: string): string {
  return path.join(BPF_DIR, name);
}
