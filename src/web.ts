/**
 * The endpoint's protection, read from a web configuration file in the
 * format node_exporter and Prometheus read with --web.config.file
 * (Prometheus' exporter-toolkit): TLS with a certificate and key, client
 * certificates checked against a CA, and basic-auth users with bcrypt
 * hashes. It guards /metrics, /events (which carries process arguments)
 * and /healthz alike.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import type http from 'node:http';
import path from 'node:path';
import type tls from 'node:tls';
import { Ajv } from 'ajv';
import bcrypt from 'bcryptjs';
import { describeError, errorParts, keyPath, parseYaml } from './config/errors.js';
import { KernscopeError } from './errors.js';

const CLIENT_AUTH = ['NoClientCert', 'RequestClientCert', 'RequireAnyClientCert', 'VerifyClientCertIfGiven', 'RequireAndVerifyClientCert'] as const;
type ClientAuth = (typeof CLIENT_AUTH)[number];
const VERSIONS = { TLS10: 'TLSv1', TLS11: 'TLSv1.1', TLS12: 'TLSv1.2', TLS13: 'TLSv1.3' } as const;
type Version = keyof typeof VERSIONS;
const BCRYPT = /^\$2[aby]?\$\d\d\$[./A-Za-z0-9]{53}$/;

interface WebFile {
  tls_server_config?: {
    cert_file?: string;
    key_file?: string;
    client_auth_type?: ClientAuth;
    client_ca_file?: string;
    min_version?: Version;
    max_version?: Version;
  };
  http_server_config?: { headers?: Record<string, string> };
  basic_auth_users?: Record<string, string>;
}

const SCHEMA = {
  type: ['object', 'null'],
  additionalProperties: false,
  properties: {
    tls_server_config: {
      type: 'object',
      additionalProperties: false,
      properties: {
        cert_file: { type: 'string', minLength: 1 },
        key_file: { type: 'string', minLength: 1 },
        client_auth_type: { enum: CLIENT_AUTH },
        client_ca_file: { type: 'string', minLength: 1 },
        min_version: { enum: Object.keys(VERSIONS) },
        max_version: { enum: Object.keys(VERSIONS) },
      },
    },
    http_server_config: {
      type: 'object',
      additionalProperties: false,
      properties: { headers: { type: 'object', additionalProperties: { type: 'string' } } },
    },
    basic_auth_users: { type: 'object', additionalProperties: { type: 'string' } },
  },
} as const;
const validate = new Ajv({ allErrors: false }).compile<WebFile>(SCHEMA);

export interface WebConfig {
  file: string;
  /** Certificate, key and CA as files, read again when they change. */
  tls?: { cert: string; key: string; ca?: string; clientAuth: ClientAuth; minVersion: tls.SecureVersion; maxVersion?: tls.SecureVersion };
  headers: Record<string, string>;
  users: Map<string, string>;
}

/** Reads and checks a web configuration file; one named error for anything wrong in it. */
export function loadWebConfig(file: string): WebConfig {
  const bad = (msg: string): never => {
    throw new KernscopeError('ERR_KERNSCOPE_CONFIG', `${file}: ${msg}`);
  };
  let text = '';
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    bad(`cannot read: ${(e as Error).message}`);
  }
  const doc = parseYaml(text, file);
  if (!validate(doc)) {
    const e = validate.errors![0]!;
    bad(`${keyPath(errorParts(e))}: ${describeError(e)}`);
  }
  const w: WebFile = doc ?? {};
  for (const [user, hash] of Object.entries(w.basic_auth_users ?? {})) {
    if (!BCRYPT.test(hash)) bad(`${keyPath(['basic_auth_users', user])}: expected a bcrypt hash ($2y$...), as htpasswd -nbB USER PASSWORD prints`);
  }
  // Paths are relative to the file, as exporter-toolkit reads them.
  const at = (p: string): string => path.resolve(path.dirname(file), p);
  const readable = (key: string, p: string): string => {
    try {
      fs.accessSync(at(p), fs.constants.R_OK);
    } catch (e) {
      bad(`tls_server_config.${key}: ${(e as Error).message}`);
    }
    return at(p);
  };
  const out: WebConfig = { file, headers: w.http_server_config?.headers ?? {}, users: new Map(Object.entries(w.basic_auth_users ?? {})) };
  const t = w.tls_server_config;
  if (t) {
    if (!t.cert_file || !t.key_file) bad(`tls_server_config: cert_file and key_file go together`);
    const clientAuth = t.client_auth_type ?? 'NoClientCert';
    const verifies = clientAuth === 'VerifyClientCertIfGiven' || clientAuth === 'RequireAndVerifyClientCert';
    if (verifies && !t.client_ca_file) bad(`tls_server_config.client_ca_file: ${clientAuth} needs it`);
    if (t.client_ca_file && !verifies) bad(`tls_server_config.client_auth_type: client_ca_file is set, so say how it is used (VerifyClientCertIfGiven or RequireAndVerifyClientCert)`);
    out.tls = {
      cert: readable('cert_file', t.cert_file!),
      key: readable('key_file', t.key_file!),
      clientAuth,
      minVersion: VERSIONS[t.min_version ?? 'TLS12'],
    };
    if (t.client_ca_file) out.tls.ca = readable('client_ca_file', t.client_ca_file);
    if (t.max_version) out.tls.maxVersion = VERSIONS[t.max_version];
    // A certificate that does not go with its key fails here, not at the first scrape.
    secureOptions(out);
  }
  return out;
}

