/**
 * The admin API over real HTTP: only /healthz is public; /readyz, /metrics and
 * the analytics query need the bearer token; the admin role does not start
 * without a token unless ADMIN_AUTH=none says so. With the token, /metrics
 * carries the counters, histograms and gauges docs/operations.md lists, and
 * /readyz reports Redis, FHIR, ClickHouse and the mapping templates.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import type { PipelineError } from '../../src/errors.js';
import { createLogger } from '../../src/logger.js';
import { startPipeline } from '../../src/pipeline.js';
import {
  enrol,
  HARNESS_ADMIN_TOKEN,
  connectDevice,
  fhirSearch,
  publish,
  startHarness,
  uniqueId,
  waitFor,
  type Harness,
} from '../support/harness.js';

const fhirUrl = inject('fhirUrl');
let h: Harness;
let base: string;

beforeAll(async () => {
  h = await startHarness({ fhirUrl });
  base = `http://127.0.0.1:${h.pipeline.admin!.port}`;
});

afterAll(async () => {
  await h?.close();
});

function get(path: string, token?: string) {
  return fetch(`${base}${path}`, {
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
  });
}

describe('admin API access', () => {
  it('answers /healthz without a token', async () => {
    const res = await get('/healthz');
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'ok' });
    expect((await get('/healthz?probe=k8s')).status).toBe(200);
  });

  it.each(['/readyz', '/metrics'])('refuses %s without a token (401 NotAuthorized)', async (p) => {
    const res = await get(p);
    expect(res.status).toBe(401);
    expect(await res.json()).toEqual({
      error: { code: 'NotAuthorized', message: 'a valid bearer token is required' },
    });
  });

  it('refuses the analytics query without a token, and with a wrong one', async () => {
    const body = JSON.stringify({ sql: 'SELECT 1' });
    const headers = { 'content-type': 'application/json' };
    const none = await fetch(`${base}/api/analytics/query`, { method: 'POST', headers, body });
    expect(none.status).toBe(401);
    const wrong = await fetch(`${base}/api/analytics/query`, {
      method: 'POST',
      headers: { ...headers, authorization: `Bearer ${HARNESS_ADMIN_TOKEN}x` },
      body,
    });
    expect(wrong.status).toBe(401);
  });

  it('refuses a token of the right length but the wrong value', async () => {
    const forged = HARNESS_ADMIN_TOKEN.replace(/.$/, (c) => (c === 'x' ? 'y' : 'x'));
    expect((await get('/metrics', forged)).status).toBe(401);
  });

  it('does not start the admin role without ADMIN_TOKEN', async () => {
    const config = loadConfig({}, { admin: { port: 0 }, redis: { prefix: uniqueId('adm') } });
    let error: PipelineError | undefined;
    await startPipeline(config, ['admin'], createLogger('silent')).catch((e: unknown) => {
      error = e as PipelineError;
    });
    expect(error?.code).toBe('ConfigInvalid');
    expect(error?.message).toMatch(/ADMIN_TOKEN is not set/);
  });

  it('refuses an ADMIN_TOKEN shorter than 16 characters', () => {
    expect(() => loadConfig({ ADMIN_TOKEN: 'short' })).toThrow(/ADMIN_TOKEN: must be at least 16/);
  });

  it('serves everything without a token only when ADMIN_AUTH=none', async () => {
    const config = loadConfig(
      { ADMIN_AUTH: 'none' },
      {
        admin: { port: 0, host: '127.0.0.1' },
        redis: { prefix: uniqueId('adm') },
        fhir: { url: fhirUrl },
      },
    );
    const p = await startPipeline(config, ['admin'], createLogger('silent'));
    try {
      const res = await fetch(`http://127.0.0.1:${p.admin!.port}/metrics`);
      expect(res.status).toBe(200);
    } finally {
      await p.close();
    }
  });
});

describe('with the token', () => {
  it('/readyz reports Redis, FHIR, ClickHouse and the templates', async () => {
    const res = await get('/readyz', HARNESS_ADMIN_TOKEN);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({
      status: 'ready',
      checks: { redis: 'ok', fhir: 'ok', clickhouse: 'ok', templates: 'ok' },
    });
  });

  it('/metrics counts a message through every stage', async () => {
    const deviceId = uniqueId('metrics');
    const patientId = uniqueId('mpat');
    const secret = await enrol(h.pipeline, deviceId, patientId);
    const client = await connectDevice(h.mqttUrl, deviceId, secret);
    // QoS 0 first: the QoS 1 PUBACK then proves the broker has read both.
    await publish(client, `devices/${deviceId}/telemetry`, 'not json', 0);
    await publish(client, `devices/${deviceId}/telemetry`, {
      timestamp: new Date(Date.now() - 5000).toISOString(),
      heartRate: 64,
    });
    client.end(true);
    await waitFor(
      () => fhirSearch(fhirUrl, 'Observation', { subject: `Patient/${patientId}` }),
      (b) => (b.entry?.length ?? 0) === 1,
      30_000,
      'the Observation',
    );
    const text = await waitFor(
      async () => (await get('/metrics', HARNESS_ADMIN_TOKEN)).text(),
      (t) => /iomt_analytics_rows_total [1-9]/.test(t),
      30_000,
      'the row mirrored',
    );
    for (const expected of [
      /iomt_messages_received_total\{qos="1"\} [1-9]/,
      /iomt_messages_received_total\{qos="0"\} [1-9]/,
      /iomt_messages_normalized_total [1-9]/,
      /iomt_measurements_total\{type="heartrate"\} [1-9]/,
      /iomt_fhir_resources_total\{outcome="created"\} [1-9]/,
      /iomt_errors_total\{code="InvalidPayload",stage="normalize"\} [1-9]/,
      /iomt_stage_seconds_count\{stage="normalize"\} [1-9]/,
      /iomt_stage_seconds_count\{stage="fhir"\} [1-9]/,
      /iomt_stage_seconds_count\{stage="analytics"\} [1-9]/,
      /iomt_receipt_to_fhir_seconds_count [1-9]/,
      /iomt_device_to_fhir_seconds_count [1-9]/,
      /iomt_queue_jobs\{queue="ingest",state="waiting"\} \d/,
      /iomt_dead_letter_jobs [1-9]/,
      /iomt_broker_paused 0/,
      /iomt_broker_backlog_jobs \d/,
    ])
      expect(text).toMatch(expected);
  });
});
