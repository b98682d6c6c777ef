/**
 * CONNECT: who is this device? The steps, in order:
 *   1. address limit — an address with too many recent failures is refused
 *      before any secret is checked (MQTT_AUTH_MAX_FAILURES per window);
 *   2. client certificate — on the TLS listener, a certificate the configured CA
 *      signed names the device in its subject CN (RFC 5280 §4.1.2.6); the
 *      device must be registered, and a username, if sent, must be that CN;
 *   3. password — username = device id, password = device secret, checked
 *      against the registry's scrypt hash.
 * The device record is kept on the connection so that later packets never go
 * back to Redis for identity. Refusals are logged with device id, reason and
 * address, never with the secret.
 */
import type { TLSSocket } from 'node:tls';
import type { AedesOptions, AuthenticateError, Client } from 'aedes';
import type { DeviceRecord, DeviceRegistry } from '../src/devices/registry.js';
import type { Logger } from '../src/logger.js';
import type { Metrics } from '../src/metrics.js';
import type { FailedAuthLimiter } from './rate-limits.js';

/** MQTT 3.1.1 CONNACK return codes (MQTT-3.2.2-3). */
const SERVER_UNAVAILABLE = 3;
const BAD_USERNAME_OR_PASSWORD = 4;
const NOT_AUTHORIZED = 5;

type AuthenticateHandler = NonNullable<AedesOptions['authenticate']>;

const identities = new WeakMap<Client, DeviceRecord>();

/** The authenticated device of a connection, if any. */
export function deviceOf(client: Client | null): DeviceRecord | undefined {
  return client ? identities.get(client) : undefined;
}

/** The peer address of a TCP or TLS socket, or of the HTTP request a WebSocket came in on. */
export function addressOf(client: Client): string {
  const conn = client.conn as { remoteAddress?: string };
  const req = (client as { req?: { socket?: { remoteAddress?: string } } }).req;
  return conn.remoteAddress ?? req?.socket?.remoteAddress ?? 'unknown';
}

function refusal(returnCode: number, message: string): AuthenticateError {
  const err = new Error(message) as AuthenticateError;
  err.returnCode = returnCode;
  return err;
}

type CertificateClaim =
  | { readonly kind: 'none' }
  | { readonly kind: 'invalid'; readonly reason: string }
  | { readonly kind: 'device'; readonly deviceId: string };

/** What the TLS layer says about the client certificate (nothing on TCP and WebSocket). */
function certificateClaim(client: Client): CertificateClaim {
  const socket = client.conn as Partial<TLSSocket>;
  if (typeof socket.getPeerCertificate !== 'function') return { kind: 'none' };
  const cert = socket.getPeerCertificate();
  if (!cert || Object.keys(cert).length === 0) return { kind: 'none' };
  if (!socket.authorized) {
    return { kind: 'invalid', reason: String(socket.authorizationError ?? 'not trusted') };
  }
  // Node gives an array when the subject repeats CN; the first one names the device.
  const cn: unknown = (cert.subject as { CN?: unknown } | undefined)?.CN;
  const first: unknown = Array.isArray(cn) ? (cn as unknown[])[0] : cn;
  const deviceId = typeof first === 'string' ? first : undefined;
  return deviceId ? { kind: 'device', deviceId } : { kind: 'invalid', reason: 'no subject CN' };
}

export interface AuthenticateOptions {
  readonly registry: DeviceRegistry;
  readonly limiter: FailedAuthLimiter;
  readonly log: Logger;
  readonly metrics?: Metrics;
  readonly now?: () => number;
}

export function createAuthenticate(options: AuthenticateOptions): AuthenticateHandler {
  const { registry, limiter, log, metrics } = options;
  const now = options.now ?? Date.now;

  return (client, username, password, done) => {
    const address = addressOf(client);
    const refuse = (reason: string, code: number, message: string, deviceId?: string | null) => {
      const limited = reason === 'too-many-failures';
      if (!limited) limiter.recordFailure(address, now());
      metrics?.connectionsRefused.inc({ reason });
      log.warn(
        {
          event: 'connect-refused',
          code: limited ? 'RateLimited' : 'NotAuthorized',
          deviceId: deviceId ?? username ?? null,
          reason,
          address,
        },
        'connect refused',
      );
      done(refusal(code, message), false);
    };
    const accept = (record: DeviceRecord, method: 'password' | 'certificate') => {
      identities.set(client, record);
      log.info(
        { event: 'connected', deviceId: record.deviceId, clientId: client.id, method },
        'device connected',
      );
      done(null, true);
    };
    const unavailable = (err: unknown) => {
      // Redis unreachable: refuse rather than guess; the device retries.
      log.error(
        {
          event: 'connect-refused',
          code: 'QueueUnavailable',
          deviceId: username ?? null,
          reason: 'registry-unavailable',
          err,
        },
        'connect refused',
      );
      metrics?.connectionsRefused.inc({ reason: 'registry-unavailable' });
      done(refusal(SERVER_UNAVAILABLE, 'registry unavailable'), false);
    };

    // 1. Address limit.
    if (limiter.blocked(address, now())) {
      refuse('too-many-failures', NOT_AUTHORIZED, 'not authorized');
      return;
    }

    // 2. Client certificate.
    const claim = certificateClaim(client);
    if (claim.kind === 'invalid') {
      refuse('invalid-client-certificate', NOT_AUTHORIZED, 'not authorized');
      return;
    }
    if (claim.kind === 'device') {
      if (username && username !== claim.deviceId) {
        refuse('certificate-username-mismatch', NOT_AUTHORIZED, 'not authorized', claim.deviceId);
        return;
      }
      registry.get(claim.deviceId).then((record) => {
        if (!record) refuse('unknown-device', NOT_AUTHORIZED, 'not authorized', claim.deviceId);
        else accept(record, 'certificate');
      }, unavailable);
      return;
    }

    // 3. Password.
    if (!username || !password) {
      refuse('missing-credentials', BAD_USERNAME_OR_PASSWORD, 'username and password required');
      return;
    }
    registry.authenticate(username, password.toString('utf8')).then((record) => {
      if (!record)
        refuse('unknown-device-or-wrong-secret', NOT_AUTHORIZED, 'not authorized', username);
      else accept(record, 'password');
    }, unavailable);
  };
}
