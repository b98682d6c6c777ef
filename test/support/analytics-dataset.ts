/**
 * A simulated ward for the analytics tests: six bedside monitors over the six
 * hours before `anchor`, one message per minute each (heart rate, SpO2,
 * respiratory rate; blood pressure every 5 minutes, temperature every 30), with
 * facts planted so that every documented question has a known answer:
 *  - pat-b desaturates (SpO2 88 %) for 8 readings = 7 minutes; pat-c for 3
 *    readings; pat-e twice for 4 readings — only pat-b passes "over 5 minutes";
 *  - pat-d's monitor is silent for 25 minutes; pat-f's stops 90 minutes early;
 *  - pat-a's systolic pressure climbs 5 mmHg an hour;
 *  - pat-e's last hour comes from template version tv-2 (tv-1 before);
 *  - the FHIR commit comes a fixed time after receipt per device, with every
 *    10th reading of mon-c taking 5 s;
 *  - one heart rate of pat-a was corrected in FHIR (130 → 135, version 2);
 *  - dead letters: mon-d 3 × InvalidPayload, mon-e 2 × TimestampOutOfRange,
 *    mon-a 1 × FhirRejected, mon-b 2 × NoPatientAssociated (it sent before the
 *    nurse associated it with pat-b);
 *  - associations: each monitor with its patient from an hour before the data
 *    (mon-b only from 2 minutes before; mon-a served pat-z the day before;
 *    mon-f was unassigned when pat-f was discharged, 89 minutes before the anchor);
 *    a correction recorded late says mon-c was on pat-y from minute 50 to 55, so
 *    the readings of those minutes, charted on pat-c, are charted elsewhere;
 *  - pat-a has one ECG strip (SampledData, 250 points, 10 ms apart).
 * Every fifth message is delivered twice (the mirror is at least once), so a
 * query that forgets FINAL / argMax counts wrong. Deterministic for one anchor.
 *
 * `points` / `messages` are the plain facts the tests compute expectations from.
 */
import type { Observation, ObservationComponent } from 'fhir/r4.js';
import type { AssociationRecord } from '../../src/devices/associations.js';
import { messageSourceUri } from '../../src/fhir/message-source.js';
import type { MessageOutcome, ObservationEnvelope } from '../../src/queues.js';
import { seededRandom } from '../../src/simulator/vitals.js';

export const LOINC = {
  hr: '8867-4',
  spo2: '59408-5',
  rr: '9279-1',
  bpPanel: '85354-9',
  systolic: '8480-6',
  diastolic: '8462-4',
  temp: '8310-5',
  ecg: '131328',
} as const;

const UCUM = 'http://unitsofmeasure.org';
const UNITS: Record<string, [string, string]> = {
  [LOINC.hr]: ['beats/minute', '/min'],
  [LOINC.spo2]: ['%', '%'],
  [LOINC.rr]: ['breaths/minute', '/min'],
  [LOINC.systolic]: ['mmHg', 'mm[Hg]'],
  [LOINC.diastolic]: ['mmHg', 'mm[Hg]'],
  [LOINC.temp]: ['C', 'Cel'],
};

export const PATIENTS = ['pat-a', 'pat-b', 'pat-c', 'pat-d', 'pat-e', 'pat-f'] as const;
export type PatientId = (typeof PATIENTS)[number];
/** FHIR Device id of each patient's monitor (observations.device_id). */
export const deviceOf = (p: PatientId): string => `dev-mon-${p.slice(4)}`;
export const UNIT_OF: Record<PatientId, string> = {
  'pat-a': 'ICU',
  'pat-b': 'ICU',
  'pat-c': 'ICU',
  'pat-d': 'WARD-3',
  'pat-e': 'WARD-3',
  'pat-f': 'WARD-3',
};
/** FHIR commit delay after receipt, ms, per patient's monitor. */
export const COMMIT_DELAY_MS: Record<PatientId, number> = {
  'pat-a': 150,
  'pat-b': 300,
  'pat-c': 450,
  'pat-d': 600,
  'pat-e': 750,
  'pat-f': 900,
};
/** Device clock → broker receipt, ms. */
export const TRANSPORT_MS = 40;

export interface Point {
  readonly patient: PatientId;
  readonly device: string;
  readonly code: string;
  readonly at: number;
  readonly value: number;
  readonly receivedAt: number;
  readonly committedAt: number;
  readonly templateName: string;
  readonly templateVersion: string;
}

export interface MessageFact {
  readonly device: string;
  readonly receivedAt: number;
  readonly outcome: 'processed' | 'dead_lettered';
  readonly errorCode: string;
}

