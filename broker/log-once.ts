/**
 * Refusals that come in floods — sockets over the idle cap, CONNECTs over a
 * budget — are counted every time (metrics) but logged once per key and
 * interval, so that a flood of CONNECTs is not also a flood of log lines.
 */
import type { LRUCache } from 'lru-cache';
import { boundedCache } from '../src/bounded-cache.js';

/** How often one kind of flood refusal is logged per address, ms. */
export const FLOOD_LOG_INTERVAL_MS = 10_000;

export class LogOnce {
  readonly #seen: LRUCache<string, true>;

  constructor(intervalMs = FLOOD_LOG_INTERVAL_MS, maxKeys = 10_000) {
    this.#seen = boundedCache(maxKeys, intervalMs);
  }

  /** True the first time `key` is seen in an interval (log it), false after. */
  first(key: string): boolean {
    if (this.#seen.has(key)) return false;
    this.#seen.set(key, true);
    return true;
  }
}
