/**
 * A real OAuth 2.0 authorization server for tests: oidc-provider (the certified
 * OpenID Provider library) in this process on a free port, with the client
 * credentials grant and JWT access tokens (RFC 9068) for one resource, the
 * FHIR server. Clients are registered as a hospital's would be: SMART Backend
 * Services clients (private_key_jwt, RS384 or ES384, their public keys
 * registered as a JWKS) and a client-secret client.
 */
import { generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { calculateJwkThumbprint, exportJWK, type JWK } from 'jose';
import Provider, { type ClientMetadata } from 'oidc-provider';

export interface AuthServerClient {
  readonly clientId: string;
  /** private_key_jwt: the public key set registered for the client. */
  readonly jwks?: { keys: JWK[] };
  readonly alg?: 'RS384' | 'ES384';
  /** client_secret_basic / client_secret_post */
  readonly secret?: string;
  /** Lifetime of this client's access tokens, seconds (default 300). */
  readonly tokenTtlS?: number;
}

export interface AuthServer {
  readonly issuer: string;
  readonly tokenUrl: string;
  readonly jwksUrl: string;
  /** The resource (audience) the access tokens are for. */
  readonly audience: string;
  /** Access tokens issued per client id. */
  readonly issued: Map<string, number>;
  /** Token requests refused, per OAuth error code. */
  readonly refused: Map<string, number>;
  close(): Promise<void>;
}

/** A key pair for a SMART client: the private key (PEM file contents) and the public JWKS to register. */
export async function clientKeyPair(alg: 'RS384' | 'ES384'): Promise<{
  privatePem: string;
  privateKey: KeyObject;
  jwks: { keys: JWK[] };
}> {
  const { privateKey, publicKey } =
    alg === 'RS384'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : generateKeyPairSync('ec', { namedCurve: 'P-384' });
  const jwk = await exportJWK(publicKey);
  // Registered under its RFC 7638 thumbprint, the kid the pipeline sends without FHIR_KEY_ID.
  const kid = await calculateJwkThumbprint(jwk, 'sha256');
  return {
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    privateKey,
    jwks: { keys: [{ ...jwk, kid, alg, use: 'sig' }] },
  };
}

export async function startAuthServer(options: {
  clients: readonly AuthServerClient[];
  /** Scopes the FHIR resource server grants. */
  scopes?: readonly string[];
}): Promise<AuthServer> {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const signing = { ...(await exportJWK(privateKey)), alg: 'RS256', use: 'sig', kid: 'as-1' };
  const scopes = options.scopes ?? [
    'system/Observation.cu',
    'system/Patient.cru',
    'system/Device.cru',
    'system/DeviceUseStatement.cru',
  ];
  const ttl = new Map(options.clients.map((c) => [c.clientId, c.tokenTtlS ?? 300]));

  // The port first: the issuer names it.
  const { createServer } = await import('node:http');
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));

  const issuer = `http://127.0.0.1:${port}`;
  const audience = 'urn:iomt:test-fhir';
  const clients: ClientMetadata[] = options.clients.map((c) => ({
    client_id: c.clientId,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    scope: scopes.join(' '),
    ...(c.jwks
      ? {
          token_endpoint_auth_method: 'private_key_jwt',
          token_endpoint_auth_signing_alg: c.alg ?? 'RS384',
          jwks: c.jwks,
        }
      : { token_endpoint_auth_method: 'client_secret_basic', client_secret: c.secret }),
  }));
  const provider = new Provider(issuer, {
    clients,
    jwks: { keys: [signing] },
    cookies: { keys: [randomBytes(16).toString('hex')] },
    scopes: [...scopes],
    clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'private_key_jwt'],
    enabledJWA: {
      clientAuthSigningAlgValues: ['RS384', 'ES384', 'RS256', 'ES256'],
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: false },
      revocation: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => audience,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, resource, client) => {
          if (resource !== audience) throw new Error(`unknown resource ${resource}`);
          return {
            scope: scopes.join(' '),
            audience,
            accessTokenTTL: ttl.get(client.clientId) ?? 300,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
  });
  const issued = new Map<string, number>();
  const refused = new Map<string, number>();
  // JWT access tokens are issued, never saved.
  provider.on('client_credentials.issued', (token) => {
    const id = token.clientId ?? '?';
    issued.set(id, (issued.get(id) ?? 0) + 1);
  });
  provider.on('grant.error', (_ctx, err) => {
    const code = err.error;
    refused.set(code, (refused.get(code) ?? 0) + 1);
  });
  const server = provider.listen(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    if (server.listening) resolve();
    server.once('listening', resolve);
    server.once('error', reject);
  });
  return {
    issuer,
    tokenUrl: `${issuer}/token`,
    jwksUrl: `${issuer}/jwks`,
    audience,
    issued,
    refused,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
