/**
 * MedTech's own test inputs (microsoft/iomt-fhir, copied into
 * test/fixtures/medtech/iomt-fhir; its README names each source) give the
 * results MedTech's C# tests assert. docs/mappings.md lists every case.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import type { PipelineError } from '../../src/errors.js';
import { compileExpression } from '../../src/mapping/expressions.js';
import {
  checkMedTechTemplates,
  messageEnvelope,
  normalizeMessage,
  parseEnvelopePolicy,
  type MappingSet,
} from '../../src/mapping/index.js';
import {
  ANY_TIME,
  asMedTech,
  collection,
  EVENTHUB,
  load,
  loaded,
  mapWith,
  meta,
  text,
} from '../support/medtech-iomt.js';

/** A device template producing `type` with the given values from the body. */
function deviceFor(type: string, values: string[]): string {
  return JSON.stringify({
    templateType: 'CollectionContent',
    template: [
      {
        templateType: 'JsonPathContent',
        template: {
          typeName: type,
          typeMatchExpression: '$..[?(@type)]',
          timestampExpression: '$.time',
          values: values.map((v) => ({ valueName: v, valueExpression: `$.${v}` })),
        },
      },
    ],
  });
}

describe('what MedTech loads, loads (CodeValueFhirTemplateFactoryTests, CollectionContentTemplateFactoryTests)', () => {
  it.each([
    ['template-tests/data_CodeValueFhirTemplate_SampledData.json', ['hr']],
    ['template-tests/data_CodeValueFhirTemplate_Components.json', ['diastolic', 'systolic']],
    ['template-tests/data_CodeValueFhirTemplate_Quantity.json', ['diastolic', 'systolic']],
  ])('%s: a lower-case valueType ("sampledData", "quantity") is that value type', (file, names) => {
    const typeName = (JSON.parse(text(file)) as { template: { typeName: string } }).template
      .typeName;
    const m = loaded([
      { kind: 'device', text: deviceFor(typeName, names) },
      { kind: 'fhir', text: collection('fhir', file) },
    ]);
    const spec = m.fhirTemplates.get(typeName)!.spec;
    if (spec.kind !== 'CodeValueFhir') throw new Error('expected CodeValueFhir');
    const types = [spec.value, ...(spec.components ?? []).map((c) => c.value)]
      .filter((v) => v !== undefined)
      .map((v) => v.valueType);
    expect(types).toEqual(
      file.includes('Quantity') ? ['Quantity', 'Quantity'] : names.map(() => 'SampledData'),
    );
  });

  it('template type names in any case, with or without "Template" (data_CollectionContentTemplateEmptyWithType: "collectionContent")', () => {
    const r = load([
      {
        kind: 'device',
        text: text('template-tests/data_CollectionContentTemplateEmptyWithType.json'),
      },
    ]);
    expect(r.ok).toBe(true);
    const m = loaded(
      [
        {
          kind: 'device',
          text: JSON.stringify({
            templateType: 'collectioncontenttemplate',
            template: [
              {
                templateType: 'jsonPathContent',
                template: {
                  typeName: 'a',
                  typeMatchExpression: '$..[?(@a)]',
                  values: [{ valueName: 'a', valueExpression: '$.a' }],
                },
              },
              {
                templateType: 'IOTJSONPATHCONTENTTEMPLATE',
                template: {
                  typeName: 'b',
                  typeMatchExpression: '$..[?(@Body.b)]',
                  values: [{ valueName: 'b', valueExpression: '$.Body.b' }],
                },
              },
              {
                templateType: 'calculatedcontent',
                template: {
                  typeName: 'c',
                  typeMatchExpression: '$..[?(@c)]',
                  values: [{ valueName: 'c', valueExpression: '$.c' }],
                },
              },
            ],
          }),
        },
      ],
      false,
    );
    expect(m.deviceTemplates.map((t) => t.spec.kind)).toEqual([
      'JsonPathContent',
      'IotJsonPathContent',
      'CalculatedContent',
    ]);
  });

  it('an unknown template type is still refused, naming the types it could be', () => {
    const r = load([
      {
        kind: 'device',
        text: JSON.stringify({
          templateType: 'CollectionContent',
          template: [{ templateType: 'mockA', template: {} }],
        }),
      },
    ]);
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.problems[0]!.message).toMatch(/unknown template type "mockA"/);
  });
});

