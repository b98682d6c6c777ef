/**
 * MedTech templates from Microsoft's public documentation (test/fixtures/medtech,
 * see its README for the page each comes from), loaded unchanged: each yields
 * the normalized messages and Observations that documentation describes.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { PipelineError } from '../../src/errors.js';
import {
  compileSources,
  mapMessage,
  normalizeMessage,
  type MappingSet,
  type Reading,
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

const dir = path.join(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/medtech');
const text = (f: string) => readFileSync(path.join(dir, f), 'utf8');
const json = <T = unknown>(f: string) => JSON.parse(text(f)) as T;

function load(device: string, fhir?: string): MappingSet {
  const r = compileSources(
    [
      { file: `device/${path.basename(device)}`, kind: 'device', text: text(device) },
      ...(fhir
        ? [{ file: `fhir/${path.basename(fhir)}`, kind: 'fhir' as const, text: text(fhir) }]
        : []),
    ],
    dir,
    { requireFhirTemplates: fhir !== undefined },
  );
  if (!r.ok) throw new Error(JSON.stringify(r.problems, null, 2));
  return r.mappings;
}

/** Our reading in the shape of MedTech's documented normalized message. */
function asMedTech(r: Reading) {
  return {
    type: r.type,
    occurrenceTimeUtc: r.occurrenceTime,
    deviceId: r.deviceId,
    ...(r.claimedPatientId !== undefined ? { patientId: r.claimedPatientId } : {}),
    properties: Object.entries(r.values).map(([name, value]) => ({ name, value })),
  };
}

const meta = (deviceId: string, receivedAt = '2026-01-01T00:00:00Z') => ({
  deviceId,
  topic: `devices/${deviceId}/telemetry`,
  receivedAt: Date.parse(receivedAt),
});

describe('CalculatedContent (JSONPath) from the documentation', () => {
  const mappings = load(
    'calculatedcontent-jsonpath/devicecontent.json',
    'calculatedcontent-jsonpath/fhirmapping.json',
  );

  it('produces the documented normalized message (matchedToken, zone-less time read as UTC)', async () => {
    const out = await mapMessage(
      mappings,
      json('calculatedcontent-jsonpath/message.json'),
      meta('device01'),
    );
    expect(out.readings.map(asMedTech)).toEqual(json('calculatedcontent-jsonpath/normalized.json'));
  });

  it('produces the documented Observation: LOINC code, UCUM Quantity 78 count/min, the device time', async () => {
    const expected = json<{
      code: unknown;
      effective: string;
      valueQuantity: unknown;
    }>('calculatedcontent-jsonpath/observation.json');
    const out = await normalizeMessage(mappings, {
      policy: ANY_TIME,
      payload: text('calculatedcontent-jsonpath/message.json'),
      meta: meta('device01'),
      patientId: 'p-1',
      identifierSystem: 'urn:iomt:observation',
    });
    expect(out.observations).toHaveLength(1);
    const o = out.observations[0]!.observation;
    expect(o.code.coding).toEqual((expected.code as { coding: unknown }).coding);
    expect(o.effectiveDateTime).toBe(expected.effective);
    expect(o.valueQuantity).toEqual(expected.valueQuantity);
  });

  it('refuses a payload naming another device than the authenticated one', async () => {
    const err = await normalizeMessage(mappings, {
      policy: ANY_TIME,
      payload: text('calculatedcontent-jsonpath/message.json'),
      meta: meta('someone-else'),
      patientId: 'p-1',
      identifierSystem: 'urn:iomt:observation',
    }).catch((e: unknown) => e as PipelineError);
    expect((err as PipelineError).code).toBe('DeviceSpoofing');
  });
});

describe('CalculatedContent (JMESPath) from the documentation', () => {
  it('the JMESPath column of the documented table yields the same normalized message', async () => {
    const mappings = load(
      'calculatedcontent-jmespath/devicecontent.json',
      'calculatedcontent-jmespath/fhirmapping.json',
    );
    const out = await mapMessage(
      mappings,
      json('calculatedcontent-jmespath/message.json'),
      meta('device01'),
    );
    expect(out.readings.map(asMedTech)).toEqual(json('calculatedcontent-jmespath/normalized.json'));
    expect(mappings.deviceTemplates[0]!.match.language).toBe('jmespath');
  });
});

