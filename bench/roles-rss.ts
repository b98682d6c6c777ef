/**
 * Resident memory of the production roles as separate processes (`iomt
 * broker`, `iomt worker`), the load generator excluded: this process only
 * enrols devices and publishes. Samples VmRSS (and the worker's chdb share, as
 * far as /proc shows it: RssFile+RssShmem vs RssAnon) every 5 s for the run.
 *
 *   FHIR_URL=http://127.0.0.1:8095/fhir npx tsx bench/roles-rss.ts \
 *     [--seconds 300] [--devices 20] [--rate 20] [--stages normalize,fhir,analytics] \
 *     [--node-flags="--max-semi-space-size=2"] [--gc-log]
 *
 * --rate is messages/s in total (3 Observations each). With the analytics
 * stage the worker runs the embedded ClickHouse engine (chdb) in its process;
 * `--stages normalize,fhir` shows the worker without it (in production with
 * CLICKHOUSE_URL the mirror writes to a server and chdb is not loaded).
 * --node-flags go on the roles' node command line (V8 heap flags); glibc malloc
 * tunables (MALLOC_*) in this process's environment reach them too. The
 * summary gives each role's CPU seconds and the sum of the two maxima against
 * the target of issue 12 (300 MB, server-mode worker). Build first (`npm run
 * build`): the roles then run compiled, as in the image; from source (tsx) they
 * hold more (329 MB against 280 on 5 Dec 2026, the same run otherwise).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import mqtt, { type MqttClient } from 'mqtt';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/logger.js';
import { startPipeline } from '../src/pipeline.js';
import { freePort } from '../test/support/free-port.js';
import { procCpuSeconds } from './proc-stat.js';
import { forgetKeys } from './redis-keys.js';

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '300' },
    devices: { type: 'string', default: '20' },
    rate: { type: 'string', default: '20' },
    stages: { type: 'string', default: 'normalize,fhir,analytics' },
    'node-flags': { type: 'string', default: '' },
    // Each role prints its live heap after major GCs every minute (bench/gc-log.mjs).
    'gc-log': { type: 'boolean', default: false },
  },
});
const SECONDS = Number(args.seconds);
const DEVICES = Number(args.devices);
const RATE = Number(args.rate);
const TARGET_MB = 300;
const run = Date.now().toString(36);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** VmRSS, RssAnon, RssFile (kB → MB) of a process. */
function mem(pid: number) {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(s)?.[1] ?? NaN) / 1024;
  return { rss: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile') + kb('RssShmem') };
}

function role(name: string, env: NodeJS.ProcessEnv): ChildProcess {
  const flags = args['node-flags'].split(' ').filter(Boolean);
  if (args['gc-log']) flags.push('--import', './bench/gc-log.mjs');
  return spawn(process.execPath, [...flags, 'bin/iomt.mjs', name], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, ...env, LOG_LEVEL: 'warn' },
  });
}

async function listening(port: number): Promise<void> {
  for (let i = 0; i < 600; i++) {
    const open = await new Promise<boolean>((resolve) => {
      const s = createConnection(port, '127.0.0.1');
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    });
    if (open) return;
    await sleep(100);
  }
  throw new Error(`nothing listens on ${port} after 60 s`);
}

