/**
 * One way to say what is wrong in a YAML document that failed its JSON
 * schema, for the config file and the rules files alike: the key's path
 * and a short reason.
 */
import type { ErrorObject } from 'ajv';
import YAML from 'yaml';
import { KernscopeError } from '../errors.js';

/** The path of the offending key: instance path parts, plus the key an unknown or missing-key error names. */
export function errorParts(e: ErrorObject): string[] {
  const parts = e.instancePath.split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  if (e.keyword === 'additionalProperties') parts.push(String(e.params.additionalProperty));
  if (e.keyword === 'required') parts.push(String(e.params.missingProperty));
  return parts;
}

/** ["collectors", "tcp", "maxSeries"] -> "collectors.tcp.maxSeries", ["services", "0"] -> "services[0]". */
export function keyPath(parts: string[]): string {
  let out = '';
  for (const p of parts) out += /^\d+$/.test(p) ? `[${p}]` : out ? `.${p}` : p;
  return out || '(top level)';
}

/** Formats whose failure means a pattern that does not compile. */
const REGEX_FORMATS = new Set(['regex', 'glob-or-regex']);

/** The reason, in words; `patterns` names what a `pattern` keyword stands for, by instance path. */
export function describeError(e: ErrorObject, patterns: Record<string, string> = {}): string {
  switch (e.keyword) {
    case 'additionalProperties':
      return 'unknown key';
    case 'required':
      return 'missing required key';
    case 'format':
      return REGEX_FORMATS.has(String(e.params.format)) ? 'not a valid regular expression' : `expected ${e.params.format}`;
    case 'enum':
      return `expected one of ${(e.params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
    case 'pattern':
      return patterns[e.instancePath] ?? `must match ${e.params.pattern}`;
    default:
      return e.message ?? 'invalid';
  }
}

/**
 * A YAML document's value. What YAML only warns of (an unknown directive
 * or tag) is refused too: a file the agent half understands is not loaded.
 */
export function parseYaml(text: string, source: string): unknown {
  const doc = YAML.parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  const bad = doc.errors[0] ?? doc.warnings[0];
  const refuse = (msg: string): never => {
    throw new KernscopeError('ERR_KERNSCOPE_CONFIG', `${source}: invalid YAML: ${msg.split('\n')[0]}`);
  };
  if (bad) refuse(bad.message);
  try {
    // An alias with no anchor, or too many aliases, fails only here.
    return doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    return refuse((e as Error).message);
  }
}