describe('IotJsonPathContent from the documentation', () => {
  it('takes the device from authentication and the time from receipt, as IoT Hub metadata', async () => {
    const mappings = load('iotjsonpathcontent/devicecontent.json');
    const m = json<{ deviceId: string; receivedAt: string }>('iotjsonpathcontent/meta.json');
    const out = await mapMessage(
      mappings,
      json('iotjsonpathcontent/message.json'),
      meta(m.deviceId, m.receivedAt),
    );
    expect(out.readings.map(asMedTech)).toEqual([json('iotjsonpathcontent/normalized.json')]);
  });
});

describe('IotCentralJsonPathContent from the documentation', () => {
  it('reads device and time from the IoT Central export; heart rate and blood pressure', async () => {
    const mappings = load('iotcentraljsonpathcontent/devicecontent.json');
    const out = await mapMessage(
      mappings,
      json('iotcentraljsonpathcontent/message.json'),
      meta('1vzb5ghlsg1'),
    );
    expect(out.readings.map(asMedTech)).toEqual(json('iotcentraljsonpathcontent/normalized.json'));
  });
});

describe('JsonPathContent from the documentation', () => {
  const mappings = load('jsonpathcontent/devicecontent.json');
  const messages = json<Record<string, unknown>>('jsonpathcontent/messages.json');
  const run = (name: string) => mapMessage(mappings, messages[name], meta('device123'));
  const time = '2021-02-01T22:46:01.875Z';

  it('heart rate', async () => {
    const out = await run('heartRate');
    expect(out.readings.map(asMedTech)).toEqual([
      {
        type: 'heartrate',
        occurrenceTimeUtc: time,
        deviceId: 'device123',
        properties: [{ name: 'hr', value: '78' }],
      },
    ]);
  });

  it('blood pressure with `@systolic && @diastolic`', async () => {
    const out = await run('bloodPressure');
    expect(out.readings.map(asMedTech)).toEqual([
      {
        type: 'bloodpressure',
        occurrenceTimeUtc: time,
        deviceId: 'device123',
        properties: [
          { name: 'systolic', value: '123' },
          { name: 'diastolic', value: '87' },
        ],
      },
    ]);
  });

  it('several measurements from a single message', async () => {
    const out = await run('multipleMeasurements');
    expect(out.readings.map((r) => [r.type, r.values])).toEqual([
      ['heartrate', { hr: '78' }],
      ['stepcount', { steps: '2' }],
    ]);
  });

  it('an array of readings; the documented third reading (hour 24) is an invalid time, refused with its code', async () => {
    const err = await run('arrayOfReadings').catch((e: unknown) => e as PipelineError);
    expect((err as PipelineError).code).toBe('InvalidTimestamp');
    const fixed = structuredClone(messages.arrayOfReadings) as { endDate: string }[];
    fixed[2]!.endDate = '2021-02-02T00:46:01.8750000Z';
    const out = await mapMessage(mappings, fixed, meta('device123'));
    expect(out.readings.map((r) => [r.occurrenceTime, r.values.hr])).toEqual([
      ['2021-02-01T22:46:01.875Z', '78'],
      ['2021-02-01T23:46:01.875Z', '81'],
      ['2021-02-02T00:46:01.875Z', '72'],
    ]);
  });
});