/** Who had a monitor when (the test's own plain list; the history is derived from it). */
export interface AssociationFact {
  /** FHIR Device id, as in observations.device_id. */
  readonly device: string;
  readonly patient: string;
  readonly from: number;
  /** undefined: still open */
  readonly to: number | undefined;
  /** Recorded later, as a correction of what was recorded for that time. */
  readonly correctedAt?: number;
}

export interface Dataset {
  readonly anchor: number;
  readonly associationFacts: readonly AssociationFact[];
  /** MQTT device id → its association history, as the pipeline records it. */
  readonly associations: ReadonlyMap<string, AssociationRecord[]>;
  /** Insert batches, in order; duplicates included. */
  readonly batches: readonly ObservationEnvelope[][];
  readonly messages: readonly MessageOutcome[];
  /** Every numeric value as FHIR finally stores it (latest version, once). */
  readonly points: readonly Point[];
  readonly messageFacts: readonly MessageFact[];
  readonly ecg: { readonly start: number; readonly periodMs: number; readonly values: number[] };
  readonly correctedObservationId: string;
}

const MINUTE = 60_000;
const HOURS = 6;

function quantity(code: string, value: number) {
  const [unit, ucum] = UNITS[code]!;
  return { value, unit, system: UCUM, code: ucum };
}

