/**
 * The mirror against the real pipeline (MQTT client, Redis, HAPI FHIR, embedded
 * ClickHouse): it copies what FHIR stores (resource, version, commit time, the
 * delivery that produced it), records every message's fate in device_messages,
 * keeps one row per Observation after FINAL when a message is delivered twice,
 * and `iomt mirror backfill` after wiping the mirror restores the same rows.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parseMessageSource } from '../../src/fhir/message-source.js';
import {
  enrol,
  connectDevice,
  HARNESS_ADMIN_TOKEN,
  publish,
  startHarness,
  uniqueId,
  waitFor,
  type Harness,
} from '../support/harness.js';

const run = promisify(execFile);
const fhirUrl = inject('fhirUrl');

let h: Harness;
/** Before this file wrote anything: backfills start here, so the test does not
 * depend on how much other data the FHIR server already holds. */
const fileStarted = new Date(Date.now() - 5_000).toISOString();
let deviceId: string;
let patientId: string;
let client: MqttClient;
const rows = <T = Record<string, unknown>>(sql: string) =>
  h.pipeline.analyticsStore!.queryRows<T>(sql);

/** Everything the mirror holds about the patient, bookkeeping (inserted_at) left out. */
async function snapshot() {
  const p = `'${patientId}'`;
  return {
    observations: await rows(
      `SELECT * EXCEPT (inserted_at) FROM observations FINAL WHERE patient_id = ${p} ORDER BY id`,
    ),
    components: await rows(
      `SELECT * EXCEPT (inserted_at) FROM observation_components FINAL WHERE patient_id = ${p}
       ORDER BY observation_id, component_index`,
    ),
    minutes: await rows(`SELECT * FROM vitals_1m WHERE patient_id = ${p} ORDER BY code, minute`),
    hours: await rows(`SELECT * FROM vitals_1h WHERE patient_id = ${p} ORDER BY code, hour`),
  };
}

async function fhirObservation(id: string): Promise<Record<string, unknown>> {
  const res = await fetch(`${fhirUrl}/Observation/${id}`, {
    headers: { accept: 'application/fhir+json', 'cache-control': 'no-cache' },
  });
  expect(res.status).toBe(200);
  return (await res.json()) as Record<string, unknown>;
}

beforeAll(async () => {
  h = await startHarness({ fhirUrl });
  deviceId = uniqueId('mirror-mon');
  patientId = uniqueId('mirror-pat');
  const secret = await enrol(h.pipeline, deviceId, `Patient/${patientId}`);
  client = await connectDevice(h.mqttUrl, deviceId, secret);
});

afterAll(async () => {
  client?.end(true);
  await h?.close();
});

