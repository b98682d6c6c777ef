/**
 * CONNECT: who is this device, and may it have this client id? A named list of
 * steps run in order (like aedes `connectActions`); the first refusal ends it.
 *
 *   1. claim     — who the CONNECT says it is: the subject CN of a client
 *                  certificate (TLS listener; RFC 5280 §4.1.2.6) or the
 *                  username. An empty client id with CleanSession=0 is refused
 *                  here (CONNACK 2, MQTT-3.1.3-8).
 *   2. budgets   — before any secret is checked: a spent address is refused
 *                  (connect-budgets.ts); the claimed device id's rate is taken
 *                  just before its check runs.
 *   3. identity  — a certificate's device must be registered (and match the
 *                  username, if one is sent); a password is checked against the
 *                  registry's scrypt hash in the bounded, fair secret-check pool
 *                  (secret-check-pool.ts), which runs no more checks for an
 *                  address than its failure budget has units left. An unknown id
 *                  costs the same check as a wrong secret (src/devices/secret.ts),
 *                  and both get the same answer: no id probing, by answer or by
 *                  time.
 *   4. client id — the client id must be free or held by this same device
 *                  (client-ids.ts); a device holds a bounded number of them.
 *
 * The reservation is settled at the end: a refused credential is a failure of
 * the address; an accepted one makes the device known there. The
 * device record is kept on the connection so later packets never go back to
 * Redis for identity. Refusals are logged with reason, claimed device id,
 * client id and address (cut to a bounded length by the logger), never with
 * the secret.
 */
import type { TLSSocket } from 'node:tls';
import type { AedesOptions, AuthenticateError, Client } from 'aedes';
import type { DeviceRecord, DeviceRegistry } from '../src/devices/registry.js';
import type { ErrorCode } from '../src/errors.js';
import type { Logger } from '../src/logger.js';
import type { Metrics } from '../src/metrics.js';
import type { ClientIds } from './client-ids.js';
import type { ConnectBudgets, ConnectOutcome, Reservation } from './connect-budgets.js';
import { LogOnce } from './log-once.js';
import { peerOf, wantsAnonymousSession } from './pre-connect.js';
import { PoolBusy, type PoolTicket, type SecretCheckPool } from './secret-check-pool.js';

/** MQTT 3.1.1 CONNACK return codes (MQTT-3.2.2-3). */
const IDENTIFIER_REJECTED = 2;
const SERVER_UNAVAILABLE = 3;
const BAD_USERNAME_OR_PASSWORD = 4;
const NOT_AUTHORIZED = 5;

type AuthenticateHandler = NonNullable<AedesOptions['authenticate']>;

const identities = new WeakMap<Client, DeviceRecord>();
/** Connections whose CONNECT was refused here (aedes then also reports them as a client error). */
const refused = new WeakSet<Client>();

/** True when this connection's CONNECT was refused (and logged) by authenticate. */
export function refusedAtConnect(client: Client): boolean {
  return refused.has(client);
}

/** The authenticated device of a connection, if any. */
export function deviceOf(client: Client | null): DeviceRecord | undefined {
  return client ? identities.get(client) : undefined;
}

