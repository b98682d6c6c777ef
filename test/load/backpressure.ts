/**
 * Backpressure under load: a script that prints figures, not a timed test.
 *
 *   FHIR_URL=http://127.0.0.1:8094/fhir npx tsx test/load/backpressure.ts \
 *     [--devices 20] [--window 10] [--hold 60] [--high 40] [--low 15]
 *
 * 1. Starts a broker process (iomt broker) with small water marks and no
 *    worker, so the backlog in Redis climbs to the high-water mark at once.
 * 2. Devices publish QoS 1 as fast as their in-flight window allows, for
 *    `--hold` seconds: the broker stops reading and withholds PUBACKs; every
 *    second the script prints the broker's RSS, the backlog and the acks.
 * 3. Starts a worker: the backlog drains under the low-water mark, the broker
 *    reads again, publishing goes on for a while, then stops.
 * 4. Checks that every acknowledged message is in HAPI exactly once, and
 *    prints the memory figures: RSS while held over the mark should stay flat.
 *
 * Uses the Redis at REDIS_URL (default 127.0.0.1:6379) under its own prefix.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { backlogJobs, createQueues, createRedis } from '../../src/queue-runtime.js';
import { uniqueId } from '../support/harness.js';
import { Fleet } from '../chaos/support/fleet.js';
import {
  dropPrefix,
  iomtEnv,
  ready,
  sleep,
  spawnIomt,
  stopAll,
  type IomtProcess,
} from '../chaos/support/processes.js';
import { waitForDrained, waitForFhir } from '../chaos/support/verify.js';

const { values: args } = parseArgs({
  options: {
    devices: { type: 'string', default: '20' },
    window: { type: 'string', default: '10' },
    hold: { type: 'string', default: '60' },
    after: { type: 'string', default: '15' },
    high: { type: 'string', default: '40' },
    low: { type: 'string', default: '15' },
  },
});
const DEVICES = Number(args.devices);
const WINDOW = Number(args.window);
const HOLD_S = Number(args.hold);
const AFTER_S = Number(args.after);
const fhirUrl = process.env.FHIR_URL ?? 'http://127.0.0.1:8090/fhir';
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = uniqueId('load-bp');

function rssMiB(p: IomtProcess): number {
  const status = readFileSync(`/proc/${p.child.pid}/status`, 'utf8');
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return kb / 1024;
}

interface Sample {
  t: number;
  phase: string;
  rss: number;
  backlog: number;
  acked: number;
  paused: boolean;
}

async function main(): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'iomt-load-'));
  const base = { redisUrl, prefix, fhirUrl, chdbPath: path.join(dir, 'chdb') };
  const marks = {
    BROKER_BACKLOG_HIGH: args.high,
    BROKER_BACKLOG_LOW: args.low,
    BROKER_BACKLOG_POLL_MS: '200',
    MQTT_DEVICE_MAX_RATE: '100000',
    MQTT_DEVICE_BURST: '100000',
  };
  const redis = createRedis(redisUrl);
  const queues = createQueues(redis, prefix);
  const fleet = await Fleet.register(redisUrl, prefix, DEVICES);
  let worker: IomtProcess | undefined;
  try {
    const broker = spawnIomt('broker', iomtEnv({ ...base, extra: marks }), 'broker');
    const port = await ready(broker, 'broker');
    await fleet.connect([`mqtt://127.0.0.1:${port}`]);

    // Publishing: WINDOW messages in flight per device, as fast as acks come back.
    let publishing = true;
    const loops: Promise<void>[] = [];
    for (let lane = 0; lane < WINDOW; lane++) {
      loops.push(
        (async () => {
          while (publishing) {
            const before = fleet.sent.length;
            await fleet.publish(DEVICES, 0);
            const mine = fleet.sent.slice(before);
            while (publishing && mine.some((s) => !s.acked)) await sleep(20);
          }
        })(),
      );
    }

    const samples: Sample[] = [];
    const started = Date.now();
    let phase = 'held (no worker)';
    const sampler = setInterval(() => {
      void backlogJobs(queues).then((backlog) => {
        const s: Sample = {
          t: Math.round((Date.now() - started) / 1000),
          phase,
          rss: rssMiB(broker),
          backlog,
          acked: fleet.acked.length,
          paused:
            broker.logs.filter((l) => l.event === 'backpressure-on').length >
            broker.logs.filter((l) => l.event === 'backpressure-off').length,
        };
        samples.push(s);
        process.stdout.write(
          `${String(s.t).padStart(4)} s  ${s.phase.padEnd(18)} rss ${s.rss.toFixed(1).padStart(6)} MiB  backlog ${String(s.backlog).padStart(5)} jobs  acked ${String(s.acked).padStart(6)}  ${s.paused ? 'PAUSED' : 'reading'}\n`,
        );
      });
    }, 1000);

    await sleep(HOLD_S * 1000);
    phase = 'draining (worker)';
    worker = spawnIomt('worker', iomtEnv(base), 'worker');
    await ready(worker, 'worker');
    await sleep(AFTER_S * 1000);
    publishing = false;
    phase = 'stopped publishing';
    await Promise.all(loops);
    await fleet.allAcked(120_000);
    await waitForDrained(redisUrl, prefix, 300_000);
    clearInterval(sampler);

    await waitForFhir(fhirUrl, fleet.devices, () => fleet.acked, 300_000);
    const held = samples.filter((s) => s.phase.startsWith('held') && s.paused);
    const rss = held.map((s) => s.rss);
    const settled = held.filter((s) => s.t >= 15).map((s) => s.rss);
    const pauses = broker.logs.filter((l) => l.event === 'backpressure-on').length;
    process.stdout.write(
      [
        '',
        `devices ${DEVICES}, in-flight window ${WINDOW}, marks high ${args.high} / low ${args.low} jobs`,
        `published ${fleet.sent.length}, acknowledged ${fleet.acked.length}, in HAPI exactly once: ${fleet.acked.length} (checked by identifier)`,
        `broker paused ${pauses} time(s); seconds held over the high mark with no worker: ${held.length}`,
        held.length > 0
          ? `broker RSS while held: min ${Math.min(...rss).toFixed(1)} MiB, max ${Math.max(...rss).toFixed(1)} MiB, first ${rss[0]!.toFixed(1)}, last ${rss[rss.length - 1]!.toFixed(1)}`
          : 'the backlog never reached the high mark: raise --devices or --window',
        // The first seconds include the garbage of the burst that filled the backlog.
        settled.length > 1
          ? `broker RSS held, after the first 15 s: min ${Math.min(...settled).toFixed(1)} MiB, max ${Math.max(...settled).toFixed(1)} MiB over ${settled.length} s`
          : '',
        `acks while held: ${held.length > 1 ? held[held.length - 1]!.acked - held[0]!.acked : 0} (the backlog stays at the mark: acks wait)`,
        '',
      ].join('\n'),
    );
  } finally {
    await fleet.close();
    await stopAll();
    await queues.close();
    redis.disconnect();
    await dropPrefix(redisUrl, prefix);
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
