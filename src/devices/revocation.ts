/**
 * Ending a device's open MQTT sessions on every broker. When a device is
 * re-keyed, unassigned or removed, the change is published on one Redis
 * channel; every broker closes that device's connections at once
 * (broker/revocation.ts). Pub/sub is not durable, so brokers also compare the
 * credential of every open connection with the registry's on a timer.
 */
import type { RedisConnection } from '../redis.js';

export type RevocationReason = 'rotated' | 'removed' | 'unassigned';

export interface Revocation {
  readonly deviceId: string;
  readonly reason: RevocationReason;
  /** epoch ms when it was decided; a connection authenticated before it is ended. */
  readonly at: number;
}

export function revocationChannel(prefix: string): string {
  return `${prefix}:device-revoked`;
}

export async function publishRevocation(
  redis: RedisConnection,
  prefix: string,
  revocation: Revocation,
): Promise<void> {
  await redis.publish(revocationChannel(prefix), JSON.stringify(revocation));
}

export function parseRevocation(text: string): Revocation | undefined {
  try {
    const r = JSON.parse(text) as Partial<Revocation>;
    if (typeof r.deviceId !== 'string' || typeof r.at !== 'number') return undefined;
    return { deviceId: r.deviceId, reason: r.reason ?? 'removed', at: r.at };
  } catch {
    return undefined;
  }
}
