/**
 * Grouped Observations: hourly and daily windows aligned to UTC, correlation-id
 * groups, and merging late, out-of-order and duplicate readings into the stored
 * Observation — the end state does not depend on arrival order, and a
 * duplicate batch changes nothing.
 */
import type { Observation } from 'fhir/r4.js';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  coalesceObservations,
  compileSources,
  mergeObservations,
  normalizeMessage,
  type MappingSet,
  DEFAULT_POLICY,
} from '../../src/mapping/index.js';

/** Sample times here are fixed dates, not near any receipt time: the age limits are checked elsewhere. */
const ANY_TIME = {
  ...DEFAULT_POLICY,
  input: {
    ...DEFAULT_POLICY.input,
    maxAgeMs: Number.MAX_SAFE_INTEGER,
    maxFutureMs: Number.MAX_SAFE_INTEGER,
  },
};

let mappings: MappingSet;

const device = {
  templateType: 'CollectionContent',
  template: [
    {
      templateType: 'JsonataContent',
      template: {
        typeName: 'hr',
        typeMatchExpression: '$[hr]',
        timestampExpression: 't',
        values: [{ valueName: 'hr', valueExpression: 'v', required: true }],
      },
    },
    {
      templateType: 'JsonataContent',
      template: {
        typeName: 'bp',
        typeMatchExpression: '$[$exists(bp)]',
        timestampExpression: 't',
        correlationIdExpression: 'bp',
        values: [
          { valueName: 'sys', valueExpression: 'sys' },
          { valueName: 'dia', valueExpression: 'dia' },
        ],
      },
    },
    {
      templateType: 'JsonataContent',
      template: {
        typeName: 'steps',
        typeMatchExpression: '$[steps]',
        timestampExpression: 't',
        values: [{ valueName: 'n', valueExpression: 'n', required: true }],
      },
    },
  ],
};
const ucum = 'http://unitsofmeasure.org';
const fhir = {
  templateType: 'CollectionFhir',
  template: [
    {
      templateType: 'CodeValueFhir',
      template: {
        typeName: 'hr',
        codes: [{ system: 'http://loinc.org', code: '8867-4' }],
        periodInterval: 60,
        value: {
          valueType: 'SampledData',
          valueName: 'hr',
          defaultPeriod: 60000,
          unit: '/min',
          code: '/min',
          system: ucum,
        },
      },
    },
    {
      templateType: 'CodeValueFhir',
      template: {
        typeName: 'bp',
        codes: [{ system: 'http://loinc.org', code: '85354-9' }],
        periodInterval: -1,
        components: [
          {
            codes: [{ system: 'http://loinc.org', code: '8480-6' }],
            value: {
              valueType: 'Quantity',
              valueName: 'sys',
              unit: 'mmHg',
              code: 'mm[Hg]',
              system: ucum,
            },
          },
          {
            codes: [{ system: 'http://loinc.org', code: '8462-4' }],
            value: {
              valueType: 'Quantity',
              valueName: 'dia',
              unit: 'mmHg',
              code: 'mm[Hg]',
              system: ucum,
            },
          },
        ],
      },
    },
    {
      templateType: 'CodeValueFhir',
      template: {
        typeName: 'steps',
        codes: [{ system: 'http://loinc.org', code: '55423-8' }],
        periodInterval: 1440,
        value: {
          valueType: 'SampledData',
          valueName: 'n',
          defaultPeriod: 3600000,
          unit: 'steps',
          code: '{steps}',
          system: ucum,
        },
      },
    },
  ],
};

beforeAll(() => {
  const r = compileSources([
    { file: 'device/d.json', kind: 'device', text: JSON.stringify(device) },
    { file: 'fhir/f.json', kind: 'fhir', text: JSON.stringify(fhir) },
  ]);
  if (!r.ok) throw new Error(JSON.stringify(r.problems));
  mappings = r.mappings;
});

async function observations(body: unknown): Promise<Observation[]> {
  const out = await normalizeMessage(mappings, {
    policy: ANY_TIME,
    payload: JSON.stringify(body),
    meta: { deviceId: 'm-1', topic: 'devices/m-1/telemetry', receivedAt: 0 },
    patientId: 'p-1',
    identifierSystem: 'urn:iomt:observation',
  });
  expect(out.observations.every((o) => o.merge)).toBe(true);
  return out.observations.map((o) => o.observation);
}

const hr = (t: string, v: number | string) => ({ hr: true, t, v });
const tokens = (o: Observation) => o.valueSampledData!.data!.split(' ');

