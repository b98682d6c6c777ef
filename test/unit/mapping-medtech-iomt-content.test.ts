/**
 * MedTech's own JsonPathContent and normalization test inputs
 * (microsoft/iomt-fhir test/Microsoft.Health.Fhir.Ingest.Template.UnitTests:
 * JsonPathContentTemplateTests, JsonContentTemplateFactoryTests,
 * NormalizationTests) give the measurements those tests assert. Inputs the C#
 * tests build in code are written as JSON in
 * test/fixtures/medtech/iomt-fhir/processor-tests (its README names each);
 * `DateTime.UtcNow` there is a fixed time. docs/mappings.md lists every case.
 */
import { describe, expect, it } from 'vitest';
import type { PipelineError } from '../../src/errors.js';
import type { DeviceTemplateSpec } from '../../src/mapping/index.js';
import {
  asMedTech,
  collection,
  EVENTHUB,
  json,
  load,
  loaded,
  mapWith,
  NONE,
  text,
} from '../support/medtech-iomt.js';

const T = '2026-01-01T10:00:00.1234567Z';

type Fixture = {
  templates: Record<string, unknown>;
  tokens: Record<string, Record<string, unknown>>;
};
const fx = json<Fixture>('processor-tests/jsonpathcontent-tests.json');

/** One of JsonPathContentTemplateTests' templates, alone in a collection. */
const template = (name: string) =>
  loaded(
    [
      {
        kind: 'device',
        text: JSON.stringify({ templateType: 'CollectionContent', template: [fx.templates[name]] }),
      },
    ],
    false,
  );

/** A measurement as MedTech's tests assert it: with patient, encounter and correlation id. */
async function measure(templateName: string, token: string) {
  const out = await mapWith(template(templateName), fx.tokens[token], 'abc', NONE);
  return out.readings.map((r) => ({
    ...asMedTech(r),
    patientId: r.claimedPatientId ?? null,
    encounterId: r.encounterId ?? null,
    correlationId: r.correlationId ?? null,
  }));
}

const refusal = (p: Promise<unknown>) =>
  p.then(
    () => undefined,
    (x: unknown) => (x as PipelineError).code,
  );

const m = (
  type: string,
  time: string,
  properties: [string, string][],
  ids: { patientId?: string; encounterId?: string; correlationId?: string } = {},
) => ({
  type,
  occurrenceTimeUtc: time,
  deviceId: 'abc',
  properties: properties.map(([name, value]) => ({ name, value })),
  patientId: ids.patientId ?? null,
  encounterId: ids.encounterId ?? null,
  correlationId: ids.correlationId ?? null,
});

