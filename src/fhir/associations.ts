/**
 * FHIR follows the association history (Create mode; in the Lookup modes the
 * FHIR server is the source of truth and nothing here runs).
 *
 *  - Device.patient is the patient associated NOW (FHIR R4 Device.patient:
 *    "Patient to whom Device is affixed"), absent when none is.
 *  - Each association period is one R4 DeviceUseStatement: subject, device,
 *    timingPeriod [start, end), status active (open) or completed (closed),
 *    recordedOn. A period a later correction superseded is kept with status
 *    entered-in-error, so a clinician sees in the FHIR server which patient a
 *    device served, and when, including what was corrected. (R5's
 *    DeviceAssociation fits better; R4 has DeviceUseStatement, which is what
 *    the PCIM profile's FHIR option and HL7 PHD use for "device in use by
 *    patient".)
 *
 * Contract: sync(deviceId) reads the device's whole history, writes the Device
 * and every changed DeviceUseStatement in one transaction (ids derive from the
 * device and the record that opened the period, so writing twice is harmless),
 * then re-reads the history's length: if a change was recorded meanwhile, it
 * writes again, so the last write always reflects the latest history, whatever
 * order concurrent jobs run in. Throws PipelineError (FhirUnavailable is retried
 * by the queue; PatientNotFound dead-letters the sync, kept for replay).
 */
import { createHash } from 'node:crypto';
import type { BundleEntry, Device, DeviceUseStatement } from 'fhir/r4.js';
import { PipelineError } from '../errors.js';
import {
  patientPeriods,
  periodAt,
  type AssociationPeriod,
  type AssociationRecord,
} from '../devices/associations.js';
import type { AssociationReader } from '../devices/association-store.js';
import { deviceResourceId } from '../mapping/identity.js';
import type { PatientRef } from '../queues.js';
import type { FhirGateway } from './gateway.js';
import type { FhirStore } from './store.js';

/** DeviceUseStatement.identifier.system: value `<device id>/<seq of the opening record>`. */
export const ASSOCIATION_IDENTIFIER_SYSTEM = 'urn:iomt:device-association';
export const PATIENT_IDENTIFIER_SYSTEM = 'urn:iomt:patient';

/** Rounds of write-then-recheck before the job retries later. */
const MAX_ROUNDS = 5;

export interface AssociationSyncDeps {
  readonly fhir: Pick<FhirGateway, 'read' | 'search' | 'transaction'>;
  readonly patients: Pick<FhirStore, 'ensurePatients'>;
  readonly reader: AssociationReader & { length(deviceId: string): Promise<number> };
  readonly deviceIdentifierSystem: string;
  /** FHIR_CREATE_PATIENTS: any missing Patient may be created. */
  readonly createPatients: boolean;
  readonly now?: () => number;
}

export interface AssociationSync {
  sync(deviceId: string): Promise<void>;
}

export function deviceUseStatementId(deviceId: string, openedBy: number): string {
  return 'dus-' + createHash('sha256').update(`${deviceId}/${openedBy}`).digest('hex').slice(0, 40);
}