/** The peer address of a connection (TCP, TLS, or the HTTP request of a WebSocket). */
export function addressOf(client: Client): string {
  return peerOf(client).address;
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

/** One CONNECT on its way through the steps. */
interface Attempt {
  readonly client: Client;
  readonly address: string;
  readonly username: string | undefined;
  readonly password: Buffer | undefined;
  certificate: CertificateClaim;
  /** The device id the CONNECT claims (certificate CN, else username). */
  claimedId: string | undefined;
  /** Its place in the secret-check pool's line, taken first. */
  ticket?: PoolTicket;
  reservation?: Reservation;
  record?: DeviceRecord;
  method?: 'password' | 'certificate';
  evicted?: readonly string[];
}

interface Refusal {
  readonly reason: string;
  readonly returnCode: number;
  readonly code: ErrorCode;
  /** How the reserved budget is settled. */
  readonly budget: ConnectOutcome;
  readonly err?: unknown;
}

type Step = (a: Attempt) => Promise<Refusal | undefined> | Refusal | undefined;

export interface AuthenticateOptions {
  readonly registry: Pick<DeviceRegistry, 'get' | 'authenticate'>;
  readonly budgets: ConnectBudgets;
  readonly pool: SecretCheckPool;
  readonly clientIds: ClientIds;
  /** The connection authenticated (the socket gate stops counting it as idle). */
  readonly onAccepted?: (client: Client) => void;
  /** Sessions a new one took the place of: delete their data. */
  readonly dropSessions?: (clientIds: readonly string[]) => void;
  readonly log: Logger;
  readonly metrics?: Metrics;
  readonly now?: () => number;
}

const deviceRateSpent: Refusal = {
  reason: 'device-connect-rate',
  returnCode: SERVER_UNAVAILABLE,
  code: 'RateLimited',
  budget: 'void',
};

const credentialsRefused = (reason: string, returnCode = NOT_AUTHORIZED): Refusal => ({
  reason,
  returnCode,
  code: 'NotAuthorized',
  budget: 'refused',
});

/** Refusals that come in floods: logged once per address and interval (log-once.ts), counted always. */
const FLOOD_REASONS: ReadonlySet<string> = new Set([
  'too-many-failures',
  'auth-busy',
  'device-connect-rate',
]);

export function createAuthenticate(options: AuthenticateOptions): AuthenticateHandler {
  const { registry, budgets, pool, clientIds, log, metrics } = options;
  const now = options.now ?? Date.now;
  const floods = new LogOnce();

  const claim: Step = (a) => {
    if (wantsAnonymousSession(a.client))
      return {
        reason: 'empty-client-id',
        returnCode: IDENTIFIER_REJECTED,
        code: 'NotAuthorized',
        budget: 'void',
      };
    a.certificate = certificateClaim(a.client);
    a.claimedId = a.certificate.kind === 'device' ? a.certificate.deviceId : a.username;
    // A place in line before anything else, synchronously: CONNECTs arriving
    // together from one address see each other, and those past its share are
    // refused here, before they cost a Redis round trip (throws PoolBusy).
    if (a.certificate.kind === 'none') a.ticket = pool.enter(a.address);
    return undefined;
  };

  const reserve: Step = async (a) => {
    const r = await budgets.reserve(a.address, a.claimedId);
    if (r.ok) {
      a.reservation = r.reservation;
      return undefined;
    }
    return { reason: r.reason, returnCode: NOT_AUTHORIZED, code: 'RateLimited', budget: 'void' };
  };

  const identify: Step = async (a) => {
    const cert = a.certificate;
    if (cert.kind === 'invalid') return credentialsRefused('invalid-client-certificate');
    if (cert.kind === 'device') {
      if (a.username && a.username !== cert.deviceId)
        return credentialsRefused('certificate-username-mismatch');
      if (!(await a.reservation!.attempt())) return deviceRateSpent;
      const record = await registry.get(cert.deviceId);
      if (!record) return credentialsRefused('unknown-device');
      a.record = record;
      a.method = 'certificate';
      return undefined;
    }
    if (!a.username || !a.password)
      return credentialsRefused('missing-credentials', BAD_USERNAME_OR_PASSWORD);
    const [username, secret] = [a.username, a.password.toString('utf8')];
    const reservation = a.reservation!;
    const record = await a.ticket!.run(async () => {
      // The device's rate is taken when its check is about to run, for an
      // unknown id and a known one alike.
      if (!(await reservation.attempt())) return 'rate-spent' as const;
      metrics?.secretChecks.inc();
      const found = await registry.authenticate(username, secret);
      // Counted before the check gives its place up in the pool.
      if (!found) reservation.failed();
      return found;
    }, reservation);
    if (record === 'rate-spent') return deviceRateSpent;
    if (!record) return credentialsRefused('unknown-device-or-wrong-secret');
    a.record = record;
    a.method = 'password';
    return undefined;
  };

  const holdClientId: Step = (a) => {
    const { client } = a;
    const verdict = clientIds.claim(client.id, a.record!.deviceId, client, !client.clean, now());
    if (!verdict.ok)
      return {
        reason: verdict.reason,
        returnCode: IDENTIFIER_REJECTED,
        code: 'NotAuthorized',
        budget: 'accepted',
      };
    a.evicted = verdict.evicted;
    // Held until this connection closes (then kept offline if persistent). A
    // connection that closed while its CONNECT was being checked lets go at once.
    const release = () => clientIds.release(client.id, client, now());
    if ((client.conn as { destroyed?: boolean }).destroyed) release();
    else client.conn.once('close', release);
    return undefined;
  };

  const STEPS: readonly Step[] = [claim, reserve, identify, holdClientId];

  /** Runs the steps in order, the first refusal ending them. */
  async function run(a: Attempt): Promise<Refusal | undefined> {
    try {
      for (const step of STEPS) {
        const refusal = await step(a);
        if (refusal) return refusal;
      }
      return undefined;
    } finally {
      a.ticket?.leave(); // a no-op once its check ran
    }
  }

  /** The steps, with a thrown error (ours: Redis, a busy pool) turned into a refusal. */
  async function decide(a: Attempt): Promise<Refusal | undefined> {
    try {
      return await run(a);
    } catch (err) {
      if (err instanceof PoolBusy)
        return err.reason === 'spent'
          ? {
              reason: 'too-many-failures',
              returnCode: NOT_AUTHORIZED,
              code: 'RateLimited',
              budget: 'void',
            }
          : {
              reason: 'auth-busy',
              returnCode: SERVER_UNAVAILABLE,
              code: 'RateLimited',
              budget: 'void',
            };
      // Redis unreachable: refuse rather than guess; the device retries.
      return {
        reason: 'registry-unavailable',
        returnCode: SERVER_UNAVAILABLE,
        code: 'QueueUnavailable',
        budget: 'void',
        err,
      };
    }
  }

  return (client, username, password, done) => {
    const a: Attempt = {
      client,
      address: peerOf(client).address,
      username: username ?? undefined,
      password: password ?? undefined,
      certificate: { kind: 'none' },
      claimedId: username ?? undefined,
    };
    void decide(a).then(async (refusal) => {
      await a.reservation
        ?.settle(refusal ? refusal.budget : 'accepted')
        .catch((err: unknown) =>
          log.warn({ event: 'connect-budget-unsettled', err }, 'could not settle a CONNECT budget'),
        );
      if (refusal) {
        metrics?.connectionsRefused.inc({ reason: refusal.reason });
        refused.add(client);
        const err = new Error(refusal.reason) as AuthenticateError;
        err.returnCode = refusal.returnCode;
        if (FLOOD_REASONS.has(refusal.reason) && !floods.first(`${refusal.reason}|${a.address}`)) {
          done(err, false);
          return;
        }
        const fields = {
          event: 'connect-refused',
          code: refusal.code,
          reason: refusal.reason,
          deviceId: a.claimedId ?? null,
          clientId: client.id,
          address: a.address,
          ...(refusal.err !== undefined ? { err: refusal.err } : {}),
        };
        if (refusal.err !== undefined) log.error(fields, 'connect refused');
        else log.warn(fields, 'connect refused');
        done(err, false);
        return;
      }
      const record = a.record!;
      identities.set(client, record);
      if (a.evicted && a.evicted.length > 0) options.dropSessions?.(a.evicted);
      options.onAccepted?.(client);
      log.info(
        {
          event: 'connected',
          deviceId: record.deviceId,
          clientId: client.id,
          method: a.method,
          persistent: !client.clean,
        },
        'device connected',
      );
      done(null, true);
    });
  };
}
