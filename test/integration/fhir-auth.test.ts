/**
 * FHIR authentication against real servers run by this suite:
 *  - the authorization server is oidc-provider (test/support/oauth-server.ts),
 *    with SMART Backend Services clients (private_key_jwt, RS384 and ES384) and
 *    a client-secret client, issuing JWT access tokens;
 *  - the FHIR server is our HAPI launcher in its bearer mode (HAPI_AUTH_JWKS_URL:
 *    Spring Security's OAuth 2.0 resource server checks every token's signature
 *    against the provider's JWKS, its issuer, audience and expiry), H2, on a
 *    port of its own, which also offers SMART discovery;
 *  - for the 401 path, a small resource server in this file that verifies
 *    tokens the same way (jose, the provider's JWKS) and can revoke the ones it
 *    has seen, in front of the shared HAPI.
 * The pipeline (broker and workers) writes Observations through MQTT to the
 * protected server; every log line of every pipeline here is checked for
 * secrets and tokens.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createPublicKey } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { Observation, Patient } from 'fhir/r4.js';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { loadConfig, type Config } from '../../src/config.js';
import type { PipelineError } from '../../src/errors.js';
import { publicJwks } from '../../src/fhir/auth.js';
import { createConfiguredFhirGateway, type FhirGateway } from '../../src/fhir/gateway.js';
import { clientKeyPair, startAuthServer, type AuthServer } from '../support/oauth-server.js';
import {
  connectDevice,
  enrol,
  publish,
  startHarness,
  uniqueId,
  waitFor,
  type Harness,
} from '../support/harness.js';
import { freePort } from '../support/free-port.js';

const run = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const JAR = path.join(ROOT, 'services/hapi-fhir/target/hapi-fhir-launcher.jar');
const sharedFhirUrl = inject('fhirUrl');

const CLIENT_SECRET = 'cs-0f3a9c6b1e7d4a2f8b5c0d9e6a3f1b7c';

const work = mkdtempSync(path.join(tmpdir(), 'iomt-fhir-auth-'));
const file = (name: string, text: string) => {
  const p = path.join(work, name);
  writeFileSync(p, text, { mode: 0o600 });
  return p;
};

let as: AuthServer;
let hapi: ChildProcess | undefined;
let hapiExited: string | undefined;
let hapiLog: string;
let protectedUrl: string;
let rs: Awaited<ReturnType<typeof clientKeyPair>>;
let es: Awaited<ReturnType<typeof clientKeyPair>>;
let wrong: Awaited<ReturnType<typeof clientKeyPair>>;
const keyFiles: Record<string, string> = {};
let secretFile: string;
/** Every log line of every pipeline in this file. */
const allLogs: Record<string, unknown>[] = [];
/** Every error message a start or a request gave in this file. */
const allErrors: string[] = [];

const auth = (over: Partial<Config['fhirAuth']>) => ({
  mode: 'none' as const,
  ...over,
});

const smartRs = () =>
  auth({ mode: 'smart-backend', clientId: 'iomt-smart-rs', privateKeyFile: keyFiles.rs });
const secretClient = () =>
  auth({ mode: 'client-secret', clientId: 'iomt-secret', clientSecretFile: secretFile });

function gateway(fhirAuth: Partial<Config['fhirAuth']>, url = protectedUrl): FhirGateway {
  const config = loadConfig({}, { fhir: { url, timeoutMs: 30_000 }, fhirAuth });
  return createConfiguredFhirGateway(config);
}

/** The checking resource server in front of the shared HAPI (set by its describe block). */
let staticProxy: string | undefined;
const staticProxyUrl = () => staticProxy ?? '';

/** An authenticated reader of the protected server (the client-secret client). */
let reader: FhirGateway;

async function observationsOf(patientId: string): Promise<Observation[]> {
  return reader.search<Observation>('Observation', {
    subject: `Patient/${patientId}`,
    _count: '500',
  });
}

/** A pipeline (broker + normalize + FHIR stages) writing to the protected server. */
async function pipelineWith(fhirAuth: Partial<Config['fhirAuth']>): Promise<Harness> {
  const h = await startHarness({
    fhirUrl: protectedUrl,
    roles: ['broker', 'worker'],
    overrides: { fhirAuth, worker: { stages: ['normalize', 'fhir'] } },
  });
  harnesses.push(h);
  return h;
}
const harnesses: Harness[] = [];