describe('JsonPathContent (JsonPathContentTemplateTests)', () => {
  it('GivenMultiValueTemplateAndValidTokenWithMissingValue: one measurement with the value present', async () => {
    expect(await measure('MultiValueTemplate', 'heartrate')).toEqual([
      m('hrStepCombo', T, [['hr', '60']]),
    ]);
  });

  it('GivenMultiValueTemplateAndValidTokenWithAllValues: one measurement with both values', async () => {
    expect(await measure('MultiValueTemplate', 'heartrateAndSteps')).toEqual([
      m('hrStepCombo', T, [
        ['hr', '60'],
        ['steps', '2'],
      ]),
    ]);
  });

  it('GivenMultiValueTemplateAndValidTokenArrayWithAllValues: one measurement per array element, in order', async () => {
    expect(await measure('MultiValueRequiredTemplate', 'bloodPressureArrayInBody')).toEqual([
      m('bloodpressure', T, [
        ['systolic', '120'],
        ['diastolic', '80'],
      ]),
      m('bloodpressure', '2026-01-01T09:59:00.1234567Z', [
        ['systolic', '122'],
        ['diastolic', '82'],
      ]),
      m('bloodpressure', '2026-01-01T09:58:00.1234567Z', [
        ['systolic', '100'],
        ['diastolic', '70'],
      ]),
    ]);
  });

  it('the same array as a bridged event (MEDTECH_ENVELOPE=eventhub: the token is the event, Body the array)', async () => {
    const out = await mapWith(
      template('MultiValueRequiredTemplate'),
      fx.tokens.bloodPressureArrayInBody,
      'abc',
      EVENTHUB,
    );
    expect(out.readings.map((r) => r.values)).toEqual([
      { systolic: '120', diastolic: '80' },
      { systolic: '122', diastolic: '82' },
      { systolic: '100', diastolic: '70' },
    ]);
  });

  it('GivenMultiValueRequiredTemplateAndValidTokenWithMissingValue: refused (IncompatibleDataException → RequiredValueMissing)', async () => {
    expect(await refusal(measure('MultiValueRequiredTemplate', 'systolicOnly'))).toBe(
      'RequiredValueMissing',
    );
  });

  it('GivenMultiValueRequiredTemplateAndValidTokenWithAllValues: one measurement', async () => {
    expect(await measure('MultiValueRequiredTemplate', 'bloodPressure')).toEqual([
      m('bloodpressure', T, [
        ['systolic', '120'],
        ['diastolic', '80'],
      ]),
    ]);
  });

  it('GivenSingleValueTemplateAndValidToken: one measurement, no patient, encounter or correlation id', async () => {
    expect(await measure('SingleValueTemplate', 'heartrate')).toEqual([
      m('heartrate', T, [['hr', '60']]),
    ]);
  });

  it('GivenSingleValueOptionalContentTemplateAndValidToken: patient 123 and encounter 789 from the payload', async () => {
    expect(
      await measure('SingleValueOptionalContentTemplate', 'heartrateWithPatientAndEncounter'),
    ).toEqual([m('heartrate', T, [['hr', '60']], { patientId: '123', encounterId: '789' })]);
  });

  it('GivenSingleValueCompoundAndTemplateAndValidToken: `@heartrate && @date` and the required template both match', async () => {
    const expected = [m('heartrate', T, [['hr', '60']])];
    expect(await measure('SingleValueRequiredCompoundAndMatchTemplate', 'heartrate')).toEqual(
      expected,
    );
    expect(await measure('SingleValueRequiredTemplate', 'heartrate')).toEqual(expected);
  });

  it("GivenPropertyWithSpace: `$..[?(@['My Property'])]` and `$.['My Property']`", async () => {
    const out = await mapWith(
      template('PropertyWithSpace'),
      fx.tokens.propertyWithSpace,
      'data',
      NONE,
    );
    expect(out.readings.map(asMedTech)).toEqual([
      {
        type: 'space',
        occurrenceTimeUtc: T,
        deviceId: 'data',
        properties: [{ name: 'prop', value: 'data' }],
      },
    ]);
  });

  it.each([
    ['null', null],
    ['""', ''],
    ['"  "', '  '],
  ])(
    'GivenInvalidTypeMatchExpression (%s): the template is refused, naming typeMatchExpression',
    (_label, expression) => {
      const t = structuredClone(fx.templates.PropertyWithSpace) as {
        template: Record<string, unknown>;
      };
      t.template.typeMatchExpression = expression;
      const r = load(
        [
          {
            kind: 'device',
            text: JSON.stringify({ templateType: 'CollectionContent', template: [t] }),
          },
        ],
        false,
      );
      expect(r.ok).toBe(false);
      if (r.ok) return;
      // MedTech: "An expression must be set for [TypeMatchExpression]"; here the problem
      // points at the field (file, path, line, column).
      expect(r.problems.map((p) => p.path.at(-1))).toContain('typeMatchExpression');
    },
  );

  it('GivenSingleValueCompoundAndTemplateAndPartialToken: no `date`, no measurement', async () => {
    expect(
      await measure('SingleValueRequiredCompoundAndMatchTemplate', 'heartrateWithoutDate'),
    ).toEqual([]);
  });

  it('GivenTemplateAndInvalidToken: nothing matches, no measurement', async () => {
    expect(await measure('SingleValueTemplate', 'noHeartrate')).toEqual([]);
  });

  it('GivenTemplateWithCorrelationIdAndIdPresent: the correlation id is the session', async () => {
    expect(await measure('CorrelationIdTemplate', 'heartrateWithSession')).toEqual([
      m('heartrate', T, [['hr', '60']], {
        correlationId: fx.tokens.heartrateWithSession!.session as string,
      }),
    ]);
  });

  it('GivenTemplateWithCorrelationIdAndIdMissing: refused (IncompatibleDataException → RequiredValueMissing)', async () => {
    expect(await refusal(measure('CorrelationIdTemplate', 'heartrate'))).toBe(
      'RequiredValueMissing',
    );
  });
});