describe('categories, and a template with neither value nor components (CodeValueFhirTemplateProcessorTests.GivenTemplateWithCategory_WhenCreateObservation_ThenCategoryReturned_Test)', () => {
  const mappings = loaded([
    { kind: 'device', text: deviceFor('code', ['p1', 'p2']) },
    { kind: 'fhir', text: text('processor-tests/category-and-code-only.json') },
  ]);

  it('writes the categories as MedTech does (a text-only category has no coding) and no value', async () => {
    const out = await normalizeMessage(mappings, {
      policy: ANY_TIME,
      payload: JSON.stringify({ type: 'x', time: '2019-01-01T00:00:00Z', p1: 'v1', p2: 'v2' }),
      meta: meta('d1'),
      patientId: 'p-1',
      identifierSystem: 'urn:iomt:observation',
    });
    expect(out.observations).toHaveLength(1);
    const o = out.observations[0]!.observation;
    expect(o.category).toEqual([
      {
        coding: [
          { code: 'a', display: 'b', system: 'c' },
          { code: 'd', display: 'e', system: 'f' },
        ],
        text: 'category with two codes',
      },
      { coding: [{ code: 'y', system: 'z' }], text: 'category with no display' },
      { text: 'category with no codes' },
    ]);
    const valueKeys = Object.keys(o).filter(
      (k) => k.startsWith('value') || k === 'dataAbsentReason' || k === 'component',
    );
    expect(valueKeys).toEqual([]);
    expect(o.code.coding?.[0]?.code).toBe('code');
  });
});

describe('IotJsonPathContent over a bridged IoT Hub event (IotJsonPathContentTemplateTests)', () => {
  const single = loaded(
    [
      {
        kind: 'device',
        text: collection('device', 'template-tests/data_IotJsonPathContentTemplateValid.json'),
      },
    ],
    false,
  );
  const multi = loaded(
    [{ kind: 'device', text: collection('device', 'processor-tests/iot-bloodpressure.json') }],
    false,
  );
  const event = (f: string) => JSON.parse(text(`template-tests/${f}`)) as unknown;

  it('data_IotHubPayloadExample: time from Properties.iothub-creation-time-utc, device from SystemProperties', async () => {
    const out = await mapWith(
      single,
      event('data_IotHubPayloadExample.json'),
      'ev-d795-1d04-55ae',
      EVENTHUB,
    );
    expect(out.readings.map(asMedTech)).toEqual([
      {
        type: 'heartrate',
        occurrenceTimeUtc: '2019-01-30T22:45:02.6073744Z',
        deviceId: 'ev-d795-1d04-55ae',
        properties: [{ name: 'hr', value: '203' }],
      },
    ]);
    expect(out.readings[0]!.deviceFrom).toBe('connection');
  });

  it('data_IotHubPayloadExampleMissingCreateTime: the time is SystemProperties.iothub-enqueuedtime', async () => {
    const out = await mapWith(
      single,
      event('data_IotHubPayloadExampleMissingCreateTime.json'),
      'ev-d795-1d04-55ae',
      EVENTHUB,
    );
    expect(out.readings.map((r) => r.occurrenceTime)).toEqual(['2019-02-01T22:46:01.875Z']);
  });

  it('data_IotHubPayloadMultiValueExample: systolic and diastolic in one reading', async () => {
    const out = await mapWith(
      multi,
      event('data_IotHubPayloadMultiValueExample.json'),
      'ev-d795-1d04-55ae',
      EVENTHUB,
    );
    expect(out.readings.map(asMedTech)).toEqual([
      {
        type: 'bloodpressure',
        occurrenceTimeUtc: '2019-01-30T22:45:02.6073744Z',
        deviceId: 'ev-d795-1d04-55ae',
        properties: [
          { name: 'systolic', value: '111' },
          { name: 'diastolic', value: '75' },
        ],
      },
    ]);
  });

  it('a bridge publishing for another device: the bridged device id is a claim (checked as a gateway link), not the connection', async () => {
    const out = await mapWith(
      single,
      event('data_IotHubPayloadExample.json'),
      'bridge-1',
      EVENTHUB,
    );
    expect(out.readings[0]!.deviceId).toBe('ev-d795-1d04-55ae');
    expect(out.readings[0]!.deviceFrom).toBe('payload');
  });

  it("a bridged event without iothub-connection-device-id is MessagePropertyMissing, never the bridge's identity", async () => {
    const e = event('data_IotHubPayloadExample.json') as {
      SystemProperties: Record<string, unknown>;
    };
    delete e.SystemProperties['iothub-connection-device-id'];
    const err = await mapWith(single, e, 'bridge-1', EVENTHUB).catch(
      (x: unknown) => x as PipelineError,
    );
    expect((err as PipelineError).code).toBe('MessagePropertyMissing');
  });

  it('without MEDTECH_ENVELOPE the device is the authenticated one and the time the receipt time (iothub-enqueuedtime)', async () => {
    const body = event('data_IotHubPayloadExample.json') as { Body: unknown };
    const plain = await mapWith(
      loaded(
        [
          {
            kind: 'device',
            text: JSON.stringify({
              templateType: 'CollectionContent',
              template: [
                {
                  templateType: 'IotJsonPathContent',
                  template: {
                    typeName: 'heartrate',
                    typeMatchExpression: '$..[?(@heartrate)]',
                    values: [{ valueName: 'hr', valueExpression: '$.heartrate' }],
                  },
                },
              ],
            }),
          },
        ],
        false,
      ),
      body.Body,
      'd-1',
      { source: 'none' },
    );
    expect(plain.readings.map((r) => [r.deviceId, r.occurrenceTime])).toEqual([
      ['d-1', '2026-01-01T00:00:00.000Z'],
    ]);
  });
});

