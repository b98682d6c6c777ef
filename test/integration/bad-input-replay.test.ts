/**
 * `iomt dlq` against the real pipeline: dead letters are listed and filtered by
 * code, device and time, shown with their raw payload, replayed into the stage
 * that failed once the cause is fixed — a Patient deleted on the server that
 * the pipeline may not re-create, restored by the operator (replayed into the
 * FHIR stage, not mapped again), a template
 * fix for a message no template matched (proposed and activated, then mapped
 * again) — and purged.
 */
import { execFile } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { readCandidate } from '../../src/mapping/index.js';
import {
  connectDevice,
  ENROL_SINCE_MS,
  fhirSearch,
  HARNESS_ADMIN_TOKEN,
  publish,
  startHarness,
  uniqueId,
  waitFor,
  type Harness,
} from '../support/harness.js';

const run = promisify(execFile);
const fhirUrl = inject('fhirUrl');
const prefix = uniqueId('dlq');
let dir: string;
let h: Harness | undefined;
const deviceId = uniqueId('pump');
const patientId = uniqueId('dlqpat');
let secret: string;
const at = (minutesAgo: number) => new Date(Date.now() - minutesAgo * 60_000).toISOString();

type Collection = { template: { template: Record<string, unknown> }[] };

/** mappings/ as shipped; with `pump`, also a template for infusion pumps. */
async function mappingsDir(name: string, pump: boolean): Promise<string> {
  const out = path.join(dir, name);
  await cp(path.resolve('mappings'), out, { recursive: true });
  const device = JSON.parse(
    await readFile(path.join(out, 'device', 'vitals.json'), 'utf8'),
  ) as Collection;
  if (pump) {
    const fhir = JSON.parse(
      await readFile(path.join(out, 'fhir', 'vitals.json'), 'utf8'),
    ) as Collection;
    const d = structuredClone(device.template[0]!);
    Object.assign(d.template, {
      typeName: 'infusionrate',
      typeMatchExpression: 'kind = "infusion-pump"',
      values: [{ valueName: 'rate', valueExpression: 'rate', required: true }],
    });
    const f = structuredClone(fhir.template[0]!);
    Object.assign(f.template, {
      typeName: 'infusionrate',
      codes: [
        { system: 'urn:iso:std:iso:11073:10101', code: '157784', display: 'MDC_FLOW_FLUID_PUMP' },
      ],
      value: {
        valueType: 'Quantity',
        valueName: 'rate',
        unit: 'mL/h',
        code: 'mL/h',
        system: 'http://unitsofmeasure.org',
      },
    });
    await mkdir(path.join(out, 'device'), { recursive: true });
    await writeFile(
      path.join(out, 'device', 'infusion-pump.json'),
      JSON.stringify({ templateType: 'CollectionContent', template: [d] }, null, 2),
    );
    await writeFile(
      path.join(out, 'fhir', 'infusion-pump.json'),
      JSON.stringify({ templateType: 'CollectionFhir', template: [f] }, null, 2),
    );
  }
  return out;
}

/** `iomt dlq …` as an operator runs it. */
async function dlq(...args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await run('node', ['bin/iomt.mjs', 'dlq', ...args], {
      env: { ...process.env, QUEUE_PREFIX: prefix },
      timeout: 60_000,
    });
    return { stdout, stderr, code: 0 };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; code?: number };
    return { stdout: e.stdout ?? '', stderr: e.stderr ?? '', code: e.code ?? 1 };
  }
}

function ids(listing: string): string[] {
  return listing
    .split('\n')
    .filter((l) => l.includes('\t'))
    .map((l) => l.split('\t')[0]!);
}

async function observations() {
  const b = await fhirSearch(fhirUrl, 'Observation', { subject: `Patient/${patientId}` });
  return (b.entry ?? []).map((e) => e.resource);
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'iomt-dlq-'));
  h = await startHarness({
    fhirUrl,
    overrides: {
      redis: { prefix },
      mappings: { dir: await mappingsDir('before', false) },
      // The Patient is the hospital's: the pipeline may not create it (again).
      fhir: { createPatients: false },
    },
  });
  const created = await rest('PUT', `Patient/${patientId}`, {
    resourceType: 'Patient',
    id: patientId,
  });
  expect(created.ok).toBe(true);
  secret = (
    await h.pipeline.devices.add(deviceId, {
      actor: 'test',
      source: 'api',
      patient: patientId,
      newPatient: false,
      at: Date.now() - ENROL_SINCE_MS,
    })
  ).secret;
});