/** Options for https.createServer and setSecureContext, from the files as they are now. */
export function secureOptions(w: WebConfig): tls.TlsOptions {
  const t = w.tls!;
  const needCert = t.clientAuth !== 'NoClientCert';
  const opts: tls.TlsOptions = {
    cert: fs.readFileSync(t.cert),
    key: fs.readFileSync(t.key),
    minVersion: t.minVersion,
    requestCert: needCert,
    // Only RequireAndVerifyClientCert may fail the handshake in OpenSSL's
    // own check; the softer policies are judged per connection (accepts()).
    rejectUnauthorized: t.clientAuth === 'RequireAndVerifyClientCert',
  };
  if (t.ca) opts.ca = fs.readFileSync(t.ca);
  if (t.maxVersion) opts.maxVersion = t.maxVersion;
  try {
    crypto.createPrivateKey(opts.key as Buffer);
    const cert = new crypto.X509Certificate(opts.cert as Buffer);
    if (!cert.checkPrivateKey(crypto.createPrivateKey(opts.key as Buffer))) throw new Error('the key does not go with the certificate');
  } catch (e) {
    throw new KernscopeError('ERR_KERNSCOPE_CONFIG', `${w.file}: tls_server_config: ${(e as Error).message}`);
  }
  return opts;
}

/** Whether a TLS connection meets the client certificate policy. */
export function accepts(w: WebConfig, s: tls.TLSSocket): boolean {
  const auth = w.tls?.clientAuth ?? 'NoClientCert';
  const given = Object.keys(s.getPeerCertificate() ?? {}).length > 0;
  if (auth === 'RequireAnyClientCert') return given;
  if (auth === 'VerifyClientCertIfGiven') return !given || s.authorized;
  return true;
}

/**
 * Basic auth against bcrypt hashes. A bcrypt check costs tens of
 * milliseconds, so a pair found good is remembered (by a hash of it) and a
 * scraper asking every few seconds pays it once. An unknown user is
 * checked against a stand-in hash, so the time taken does not tell which
 * users exist.
 */
export class BasicAuth {
  private readonly good = new Set<string>();
  private readonly standIn = bcrypt.hashSync(crypto.randomBytes(16).toString('hex'), 10);
  constructor(private readonly users: Map<string, string>) {}

  get enabled(): boolean {
    return this.users.size > 0;
  }

  async check(req: http.IncomingMessage): Promise<boolean> {
    const m = /^Basic ([A-Za-z0-9+/=]+)$/.exec(req.headers.authorization ?? '');
    if (!m) return false;
    const pair = Buffer.from(m[1]!, 'base64').toString('utf8');
    const colon = pair.indexOf(':');
    if (colon < 0) return false;
    const user = pair.slice(0, colon);
    const key = crypto.createHash('sha256').update(pair).digest('hex');
    if (this.good.has(key)) return true;
    const hash = this.users.get(user);
    const ok = (await bcrypt.compare(pair.slice(colon + 1), hash ?? this.standIn)) && hash !== undefined;
    if (ok) {
      if (this.good.size >= 1024) this.good.clear();
      this.good.add(key);
    }
    return ok;
  }
}
