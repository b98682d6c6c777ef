/**
 * The broker's pure limits: the MQTT frame scanner (MQTT 3.1.1 §2.2.3), the
 * per-device token bucket, and backpressure: metering over the high-water mark
 * at the measured drain rate, with a bound on every wait.
 */
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { Backpressure } from '../../broker/backpressure.js';
import { FrameScanner, guardFrames } from '../../broker/frame-guard.js';
import { IngestBatcher } from '../../broker/ingest-batcher.js';
import { DeviceThrottle } from '../../broker/rate-limits.js';
import type { IngestJobData, TelemetryMessage } from '../../src/queues.js';
import { createLogger } from '../../src/logger.js';

/** A PUBLISH-like packet: type byte, Remaining Length, then `length` bytes. */
function packet(length: number): Buffer {
  const len: number[] = [];
  let n = length;
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    len.push(b);
  } while (n > 0);
  return Buffer.concat([Buffer.from([0x30, ...len]), Buffer.alloc(length, 0x61)]);
}

describe('FrameScanner', () => {
  it('follows packets across arbitrary chunk boundaries', () => {
    const s = new FrameScanner(1000);
    const stream = Buffer.concat([packet(10), packet(0), packet(200), packet(1000)]);
    for (let i = 0; i < stream.length; i += 7)
      expect(s.scan(stream.subarray(i, i + 7))).toBeUndefined();
  });

  it('flags a packet over the limit from its header alone', () => {
    const s = new FrameScanner(1000);
    expect(s.scan(packet(10))).toBeUndefined();
    expect(s.scan(Buffer.from([0x30, 0xe9, 0x07]))).toBe('packet-too-large'); // 1001
  });

  it('flags a Remaining Length longer than four bytes', () => {
    expect(new FrameScanner(1e9).scan(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]))).toBe(
      'malformed-length',
    );
  });

  it('destroys the stream and hides the bytes from the reader', () => {
    const stream = new PassThrough();
    const seen: string[] = [];
    guardFrames(stream, 100, (v) => seen.push(v));
    stream.write(packet(50));
    expect(stream.read()).toEqual(packet(50));
    stream.write(packet(5000));
    expect(stream.read()).toBeNull();
    expect(seen).toEqual(['packet-too-large']);
    expect(stream.destroyed).toBe(true);
  });
});

describe('DeviceThrottle', () => {
  it('lets the burst through, then spaces messages at the rate', () => {
    const t = new DeviceThrottle({ ratePerSecond: 10, burst: 3 });
    expect([t.take('d', 0), t.take('d', 0), t.take('d', 0)]).toEqual([0, 0, 0]);
    expect(t.take('d', 0)).toBe(100);
    expect(t.take('d', 0)).toBe(200);
    expect(t.take('other', 0)).toBe(0);
    // Two seconds later the bucket is full again.
    expect(t.take('d', 2000)).toBe(0);
  });

  it('prunes devices whose bucket has refilled', () => {
    const t = new DeviceThrottle({ ratePerSecond: 10, burst: 3 });
    t.take('d', 0);
    t.prune(50);
    expect(t.size).toBe(1);
    t.prune(1000);
    expect(t.size).toBe(0);
  });
});

/** A Backpressure on a hand-moved clock, reading a backlog the test sets. */
function meteredSetup(options: { high?: number; low?: number; maxWaitMs?: number } = {}) {
  const clock = { now: 0, backlog: 0 };
  const bp = new Backpressure({
    high: options.high ?? 10,
    low: options.low ?? 4,
    pollMs: 60_000,
    maxWaitMs: options.maxWaitMs ?? 5000,
    backlog: () => Promise.resolve(clock.backlog),
    log: createLogger('silent'),
    now: () => clock.now,
  });
  return { bp, clock };
}

