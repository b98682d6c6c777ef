/**
 * CONNECT budgets, reserved BEFORE any secret is checked, so that CONNECTs
 * arriving together cannot all pass a check that only counted failures after
 * the fact (300 parallel CONNECTs used to get 300 scrypt checks).
 *
 *  - Per client address: MQTT_AUTH_MAX_FAILURES failed CONNECTs per
 *    MQTT_AUTH_FAILURE_WINDOW_MS. Each CONNECT takes one unit first; a CONNECT
 *    that succeeds, or fails for a reason of ours (Redis down, checks busy),
 *    gives it back. When the units are gone the address is refused outright.
 *  - Per device id: MQTT_DEVICE_CONNECT_RATE CONNECT attempts per minute,
 *    whatever their outcome: a device (or a stolen credential) reconnecting in a
 *    loop costs a secret check each time, and a wrong secret guessed for one id
 *    from many addresses is bounded too.
 *  - Known devices: a device that authenticated from an address within
 *    MQTT_AUTH_KNOWN_DEVICE_MS is not held to that address's budget (only to its
 *    own). Behind a hospital's NAT every device shares one address: one
 *    misbehaving device or an attacker there spends the address's budget, and
 *    the devices already known there keep connecting.
 *
 * The counters live in Redis (rate-limiter-flexible), so every broker behind a
 * load balancer shares them; the known-device memory is per broker and bounded.
 */
import { LRUCache } from 'lru-cache';
import { RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';

export type BudgetRefusal = 'too-many-failures' | 'device-connect-rate';

/** How a reserved CONNECT ended: accepted, refused for its credentials, or refused for a reason of ours. */
export type ConnectOutcome = 'accepted' | 'refused' | 'void';

export interface Reservation {
  settle(outcome: ConnectOutcome): Promise<void>;
}

export type ReserveResult =
  | { readonly ok: true; readonly reservation: Reservation }
  | { readonly ok: false; readonly reason: BudgetRefusal };

export interface ConnectBudgetsOptions {
  /** Failure units per address (points = MQTT_AUTH_MAX_FAILURES per window). */
  readonly addressFailures: RateLimiterAbstract;
  /** Attempts per device id (points = MQTT_DEVICE_CONNECT_RATE per 60 s). */
  readonly deviceAttempts: RateLimiterAbstract;
  /** How long a device stays known at an address, ms (0: never). */
  readonly knownDeviceMs: number;
  /** Address/device pairs remembered at most. */
  readonly maxKnown?: number;
}

/** True when a limiter refused (rather than failed: a Redis error rejects with an Error). */
async function take(limiter: RateLimiterAbstract, key: string): Promise<boolean> {
  try {
    await limiter.consume(key);
    return true;
  } catch (err) {
    if (err instanceof RateLimiterRes) return false;
    throw err;
  }
}

export class ConnectBudgets {
  readonly #address: RateLimiterAbstract;
  readonly #device: RateLimiterAbstract;
  readonly #known: LRUCache<string, true> | undefined;

  constructor(options: ConnectBudgetsOptions) {
    this.#address = options.addressFailures;
    this.#device = options.deviceAttempts;
    this.#known =
      options.knownDeviceMs > 0
        ? new LRUCache({ max: options.maxKnown ?? 100_000, ttl: options.knownDeviceMs })
        : undefined;
  }

  /**
   * Takes a failure unit from the address (unless the device is known there)
   * and an attempt from the device. Rejects when the counters cannot be read
   * (Redis down): the caller refuses with "server unavailable".
   */
  async reserve(address: string, deviceId: string | undefined): Promise<ReserveResult> {
    const known = deviceId !== undefined && this.#known?.has(`${address}\n${deviceId}`) === true;
    // The address first: a flood of made-up ids from one address then creates
    // no more device counters than the address has units.
    const tookAddress = !known;
    if (tookAddress && !(await take(this.#address, address)))
      return { ok: false, reason: 'too-many-failures' };
    if (deviceId !== undefined) {
      let tookDevice: boolean;
      try {
        tookDevice = await take(this.#device, deviceId);
      } catch (err) {
        if (tookAddress) await this.#address.reward(address, 1);
        throw err;
      }
      if (!tookDevice) {
        // Not a failure of this address: its unit goes back.
        if (tookAddress) await this.#address.reward(address, 1);
        return { ok: false, reason: 'device-connect-rate' };
      }
    }
    let settled = false;
    return {
      ok: true,
      reservation: {
        settle: async (outcome) => {
          if (settled) return;
          settled = true;
          if (outcome === 'accepted' && deviceId !== undefined)
            this.#known?.set(`${address}\n${deviceId}`, true);
          if (outcome !== 'refused' && tookAddress) await this.#address.reward(address, 1);
        },
      },
    };
  }
}