describe('JsonPathContent as MedTech loads it (JsonContentTemplateFactoryTests)', () => {
  /** The template as loaded: each expression's text, as MedTech's factory test reads it. */
  const spec = (file: string) => {
    const t = loaded([{ kind: 'device', text: collection('device', file) }], false)
      .deviceTemplates[0]!;
    const s = t.spec as DeviceTemplateSpec & Record<string, unknown>;
    const text = (e: unknown) => (e as { value?: string } | undefined)?.value;
    return {
      kind: s.kind,
      typeName: s.typeName,
      typeMatchExpression: text(s.typeMatchExpression),
      deviceIdExpression: text(s.deviceIdExpression),
      timestampExpression: text(s.timestampExpression),
      patientIdExpression: text(s.patientIdExpression),
      correlationIdExpression: text(s.correlationIdExpression),
      values: (
        s.values as { valueName: string; valueExpression: unknown; required?: boolean }[]
      ).map((v) => ({
        valueName: v.valueName,
        valueExpression: text(v.valueExpression),
        required: v.required,
      })),
    };
  };

  it('data_JsonPathContentTemplateValid: the expressions MedTech asserts, `required: "true"` is required', () => {
    const s = spec('template-tests/data_JsonPathContentTemplateValid.json');
    expect(s.kind).toBe('JsonPathContent');
    expect(s.typeName).toBe('heartrate');
    expect(s).toMatchObject({
      typeMatchExpression: '$..[?(@heartrate)]',
      deviceIdExpression: '$.device',
      timestampExpression: '$.date',
    });
    expect(s.patientIdExpression).toBeUndefined();
    expect(s.correlationIdExpression).toBeUndefined();
    expect(s.values).toMatchObject([
      { valueName: 'hr', valueExpression: '$.heartrate', required: true },
    ]);
  });

  it('data_JsonPathContentTemplateValidWithOptional: patient and correlation id expressions, and they apply', async () => {
    const file = 'template-tests/data_JsonPathContentTemplateValidWithOptional.json';
    const s = spec(file);
    expect(s).toMatchObject({
      patientIdExpression: '$.patient',
      correlationIdExpression: '$.sessionid',
    });
    const out = await mapWith(
      loaded([{ kind: 'device', text: collection('device', file) }], false),
      { heartrate: '60', device: 'abc', date: T, patient: 'p-1', sessionid: 's-1' },
      'abc',
      NONE,
    );
    expect(out.readings.map((r) => [r.claimedPatientId, r.correlationId, r.values])).toEqual([
      ['p-1', 's-1', { hr: '60' }],
    ]);
  });
});

