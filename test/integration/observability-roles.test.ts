/**
 * Observability in every role, as docker-compose.yml runs it: three processes
 * (`iomt broker`, `iomt worker`, `iomt admin`, each with METRICS_PORT) serve
 * /metrics, /healthz and /readyz on their own port with the admin token rule,
 * and a real Prometheus (Debian's package) scrapes them with the jobs of
 * deploy/prometheus/prometheus.yml — only the targets (compose service names →
 * this machine's ports), the token file and the intervals replaced — and
 * evaluates deploy/prometheus/alerts.yml. Then every query of the
 * pipeline-health dashboard runs against what it scraped, after two waves of
 * real traffic (readings, a message that is not JSON, a PUBLISH to another
 * device's topic), and each answer is checked against that traffic.
 *
 * Prometheus here is Debian bookworm's 2.42; compose runs prom/prometheus
 * v3.13. The queries use nothing that differs between them.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { readBuildInfo } from '../../src/build-info.js';
import { loadCompose, read, ROOT, tokens } from '../support/compose.js';
import {
  connectDevice,
  enrol,
  publish,
  uniqueId,
  waitFor,
  withDevices,
} from '../support/harness.js';
import { freePort } from '../support/free-port.js';

const fhirUrl = inject('fhirUrl');
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = uniqueId('obs');
const token = randomBytes(24).toString('hex');
const workDir = mkdtempSync(path.join(tmpdir(), 'iomt-observability-'));

type Role = 'broker' | 'worker' | 'admin';
const ROLES: readonly Role[] = ['broker', 'worker', 'admin'];

interface RoleProcess {
  readonly child: ChildProcess;
  readonly logs: Record<string, unknown>[];
  exited?: string;
}
const processes = new Map<Role, RoleProcess>();
const metricsPort = new Map<Role, number>();
let mqttPort: number;
let adminPort: number;
let prometheus: ChildProcess | undefined;
let promUrl: string;
let promLog = '';

/** `iomt <role>` from the sources, configured through the environment only. */
function startRole(role: Role): RoleProcess {
  const child = spawn(process.execPath, [path.join(ROOT, 'bin/iomt.mjs'), role], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: workDir,
      IOMT_FROM_SOURCE: '1',
      REDIS_URL: redisUrl,
      QUEUE_PREFIX: prefix,
      FHIR_URL: fhirUrl,
      MAPPINGS_DIR: path.join(ROOT, 'mappings'),
      CHDB_PATH: path.join(workDir, `chdb-${role}`),
      MQTT_HOST: '127.0.0.1',
      MQTT_PORT: '0',
      ADMIN_HOST: '127.0.0.1',
      ADMIN_PORT: '0',
      ADMIN_TOKEN: token,
      METRICS_HOST: '127.0.0.1',
      METRICS_PORT: '0',
      LOG_LEVEL: 'info',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const p: RoleProcess = { child, logs: [] };
  let buffered = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    buffered += chunk;
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    for (const line of lines) {
      try {
        p.logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        p.logs.push({ msg: line });
      }
    }
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => p.logs.push({ stderr: chunk }));
  child.once('exit', (code, signal) => {
    p.exited = `exited with ${code ?? signal}`;
  });
  return p;
}

function portFromLog(role: Role, event: string, extra: Record<string, unknown> = {}) {
  const p = processes.get(role)!;
  if (p.exited) throw new Error(`${role} ${p.exited}: ${JSON.stringify(p.logs.slice(-10))}`);
  const line = p.logs.find(
    (l) => l.event === event && Object.entries(extra).every(([k, v]) => l[k] === v),
  );
  return typeof line?.port === 'number' ? line.port : undefined;
}

async function get(url: string, withToken = true) {
  return fetch(url, {
    headers: withToken ? { authorization: `Bearer ${token}` } : {},
    signal: AbortSignal.timeout(10_000),
  });
}

interface Sample {
  readonly metric: Record<string, string>;
  readonly value: number;
}