describe('Properties over MQTT 3.1.1 (MEDTECH_ENVELOPE)', () => {
  const template = (expr: string) =>
    loaded(
      [
        {
          kind: 'device',
          text: JSON.stringify({
            templateType: 'CollectionContent',
            template: [
              {
                templateType: 'CalculatedContent',
                template: {
                  typeName: 'hr',
                  typeMatchExpression: '$..[?(@Body.hr)]',
                  patientIdExpression: expr,
                  timestampExpression: '$.matchedToken.Body.t',
                  values: [{ valueName: 'hr', valueExpression: '$.matchedToken.Body.hr' }],
                },
              },
            ],
          }),
        },
      ],
      false,
    );
  const mappings = template('$.Properties.patientId');

  it('parses the setting, and refuses a pattern without a named level', () => {
    expect(parseEnvelopePolicy('topic:devices/+/telemetry/{patientId}')).toEqual({
      source: 'topic',
      pattern: ['devices', '+', 'telemetry', '{patientId}'],
    });
    expect(parseEnvelopePolicy('field:props')).toEqual({ source: 'field', field: 'props' });
    expect(parseEnvelopePolicy('eventhub')).toEqual({ source: 'eventhub' });
    expect(loadConfig({}).values.medtechEnvelope).toEqual({ source: 'none' });
    expect(() => loadConfig({ MEDTECH_ENVELOPE: 'topic:devices/+/telemetry' })).toThrow(
      /MEDTECH_ENVELOPE/,
    );
  });

  it('topic: a named topic level is a property', async () => {
    const out = await mapWith(
      mappings,
      { hr: 70, t: '2026-01-01T00:00:00Z' },
      'd-1',
      parseEnvelopePolicy('topic:devices/+/telemetry/{patientId}'),
      'devices/d-1/telemetry/p-9',
    );
    expect(out.readings[0]!.claimedPatientId).toBe('p-9');
  });

  it('field: a member of the payload holds the properties and leaves Body', async () => {
    const payload = { props: { patientId: 'p-7' }, hr: 70, t: '2026-01-01T00:00:00Z' };
    const env = messageEnvelope(payload, meta('d-1'), parseEnvelopePolicy('field:props'));
    expect(env.body).toEqual({ hr: 70, t: '2026-01-01T00:00:00Z' });
    const out = await mapWith(mappings, payload, 'd-1', parseEnvelopePolicy('field:props'));
    expect(out.readings[0]!.claimedPatientId).toBe('p-7');
  });

  it('a patient read from a property the message lacks is MessagePropertyMissing, through the pure path', async () => {
    const err = await normalizeMessage(mappings, {
      policy: ANY_TIME,
      payload: JSON.stringify({ hr: 70, t: '2026-01-01T00:00:00Z' }),
      meta: meta('d-1'),
      patientId: 'p-1',
      identifierSystem: 'urn:iomt:observation',
    }).catch((x: unknown) => x as PipelineError);
    expect((err as PipelineError).code).toBe('MessagePropertyMissing');
  });

  it('a device read from a property the message lacks is MessagePropertyMissing, not the MQTT identity', async () => {
    const m = loaded(
      [
        {
          kind: 'device',
          text: JSON.stringify({
            templateType: 'CollectionContent',
            template: [
              {
                templateType: 'JsonPathContent',
                template: {
                  typeName: 'hr',
                  typeMatchExpression: '$..[?(@Body.hr)]',
                  deviceIdExpression: '$.Properties.deviceId',
                  timestampExpression: '$.Body.t',
                  values: [{ valueName: 'hr', valueExpression: '$.Body.hr' }],
                },
              },
            ],
          }),
        },
      ],
      false,
    );
    const err = await mapWith(m, { hr: 70, t: '2026-01-01T00:00:00Z' }, 'd-1', {
      source: 'none',
    }).catch((x: unknown) => x as PipelineError);
    expect((err as PipelineError).code).toBe('MessagePropertyMissing');
  });

  it('eventhub: a payload that is not an event is InvalidPayload naming the setting', () => {
    expect(() => messageEnvelope({ hr: 1 }, meta('d-1'), EVENTHUB)).toThrow(
      /MEDTECH_ENVELOPE=eventhub/,
    );
  });
});

