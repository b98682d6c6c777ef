/**
 * The FHIR writer's adaptive limit (src/fhir/adaptive-limit.ts): never more in
 * flight than the limit; one more slot after a round of fast answers; half
 * after a slow answer or an overload answer. Time comes from a fake clock.
 */
import { describe, expect, it } from 'vitest';
import { createAdaptiveLimit } from '../../src/fhir/adaptive-limit.js';

function clocked(max: number, initial = 2) {
  let t = 0;
  const limit = createAdaptiveLimit({ max, initial, now: () => t });
  /** One request of `entries` that takes `ms` on the fake clock. */
  const request = (ms: number, entries = 100) =>
    limit.run(entries, () => {
      t += ms;
      return Promise.resolve('ok');
    });
  return { limit, request };
}

describe('the adaptive limit', () => {
  it('grows by one per round of fast answers, up to its ceiling', async () => {
    const { limit, request } = clocked(4, 1);
    for (let i = 0; i < 20; i++) await request(100);
    expect(limit.limit).toBe(4);
  });

  it('halves after an answer much slower per entry than the best, once per round', async () => {
    const { limit, request } = clocked(8, 8);
    for (let i = 0; i < 10; i++) await request(100);
    await request(500); // 5× the best, per entry too: queueing at the server
    expect(limit.limit).toBe(4);
    await request(500); // the same round: no second decrease
    expect(limit.limit).toBe(4);
  });

  it('compares per entry: a Bundle twice as large taking twice as long is not slow', async () => {
    const { limit, request } = clocked(8, 4);
    for (let i = 0; i < 10; i++) await request(100, 100);
    await request(200, 200);
    expect(limit.limit).toBeGreaterThanOrEqual(4);
  });

  it('a small Bundle, dear per entry but quick, is not slow', async () => {
    const { limit, request } = clocked(8, 4);
    for (let i = 0; i < 10; i++) await request(1000, 200);
    await request(150, 10); // 3× the per-entry cost, but a seventh of the time
    expect(limit.limit).toBeGreaterThanOrEqual(4);
  });

  it('halves on an overload answer (429/503/timeout) and passes the error on', async () => {
    const { limit, request } = clocked(8, 8);
    for (let i = 0; i < 8; i++) await request(100);
    await expect(
      limit.run(
        1,
        () => Promise.reject(new Error('503')),
        () => true,
      ),
    ).rejects.toThrow('503');
    expect(limit.limit).toBe(4);
  });

  it('never has more requests in flight than the limit', async () => {
    const limit = createAdaptiveLimit({ max: 3, initial: 3 });
    let inFlight = 0;
    let most = 0;
    const release: (() => void)[] = [];
    const all = Array.from({ length: 10 }, () =>
      limit.run(1, async () => {
        most = Math.max(most, ++inFlight);
        await new Promise<void>((r) => release.push(r));
        inFlight--;
      }),
    );
    // Release the held requests one by one until all ten have run.
    for (let done = 0; done < 10; done++) {
      while (release.length === 0) await new Promise((r) => setImmediate(r));
      release.shift()!();
      await new Promise((r) => setImmediate(r));
    }
    await Promise.all(all);
    expect(most).toBe(3);
  });
});
