/**
 * Ending open sessions when a device is re-keyed, unassigned or removed. The
 * secret is checked at CONNECT; without this, a session opened before a
 * re-key would keep publishing with the old secret.
 *
 *  1. Pub/sub (src/devices/revocation.ts): every broker closes the device's
 *     connections at once — all of them when it was unassigned or removed,
 *     those made with an older credential when it was re-keyed.
 *  2. A CONNECT whose secret was checked just before a revocation and that is
 *     registered just after it: each new connection of a device revoked within
 *     the last minute is checked against the registry once more.
 *  3. Pub/sub is not durable (a broker that lost Redis for a moment misses
 *     messages): every MQTT_SESSION_RECHECK_MS the credentials of all open
 *     connections are compared with the registry's, in one round trip.
 */
import type { Aedes, Client } from 'aedes';
import type { RedisConnection } from '../src/redis.js';
import { boundedCache } from '../src/bounded-cache.js';
import type { DeviceRegistry } from '../src/devices/registry.js';
import { parseRevocation, revocationChannel, type Revocation } from '../src/devices/revocation.js';
import type { Logger } from '../src/logger.js';
import type { Metrics } from '../src/metrics.js';
import { deviceOf } from './authenticate.js';

/** How long a revocation makes new connections of its device be checked again, ms. */
const RECENT_MS = 60_000;

export interface RevocationOptions {
  readonly aedes: Aedes;
  /** A connection of its own: SUBSCRIBE takes it over. */
  readonly subscriber: RedisConnection;
  readonly registry: Pick<DeviceRegistry, 'credentialIds'>;
  readonly prefix: string;
  readonly recheckMs: number;
  readonly log: Logger;
  readonly metrics?: Metrics;
}

export interface RunningRevocation {
  close(): Promise<void>;
}

/** aedes keeps registered clients by clientId (aedes.js `this.clients`); its types leave it out. */
function clientsOf(aedes: Aedes): Client[] {
  return Object.values((aedes as unknown as { clients: Record<string, Client> }).clients);
}

function connectionsOf(aedes: Aedes, deviceId: string): Client[] {
  return clientsOf(aedes).filter((c) => deviceOf(c)?.deviceId === deviceId);
}

export async function startRevocation(o: RevocationOptions): Promise<RunningRevocation> {
  const recent = boundedCache<string, true>(100_000, RECENT_MS);

  const end = (client: Client, reason: string) => {
    o.log.info(
      { event: 'session-ended', deviceId: deviceOf(client)?.deviceId ?? null, reason },
      'device session ended',
    );
    o.metrics?.connectionsRefused.inc({ reason: `session-${reason}` });
    client.close();
  };

  /** Closes the connections whose credential is no longer the registry's. */
  async function recheck(clients: readonly Client[], reason: string): Promise<void> {
    const ids = [...new Set(clients.flatMap((c) => deviceOf(c)?.deviceId ?? []))];
    if (ids.length === 0) return;
    const current = await o.registry.credentialIds(ids);
    for (const c of clients) {
      const d = deviceOf(c);
      if (d && current.get(d.deviceId) !== d.credentialId) end(c, reason);
    }
  }

  async function revoke(r: Revocation): Promise<void> {
    recent.set(r.deviceId, true);
    const clients = connectionsOf(o.aedes, r.deviceId);
    if (r.reason === 'rotated') await recheck(clients, 'rotated');
    else for (const c of clients) end(c, r.reason);
  }

  o.subscriber.on('message', (channel: string, text: string) => {
    if (channel !== revocationChannel(o.prefix)) return;
    const r = parseRevocation(text);
    if (!r) return;
    revoke(r).catch((err: unknown) =>
      o.log.error(
        { event: 'revocation-failed', deviceId: r.deviceId, err },
        'could not end sessions',
      ),
    );
  });
  await o.subscriber.subscribe(revocationChannel(o.prefix));

  o.aedes.on('client', (client) => {
    const id = deviceOf(client)?.deviceId;
    if (id === undefined || !recent.has(id)) return;
    recheck([client], 'revoked').catch((err: unknown) =>
      o.log.error({ event: 'revocation-failed', deviceId: id, err }, 'could not check a session'),
    );
  });

  const timer = setInterval(() => {
    recheck(clientsOf(o.aedes), 'credential-changed').catch((err: unknown) =>
      o.log.warn({ event: 'session-recheck-failed', err }, 'could not check open sessions'),
    );
  }, o.recheckMs).unref();

  return {
    async close() {
      clearInterval(timer);
      await o.subscriber.unsubscribe(revocationChannel(o.prefix)).catch(() => undefined);
    },
  };
}
