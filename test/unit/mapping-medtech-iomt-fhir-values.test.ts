/**
 * CodeValueFhir with every value type, in MedTech compatibility mode, against
 * what microsoft/iomt-fhir's R4 ingest tests assert
 * (test/Microsoft.Health.Fhir.R4.Ingest.UnitTests/Template: the value
 * processors for Quantity, CodeableConcept, String and SampledData, and
 * CodeValueFhirTemplateProcessorTests), with the TestInput templates
 * data_CodeValueFhirTemplate_String, _CodeableConceptData and
 * _CodeableConceptAndStringComponent, and the value templates those tests build
 * in code (processor-tests/value-processor-templates.json). The whole pure path
 * runs: device mapping, grouping, FHIR mapping. docs/mappings.md lists every case.
 */
import { describe, expect, it } from 'vitest';
import type { PipelineError } from '../../src/errors.js';
import { mergeObservations } from '../../src/mapping/index.js';
import { deviceFor, loaded, normalizeWith, text } from '../support/medtech-iomt.js';

const SERVICE = 'https://azure.microsoft.com/en-us/services/iomt-fhir-connector/';
const service = (code: string) => ({ system: SERVICE, code, display: code });

/** A TestInput CodeValueFhir file in a compatibility-mode collection. */
function compat(...files: string[]): string {
  return JSON.stringify({
    templateType: 'CollectionFhir',
    compatibility: 'MedTech',
    template: files.map((f) => JSON.parse(text(f)) as unknown),
  });
}

const processors = text('processor-tests/value-processor-templates.json');
const valueSet = loaded([
  ...['quantity', 'concept', 'string', 'sampled'].map((t) => ({
    kind: 'device' as const,
    text: deviceFor(t, ['v']),
    file: `device/${t}.json`,
  })),
  { kind: 'fhir', text: processors },
]);

const observation = async (type: string, v: unknown, time = '2019-01-02T00:00:00Z') => {
  const out = await normalizeWith(valueSet, { type, time, v });
  expect(out.observations).toHaveLength(1);
  return out.observations[0]!.observation;
};

const code = (o: { code: unknown }) => o.code;
const refusal = (p: Promise<unknown>) =>
  p.then(
    () => undefined,
    (x: unknown) => (x as PipelineError).code,
  );

describe('String (StringFhirValueProcessorTests, data_CodeValueFhirTemplate_String)', () => {
  it('GivenValidTemplate_WhenCreateValue: valueString is the value', async () => {
    expect((await observation('string', 'my string value')).valueString).toBe('my string value');
  });

  it('data_CodeValueFhirTemplate_String: valueString, the LOINC code then the service coding, text the type name', async () => {
    const m = loaded([
      { kind: 'device', text: deviceFor('stringDetail', ['reasonText']) },
      { kind: 'fhir', text: compat('template-tests/data_CodeValueFhirTemplate_String.json') },
    ]);
    const out = await normalizeWith(m, {
      type: 'stringDetail',
      time: '2019-01-02T00:00:00Z',
      reasonText: 'battery low',
    });
    const o = out.observations[0]!.observation;
    expect(o.valueString).toBe('battery low');
    expect(code(o)).toEqual({
      coding: [{ code: '8867-4', system: 'http://loinc.org' }, service('stringDetail')],
      text: 'stringDetail',
    });
    expect(o.status).toBe('final');
    expect(o.effectivePeriod).toEqual({
      start: '2019-01-02T00:00:00.000Z',
      end: '2019-01-02T00:00:00.000Z',
    });
  });

  it('GivenValidTemplate_WhenMergeValue: MedTech writes the new string; here the stored one stays (differs, docs/mappings.md)', async () => {
    const incoming = await observation('string', 'new string');
    const existing = { ...incoming, valueString: 'old string' };
    expect(mergeObservations(existing, incoming).observation.valueString).toBe('old string');
  });
});

