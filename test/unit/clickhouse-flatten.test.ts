import type { Observation } from 'fhir/r4.js';
import { describe, expect, it } from 'vitest';
import {
  flattenObservation,
  parseFhirDateTime,
  referenceId,
  toClickHouseDateTime,
} from '../../src/clickhouse/flatten.js';
import type { ObservationEnvelope } from '../../src/queues.js';

const RECEIVED_AT = Date.UTC(2025, 0, 15, 10, 0, 1, 250);
const COMMITTED_AT = Date.UTC(2025, 0, 15, 10, 0, 2, 500);

function envelope(observation: Observation): ObservationEnvelope {
  return {
    observation,
    provenance: {
      messageId: 'broker-1:42',
      deviceId: 'dev-001',
      receivedAt: RECEIVED_AT,
      templateName: 'vitals',
      templateVersion: '3',
    },
  };
}

const heartRate: Observation = {
  resourceType: 'Observation',
  id: 'hr-abc',
  meta: { versionId: '2' },
  identifier: [{ system: 'urn:iomt:observation', value: 'dev-001|pat-1|hr|2025-01-15T10:00:00Z' }],
  status: 'final',
  category: [
    {
      coding: [
        {
          system: 'http://terminology.hl7.org/CodeSystem/observation-category',
          code: 'vital-signs',
        },
      ],
    },
  ],
  code: {
    coding: [
      { system: 'urn:iso:std:iso:11073:10101', code: '147842', display: 'MDC_ECG_HEART_RATE' },
      { system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' },
    ],
  },
  subject: { reference: 'Patient/pat-1' },
  device: { reference: 'Device/dev-001' },
  encounter: { reference: 'Encounter/enc-9' },
  effectiveDateTime: '2025-01-15T11:00:00.123+01:00',
  issued: '2025-01-15T10:00:02.000Z',
  valueQuantity: {
    value: 72,
    unit: 'beats/minute',
    system: 'http://unitsofmeasure.org',
    code: '/min',
  },
};

const bloodPressure: Observation = {
  resourceType: 'Observation',
  id: 'bp-xyz',
  status: 'final',
  code: {
    coding: [{ system: 'http://loinc.org', code: '85354-9', display: 'Blood pressure panel' }],
  },
  subject: { reference: 'Patient/pat-1' },
  device: { reference: 'Device/dev-001' },
  effectivePeriod: { start: '2025-01-15T10:00:00Z', end: '2025-01-15T10:00:30Z' },
  component: [
    {
      code: {
        coding: [
          { system: 'http://loinc.org', code: '8480-6', display: 'Systolic blood pressure' },
        ],
      },
      valueQuantity: {
        value: 120,
        unit: 'mmHg',
        system: 'http://unitsofmeasure.org',
        code: 'mm[Hg]',
      },
    },
    {
      code: {
        coding: [
          { system: 'http://loinc.org', code: '8462-4', display: 'Diastolic blood pressure' },
        ],
      },
      valueQuantity: {
        value: 80,
        unit: 'mmHg',
        system: 'http://unitsofmeasure.org',
        code: 'mm[Hg]',
      },
    },
  ],
};

describe('flattenObservation', () => {
  it('flattens a heart-rate Quantity with LOINC as the primary coding', () => {
    const { observation: row, components } = flattenObservation(envelope(heartRate), COMMITTED_AT);
    expect(components).toEqual([]);
    expect(row).toMatchObject({
      id: 'hr-abc',
      identifier_system: 'urn:iomt:observation',
      identifier_value: 'dev-001|pat-1|hr|2025-01-15T10:00:00Z',
      status: 'final',
      patient_id: 'pat-1',
      device_id: 'dev-001',
      gateway_id: '',
      encounter_id: 'enc-9',
      category: 'vital-signs',
      code_system: 'http://loinc.org',
      code: '8867-4',
      code_display: 'Heart rate',
      loinc_code: '8867-4',
      mdc_code: '147842',
      value_num: 72,
      value_unit: 'beats/minute',
      value_ucum: '/min',
      value_string: '',
      data_absent_reason: '',
      // Observation.effectiveDateTime with an offset, normalized to UTC.
      effective_start: '2025-01-15 10:00:00.123',
      effective_end: '2025-01-15 10:00:00.123',
      device_time: '2025-01-15 10:00:00.123',
      issued: '2025-01-15 10:00:02.000',
      received_at: '2025-01-15 10:00:01.250',
      fhir_committed_at: '2025-01-15 10:00:02.500',
      template_name: 'vitals',
      template_version: '3',
      fhir_version_id: '2',
      message_id: 'broker-1:42',
    });
    expect(JSON.parse(row.resource)).toEqual(heartRate);
  });

  it('flattens a blood-pressure panel into one row and two components', () => {
    const { observation: row, components } = flattenObservation(
      envelope(bloodPressure),
      COMMITTED_AT,
    );
    expect(row).toMatchObject({
      id: 'bp-xyz',
      code: '85354-9',
      value_num: null,
      category: '',
      encounter_id: '',
      issued: null,
      fhir_version_id: '',
      // Observation.effectivePeriod keeps both bounds.
      effective_start: '2025-01-15 10:00:00.000',
      effective_end: '2025-01-15 10:00:30.000',
    });
    expect(components).toHaveLength(2);
    const [systolic, diastolic] = components;
    expect(systolic).toMatchObject({
      observation_id: 'bp-xyz',
      component_index: 0,
      patient_id: 'pat-1',
      code: '8480-6',
      loinc_code: '8480-6',
      code_display: 'Systolic blood pressure',
      value_num: 120,
      value_unit: 'mmHg',
      value_ucum: 'mm[Hg]',
      effective_start: '2025-01-15 10:00:00.000',
      template_version: '3',
      fhir_committed_at: '2025-01-15 10:00:02.500',
    });
    expect(diastolic).toMatchObject({
      component_index: 1,
      code: '8462-4',
      value_num: 80,
      value_ucum: 'mm[Hg]',
    });
  });

  it('records Observation.dataAbsentReason with no value', () => {
    const obs: Observation = {
      resourceType: 'Observation',
      id: 'spo2-missing',
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '59408-5' }], text: 'SpO2' },
      subject: { reference: 'Patient/pat-2' },
      effectiveDateTime: '2025-01-15T10:00:00Z',
      dataAbsentReason: {
        coding: [
          { system: 'http://terminology.hl7.org/CodeSystem/data-absent-reason', code: 'error' },
        ],
      },
    };
    const { observation: row } = flattenObservation(envelope(obs), COMMITTED_AT);
    expect(row).toMatchObject({
      value_num: null,
      value_unit: '',
      value_ucum: '',
      data_absent_reason: 'error',
      code_display: 'SpO2',
      device_id: '',
    });
  });

  it('keeps a string value and a non-LOINC code as primary', () => {
    const obs: Observation = {
      resourceType: 'Observation',
      id: 'rhythm-1',
      status: 'preliminary',
      code: {
        coding: [{ system: 'urn:iso:std:iso:11073:10101', code: '8410608', display: 'ECG rhythm' }],
      },
      subject: { reference: 'https://fhir.example/fhir/Patient/pat-3/_history/4' },
      effectiveInstant: '2025-01-15T10:00:00.5Z',
      valueString: 'sinus rhythm',
    };
    const { observation: row } = flattenObservation(envelope(obs), COMMITTED_AT);
    expect(row).toMatchObject({
      patient_id: 'pat-3',
      status: 'preliminary',
      code_system: 'urn:iso:std:iso:11073:10101',
      code: '8410608',
      loinc_code: '',
      mdc_code: '8410608',
      value_string: 'sinus rhythm',
      value_num: null,
      effective_start: '2025-01-15 10:00:00.500',
    });
  });
});

