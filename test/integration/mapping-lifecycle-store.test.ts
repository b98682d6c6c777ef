/**
 * The lifecycle's Redis state under concurrency and over time, on the real
 * Redis: first workers racing to bootstrap, an activation racing another,
 * rollback history, prune, version references. No ClickHouse: the shadow run
 * has nothing to compare (no traffic) or is waived.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { isPipelineError } from '../../src/errors.js';
import { readCandidate } from '../../src/mapping/index.js';
import {
  lifecycleSettings,
  MappingLifecycle,
  type Candidate,
  type ShadowSource,
} from '../../src/mapping/lifecycle/index.js';
import { createRedis } from '../../src/queue-runtime.js';
import { uniqueId } from '../support/harness.js';

const library = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../mappings');
const config = loadConfig({});
const redis = createRedis(config.redis.url);
const prefixes: string[] = [];
const noTraffic: ShadowSource = { samples: () => Promise.resolve({ samples: [] }) };
const who = (actor: string) => ({ actor, via: 'cli' as const });

let v1: Candidate;

function lifecycle(prefix: string): MappingLifecycle {
  return new MappingLifecycle({
    redis,
    prefix,
    settings: lifecycleSettings(config),
    source: noTraffic,
  });
}

function fresh(): MappingLifecycle {
  const prefix = uniqueId('lcs');
  prefixes.push(prefix);
  return lifecycle(prefix);
}

/** v1 with trailing blank lines: another version (a content hash) that maps the same. */
function variant(n: number): Candidate {
  return {
    ...v1,
    files: v1.files.map((f) =>
      f.file === 'fhir/weight-scale.json' ? { ...f, text: f.text + '\n'.repeat(n) } : f,
    ),
  };
}

beforeAll(async () => {
  v1 = await readCandidate(library);
});

afterAll(async () => {
  for (const p of prefixes) {
    const keys = await redis.keys(`${p}:*`);
    if (keys.length > 0) await redis.del(...keys);
  }
  redis.disconnect();
});

describe('lifecycle state in Redis', () => {
  it('workers racing to bootstrap: one version becomes active, once, and the others follow it', async () => {
    const first = fresh();
    const prefix = prefixes.at(-1)!;
    const others = [lifecycle(prefix), lifecycle(prefix), lifecycle(prefix)];
    const results = await Promise.allSettled(
      [first, ...others].map((lc, i) => lc.bootstrap(v1, { actor: `w${i}`, via: 'worker' })),
    );
    const activated = results.filter(
      (r) => r.status === 'fulfilled' && r.value.outcome === 'activated',
    );
    expect(activated).toHaveLength(1);
    for (const r of results) {
      if (r.status === 'rejected') {
        expect(isPipelineError(r.reason) && r.reason.code).toBe('ActivationConflict');
      } else expect(['activated', 'unchanged']).toContain(r.value.outcome);
    }
    const audit = await first.audit();
    expect(audit.filter((e) => e.action === 'bootstrap')).toHaveLength(1);
    expect(audit.filter((e) => e.action === 'propose')).toHaveLength(1);
    expect(await first.store.active()).toBe(audit.find((e) => e.action === 'bootstrap')?.to);
  });

  it('an activation checks the active version it ran its gates against (compare-and-set)', async () => {
    const lc = fresh();
    await lc.bootstrap(v1, who('w'));
    const a = (await lc.propose(variant(1), who('alice'))).version;
    const b = (await lc.propose(variant(2), who('bob'))).version;
    // Both gate runs see v1 active; only the first switch from v1 succeeds.
    const results = await Promise.allSettled([
      lc.activate(a, who('alice')),
      lc.activate(b, who('bob')),
    ]);
    const ok = results.filter((r) => r.status === 'fulfilled');
    const conflicts = results.filter(
      (r) =>
        r.status === 'rejected' &&
        isPipelineError(r.reason) &&
        r.reason.code === 'ActivationConflict',
    );
    expect(ok).toHaveLength(1);
    expect(conflicts).toHaveLength(1);
    const winner = (ok[0] as PromiseFulfilledResult<{ to: string }>).value.to;
    expect(await lc.store.active()).toBe(winner);
    expect((await lc.audit()).filter((e) => e.action === 'activate')).toHaveLength(1);
  });

  it('rollback walks the history back, one version per call, and says when there is none', async () => {
    const lc = fresh();
    await lc.bootstrap(v1, who('w'));
    const base = await lc.store.active();
    const a = (await lc.propose(variant(1), who('alice'))).version;
    const b = (await lc.propose(variant(2), who('alice'))).version;
    await lc.activate(a, who('alice'));
    await lc.activate(b, who('alice'));
    expect(Object.fromEntries((await lc.versions()).map((v) => [v.version, v.state]))).toEqual({
      [b]: 'active',
      [a]: 'rollback-target',
      [base!]: 'previous',
    });
    expect(await lc.rollback(who('carol'))).toMatchObject({ from: b, to: a });
    expect(await lc.rollback(who('carol'))).toMatchObject({ from: a, to: base });
    await expect(lc.rollback(who('carol'))).rejects.toMatchObject({
      code: 'MappingVersionNotFound',
    });
    expect(Object.fromEntries((await lc.versions()).map((v) => [v.version, v.state]))).toEqual({
      [b]: 'retired',
      [a]: 'retired',
      [base!]: 'active',
    });
  });

  it('prune removes only versions neither active nor in the rollback history, and records it', async () => {
    const lc = fresh();
    await lc.bootstrap(v1, who('w'));
    const base = (await lc.store.active())!;
    const kept = (await lc.propose(variant(1), who('alice'))).version;
    await lc.activate(kept, who('alice')); // base is now the rollback target
    const extra = [];
    for (let n = 2; n <= 4; n++) extra.push((await lc.propose(variant(n), who('alice'))).version);
    const wouldGo = await lc.prune(1, who('ops'), true);
    expect(wouldGo).toHaveLength(2);
    expect(await lc.store.files(wouldGo[0]!)).toBeDefined(); // dry run: nothing removed
    const removed = await lc.prune(1, who('ops'));
    expect(removed.sort()).toEqual([...wouldGo].sort());
    const left = (await lc.versions()).map((v) => v.version);
    expect(left).toContain(base);
    expect(left).toContain(kept);
    expect(left).toHaveLength(3);
    for (const v of removed) expect(await lc.store.files(v)).toBeUndefined();
    const last = (await lc.audit()).at(-1) as { removed?: string[] } | undefined;
    expect(last).toMatchObject({ action: 'prune', actor: 'ops' });
    expect([...(last?.removed ?? [])].sort()).toEqual(removed);
  });

  it('versions are named by id, unique prefix, "active" or "previous"', async () => {
    const lc = fresh();
    await lc.bootstrap(v1, who('w'));
    const base = (await lc.store.active())!;
    expect(await lc.resolve('active')).toBe(base);
    expect(await lc.resolve(base.slice(0, 6))).toBe(base);
    await expect(lc.resolve('previous')).rejects.toMatchObject({ code: 'MappingVersionNotFound' });
    await expect(lc.resolve('xyz')).rejects.toMatchObject({ code: 'InvalidArgument' });
    await expect(lc.resolve('0000000')).rejects.toMatchObject({ code: 'MappingVersionNotFound' });
    // Activating the active version changes nothing and records nothing.
    const before = (await lc.audit()).length;
    expect(await lc.activate(base, who('alice'))).toEqual({ outcome: 'unchanged', to: base });
    expect(await lc.audit()).toHaveLength(before);
  });
});
