/**
 * CONNECT budgets, reserved BEFORE any secret is checked, so that CONNECTs
 * arriving together cannot all pass a limit that only counted failures after
 * the fact (300 parallel CONNECTs used to get 300 scrypt checks).
 *
 *  - Per client address: MQTT_AUTH_MAX_FAILURES failed CONNECTs per
 *    MQTT_AUTH_FAILURE_WINDOW_MS. A CONNECT being checked holds one unit of its
 *    address's budget while it is checked; a refused credential turns the unit
 *    into a failure, an accepted one (or a refusal of ours) gives it back. So
 *    failures plus checks in flight never exceed the budget, and the scrypt
 *    work one address can cause per window is bounded by it.
 *      · failures spent → refused outright (`too-many-failures`, CONNACK 5);
 *      · units all held by checks in flight → refused for now (`auth-busy`,
 *        CONNACK 3): many devices behind one NAT reconnecting at once are
 *        asked to retry, not locked out for the window.
 *  - Per device id: MQTT_DEVICE_CONNECT_RATE CONNECT attempts per minute,
 *    whatever their outcome (`device-connect-rate`, CONNACK 3): a device (or a
 *    stolen credential) reconnecting in a loop costs a secret check each time,
 *    and a secret guessed for one id from many addresses is bounded too.
 *  - Known devices: a device that authenticated from an address within
 *    MQTT_AUTH_KNOWN_DEVICE_MS is not held to that address's budget, only to
 *    its own rate. Behind a hospital's NAT every device shares one address:
 *    one misbehaving device or an attacker there spends the address's budget,
 *    and the devices already known there keep connecting.
 *
 * Failures and device attempts are counted in Redis (rate-limiter-flexible),
 * shared by every broker behind a load balancer; checks in flight are counted
 * by each broker (exact, and gone with the process if it dies). A spent address
 * is remembered in memory until its window ends, so a flood from it costs no
 * Redis round trip per CONNECT.
 */
import { LRUCache } from 'lru-cache';
import { RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';

export type BudgetRefusal = 'too-many-failures' | 'auth-busy' | 'device-connect-rate';

/** How a reserved CONNECT ended: accepted, refused for its credentials, or refused for a reason of ours. */
export type ConnectOutcome = 'accepted' | 'refused' | 'void';

export interface Reservation {
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
  /** Checks in flight per address, on this broker. */
  readonly #inFlight = new Map<string, number>();
  /** Addresses whose failures are spent, until their window ends. */
  readonly #spent: LRUCache<string, true>;
  /**
   * Failures this broker committed per address in the current window, counted
   * at once (the Redis write lands a round trip later, and a CONNECT reading
   * Redis meanwhile must not see the unit neither held nor spent).
   */
  readonly #committed: LRUCache<string, number>;
  readonly #known: LRUCache<string, true> | undefined;

  constructor(options: ConnectBudgetsOptions) {
    this.#failures = options.addressFailures;
    this.#attempts = options.deviceAttempts;
    this.#max = options.addressFailures.points;
    const max = options.maxRemembered ?? 100_000;
    // Each entry gets the rest of its window as ttl; the window is the default.
    this.#spent = new LRUCache({ max, ttl: options.addressFailures.duration * 1000 });
    this.#committed = new LRUCache({ max, ttl: options.addressFailures.duration * 1000 });
    this.#known =
      options.knownDeviceMs > 0 ? new LRUCache({ max, ttl: options.knownDeviceMs }) : undefined;
  }

  /**
   * Takes a unit of the address's budget (unless the device is known there) and
   * an attempt of the device's rate. Rejects when the counters cannot be read
   * (Redis down): the caller refuses with "server unavailable".
   */
  async reserve(address: string, deviceId: string | undefined): Promise<ReserveResult> {
    const known = deviceId !== undefined && this.#known?.has(`${address}\n${deviceId}`) === true;
    const release = () => {
      if (known) return;
      const left = (this.#inFlight.get(address) ?? 1) - 1;
      if (left > 0) this.#inFlight.set(address, left);
      else this.#inFlight.delete(address);
    };
    if (!known) {
      // In memory first, so that a flood costs no Redis round trip per CONNECT:
      // a spent address, or every unit held by checks in flight here.
      if (this.#spent.has(address)) return { ok: false, reason: 'too-many-failures' };
      const inFlight = this.#inFlight.get(address) ?? 0;
      if (inFlight >= this.#max) return { ok: false, reason: 'auth-busy' };
      // Held before the await, so parallel CONNECTs see each other's units.
      this.#inFlight.set(address, inFlight + 1);
      let res: RateLimiterRes | null;
      try {
        res = await this.#failures.get(address);
      } catch (err) {
        release();
        throw err;
      }
      const failures = Math.max(res?.consumedPoints ?? 0, this.#committed.get(address) ?? 0);
      if (failures >= this.#max) {
        release();
        this.#spent.set(address, true, { ttl: Math.max(1, res?.msBeforeNext ?? 1) });
        return { ok: false, reason: 'too-many-failures' };
      }
      if (failures + (this.#inFlight.get(address) ?? 0) > this.#max) {
        release();
        return { ok: false, reason: 'auth-busy' };
      }
    }
    if (deviceId !== undefined) {
      try {
        await this.#attempts.consume(deviceId);
      } catch (err) {
        release();
        if (err instanceof RateLimiterRes) return { ok: false, reason: 'device-connect-rate' };
        throw err;
      }
    }
    let settled = false;
    return {
      ok: true,
      reservation: {
        settle: async (outcome) => {
          if (settled) return;
          settled = true;
          if (outcome === 'refused' && !known) {
            // The held unit becomes a failure in the same instant: in memory
            // now, in Redis (for the other brokers) a round trip later.
            const committed = this.#committed.get(address);
            if (committed === undefined) this.#committed.set(address, 1);
            else this.#committed.set(address, committed + 1, { noUpdateTTL: true });
            release();
            await this.#failures.penalty(address, 1);
            return;
          }
          release();
          if (outcome === 'accepted' && deviceId !== undefined)
            this.#known?.set(`${address}\n${deviceId}`, true);
        },
      },
    };
  }
}