afterAll(async () => {
  await h?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** FHIR REST call on the test server. */
function rest(method: string, path_: string, body?: unknown) {
  return fetch(`${fhirUrl}/${path_}`, {
    method,
    headers: { 'content-type': 'application/fhir+json' },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
}

describe('iomt dlq', () => {
  const pumpReading = { timestamp: at(3), kind: 'infusion-pump', rate: 12.5 };
  const hrReading = { timestamp: at(2), heartRate: 81 };
  let patient: unknown;

  it('lists dead letters by code, device and time, and shows the raw payload', async () => {
    // 1. A first reading creates Patient and Device; the worker remembers they exist.
    const client = await connectDevice(h!.mqttUrl, deviceId, secret);
    await publish(client, `devices/${deviceId}/telemetry`, { timestamp: at(4), heartRate: 70 });
    const [first] = await waitFor(observations, (o) => o.length === 1, 30_000, 'first reading');
    // 2. Someone deletes them on the FHIR server (what references them first: references
    //    block deletes — the Observation, and the association's DeviceUseStatement).
    patient = await (await rest('GET', `Patient/${patientId}`)).json();
    const statements = await fhirSearch(fhirUrl, 'DeviceUseStatement', {
      device: `Device/dev-${deviceId}`,
    });
    for (const p of [
      `Observation/${String(first!.id)}`,
      ...(statements.entry ?? []).map((e) => `DeviceUseStatement/${String(e.resource.id)}`),
      `Device/dev-${deviceId}`,
      `Patient/${patientId}`,
    ])
      expect((await rest('DELETE', p)).ok).toBe(true);
    // 3. Two failures: no template for the pump; a reading whose Patient is deleted on
    //    the server, which the pipeline may not create: PatientNotFound, never invented
    //    (the Device it may write again, from the association history).
    await publish(client, `devices/${deviceId}/telemetry`, pumpReading);
    await publish(client, `devices/${deviceId}/telemetry`, hrReading);
    client.end(true);
    await waitFor(
      async () => ids((await dlq('list', '--device', deviceId)).stdout),
      (l) => l.length === 2,
      30_000,
      'two dead letters',
    );

    // 4. Filters.
    const all = await dlq('list', '--device', deviceId);
    expect(all.stdout).toMatch(/\tnormalize\tTemplateNotMatched\t/);
    expect(all.stdout).toMatch(/\tfhir\tPatientNotFound\t/);
    expect(all.stdout).toMatch(/2 of 2 dead letter\(s\)/);
    expect(
      ids((await dlq('list', '--device', deviceId, '--code', 'PatientNotFound')).stdout),
    ).toHaveLength(1);
    expect(ids((await dlq('list', '--device', deviceId, '--since', '10m')).stdout)).toHaveLength(2);
    expect(ids((await dlq('list', '--device', deviceId, '--until', '10m')).stdout)).toHaveLength(0);
    expect(ids((await dlq('list', '--device', 'nobody-at-all')).stdout)).toHaveLength(0);

    // 5. show: the raw message as the device sent it.
    const [id] = ids(
      (await dlq('list', '--device', deviceId, '--code', 'TemplateNotMatched')).stdout,
    );
    const shown = JSON.parse((await dlq('show', id!, '--json')).stdout) as Record<string, unknown>;
    expect(shown).toMatchObject({
      code: 'TemplateNotMatched',
      stage: 'normalize',
      deviceId,
      payloadText: JSON.stringify(pumpReading),
    });
    const missing = await dlq('show', 'no-such-id');
    expect(missing.code).toBe(2); // invalid input: no such id (docs/cli.md)
    expect(missing.stderr).toContain('DeadLetterNotFound');
  });

  it('replays a refused Observation into the FHIR stage once the server-side cause is fixed', async () => {
    // The operator restores the Patient, then replays (the pipeline writes the Device).
    expect((await rest('PUT', `Patient/${patientId}`, patient)).ok).toBe(true);
    const r = await dlq('replay', '--device', deviceId, '--code', 'PatientNotFound');
    expect(r.stdout).toContain('replayed 1 (normalize 0, fhir 1, analytics 0)');
    const found = await waitFor(observations, (o) => o.length === 1, 30_000, 'the Observation');
    expect(found[0]).toMatchObject({ valueQuantity: { value: 81 } });
    expect(ids((await dlq('list', '--device', deviceId)).stdout)).toHaveLength(1);
  });
  it('replays an unmatched message into the normalize stage after a template fix', async () => {
    // The fix is proposed and activated (its gates see the dead letter it rescues).
    const admin = (method: 'POST', url: string, payload: object) =>
      h!.pipeline.admin!.app.inject({
        method,
        url,
        payload,
        headers: { authorization: `Bearer ${HARNESS_ADMIN_TOKEN}` },
      });
    const fix = await readCandidate(await mappingsDir('after', true));
    const { version } = (await admin('POST', '/api/mappings/propose', fix)).json<{
      version: string;
    }>();
    const activated = await admin('POST', '/api/mappings/activate', { version, actor: 'test' });
    expect(activated.json()).toMatchObject({
      outcome: 'activated',
      report: { shadow: { templates: [{ file: 'device/infusion-pump.json', newlyMapped: 1 }] } },
    });
    await waitFor(
      () => Promise.resolve(h!.pipeline.templates!.status().active),
      (v) => v === version,
      20_000,
      'the fix in force',
    );
    const r = await dlq('replay', '--code', 'TemplateNotMatched', '--device', deviceId);
    expect(r.stdout).toContain('replayed 1 (normalize 1, fhir 0, analytics 0)');
    const found = await waitFor(observations, (o) => o.length === 2, 30_000, 'the pump reading');
    expect(found.map((o) => (o.valueQuantity as { value: number }).value).sort()).toEqual([
      12.5, 81,
    ]);
    expect(ids((await dlq('list', '--device', deviceId)).stdout)).toHaveLength(0);
  });

  it('purges only what the filter names, and refuses to purge everything without --all', async () => {
    const client = await connectDevice(h!.mqttUrl, deviceId, secret);
    await publish(client, `devices/${deviceId}/telemetry`, '{"not": json}');
    client.end(true);
    await waitFor(
      async () => ids((await dlq('list', '--device', deviceId)).stdout),
      (l) => l.length === 1,
      30_000,
      'the new dead letter',
    );
    const refused = await dlq('purge');
    expect(refused.code).toBe(2); // invalid input: nothing named (docs/cli.md)
    expect(refused.stderr).toContain('or pass --all');
    expect((await dlq('purge', '--device', deviceId, '--code', 'TemplateNotMatched')).stdout).toBe(
      'purged 0\n',
    );
    expect((await dlq('purge', '--device', deviceId, '--code', 'InvalidPayload')).stdout).toBe(
      'purged 1\n',
    );
    expect(ids((await dlq('list', '--device', deviceId)).stdout)).toHaveLength(0);
  });
});