/** The Patients a history names, each creatable when the setting or an association says so. */
export function patientRefs(
  history: readonly AssociationRecord[],
  createPatients: boolean,
): PatientRef[] {
  const refs = new Map<string, PatientRef>();
  for (const r of history) {
    if (r.kind !== 'assign') continue;
    const create =
      createPatients || r.newPatient === true || refs.get(r.patientId)?.create === true;
    refs.set(r.patientId, {
      id: r.patientId,
      identifier: { system: PATIENT_IDENTIFIER_SYSTEM, value: r.patientId },
      create,
    });
  }
  return [...refs.values()];
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function statement(
  deviceId: string,
  period: AssociationPeriod,
  opener: AssociationRecord,
  status: DeviceUseStatement['status'],
): DeviceUseStatement {
  return {
    resourceType: 'DeviceUseStatement',
    id: deviceUseStatementId(deviceId, opener.seq),
    identifier: [{ system: ASSOCIATION_IDENTIFIER_SYSTEM, value: `${deviceId}/${opener.seq}` }],
    status,
    subject: { reference: `Patient/${period.patientId}` },
    device: { reference: `Device/${deviceResourceId(deviceId)}` },
    timingPeriod: {
      start: iso(period.start),
      ...(period.end !== undefined ? { end: iso(period.end) } : {}),
    },
    recordedOn: iso(opener.recordedAt),
    // Who recorded it and through what: operators' names, never patient data.
    note: [
      {
        text: `recorded by ${opener.actor} via ${opener.source}${opener.correction ? ' (correction)' : ''}`,
      },
    ],
  };
}

/** The fields we own compared: a statement already stored as wanted is not written again. */
function same(a: DeviceUseStatement | undefined, b: DeviceUseStatement): boolean {
  return (
    a !== undefined &&
    a.status === b.status &&
    a.subject.reference === b.subject.reference &&
    a.timingPeriod?.start !== undefined &&
    Date.parse(a.timingPeriod.start) === Date.parse(b.timingPeriod!.start!) &&
    (a.timingPeriod.end === undefined) === (b.timingPeriod!.end === undefined) &&
    (a.timingPeriod.end === undefined ||
      Date.parse(a.timingPeriod.end) === Date.parse(b.timingPeriod!.end!))
  );
}

export function createAssociationSync(deps: AssociationSyncDeps): AssociationSync {
  const now = deps.now ?? Date.now;

  async function write(deviceId: string, history: readonly AssociationRecord[]): Promise<void> {
    const periods = patientPeriods(history);
    const current = periodAt(periods, now());
    await deps.patients.ensurePatients(patientRefs(history, deps.createPatients));

    const id = deviceResourceId(deviceId);
    const existing = await deps.fhir.read<Device>('Device', id);
    const identifier = [
      ...(existing?.identifier ?? []).filter((i) => i.system !== deps.deviceIdentifierSystem),
      { system: deps.deviceIdentifierSystem, value: deviceId },
    ];
    const rest: Device = { ...(existing ?? { resourceType: 'Device' }) };
    delete rest.patient;
    const device: Device = {
      ...rest,
      resourceType: 'Device',
      id,
      identifier,
      status: 'active',
      ...(current ? { patient: { reference: `Patient/${current.patientId}` } } : {}),
    };

    const stored = new Map(
      (
        await deps.fhir.search<DeviceUseStatement>('DeviceUseStatement', {
          device: `Device/${id}`,
          _count: '1000',
        })
      ).map((s) => [s.id ?? '', s]),
    );
    const bySeq = new Map(history.map((r) => [r.seq, r]));
    const wanted: DeviceUseStatement[] = periods.map((p) =>
      statement(deviceId, p, bySeq.get(p.openedBy)!, p.end === undefined ? 'active' : 'completed'),
    );
    const wantedIds = new Set(wanted.map((s) => s.id));
    // Periods no longer in the timeline (a correction superseded them) stay, marked.
    const superseded = [...stored.values()]
      .filter((s) => s.id && !wantedIds.has(s.id) && s.status !== 'entered-in-error')
      .map((s): DeviceUseStatement => ({ ...s, status: 'entered-in-error' }));
    const changed = [...wanted.filter((s) => !same(stored.get(s.id ?? ''), s)), ...superseded];

    const deviceChanged =
      existing?.patient?.reference !== device.patient?.reference ||
      !existing?.identifier?.some(
        (i) => i.system === deps.deviceIdentifierSystem && i.value === deviceId,
      );
    const entries: BundleEntry[] = [...(deviceChanged ? [device] : []), ...changed].map(
      (resource) => ({
        resource,
        request: { method: 'PUT', url: `${resource.resourceType}/${resource.id ?? ''}` },
      }),
    );
    if (entries.length > 0) await deps.fhir.transaction(entries);
  }

  return {
    async sync(deviceId) {
      for (let round = 0; round < MAX_ROUNDS; round++) {
        const history = await deps.reader.history(deviceId);
        await write(deviceId, history);
        if ((await deps.reader.length(deviceId)) === history.length) return;
      }
      throw new PipelineError(
        'FhirUnavailable',
        `the association history of device "${deviceId}" kept changing while it was written; retrying`,
      );
    },
  };
}
