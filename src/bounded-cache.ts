/**
 * An LRU cache bounded by entry count, with a time to live per entry, that
 * allocates as entries arrive. lru-cache's `max` allocates its index and TTL
 * arrays for `max` entries up front (about 4 MB for 100,000), and a broker with
 * a few hundred devices would pay that for each of its caches; `maxSize` with
 * every entry of size 1 is the same bound without the preallocation.
 */
import { LRUCache } from 'lru-cache';

export function boundedCache<K extends NonNullable<unknown>, V extends NonNullable<unknown>>(
  maxEntries: number,
  ttlMs: number,
): LRUCache<K, V> {
  return new LRUCache<K, V>({ maxSize: maxEntries, sizeCalculation: () => 1, ttl: ttlMs });
}