describe('Backpressure', () => {
  it('meters from the high mark until the backlog is back at the low mark', async () => {
    const { bp, clock } = meteredSetup();
    await bp.poll();
    expect(bp.permit(0)).toBe(0); // below the mark: at once
    clock.backlog = 10;
    clock.now = 1000;
    await bp.poll();
    expect(bp.metered).toBe(true);
    clock.backlog = 5; // under the high mark, above the low one: still metered
    clock.now = 2000;
    await bp.poll();
    expect(bp.metered).toBe(true);
    clock.backlog = 4;
    clock.now = 3000;
    await bp.poll();
    expect(bp.metered).toBe(false);
    expect(bp.permit(clock.now)).toBe(0);
  });

  it('admits jobs at the measured drain rate over the mark', async () => {
    const { bp, clock } = meteredSetup({ high: 10, low: 2 });
    clock.backlog = 30;
    await bp.poll();
    // The workers finish 4 jobs per second; this broker adds none.
    for (let s = 1; s <= 3; s++) {
      clock.now = s * 1000;
      clock.backlog -= 4;
      await bp.poll();
    }
    expect(bp.drainRate).toBeCloseTo(4, 5);
    expect(bp.admitRate).toBeCloseTo(4, 5);
    // With messages always waiting, jobs go 250 ms apart (the first at once:
    // a token has built up meanwhile; the bucket holds one job, no burst).
    const admittedAt: number[] = [];
    while (admittedAt.length < 5) {
      const wait = bp.permit(clock.now);
      if (wait === 0) admittedAt.push(clock.now);
      else clock.now += wait;
    }
    expect(admittedAt.slice(1).map((t, i) => t - admittedAt[i]!)).toEqual([250, 250, 250, 250]);
  });

  it('never lets a message wait longer than maxWaitMs, even with no worker draining', async () => {
    const { bp, clock } = meteredSetup({ maxWaitMs: 2000 });
    clock.backlog = 50;
    await bp.poll();
    clock.now = 1000;
    await bp.poll(); // nothing drained
    expect(bp.drainRate).toBe(0);
    expect(bp.admitRate).toBe(0.5); // the floor: one job per maxWaitMs
    // A message that has already waited 1.5 s goes after 0.5 s more, not 2 s.
    expect(bp.permit(clock.now - 1500)).toBe(500);
    clock.now += 500;
    expect(bp.permit(clock.now - 2000)).toBe(0);
  });

  it('counts its own writes between polls, as added (not drained) jobs', async () => {
    const { bp, clock } = meteredSetup({ high: 3, low: 1 });
    clock.backlog = 1;
    await bp.poll();
    bp.noteJobAdded();
    expect(bp.metered).toBe(false);
    bp.noteJobAdded();
    expect(bp.metered).toBe(true);
    clock.now = 1000;
    clock.backlog = 2; // 1 + 2 added − 2 now: one job drained in that second
    await bp.poll();
    expect(bp.drainRate).toBe(1);
    bp.stop();
    expect(bp.metered).toBe(false);
  });
});

describe('IngestBatcher behind the admission gate', () => {
  const message = (n: number): TelemetryMessage => ({
    id: `m${n}`,
    deviceId: 'd',
    topic: 'devices/d/telemetry',
    qos: 1,
    receivedAt: 0,
    payload: '{}',
    encoding: 'utf8',
  });

  it('holds job writes while the gate says wait, then writes every waiting message in one job', async () => {
    const jobs: IngestJobData[] = [];
    let wait = 40;
    const batcher = new IngestBatcher({
      sink: { add: (_n, data) => Promise.resolve(jobs.push(data)) },
      maxMessages: 500,
      gate: { permit: () => wait },
    });
    const acked: number[] = [];
    const all = Array.from({ length: 5 }, (_, i) =>
      batcher.enqueue(message(i)).then(() => acked.push(i)),
    );
    await new Promise((r) => setTimeout(r, 20));
    expect(jobs).toHaveLength(0);
    expect(acked).toEqual([]);
    wait = 0;
    await Promise.all(all);
    expect(jobs).toHaveLength(1);
    expect(jobs[0]!.messages.map((m) => m.id)).toEqual(['m0', 'm1', 'm2', 'm3', 'm4']);
  });

  it('writes at once when kicked (the gate opened)', async () => {
    const jobs: IngestJobData[] = [];
    let wait = 60_000;
    const batcher = new IngestBatcher({
      sink: { add: (_n, data) => Promise.resolve(jobs.push(data)) },
      maxMessages: 500,
      gate: { permit: () => wait },
    });
    const done = batcher.enqueue(message(1));
    await new Promise((r) => setTimeout(r, 10));
    wait = 0;
    batcher.kick();
    await done;
    expect(jobs).toHaveLength(1);
  });
});
