/**
 * Group commit (src/group-commit.ts), as the FHIR writer uses it: a call goes at once
 * while a Bundle slot is free; calls that wait share the next Bundle, up to
 * the Bundle size; a refused shared Bundle is re-sent per call, so one call's
 * bad entry fails only that call; a transient failure reaches every call in
 * the Bundle; a call never shares a Bundle with one holding the same id. The
 * "server" is a function that answers when the test releases it.
 */
import type { Observation } from 'fhir/r4.js';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createAdaptiveLimit } from '../../src/fhir/adaptive-limit.js';
import { createGroupCommit, fixedLimit } from '../../src/group-commit.js';
import { PipelineError } from '../../src/errors.js';

/** A promise whose rejection is checked later (not an unhandled rejection meanwhile). */
function later<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}

const obs = (...ids: string[]): Observation[] =>
  ids.map((id) => ({ resourceType: 'Observation', id, status: 'final', code: {} }));

/** A server with `slots` Bundles in flight; each request waits until released. */
function server(slots: number, maxEntries = 10) {
  const limit = createAdaptiveLimit({ max: slots, initial: slots });
  const sent: string[][] = [];
  const open: { ids: string[]; release: (fail?: Error) => void }[] = [];
  /** Ids the server refuses (a transaction with one of them fails whole). */
  const bad = new Set<string>();
  const coalescer = createGroupCommit<Observation, string>({
    limit,
    key: (o) => o.id ?? '',
    maxEntries,
    send: (o) =>
      limit.run(o.length, () => {
        const ids = o.map((x) => x.id!);
        sent.push(ids);
        return new Promise<string[]>((resolve, reject) => {
          open.push({
            ids,
            release: (fail) => {
              if (fail) return reject(fail);
              if (ids.some((id) => bad.has(id)))
                return reject(
                  new PipelineError('FhirRejected', 'refused', { details: { status: 400 } }),
                );
              resolve(ids.map((id) => `ok:${id}`));
            },
          });
        });
      }),
  });
  /** Releases the oldest open request (optionally failing it); lets callbacks run. */
  const releaseNext = async (fail?: Error) => {
    open.shift()!.release(fail);
    for (let i = 0; i < 5; i++) await Promise.resolve();
    await new Promise((r) => setImmediate(r));
  };
  const settle = () => new Promise((r) => setImmediate(r));
  return { coalescer, sent, open, bad, releaseNext, settle };
}

describe('the FHIR write coalescer', () => {
  it('sends a call at once while a slot is free, alone', async () => {
    const s = server(2);
    const a = s.coalescer.write(obs('a1', 'a2'));
    await s.settle();
    expect(s.sent).toEqual([['a1', 'a2']]);
    await s.releaseNext();
    expect(await a).toEqual(['ok:a1', 'ok:a2']);
  });

  it('merges the calls that wait for a slot into the next Bundle, each getting its own results', async () => {
    const s = server(1);
    const first = s.coalescer.write(obs('a1'));
    const waiting = [obs('b1', 'b2'), obs('c1'), obs('d1', 'd2', 'd3')].map((o) =>
      s.coalescer.write(o),
    );
    await s.settle();
    expect(s.sent).toEqual([['a1']]);
    expect(s.coalescer.waiting).toBe(3);
    await s.releaseNext();
    // One Bundle for the three calls that waited.
    expect(s.sent[1]).toEqual(['b1', 'b2', 'c1', 'd1', 'd2', 'd3']);
    await s.releaseNext();
    expect(await first).toEqual(['ok:a1']);
    expect(await Promise.all(waiting)).toEqual([
      ['ok:b1', 'ok:b2'],
      ['ok:c1'],
      ['ok:d1', 'ok:d2', 'ok:d3'],
    ]);
  });

  it('never puts more than the Bundle size in one Bundle', async () => {
    const s = server(1, 4);
    const all = [obs('a'), obs('b1', 'b2', 'b3'), obs('c1', 'c2'), obs('d1', 'd2')].map((o) =>
      s.coalescer.write(o),
    );
    await s.settle();
    await s.releaseNext(); // a
    await s.releaseNext(); // b (3) — c would make 5
    await s.releaseNext(); // c + d
    expect(s.sent).toEqual([['a'], ['b1', 'b2', 'b3'], ['c1', 'c2', 'd1', 'd2']]);
    await Promise.all(all);
  });

  it('re-sends a refused shared Bundle per call: only the call with the bad entry is refused', async () => {
    const s = server(1);
    const first = s.coalescer.write(obs('x'));
    const good = s.coalescer.write(obs('g1', 'g2'));
    const bad = later(s.coalescer.write(obs('h1', 'BAD')));
    const good2 = s.coalescer.write(obs('k1'));
    s.bad.add('BAD');
    await s.settle();
    await s.releaseNext(); // x
    expect(s.sent[1]).toEqual(['g1', 'g2', 'h1', 'BAD', 'k1']);
    await s.releaseNext(); // the shared Bundle: refused
    await s.releaseNext(); // g alone
    await s.releaseNext(); // h + BAD alone: refused
    await s.releaseNext(); // k alone
    expect(s.sent.slice(2)).toEqual([['g1', 'g2'], ['h1', 'BAD'], ['k1']]);
    await first;
    expect(await good).toEqual(['ok:g1', 'ok:g2']);
    expect(await good2).toEqual(['ok:k1']);
    await expect(bad).rejects.toMatchObject({ code: 'FhirRejected' });
  });

  it('gives a transient failure of a shared Bundle to every call in it', async () => {
    const s = server(1);
    const first = s.coalescer.write(obs('x'));
    const b = later(s.coalescer.write(obs('b')));
    const c = later(s.coalescer.write(obs('c')));
    await s.settle();
    await s.releaseNext();
    await first;
    await s.releaseNext(new PipelineError('FhirUnavailable', 'down', { details: { status: 503 } }));
    await expect(b).rejects.toMatchObject({ code: 'FhirUnavailable' });
    await expect(c).rejects.toMatchObject({ code: 'FhirUnavailable' });
    expect(s.sent).toEqual([['x'], ['b', 'c']]);
  });

  it('keeps one id out of a Bundle that has it already, and sends `alone` calls alone', async () => {
    const s = server(1);
    const first = s.coalescer.write(obs('x'));
    const a = s.coalescer.write(obs('a', 'dup'));
    const again = s.coalescer.write(obs('dup'));
    const alone = s.coalescer.write(obs('solo'), true);
    const b = s.coalescer.write(obs('b'));
    await s.settle();
    for (let i = 0; i < 4; i++) await s.releaseNext();
    expect(s.sent).toEqual([['x'], ['a', 'dup', 'b'], ['dup'], ['solo']]);
    await Promise.all([first, a, again, alone, b]);
  });
});

