/**
 * Two limits that keep one party from starving the others. Pure state (the
 * clock comes in as an argument); the broker decides what to do with a verdict.
 *
 *  - FailedAuthLimiter: per client address, at most `maxFailures` failed
 *    CONNECTs in a fixed window; further CONNECTs from that address are refused
 *    without checking a secret (no scrypt work for a guesser) until the window
 *    ends. A success does not clear the count: a valid device on the same
 *    address must not reset an attacker's budget.
 *  - DeviceThrottle: a token bucket per device (`ratePerSecond` sustained,
 *    `burst` on top). Over the rate, a message is not refused but delayed: the
 *    broker withholds its PUBACK, so the device slows down and nothing is lost.
 */

export interface FailedAuthLimiterOptions {
  readonly maxFailures: number;
  readonly windowMs: number;
  /** Addresses remembered at most (the oldest are forgotten first). */
  readonly maxAddresses?: number;
}

interface FailureWindow {
  count: number;
  readonly startedAt: number;
}

export class FailedAuthLimiter {
  readonly #opts: Required<FailedAuthLimiterOptions>;
  readonly #windows = new Map<string, FailureWindow>();

  constructor(options: FailedAuthLimiterOptions) {
    this.#opts = { maxAddresses: 100_000, ...options };
  }

  /** True when `address` has used up its failures in the current window. */
  blocked(address: string, now: number): boolean {
    const w = this.#current(address, now);
    return w !== undefined && w.count >= this.#opts.maxFailures;
  }

  recordFailure(address: string, now: number): void {
    const w = this.#current(address, now);
    if (w) {
      w.count++;
      return;
    }
    if (this.#windows.size >= this.#opts.maxAddresses) {
      const oldest = this.#windows.keys().next().value;
      if (oldest !== undefined) this.#windows.delete(oldest);
    }
    this.#windows.set(address, { count: 1, startedAt: now });
  }

  #current(address: string, now: number): FailureWindow | undefined {
    const w = this.#windows.get(address);
    if (w && now - w.startedAt >= this.#opts.windowMs) {
      this.#windows.delete(address);
      return undefined;
    }
    return w;
  }
}

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
