/**
 * Credentials for the FHIR server (FHIR_AUTH), plugged into the one gateway as
 * its authorizer:
 *  - bearer: a static token read from a file;
 *  - basic: HTTP basic (RFC 7617), the password read from a file;
 *  - client-secret: OAuth 2.0 client credentials (RFC 6749 §4.4) with a client
 *    secret, client_secret_basic or client_secret_post;
 *  - smart-backend: SMART Backend Services (hl7.org/fhir/smart-app-launch/
 *    backend-services.html): client credentials with a JWT assertion signed
 *    with our private key (private_key_jwt, RFC 7523), RS384 or ES384.
 *
 * The token endpoint is FHIR_TOKEN_URL, else the `token_endpoint` of
 * `{FHIR_URL}/.well-known/smart-configuration`. Access tokens are cached and
 * renewed before they expire (FHIR_TOKEN_REFRESH_SKEW_S), one request at a time
 * however many FHIR requests wait; the gateway asks for a new one once when the
 * server answers 401.
 *
 * Files are read and keys checked when the authorizer is built: a missing file,
 * a key that is not a private key, or one that cannot sign FHIR_KEY_ALG is a
 * ConfigInvalid naming the setting. A token endpoint that refuses our client
 * (invalid_client and the like) names the settings to check, as FhirUnavailable:
 * a reading waits for the operator to fix the credentials instead of being
 * dead-lettered by them; `check()` at start turns that refusal into ConfigInvalid.
 *
 * Secrets, assertions and tokens are never in an error message, a log line or
 * a metric: messages name the settings, the endpoint's host and the OAuth error
 * code only.
 */
import { createPrivateKey, createPublicKey, randomUUID, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { calculateJwkThumbprint, exportJWK, SignJWT, type JWK } from 'jose';
import type { Config } from '../config.js';
import { PipelineError } from '../errors.js';
import { fhirError } from './errors.js';

export type FhirAuthSettings = Config['fhirAuth'];

/** What the gateway asks of an authorizer. */
export interface FhirAuthorizer {
  /** Headers that authenticate one request. */
  headers(): Promise<Readonly<Record<string, string>>>;
  /**
   * The server answered 401 to a request sent with `sent` (what `headers()`
   * gave): forget that token so the next `headers()` asks for a new one.
   * False when there is nothing to renew (a static credential).
   */
  invalidate(sent: Readonly<Record<string, string>>): boolean;
  /** Asks for a token once (start-up): a refused client is ConfigInvalid. */
  check(): Promise<void>;
  /** Access tokens obtained so far (tests, metrics: a count, never a token). */
  readonly tokensIssued: number;
}

const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
/** SMART Backend Services: the assertion's exp no more than five minutes ahead. */
const ASSERTION_LIFETIME_S = 300;
/** A token answer without expires_in is trusted this long (then renewed, or on a 401). */
const DEFAULT_TOKEN_LIFETIME_S = 300;
/** OAuth error codes (RFC 6749 §5.2) that mean our client or its credentials are wrong. */
const CLIENT_REFUSALS = new Set(['invalid_client', 'unauthorized_client', 'invalid_grant']);

const invalid = (problem: string) =>
  new PipelineError('ConfigInvalid', `invalid configuration:\n  ${problem}`, {
    details: { problems: [problem] },
  });

function readSecretFile(key: string, file: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw invalid(
      `${key}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`,
    );
  }
  const value = text.trim();
  if (value === '') throw invalid(`${key}: ${file} is empty`);
  return value;
}

/**
 * The private key in FHIR_PRIVATE_KEY_FILE, checked against FHIR_KEY_ALG:
 * PEM (PKCS#8, PKCS#1, SEC1) or a private JWK (alone or the only key of a set).
 */