export function buildDataset(anchorMs: number): Dataset {
  const anchor = Math.floor(anchorMs / MINUTE) * MINUTE;
  const start = anchor - HOURS * 60 * MINUTE;
  const random = seededRandom(20261126);
  const batches: ObservationEnvelope[][] = [];
  const messages: MessageOutcome[] = [];
  const points: Point[] = [];
  const messageFacts: MessageFact[] = [];
  let seq = 0;

  for (let t = start; t <= anchor; t += MINUTE) {
    const minute = (t - start) / MINUTE;
    const batch: ObservationEnvelope[] = [];
    for (const p of PATIENTS) {
      if (p === 'pat-d' && minute >= 160 && minute < 185) continue; // 25 minutes silent
      if (p === 'pat-f' && t > anchor - 90 * MINUTE) continue; // stopped
      const device = deviceOf(p);
      const id = `${device}-${(seq++).toString(36)}`;
      const receivedAt = t + TRANSPORT_MS;
      const slow = p === 'pat-c' && minute % 10 === 0;
      const committedAt = receivedAt + (slow ? 5000 : COMMIT_DELAY_MS[p]);
      const newTemplate = p === 'pat-e' && t > anchor - 60 * MINUTE;
      const templateVersion = newTemplate ? 'tv-2' : 'tv-1';
      const hourIndex = Math.floor(minute / 60);
      let spo2 = Math.round(95 + random() * 4);
      if (p === 'pat-b' && minute >= 240 && minute < 248) spo2 = 88;
      if (p === 'pat-c' && minute >= 100 && minute < 103) spo2 = 87;
      if (p === 'pat-e' && ((minute >= 50 && minute < 54) || (minute >= 200 && minute < 204)))
        spo2 = 89;
      const values: [string, number, string][] = [
        [LOINC.hr, Math.round(60 + random() * 50), 'heartrate'],
        [LOINC.spo2, spo2, 'spo2'],
        [LOINC.rr, Math.round(11 + random() * 11), 'respiratoryrate'],
      ];
      if (minute % 30 === 0)
        values.push([LOINC.temp, Math.round(365 + random() * 20) / 10, 'bodytemperature']);
      const envs: ObservationEnvelope[] = [];
      const observation = (
        name: string,
        code: string,
        extra: Partial<Observation>,
      ): Observation => ({
        resourceType: 'Observation',
        id: `obs-${p}-${code}-${t}`,
        meta: {
          versionId: '1',
          lastUpdated: new Date(committedAt).toISOString(),
          source: messageSourceUri({ messageId: id, receivedAt }),
          tag: [{ system: 'urn:iomt:template', code: `${name}@${templateVersion}` }],
        },
        identifier: [{ system: 'urn:iomt:observation', value: `${device}/${p}/${code}/${t}` }],
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
        code: { coding: [{ system: 'http://loinc.org', code }] },
        subject: { reference: `Patient/${p}` },
        effectiveDateTime: new Date(t).toISOString(),
        device: { reference: `Device/${device}` },
        ...extra,
      });
      const fact = (code: string, value: number, name: string): Point => ({
        patient: p,
        device,
        code,
        at: t,
        value,
        receivedAt,
        committedAt,
        templateName: name,
        templateVersion,
      });
      for (const [code, value, name] of values) {
        envs.push({
          observation: observation(name, code, { valueQuantity: quantity(code, value) }),
          provenance: {
            messageId: id,
            deviceId: device,
            receivedAt,
            templateName: name,
            templateVersion,
          },
        });
        points.push(fact(code, value, name));
      }
      if (minute % 5 === 0) {
        const systolic = p === 'pat-a' ? 110 + 5 * hourIndex : Math.round(110 + random() * 20);
        const diastolic = Math.round(70 + random() * 10);
        const component: ObservationComponent[] = [
          {
            code: { coding: [{ system: 'http://loinc.org', code: LOINC.systolic }] },
            valueQuantity: quantity(LOINC.systolic, systolic),
          },
          {
            code: { coding: [{ system: 'http://loinc.org', code: LOINC.diastolic }] },
            valueQuantity: quantity(LOINC.diastolic, diastolic),
          },
        ];
        envs.push({
          observation: observation('bloodpressure', LOINC.bpPanel, { component }),
          provenance: {
            messageId: id,
            deviceId: device,
            receivedAt,
            templateName: 'bloodpressure',
            templateVersion,
          },
        });
        points.push(
          fact(LOINC.systolic, systolic, 'bloodpressure'),
          fact(LOINC.diastolic, diastolic, 'bloodpressure'),
        );
      }
      batch.push(...envs);
      messages.push({
        message: {
          id,
          deviceId: device.slice(4),
          topic: `devices/${device.slice(4)}/telemetry`,
          qos: 1,
          receivedAt,
          payload: JSON.stringify({ timestamp: new Date(t).toISOString() }),
          encoding: 'utf8',
        },
        patientId: p,
        outcome: 'processed',
        observationCount: envs.length,
        templateVersion,
        decidedAt: committedAt,
      });
      messageFacts.push({ device, receivedAt, outcome: 'processed', errorCode: '' });
    }
    batches.push(batch);
    // At least once: every fifth batch arrives again.
    if (minute % 5 === 2) batches.push(batch);
  }

  // A correction: pat-a's heart rate at minute 30 becomes 135 in version 2.
  const fixAt = start + 30 * MINUTE;
  const original = batches
    .flat()
    .find((e) => e.observation.id === `obs-pat-a-${LOINC.hr}-${fixAt}`)!;
  const fixedCommit = fixAt + 3_600_000;
  const correctedObservationId = original.observation.id!;
  const corrected: ObservationEnvelope = {
    ...original,
    observation: {
      ...original.observation,
      meta: {
        ...original.observation.meta,
        versionId: '2',
        lastUpdated: new Date(fixedCommit).toISOString(),
      },
      valueQuantity: quantity(LOINC.hr, 135),
    },
  };
  batches.push([corrected], [original]); // the newer version, then a stale redelivery of the old
  const i = points.findIndex((x) => x.patient === 'pat-a' && x.code === LOINC.hr && x.at === fixAt);
  points[i] = { ...points[i]!, value: 135, committedAt: fixedCommit };

  // Dead letters.
  const dead = (p: PatientId, code: string, n: number, stage: 'normalize' | 'fhir') => {
    for (let k = 0; k < n; k++) {
      const receivedAt = anchor - (100 + 7 * k) * MINUTE + 500;
      const device = deviceOf(p);
      const id = `${device}-x${k}-${code}`;
      messages.push({
        message: {
          id,
          deviceId: device.slice(4),
          topic: `devices/${device.slice(4)}/telemetry`,
          qos: 1,
          receivedAt,
          payload: '{"bad":',
          encoding: 'utf8',
        },
        patientId: p,
        outcome: 'dead_lettered',
        errorCode: code as MessageOutcome['errorCode'],
        errorStage: stage,
        observationCount: 0,
        templateVersion: 'tv-1',
        decidedAt: receivedAt + 10,
      });
      messageFacts.push({ device, receivedAt, outcome: 'dead_lettered', errorCode: code });
    }
  };
  dead('pat-d', 'InvalidPayload', 3, 'normalize');
  dead('pat-e', 'TimestampOutOfRange', 2, 'normalize');
  dead('pat-a', 'FhirRejected', 1, 'fhir');

  // Associations: who had each monitor, and when.
  const fixedLate = anchor - 10 * MINUTE;
  const associationFacts: AssociationFact[] = [
    {
      device: deviceOf('pat-a'),
      patient: 'pat-z',
      from: start - 26 * 60 * MINUTE,
      to: start - 20 * 60 * MINUTE,
    },
    ...PATIENTS.filter((p) => p !== 'pat-c').map((p) => ({
      device: deviceOf(p),
      patient: p,
      from: start - (p === 'pat-b' ? 2 : 60) * MINUTE,
      to: p === 'pat-f' ? anchor - 89 * MINUTE : undefined,
    })),
    {
      device: deviceOf('pat-c'),
      patient: 'pat-c',
      from: start - 60 * MINUTE,
      to: start + 50 * MINUTE,
    },
    {
      device: deviceOf('pat-c'),
      patient: 'pat-y',
      from: start + 50 * MINUTE,
      to: start + 55 * MINUTE,
      correctedAt: fixedLate,
    },
    {
      device: deviceOf('pat-c'),
      patient: 'pat-c',
      from: start + 55 * MINUTE,
      to: undefined,
      correctedAt: fixedLate,
    },
  ];
  // The history each device's facts give: the plain assignments first, the
  // corrections as recorded later (they win at their times).
  const associations = new Map<string, AssociationRecord[]>();
  const byDevice = new Map<string, AssociationFact[]>();
  for (const f of associationFacts) byDevice.set(f.device, [...(byDevice.get(f.device) ?? []), f]);
  for (const [device, facts] of byDevice) {
    const log: AssociationRecord[] = [];
    const ordered = [...facts].sort(
      (a, b) => (a.correctedAt ?? 0) - (b.correctedAt ?? 0) || a.from - b.from,
    );
    for (const f of ordered) {
      const base = {
        source: 'feed' as const,
        actor: 'adt',
        ...(f.correctedAt !== undefined ? { correction: true } : {}),
      };
      log.push({
        ...base,
        kind: 'assign',
        patientId: f.patient,
        at: f.from,
        recordedAt: f.correctedAt ?? f.from,
        seq: log.length,
      });
      const next = facts.find((g) => g.from === f.to);
      if (f.to !== undefined && !next)
        log.push({
          ...base,
          kind: 'unassign',
          at: f.to,
          recordedAt: f.correctedAt ?? f.to,
          seq: log.length,
        });
    }
    associations.set(device.slice(4), log);
  }
  // mon-b sent before it was associated: held, not charted.
  for (const k of [6, 4]) {
    const receivedAt = start - k * MINUTE + TRANSPORT_MS;
    const device = deviceOf('pat-b');
    messages.push({
      message: {
        id: `${device}-early-${k}`,
        deviceId: device.slice(4),
        topic: `devices/${device.slice(4)}/telemetry`,
        qos: 1,
        receivedAt,
        payload: JSON.stringify({ timestamp: new Date(receivedAt - TRANSPORT_MS).toISOString() }),
        encoding: 'utf8',
      },
      patientId: '',
      outcome: 'dead_lettered',
      errorCode: 'NoPatientAssociated',
      errorStage: 'normalize',
      observationCount: 0,
      templateVersion: 'tv-1',
      decidedAt: receivedAt + 10,
    });
    messageFacts.push({
      device,
      receivedAt,
      outcome: 'dead_lettered',
      errorCode: 'NoPatientAssociated',
    });
  }

  // An ECG strip: 250 points, 10 ms apart, starting 2 hours before the anchor.
  const ecgStart = anchor - 120 * MINUTE + 250;
  const ecgValues = Array.from(
    { length: 250 },
    (_, k) => Math.round(Math.sin(k / 8) * 1000) / 1000,
  );
  const ecgObs: Observation = {
    resourceType: 'Observation',
    id: 'obs-pat-a-ecg-1',
    meta: {
      versionId: '1',
      lastUpdated: new Date(ecgStart + 3000).toISOString(),
      tag: [{ system: 'urn:iomt:template', code: 'ecg@tv-1' }],
    },
    status: 'final',
    code: {
      coding: [
        { system: 'urn:iso:std:iso:11073:10101', code: LOINC.ecg, display: 'MDC_ECG_ELEC_POTL_I' },
      ],
    },
    subject: { reference: 'Patient/pat-a' },
    device: { reference: `Device/${deviceOf('pat-a')}` },
    effectiveDateTime: new Date(ecgStart).toISOString(),
    valueSampledData: {
      origin: { value: 0, unit: 'mV', system: UCUM, code: 'mV' },
      period: 10,
      dimensions: 1,
      data: ecgValues.join(' '),
    },
  };
  batches.push([
    {
      observation: ecgObs,
      provenance: {
        messageId: 'ecg-1',
        deviceId: deviceOf('pat-a'),
        receivedAt: ecgStart + 2600,
        templateName: 'ecg',
        templateVersion: 'tv-1',
      },
    },
  ]);

  return {
    anchor,
    associationFacts,
    associations,
    batches,
    messages,
    points,
    messageFacts,
    ecg: { start: ecgStart, periodMs: 10, values: ecgValues },
    correctedObservationId,
  };
}

/** device_units rows: every monitor in its unit since before the data. */
export function deviceUnitRows(
  anchor: number,
): { device_id: string; unit: string; valid_from: string }[] {
  const from = new Date(anchor - 48 * 3_600_000).toISOString().slice(0, 23).replace('T', ' ');
  return PATIENTS.map((p) => ({ device_id: deviceOf(p), unit: UNIT_OF[p], valid_from: from }));
}