/** NormalizationTests: both TestInput collections, JSONPath and JMESPath, on the same tokens. */
describe('HrAndSteps collections (NormalizationTests with data_CollectionContentTemplateHrAndSteps[JmesPath])', () => {
  const tokens = json<Record<string, Record<string, unknown>>>(
    'processor-tests/normalization-tokens.json',
  );
  const HR = {
    type: 'heartrate',
    occurrenceTimeUtc: T,
    deviceId: 'abc',
    properties: [{ name: 'hr', value: '60' }],
  };
  const STEPS = {
    type: 'steps',
    occurrenceTimeUtc: T,
    deviceId: 'abc',
    properties: [{ name: 'steps', value: '2' }],
  };
  const cases: [string, string, (typeof HR)[]][] = [
    ['GivenMeasurementWithHrv_ThenNoMeasurementsReturned', 'hrv', []],
    [
      'GivenMeasurementWithHeartRateAndSteps_ThenTwoMeasurementsReturned',
      'heartrateAndSteps',
      [HR, STEPS],
    ],
    ['GivenMeasurementWithHeartRate_ThenOneMeasurementReturned', 'heartrateAndHrv', [HR]],
    ['GivenMeasurementWithSteps_ThenOneMeasurementReturned', 'hrvAndSteps', [STEPS]],
  ];
  const jsonPath = loaded(
    [
      {
        kind: 'device',
        text: text('template-tests/data_CollectionContentTemplateHrAndSteps.json'),
      },
    ],
    false,
  );
  const jmesPath = loaded(
    [
      {
        kind: 'device',
        text: text('template-tests/data_CollectionContentTemplateHrAndStepsJmesPath.json'),
      },
    ],
    false,
  );

  it.each(cases)('JsonPath: %s', async (_name, token, expected) => {
    const out = await mapWith(jsonPath, tokens[token], 'abc', NONE);
    expect(out.readings.map(asMedTech)).toEqual(expected);
  });

  // MedTech's test hands `to_array(@)[?heartrate]` the bare token. MedTech's service,
  // like this pipeline, hands every template the Event Hubs envelope
  // {Body, Properties, SystemProperties}, on which the expression matches nothing.
  // Given the token as the event's Body, the template as written yields what MedTech's
  // service would: nothing (docs/mappings.md, "What still differs").
  it.each(cases)(
    'JmesPath: %s — on the envelope, `to_array(@)[?heartrate]` matches nothing; reading Body, it gives what MedTech asserts',
    async (_name, token, expected) => {
      const out = await mapWith(jmesPath, tokens[token], 'abc', NONE);
      expect(out.readings).toEqual([]);
      // The migration docs/mappings.md gives: match on Body, as MedTech's service needed too.
      const migrated = loaded(
        [
          {
            kind: 'device',
            text: text(
              'template-tests/data_CollectionContentTemplateHrAndStepsJmesPath.json',
            ).replaceAll('to_array(@)', 'to_array(Body)'),
          },
        ],
        false,
      );
      const fixed = await mapWith(migrated, tokens[token], 'abc', NONE);
      expect(fixed.readings.map(asMedTech)).toEqual(expected);
    },
  );
});

describe('several IoT Central exports in one event (NormalizationTests.GivenMultipleTemplatesAndMultipleMessages)', () => {
  it('data_CollectionContentTemplateMultipleIotCentralJsonPath on data_IotCentralPayloadExampleMultipleMessages: 6 measurements, the values MedTech asserts', async () => {
    const m = loaded(
      [
        {
          kind: 'device',
          text: text(
            'template-tests/data_CollectionContentTemplateMultipleIotCentralJsonPath.json',
          ),
        },
      ],
      false,
    );
    const event = json('template-tests/data_IotCentralPayloadExampleMultipleMessages.json');
    const out = await mapWith(m, event, '1qsi9p8t5l2', EVENTHUB);
    const count = (type: string) => out.readings.filter((r) => r.type === type).length;
    expect(out.readings).toHaveLength(6);
    expect([count('heartrate'), count('bloodpressure'), count('respiratoryrate')]).toEqual([
      2, 2, 2,
    ]);
    const first = (type: string) =>
      asMedTech(out.readings.find((r) => r.type === type)!).properties;
    // MedTech compares strings ("75"); values keep their JSON type here (docs/mappings.md).
    expect(first('heartrate')).toEqual([{ name: 'hr', value: 75 }]);
    expect(first('bloodpressure')).toEqual([
      { name: 'systolic', value: 62 },
      { name: 'diastolic', value: 30 },
    ]);
    expect(first('respiratoryrate')).toEqual([{ name: 'respiratoryrate', value: 15 }]);
  });
});