/** iomt-fhir test/Microsoft.Health.Expressions.UnitTests: each [InlineData] and Bad_Data case. */
describe('JMESPath custom functions with MedTech number semantics (Microsoft.Health.Expressions.UnitTests)', () => {
  // long.MaxValue (9223372036854775807) reads as 2^63 in JSON here, as in any JavaScript JSON reader.
  const LONG_MAX = 2 ** 63;
  const LONG_MIN = -(2 ** 63);
  const DOUBLE_MAX = Number.MAX_VALUE;
  const run = (expression: string, given: unknown) => {
    const r = compileExpression({ value: expression, language: 'jmespath' });
    if (!r.ok) throw new Error(r.error.message);
    return r.expression.evaluate(given, { msg: given, meta: meta('d') });
  };
  const binary = (fn: string, cases: [number, number, number][]) =>
    cases.map(([left, right, result]) => [`${fn}(left, right)`, { left, right }, result] as const);
  it.each([
    // AddFunctionTests: Integer_, Double_ and Mixed_Addition_Succeeds
    ...binary('add', [
      [0, 0, 0],
      [-1, 100, 99],
      [0, LONG_MAX, LONG_MAX],
      [0, LONG_MIN, LONG_MIN],
      [-1.0, 10.5, 9.5],
      [0, DOUBLE_MAX, DOUBLE_MAX],
      [0, -DOUBLE_MAX, -DOUBLE_MAX],
    ]),
    // SubtractFunctionTests
    ...binary('subtract', [
      [0, 0, 0],
      [-1, 100, -101],
      [LONG_MAX, LONG_MAX, 0],
      [1.0, 10.5, -9.5],
      [DOUBLE_MAX, DOUBLE_MAX, 0],
      [0, -DOUBLE_MAX, DOUBLE_MAX],
    ]),
    // MultiplyFunctionTests
    ...binary('multiply', [
      [-1, 100, -100],
      [0, LONG_MAX, 0],
      [0, LONG_MIN, 0],
      [0.5, 100.0, 50.0],
      [100, 0.5, 50.0],
      [0, DOUBLE_MAX, 0],
    ]),
    // DivideFunctionTests
    ...binary('divide', [
      [100, 25, 4],
      [100, -1, -100],
      [0, LONG_MAX, 0],
      [0, LONG_MIN, 0],
      [0, DOUBLE_MAX, 0],
    ]),
    // PowerFunctionTests: Integer_ and Double_Power_Succeeds
    ...binary('pow', [
      [0, 0, 1],
      [1, 0, 1],
      [1, 1, 1],
      [10, 2, 100],
      [100, -2, 0], // two integers: Convert.ToInt64(0.0001) = 0, as MedTech
    ]),
  ])('%s with %j = %d', (expression, given, result) => {
    expect(run(expression, given)).toBe(result);
  });

  it('pow with a fractional operand is a double (PowerFunctionTests: 10^2.5 = 316.2278, 100^-2.0 with a double)', () => {
    expect(run('pow(left, right)', { left: 10, right: 2.5 }) as number).toBeCloseTo(316.2278, 4);
    expect(run('pow(left, right)', { left: 100.5, right: -2 }) as number).toBeCloseTo(
      1 / 100.5 ** 2,
      10,
    );
  });

  it('InsertStringFunctionTests: at a position, at the end; outside the string is an error', () => {
    expect(run('insertString(o, i, p)', { o: 'ppy', i: 'ha', p: 0 })).toBe('happy');
    expect(run('insertString(o, i, p)', { o: 'myString', i: '!!', p: 8 })).toBe('myString!!');
    expect(run('insertString(o, i, length(o))', { o: 'sample ', i: 'text' })).toBe('sample text');
    expect(() => run('insertString(o, i, p)', { o: 'myString', i: '!!', p: 9 })).toThrow(
      /out of range/,
    );
    expect(() => run('insertString(o, i, p)', { o: 'ppy', i: 'ha', p: -1 })).toThrow(
      /out of range/,
    );
    expect(() => run('insertString(o, i, p)', { o: 'ppy', i: 'ha', p: 1.5 })).toThrow(/integer/);
  });

  it.each([
    ['pow(left, right)', { left: LONG_MAX, right: 10 }, /overflow/], // PowerFunctionTests.Bad_Data: OverflowException
    ['pow(left, right)', { left: 40, right: 50 }, /overflow/], // CustomFunctions.md: "mathematic error : overflow"
    ['divide(left, right)', { left: 100, right: 0 }, /divide by zero/], // DivideFunctionTests.Bad_Data
    ['divide(left, right)', { left: 50, right: 0 }, /divide by zero/], // CustomFunctions.md
    ['multiply(left, right)', { left: LONG_MAX, right: 2 }, /overflow/], // "must fit within a C# long"
    ['add(left, right)', { left: 'bad', right: 100 }, /./], // each Bad_Data: a string
    ['add(left, right)', { left: [1, 2, 3], right: 100 }, /./], // an array
    ['subtract(left, right)', { left: { value: 1 }, right: 100 }, /./], // an object
    ['fromUnixTimestamp(t)', { t: 1.5 }, /integer/], // JTokenType.Integer only
  ])('%s with %j is an error', (expression, given, error) => {
    expect(() => run(expression, given)).toThrow(error);
  });

  it.each(['pow()', 'pow(left', 'pow(left, right, up)', 'divide()', 'add(left, right, up)'])(
    '%s does not load (Invalid_Argument_Count_Throws_Exception)',
    (expression) => {
      const r = compileExpression({ value: expression, language: 'jmespath' });
      const loads = r.ok
        ? (() => {
            try {
              r.expression.evaluate({}, { msg: {}, meta: meta('d') });
              return true;
            } catch {
              return false;
            }
          })()
        : false;
      expect(loads).toBe(false);
    },
  );
  // FromUnixTimestampTests, FromUnixTimestampMillisecondsTests: UnixTimestampe_Parsing_Succeeds
  // (MedTech formats the date "yyyy-MM-ddTHH:mm:ssz"; the function yields that text here).
  it.each([
    ['fromUnixTimestamp(timestamp)', 0, '1970-01-01T00:00:00+0'],
    ['fromUnixTimestamp(timestamp)', 1625677200, '2021-07-07T17:00:00+0'],
    ['fromUnixTimestamp(timestamp)', -1, '1969-12-31T23:59:59+0'],
    ['fromUnixTimestampMs(timestamp)', 0, '1970-01-01T00:00:00+0'],
    ['fromUnixTimestampMs(timestamp)', 1000, '1970-01-01T00:00:01+0'],
    ['fromUnixTimestampMs(timestamp)', 1626799080000, '2021-07-20T16:38:00+0'],
    ['fromUnixTimestampMs(timestamp)', -1000, '1969-12-31T23:59:59+0'],
  ])('%s with %d = %s', (expression, timestamp, date) => {
    expect(run(expression, { timestamp })).toBe(date);
  });

  it.each(
    ['fromUnixTimestamp', 'fromUnixTimestampMs'].flatMap((fn) =>
      ['badData', [1, 2, 3], { value: 1 }].map((timestamp) => [fn, timestamp] as const),
    ),
  )('%s(timestamp) with %j is an error (Bad_Data_Throws_Exception)', (fn, timestamp) => {
    expect(() => run(`${fn}(timestamp)`, { timestamp })).toThrow();
  });

  it.each([
    'fromUnixTimestamp()',
    'fromUnixTimestamp(timestamp, extraParam)',
    'fromUnixTimestampMs()',
    'fromUnixTimestampMs(timestamp, extraParam)',
  ])('%s does not load or run (Invalid_Argument_Count_Throws_Exception)', (expression) => {
    const r = compileExpression({ value: expression, language: 'jmespath' });
    const runs =
      r.ok &&
      (() => {
        try {
          r.expression.evaluate({ timestamp: 0 }, { msg: {}, meta: meta('d') });
          return true;
        } catch {
          return false;
        }
      })();
    expect(runs).toBe(false);
  });
});

