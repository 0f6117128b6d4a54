import { parseArgs } from 'node:util';
import { loadConfig } from './config/load.js';
import { KernscopeError } from './errors.js';
import { checkBtf, checkPrivileges } from './privileges.js';
import { parseListen } from './server.js';

const USAGE = `usage: kernscope <command> [options]

commands:
  run      start the agent and serve /metrics
  doctor   report what this kernel offers, what each hook costs, and which hook each collector uses
  recorder show [--last-boot] [--seconds N] [--json]
           the flight recorder's timeline: this boot's, or the last boot's before a crash,
           merged with the kernel's panic log from pstore
  recorder tail
           follow the flight recorder's journal while the agent runs
  config check --config FILE
           validate a configuration file and say what is wrong, without running
  config schema
           the configuration's JSON Schema, with every default (for editors:
           yaml-language-server, VS Code)

options (run):
  --config FILE        YAML configuration (see README); defaults are built in
  --listen HOST:PORT   address for /metrics and /healthz (default 127.0.0.1:9527)
  --web.config.file FILE  TLS and basic auth for every endpoint, in the format
                       node_exporter and Prometheus read (see README)
options (recorder):
  --config FILE        as for run (the journal is at recorder.path)
  --dir DIR            the journal's folder, instead of the config's
  --boot ID            show: that boot (a prefix of its id)
  --pstore DIR         show: where the kernel's pstore logs are (default /sys/fs/pstore)
  --lines N            tail: records shown before following (default 10)
options (doctor):
  --config FILE        as for run
  --json               machine-readable report
  --no-measure         skip the hook cost measurement
  -h, --help           this text
`;

function fail(e: unknown): number {
  if (e instanceof KernscopeError) {
    process.stderr.write(`kernscope: ${e.message}\n`);
    return e.code === 'ERR_KERNSCOPE_CONFIG' || e.code === 'ERR_KERNSCOPE_USAGE' ? 2 : 1;
  }
  const err = e as Error & { log?: string; errno?: number };
  process.stderr.write(`kernscope: ${err.message}\n`);
  if (err.log && process.env.KERNSCOPE_DEBUG) process.stderr.write(err.log);
  return 1;
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '-h' || command === '--help' || command === 'help') {
    (command ? process.stdout : process.stderr).write(USAGE);
    return command ? 0 : 2;
  }
  if (command === '--version' || command === 'version') {
    process.stdout.write('kernscope 0.1.0\n');
    return 0;
  }
  if (command === 'recorder') return recorder(rest);
  if (command === 'config') return configCommand(rest);
  let values: Record<string, string | boolean | undefined>;
  try {
    const options = {
      config: { type: 'string' },
      listen: { type: 'string' },
      'web.config.file': { type: 'string' },
      json: { type: 'boolean' },
      'no-measure': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    } as const;
    ({ values } = parseArgs({ args: rest, options, strict: true, allowPositionals: false }));
    if (command === 'run' && (values.json || values['no-measure'])) {
      throw new KernscopeError('ERR_KERNSCOPE_USAGE', `run: unknown option '--${values.json ? 'json' : 'no-measure'}'`);
    }
    if (command === 'doctor' && values.listen) throw new KernscopeError('ERR_KERNSCOPE_USAGE', "doctor: unknown option '--listen'");
    if (command === 'doctor' && values['web.config.file']) throw new KernscopeError('ERR_KERNSCOPE_USAGE', "doctor: unknown option '--web.config.file'");
  } catch (e) {
    const msg = e instanceof KernscopeError ? e.message : (e as Error).message;
    process.stderr.write(`kernscope: ${msg}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  try {
    const config = loadConfig(values.config as string | undefined);
    if (values.listen !== undefined) {
      parseListen(values.listen as string);
      config.listen = values.listen as string;
    }
    if (values['web.config.file'] !== undefined) config.web.configFile = values['web.config.file'] as string;
    if (command === 'run') return await run(config);
    if (command === 'doctor') {
      checkPrivileges();
      checkBtf();
      const { doctor, formatDoctor } = await import('./doctor.js');
      const report = await doctor(config, { measure: !values['no-measure'] });
      process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatDoctor(report)}\n`);
      return 0;
    }
    process.stderr.write(`kernscope: unknown command "${command}"\n\n${USAGE}`);
    return 2;
  } catch (e) {
    return fail(e);
  }
}