/** An instant query; throws on a PromQL error. */
async function query(promql: string): Promise<Sample[]> {
  const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(promql)}`);
  const body = (await res.json()) as {
    status: string;
    error?: string;
    data?: {
      resultType: string;
      result: { metric: Record<string, string>; value: [number, string] }[];
    };
  };
  if (body.status !== 'success') throw new Error(`${promql}: ${body.error}`);
  return body.data!.result.map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
}

const scalar = async (promql: string): Promise<number> => (await query(promql))[0]?.value ?? NaN;

beforeAll(async () => {
  // 1. The three roles, as three processes.
  for (const role of ROLES) processes.set(role, startRole(role));
  for (const role of ROLES) {
    const port = await waitFor(
      () => Promise.resolve(portFromLog(role, 'metrics-listening')),
      (v) => v !== undefined,
      120_000,
      `${role}: metrics-listening`,
    );
    metricsPort.set(role, port!);
  }
  mqttPort = (await waitFor(
    () => Promise.resolve(portFromLog('broker', 'broker-listening', { transport: 'tcp' })),
    (v) => v !== undefined,
    30_000,
    'broker-listening',
  ))!;
  adminPort = (await waitFor(
    () => Promise.resolve(portFromLog('admin', 'admin-listening')),
    (v) => v !== undefined,
    30_000,
    'admin-listening',
  ))!;

  // 2. Prometheus with the deployed scrape jobs, aimed at these processes.
  const deployed = parse(read('deploy/prometheus/prometheus.yml')) as {
    global: Record<string, string>;
    rule_files: string[];
    scrape_configs: {
      job_name: string;
      authorization: { credentials_file: string };
      dns_sd_configs?: { names: string[]; port: number }[];
      static_configs?: { targets: string[] }[];
    }[];
  };
  const { compose } = loadCompose();
  const tokenFile = path.join(workDir, 'admin-token');
  writeFileSync(tokenFile, token, { mode: 0o600 });
  for (const job of deployed.scrape_configs) {
    const service = job.dns_sd_configs![0]!.names[0]!;
    const role = tokens(compose.services[service]!.command)[0] as Role;
    expect(ROLES).toContain(role);
    delete job.dns_sd_configs;
    job.static_configs = [{ targets: [`127.0.0.1:${metricsPort.get(role)}`] }];
    job.authorization.credentials_file = tokenFile;
  }
  expect(deployed.scrape_configs.map((j) => j.job_name).sort()).toEqual([
    'iomt-admin',
    'iomt-broker',
    'iomt-worker',
  ]);
  deployed.global = { scrape_interval: '1s', evaluation_interval: '1s' };
  deployed.rule_files = deployed.rule_files.map((f) => path.join(ROOT, 'deploy/prometheus', f));
  const configFile = path.join(workDir, 'prometheus.yml');
  writeFileSync(configFile, stringify(deployed));
  const promPort = await freePort();
  promUrl = `http://127.0.0.1:${promPort}`;
  prometheus = spawn(
    'prometheus',
    [
      `--config.file=${configFile}`,
      `--storage.tsdb.path=${path.join(workDir, 'tsdb')}`,
      `--web.listen-address=127.0.0.1:${promPort}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  prometheus.on('error', (err) => {
    promLog += `${err.message} (install Debian's prometheus package: apt-get install prometheus)`;
  });
  prometheus.stderr!.setEncoding('utf8').on('data', (c: string) => (promLog += c));
  await waitFor(
    async () => (await fetch(`${promUrl}/-/ready`)).status,
    (s) => s === 200,
    60_000,
    'Prometheus ready',
  ).catch((err: Error) => {
    throw new Error(`${err.message}\n${promLog}`);
  });
  // 3. Every job scraped successfully (with the token) before any traffic.
  await waitFor(
    () => query('up{job=~"iomt-.*"} == 1'),
    (r) => r.length === 3,
    60_000,
    'every role scraped',
  );
}, 240_000);

afterAll(async () => {
  prometheus?.kill('SIGTERM');
  await Promise.all(
    [...processes.values()].map(async (p) => {
      if (p.exited) return;
      const gone = new Promise((resolve) => p.child.once('exit', resolve));
      p.child.kill('SIGTERM');
      const timer = setTimeout(() => p.child.kill('SIGKILL'), 20_000);
      await gone;
      clearTimeout(timer);
    }),
  );
  if (prometheus && prometheus.exitCode === null)
    await new Promise((resolve) => prometheus!.once('exit', resolve));
  rmSync(workDir, { recursive: true, force: true });
}, 60_000);

