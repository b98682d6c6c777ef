/**
 * FHIR_AUTH settings and keys, checked before any request: each problem names
 * its setting (config.ts for what is missing, fhir/auth.ts for files and keys).
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { exportJWK } from 'jose';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createFhirAuthorizer, loadSigningKey } from '../../src/fhir/auth.js';

const dir = mkdtempSync(path.join(tmpdir(), 'iomt-fhir-auth-unit-'));
const file = (name: string, text: string) => {
  const p = path.join(dir, name);
  writeFileSync(p, text);
  return p;
};
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' });
const p256 = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const rsa1024 = generateKeyPairSync('rsa', { modulusLength: 1024 });

describe('loadConfig and FHIR_AUTH', () => {
  it('names each setting a mode needs', () => {
    const problems = (env: Record<string, string>) => {
      try {
        loadConfig(env);
        return [];
      } catch (err) {
        return (err as { details: { problems: string[] } }).details.problems;
      }
    };
    expect(problems({ FHIR_AUTH: 'none' })).toEqual([]);
    expect(problems({ FHIR_AUTH: 'bearer' })).toEqual([
      'FHIR_BEARER_TOKEN_FILE: required when FHIR_AUTH=bearer',
    ]);
    expect(problems({ FHIR_AUTH: 'basic' })).toEqual([
      'FHIR_USERNAME: required when FHIR_AUTH=basic',
      'FHIR_PASSWORD_FILE: required when FHIR_AUTH=basic',
    ]);
    expect(
      problems({
        FHIR_AUTH: 'client-secret',
        FHIR_CLIENT_SECRET: 'a',
        FHIR_CLIENT_SECRET_FILE: 'b',
      }),
    ).toEqual([
      'FHIR_CLIENT_ID: required when FHIR_AUTH=client-secret',
      'FHIR_CLIENT_SECRET, FHIR_CLIENT_SECRET_FILE: set one of them when FHIR_AUTH=client-secret',
    ]);
    expect(problems({ FHIR_AUTH: 'smart-backend', FHIR_KEY_ALG: 'RS256' })).toEqual([
      'FHIR_KEY_ALG: expected one of RS384, ES384, got "RS256"',
      'FHIR_CLIENT_ID: required when FHIR_AUTH=smart-backend',
      'FHIR_PRIVATE_KEY_FILE: required when FHIR_AUTH=smart-backend',
    ]);
    expect(problems({ FHIR_AUTH: 'oauth' })[0]).toMatch(/^FHIR_AUTH: expected one of none, bearer/);
  });
});

describe('the signing key (FHIR_PRIVATE_KEY_FILE, FHIR_KEY_ALG)', () => {
  const pem = (k: typeof rsa, type: 'pkcs8' | 'pkcs1' | 'sec1') =>
    k.privateKey.export({ type, format: 'pem' }).toString();

  it('reads PKCS#8, PKCS#1, SEC1 and a private JWK', async () => {
    expect(loadSigningKey(file('a.pem', pem(rsa, 'pkcs8')), 'RS384').asymmetricKeyType).toBe('rsa');
    expect(loadSigningKey(file('b.pem', pem(rsa, 'pkcs1')), 'RS384').asymmetricKeyType).toBe('rsa');
    expect(loadSigningKey(file('c.pem', pem(p384, 'sec1')), 'ES384').asymmetricKeyType).toBe('ec');
    const jwk = await exportJWK(p384.privateKey);
    expect(loadSigningKey(file('d.json', JSON.stringify(jwk)), 'ES384').type).toBe('private');
    expect(loadSigningKey(file('e.json', JSON.stringify({ keys: [jwk] })), 'ES384').type).toBe(
      'private',
    );
  });

  it('refuses what cannot sign the algorithm, naming the setting and never the key', () => {
    const cases: [string, 'RS384' | 'ES384', RegExp][] = [
      [
        pem(p256, 'pkcs8'),
        'ES384',
        /FHIR_KEY_ALG=ES384 needs an EC P-384 key; .* holds an EC key on prime256v1/,
      ],
      [
        pem(rsa1024, 'pkcs8'),
        'RS384',
        /FHIR_KEY_ALG=RS384 needs an RSA key of at least 2048 bits; .* holds an RSA key of 1024 bits/,
      ],
      [pem(rsa, 'pkcs8'), 'ES384', /FHIR_KEY_ALG=ES384 needs an EC P-384 key; .* holds an RSA key/],
      [
        rsa.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
        'RS384',
        /holds no private key/,
      ],
      ['not a key at all', 'RS384', /holds no private key/],
      ['', 'RS384', /is empty/],
    ];
    for (const [i, [text, alg, message]] of cases.entries()) {
      const p = file(`k${i}`, text);
      let error: Error | undefined;
      try {
        loadSigningKey(p, alg);
      } catch (err) {
        error = err as Error;
      }
      expect(error?.message).toMatch(/^invalid configuration:\n {2}FHIR_PRIVATE_KEY_FILE: /);
      expect(error?.message).toMatch(message);
      if (text.length > 40) expect(error?.message).not.toContain(text.split('\n')[1]!);
    }
  });

  it('reads secret files once, at start, and refuses an empty one naming it', () => {
    const base = loadConfig({}).fhirAuth;
    expect(() =>
      createFhirAuthorizer(
        { ...base, mode: 'bearer', bearerTokenFile: file('empty', '\n') },
        'http://127.0.0.1:1/fhir',
        { timeoutMs: 1000 },
      ),
    ).toThrow(/FHIR_BEARER_TOKEN_FILE: .*empty is empty/);
    expect(() =>
      createFhirAuthorizer(
        { ...base, mode: 'client-secret', clientId: 'c', clientSecretFile: path.join(dir, 'none') },
        'http://127.0.0.1:1/fhir',
        { timeoutMs: 1000 },
      ),
    ).toThrow(/FHIR_CLIENT_SECRET_FILE: cannot read .*none \(ENOENT\)/);
  });
});