describe('CodeableConcept (CodeableConceptFhirValueProcessorTests, data_CodeValueFhirTemplate_CodeableConceptData)', () => {
  it("GivenValidTemplate_WhenCreateValue: the template's text and codes, whatever the value", async () => {
    expect((await observation('concept', 'value')).valueCodeableConcept).toEqual({
      text: 'myText',
      coding: [
        { code: 'c1', display: 'd1', system: 's1' },
        { code: 'c2', display: 'd2', system: 's2' },
      ],
    });
  });

  it('data_CodeValueFhirTemplate_CodeableConceptData: "Alarm!" with the alarm event coding', async () => {
    const m = loaded([
      { kind: 'device', text: deviceFor('alarmevent', ['alarm']) },
      {
        kind: 'fhir',
        text: compat('template-tests/data_CodeValueFhirTemplate_CodeableConceptData.json'),
      },
    ]);
    const out = await normalizeWith(m, {
      type: 'alarmevent',
      time: '2019-01-02T00:00:00Z',
      alarm: 'on',
    });
    const o = out.observations[0]!.observation;
    expect(o.valueCodeableConcept).toEqual({
      text: 'Alarm!',
      coding: [
        { code: 'alarmevent', system: 'https://www.contso.com/events/v1', display: 'Alarm Event' },
      ],
    });
    expect(code(o)).toEqual({
      coding: [
        {
          code: 'deviceevent',
          system: 'https://www.contso.com/events/v1',
          display: 'Device Event',
        },
        service('alarmevent'),
      ],
      text: 'alarmevent',
    });
  });

  it("GivenValidTemplate_WhenMergeValue: MedTech writes the template's concept over the stored one; here the stored one stays (differs, docs/mappings.md)", async () => {
    const incoming = await observation('concept', 'value');
    const existing = {
      ...incoming,
      valueCodeableConcept: { text: 'Test', coding: [{ code: 'old' }] },
    };
    expect(mergeObservations(existing, incoming).observation.valueCodeableConcept).toEqual({
      text: 'Test',
      coding: [{ code: 'old' }],
    });
  });
});

describe('CodeableConcept value with a String component (data_CodeValueFhirTemplate_CodeableConceptAndStringComponent)', () => {
  const m = loaded([
    { kind: 'device', text: deviceFor('alarmEvent', ['alarm', 'reason']) },
    {
      kind: 'fhir',
      text: compat(
        'template-tests/data_CodeValueFhirTemplate_CodeableConceptAndStringComponent.json',
      ),
    },
  ]);

  it('the value and the component, each code with the service coding (GivenTemplateWithComponent_WhenCreateObservation)', async () => {
    const out = await normalizeWith(m, {
      type: 'alarmEvent',
      time: '2019-01-02T00:00:00Z',
      alarm: 'on',
      reason: 'lead off',
    });
    const o = out.observations[0]!.observation;
    expect(o.valueCodeableConcept).toEqual({
      text: 'Alarm!',
      coding: [
        { code: 'alarmEvent', system: 'https://www.contoso.com/events/v1', display: 'Alarm Event' },
      ],
    });
    expect(o.component).toEqual([
      {
        code: {
          coding: [
            {
              code: 'reasonText',
              display: 'Reason Text',
              system: 'https://www.contoso.com/events/v1',
            },
            service('reason'),
          ],
          text: 'reason',
        },
        valueString: 'lead off',
      },
    ]);
  });

  it('a reading without the component value: no component, as MedTech (values.TryGetValue)', async () => {
    const out = await normalizeWith(m, {
      type: 'alarmEvent',
      time: '2019-01-02T00:00:00Z',
      alarm: 'on',
    });
    const o = out.observations[0]!.observation;
    expect(o.component).toBeUndefined();
    expect(o.valueCodeableConcept?.text).toBe('Alarm!');
  });
});

describe('Quantity (QuantityFhirValueProcessorTests)', () => {
  it("GivenValidTemplate_WhenCreateValue: 22.4 with the template's unit, system and code", async () => {
    expect((await observation('quantity', '22.4')).valueQuantity).toEqual({
      value: 22.4,
      unit: 'myUnit',
      system: 'mySystem',
      code: 'myCode',
    });
  });

  it('GivenInvalidDataValue ("NaN"): refused (InvalidQuantityFhirValueException → InvalidValue)', async () => {
    expect(await refusal(observation('quantity', 'NaN'))).toBe('InvalidValue');
  });

  it('GivenValidTemplate_WhenMergeValue: MedTech writes 22.4 over the stored 1; here the stored one stays (differs, docs/mappings.md)', async () => {
    const incoming = await observation('quantity', '22.4');
    const existing = {
      ...incoming,
      valueQuantity: { value: 1, system: 's', code: 'c', unit: 'u' },
    };
    expect(mergeObservations(existing, incoming).observation.valueQuantity).toEqual({
      value: 1,
      system: 's',
      code: 'c',
      unit: 'u',
    });
  });
});

