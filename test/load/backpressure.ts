/**
 * Backpressure under load: a script that prints figures, not a timed test.
 *
 *   FHIR_URL=http://127.0.0.1:8094/fhir npx tsx test/load/backpressure.ts \
 *     [--devices 20] [--window 10] [--hold 60] [--after 15] [--high 40] [--low 15] \
 *     [--max-wait 5000]
 *
 * 1. Starts a broker process (iomt broker) with small water marks and no
 *    worker, so the backlog in Redis climbs to the high-water mark at once.
 * 2. Devices publish QoS 1 as fast as their in-flight window allows, for
 *    `--hold` seconds: with nothing draining, the broker admits one job per
 *    `--max-wait` ms (BROKER_BACKPRESSURE_MAX_WAIT_MS), so acknowledgements
 *    slow down and never stop; every second the script prints the broker's RSS,
 *    the backlog and the acks.
 * 3. Starts a worker: the broker measures the drain and admits at its rate;
 *    the backlog falls under the low-water mark, publishing goes on for a
 *    while, then stops.
 * 4. Prints the PUBACK latency (publish → PUBACK, every message) over the high
 *    mark and overall, and the longest any device with messages in flight went
 *    without a PUBACK; fails if that silence exceeds `--max-wait` + 1 s, if the
 *    latency's p99 exceeds 2 × `--max-wait` + 1 s (see SILENCE_BOUND_MS), or if
 *    any acknowledged message is missing from HAPI or there twice.
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
import { Fleet, type Sent } from '../chaos/support/fleet.js';
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
    'max-wait': { type: 'string', default: '5000' },
  },
});
const DEVICES = Number(args.devices);
const WINDOW = Number(args.window);
const HOLD_S = Number(args.hold);
const AFTER_S = Number(args.after);
const MAX_WAIT_MS = Number(args['max-wait']);
/**
 * The bounds. The broker holds no PUBLISH longer than MAX_WAIT_MS, so a device
 * with messages in flight hears a PUBACK at least every MAX_WAIT_MS (its
 * longest silence). One message's PUBACK can take longer: the broker reads a
 * connection's next packets only once the previous ones are acknowledged, so a
 * message sent behind others of its device waits for their admission first —
 * one earlier read with this script's window, hence 2 × MAX_WAIT_MS. Each bound
 * has 1 s on top for the Redis write and this script's 10 ms sampling.
 */
const SILENCE_BOUND_MS = MAX_WAIT_MS + 1000;
const LATENCY_BOUND_MS = 2 * MAX_WAIT_MS + 1000;
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
  metered: boolean;
}

