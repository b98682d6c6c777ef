/**
 * How many FHIR write Bundles this process keeps in flight, adapted to the
 * server's latency (AIMD, as TCP congestion control and Netflix's
 * concurrency-limits "Vegas" limit do): a slow server is not flooded, a fast
 * one is not starved.
 *
 *  - The signal: a request is slow when both its latency and its latency per
 *    entry exceed `tolerance` × the lowest of the last `window` requests (the
 *    server's cost without queueing, re-learned as the window slides, so one
 *    lucky request does not pin it for ever). Both, because a Bundle has a fixed
 *    cost: a small Bundle is dear per entry but quick, a large one slow but
 *    cheap per entry; queueing at the server makes both worse.
 *  - Additive increase: after `limit` requests in a row that are not slow, one
 *    more slot (up to `max`).
 *  - Multiplicative decrease: a request slower than that, or an overload answer
 *    (429, 503, a timeout: `overloaded()`), halves the limit (down to `min`), at
 *    most once per `limit` completions, so a burst of slow answers from one
 *    round counts once.
 *
 * Contract: run(entries, fn) resolves/rejects as fn does; it waits (FIFO) for
 * a free slot first. No timers, no I/O: time comes from `now`.
 */
export interface AdaptiveLimitOptions {
  /** Bundles in flight at the start (default 2). */
  readonly initial?: number;
  readonly min?: number;
  /** Ceiling (FHIR_CONCURRENCY_MAX). */
  readonly max: number;
  /** A request slower per entry than tolerance × best counts as queueing (default 2). */
  readonly tolerance?: number;
  /** Requests over which `best` is the minimum (default 100). */
  readonly window?: number;
  readonly now?: () => number;
}

export interface AdaptiveLimit {
  run<T>(entries: number, fn: () => Promise<T>, overloaded?: (err: unknown) => boolean): Promise<T>;
  /** The current limit (for metrics and benchmarks). */
  readonly limit: number;
  readonly inFlight: number;
}

export function createAdaptiveLimit(options: AdaptiveLimitOptions): AdaptiveLimit {
  const min = options.min ?? 1;
  const max = Math.max(min, options.max);
  const tolerance = options.tolerance ?? 2;
  const windowSize = options.window ?? 100;
  const now = options.now ?? (() => performance.now());
  let limit = Math.min(max, Math.max(min, options.initial ?? 2));
  let inFlight = 0;
  let fastInRow = 0;
  let sinceDecrease = 0;
  const recent: { readonly ms: number; readonly perEntry: number }[] = []; // the last `windowSize`
  const waiting: (() => void)[] = [];

  function release(): void {
    inFlight--;
    while (inFlight < Math.floor(limit) && waiting.length > 0) {
      inFlight++;
      waiting.shift()!();
    }
  }

  function decrease(): void {
    fastInRow = 0;
    if (sinceDecrease < limit) return; // one decrease per round
    sinceDecrease = 0;
    limit = Math.max(min, Math.floor(limit / 2));
  }

  function record(ms: number, entries: number): void {
    const perEntry = ms / Math.max(1, entries);
    recent.push({ ms, perEntry });
    if (recent.length > windowSize) recent.shift();
    sinceDecrease++;
    const bestMs = Math.min(...recent.map((r) => r.ms));
    const bestPerEntry = Math.min(...recent.map((r) => r.perEntry));
    if (recent.length > 1 && ms > bestMs * tolerance && perEntry > bestPerEntry * tolerance)
      return decrease();
    if (++fastInRow >= limit) {
      fastInRow = 0;
      limit = Math.min(max, limit + 1);
    }
  }

  return {
    get limit() {
      return limit;
    },
    get inFlight() {
      return inFlight;
    },
    async run(entries, fn, overloaded) {
      if (inFlight < Math.floor(limit)) inFlight++;
      else await new Promise<void>((resolve) => waiting.push(resolve));
      const started = now();
      try {
        const value = await fn();
        record(now() - started, entries);
        return value;
      } catch (err) {
        sinceDecrease++;
        if (overloaded?.(err)) decrease();
        throw err;
      } finally {
        release();
      }
    },
  };
}
