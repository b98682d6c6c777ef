/**
 * MAPPINGS_RELOAD=watch, the development convenience, still goes through the
 * gates. Two processes share the queues (as two machines would): A watches a
 * folder an operator edits, B another copy. An invalid edit is never activated
 * — the running version keeps processing and the error shows in log, metric and
 * readiness — and a valid edit that passes the gates (its fixture updated with
 * it) becomes the active version on both within seconds, through Redis; B,
 * whose folder now differs, only reports it. Every Observation, in FHIR and in
 * ClickHouse, records the version that made it.
 */
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  enrol,
  connectDevice,
  fhirSearch,
  HARNESS_ADMIN_TOKEN,
  publish,
  startHarness,
  uniqueId,
  waitFor,
  type Harness,
} from '../support/harness.js';

const fhirUrl = inject('fhirUrl');
const library = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../mappings');
const prefix = uniqueId('hot');

let dirA: string;
let dirB: string;
let a: Harness;
let b: Harness;
let client: MqttClient;
const monitor = uniqueId('mon');
const patient = uniqueId('phot');

interface ObservationJson {
  id: string;
  meta: { tag: { system: string; code: string }[] };
  effectiveDateTime: string;
}

async function heartRateAt(timestamp: string, hr: number): Promise<ObservationJson> {
  await publish(client, `devices/${monitor}/telemetry`, { timestamp, heartRate: hr });
  const found = await waitFor(
    async () =>
      (await fhirSearch(fhirUrl, 'Observation', { subject: `Patient/${patient}` })).entry ?? [],
    (e) =>
      e.some((x) => (x.resource as unknown as ObservationJson).effectiveDateTime === timestamp),
    30_000,
    `the Observation at ${timestamp}`,
  );
  return found.find(
    (x) => (x.resource as unknown as ObservationJson).effectiveDateTime === timestamp,
  )!.resource as unknown as ObservationJson;
}

const versionTag = (o: ObservationJson) =>
  o.meta.tag.find((t) => t.system === 'urn:iomt:template')?.code;
const recent = (secondsAgo: number) =>
  new Date(Math.floor(Date.now() / 1000 - secondsAgo) * 1000).toISOString();

async function readyz(
  h: Harness,
): Promise<{ status: string; templates?: { active: string; rejected?: { problems: string[] } } }> {
  const res = await h.pipeline.admin!.app.inject({
    method: 'GET',
    url: '/readyz',
    headers: { authorization: `Bearer ${HARNESS_ADMIN_TOKEN}` },
  });
  return res.json();
}

beforeAll(async () => {
  dirA = await mkdtemp(path.join(tmpdir(), 'iomt-hot-a-'));
  dirB = await mkdtemp(path.join(tmpdir(), 'iomt-hot-b-'));
  await cp(library, dirA, { recursive: true });
  await cp(library, dirB, { recursive: true });
  const common = {
    redis: { prefix },
    mappings: { dir: '', reload: 'watch' as const, reloadPollMs: 300 },
  };
  a = await startHarness({
    fhirUrl,
    overrides: { ...common, mappings: { ...common.mappings, dir: dirA } },
  });
  b = await startHarness({
    fhirUrl,
    roles: ['worker'],
    overrides: {
      ...common,
      mappings: { ...common.mappings, dir: dirB },
      worker: { stages: ['normalize', 'fhir'] },
    },
  });
  const secret = await enrol(a.pipeline, monitor, `Patient/${patient}`);
  client = await connectDevice(a.mqttUrl, monitor, secret);
});

afterAll(async () => {
  client?.end(true);
  await b?.close();
  await a?.close();
  await rm(dirA, { recursive: true, force: true });
  await rm(dirB, { recursive: true, force: true });
});