/** MedTech compatibility mode: iomt-fhir's R4 and Ingest unit tests on identity and shape. */
describe('MedTech compatibility mode (FhirImportServiceTests, TimePeriodMeasurementObservationGroupTests, CodeValueFhirTemplateProcessorTests)', () => {
  const SERVICE = 'https://azure.microsoft.com/en-us/services/iomt-fhir-connector/';
  const fhirSet = (template: object, compatibility = true) =>
    JSON.stringify({
      templateType: 'CollectionFhir',
      ...(compatibility ? { compatibility: 'MedTech' } : {}),
      template: [{ templateType: 'CodeValueFhir', template }],
    });
  const heartrate = (periodInterval: number) => ({
    typeName: 'heartrate',
    codes: [{ code: 'code', display: 'a', system: 'b' }],
    periodInterval,
    value: { valueType: 'quantity', valueName: 'hr', unit: 'count/min' },
  });
  const run = (mappings: MappingSet, payload: object) =>
    normalizeMessage(mappings, {
      policy: ANY_TIME,
      payload: JSON.stringify(payload),
      meta: meta('d-1'),
      patientId: undefined,
      identifierSystem: 'urn:iomt:observation',
      resolveIdentity: () => ({ patientId: 'patientId', deviceResourceId: 'deviceId' }),
    });
  const sha = (v: string) => createHash('sha256').update(`${SERVICE}_${v}`).digest('hex');

  it('a single reading: identifier {patient}.{device}.{type}.{start}.{end}, id its SHA-256, code with the service coding, effectivePeriod, issued', async () => {
    const m = loaded([
      { kind: 'device', text: deviceFor('heartrate', ['hr']) },
      { kind: 'fhir', text: fhirSet(heartrate(0)) },
    ]);
    expect(m.compatibility).toBe('medtech');
    const out = await run(m, { type: 'x', time: '2022-09-09T12:13:14.500Z', hr: 70 });
    const o = out.observations[0]!.observation;
    const value = 'patientId.deviceId.heartrate.20220909121314Z.20220909121314Z';
    expect(o.identifier).toEqual([{ system: SERVICE, value }]);
    expect(o.id).toBe(sha(value));
    expect(o.code).toEqual({
      coding: [
        { code: 'code', display: 'a', system: 'b' },
        { system: SERVICE, code: 'heartrate', display: 'heartrate' },
      ],
      text: 'heartrate',
    });
    expect(o.effectivePeriod).toEqual({
      start: '2022-09-09T12:13:14.500Z',
      end: '2022-09-09T12:13:14.500Z',
    });
    expect(o.effectiveDateTime).toBeUndefined();
    expect(o.issued).toBe('2026-01-01T00:00:00.000Z');
    expect(o.valueQuantity).toEqual({ value: 70, unit: 'count/min' });
  });

  it('an hourly window groups a Quantity too; its segment is 20190101000000Z.20190101005959Z', async () => {
    const m = loaded([
      { kind: 'device', text: deviceFor('heartrate', ['hr']) },
      { kind: 'fhir', text: fhirSet(heartrate(60)) },
    ]);
    const out = await run(m, { type: 'x', time: '2019-01-01T00:20:00Z', hr: 70 });
    const o = out.observations[0]!.observation;
    expect(out.observations[0]!.merge).toBe(true);
    expect(o.identifier?.[0]?.value).toBe(
      'patientId.deviceId.heartrate.20190101000000Z.20190101005959Z',
    );
    expect(o.effectivePeriod).toEqual({
      start: '2019-01-01T00:00:00.000Z',
      end: '2019-01-01T00:59:59.999Z',
    });
  });

  it('two Quantity values in one window are an error, as MedTech ("Expected 1 value. Received 2.")', async () => {
    const m = loaded([
      { kind: 'device', text: deviceFor('heartrate', ['hr']) },
      { kind: 'fhir', text: fhirSet(heartrate(60)) },
    ]);
    const err = await run(m, [
      { type: 'x', time: '2019-01-01T00:20:00Z', hr: 70 },
      { type: 'x', time: '2019-01-01T00:40:00Z', hr: 72 },
    ]).catch((x: unknown) => x as PipelineError);
    expect((err as PipelineError).code).toBe('InvalidValue');
  });

  it('a correlation group: the segment is the correlation id (CorrelationMeasurementObservationGroupTests)', async () => {
    const device = JSON.stringify({
      templateType: 'CollectionContent',
      template: [
        {
          templateType: 'JsonPathContent',
          template: {
            typeName: 'heartrate',
            typeMatchExpression: '$..[?(@type)]',
            timestampExpression: '$.time',
            correlationIdExpression: '$.session',
            values: [{ valueName: 'hr', valueExpression: '$.hr' }],
          },
        },
      ],
    });
    const m = loaded([
      { kind: 'device', text: device },
      { kind: 'fhir', text: fhirSet(heartrate(-1)) },
    ]);
    const out = await run(m, { type: 'x', time: '2019-01-01T00:20:00Z', hr: 70, session: 'c-42' });
    expect(out.observations[0]!.observation.identifier?.[0]?.value).toBe(
      'patientId.deviceId.heartrate.c-42',
    );
  });

  it('components: each code gets the service coding of its value name; a component the reading lacks is left out', async () => {
    const m = loaded([
      { kind: 'device', text: deviceFor('bloodpressure', ['systolic', 'diastolic']) },
      {
        kind: 'fhir',
        text: JSON.stringify({
          ...(JSON.parse(
            collection('fhir', 'template-tests/data_CodeValueFhirTemplate_Quantity.json'),
          ) as object),
          compatibility: 'medtech',
        }),
      },
    ]);
    const hourly = await run(m, { type: 'x', time: '2019-01-01T00:20:00Z', systolic: 120 });
    const o = hourly.observations[0]!.observation;
    expect(o.component).toEqual([
      {
        code: {
          coding: [
            { code: '8480-6', display: 'Systolic blood pressure', system: 'http://loinc.org' },
            { system: SERVICE, code: 'systolic', display: 'systolic' },
          ],
          text: 'systolic',
        },
        valueQuantity: {
          value: 120,
          unit: 'mmHg',
          system: 'http://unitsofmeasure.org',
          code: 'mm[Hg]',
        },
      },
    ]);
  });

  it('a value that is not a number is an error, not dataAbsentReason (InvalidQuantityFhirValueException)', async () => {
    const m = loaded([
      { kind: 'device', text: deviceFor('heartrate', ['hr']) },
      { kind: 'fhir', text: fhirSet(heartrate(0)) },
    ]);
    const err = await run(m, { type: 'x', time: '2019-01-01T00:20:00Z', hr: 'HI' }).catch(
      (x: unknown) => x as PipelineError,
    );
    expect((err as PipelineError).code).toBe('InvalidValue');
  });

  it('off by default: our shape and identifier; a set that is half in the mode does not load', async () => {
    const m = loaded([
      { kind: 'device', text: deviceFor('heartrate', ['hr']) },
      { kind: 'fhir', text: fhirSet(heartrate(0), false) },
    ]);
    expect(m.compatibility).toBeUndefined();
    const out = await run(m, { type: 'x', time: '2019-01-01T00:20:00Z', hr: 70 });
    const o = out.observations[0]!.observation;
    expect(o.identifier?.[0]?.system).toBe('urn:iomt:observation');
    expect(o.effectiveDateTime).toBe('2019-01-01T00:20:00.000Z');
    const half = load([
      { kind: 'device', text: deviceFor('heartrate', ['hr']) },
      { kind: 'fhir', text: fhirSet(heartrate(0)), file: 'fhir/a.json' },
      {
        kind: 'fhir',
        file: 'fhir/b.json',
        text: JSON.stringify({ templateType: 'CollectionFhir', template: [] }),
      },
    ]);
    expect(half.ok).toBe(false);
  });
});

