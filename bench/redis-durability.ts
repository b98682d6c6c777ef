/**
 * What "acknowledged means stored on a replica" costs: the broker's ingest
 * sink (src/queue-runtime.ts ingestSink) writing ingest jobs to a real Redis
 * master with one replica (redis-server, started here), with and without
 * REDIS_WAIT_REPLICAS=1 and REDIS_WAIT_AOF, beside the baseline: BullMQ's own
 * Queue.add on the same master, which is all the broker does by default.
 * A benchmark script that prints figures, not a timed test.
 *
 *   npx tsx bench/redis-durability.ts [--seconds 5] [--messages 50] [--in-flight 2]
 *
 * A job holds --messages readings (the broker's group commit: 1,000 devices at
 * 1 msg/s fill jobs of about that size), device timestamps relative to now;
 * --in-flight jobs are written at once, as the broker does (maxInFlight 2).
 */
import { parseArgs } from 'node:util';
import { createQueues, ingestSink } from '../src/queue-runtime.js';
import { checkWaitAof, connect } from '../src/redis.js';
import type { IngestJobData, TelemetryMessage } from '../src/queues.js';
import { nodeCall, startRedisSentinel } from '../test/support/redis-topologies.js';

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    messages: { type: 'string', default: '50' },
    'in-flight': { type: 'string', default: '2' },
  },
});
const SECONDS = Number(args.seconds);
const MESSAGES = Number(args.messages);
const IN_FLIGHT = Number(args['in-flight']);

function job(n: number): IngestJobData {
  const now = Date.now();
  const messages: TelemetryMessage[] = Array.from({ length: MESSAGES }, (_, i) => ({
    id: `bench-${n}-${i}`,
    deviceId: `bench-dev-${i}`,
    topic: `devices/bench-dev-${i}/telemetry`,
    qos: 1,
    receivedAt: now,
    payload: JSON.stringify({
      timestamp: new Date(now - 1000).toISOString(),
      heartRate: 60 + (i % 40),
    }),
    encoding: 'utf8',
  }));
  return { traceId: `bench-${n}`, messages };
}

function pct(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

async function measure(
  add: (n: number) => Promise<unknown>,
): Promise<{ jobsPerS: number; p50: number; p99: number }> {
  const latencies: number[] = [];
  const end = Date.now() + SECONDS * 1000;
  let n = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (Date.now() < end) {
        const t = performance.now();
        await add(n++);
        latencies.push(performance.now() - t);
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  return { jobsPerS: latencies.length / elapsed, p50: pct(latencies, 50), p99: pct(latencies, 99) };
}

const group = await startRedisSentinel(1);
const redis = connect(group.url, { maxRetriesPerRequest: 3 });
try {
  await nodeCall(await group.master(), 'CONFIG', 'SET', 'appendonly', 'yes');
  await nodeCall(await group.master(), 'CONFIG', 'SET', 'appendfsync', 'everysec');
  const queues = createQueues(redis, 'bench-durability');
  const plain = (n: number) => queues.ingest.add('ingest', job(n));
  const rows: [string, Awaited<ReturnType<typeof measure>>][] = [];
  console.log(
    `ingest jobs of ${MESSAGES} messages, ${IN_FLIGHT} in flight, ${SECONDS} s each; master + 1 replica on loopback`,
  );
  rows.push(['baseline: BullMQ Queue.add (broker default)', await measure(plain)]);
  const replicas = ingestSink(queues.ingest, redis, {
    waitReplicas: 1,
    waitAof: false,
    waitTimeoutMs: 2000,
  });
  rows.push(['REDIS_WAIT_REPLICAS=1', await measure((n) => replicas.add('ingest', job(n)))]);
  const aof = ingestSink(queues.ingest, redis, {
    waitReplicas: 0,
    waitAof: true,
    waitTimeoutMs: 2000,
  });
  try {
    await checkWaitAof(redis);
    rows.push(['REDIS_WAIT_AOF=true', await measure((n) => aof.add('ingest', job(n)))]);
  } catch (err) {
    console.log(`REDIS_WAIT_AOF not measured: ${(err as Error).message}`);
  }
  const base = rows[0]![1];
  for (const [name, r] of rows) {
    console.log(
      `${name.padEnd(46)} ${r.jobsPerS.toFixed(0).padStart(6)} jobs/s (${(r.jobsPerS * MESSAGES).toFixed(0).padStart(7)} msg/s, ${(r.jobsPerS / base.jobsPerS).toFixed(2)}x)  p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms`,
    );
  }
  await queues.ingest.obliterate({ force: true });
  await queues.close();
} finally {
  redis.disconnect();
  await group.stop();
}
