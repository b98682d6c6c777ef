/**
 * Identity resolution for the normalize worker, with MedTech's modes:
 *
 *  - Create: the patient is the one ASSOCIATED with the reading's device AT THE
 *    READING'S TIME (devices/associations.ts, IHE PCIM); none → the reading is
 *    dead-lettered as NoPatientAssociated, never attributed to whoever holds the
 *    device when the job runs. Patient and Device are written by the FHIR writer
 *    (Device from the association history, Patient only when it may be created).
 *  - Lookup: the FHIR Device carrying the device's identifier must exist and
 *    name its Patient (Device.patient), which must exist. A payload naming
 *    another patient is refused (PatientDeviceMismatch). MedTech's semantics:
 *    the FHIR server is the source of truth, as it is now (docs/associations.md).
 *  - LookupWithEncounter: Lookup, and the reading must name an Encounter that
 *    exists (Encounter.identifier).
 *
 * In every mode a reading naming an encounter is linked to the Encounter with
 * that identifier (EncounterNotFound when none), and a device other than the
 * authenticated one may be named only by a gateway linked to it at the reading's
 * time.
 *
 * Contract: forJob(authenticated ids) reads, once per job and in one round trip,
 * the registry records and association histories of the job's devices (no cache
 * across jobs: a change is in force for the next job);
 * forMessage(id) → { resolve, patients(), devices() }:
 * `resolve` is the IdentityResolver of the pure core; patients() and devices()
 * list what the FHIR writer must ensure first. FHIR reads (Lookup modes,
 * encounters) are cached for `cacheMs`; FhirUnavailable is thrown on a transient
 * failure, so the whole ingest job retries.
 */
import type { Device, Encounter } from 'fhir/r4.js';
import { boundedCache } from '../bounded-cache.js';
import {
  linkedAt,
  patientPeriods,
  periodAt,
  type AssociationPeriod,
  type AssociationRecord,
} from '../devices/associations.js';
import type { AssociationReader } from '../devices/association-store.js';
import type { DeviceRecord, DeviceRegistry } from '../devices/registry.js';
import { PipelineError } from '../errors.js';
import {
  createModeIdentity,
  type IdentityClaim,
  type IdentityResolver,
  type ResolvedIdentity,
} from '../mapping/index.js';
import type { PatientRef } from '../queues.js';
import { patientRefs } from './associations.js';
import type { FhirGateway } from './gateway.js';

export type IdentityMode = 'Create' | 'Lookup' | 'LookupWithEncounter';

export interface IdentityOptions {
  readonly mode: IdentityMode;
  readonly fhir: Pick<FhirGateway, 'read' | 'search'>;
  readonly deviceIdentifierSystem: string;
  /** FHIR_CREATE_PATIENTS: any Patient an association names may be created. */
  readonly createPatients: boolean;
  readonly associations: AssociationReader;
  readonly registry: Pick<DeviceRegistry, 'get' | 'records'>;
  /** How long FHIR reads (Lookup modes, encounters) are reused, ms. */
  readonly cacheMs?: number;
}

export interface MessageIdentity {
  readonly resolve: IdentityResolver;
  /** Patients the FHIR writer must ensure before the Observations (Create mode). */
  patients(): PatientRef[];
  /** Devices (MQTT ids) whose FHIR Device the writer must ensure first (Create mode). */
  devices(): string[];
}

export interface JobIdentity {
  /** Throws DeviceNotFound for a device that was never registered. */
  forMessage(authenticatedDeviceId: string): Promise<MessageIdentity>;
}

export interface IdentityService {
  forJob(authenticatedDeviceIds: readonly string[]): Promise<JobIdentity>;
}

function refId(reference: string | undefined, type: string): string | undefined {
  return new RegExp(`(?:^|/)${type}/([^/]+)(?:/_history/.*)?$`).exec(reference ?? '')?.[1];
}

interface DeviceTimeline {
  readonly records: readonly AssociationRecord[];
  readonly periods: readonly AssociationPeriod[];
}

