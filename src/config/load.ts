import fs from 'node:fs';
import path from 'node:path';
import { Ajv } from 'ajv';
import { describeError, errorParts, keyPath, parseYaml } from './errors.js';
import { KernscopeError } from '../errors.js';
import { DEFAULT_CONFIG, FILE_SCHEMA, type Config } from './schema.js';

// Missing keys take the schema's defaults as the file is validated.
const ajv = new Ajv({ allErrors: false, strict: true, useDefaults: true });
ajv.addFormat('regex', {
  validate: (s: string) => {
    try {
      new RegExp(s);
      return true;
    } catch {
      return false;
    }
  },
});
const validate = ajv.compile(FILE_SCHEMA as object);

/** Validates a parsed document and fills defaults; throws ERR_KERNSCOPE_CONFIG naming the key. */
export function parseConfig(doc: unknown, source = 'config'): Config {
  // Validation fills the defaults in: on a copy, not the caller's document.
  doc = doc === null || doc === undefined ? {} : structuredClone(doc);
  if (!validate(doc)) {
    const e = validate.errors![0]!;
    throw new KernscopeError('ERR_KERNSCOPE_CONFIG', `${source}: ${keyPath(errorParts(e))}: ${describeError(e, { '/listen': 'expected HOST:PORT' })}`);
  }
  const config = doc as Config;
  config.probes.forEach((p, i) => {
    if ([p.uprobe, p.uretprobe, p.usdt, p.tracepoint].filter(Boolean).length !== 1) {
      throw new KernscopeError('ERR_KERNSCOPE_CONFIG', `${source}: probes[${i}]: give one of uprobe, uretprobe, usdt or tracepoint`);
    }
  });
  return config;
}

export function loadConfig(file: string | undefined): Config {
  if (!file) return structuredClone(DEFAULT_CONFIG);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new KernscopeError('ERR_KERNSCOPE_CONFIG', `${file}: cannot read: ${(e as Error).message}`);
  }
  const doc = parseYaml(text, file);
  const config = parseConfig(doc, file);
  // An object's path is the config's business: relative to the file.
  for (const o of config.objects) o.path = path.resolve(path.dirname(file), o.path);
  return config;
}