describe('date and reference helpers', () => {
  it('reads partial dates and offset-less times as UTC', () => {
    expect(parseFhirDateTime('2025')).toBe(Date.UTC(2025, 0, 1));
    expect(parseFhirDateTime('2025-03')).toBe(Date.UTC(2025, 2, 1));
    expect(parseFhirDateTime('2025-03-04')).toBe(Date.UTC(2025, 2, 4));
    expect(parseFhirDateTime('2025-03-04T05:06:07')).toBe(Date.UTC(2025, 2, 4, 5, 6, 7));
    expect(parseFhirDateTime('2025-03-04T05:06:07.123456Z')).toBe(
      Date.UTC(2025, 2, 4, 5, 6, 7, 123),
    );
  });

  it('refuses dates that do not parse or fall outside DateTime64', () => {
    expect(() => parseFhirDateTime('yesterday')).toThrow(
      expect.objectContaining({ code: 'InvalidTimestamp' }),
    );
    expect(() => toClickHouseDateTime(Date.UTC(1800, 0, 1))).toThrow(
      expect.objectContaining({ code: 'InvalidTimestamp', stage: 'analytics' }),
    );
  });

  it('takes the id of a reference of the right type only', () => {
    expect(referenceId({ reference: 'Device/d-1' }, 'Device')).toBe('d-1');
    expect(referenceId({ reference: 'Group/g-1' }, 'Patient')).toBe('');
    expect(referenceId(undefined, 'Patient')).toBe('');
  });
});