async function sendVitals(h: Harness, count: number, spacedMs = 0) {
  const deviceId = uniqueId('monitor');
  const patientId = uniqueId('patient');
  const secret = await enrol(h.pipeline, deviceId, `Patient/${patientId}`);
  const client = await connectDevice(h.mqttUrl, deviceId, secret);
  const start = Math.floor(Date.now() / 60_000) * 60_000 - 2 * 3600_000;
  try {
    for (let i = 0; i < count; i++) {
      await publish(client, `devices/${deviceId}/telemetry`, {
        timestamp: new Date(start + i * 1000).toISOString(),
        heartRate: 60 + (i % 40),
      });
      if (spacedMs > 0) await new Promise((r) => setTimeout(r, spacedMs));
    }
  } finally {
    client.end(true);
  }
  return { deviceId, patientId };
}

async function startProtectedHapi() {
  await run('bash', [path.join(ROOT, 'scripts/hapi.sh'), 'build'], {
    cwd: ROOT,
    maxBuffer: 16 * 1024 * 1024,
  });
  const port = await freePort();
  protectedUrl = `http://127.0.0.1:${port}/fhir`;
  hapiLog = path.join(work, 'hapi.log');
  const out = (await import('node:fs')).openSync(hapiLog, 'a');
  hapi = spawn(
    'java',
    ['-Xms256m', '-Xmx768m', '-XX:+UseParallelGC', '-XX:+ExitOnOutOfMemoryError', '-jar', JAR],
    {
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        HOME: work,
        HAPI_DB: 'h2',
        HAPI_PORT: String(port),
        HAPI_BIND: '127.0.0.1',
        HAPI_AUTH_JWKS_URL: as.jwksUrl,
        HAPI_AUTH_ISSUER: as.issuer,
        HAPI_AUTH_AUDIENCE: as.audience,
        HAPI_AUTH_TOKEN_URL: as.tokenUrl,
      },
      stdio: ['ignore', out, out],
    },
  );
  hapi.once('exit', (code, signal) => {
    hapiExited = `exited with ${code ?? signal}`;
  });
  await waitFor(
    async () => {
      if (hapiExited) return -1;
      const res = await fetch(`http://127.0.0.1:${port}/actuator/health/readiness`);
      return res.status;
    },
    (s) => s === 200 || s === -1,
    // Generous: a first boot on 2 busy cores has taken 4 minutes.
    540_000,
    `protected HAPI ready on port ${port}`,
  ).catch((err: Error) => {
    throw new Error(`${err.message}\n${readFileSync(hapiLog, 'utf8').slice(-4000)}`);
  });
  if (hapiExited) throw new Error(`HAPI ${hapiExited}:\n${readFileSync(hapiLog, 'utf8')}`);
}

beforeAll(async () => {
  [rs, es, wrong] = await Promise.all([
    clientKeyPair('RS384'),
    clientKeyPair('ES384'),
    clientKeyPair('RS384'),
  ]);
  keyFiles.rs = file('rs384.pem', rs.privatePem);
  keyFiles.es = file('es384.pem', es.privatePem);
  keyFiles.wrong = file('wrong.pem', wrong.privatePem);
  secretFile = file('client-secret', `${CLIENT_SECRET}\n`);
  as = await startAuthServer({
    clients: [
      { clientId: 'iomt-smart-rs', jwks: rs.jwks, alg: 'RS384' },
      { clientId: 'iomt-smart-es', jwks: es.jwks, alg: 'ES384' },
      { clientId: 'iomt-secret', secret: CLIENT_SECRET },
      // Access tokens that live 6 s: renewed several times in one run.
      { clientId: 'iomt-short', jwks: rs.jwks, alg: 'RS384', tokenTtlS: 6 },
    ],
  });
  await startProtectedHapi();
  reader = gateway(secretClient());
}, 600_000);

let closeProxy: (() => Promise<void>) | undefined;

afterAll(async () => {
  await closeProxy?.();
  for (const h of harnesses) await h.close().catch(() => undefined);
  if (hapi && !hapiExited) {
    const gone = new Promise((resolve) => hapi!.once('exit', resolve));
    hapi.kill('SIGTERM');
    const timer = setTimeout(() => hapi?.kill('SIGKILL'), 30_000);
    await gone;
    clearTimeout(timer);
  }
  await as?.close();
  rmSync(work, { recursive: true, force: true });
}, 60_000);

