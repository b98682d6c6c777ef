/**
 * Real processes for fault tests: `node bin/iomt.mjs <role>` with its own
 * environment, a test-owned redis-server, and a test-owned HAPI FHIR. Every
 * process started here is remembered and stopped by `stopAll()` (by its pid,
 * never by name), so a failing test leaves nothing running.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { freePort } from '../../support/free-port.js';
export { freePort };

const run = promisify(execFile);
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/** Token for the admin API of spawned processes (the admin role needs one). */
export const CHAOS_ADMIN_TOKEN = 'chaos-admin-token-0123456789';

const started = new Set<ChildProcess>();

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export interface LogLine extends Record<string, unknown> {
  readonly event?: string;
}

/**
 * A job that failed for a transient reason and will be tried again: thrown
 * from a stage (BullMQ's own retry, logged job-failed) or returned by it as a
 * retry remainder (the runner reschedules it, logged retry-remainder).
 */
export function transientFailure(code: string): (l: LogLine) => boolean {
  return (l) => (l.event === 'job-failed' || l.event === 'retry-remainder') && l.code === code;
}

export interface IomtProcess {
  readonly name: string;
  readonly child: ChildProcess;
  readonly logs: LogLine[];
  /** stderr and non-JSON stdout, for failure messages. */
  readonly text: string[];
  readonly exited: Promise<number | null>;
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs?: number, what?: string): Promise<LogLine>;
  /** SIGKILL: the process dies at once, mid-whatever. */
  kill9(): Promise<void>;
  /** SIGTERM: graceful shutdown (close-with-grace). */
  stop(timeoutMs?: number): Promise<void>;
}

export type Role = 'broker' | 'worker' | 'admin' | 'all';

/** A minimal environment: nothing of the developer's shell leaks into the pipeline. */
function baseEnv(): Record<string, string> {
  const keep = ['PATH', 'HOME', 'LANG', 'TMPDIR', 'NODE_EXTRA_CA_CERTS'];
  return Object.fromEntries(
    keep.flatMap((k) => (process.env[k] !== undefined ? [[k, process.env[k]]] : [])),
  );
}

export function spawnIomt(
  role: Role,
  env: Record<string, string>,
  name: string = role,
): IomtProcess {
  const child = spawn(process.execPath, ['bin/iomt.mjs', role], {
    cwd: ROOT,
    // IOMT_FROM_SOURCE: test these sources even when a (maybe stale) dist/ exists.
    env: { ...baseEnv(), LOG_LEVEL: 'info', IOMT_FROM_SOURCE: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  started.add(child);
  const logs: LogLine[] = [];
  const text: string[] = [];
  const waiters: { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];
  let pending = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    pending += chunk.toString('utf8');
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) {
      if (!line.trim()) continue;
      let parsed: LogLine;
      try {
        parsed = JSON.parse(line) as LogLine;
      } catch {
        text.push(line);
        continue;
      }
      logs.push(parsed);
      for (const w of waiters.splice(0)) {
        if (w.pred(parsed)) w.resolve(parsed);
        else waiters.push(w);
      }
    }
  });
  child.stderr?.on('data', (chunk: Buffer) => text.push(chunk.toString('utf8')));
  // CHAOS_LOG_DIR=dir keeps each process's whole output, for reading a failure afterwards.
  const keep = process.env.CHAOS_LOG_DIR;
  if (keep) {
    const file = createWriteStream(path.join(keep, `${name}-${child.pid ?? 0}.log`));
    child.stdout?.pipe(file);
    child.stderr?.pipe(file);
  }
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      started.delete(child);
      resolve(code);
    }),
  );

  const proc: IomtProcess = {
    name,
    child,
    logs,
    text,
    exited,
    waitForLog(pred, timeoutMs = 30_000, what = 'log line') {
      const hit = logs.find(pred);
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () =>
            reject(
              new Error(
                `${name}: no ${what} within ${timeoutMs} ms; exit=${String(child.exitCode)}; output: ${text.join('').slice(-2000)}`,
              ),
            ),
          timeoutMs,
        );
        const w = {
          pred,
          resolve: (l: LogLine) => {
            clearTimeout(timer);
            resolve(l);
          },
        };
        waiters.push(w);
        void exited.then(() => {
          clearTimeout(timer);
          reject(new Error(`${name} exited before ${what}; output: ${text.join('').slice(-2000)}`));
        });
      });
    },
    async kill9() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
    async stop(timeoutMs = 20_000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      await exited;
      clearTimeout(timer);
    },
  };
  return proc;
}

/** Waits for the listening line of a role; returns the MQTT TCP port when it has one. */
export async function ready(p: IomtProcess, role: Role): Promise<number | undefined> {
  let port: number | undefined;
  if (role === 'broker' || role === 'all') {
    const l = await p.waitForLog(
      (x) => x.event === 'broker-listening' && x.transport === 'tcp',
      60_000,
      'broker-listening',
    );
    port = Number(l.port);
  }
  if (role === 'worker' || role === 'all')
    await p.waitForLog((x) => x.event === 'workers-started', 60_000, 'workers-started');
  if (role === 'admin' || role === 'all')
    await p.waitForLog((x) => x.event === 'admin-listening', 60_000, 'admin-listening');
  return port;
}

/** Stops every process this module started and is still running. */
export async function stopAll(): Promise<void> {
  const all = [...started];
  for (const c of all) c.kill('SIGKILL');
  await Promise.all(
    all.map((c) =>
      c.exitCode !== null || c.signalCode !== null
        ? Promise.resolve()
        : new Promise((r) => c.once('exit', r)),
    ),
  );
}

