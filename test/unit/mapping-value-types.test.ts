/**
 * CodeValueFhir value types — Quantity, SampledData, CodeableConcept, String —
 * in values and components, and what an unusable reading becomes: FHIR R4
 * dataAbsentReason (error, not-a-number, ±infinity, unknown), never a value.
 */
import type { Observation } from 'fhir/r4.js';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  compileSources,
  DEFAULT_POLICY,
  normalizeMessage,
  type MappingSet,
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

const ucum = 'http://unitsofmeasure.org';
const DAR = 'http://terminology.hl7.org/CodeSystem/data-absent-reason';
let mappings: MappingSet;

beforeAll(() => {
  const device = {
    templateType: 'CollectionContent',
    template: ['q', 'sd', 'cc', 's', 'mix'].map((typeName) => ({
      templateType: 'JsonataContent',
      template: {
        typeName,
        typeMatchExpression: `type = "${typeName}"`,
        timestampExpression: 't',
        values: [
          { valueName: 'v', valueExpression: 'v' },
          { valueName: 'w', valueExpression: 'w' },
        ],
      },
    })),
  };
  const t = (typeName: string, rest: object) => ({
    templateType: 'CodeValueFhir',
    template: { typeName, codes: [{ system: 'urn:test', code: typeName }], ...rest },
  });
  const fhir = {
    templateType: 'CollectionFhir',
    template: [
      t('q', {
        value: {
          valueType: 'Quantity',
          valueName: 'v',
          unit: 'mmHg',
          code: 'mm[Hg]',
          system: ucum,
        },
      }),
      t('sd', {
        value: {
          valueType: 'SampledData',
          valueName: 'v',
          defaultPeriod: 1000,
          unit: 'mV',
          code: 'mV',
          system: ucum,
        },
      }),
      t('cc', {
        value: {
          valueType: 'CodeableConcept',
          valueName: 'v',
          text: 'Worn',
          codes: [{ system: 'urn:test', code: 'worn' }],
        },
      }),
      t('s', { value: { valueType: 'String', valueName: 'v' } }),
      t('mix', {
        components: [
          {
            codes: [{ system: 'urn:test', code: 'c1' }],
            value: { valueType: 'Quantity', valueName: 'v', unit: '%', code: '%', system: ucum },
          },
          {
            codes: [{ system: 'urn:test', code: 'c2' }],
            value: { valueType: 'String', valueName: 'w' },
          },
        ],
      }),
    ],
  };
  const r = compileSources([
    { file: 'device/d.json', kind: 'device', text: JSON.stringify(device) },
    { file: 'fhir/f.json', kind: 'fhir', text: JSON.stringify(fhir) },
  ]);
  if (!r.ok) throw new Error(JSON.stringify(r.problems));
  mappings = r.mappings;
});

async function one(body: Record<string, unknown>): Promise<Observation> {
  const out = await normalizeMessage(mappings, {
    policy: ANY_TIME,
    payload: JSON.stringify({ t: '2026-11-26T09:00:00Z', ...body }),
    meta: { deviceId: 'd', topic: 'devices/d/telemetry', receivedAt: 0 },
    patientId: 'p',
    identifierSystem: 'urn:iomt:observation',
  });
  expect(out.observations).toHaveLength(1);
  return out.observations[0]!.observation;
}

const absent = (code: string): unknown =>
  expect.objectContaining({ coding: [{ system: DAR, code }] }) as unknown;

describe('value types', () => {
  it('Quantity: the number with UCUM system and code; numeric strings are numbers', async () => {
    expect((await one({ type: 'q', v: 121 })).valueQuantity).toEqual({
      value: 121,
      unit: 'mmHg',
      system: ucum,
      code: 'mm[Hg]',
    });
    expect((await one({ type: 'q', v: ' 80.5 ' })).valueQuantity?.value).toBe(80.5);
  });

  it('Quantity: unusable readings are dataAbsentReason, never a value', async () => {
    for (const [v, code] of [
      ['n/a', 'error'],
      ['NaN', 'not-a-number'],
      ['Infinity', 'positive-infinity'],
      ['-Infinity', 'negative-infinity'],
      [true, 'error'],
    ] as const) {
      const o = await one({ type: 'q', v });
      expect(o.valueQuantity, String(v)).toBeUndefined();
      expect(o.dataAbsentReason, String(v)).toEqual(absent(code));
    }
    const missing = await one({ type: 'q' });
    expect(missing.dataAbsentReason).toEqual(absent('unknown'));
  });

  it('SampledData for one reading: origin 0 in UCUM, the period, one data point ("E" if unusable)', async () => {
    expect((await one({ type: 'sd', v: 0.42 })).valueSampledData).toEqual({
      origin: { value: 0, unit: 'mV', system: ucum, code: 'mV' },
      period: 1000,
      dimensions: 1,
      data: '0.42',
    });
    expect((await one({ type: 'sd', v: 'noise' })).valueSampledData?.data).toBe('E');
  });

  it('CodeableConcept records the concept; the reading itself is not used', async () => {
    const o = await one({ type: 'cc', v: 'anything' });
    expect(o.valueCodeableConcept).toEqual({
      coding: [{ system: 'urn:test', code: 'worn' }],
      text: 'Worn',
    });
  });

  it('String keeps the reading as text', async () => {
    expect((await one({ type: 's', v: 'sitting' })).valueString).toBe('sitting');
    expect((await one({ type: 's', v: 42 })).valueString).toBe('42');
  });

  it('components carry their own value types, side by side', async () => {
    const o = await one({ type: 'mix', v: 'NaN', w: 'left arm' });
    expect(o.component).toEqual([
      {
        code: { coding: [{ system: 'urn:test', code: 'c1' }] },
        dataAbsentReason: absent('not-a-number'),
      },
      { code: { coding: [{ system: 'urn:test', code: 'c2' }] }, valueString: 'left arm' },
    ]);
  });
});