describe('the OAuth-protected FHIR server (HAPI launcher, HAPI_AUTH_JWKS_URL)', () => {
  it('refuses requests without a valid token and offers SMART discovery', async () => {
    const bare = await fetch(`${protectedUrl}/metadata`);
    expect(bare.status).toBe(401);
    expect(bare.headers.get('www-authenticate')).toMatch(/^Bearer/);
    // A token signed by a key the authorization server does not hold.
    const { SignJWT } = await import('jose');
    const forged = await new SignJWT({ scope: 'system/*.*' })
      .setProtectedHeader({ alg: 'RS384' })
      .setIssuer(as.issuer)
      .setAudience(as.audience)
      .setExpirationTime('5m')
      .sign(wrong.privateKey);
    const res = await fetch(`${protectedUrl}/metadata`, {
      headers: { authorization: `Bearer ${forged}` },
    });
    expect(res.status).toBe(401);
    const smart = (await (
      await fetch(`${protectedUrl}/.well-known/smart-configuration`)
    ).json()) as { token_endpoint: string };
    expect(smart.token_endpoint).toBe(as.tokenUrl);
  });
});

describe('the pipeline writes to the protected server', () => {
  it('with SMART Backend Services (RS384, token endpoint discovered)', async () => {
    const before = as.issued.get('iomt-smart-rs') ?? 0;
    const h = await pipelineWith(smartRs());
    const { patientId } = await sendVitals(h, 5);
    const found = await waitFor(
      () => observationsOf(patientId),
      (l) => l.length === 5,
      60_000,
      'Observations written with SMART Backend Services',
    );
    expect(found.map((o) => o.valueQuantity?.value).sort()).toEqual([60, 61, 62, 63, 64]);
    // One token for the start check and the writes: cached, not one per request.
    expect((as.issued.get('iomt-smart-rs') ?? 0) - before).toBe(1);
  });

  it('with SMART Backend Services (ES384) through the gateway', async () => {
    const g = gateway({
      mode: 'smart-backend',
      clientId: 'iomt-smart-es',
      privateKeyFile: keyFiles.es,
      keyAlg: 'ES384',
      tokenUrl: as.tokenUrl,
    });
    const id = uniqueId('pat');
    const written = await g.update<Patient>({ resourceType: 'Patient', id, active: true });
    expect(written.conflict).toBe(false);
    expect((await g.read<Patient>('Patient', id))?.id).toBe(id);
    expect(as.issued.get('iomt-smart-es')).toBe(1);
  });

  it('with a client secret (client_secret_basic, FHIR_TOKEN_URL)', async () => {
    const before = as.issued.get('iomt-secret') ?? 0;
    const h = await pipelineWith({ ...secretClient(), tokenUrl: as.tokenUrl });
    const { patientId } = await sendVitals(h, 3);
    const found = await waitFor(
      () => observationsOf(patientId),
      (l) => l.length === 3,
      60_000,
      'Observations written with a client secret',
    );
    expect(found).toHaveLength(3);
    expect((as.issued.get('iomt-secret') ?? 0) - before).toBeGreaterThanOrEqual(1);
  });

  it('renews a token that expires mid-run, losing nothing', async () => {
    // Tokens of this client live 6 s; the pipeline renews each before it
    // expires. Readings go on until three tokens have been issued.
    const h = await pipelineWith({
      mode: 'smart-backend',
      clientId: 'iomt-short',
      privateKeyFile: keyFiles.rs,
    });
    const deviceId = uniqueId('monitor');
    const patientId = uniqueId('patient');
    const secret = await enrol(h.pipeline, deviceId, `Patient/${patientId}`);
    const client = await connectDevice(h.mqttUrl, deviceId, secret);
    const start = Math.floor(Date.now() / 60_000) * 60_000 - 2 * 3600_000;
    let sent = 0;
    const deadline = Date.now() + 90_000;
    try {
      while ((as.issued.get('iomt-short') ?? 0) < 3 && Date.now() < deadline) {
        await publish(client, `devices/${deviceId}/telemetry`, {
          timestamp: new Date(start + sent * 1000).toISOString(),
          heartRate: 50 + (sent % 100),
        });
        sent += 1;
        // Readings trickle in, as from a monitor; the loop ends on a condition.
        await new Promise((r) => setTimeout(r, 250));
      }
    } finally {
      client.end(true);
    }
    expect(as.issued.get('iomt-short') ?? 0).toBeGreaterThanOrEqual(3);
    const found = await waitFor(
      () => observationsOf(patientId),
      (l) => l.length === sent,
      60_000,
      `all ${sent} Observations across token renewals`,
    );
    expect(found).toHaveLength(sent);
    expect(await h.pipeline.queues.deadLetter.getJobCounts()).toMatchObject({ waiting: 0 });
  });
});