describe('the import report names every difference with its template location (sample/templates)', () => {
  const report = (sample: string, compatibility?: string) => {
    const fhir = JSON.parse(text(`samples/${sample}/fhirmapping.json`)) as object;
    return checkMedTechTemplates({
      deviceName: 'devicecontent.json',
      deviceText: text(`samples/${sample}/devicecontent.json`),
      fhirName: 'fhirmapping.json',
      fhirText: JSON.stringify(compatibility ? { ...fhir, compatibility } : fhir, null, 2),
    });
  };

  it.each(['basic', 'sandbox'])(
    'samples/%s loads unchanged; each difference has file, line and column',
    (sample) => {
      const r = report(sample);
      expect(r.ok).toBe(true);
      for (const d of r.differences) {
        expect(d.line, d.message).toBeGreaterThan(0);
        expect(d.column, d.message).toBeGreaterThan(0);
      }
      const text = r.differences.map((d) => d.message).join('\n');
      expect(text).toMatch(/not in MedTech compatibility mode/);
      expect(text).toMatch(/identifier and id follow this pipeline's scheme/);
      expect(text).toMatch(/dataAbsentReason \(MedTech raised an error\)/);
      expect(text).toMatch(/refuses the whole message/);
      expect(text).not.toMatch(/as in MedTech\)/);
    },
  );

  it('in compatibility mode only what it cannot honour remains', () => {
    const text = report('basic', 'MedTech')
      .differences.map((d) => d.message)
      .join('\n');
    expect(text).not.toMatch(
      /not in MedTech compatibility mode|pipeline's scheme|effectiveDateTime/,
    );
    expect(text).toMatch(/issued is the broker receipt time/);
    expect(text).toMatch(/refuses the whole message/);
    expect(text).toMatch(/last millisecond/);
  });

  it('names JMESPath arithmetic with its location (data_Documentation_CalculatedFunction_TransformData_Template: multiply)', () => {
    const r = checkMedTechTemplates({
      deviceName: 'devicecontent.json',
      deviceText: text(
        'template-tests/data_Documentation_CalculatedFunction_TransformData_Template.json',
      ),
      fhirName: 'fhirmapping.json',
      fhirText: JSON.stringify({ templateType: 'CollectionFhir', template: [] }),
    });
    const notes = r.differences.filter((d) => /add\/subtract\/multiply/.test(d.message));
    expect(notes).toHaveLength(1);
    expect(notes[0]!.path).toEqual(['template', 0, 'template', 'values', 0, 'valueExpression']);
    expect(notes[0]!.line).toBeGreaterThan(0);
  });
});

