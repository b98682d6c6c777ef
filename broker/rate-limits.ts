/**
 * The per-device PUBLISH rate: a token bucket per device (`ratePerSecond`
 * sustained, `burst` on top). Over the rate, a message is not refused but
 * delayed: the broker withholds its PUBACK, so the device slows down and
 * nothing is lost. Pure state (the clock comes in as an argument). (CONNECT
 * limits are in connect-budgets.ts.)
 */

export interface DeviceThrottleOptions {
  readonly ratePerSecond: number;
  readonly burst: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

export class DeviceThrottle {
  readonly #rate: number;
  readonly #burst: number;
  readonly #buckets = new Map<string, Bucket>();

  constructor(options: DeviceThrottleOptions) {
    this.#rate = options.ratePerSecond / 1000;
    this.#burst = options.burst;
  }

  /**
   * Takes one token for `deviceId` and returns how long (ms) the message must
   * wait for it: 0 within the rate. Tokens may go negative, so messages that
   * arrive together are spaced out one after the other.
   */
  take(deviceId: string, now: number): number {
    let b = this.#buckets.get(deviceId);
    if (!b) {
      b = { tokens: this.#burst, at: now };
      this.#buckets.set(deviceId, b);
    }
    b.tokens = Math.min(this.#burst, b.tokens + (now - b.at) * this.#rate);
    b.at = now;
    b.tokens -= 1;
    return b.tokens >= 0 ? 0 : Math.ceil(-b.tokens / this.#rate);
  }

  /** Forgets devices whose bucket is full again (they cost nothing to re-create). */
  prune(now: number): void {
    for (const [id, b] of this.#buckets)
      if (b.tokens + (now - b.at) * this.#rate >= this.#burst) this.#buckets.delete(id);
  }

  get size(): number {
    return this.#buckets.size;
  }
}