/** One message's publish and PUBACK times (ms since the start), and the phase it was sent in. */
interface Timing {
  readonly sent: Sent;
  readonly sentAt: number;
  readonly phase: string;
  /** Over the high-water mark when sent. */
  readonly metered: boolean;
  ackedAt?: number;
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/**
 * The longest time any device with a message in flight went without a PUBACK:
 * for each message, the longest gap between its publish, the device's PUBACKs
 * meanwhile, and its own PUBACK.
 */
function longestSilence(ts: readonly Timing[]): number {
  const byDevice = new Map<string, Timing[]>();
  for (const t of ts) {
    const list = byDevice.get(t.sent.device.deviceId) ?? [];
    list.push(t);
    byDevice.set(t.sent.device.deviceId, list);
  }
  let longest = 0;
  for (const list of byDevice.values()) {
    const acks = list.map((t) => t.ackedAt!).sort((a, b) => a - b);
    for (const t of list) {
      let last = t.sentAt;
      for (const a of acks) {
        if (a <= t.sentAt) continue;
        if (a > t.ackedAt!) break;
        longest = Math.max(longest, a - last);
        last = a;
      }
    }
  }
  return longest;
}

function latencies(ts: readonly Timing[]): string {
  const ms = ts.map((t) => t.ackedAt! - t.sentAt).sort((a, b) => a - b);
  return `p50 ${percentile(ms, 50)} ms, p99 ${percentile(ms, 99)} ms, max ${ms[ms.length - 1] ?? NaN} ms over ${ms.length} acks`;
}

async function main(): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'iomt-load-'));
  const base = { redisUrl, prefix, fhirUrl, chdbPath: path.join(dir, 'chdb') };
  const marks = {
    BROKER_BACKLOG_HIGH: args.high,
    BROKER_BACKLOG_LOW: args.low,
    BROKER_BACKLOG_POLL_MS: '200',
    BROKER_BACKPRESSURE_MAX_WAIT_MS: String(MAX_WAIT_MS),
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

    const started = Date.now();
    let phase = 'held (no worker)';
    const metered = () =>
      broker.logs.filter((l) => l.event === 'backpressure-on').length >
      broker.logs.filter((l) => l.event === 'backpressure-off').length;
    // Publishing: WINDOW messages in flight per device, as fast as acks come
    // back; each message's PUBACK time is sampled every 10 ms.
    const timings: Timing[] = [];
    let publishing = true;
    let stoppedAt = 0;
    const loops: Promise<void>[] = [];
    for (let lane = 0; lane < WINDOW; lane++) {
      loops.push(
        (async () => {
          while (publishing) {
            const before = fleet.sent.length;
            const sentAt = Date.now() - started;
            const state = { phase, metered: metered() };
            // publish() hands every message to the clients before it returns a
            // promise; the slice is taken before awaiting it, while no other
            // lane can have added messages.
            const published = fleet.publish(DEVICES, 0);
            const mine: Timing[] = fleet.sent
              .slice(before)
              .map((sent) => ({ sent, sentAt, ...state }));
            await published;
            timings.push(...mine);
            for (;;) {
              const now = Date.now() - started;
              for (const t of mine) if (t.ackedAt === undefined && t.sent.acked) t.ackedAt = now;
              if (mine.every((t) => t.ackedAt !== undefined)) break;
              // After publishing stops, the last acks get two minutes (then allAcked fails).
              if (!publishing && Date.now() - stoppedAt > 120_000) break;
              await sleep(10);
            }
          }
        })(),
      );
    }

    const samples: Sample[] = [];
    const sampler = setInterval(() => {
      void backlogJobs(queues).then((backlog) => {
        const s: Sample = {
          t: Math.round((Date.now() - started) / 1000),
          phase,
          rss: rssMiB(broker),
          backlog,
          acked: fleet.acked.length,
          metered: metered(),
        };
        samples.push(s);
        process.stdout.write(
          `${String(s.t).padStart(4)} s  ${s.phase.padEnd(18)} rss ${s.rss.toFixed(1).padStart(6)} MiB  backlog ${String(s.backlog).padStart(5)} jobs  acked ${String(s.acked).padStart(6)}  ${s.metered ? 'METERED' : 'open'}\n`,
        );
      });
    }, 1000);

    await sleep(HOLD_S * 1000);
    phase = 'draining (worker)';
    worker = spawnIomt('worker', iomtEnv(base), 'worker');
    await ready(worker, 'worker');
    await sleep(AFTER_S * 1000);
    publishing = false;
    stoppedAt = Date.now();
    phase = 'stopped publishing';
    await Promise.all(loops);
    await fleet.allAcked(120_000);
    await waitForDrained(redisUrl, prefix, 300_000);
    clearInterval(sampler);

    await waitForFhir(fhirUrl, fleet.devices, () => fleet.acked, 300_000);
    const held = samples.filter((s) => s.phase.startsWith('held') && s.metered);
    const rss = held.map((s) => s.rss);
    const settled = held.filter((s) => s.t >= 15).map((s) => s.rss);
    const meterings = broker.logs.filter((l) => l.event === 'backpressure-on').length;
    const acked = timings.filter((t) => t.ackedAt !== undefined);
    const overMark = acked.filter((t) => t.metered);
    const noWorker = overMark.filter((t) => t.phase.startsWith('held'));
    const ms = acked.map((t) => t.ackedAt! - t.sentAt).sort((a, b) => a - b);
    const heldAcks = held.length > 1 ? held[held.length - 1]!.acked - held[0]!.acked : 0;
    const silence = longestSilence(acked);
    process.stdout.write(
      [
        '',
        `devices ${DEVICES}, in-flight window ${WINDOW}, marks high ${args.high} / low ${args.low} jobs, BROKER_BACKPRESSURE_MAX_WAIT_MS ${MAX_WAIT_MS}`,
        `published ${fleet.sent.length}, acknowledged ${fleet.acked.length}, in HAPI exactly once: ${fleet.acked.length} (checked by identifier)`,
        `broker began metering ${meterings} time(s); seconds over the high mark with no worker: ${held.length}`,
        held.length > 0
          ? `broker RSS over the mark: min ${Math.min(...rss).toFixed(1)} MiB, max ${Math.max(...rss).toFixed(1)} MiB, first ${rss[0]!.toFixed(1)}, last ${rss[rss.length - 1]!.toFixed(1)}`
          : 'the backlog never reached the high mark: raise --devices or --window',
        // The first seconds include the garbage of the burst that filled the backlog.
        settled.length > 1
          ? `broker RSS over the mark, after the first 15 s: min ${Math.min(...settled).toFixed(1)} MiB, max ${Math.max(...settled).toFixed(1)} MiB over ${settled.length} s`
          : '',
        `acks while over the mark with no worker: ${heldAcks} (slowed, not stopped)`,
        `PUBACK latency, sent over the high mark with no worker: ${latencies(noWorker)}`,
        `PUBACK latency, sent over the high mark (any phase):  ${latencies(overMark)}`,
        `PUBACK latency, all messages:                          ${latencies(acked)}`,
        `longest a device with messages in flight went without a PUBACK: ${silence} ms`,
        `bounds: silence ${SILENCE_BOUND_MS} ms (BROKER_BACKPRESSURE_MAX_WAIT_MS + 1 s), PUBACK latency p99 ${LATENCY_BOUND_MS} ms (2 × BROKER_BACKPRESSURE_MAX_WAIT_MS + 1 s)`,
        '',
      ].join('\n'),
    );
    if (acked.length !== timings.length)
      throw new Error(`${timings.length - acked.length} messages never acknowledged`);
    if (overMark.length === 0)
      throw new Error('no message was sent over the high mark: raise --devices or --window');
    if (silence > SILENCE_BOUND_MS)
      throw new Error(
        `a device went ${silence} ms without a PUBACK (bound ${SILENCE_BOUND_MS} ms)`,
      );
    if (percentile(ms, 99) > LATENCY_BOUND_MS)
      throw new Error(`PUBACK latency p99 over ${LATENCY_BOUND_MS} ms: ${latencies(acked)}`);
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
