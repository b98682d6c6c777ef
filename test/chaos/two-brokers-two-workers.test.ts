/**
 * Scale-out: two brokers and two workers on one Redis, devices spread over the
 * brokers, both workers consuming the same queues. Every message is delivered,
 * none twice — in HAPI (by identifier) and in ClickHouse (with FINAL) — and
 * both brokers and both workers did part of the work.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { uniqueId } from '../support/harness.js';
import { Fleet } from './support/fleet.js';
import { dropPrefix, startTwoByTwo, stopAll } from './support/processes.js';
import { expectOnceInClickHouse, expectOnceInFhirAndDrained } from './support/verify.js';

const fhirUrl = inject('fhirUrl');
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = uniqueId('chaos-scale');
let dir: string;
let fleet: Fleet | undefined;

afterAll(async () => {
  await fleet?.close();
  await stopAll();
  await dropPrefix(redisUrl, prefix);
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('two brokers and two workers on one Redis', () => {
  it('deliver everything, nothing twice', async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'iomt-chaos-scale-'));
    const base = { redisUrl, prefix, fhirUrl, chdbPath: path.join(dir, 'chdb') };

    // 1. W1: normalize + FHIR. W2: normalize + FHIR + the ClickHouse mirror (one owner).
    const {
      workers: [w1, w2],
      brokers: [b1, b2],
      urls,
    } = await startTwoByTwo(base);

    // 2. Eight devices, alternating between the brokers.
    fleet = await Fleet.register(redisUrl, prefix, 8);
    await fleet.connect(urls);
    await fleet.publish(500, 2);
    await fleet.allAcked(60_000);
    expect(fleet.acked).toHaveLength(500);

    // 3. End state, and who did the work.
    await expectOnceInFhirAndDrained(fhirUrl, redisUrl, prefix, fleet);
    for (const b of [b1, b2]) expect(b.logs.filter((l) => l.event === 'connected')).toHaveLength(4);
    for (const w of [w1, w2])
      expect(w.logs.filter((l) => l.event === 'normalized').length).toBeGreaterThan(0);

    await Promise.all([b1.stop(), b2.stop(), w1.stop(), w2.stop()]);
    await expectOnceInClickHouse(base.chdbPath, fleet.acked, 500);
  }, 480_000);
});