export function loadSigningKey(file: string, alg: 'RS384' | 'ES384'): KeyObject {
  const text = readSecretFile('FHIR_PRIVATE_KEY_FILE', file);
  let key: KeyObject;
  try {
    if (text.startsWith('{')) {
      const parsed = JSON.parse(text) as JWK & { keys?: JWK[] };
      const jwk = parsed.keys?.length === 1 ? parsed.keys[0] : parsed;
      if (jwk?.d === undefined) throw new Error('no private part');
      key = createPrivateKey({ key: jwk as never, format: 'jwk' });
    } else {
      key = createPrivateKey(text);
    }
  } catch {
    throw invalid(
      `FHIR_PRIVATE_KEY_FILE: ${file} holds no private key (expected PEM: PKCS#8, PKCS#1 or SEC1, or a private JWK)`,
    );
  }
  const d = key.asymmetricKeyDetails;
  if (alg === 'RS384' && (key.asymmetricKeyType !== 'rsa' || (d?.modulusLength ?? 0) < 2048)) {
    throw invalid(
      `FHIR_PRIVATE_KEY_FILE: FHIR_KEY_ALG=RS384 needs an RSA key of at least 2048 bits; ${file} holds ${describe(key)}`,
    );
  }
  if (alg === 'ES384' && (key.asymmetricKeyType !== 'ec' || d?.namedCurve !== 'secp384r1')) {
    throw invalid(
      `FHIR_PRIVATE_KEY_FILE: FHIR_KEY_ALG=ES384 needs an EC P-384 key; ${file} holds ${describe(key)}`,
    );
  }
  return key;
}

function describe(key: KeyObject): string {
  const d = key.asymmetricKeyDetails;
  if (key.asymmetricKeyType === 'rsa') return `an RSA key of ${d?.modulusLength ?? '?'} bits`;
  if (key.asymmetricKeyType === 'ec') return `an EC key on ${d?.namedCurve ?? '?'}`;
  return `a ${key.asymmetricKeyType ?? 'symmetric'} key`;
}

/** The public key set to register or publish (FHIR_JWKS_URL), and the kid the assertion carries. */
export async function publicJwks(
  settings: Pick<FhirAuthSettings, 'privateKeyFile' | 'keyAlg' | 'keyId'>,
): Promise<{ keys: JWK[] }> {
  if (settings.privateKeyFile === undefined)
    throw invalid('FHIR_PRIVATE_KEY_FILE: required to print the public key set');
  const key = loadSigningKey(settings.privateKeyFile, settings.keyAlg);
  const jwk = await exportJWK(createPublicKey(key));
  const kid = settings.keyId ?? (await calculateJwkThumbprint(jwk, 'sha256'));
  return { keys: [{ ...jwk, kid, alg: settings.keyAlg, use: 'sig', key_ops: ['verify'] }] };
}

/** A URL as messages may show it: its origin and path, never a query or userinfo. */
function where(url: string): string {
  try {
    const u = new URL(url);
    return `${u.origin}${u.pathname}`;
  } catch {
    return 'the token endpoint';
  }
}

interface Token {
  readonly header: string;
  /** Renew from this time on (ms since the epoch). */
  readonly renewAt: number;
  readonly expiresAt: number;
}