/** CalculatedFunctionContentTemplateDocumentationTests: template, event, and the measurements asserted. */
describe("CalculatedContent from iomt-fhir's documentation tests (JSONPath and JMESPath)", () => {
  const D = 'template-tests/data_Documentation_CalculatedFunction_';
  const cases: [string, string, string, [string, string, Record<string, string>][]][] = [
    [
      'MultipleMatches_And_UsingParentScope',
      'MultipleMatches_Template',
      'MultipleMatches_Payload',
      [
        ['heartrate', '2021-07-13T17:29:01', { systolic: '120', diastolic: '80' }],
        ['heartrate', '2021-07-13T17:28:01', { systolic: '122', diastolic: '82' }],
      ],
    ],
    [
      'Extract_HeartRate',
      'HeartRate_Template',
      'HeartRate_Payload',
      [['heartrate', '2019-02-01T22:46:01', { hr: '78' }]],
    ],
    [
      'Extract_BloodPressure',
      'BloodPressure_Template',
      'BloodPressure_Payload',
      [['bloodpressure', '2019-02-01T22:46:01', { systolic: '123', diastolic: '87' }]],
    ],
    [
      'Extract_MultipleMeasurements',
      'MultipleMeasurements_Template',
      'MultipleMeasurements_Payload',
      [
        ['heartrate', '2019-02-01T22:46:01', { hr: '78' }],
        ['stepcount', '2019-02-01T22:46:01', { steps: '2' }],
      ],
    ],
    [
      'Extract_MultipleMeasurements_FromArray',
      'MultipleMeasurements_Template',
      'MultipleMeasurements_FromArray_Payload',
      [
        ['heartrate', '2019-02-01T20:46:01', { hr: '78' }],
        ['heartrate', '2019-02-01T21:46:01', { hr: '81' }],
        ['heartrate', '2019-02-01T22:46:01', { hr: '72' }],
      ],
    ],
    [
      'Extract_TransformData',
      'TransformData_Template',
      'TransformData_Payload',
      [
        ['heightInMeters', '2019-02-01T22:46:01', { height: String(78 * 0.0254) }],
        ['heightInMeters', '2019-02-01T23:46:01', { height: '1.9304' }],
      ],
    ],
  ];
  it.each(cases)('%s_Test', async (_name, template, payload, expected) => {
    const m = loaded([{ kind: 'device', text: text(`${D}${template}.json`) }], false);
    const event = JSON.parse(text(`${D}${payload}.json`)) as unknown;
    const out = await mapWith(m, event, 'device123', EVENTHUB);
    const got = out.readings.map((r) => [
      r.type,
      r.occurrenceTime.slice(0, 19),
      Object.fromEntries(Object.entries(r.values).map(([k, v]) => [k, String(v)])),
    ]);
    expect(got).toEqual(expected);
    expect(out.readings.every((r) => r.deviceId === 'device123')).toBe(true);
  });
});

