import { describe, expect, it } from 'vitest';
import { boundedCache } from '../../src/bounded-cache.js';

describe('boundedCache', () => {
  it('holds at most maxEntries, dropping the least recently used', () => {
    const c = boundedCache<string, number>(3, 60_000);
    for (const k of ['a', 'b', 'c']) c.set(k, 1);
    c.get('a'); // a is now the most recent
    c.set('d', 1);
    expect(c.size).toBe(3);
    expect([...c.keys()].sort()).toEqual(['a', 'c', 'd']);
    for (let i = 0; i < 1000; i++) c.set(`k${i}`, i);
    expect(c.size).toBe(3);
  });

  it('forgets an entry after its time to live, not before', async () => {
    const c = boundedCache<string, true>(10, 50);
    const setAt = performance.now();
    c.set('x', true);
    expect(c.has('x')).toBe(true);
    while (c.has('x')) {
      expect(performance.now() - setAt).toBeLessThan(5_000);
      await new Promise((r) => setTimeout(r, 5));
    }
    expect(performance.now() - setAt).toBeGreaterThanOrEqual(50);
  });
});