/** The authorizer FHIR_AUTH asks for; undefined for none. Throws ConfigInvalid naming a setting. */
export function createFhirAuthorizer(
  settings: FhirAuthSettings,
  fhirUrl: string,
  options: { readonly timeoutMs: number },
): FhirAuthorizer | undefined {
  switch (settings.mode) {
    case 'none':
      return undefined;
    case 'bearer': {
      const token = readSecretFile('FHIR_BEARER_TOKEN_FILE', must(settings.bearerTokenFile));
      return staticAuthorizer(`Bearer ${token}`);
    }
    case 'basic': {
      const user = must(settings.username);
      const password = readSecretFile('FHIR_PASSWORD_FILE', must(settings.passwordFile));
      if (user.includes(':')) throw invalid('FHIR_USERNAME: must not contain ":" (RFC 7617)');
      return staticAuthorizer(`Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`);
    }
    case 'client-secret': {
      const secret =
        settings.clientSecretFile !== undefined
          ? readSecretFile('FHIR_CLIENT_SECRET_FILE', settings.clientSecretFile)
          : must(settings.clientSecret);
      const clientId = must(settings.clientId);
      const form = (s: string) => encodeURIComponent(s).replace(/%20/g, '+');
      return tokenAuthorizer(settings, fhirUrl, options.timeoutMs, {
        secretSetting: settings.clientSecretFile ? 'FHIR_CLIENT_SECRET_FILE' : 'FHIR_CLIENT_SECRET',
        credentials: () => {
          if (settings.clientSecretMethod === 'post')
            return Promise.resolve({
              body: { client_id: clientId, client_secret: secret },
              headers: {},
            });
          // RFC 6749 §2.3.1: both form-encoded before base64.
          const pair = Buffer.from(`${form(clientId)}:${form(secret)}`).toString('base64');
          return Promise.resolve({ body: {}, headers: { authorization: `Basic ${pair}` } });
        },
      });
    }
    case 'smart-backend': {
      const key = loadSigningKey(must(settings.privateKeyFile), settings.keyAlg);
      const clientId = must(settings.clientId);
      let kid: Promise<string> | undefined;
      const keyId = () =>
        (kid ??=
          settings.keyId !== undefined
            ? Promise.resolve(settings.keyId)
            : exportJWK(createPublicKey(key)).then((jwk) => calculateJwkThumbprint(jwk, 'sha256')));
      return tokenAuthorizer(settings, fhirUrl, options.timeoutMs, {
        secretSetting: 'FHIR_PRIVATE_KEY_FILE',
        credentials: async (tokenUrl) => {
          const now = Math.floor(Date.now() / 1000);
          const assertion = await new SignJWT({})
            .setProtectedHeader({
              alg: settings.keyAlg,
              typ: 'JWT',
              kid: await keyId(),
              ...(settings.jwksUrl !== undefined ? { jku: settings.jwksUrl } : {}),
            })
            .setIssuer(clientId)
            .setSubject(clientId)
            .setAudience(tokenUrl)
            .setIssuedAt(now)
            .setExpirationTime(now + ASSERTION_LIFETIME_S)
            .setJti(randomUUID())
            .sign(key);
          return {
            body: { client_assertion_type: ASSERTION_TYPE, client_assertion: assertion },
            headers: {},
          };
        },
      });
    }
  }
}

function must<T>(value: T | undefined): T {
  // loadConfig has refused a configuration without it (config.ts fhirAuthProblems).
  if (value === undefined) throw new PipelineError('Internal', 'FHIR auth setting missing');
  return value;
}

function staticAuthorizer(header: string): FhirAuthorizer {
  return {
    headers: () => Promise.resolve({ authorization: header }),
    invalidate: () => false,
    check: () => Promise.resolve(),
    tokensIssued: 0,
  };
}

interface ClientCredentials {
  /** The setting that holds what proves who we are, named when the server refuses it. */
  readonly secretSetting: string;
  credentials(
    tokenUrl: string,
  ): Promise<{ body: Record<string, string>; headers: Record<string, string> }>;
}