describe('the ClickHouse mirror of a running pipeline', () => {
  const topic = () => `devices/${deviceId}/telemetry`;
  const base = Date.now() - 120_000;
  const reading = (k: number, hr: number) => ({
    timestamp: new Date(base + k * 30_000).toISOString(),
    heartRate: hr,
    spo2: 96 + k,
    bloodPressure: { systolic: 120 + k, diastolic: 80 },
  });

  it('copies what FHIR stores, once per Observation, and records every message', async () => {
    // 1. three readings, the first delivered twice, and one that is not JSON
    await publish(client, topic(), reading(0, 70));
    await publish(client, topic(), reading(1, 75));
    await publish(client, topic(), reading(2, 80));
    await waitFor(
      () =>
        rows<{ n: string }>(
          `SELECT count() AS n FROM observations FINAL WHERE patient_id = '${patientId}'`,
        ),
      (r) => Number(r[0]?.n) === 9,
      30_000,
      'nine Observations mirrored',
    );
    await publish(client, topic(), reading(0, 70)); // a duplicate delivery
    await publish(client, topic(), '{"heartRate": 7');
    const messages = await waitFor(
      () =>
        rows<{
          outcome: string;
          error_code: string;
          error_stage: string;
          observation_count: number;
          message_id: string;
        }>(
          `SELECT outcome, error_code, error_stage, observation_count, message_id
           FROM device_messages FINAL WHERE mqtt_device_id = '${deviceId}' ORDER BY received_at`,
        ),
      (r) => r.length === 5,
      30_000,
      'five messages in device_messages',
    );
    // (The message that is not JSON names no patient: nobody was attributed.)
    expect(
      messages.map((m) => [m.outcome, m.error_code, m.error_stage, Number(m.observation_count)]),
    ).toEqual([
      ['processed', '', '', 3],
      ['processed', '', '', 3],
      ['processed', '', '', 3],
      ['processed', '', '', 3],
      ['dead_lettered', 'InvalidPayload', 'normalize', 0],
    ]);

    // 2. the duplicate left one row per Observation, and the first delivery's provenance
    const obs = await rows<{
      id: string;
      message_id: string;
      resource: string;
      fhir_version_id: string;
      fhir_committed_at: string;
      received_at: string;
    }>(
      `SELECT id, message_id, resource, fhir_version_id, fhir_committed_at, received_at
       FROM observations FINAL WHERE patient_id = '${patientId}' ORDER BY effective_start, code`,
    );
    expect(obs).toHaveLength(9);
    expect(new Set(obs.slice(0, 3).map((o) => o.message_id))).toEqual(
      new Set([messages[0]!.message_id]),
    );

    // 3. each row is what FHIR stores: resource, version, commit time, source
    for (const o of obs) {
      const stored = await fhirObservation(o.id);
      const meta = stored.meta as { versionId: string; lastUpdated: string; source: string };
      expect(JSON.parse(o.resource)).toEqual(stored);
      expect(o.fhir_version_id).toBe(meta.versionId);
      expect(o.fhir_committed_at).toBe(
        new Date(meta.lastUpdated).toISOString().slice(0, 23).replace('T', ' '),
      );
      const source = parseMessageSource(meta.source)!;
      expect(o.message_id).toBe(source.messageId);
      expect(o.received_at).toBe(
        new Date(source.receivedAt).toISOString().slice(0, 23).replace('T', ' '),
      );
    }
    // 4. the rollups saw every reading once
    const hr = await rows<{ n: string; lo: number; hi: number }>(
      `SELECT sum(count) AS n, min(min) AS lo, max(max) AS hi FROM vitals_1m
       WHERE patient_id = '${patientId}' AND code = '8867-4'`,
    );
    expect(hr).toEqual([{ n: '3', lo: 70, hi: 80 }]);
  });

  it('restores the same rows with `iomt mirror backfill --wipe` (through the owning process)', async () => {
    const before = await snapshot();
    expect(before.observations).toHaveLength(9);
    expect(before.minutes.length).toBeGreaterThan(0);
    // 1. the CLI asks the process that owns the embedded engine to wipe and rebuild
    const { stdout, stderr } = await run(
      process.execPath,
      [
        'bin/iomt.mjs',
        'mirror',
        'backfill',
        '--wipe',
        '--since',
        fileStarted,
        '--page-size',
        '50',
        '--admin-url',
        `http://127.0.0.1:${h.pipeline.admin!.port}`,
      ],
      { env: { ...process.env, ADMIN_TOKEN: HARNESS_ADMIN_TOKEN }, timeout: 120_000 },
    );
    const summary = JSON.parse(stdout) as { pages: number; observations: number };
    expect(stderr).toMatch(/^page 1: \d+ Observations, up to \d{4}-/m); // progress as it goes
    expect(summary.observations).toBeGreaterThanOrEqual(9);
    // 2. the same rows, rollups included
    expect(await snapshot()).toEqual(before);
    // 3. a repair over an intact mirror changes nothing
    await run(
      process.execPath,
      [
        'bin/iomt.mjs',
        'mirror',
        'backfill',
        '--since',
        fileStarted,
        '--admin-url',
        `http://127.0.0.1:${h.pipeline.admin!.port}`,
      ],
      { env: { ...process.env, ADMIN_TOKEN: HARNESS_ADMIN_TOKEN }, timeout: 120_000 },
    );
    expect(await snapshot()).toEqual(before);
  });

  it('backfills on its own into an engine no process owns, from --since on', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'iomt-backfill-cli-'));
    const cli = (...args: string[]) =>
      run(process.execPath, ['bin/iomt.mjs', 'mirror', 'backfill', ...args], {
        env: {
          ...process.env,
          CHDB_PATH: dir,
          CLICKHOUSE_URL: '',
          FHIR_URL: fhirUrl,
          LOG_LEVEL: 'warn',
        },
        timeout: 120_000,
      });
    try {
      const all = JSON.parse((await cli('--since', fileStarted, '--page-size', '20')).stdout) as {
        pages: number;
        observations: number;
      };
      expect(all.observations).toBeGreaterThanOrEqual(9);
      expect(all.pages).toBeGreaterThanOrEqual(1);
      const none = JSON.parse((await cli('--since', '2100-01-01')).stdout) as {
        observations: number;
      };
      expect(none.observations).toBe(0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    // The harness's engine is owned: the command says how to reach the owner.
    const owned = await run(process.execPath, ['bin/iomt.mjs', 'mirror', 'backfill', '--all'], {
      env: {
        ...process.env,
        CHDB_PATH: h.pipeline.config.clickhouse.dataPath,
        CLICKHOUSE_URL: '',
        FHIR_URL: fhirUrl,
      },
      timeout: 120_000,
    }).then(
      () => undefined,
      (e: unknown) => e as { code: number; stderr: string },
    );
    expect(owned?.code).toBe(3); // a service is unavailable (docs/cli.md)
    expect(owned?.stderr).toMatch(/iomt: ClickHouseUnavailable: .*CHDB_PATH.*--admin-url/s);
  });

  it('needs an explicit range: a bare backfill is refused, by the CLI and by the API', async () => {
    const bare = await run(
      process.execPath,
      [
        'bin/iomt.mjs',
        'mirror',
        'backfill',
        '--admin-url',
        `http://127.0.0.1:${h.pipeline.admin!.port}`,
      ],
      { env: { ...process.env, ADMIN_TOKEN: HARNESS_ADMIN_TOKEN }, timeout: 60_000 },
    ).then(
      () => undefined,
      (e: unknown) => e as { code: number; stderr: string },
    );
    expect(bare?.code).toBe(2); // invalid input (docs/cli.md)
    expect(bare?.stderr).toMatch(/name the range to backfill: --since <date>.*--all/);
    for (const body of [
      '{}',
      '{"wipe":true}',
      '{"all":false}',
      '{"since":"2026-01-02","until":"2026-01-01"}',
    ]) {
      const res = await fetch(`http://127.0.0.1:${h.pipeline.admin!.port}/api/analytics/backfill`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          authorization: `Bearer ${HARNESS_ADMIN_TOKEN}`,
        },
        body,
      });
      expect(res.status, body).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code, body).toBe(
        'InvalidArgument',
      );
    }
  });

  it('refuses a backfill without the admin token', async () => {
    const res = await fetch(`http://127.0.0.1:${h.pipeline.admin!.port}/api/analytics/backfill`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{}',
    });
    expect(res.status).toBe(401);
  });
});
