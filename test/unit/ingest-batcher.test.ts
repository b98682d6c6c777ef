/**
 * Group commit: many messages share one durable job write; a message is
 * acknowledged only once its job is stored; a failed write rejects exactly the
 * messages it held. The sink is an in-memory stand-in for Redis.
 */
import { describe, expect, it } from 'vitest';
import { IngestBatcher, type JobSink } from '../../broker/ingest-batcher.js';
import type { IngestJobData, TelemetryMessage } from '../../src/queues.js';

function message(i: number): TelemetryMessage {
  return {
    id: `m${i}`,
    deviceId: 'd',
    topic: 'devices/d/telemetry',
    qos: 1,
    receivedAt: i,
    payload: '{}',
    encoding: 'utf8',
  };
}

class ControlledSink implements JobSink {
  readonly jobs: IngestJobData[] = [];
  readonly pending: { resolve: () => void; reject: (e: Error) => void }[] = [];
  add(_name: string, data: IngestJobData): Promise<unknown> {
    this.jobs.push(data);
    return new Promise<void>((resolve, reject) => this.pending.push({ resolve, reject }));
  }
}

const tick = () => new Promise((r) => setImmediate(r));

describe('IngestBatcher', () => {
  it('puts messages arriving together into one job, resolved only when stored', async () => {
    const sink = new ControlledSink();
    const b = new IngestBatcher({ sink, maxMessages: 100, maxInFlight: 1 });
    let acked = 0;
    const all = Array.from({ length: 10 }, (_, i) => b.enqueue(message(i)).then(() => acked++));
    await tick();
    expect(sink.jobs).toHaveLength(1);
    expect(sink.jobs[0]!.messages.map((m) => m.id)).toEqual(
      Array.from({ length: 10 }, (_, i) => `m${i}`),
    );
    await tick();
    expect(acked).toBe(0); // not durable yet: no acknowledgement
    sink.pending[0]!.resolve();
    await Promise.all(all);
    expect(acked).toBe(10);
  });

  it('gathers messages arriving during a write into the next job, up to maxMessages', async () => {
    const sink = new ControlledSink();
    const b = new IngestBatcher({ sink, maxMessages: 3, maxInFlight: 1 });
    const first = b.enqueue(message(0));
    await tick();
    const rest = Array.from({ length: 5 }, (_, i) => b.enqueue(message(i + 1)));
    await tick();
    expect(sink.jobs).toHaveLength(1); // one write in flight
    sink.pending[0]!.resolve();
    await first;
    await tick();
    expect(sink.jobs.map((j) => j.messages.length)).toEqual([1, 3]);
    sink.pending[1]!.resolve();
    await tick();
    await tick();
    expect(sink.jobs.map((j) => j.messages.length)).toEqual([1, 3, 2]);
    sink.pending[2]!.resolve();
    await Promise.all(rest);
    expect(b.backlog).toBe(0);
  });

  it('rejects the messages of a failed write with QueueUnavailable, and only those', async () => {
    const sink = new ControlledSink();
    const b = new IngestBatcher({ sink, maxMessages: 2, maxInFlight: 2 });
    const results = Array.from({ length: 4 }, (_, i) =>
      b.enqueue(message(i)).then(
        () => 'ok',
        (e: { code: string }) => e.code,
      ),
    );
    await tick();
    expect(sink.jobs).toHaveLength(2);
    sink.pending[0]!.reject(new Error('connection lost'));
    sink.pending[1]!.resolve();
    expect(await Promise.all(results)).toEqual([
      'QueueUnavailable',
      'QueueUnavailable',
      'ok',
      'ok',
    ]);
    await b.drain();
  });
});