describe('every role serves /metrics, /healthz and /readyz on its own port', () => {
  it.each(ROLES)('%s: liveness is public, readiness and metrics need the token', async (role) => {
    const base = `http://127.0.0.1:${metricsPort.get(role)}`;
    expect((await get(`${base}/healthz`, false)).status).toBe(200);
    for (const p of ['/readyz', '/metrics']) {
      const res = await get(`${base}${p}`, false);
      expect(res.status, p).toBe(401);
      expect(await res.json()).toEqual({
        error: { code: 'NotAuthorized', message: 'a valid bearer token is required' },
      });
    }
    // Nothing of the admin API on this port.
    expect((await get(`${base}/api/analytics/query`)).status).toBe(404);
  });

  it('reports readiness for what each role needs (a broker: Redis only)', async () => {
    const checks = async (role: Role) => {
      const res = await get(`http://127.0.0.1:${metricsPort.get(role)}/readyz`);
      const body = (await res.json()) as { status: string; checks: Record<string, string> };
      return { status: res.status, body };
    };
    const broker = await checks('broker');
    expect(broker).toEqual({ status: 200, body: { status: 'ready', checks: { redis: 'ok' } } });
    const worker = await waitFor(
      () => checks('worker'),
      (r) => r.status === 200,
      30_000,
      'worker ready',
    );
    expect(worker.body.checks).toEqual({
      redis: 'ok',
      fhir: 'ok',
      clickhouse: 'ok',
      templates: 'ok',
    });
    const admin = await checks('admin');
    expect(admin).toEqual({
      status: 200,
      body: { status: 'ready', checks: { redis: 'ok', fhir: 'ok' } },
    });
  });

  it.each(ROLES)('%s: standard process_* and nodejs_* names, and the build info', async (role) => {
    const text = await (await get(`http://127.0.0.1:${metricsPort.get(role)}/metrics`)).text();
    for (const name of [
      'process_cpu_user_seconds_total',
      'process_resident_memory_bytes',
      'nodejs_eventloop_lag_p99_seconds',
      'nodejs_heap_size_used_bytes',
      'iomt_queue_jobs',
    ])
      expect(text, name).toMatch(new RegExp(`^${name}[ {]`, 'm'));
    expect(text).not.toContain('iomt_process_');
    const build = readBuildInfo();
    expect(text).toContain(
      `iomt_build_info{version="${build.version}",commit="${build.commit}",node_version="${process.version}"} 1`,
    );
    expect(build.commit).toMatch(/^[0-9a-f]{40}$/); // a git checkout: the commit is known
  });

  it('the worker reports its FHIR Bundle slots (the adaptive limit); the broker has none', async () => {
    const scrape = async (role: (typeof ROLES)[number]) =>
      (await get(`http://127.0.0.1:${metricsPort.get(role)}/metrics`)).text();
    const worker = await scrape('worker');
    const limit = Number(/^iomt_fhir_bundle_slots\{state="limit"\} (\d+)$/m.exec(worker)?.[1]);
    const inFlight = Number(
      /^iomt_fhir_bundle_slots\{state="in_flight"\} (\d+)$/m.exec(worker)?.[1],
    );
    // Starts at 2, never above FHIR_CONCURRENCY_MAX (default 8), never below 1.
    expect(limit).toBeGreaterThanOrEqual(1);
    expect(limit).toBeLessThanOrEqual(8);
    expect(inFlight).toBeGreaterThanOrEqual(0);
    expect(inFlight).toBeLessThanOrEqual(8); // (above the limit for a moment after it halves)
    expect(await scrape('broker')).not.toMatch(/^iomt_fhir_bundle_slots\{/m);
  });

  it('keeps serving them on the admin API port too', async () => {
    const res = await get(`http://127.0.0.1:${adminPort}/metrics`);
    expect(res.status).toBe(200);
    expect(await res.text()).toMatch(/^iomt_build_info\{/m);
  });
});

describe('Prometheus scraping every role: the pipeline-health dashboard and the alert rules', () => {
  const deviceId = uniqueId('obs-monitor');
  const patientId = uniqueId('obs-patient');
  const READINGS = 4; // per wave, two Observations each
  let secret: string;
  let client: MqttClient;
  const base = Math.floor(Date.now() / 60_000) * 60_000 - 30 * 60_000;

  /** One wave: readings, one message that is not JSON, one PUBLISH to another device's topic. */
  async function wave(n: number): Promise<void> {
    for (let i = 0; i < READINGS; i++)
      await publish(client, `devices/${deviceId}/telemetry`, {
        timestamp: new Date(base + (n * READINGS + i) * 1000).toISOString(),
        heartRate: 60 + i,
        spo2: 95 + i,
      });
    await publish(client, `devices/${deviceId}/telemetry`, '{"heartRate": 72,,}');
    // Refused and disconnected by the broker (other-device-topic).
    const intruder = await connectDevice(`mqtt://127.0.0.1:${mqttPort}`, deviceId, secret);
    const closed = new Promise<void>((resolve) => intruder.once('close', () => resolve()));
    intruder.publish(`devices/${uniqueId('someone-else')}/telemetry`, '{}', { qos: 0 });
    await closed;
    intruder.end(true);
    // Done when Prometheus has scraped the outcome of the whole wave.
    const saved = (n + 1) * READINGS * 2;
    await waitFor(
      async () => ({
        received: await scalar('sum(iomt_messages_received_total)'),
        saved: await scalar('sum(iomt_fhir_resources_total)'),
        rows: await scalar('sum(iomt_analytics_rows_total)'),
        dead: await scalar('max(iomt_dead_letter_jobs)'),
        refused: await scalar('sum(iomt_messages_refused_total)'),
      }),
      (v) =>
        v.received === (n + 1) * (READINGS + 1) &&
        v.saved >= saved &&
        v.rows >= saved &&
        v.dead === n + 1 &&
        v.refused === n + 1,
      90_000,
      `wave ${n + 1} scraped`,
    );
  }

  beforeAll(async () => {
    secret = await withDevices(redisUrl, prefix, (d) => enrol(d, deviceId, `Patient/${patientId}`));
    client = await connectDevice(`mqtt://127.0.0.1:${mqttPort}`, deviceId, secret);
    await wave(0);
    await wave(1);
  }, 240_000);

  afterAll(() => {
    client?.end(true);
  });

  interface Panel {
    readonly title: string;
    readonly type: string;
    readonly targets?: readonly { readonly refId: string; readonly expr: string }[];
  }
  const dashboard = JSON.parse(read('deploy/grafana/dashboards/pipeline-health.json')) as {
    panels: Panel[];
  };
  /**
   * Grafana's variables: $__rate_interval (at least 4 scrapes; 5m here so that
   * both waves fall inside it on a slow machine), $__range (the time range).
   */
  const grafana = (expr: string) =>
    expr.replace(/\$__rate_interval/g, '5m').replace(/\$__range/g, '10m');

  it('scrapes all three roles with the deployed jobs and token', async () => {
    const up = await query('up{job=~"iomt-.*"}');
    expect(up.map((s) => [s.metric.job, s.value]).sort()).toEqual([
      ['iomt-admin', 1],
      ['iomt-broker', 1],
      ['iomt-worker', 1],
    ]);
  });

  it('answers every query of the pipeline-health dashboard, as the traffic says', async () => {
    const answers = new Map<string, Sample[]>();
    for (const panel of dashboard.panels.filter((p) => p.type !== 'row'))
      for (const t of panel.targets ?? []) {
        const result = await query(grafana(t.expr));
        expect(result.length, `${panel.title} ${t.refId}: ${t.expr}`).toBeGreaterThan(0);
        answers.set(`${panel.title}/${t.refId}`, result);
      }
    const one = (key: string) => {
      const r = answers.get(key)!;
      expect(r, key).toHaveLength(1);
      return r[0]!.value;
    };
    // Rates: intake and every stage moved within the window.
    expect(one('Messages received and refused per second/A')).toBeGreaterThan(0);
    const refused = answers.get('Messages received and refused per second/B')!;
    expect(refused.map((s) => s.metric.reason)).toEqual(['other-device-topic']);
    expect(refused[0]!.value).toBeGreaterThan(0);
    for (const ref of ['A', 'B', 'C'])
      expect(one(`Stage throughput per second/${ref}`), ref).toBeGreaterThan(0);
    // Queue depth: every queue, read from Redis.
    const queues = new Set(answers.get('Queue depth/A')!.map((s) => s.metric.queue));
    expect([...queues].sort()).toEqual(['analytics', 'dead-letter', 'fhir', 'ingest']);
    // Backpressure: the broker is not holding devices back; it never did.
    const paused = answers.get('Backpressure/A')!;
    expect(paused.map((s) => s.value)).toEqual([0]);
    expect(one('Backpressure/B')).toBeGreaterThanOrEqual(0);
    expect(one('Broker pauses in range/A')).toBe(0);
    // Latency: percentiles of real receipt-to-commit times, in order.
    const [p50, p95, p99] = ['A', 'B', 'C'].map((r) => one(`Broker receipt to FHIR commit/${r}`));
    expect(p50).toBeGreaterThan(0);
    expect(p50).toBeLessThanOrEqual(p95!);
    expect(p95).toBeLessThanOrEqual(p99!);
    expect(p99).toBeLessThan(60);
    const stages = answers.get('Job time by stage (p95)/A')!.map((s) => s.metric.stage);
    expect(stages.sort()).toEqual(['analytics', 'fhir', 'normalize']);
    // Errors by code: the two messages that were not JSON.
    const errors = answers.get('Errors by code/A')!;
    expect(errors.map((s) => [s.metric.code, s.metric.stage])).toEqual([
      ['InvalidPayload', 'normalize'],
    ]);
    expect(errors[0]!.value).toBeGreaterThan(0);
    // Dead letters: those two, waiting for an operator.
    expect(one('Dead letters waiting/A')).toBe(2);
    expect(one('Jobs taken back from dead workers/A')).toBe(0);
    // Processes: every role up, with its memory, event loop and build.
    for (const key of ['Targets up/A', 'Resident memory/A', 'Event loop lag (p99)/A', 'Versions/A'])
      expect(
        answers
          .get(key)!
          .map((s) => s.metric.job)
          .sort(),
        key,
      ).toEqual(['iomt-admin', 'iomt-broker', 'iomt-worker']);
    for (const s of answers.get('Versions/A')!)
      expect(s.metric).toMatchObject({
        version: readBuildInfo().version,
        node_version: process.version,
      });
  });

  it('evaluates every alert rule on the scraped data without error, none firing', async () => {
    // States as of an evaluation after both waves were scraped (rules run every second).
    const after = Date.now();
    const rules = await waitFor(
      async () => {
        const body = (await (await fetch(`${promUrl}/api/v1/rules`)).json()) as {
          data: {
            groups: {
              rules: {
                name: string;
                health: string;
                lastError?: string;
                state: string;
                lastEvaluation: string;
                alerts: { labels: Record<string, string>; state: string }[];
              }[];
            }[];
          };
        };
        return body.data.groups.flatMap((g) => g.rules);
      },
      (r) => r.length > 0 && r.every((x) => Date.parse(x.lastEvaluation) > after),
      30_000,
      'every rule evaluated',
    );
    expect(rules.map((r) => r.name).sort()).toEqual([
      'IomtBackpressureHeld',
      'IomtDeadLettersRising',
      'IomtStageStalled',
      'IomtStageStalled',
      'IomtStageStalled',
      'IomtTargetDown',
    ]);
    for (const r of rules) {
      expect(r.health, `${r.name}: ${r.lastError ?? ''}`).toBe('ok');
      // Work flowed, no broker paused, every target up; the dead letters are
      // newer than the 15 min the rule looks back, with no sample from before.
      expect(r.state, `${r.name}: ${JSON.stringify(r.alerts)}`).toBe('inactive');
    }
  });

  it('exposes no secret and no patient data in any role’s metrics', async () => {
    for (const role of ROLES) {
      const text = await (await get(`http://127.0.0.1:${metricsPort.get(role)}/metrics`)).text();
      for (const needle of [token, secret, patientId, deviceId])
        expect(text.includes(needle), `${role} metrics contain ${needle.slice(0, 6)}…`).toBe(false);
    }
  });
});