describe('FHIR destination mappings from the documentation', () => {
  const deviceFor = (types: readonly string[]) => ({
    templateType: 'CollectionContent',
    template: types.map((typeName) => ({
      templateType: 'JsonataContent',
      template: {
        typeName,
        typeMatchExpression: `$[type = "${typeName}"]`,
        timestampExpression: 'time',
        values: [
          { valueName: 'hr', valueExpression: 'hr' },
          { valueName: 'steps', valueExpression: 'steps' },
          { valueName: 'systolic', valueExpression: 'systolic' },
          { valueName: 'diastolic', valueExpression: 'diastolic' },
          { valueName: 'deviceRemoved', valueExpression: 'removed' },
        ],
      },
    })),
  });
  const loadWith = (fhirFile: string, types: readonly string[]) =>
    compileSources([
      { file: 'device/d.json', kind: 'device', text: JSON.stringify(deviceFor(types)) },
      { file: 'fhir/f.json', kind: 'fhir', text: text(fhirFile) },
    ]);
  const SAMPLED = ['heartrate', 'stepsCount', 'bloodpressure'];
  const normalize = (mappings: MappingSet, body: unknown) =>
    normalizeMessage(mappings, {
      policy: ANY_TIME,
      payload: JSON.stringify(body),
      meta: meta('cuff-1'),
      patientId: 'p-1',
      identifierSystem: 'urn:iomt:observation',
    });

  it('SampledData, hourly: values on a 5 s grid from the hour, "E" where none fell', async () => {
    const r = loadWith('fhir-destination/fhirmapping-sampleddata.json', SAMPLED);
    if (!r.ok) throw new Error(JSON.stringify(r.problems));
    const out = await normalize(r.mappings, [
      { type: 'heartrate', time: '2026-03-01T10:00:00Z', hr: 70 },
      { type: 'heartrate', time: '2026-03-01T10:00:10Z', hr: 72 },
      { type: 'heartrate', time: '2026-03-01T10:00:11Z', hr: 73 },
    ]);
    expect(out.observations).toHaveLength(1);
    const o = out.observations[0]!.observation;
    expect(o.effectivePeriod).toEqual({
      start: '2026-03-01T10:00:00.000Z',
      end: '2026-03-01T10:59:59.999Z',
    });
    const sd = o.valueSampledData!;
    expect(sd).toMatchObject({
      origin: { value: 0, unit: 'count/min' },
      period: 5000,
      dimensions: 1,
    });
    const tokens = sd.data!.split(' ');
    expect(tokens).toHaveLength(720); // 3600 s / 5 s
    // Slot 2 (10 s – 15 s) holds two readings: the latest (10:00:11) is used.
    expect(tokens.slice(0, 4)).toEqual(['70', 'E', '73', 'E']);
    expect(tokens.slice(3).every((t) => t === 'E')).toBe(true);
  });

  it('SampledData components (blood pressure) share the window', async () => {
    const r = loadWith('fhir-destination/fhirmapping-sampleddata.json', SAMPLED);
    if (!r.ok) throw new Error(JSON.stringify(r.problems));
    const out = await normalize(r.mappings, {
      type: 'bloodpressure',
      time: '2026-03-01T10:00:05Z',
      systolic: 120,
      diastolic: 80,
    });
    const o = out.observations[0]!.observation;
    expect(
      o.component?.map((c) => [
        c.code.coding?.[0]?.code,
        c.valueSampledData?.data?.split(' ').slice(0, 2),
      ]),
    ).toEqual([
      ['8867-4', ['E', '80']],
      ['8480-6', ['E', '120']],
    ]);
  });

  it('Quantity without UCUM code loads (with a note) and CodeableConcept records the concept', async () => {
    const r = loadWith('fhir-destination/fhirmapping-quantity.json', [...SAMPLED, 'deviceRemoved']);
    // This file has no heartrate / stepsCount templates: the cross-check names exactly those.
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.problems.map((p) => p.message).sort()).toEqual([
      'device type "heartrate" has no FHIR template',
      'device type "stepsCount" has no FHIR template',
    ]);
    expect(
      r.notes.some((n) => /Quantity "systolic" has no UCUM system and code/.test(n.message)),
    ).toBe(true);
    const r2 = compileSources([
      {
        file: 'device/d.json',
        kind: 'device',
        text: JSON.stringify(deviceFor(['bloodpressure', 'deviceRemoved'])),
      },
      {
        file: 'fhir/f.json',
        kind: 'fhir',
        text: text('fhir-destination/fhirmapping-quantity.json'),
      },
    ]);
    if (!r2.ok) throw new Error(JSON.stringify(r2.problems));
    const bp = await normalize(r2.mappings, {
      type: 'bloodpressure',
      time: '2026-03-01T10:00:05Z',
      systolic: 120,
      diastolic: 80,
    });
    expect(bp.observations[0]!.observation.component?.[1]?.valueQuantity).toEqual({
      value: 120,
      unit: 'mmHg',
    });
    const removed = await normalize(r2.mappings, {
      type: 'deviceRemoved',
      time: '2026-03-01T10:00:05Z',
      removed: true,
    });
    expect(removed.observations[0]!.observation.valueCodeableConcept).toEqual({
      text: 'Device Removed',
      coding: [
        { code: 'deviceRemoved', system: 'https://www.mydevice.com/v1', display: 'Device Removed' },
      ],
    });
  });
});