/** A redis-server of the test's own, with AOF fsynced on every write. */
export interface TestRedis {
  readonly port: number;
  readonly url: string;
  start(): Promise<void>;
  kill9(): Promise<void>;
}

export function testRedis(port: number, dir: string): TestRedis {
  let child: ChildProcess | undefined;
  const url = `redis://127.0.0.1:${port}`;
  async function answers(): Promise<boolean> {
    const r = new Redis(url, {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    r.on('error', () => undefined); // refused while it starts: answered below
    try {
      await r.connect();
      return (await r.ping()) === 'PONG';
    } catch {
      return false;
    } finally {
      r.disconnect();
    }
  }
  return {
    port,
    url,
    async start() {
      if (child === undefined && (await answers()))
        throw new Error(`port ${port} already serves a Redis: this test must own it`);
      // appendfsync always: a reply means the write is on disk, so a PUBACK
      // (sent after Redis answered) survives even kill -9 of Redis.
      child = spawn(
        'redis-server',
        [
          '--port',
          String(port),
          '--bind',
          '127.0.0.1',
          '--dir',
          dir,
          '--appendonly',
          'yes',
          '--appendfsync',
          'always',
          '--save',
          '',
          '--logfile',
          path.join(dir, 'redis.log'),
        ],
        { stdio: 'ignore' },
      );
      started.add(child);
      const c = child;
      c.once('exit', () => started.delete(c));
      for (let i = 0; i < 100; i++) {
        if (await answers()) return;
        await sleep(100);
      }
      throw new Error(`redis-server on ${port} did not answer`);
    },
    async kill9() {
      const c = child;
      if (!c || c.exitCode !== null || c.signalCode !== null) return;
      const gone = new Promise((r) => c.once('exit', r));
      c.kill('SIGKILL');
      await gone;
    },
  };
}

/** Our HAPI launcher on a port of the test's own (scripts/hapi.sh). */
export async function hapi(
  command: 'start' | 'stop',
  port: number,
  env: Record<string, string> = {},
): Promise<void> {
  await run('bash', [path.join(ROOT, 'scripts/hapi.sh'), command, '--port', String(port)], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    maxBuffer: 64 * 1024 * 1024,
  });
}

export interface IomtEnvOptions {
  readonly redisUrl: string;
  readonly prefix: string;
  readonly fhirUrl: string;
  readonly chdbPath: string;
  readonly stages?: string;
  readonly mqttPort?: number;
  readonly extra?: Record<string, string>;
}

/**
 * The environment of a spawned pipeline process. Short job locks and retry caps
 * keep recovery within seconds (a crashed worker's job is taken back after
 * about WORKER_LOCK_MS; an outage ends with a retry at most
 * WORKER_RETRY_MAX_DELAY_MS later); everything else is the default.
 */
export function iomtEnv(o: IomtEnvOptions): Record<string, string> {
  return {
    REDIS_URL: o.redisUrl,
    QUEUE_PREFIX: o.prefix,
    FHIR_URL: o.fhirUrl,
    CHDB_PATH: o.chdbPath,
    MQTT_HOST: '127.0.0.1',
    MQTT_PORT: String(o.mqttPort ?? 0),
    ADMIN_HOST: '127.0.0.1',
    ADMIN_PORT: '0',
    ADMIN_TOKEN: CHAOS_ADMIN_TOKEN,
    WORKER_STAGES: o.stages ?? 'normalize,fhir,analytics',
    // Short enough that a killed worker's jobs come back soon, long enough that
    // a worker starved of CPU on a loaded machine keeps its locks.
    WORKER_LOCK_MS: '10000',
    WORKER_RETRY_MAX_DELAY_MS: '2000',
    ...o.extra,
  };
}

/** Deletes every Redis key of a test's queue prefix (never anything else). */
export async function dropPrefix(redisUrl: string, prefix: string): Promise<void> {
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  try {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await redis.del(...keys);
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}

/**
 * Two workers and two brokers on one Redis (whatever topology `base.redisUrl`
 * names): W1 normalizes and writes FHIR, W2 runs every stage (the ClickHouse
 * mirror has one owner). Workers log at debug level, so each job's
 * 'normalized' line shows which worker did it. Returns once all four are ready.
 */
export async function startTwoByTwo(base: IomtEnvOptions): Promise<{
  workers: [IomtProcess, IomtProcess];
  brokers: [IomtProcess, IomtProcess];
  urls: [string, string];
}> {
  const debug = { ...base.extra, LOG_LEVEL: 'debug' };
  const w1 = spawnIomt(
    'worker',
    iomtEnv({ ...base, stages: 'normalize,fhir', extra: debug }),
    'W1',
  );
  const w2 = spawnIomt('worker', iomtEnv({ ...base, extra: debug }), 'W2');
  const b1 = spawnIomt('broker', iomtEnv(base), 'B1');
  const b2 = spawnIomt('broker', iomtEnv(base), 'B2');
  const [port1, port2] = await Promise.all([
    ready(b1, 'broker'),
    ready(b2, 'broker'),
    ready(w1, 'worker'),
    ready(w2, 'worker'),
  ]);
  return {
    workers: [w1, w2],
    brokers: [b1, b2],
    urls: [`mqtt://127.0.0.1:${port1}`, `mqtt://127.0.0.1:${port2}`],
  };
}