async function configCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  try {
    if (sub !== 'check' && sub !== 'schema') throw new KernscopeError('ERR_KERNSCOPE_USAGE', `config: expected "check" or "schema", got ${sub ? `"${sub}"` : 'nothing'}`);
    const { values } = parseArgs({ args: rest, options: { config: { type: 'string' } }, strict: true, allowPositionals: false });
    if (sub === 'schema') {
      const { FILE_SCHEMA } = await import('./config/schema.js');
      process.stdout.write(`${JSON.stringify({ $schema: 'http://json-schema.org/draft-07/schema#', title: 'kernscope configuration', ...(FILE_SCHEMA as object) }, null, 2)}\n`);
      return 0;
    }
    if (!values.config) throw new KernscopeError('ERR_KERNSCOPE_USAGE', 'config check: --config FILE is required');
    loadConfig(values.config);
    process.stdout.write(`${values.config}: ok\n`);
    return 0;
  } catch (e) {
    if (e instanceof KernscopeError && e.code === 'ERR_KERNSCOPE_CONFIG') return fail(e);
    process.stderr.write(`kernscope: ${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
}

async function recorder(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  let values: Record<string, string | boolean | undefined>;
  try {
    if (sub !== 'show' && sub !== 'tail') throw new KernscopeError('ERR_KERNSCOPE_USAGE', `recorder: expected "show" or "tail", got ${sub ? `"${sub}"` : 'nothing'}`);
    const options = {
      config: { type: 'string' },
      dir: { type: 'string' },
      'last-boot': { type: 'boolean' },
      boot: { type: 'string' },
      seconds: { type: 'string' },
      json: { type: 'boolean' },
      pstore: { type: 'string' },
      lines: { type: 'string' },
    } as const;
    ({ values } = parseArgs({ args: rest, options, strict: true, allowPositionals: false }));
    for (const k of ['seconds', 'lines'] as const) {
      const v = values[k];
      if (v !== undefined && !(/^\d+(\.\d+)?$/.test(v as string) && Number(v) > 0)) throw new KernscopeError('ERR_KERNSCOPE_USAGE', `recorder: --${k} must be a positive number, got "${v}"`);
    }
    const onlyShow = ['last-boot', 'boot', 'seconds', 'json', 'pstore'].find((k) => values[k] !== undefined);
    if (sub === 'tail' && onlyShow) throw new KernscopeError('ERR_KERNSCOPE_USAGE', `recorder tail: unknown option '--${onlyShow}'`);
    if (sub === 'show' && values.lines !== undefined) throw new KernscopeError('ERR_KERNSCOPE_USAGE', "recorder show: unknown option '--lines'");
  } catch (e) {
    process.stderr.write(`kernscope: ${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  try {
    const dir = (values.dir as string | undefined) ?? loadConfig(values.config as string | undefined).recorder.path;
    const { timeline, formatTimeline, tail } = await import('./recorder/show.js');
    if (sub === 'tail') {
      const stop = tail(dir, Number(values.lines ?? 10), (s) => process.stdout.write(s));
      await new Promise<void>((r) => {
        process.once('SIGINT', r);
        process.once('SIGTERM', r);
      });
      stop();
      return 0;
    }
    const seconds = values.seconds !== undefined ? Number(values.seconds) : undefined;
    const t = timeline({ dir, lastBoot: values['last-boot'] as boolean | undefined, boot: values.boot as string | undefined, seconds, pstore: values.pstore as string | undefined });
    if (typeof t === 'string') {
      process.stderr.write(`kernscope: recorder: ${t}\n`);
      return 1;
    }
    process.stdout.write(values.json ? `${JSON.stringify(t, null, 2)}\n` : `${formatTimeline(t, seconds)}\n`);
    return 0;
  } catch (e) {
    return fail(e);
  }
}

async function run(config: import('./config/schema.js').Config): Promise<number> {
  // A bad web config is a bad config: refused before anything is loaded.
  if (config.web.configFile) (await import('./web.js')).loadWebConfig(config.web.configFile);
  if (config.security.enabled) {
    // Bad rules are a bad config: refuse to start, naming the rule and key.
    const { configuredRules } = await import('./collectors/process/index.js');
    configuredRules(config);
  }
  checkPrivileges();
  checkBtf();
  const { Agent } = await import('./agent.js');
  const agent = new Agent(config);
  let stopping: Promise<void> | undefined;
  const stop = (sig: string): void => {
    if (stopping) return;
    process.stderr.write(`kernscope: ${sig}: detaching and exiting\n`);
    stopping = agent.stop(sig).then(
      () => process.exit(0),
      (e) => {
        process.stderr.write(`kernscope: stop failed: ${(e as Error).message}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGHUP', () => agent.reload());
  try {
    const url = await agent.start();
    process.stderr.write(`kernscope: serving metrics at ${url}\n`);
  } catch (e) {
    await agent.stop().catch(() => undefined);
    return fail(e);
  }
  return new Promise<number>(() => undefined); // runs until a signal
}