function tokenAuthorizer(
  settings: FhirAuthSettings,
  fhirUrl: string,
  timeoutMs: number,
  client: ClientCredentials,
): FhirAuthorizer {
  let tokenUrl: Promise<string> | undefined;
  let current: Token | undefined;
  let pending: Promise<Token> | undefined;
  let issued = 0;

  /** FHIR_TOKEN_URL, else SMART discovery (once it has succeeded, kept). */
  function endpoint(): Promise<string> {
    if (settings.tokenUrl !== undefined) return Promise.resolve(settings.tokenUrl);
    tokenUrl ??= discover(fhirUrl, timeoutMs).catch((err: unknown) => {
      tokenUrl = undefined;
      throw err;
    });
    return tokenUrl;
  }

  async function request(): Promise<Token> {
    const url = await endpoint();
    const what = `FHIR token request to ${where(url)}`;
    const { body, headers } = await client.credentials(url);
    const form = new URLSearchParams({
      grant_type: 'client_credentials',
      ...(settings.scope !== undefined ? { scope: settings.scope } : {}),
      ...body,
    });
    const started = Date.now();
    let res: Response;
    let text: string;
    try {
      res = await fetch(url, {
        method: 'POST',
        signal: AbortSignal.timeout(timeoutMs),
        headers: {
          accept: 'application/json',
          'content-type': 'application/x-www-form-urlencoded',
          ...headers,
        },
        body: form.toString(),
      });
      text = await res.text();
    } catch (err) {
      throw fhirError(err, what);
    }
    let answer: Record<string, unknown> = {};
    try {
      answer = JSON.parse(text) as Record<string, unknown>;
    } catch {
      // not JSON: described by its status below
    }
    if (!res.ok) {
      const code = typeof answer.error === 'string' ? answer.error.slice(0, 64) : undefined;
      const refused =
        (res.status === 400 || res.status === 401) &&
        (code === undefined || CLIENT_REFUSALS.has(code));
      const hint = refused
        ? ` — the authorization server refused our client: check FHIR_CLIENT_ID and ${client.secretSetting}${
            client.secretSetting === 'FHIR_PRIVATE_KEY_FILE'
              ? ' (the key registered for the client, FHIR_KEY_ALG, FHIR_KEY_ID)'
              : ''
          }`
        : code === 'invalid_scope'
          ? ' — check FHIR_SCOPE'
          : '';
      throw new PipelineError(
        'FhirUnavailable',
        `${what}: HTTP ${res.status}${code !== undefined ? ` ${code}` : ''}${hint}`,
        { details: { status: res.status, ...(refused ? { authConfig: true } : {}) } },
      );
    }
    const access = answer.access_token;
    const type = typeof answer.token_type === 'string' ? answer.token_type : 'Bearer';
    if (typeof access !== 'string' || access === '') {
      throw new PipelineError('FhirUnavailable', `${what}: the answer holds no access_token`);
    }
    if (type.toLowerCase() !== 'bearer') {
      throw new PipelineError(
        'FhirUnavailable',
        `${what}: token_type ${type.slice(0, 32)} is not supported (Bearer only)`,
      );
    }
    const lifetimeS =
      typeof answer.expires_in === 'number' && answer.expires_in > 0
        ? answer.expires_in
        : Number(answer.expires_in) > 0
          ? Number(answer.expires_in)
          : DEFAULT_TOKEN_LIFETIME_S;
    const lifetimeMs = lifetimeS * 1000;
    const skewMs = Math.min(settings.tokenRefreshSkewS * 1000, lifetimeMs / 4);
    issued += 1;
    return {
      header: `Bearer ${access}`,
      expiresAt: started + lifetimeMs,
      renewAt: started + lifetimeMs - skewMs,
    };
  }

  async function token(): Promise<Token> {
    if (current !== undefined && Date.now() < current.renewAt) return current;
    pending ??= request()
      .then((t) => {
        current = t;
        return t;
      })
      .finally(() => {
        pending = undefined;
      });
    return pending;
  }

  return {
    async headers() {
      return { authorization: (await token()).header };
    },
    invalidate(sent) {
      if (current !== undefined && sent.authorization === current.header) current = undefined;
      return true;
    },
    async check() {
      try {
        await token();
      } catch (err) {
        if (err instanceof PipelineError && err.details?.authConfig === true)
          throw invalid(err.message);
        throw err;
      }
    },
    get tokensIssued() {
      return issued;
    },
  };
}

/** The token endpoint from SMART configuration discovery (smart-app-launch conformance.html). */
async function discover(fhirUrl: string, timeoutMs: number): Promise<string> {
  const url = `${fhirUrl.replace(/\/+$/, '')}/.well-known/smart-configuration`;
  const what = `SMART configuration discovery at ${where(url)}`;
  let res: Response;
  let body: unknown;
  try {
    res = await fetch(url, {
      headers: { accept: 'application/json' },
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    try {
      body = JSON.parse(text) as unknown;
    } catch {
      body = undefined;
    }
  } catch (err) {
    throw fhirError(err, what);
  }
  if (res.status >= 500 || res.status === 429 || res.status === 408) {
    throw new PipelineError('FhirUnavailable', `${what}: HTTP ${res.status}`, {
      details: { status: res.status },
    });
  }
  const endpoint = (body as { token_endpoint?: unknown } | undefined)?.token_endpoint;
  if (!res.ok || typeof endpoint !== 'string' || !/^https?:\/\//.test(endpoint)) {
    // A reading waits (transient) for the operator; check() at start makes it ConfigInvalid.
    throw new PipelineError(
      'FhirUnavailable',
      `FHIR_TOKEN_URL: not set, and ${what} offers no token_endpoint (HTTP ${res.status}); set FHIR_TOKEN_URL`,
      { details: { status: res.status, authConfig: true } },
    );
  }
  return endpoint;
}
