// What every bench script does with its result: print it, write it where
// `--out FILE` says, and fail loudly.
import fs from 'node:fs';

export function report(text: string): void {
  process.stdout.write(text);
  const out = process.argv.indexOf('--out');
  if (out > 0) fs.writeFileSync(process.argv[out + 1]!, text);
}

export function runBench(main: () => Promise<void>): void {
  main().catch((e) => {
    process.stderr.write(`bench: ${(e as Error).stack}\n`);
    process.exit(1);
  });
}