describe('group commit with a linger (the ClickHouse mirror)', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  /** One request at a time, answered at once; records what each request carried. */
  function sink(options: {
    lingerMs: number;
    lingerParts?: number;
    lingerEntries?: number;
    maxEntries?: number;
  }) {
    vi.useFakeTimers();
    const slot = fixedLimit(1);
    const sent: string[][] = [];
    const group = createGroupCommit<string, string>({
      limit: slot,
      maxEntries: options.maxEntries ?? 100,
      lingerMs: options.lingerMs,
      ...(options.lingerParts !== undefined ? { lingerParts: options.lingerParts } : {}),
      ...(options.lingerEntries !== undefined ? { lingerEntries: options.lingerEntries } : {}),
      now: () => Date.now(),
      send: (items) =>
        slot.run(() => {
          sent.push([...items]);
          return Promise.resolve(items.map((i) => `ok:${i}`));
        }),
    });
    return { group, sent };
  }

  it('holds a lone part up to lingerMs, and the parts arriving meanwhile share its request', async () => {
    const s = sink({ lingerMs: 1000 });
    const a = s.group.write(['a']);
    await vi.advanceTimersByTimeAsync(400);
    const b = s.group.write(['b1', 'b2']);
    await vi.advanceTimersByTimeAsync(400);
    expect(s.sent).toEqual([]);
    expect(s.group.waiting).toBe(2);
    await vi.advanceTimersByTimeAsync(200);
    expect(s.sent).toEqual([['a', 'b1', 'b2']]);
    expect(await a).toEqual(['ok:a']);
    expect(await b).toEqual(['ok:b1', 'ok:b2']);
  });

  it('sends at once when lingerParts parts wait (every caller there can be)', async () => {
    const s = sink({ lingerMs: 60_000, lingerParts: 3 });
    const parts = [['a'], ['b'], ['c']].map((p) => s.group.write(p));
    await vi.advanceTimersByTimeAsync(0);
    expect(s.sent).toEqual([['a', 'b', 'c']]);
    await Promise.all(parts);
  });

  it('sends at once when maxEntries items wait, and the rest waits again', async () => {
    const s = sink({ lingerMs: 60_000, maxEntries: 3 });
    const first = s.group.write(['a1', 'a2']);
    const second = s.group.write(['b1', 'b2']);
    await vi.advanceTimersByTimeAsync(0);
    expect(s.sent).toEqual([['a1', 'a2']]);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(s.sent).toEqual([
      ['a1', 'a2'],
      ['b1', 'b2'],
    ]);
    await Promise.all([first, second]);
  });

  it('sends at once when lingerEntries items wait, carrying up to maxEntries', async () => {
    const s = sink({ lingerMs: 60_000, lingerEntries: 3, maxEntries: 5 });
    const first = s.group.write(['a1', 'a2']);
    await vi.advanceTimersByTimeAsync(1000);
    // Two items wait: below the bound, the part lingers.
    expect(s.sent).toEqual([]);
    const second = s.group.write(['b1', 'b2']);
    await vi.advanceTimersByTimeAsync(0);
    expect(s.sent).toEqual([['a1', 'a2', 'b1', 'b2']]);
    // One item after: it waits out the linger alone.
    const third = s.group.write(['c1']);
    await vi.advanceTimersByTimeAsync(59_999);
    expect(s.sent).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(s.sent[1]).toEqual(['c1']);
    await Promise.all([first, second, third]);
  });

  it('without a linger, a part goes at once', async () => {
    const s = sink({ lingerMs: 0 });
    const a = s.group.write(['a']);
    await vi.advanceTimersByTimeAsync(0);
    expect(s.sent).toEqual([['a']]);
    await a;
  });
});