async function main(): Promise<void> {
  const chdb = await mkdtemp(path.join(tmpdir(), 'iomt-rss-'));
  const prefix = `rss-${run}`;
  const config = loadConfig(process.env, {
    redis: { prefix },
    mqtt: { host: '127.0.0.1', port: 0 },
    admin: { port: 0 },
    clickhouse: { url: undefined, dataPath: chdb },
  });
  const control = await startPipeline(config, [], createLogger('warn'));
  const port = await freePort();
  const env = {
    QUEUE_PREFIX: prefix,
    MQTT_HOST: '127.0.0.1',
    MQTT_PORT: String(port),
    CHDB_PATH: chdb,
    WORKER_STAGES: args.stages,
    FHIR_URL: config.fhir.url,
  };
  const broker = role('broker', env);
  const worker = role('worker', env);
  const clients: MqttClient[] = [];
  try {
    await listening(port);
    const ids = Array.from({ length: DEVICES }, (_, d) => `rss-${run}-d${d}`);
    for (const id of ids) {
      const { secret } = await control.devices.add(id, {
        actor: 'bench',
        source: 'cli',
        patient: `${id}-p`,
        newPatient: true,
        at: Date.now() - 2 * 24 * 3600_000,
      });
      clients.push(
        await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
          username: id,
          password: secret,
          clientId: id,
          reconnectPeriod: 0,
        }),
      );
    }
    // How the roles were started: compiled or from source (bin/iomt.mjs runs dist/ when
    // built, as the image does; else tsx, whose transpiling holds more memory), V8 flags
    // and glibc malloc tunables (docs/performance.md).
    const compiled =
      existsSync('dist/src/cli/main.js') && process.env.IOMT_FROM_SOURCE !== '1'
        ? 'compiled dist/'
        : "TypeScript through tsx: run `npm run build` for the image's figures";
    const launcher = [
      compiled,
      ...(args['node-flags'] ? [`node ${args['node-flags']}`] : []),
      ...Object.entries(process.env)
        .filter(([k, v]) => (k === 'NODE_OPTIONS' || k.startsWith('MALLOC_')) && v)
        .map(([k, v]) => `${k}=${v}`),
    ]
      .map((l) => `; ${l}`)
      .join('');
    console.log(
      `roles-rss: broker pid ${broker.pid}, worker pid ${worker.pid} (stages ${args.stages}${launcher}); ${DEVICES} devices, ${RATE} msg/s for ${SECONDS} s; load average ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`,
    );
    let t = Date.now() - 3600_000;
    let sent = 0;
    const started = Date.now();
    const samples: { at: number; b: ReturnType<typeof mem>; w: ReturnType<typeof mem> }[] = [];
    const sampler = setInterval(() => {
      samples.push({ at: (Date.now() - started) / 1000, b: mem(broker.pid!), w: mem(worker.pid!) });
    }, 5000);
    while (Date.now() - started < SECONDS * 1000) {
      const c = clients[sent % DEVICES]!;
      const payload = JSON.stringify({
        timestamp: new Date((t += 10)).toISOString(),
        heartRate: 60 + (sent % 40),
        spo2: 94 + (sent % 6),
        respiratoryRate: 12 + (sent % 8),
      });
      c.publish(`devices/${c.options.clientId ?? ''}/telemetry`, payload, { qos: 1 });
      sent++;
      await sleep(Math.max(0, started + (sent * 1000) / RATE - Date.now()));
    }
    clearInterval(sampler);
    const cpu = { b: procCpuSeconds(broker.pid!), w: procCpuSeconds(worker.pid!) };
    const f = (n: number) => n.toFixed(0);
    console.log('t (s)  broker RSS (anon)   worker RSS (anon / file+shmem)');
    for (const s of samples.filter((_, i) => i % 6 === 0 || i === samples.length - 1))
      console.log(
        `${f(s.at).padStart(5)}  ${f(s.b.rss).padStart(5)} MB (${f(s.b.anon)})   ${f(s.w.rss).padStart(5)} MB (${f(s.w.anon)} / ${f(s.w.file)})`,
      );
    const max = (k: 'b' | 'w') => Math.max(...samples.map((s) => s[k].rss));
    const last = samples.at(-1)!;
    const sum = max('b') + max('w');
    console.log(
      `broker: first ${f(samples[0]!.b.rss)} MB, max ${f(max('b'))} MB, last ${f(last.b.rss)} MB, CPU ${cpu.b.toFixed(1)} s; worker: first ${f(samples[0]!.w.rss)} MB, max ${f(max('w'))} MB, last ${f(last.w.rss)} MB, CPU ${cpu.w.toFixed(1)} s (${sent} messages)`,
    );
    console.log(
      `broker + worker: sum of maxima ${f(sum)} MB, target ≤ ${TARGET_MB} MB: ${sum <= TARGET_MB ? 'met' : 'NOT met'}`,
    );
  } finally {
    for (const c of clients) c.end(true);
    const exited = (p: ChildProcess) =>
      p.exitCode !== null ? Promise.resolve() : new Promise((r) => p.once('exit', r));
    broker.kill();
    worker.kill();
    await Promise.all([exited(broker), exited(worker)]); // the worker's chdb files closed
    await control.close();
    // This run's devices, queues and templates (all under `rss-<run>`) leave Redis.
    await forgetKeys(config.redis.url, `*rss-${run}*`);
    await rm(chdb, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
