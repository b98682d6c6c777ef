/**
 * The broker's pure limits: the MQTT frame scanner (MQTT 3.1.1 §2.2.3), the
 * failed-CONNECT limit per address, the per-device token bucket, and the two
 * water marks of backpressure.
 */
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { Backpressure } from '../../broker/backpressure.js';
import { FrameScanner, guardFrames } from '../../broker/frame-guard.js';
import { DeviceThrottle, FailedAuthLimiter } from '../../broker/rate-limits.js';
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

describe('FailedAuthLimiter', () => {
  it('blocks an address after maxFailures within the window, until the window ends', () => {
    const l = new FailedAuthLimiter({ maxFailures: 3, windowMs: 1000 });
    for (let i = 0; i < 3; i++) {
      expect(l.blocked('10.0.0.1', i)).toBe(false);
      l.recordFailure('10.0.0.1', i);
    }
    expect(l.blocked('10.0.0.1', 10)).toBe(true);
    expect(l.blocked('10.0.0.2', 10)).toBe(false);
    expect(l.blocked('10.0.0.1', 1000)).toBe(false);
  });

  it('forgets the oldest address when full', () => {
    const l = new FailedAuthLimiter({ maxFailures: 1, windowMs: 60_000, maxAddresses: 2 });
    l.recordFailure('a', 0);
    l.recordFailure('b', 0);
    l.recordFailure('c', 0);
    expect([l.blocked('a', 1), l.blocked('b', 1), l.blocked('c', 1)]).toEqual([false, true, true]);
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

describe('Backpressure', () => {
  it('holds PUBLISHes from the high mark until the backlog is at the low mark', async () => {
    let backlog = 0;
    const bp = new Backpressure({
      high: 10,
      low: 4,
      pollMs: 60_000,
      backlog: () => Promise.resolve(backlog),
      log: createLogger('silent'),
    });
    await bp.poll();
    await bp.admit(); // below the mark: at once
    backlog = 10;
    await bp.poll();
    expect(bp.paused).toBe(true);
    let released = false;
    const held = bp.admit().then(() => (released = true));
    backlog = 5; // under the high mark, above the low one: still held
    await bp.poll();
    await Promise.resolve();
    expect(released).toBe(false);
    expect(bp.held).toBe(1);
    backlog = 4;
    await bp.poll();
    await held;
    expect(bp.paused).toBe(false);
  });

  it('counts its own writes between polls', async () => {
    const bp = new Backpressure({
      high: 3,
      low: 1,
      pollMs: 60_000,
      backlog: () => Promise.resolve(1),
      log: createLogger('silent'),
    });
    await bp.poll();
    bp.noteJobAdded();
    expect(bp.paused).toBe(false);
    bp.noteJobAdded();
    expect(bp.paused).toBe(true);
    bp.stop();
    expect(bp.paused).toBe(false);
  });
});