describe('hot reload', () => {
  it('an invalid edit is never activated; a valid one reaches every worker, stamped in FHIR and ClickHouse', async () => {
    // 1. Both processes run the same version.
    const v1 = a.pipeline.templates!.status().active;
    expect(b.pipeline.templates!.status().active).toBe(v1);
    const before = await heartRateAt(recent(120), 61);
    expect(versionTag(before)).toBe(`heartrate@${v1}`);

    // 2. An operator saves a broken expression: A refuses it and keeps v1.
    const vitals = path.join(dirA, 'device/vitals.json');
    const original = await readFile(vitals, 'utf8');
    await writeFile(
      vitals,
      original.replace('"valueExpression": "heartRate"', '"valueExpression": "heartRate +"'),
    );
    await waitFor(
      () => Promise.resolve(a.pipeline.templates!.status()),
      (s) => s.rejected !== undefined,
      20_000,
      'the rejection',
    );
    const ready = await readyz(a);
    expect(ready.status).toBe('ready');
    expect(ready.templates?.active).toBe(v1);
    expect(ready.templates?.rejected?.problems.join('\n')).toMatch(
      /device\/vitals\.json:\d+:\d+: JSONata syntax error/,
    );
    expect(a.logs.some((l) => l.event === 'mappings-rejected')).toBe(true);
    expect(
      await a.pipeline.metrics.registry.getSingleMetricAsString('iomt_mapping_templates_invalid'),
    ).toMatch(/iomt_mapping_templates_invalid 1/);
    const during = await heartRateAt(recent(110), 62);
    expect(versionTag(during)).toBe(`heartrate@${v1}`);
    expect(b.pipeline.templates!.status().active).toBe(v1);

    // 3. The operator fixes it and changes the heart-rate display, with the fixture
    //    that expects it: a new version v2 passes the gates, active on A and on B
    //    (which reads another folder) through Redis.
    const fhirFile = path.join(dirA, 'fhir/vitals.json');
    const fixtureFile = path.join(dirA, 'fixtures/vitals/expected-observations.json');
    await writeFile(
      fixtureFile,
      (await readFile(fixtureFile, 'utf8')).replaceAll('"Heart rate"', '"Heart rate (monitor)"'),
    );
    await writeFile(vitals, original);
    await writeFile(
      fhirFile,
      (await readFile(fhirFile, 'utf8')).replace(
        '"display": "Heart rate"',
        '"display": "Heart rate (monitor)"',
      ),
    );
    const v2 = (
      await waitFor(
        () => Promise.resolve(a.pipeline.templates!.status()),
        (s) => s.active !== v1 && s.rejected === undefined,
        20_000,
        'v2 on A',
      )
    ).active;
    const started = Date.now();
    await waitFor(
      () => Promise.resolve(b.pipeline.templates!.status().active),
      (v) => v === v2,
      20_000,
      'v2 on B',
    );
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(
      b.logs.some(
        (l) => l.event === 'mappings-activated' && l.version === v2 && l.source === 'redis',
      ),
    ).toBe(true);
    // B's own folder was not edited: it runs v2 and only reports the difference.
    expect(b.pipeline.templates!.status().folder).toEqual({ version: v1, differs: true });
    // The watch activation went through the gates, and the audit says so.
    const audit = await a.pipeline.admin!.app.inject({
      method: 'GET',
      url: '/api/mappings/audit',
      headers: { authorization: `Bearer ${HARNESS_ADMIN_TOKEN}` },
    });
    const { entries } = audit.json<{ entries: { action: string; via: string; to: string }[] }>();
    expect(entries.at(-1)).toMatchObject({
      action: 'activate',
      via: 'watch',
      to: v2,
      gates: { passed: true, validate: 'ok', accepted: { changes: true } },
    });

    // 4. New Observations carry v2 in FHIR (meta.tag) and in ClickHouse (template_version).
    const after = await heartRateAt(recent(100), 63);
    expect(versionTag(after)).toBe(`heartrate@${v2}`);
    const rows = await waitFor(
      () =>
        a.pipeline.analyticsStore!.queryRows<{
          id: string;
          template_name: string;
          template_version: string;
        }>(
          `SELECT id, template_name, template_version FROM observations FINAL WHERE patient_id = '${patient}' ORDER BY effective_start`,
        ),
      (r) => r.length === 3,
      30_000,
      'three rows in ClickHouse',
    );
    expect(rows.map((r) => [r.id, r.template_name, r.template_version])).toEqual([
      [before.id, 'heartrate', v1],
      [during.id, 'heartrate', v1],
      [after.id, 'heartrate', v2],
    ]);
  });
});
