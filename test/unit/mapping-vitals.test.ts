/**
 * The shipped vitals templates, through the pure mapping core: message →
 * measurements → Observations, with codes, UCUM units, identifiers and ids.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import type { PipelineError } from '../../src/errors.js';
import { loadMappings, normalizeMessage, type MappingSet } from '../../src/mapping/index.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
let mappings: MappingSet;
const meta = {
  deviceId: 'monitor-7',
  topic: 'devices/monitor-7/telemetry',
  receivedAt: Date.parse('2026-11-26T09:00:05Z'),
};

async function normalize(body: unknown, patientId = 'p-1') {
  return normalizeMessage(mappings, {
    payload: JSON.stringify(body),
    meta,
    patientId,
    identifierSystem: 'urn:iomt:observation',
  });
}

async function failure(body: unknown): Promise<PipelineError> {
  try {
    await normalizeMessage(mappings, {
      payload: typeof body === 'string' ? body : JSON.stringify(body),
      meta,
      patientId: 'p-1',
      identifierSystem: 'urn:iomt:observation',
    });
  } catch (err) {
    return err as PipelineError;
  }
  throw new Error('expected a failure');
}

beforeAll(async () => {
  const r = await loadMappings(path.join(root, 'mappings'));
  if (!r.ok) throw new Error(JSON.stringify(r.problems));
  mappings = r.mappings;
});

describe('vitals templates', () => {
  it('match every fixture to its expected Observations', async () => {
    const dir = path.join(root, 'mappings/fixtures/vitals');
    const input = JSON.parse(readFileSync(path.join(dir, 'message.json'), 'utf8')) as unknown;
    const expected = JSON.parse(
      readFileSync(path.join(dir, 'expected-observations.json'), 'utf8'),
    ) as unknown[];
    const out = await normalize(input);
    // The template version is a content hash: compare everything else exactly.
    const actual = out.observations.map(
      (o) =>
        JSON.parse(
          JSON.stringify(o.observation).replaceAll(mappings.version, '<version>'),
        ) as unknown,
    );
    expect(actual).toEqual(expected);
  });

  it('gives the same id for the same reading, whatever the zone it was written in', async () => {
    const a = await normalize({ timestamp: '2026-11-26T10:00:00+01:00', heartRate: 70 });
    const b = await normalize({ timestamp: '2026-11-26T09:00:00.000Z', heartRate: 70 });
    expect(a.observations[0]!.observation.id).toBe(b.observations[0]!.observation.id);
    expect(a.observations[0]!.observation.effectiveDateTime).toBe('2026-11-26T09:00:00.000Z');
  });

  it('gives different ids for different patients, times and types', async () => {
    const base = await normalize({
      timestamp: '2026-11-26T09:00:00Z',
      heartRate: 70,
      respiratoryRate: 14,
    });
    const other = await normalize({ timestamp: '2026-11-26T09:00:00Z', heartRate: 70 }, 'p-2');
    const later = await normalize({ timestamp: '2026-11-26T09:00:01Z', heartRate: 70 });
    const ids = [...base.observations, ...other.observations, ...later.observations].map(
      (o) => o.observation.id,
    );
    expect(new Set(ids).size).toBe(4);
    for (const id of ids) expect(id).toMatch(/^[A-Za-z0-9\-.]{1,64}$/);
  });

  it('records a non-numeric reading as data absent, not as a value', async () => {
    const out = await normalize({ timestamp: '2026-11-26T09:00:00Z', heartRate: 'n/a' });
    const o = out.observations[0]!.observation;
    expect(o.valueQuantity).toBeUndefined();
    expect(o.dataAbsentReason?.coding?.[0]?.code).toBe('error');
  });

  it('refuses a payload that names another device or patient (DeviceSpoofing)', async () => {
    const at = '2026-11-26T09:00:00Z';
    expect((await failure({ timestamp: at, heartRate: 70, deviceId: 'monitor-8' })).code).toBe(
      'DeviceSpoofing',
    );
    expect((await failure({ timestamp: at, heartRate: 70, patientId: 'p-2' })).code).toBe(
      'DeviceSpoofing',
    );
    const own = await normalize({
      timestamp: at,
      heartRate: 70,
      deviceId: 'monitor-7',
      patientId: 'p-1',
    });
    expect(own.observations).toHaveLength(1);
  });

  it('refuses what it cannot map, each with its own code', async () => {
    expect((await failure('{not json')).code).toBe('InvalidPayload');
    expect((await failure('42')).code).toBe('InvalidPayload');
    expect((await failure({ timestamp: '2026-11-26T09:00:00Z', steps: 10 })).code).toBe(
      'TemplateNotMatched',
    );
    expect((await failure({ timestamp: 'yesterday', heartRate: 70 })).code).toBe(
      'InvalidTimestamp',
    );
    expect((await failure({ timestamp: '2026-11-26T09:00:00', heartRate: 70 })).code).toBe(
      'InvalidTimestamp',
    ); // no zone
    expect((await failure({ heartRate: 70 })).code).toBe('InvalidTimestamp');
    expect(
      (await failure({ timestamp: '2026-11-26T09:00:00Z', bloodPressure: { systolic: 120 } })).code,
    ).toBe('RequiredValueMissing');
  });
});