describe('IotCentralJsonPathContent (IotCentralJsonPathContentTemplateTests, data_IotCentralPayloadExample)', () => {
  it('blood pressure and the enrichment: device $.deviceId, time $.enqueuedTime', async () => {
    const m = loaded(
      [{ kind: 'device', text: text('processor-tests/iotcentral-templates.json') }],
      false,
    );
    const payload = JSON.parse(
      text('template-tests/data_IotCentralPayloadExample.json'),
    ) as unknown;
    const out = await mapWith(m, payload, '1vzb5ghlsg1', { source: 'none' });
    expect(out.readings.map(asMedTech)).toEqual([
      {
        type: 'bloodPressure',
        occurrenceTimeUtc: '2020-08-05T22:26:55.455Z',
        deviceId: '1vzb5ghlsg1',
        properties: [
          { name: 'bp_diastolic', value: 7 },
          { name: 'bp_systolic', value: 71 },
        ],
      },
      {
        type: 'elevation',
        occurrenceTimeUtc: '2020-08-05T22:26:55.455Z',
        deviceId: '1vzb5ghlsg1',
        properties: [{ name: 'elevation', value: '200m' }],
      },
    ]);
  });
});

describe('the activation shadow run applies MEDTECH_ENVELOPE as the worker does', () => {
  it('a template reading Properties maps recent traffic in the shadow run only with the setting', async () => {
    const { shadowRun } = await import('../../src/mapping/lifecycle/index.js');
    const device = JSON.stringify({
      templateType: 'CollectionContent',
      template: [
        {
          templateType: 'CalculatedContent',
          template: {
            typeName: 'heartrate',
            typeMatchExpression: '$..[?(@Body.hr)]',
            patientIdExpression: '$.Properties.patientId',
            timestampExpression: '$.matchedToken.Body.t',
            values: [{ valueName: 'hr', valueExpression: '$.matchedToken.Body.hr' }],
          },
        },
      ],
    });
    const fhir = (display: string) =>
      JSON.stringify({
        templateType: 'CollectionFhir',
        template: [
          {
            templateType: 'CodeValueFhir',
            template: {
              typeName: 'heartrate',
              codes: [{ code: '8867-4', system: 'http://loinc.org', display }],
              value: { valueType: 'Quantity', valueName: 'hr', unit: '/min' },
            },
          },
        ],
      });
    const version = (display: string) => {
      const files = [
        { file: 'device/hr.json', kind: 'device' as const, text: device },
        { file: 'fhir/hr.json', kind: 'fhir' as const, text: fhir(display) },
      ];
      return { mappings: loaded(files), files };
    };
    const at = Date.parse('2026-01-01T00:00:00Z');
    const samples = [
      {
        id: 'm-1',
        deviceId: 'd-1',
        patientId: 'p-1',
        topic: 'devices/d-1/telemetry/p-1',
        receivedAt: at,
        payload: JSON.stringify({ hr: 70, t: '2026-01-01T00:00:00Z' }),
        source: 'device_messages' as const,
      },
    ];
    const base = {
      identifierSystem: 'urn:iomt:observation',
      input: ANY_TIME.input,
      perTemplate: 10,
    };
    const withEnvelope = await shadowRun(version('Heart rate'), version('Pulse'), samples, {
      ...base,
      envelope: parseEnvelopePolicy('topic:devices/+/telemetry/{patientId}'),
    });
    expect(withEnvelope.templates[0]!.candidate.matched).toBe(1);
    const without = await shadowRun(version('Heart rate'), version('Pulse'), samples, base);
    expect(without.templates[0]!.candidateCodes).toEqual({ MessagePropertyMissing: 1 });
  });
});
