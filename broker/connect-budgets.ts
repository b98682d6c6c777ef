/**
 * CONNECT budgets, taken BEFORE any secret is checked, so that CONNECTs
 * arriving together cannot all pass a limit that only counted failures after
 * the fact (300 parallel CONNECTs used to get 300 scrypt checks).
 *
 *  - Per client address: MQTT_AUTH_MAX_FAILURES failed CONNECTs per
 *    MQTT_AUTH_FAILURE_WINDOW_MS. A spent address is refused outright
 *    (`too-many-failures`, CONNACK 5). While it is not, its CONNECTs go to the
 *    secret-check pool, which starts one only while the address has a unit
 *    left for every check it is running (`Reservation.unitsLeft`): each check
 *    may fail, so failures plus checks in flight never exceed the budget, and
 *    the scrypt work one address causes per window is bounded by it. CONNECTs
 *    beyond that wait their turn (a burst of good devices behind one NAT is
 *    served, not locked out); when the units run out while they wait, they are
 *    refused like the rest.
 *  - Per device id: MQTT_DEVICE_CONNECT_RATE credential checks per minute,
 *    whatever their outcome (`device-connect-rate`, CONNACK 3), taken when the
 *    check is about to run: a device (or a stolen credential) reconnecting in a
 *    loop costs a secret check each time, and a secret guessed for one id from
 *    many addresses is bounded too.
 *  - Known devices: a device that authenticated from an address within
 *    MQTT_AUTH_KNOWN_DEVICE_MS is not held to that address's budget, only to
 *    its own rate. Behind a hospital's NAT every device shares one address:
 *    one misbehaving device or an attacker there spends the address's budget,
 *    and the devices already known there keep connecting.
 *
 * Failures and device attempts are counted in Redis (rate-limiter-flexible),
 * shared by every broker behind a load balancer; each broker also counts the
 * failures it committed itself at once (the Redis write lands a round trip
 * later), reads an address's failures once for CONNECTs arriving together, and
 * remembers a spent address until its window ends, so a flood from it costs no
 * Redis round trip per CONNECT.
 */
import type { LRUCache } from 'lru-cache';
import { boundedCache } from '../src/bounded-cache.js';
import { RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';

export type BudgetRefusal = 'too-many-failures';

/** How a CONNECT ended: accepted, refused for its credentials, or refused for a reason of ours. */
export type ConnectOutcome = 'accepted' | 'refused' | 'void';

export interface Reservation {
  /** Failures the address may still have (Infinity for a known device): the pool runs fewer checks. */
  unitsLeft(): number;
  /** True while the address has no failure in the window (or the device is known there). */
  clean(): boolean;
  /**
   * Takes one of the device's CONNECT attempts, just before its credentials
   * are checked; false when its rate is spent (`device-connect-rate`).
   */
  attempt(): Promise<boolean>;
  /**
   * Counts the failure at once, before the check gives its place up (so the
   * next check of the address sees one unit fewer); `settle` writes it to Redis.
   */
  failed(): void;
  settle(outcome: ConnectOutcome): Promise<void>;
}

export type ReserveResult =
  | { readonly ok: true; readonly reservation: Reservation }
  | { readonly ok: false; readonly reason: BudgetRefusal };

export interface ConnectBudgetsOptions {
  /** Failures per address (points = MQTT_AUTH_MAX_FAILURES, duration = the window). */
  readonly addressFailures: RateLimiterAbstract;
  /** Attempts per device id (points = MQTT_DEVICE_CONNECT_RATE, duration = 60 s). */
  readonly deviceAttempts: RateLimiterAbstract;
  /** How long a device stays known at an address, ms (0: never). */
  readonly knownDeviceMs: number;
  /** Addresses and address/device pairs remembered at most. */
  readonly maxRemembered?: number;
}

export class ConnectBudgets {
  readonly #failures: RateLimiterAbstract;
  readonly #attempts: RateLimiterAbstract;
  readonly #max: number;
  /** Addresses whose failures are spent, until their window ends. */
  readonly #spent: LRUCache<string, true>;
  /** Failures this broker committed per address in the current window. */
  readonly #committed: LRUCache<string, number>;
  readonly #known: LRUCache<string, true> | undefined;
  /** Reads of an address's failures in flight. */
  readonly #reading = new Map<string, Promise<RateLimiterRes | null>>();

  constructor(options: ConnectBudgetsOptions) {
    this.#failures = options.addressFailures;
    this.#attempts = options.deviceAttempts;
    this.#max = options.addressFailures.points;
    const max = options.maxRemembered ?? 100_000;
    const windowMs = options.addressFailures.duration * 1000;
    this.#spent = boundedCache(max, windowMs);
    this.#committed = boundedCache(max, windowMs);
    this.#known = options.knownDeviceMs > 0 ? boundedCache(max, options.knownDeviceMs) : undefined;
  }

  /** The address's failures in Redis; CONNECTs arriving together share one read. */
  #read(address: string): Promise<RateLimiterRes | null> {
    let reading = this.#reading.get(address);
    if (!reading) {
      reading = this.#failures.get(address).finally(() => this.#reading.delete(address));
      this.#reading.set(address, reading);
    }
    return reading;
  }

  /**
   * Refuses a spent address, unless the device is known there. Rejects when
   * the counters cannot be read (Redis down): the caller refuses with "server
   * unavailable".
   */
  async reserve(address: string, deviceId: string | undefined): Promise<ReserveResult> {
    const known = deviceId !== undefined && this.#known?.has(`${address}\n${deviceId}`) === true;
    let seen = 0;
    if (!known) {
      // In memory first, so that a flood from a spent address costs no Redis round trip.
      if (this.#spent.has(address)) return { ok: false, reason: 'too-many-failures' };
      const failures = await this.#read(address);
      seen = failures?.consumedPoints ?? 0;
      if (Math.max(seen, this.#committed.get(address) ?? 0) >= this.#max) {
        this.#spent.set(address, true, { ttl: Math.max(1, failures?.msBeforeNext ?? 1) });
        return { ok: false, reason: 'too-many-failures' };
      }
    }
    let settled = false;
    let counted = false;
    const failed = () => {
      if (counted || known) return;
      counted = true;
      const committed = this.#committed.get(address);
      if (committed === undefined) this.#committed.set(address, 1);
      else this.#committed.set(address, committed + 1, { noUpdateTTL: true });
    };
    return {
      ok: true,
      reservation: {
        unitsLeft: () =>
          known ? Infinity : this.#max - Math.max(seen, this.#committed.get(address) ?? 0),
        clean: () => known || Math.max(seen, this.#committed.get(address) ?? 0) === 0,
        attempt: async () => {
          if (deviceId === undefined) return true;
          try {
            await this.#attempts.consume(deviceId);
            return true;
          } catch (err) {
            if (err instanceof RateLimiterRes) return false;
            throw err;
          }
        },
        failed,
        settle: async (outcome) => {
          if (settled) return;
          settled = true;
          if (outcome === 'accepted' && deviceId !== undefined)
            this.#known?.set(`${address}\n${deviceId}`, true);
          if (outcome !== 'refused' || known) return;
          // The failure counts here at once, in Redis (for the other brokers) a
          // round trip later.
          failed();
          await this.#failures.penalty(address, 1);
        },
      },
    };
  }
}