describe('credentials that are wrong', () => {
  const startError = async (fhirAuth: Partial<Config['fhirAuth']>) => {
    try {
      await pipelineWith(fhirAuth);
    } catch (err) {
      allErrors.push((err as Error).message);
      return err as PipelineError;
    }
    throw new Error('the pipeline started');
  };

  it('a key the authorization server does not know stops the start, naming the setting', async () => {
    const err = await startError({ ...smartRs(), privateKeyFile: keyFiles.wrong });
    expect(err.code).toBe('ConfigInvalid');
    expect(err.message).toMatch(/invalid_client/);
    expect(err.message).toMatch(/FHIR_PRIVATE_KEY_FILE/);
    expect(err.message).toMatch(/FHIR_CLIENT_ID/);
    expect(as.refused.get('invalid_client') ?? 0).toBeGreaterThanOrEqual(1);
  });

  it('a wrong client secret stops the start, naming the setting', async () => {
    const bad = file('bad-secret', 'not-the-secret');
    const err = await startError({ ...secretClient(), clientSecretFile: bad });
    expect(err.code).toBe('ConfigInvalid');
    expect(err.message).toMatch(/invalid_client.*FHIR_CLIENT_SECRET_FILE/s);
  });

  it('a key that cannot sign FHIR_KEY_ALG, a public key or a missing file is refused before any request', async () => {
    const issued = [...as.issued.values()].reduce((a, b) => a + b, 0);
    const ecForRs = await startError({ ...smartRs(), privateKeyFile: keyFiles.es });
    expect(ecForRs.code).toBe('ConfigInvalid');
    expect(ecForRs.message).toMatch(/FHIR_PRIVATE_KEY_FILE: FHIR_KEY_ALG=RS384 needs an RSA key/);
    const pub = file(
      'public.pem',
      createPublicKey(rs.privateKey).export({ type: 'spki', format: 'pem' }).toString(),
    );
    expect((await startError({ ...smartRs(), privateKeyFile: pub })).message).toMatch(
      /FHIR_PRIVATE_KEY_FILE: .* holds no private key/,
    );
    expect(
      (await startError({ ...smartRs(), privateKeyFile: path.join(work, 'absent.pem') })).message,
    ).toMatch(/FHIR_PRIVATE_KEY_FILE: cannot read .*absent\.pem \(ENOENT\)/);
    // Settings missing altogether: loadConfig names them.
    expect(() => loadConfig({ FHIR_AUTH: 'smart-backend' })).toThrow(
      /FHIR_CLIENT_ID: required[\s\S]*FHIR_PRIVATE_KEY_FILE: required/,
    );
    expect([...as.issued.values()].reduce((a, b) => a + b, 0)).toBe(issued);
  });
});

const STATIC_TOKEN = 'st-5d1c7e9a3b8f4e2a9c6d0b7f1e4a8c3d';
const BASIC_PASSWORD = 'pw-8e2b6f0c4a9d1e7b3c5f';
const BASIC = `Basic ${Buffer.from(`iomt-gw:${BASIC_PASSWORD}`).toString('base64')}`;