export function createIdentityService(options: IdentityOptions): IdentityService {
  const ttl = options.cacheMs ?? 10_000;
  // Bounded, with a time to live per entry (found and not found alike).
  const cache = boundedCache<string, { value: unknown }>(50_000, Math.max(1, ttl));

  async function cached<T>(key: string, load: () => Promise<T>): Promise<T> {
    if (ttl > 0) {
      const hit = cache.get(key);
      if (hit) return hit.value as T;
    }
    const value = await load();
    if (ttl > 0) cache.set(key, { value });
    return value;
  }

  const fhirDevice = (deviceId: string) =>
    cached(`device:${deviceId}`, async () => {
      const found = await options.fhir.search<Device>('Device', {
        identifier: `${options.deviceIdentifierSystem}|${deviceId}`,
        _count: '2',
      });
      return found[0];
    });
  const patientExists = (id: string) =>
    cached(`patient:${id}`, async () => (await options.fhir.read('Patient', id)) !== undefined);
  const encounter = (identifier: string) =>
    cached(`encounter:${identifier}`, async () => {
      const found = await options.fhir.search<Encounter>('Encounter', {
        identifier,
        _count: '2',
      });
      return found[0];
    });

  async function encounterId(claim: IdentityClaim, required: boolean): Promise<string | undefined> {
    if (claim.encounterId === undefined) {
      if (!required) return undefined;
      throw new PipelineError(
        'EncounterNotFound',
        'the reading names no encounter (LookupWithEncounter)',
      );
    }
    const found = await encounter(claim.encounterId);
    if (!found?.id) {
      throw new PipelineError(
        'EncounterNotFound',
        'no Encounter carries the identifier the reading names',
      );
    }
    return found.id;
  }

  async function lookupDevice(deviceId: string): Promise<{ id: string; patientId: string }> {
    const d = await fhirDevice(deviceId);
    if (!d?.id) {
      throw new PipelineError(
        'DeviceNotFound',
        `no FHIR Device carries identifier ${options.deviceIdentifierSystem}|${deviceId}`,
        { details: { deviceId } },
      );
    }
    const patientId = refId(d.patient?.reference, 'Patient');
    if (!patientId) {
      throw new PipelineError('PatientNotFound', 'the FHIR Device names no Patient', {
        details: { deviceId },
      });
    }
    if (!(await patientExists(patientId))) {
      throw new PipelineError(
        'PatientNotFound',
        'the Patient the FHIR Device names does not exist',
        { details: { deviceId } },
      );
    }
    return { id: d.id, patientId };
  }

  return {
    async forJob(authenticatedIds) {
      // One round trip for the records and histories of the job's devices; gateways'
      // children on demand.
      const timelines = new Map<string, DeviceTimeline>();
      const put = (id: string, records: readonly AssociationRecord[]) => {
        const t = { records, periods: patientPeriods(records) };
        timelines.set(id, t);
        return t;
      };
      const [histories, known] = await Promise.all([
        options.mode === 'Create' ? options.associations.histories(authenticatedIds) : undefined,
        options.registry.records(authenticatedIds),
      ]);
      for (const [id, records] of histories ?? []) put(id, records);
      const timeline = async (id: string): Promise<DeviceTimeline> =>
        timelines.get(id) ?? put(id, await options.associations.history(id));
      // Every message's device is among the job's; a read of another is the exception.
      const record = async (id: string): Promise<DeviceRecord | undefined> =>
        known.has(id) ? known.get(id) : options.registry.get(id);

      return {
        async forMessage(authenticatedDeviceId) {
          const authenticated = await record(authenticatedDeviceId);
          // Identity comes from CONNECT; a removed device's earlier readings still
          // belong to the patients of their time. Never registered: nothing to go by.
          if (!authenticated)
            throw new PipelineError(
              'DeviceNotFound',
              `device "${authenticatedDeviceId}" is not registered`,
            );
          const patients = new Map<string, PatientRef>();
          const devices = new Set<string>();

          const resolve: IdentityResolver = async (claim): Promise<ResolvedIdentity> => {
            const at = Date.parse(claim.occurrenceTime);
            if (options.mode === 'Create') {
              const own = await timeline(claim.deviceId);
              const identity = createModeIdentity(claim, {
                authenticatedIsGateway: authenticated.kind === 'gateway',
                linked: () => linkedAt(own.records, claim.authenticatedDeviceId, at),
                patientOf: () => periodAt(own.periods, at)?.patientId,
              });
              const enc = await encounterId(claim, false);
              for (const ref of patientRefs(own.records, options.createPatients))
                if (ref.id === identity.patientId) patients.set(ref.id, ref);
              devices.add(claim.deviceId);
              if (identity.gatewayId !== undefined) devices.add(identity.gatewayId);
              // The encounter is the one found by identifier, not the raw id of the payload.
              const resolved: { -readonly [K in keyof ResolvedIdentity]: ResolvedIdentity[K] } = {
                ...identity,
              };
              delete resolved.encounterResourceId;
              return { ...resolved, ...(enc !== undefined ? { encounterResourceId: enc } : {}) };
            }
            // Lookup / LookupWithEncounter: FHIR is the source of truth; gateway links are ours.
            const viaGateway = claim.deviceId !== claim.authenticatedDeviceId;
            if (
              viaGateway &&
              !linkedAt((await timeline(claim.deviceId)).records, claim.authenticatedDeviceId, at)
            ) {
              throw new PipelineError('DeviceSpoofing', 'the payload names another device', {
                details: { gateway: claim.authenticatedDeviceId },
              });
            }
            if (authenticated.kind === 'gateway' && !viaGateway) {
              throw new PipelineError(
                'GatewayChildMissing',
                'a gateway reading names no device it was taken by',
                { details: { gateway: claim.authenticatedDeviceId } },
              );
            }
            const device = await lookupDevice(claim.deviceId);
            if (
              claim.claimedPatientId !== undefined &&
              claim.claimedPatientId !== device.patientId
            ) {
              throw new PipelineError(
                'PatientDeviceMismatch',
                'the payload names a patient other than the one the FHIR Device names',
                { details: { deviceId: claim.deviceId } },
              );
            }
            const gateway = viaGateway ? await fhirDevice(claim.authenticatedDeviceId) : undefined;
            if (viaGateway && !gateway?.id) {
              throw new PipelineError('DeviceNotFound', 'the gateway has no FHIR Device', {
                details: { deviceId: claim.authenticatedDeviceId },
              });
            }
            const enc = await encounterId(claim, options.mode === 'LookupWithEncounter');
            return {
              patientId: device.patientId,
              deviceResourceId: device.id,
              ...(viaGateway
                ? { gatewayId: claim.authenticatedDeviceId, gatewayResourceId: gateway!.id! }
                : {}),
              ...(enc !== undefined ? { encounterResourceId: enc } : {}),
            };
          };
          return {
            resolve,
            patients: () => [...patients.values()],
            devices: () => [...devices],
          };
        },
      };
    },
  };
}