describe('SampledData (SampledDataFhirValueProcessorTests, SampledDataProcessorTests)', () => {
  it('GivenValidTemplate_WhenCreateValue: period, origin unit, one dimension; a single reading is one slot', async () => {
    expect((await observation('sampled', 1, '2019-01-01T00:00:00.000Z')).valueSampledData).toEqual({
      origin: { value: 0, unit: 'myUnits' },
      period: 10,
      dimensions: 1,
      data: '1',
    });
  });

  it('data_CodeValueFhirTemplate_SampledData ("sampledData", hourly, 5000 ms): 720 slots, E for missing values (GivenDataStartingOnBoundaryAndMissingValues)', async () => {
    const m = loaded([
      { kind: 'device', text: deviceFor('heartrate', ['hr']) },
      { kind: 'fhir', text: compat('template-tests/data_CodeValueFhirTemplate_SampledData.json') },
    ]);
    const out = await normalizeWith(
      m,
      [0, 2, 4, 6].map((i) => ({
        type: 'heartrate',
        time: new Date(Date.parse('2019-01-01T00:00:00Z') + i * 5000).toISOString(),
        hr: 60 + i,
      })),
    );
    const o = out.observations[0]!.observation;
    expect(o.identifier?.[0]?.value).toBe(
      'patientId.deviceId.heartrate.20190101000000Z.20190101005959Z',
    );
    const sd = o.valueSampledData!;
    expect(sd.origin).toMatchObject({ value: 0, unit: 'bpm' });
    expect(sd.period).toBe(5000);
    const slots = sd.data!.split(' ');
    expect(slots).toHaveLength(720);
    expect(slots.slice(0, 8)).toEqual(['60', 'E', '62', 'E', '64', 'E', '66', 'E']);
  });
});

describe('components and merging (CodeValueFhirTemplateProcessorTests)', () => {
  it('GivenTemplateWithComponent_WhenMergObservation: the stored component is merged, a new one added after it', async () => {
    const m = loaded([
      { kind: 'device', text: deviceFor('code', ['p2', 'p3']) },
      {
        kind: 'fhir',
        text: JSON.stringify({
          templateType: 'CollectionFhir',
          compatibility: 'MedTech',
          template: [
            {
              templateType: 'CodeValueFhir',
              template: {
                typeName: 'code',
                codes: [{ code: 'code1', display: 'a', system: 'b' }],
                periodInterval: 1440,
                components: [
                  {
                    codes: [{ code: 'code2', display: 'c', system: 'd' }],
                    value: { valueType: 'Quantity', valueName: 'p2' },
                  },
                  {
                    codes: [{ code: 'code3', display: 'e', system: 'f' }],
                    value: { valueType: 'Quantity', valueName: 'p3' },
                  },
                ],
              },
            },
          ],
        }),
      },
    ]);
    const first = await normalizeWith(m, { type: 'code', time: '2019-01-01T01:00:00Z', p2: 2 });
    const second = await normalizeWith(m, {
      type: 'code',
      time: '2019-01-01T02:00:00Z',
      p2: 3,
      p3: 4,
    });
    const existing = first.observations[0]!.observation;
    const incoming = second.observations[0]!.observation;
    expect(incoming.id).toBe(existing.id);
    const merged = mergeObservations(existing, incoming).observation;
    expect(merged.valueQuantity).toBeUndefined();
    expect(merged.component?.map((c) => c.code.coding?.map((x) => x.code))).toEqual([
      ['code2', 'p2'],
      ['code3', 'p3'],
    ]);
    // MedTech merges p2 to the newer value (3); the stored value stays here (differs).
    expect(merged.component?.map((c) => c.valueQuantity?.value)).toEqual([2, 4]);
    expect(merged.status).toBe(existing.status);
  });
});