describe('hourly windows (SampledData)', () => {
  it('one Observation per UTC hour, identified by its window', async () => {
    const obs = await observations([
      hr('2026-11-26T09:59:30+00:00', 70),
      hr('2026-11-26T11:00:00+01:00', 71), // 10:00 UTC: the next window
    ]);
    expect(obs.map((o) => o.identifier?.[0]?.value)).toEqual([
      'm-1/p-1/hr/8867-4/2026-11-26T09:00:00.000Z/PT1H',
      'm-1/p-1/hr/8867-4/2026-11-26T10:00:00.000Z/PT1H',
    ]);
    expect(obs[0]!.effectivePeriod).toEqual({
      start: '2026-11-26T09:00:00.000Z',
      end: '2026-11-26T09:59:59.999Z',
    });
    expect(tokens(obs[0]!)).toHaveLength(60);
    expect(tokens(obs[0]!)[59]).toBe('70');
    expect(tokens(obs[1]!)[0]).toBe('71');
  });

  it('a late, out-of-order batch merges into the stored window by time', async () => {
    const [stored] = await observations([
      hr('2026-11-26T09:30:00Z', 80),
      hr('2026-11-26T09:31:00Z', 81),
    ]);
    const [late] = await observations([hr('2026-11-26T09:05:00Z', 60)]);
    const { observation, changed } = mergeObservations(stored!, late!);
    expect(changed).toBe(true);
    expect(observation.id).toBe(stored!.id);
    const t = tokens(observation);
    expect([t[5], t[30], t[31]]).toEqual(['60', '80', '81']);
    expect(t.filter((x) => x !== 'E')).toHaveLength(3);
  });

  it('the end state does not depend on arrival order', async () => {
    const [a] = await observations([hr('2026-11-26T09:10:00Z', 1), hr('2026-11-26T09:12:00Z', 2)]);
    const [b] = await observations([hr('2026-11-26T09:11:00Z', 3), hr('2026-11-26T09:40:00Z', 4)]);
    const ab = mergeObservations(a!, b!).observation;
    const ba = mergeObservations(b!, a!).observation;
    expect(ab.valueSampledData).toEqual(ba.valueSampledData);
    expect(tokens(ab).slice(10, 13)).toEqual(['1', '3', '2']);
  });

  it('two readings in one slot: the later in time is used (MedTech)', async () => {
    const [o] = await observations([hr('2026-11-26T09:12:30Z', 2), hr('2026-11-26T09:12:10Z', 3)]);
    expect(tokens(o!)[12]).toBe('2');
  });

  it('a duplicate batch changes nothing, and a replayed reading never overwrites', async () => {
    const [stored] = await observations([hr('2026-11-26T09:30:00Z', 80)]);
    const [again] = await observations([hr('2026-11-26T09:30:00Z', 80)]);
    expect(mergeObservations(stored!, again!).changed).toBe(false);
    const [conflicting] = await observations([hr('2026-11-26T09:30:00Z', 99)]);
    const merged = mergeObservations(stored!, conflicting!);
    expect(merged.changed).toBe(false);
    expect(tokens(merged.observation)[30]).toBe('80');
  });

  it('an unusable reading is "E" in the data stream', async () => {
    const [o] = await observations([
      hr('2026-11-26T09:00:00Z', 'n/a'),
      hr('2026-11-26T09:01:00Z', 72),
    ]);
    expect(tokens(o!).slice(0, 2)).toEqual(['E', '72']);
  });

  it('readings of one window in one batch fold into one Observation', async () => {
    const first = await observations([hr('2026-11-26T09:00:00Z', 1)]);
    const second = await observations([hr('2026-11-26T09:02:00Z', 3)]);
    const folded = coalesceObservations([...first, ...second]);
    expect(folded).toHaveLength(1);
    expect(tokens(folded[0]!).slice(0, 3)).toEqual(['1', 'E', '3']);
  });
});

describe('daily windows', () => {
  it('are aligned to UTC midnight, whatever zone the device writes', async () => {
    const [o] = await observations({ steps: true, t: '2026-11-26T00:30:00+02:00', n: 100 });
    expect(o!.effectivePeriod).toEqual({
      start: '2026-11-25T00:00:00.000Z',
      end: '2026-11-25T23:59:59.999Z',
    });
    expect(tokens(o!)).toHaveLength(24);
    expect(tokens(o!)[22]).toBe('100');
  });
});

describe('correlation-id groups', () => {
  it('readings sharing a correlation id become one Observation spanning them', async () => {
    const [o] = await observations([
      { bp: 'cuff-run-7', t: '2026-11-26T09:00:00Z', sys: 120 },
      { bp: 'cuff-run-7', t: '2026-11-26T09:00:20Z', dia: 80 },
    ]);
    expect(o!.identifier?.[0]?.value).toBe('m-1/p-1/bp/85354-9/correlation/cuff-run-7');
    expect(o!.effectivePeriod).toEqual({
      start: '2026-11-26T09:00:00.000Z',
      end: '2026-11-26T09:00:20.000Z',
    });
    expect(o!.component?.map((c) => c.valueQuantity?.value)).toEqual([120, 80]);
  });

  it('a part arriving in a later message merges in; the first value stored is kept', async () => {
    const [stored] = await observations({ bp: 'run-8', t: '2026-11-26T09:00:00Z', sys: 120 });
    const [later] = await observations({
      bp: 'run-8',
      t: '2026-11-26T09:01:00Z',
      sys: 999,
      dia: 79,
    });
    const { observation } = mergeObservations(stored!, later!);
    expect(
      observation.component?.map((c) => [c.code.coding?.[0]?.code, c.valueQuantity?.value]),
    ).toEqual([
      ['8480-6', 120],
      ['8462-4', 79],
    ]);
    expect(observation.effectivePeriod?.end).toBe('2026-11-26T09:01:00.000Z');
  });

  it('a template grouping by correlation id refuses a reading without one', async () => {
    const err = await observations({ bp: '', t: '2026-11-26T09:00:00Z', sys: 1 }).catch(
      (e: unknown) => e,
    );
    expect((err as { code?: string }).code).toBe('RequiredValueMissing');
  });
});