describe('a 401 from the FHIR server; static credentials', () => {
  let proxy: Server;
  let proxyUrl: string;
  const seen = new Set<string>();
  const revoked = new Set<string>();
  let rejectAll = false;
  let refusals = 0;

  beforeAll(async () => {
    // A resource server that checks tokens as the protected HAPI does, and can
    // revoke the ones it has seen (as after a logout or a key rollover).
    const jwks = createRemoteJWKSet(new URL(as.jwksUrl));
    const body = (req: IncomingMessage) =>
      new Promise<Buffer>((resolve) => {
        const parts: Buffer[] = [];
        req.on('data', (c: Buffer) => parts.push(c));
        req.on('end', () => resolve(Buffer.concat(parts)));
      });
    proxy = createServer((req, res) => {
      void (async () => {
        const header = req.headers.authorization ?? '';
        const token = /^Bearer (.+)$/.exec(header)?.[1];
        let jti: string | undefined;
        try {
          if (rejectAll) throw new Error('refused');
          if (header === `Bearer ${STATIC_TOKEN}` || header === BASIC) {
            jti = 'static';
          } else {
            if (!token) throw new Error('no token');
            const { payload } = await jwtVerify(token, jwks, {
              issuer: as.issuer,
              audience: as.audience,
            });
            jti = payload.jti;
            if (!jti || revoked.has(jti)) throw new Error('revoked');
          }
        } catch {
          refusals += 1;
          res.writeHead(401, { 'www-authenticate': 'Bearer error="invalid_token"' });
          res.end();
          return;
        }
        seen.add(jti);
        const payload = await body(req);
        const headers: Record<string, string> = {};
        for (const k of ['accept', 'content-type', 'cache-control', 'prefer', 'if-match'])
          if (typeof req.headers[k] === 'string') headers[k] = req.headers[k];
        const up = await fetch(`${sharedFhirUrl}${(req.url ?? '/').replace(/^\/fhir/, '')}`, {
          method: req.method ?? 'GET',
          headers,
          ...(payload.length > 0 ? { body: payload } : {}),
        });
        const out: Record<string, string> = {};
        for (const k of ['content-type', 'etag', 'location'])
          if (up.headers.get(k)) out[k] = up.headers.get(k)!;
        res.writeHead(up.status, out);
        res.end(Buffer.from(await up.arrayBuffer()));
      })().catch(() => {
        res.writeHead(502);
        res.end();
      });
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}/fhir`;
    staticProxy = proxyUrl;
  });

  afterAll(() => {
    closeProxy = async () => {
      proxy.closeAllConnections();
      await new Promise((r) => proxy.close(r));
    };
  });

  it('renews the token once and resends; a second 401 is transient (FhirUnavailable)', async () => {
    const g = gateway({ ...smartRs(), tokenUrl: as.tokenUrl }, proxyUrl);
    const id = uniqueId('pat');
    const before = as.issued.get('iomt-smart-rs') ?? 0;
    await g.update<Patient>({ resourceType: 'Patient', id, active: true });
    expect((as.issued.get('iomt-smart-rs') ?? 0) - before).toBe(1);

    // The server revokes the cached token: the next request is refused once,
    // renewed, and sent again; the caller sees only the answer.
    for (const jti of seen) revoked.add(jti);
    const refusedBefore = refusals;
    expect((await g.read<Patient>('Patient', id))?.active).toBe(true);
    expect(refusals - refusedBefore).toBe(1);
    expect((as.issued.get('iomt-smart-rs') ?? 0) - before).toBe(2);

    // A server that refuses every token: one renewal, then FhirUnavailable (retried by a stage).
    rejectAll = true;
    const err = await g.read<Patient>('Patient', id).then(
      () => undefined,
      (e: unknown) => e as PipelineError,
    );
    rejectAll = false;
    expect(err?.code).toBe('FhirUnavailable');
    expect(err?.retryable).toBe(true);
    expect(err?.message).toMatch(/HTTP 401 .*after a new token.*FHIR_AUTH/);
    expect((as.issued.get('iomt-smart-rs') ?? 0) - before).toBe(3);
    allErrors.push(err?.message ?? '');
  });
});

describe('static credentials (bearer, basic) behind a gateway', () => {
  it('send the static token or the basic credentials; a 401 is not retried with them', async () => {
    const tokenFile = file('bearer-token', `${STATIC_TOKEN}\n`);
    const passwordFile = file('basic-password', BASIC_PASSWORD);
    for (const fhirAuth of [
      auth({ mode: 'bearer', bearerTokenFile: tokenFile }),
      auth({ mode: 'basic', username: 'iomt-gw', passwordFile }),
    ]) {
      const g = gateway(fhirAuth, staticProxyUrl());
      const id = uniqueId('pat');
      await g.update<Patient>({ resourceType: 'Patient', id, active: true });
      expect((await g.read<Patient>('Patient', id))?.id).toBe(id);
      const wrongFile = file(`wrong-${fhirAuth.mode}`, 'not-it');
      const bad = gateway(
        fhirAuth.mode === 'bearer'
          ? { ...fhirAuth, bearerTokenFile: wrongFile }
          : { ...fhirAuth, passwordFile: wrongFile },
        staticProxyUrl(),
      );
      const err = await bad.read('Patient', id).then(
        () => undefined,
        (e: unknown) => e as PipelineError,
      );
      expect(err?.code).toBe('FhirUnavailable');
      expect(err?.message).toMatch(
        /HTTP 401 — the FHIR server refused our credentials; check FHIR_AUTH/,
      );
      allErrors.push(err?.message ?? '');
    }
  });
});

describe('iomt fhir-auth', () => {
  const cli = (args: string[], env: Record<string, string>) =>
    run(process.execPath, ['bin/iomt.mjs', 'fhir-auth', ...args], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      timeout: 60_000,
    });

  it('jwks prints the public key set to register; check obtains a token and reads metadata', async () => {
    const env = {
      FHIR_URL: protectedUrl,
      FHIR_AUTH: 'smart-backend',
      FHIR_CLIENT_ID: 'iomt-smart-es',
      FHIR_PRIVATE_KEY_FILE: keyFiles.es!,
      FHIR_KEY_ALG: 'ES384',
    };
    const jwks = JSON.parse((await cli(['jwks'], env)).stdout) as {
      keys: Record<string, string>[];
    };
    expect(jwks.keys[0]).toMatchObject({
      kty: 'EC',
      crv: 'P-384',
      alg: 'ES384',
      x: es.jwks.keys[0]!.x,
      kid: es.jwks.keys[0]!.kid,
    });
    expect(jwks.keys[0]!.d).toBeUndefined();
    const { stdout, stderr } = await cli(['check'], env);
    expect(stdout).toMatch(/^ok: FHIR_AUTH=smart-backend, http:\/\/127\.0\.0\.1:\d+ answered/);
    allErrors.push(stdout, stderr);
    // A wrong key: exit code of a configuration problem, the setting named.
    const failed = await cli(['check'], {
      ...env,
      FHIR_CLIENT_ID: 'iomt-smart-rs',
      FHIR_KEY_ALG: 'RS384',
      FHIR_PRIVATE_KEY_FILE: keyFiles.wrong!,
    }).then(
      () => undefined,
      (e: { code: number; stderr: string }) => e,
    );
    expect(failed?.code).not.toBe(0);
    expect(failed?.stderr).toMatch(/invalid_client.*FHIR_PRIVATE_KEY_FILE/s);
    allErrors.push(failed?.stderr ?? '');
  });
});

describe('publication of the public key', () => {
  it('the public key set matches the private key and names the kid the assertions carry', async () => {
    const { keys } = await publicJwks({
      privateKeyFile: keyFiles.rs,
      keyAlg: 'RS384',
      keyId: undefined,
    });
    expect(keys).toHaveLength(1);
    expect(keys[0]).toMatchObject({ kty: 'RSA', alg: 'RS384', use: 'sig', n: rs.jwks.keys[0]!.n });
    expect(keys[0]!.d).toBeUndefined();
    expect(keys[0]!.kid).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });
});

describe('logs', () => {
  it('hold no secret, key, assertion or token', async () => {
    let metricsText = '';
    for (const h of harnesses.splice(0)) {
      metricsText += await h.pipeline.metrics.registry.metrics();
      await h.close();
      allLogs.push(...h.logs);
    }
    expect(allLogs.length).toBeGreaterThan(20);
    const text = [...allLogs.map((l) => JSON.stringify(l)), ...allErrors, metricsText].join('\n');
    const keyBody = (pem: string) => pem.split('\n')[1]!;
    for (const secret of [
      CLIENT_SECRET,
      keyBody(rs.privatePem),
      keyBody(es.privatePem),
      keyBody(wrong.privatePem),
    ])
      expect(text.includes(secret), 'a secret or key in a log line').toBe(false);
    // JWTs (assertions and access tokens) all begin with a base64url '{"'.
    expect(text).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}/);
    expect(text).not.toMatch(/Bearer [A-Za-z0-9]|Basic [A-Za-z0-9]|client_assertion=/);
    for (const secret of [STATIC_TOKEN, BASIC_PASSWORD, BASIC]) expect(text).not.toContain(secret);
  });
});
