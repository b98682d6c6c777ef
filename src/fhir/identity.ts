/**
 * Identity resolution for the normalize worker, with MedTech's modes:
 *
 *  - Create: the device's registry binding names the Patient; Patient and
 *    Device are created (by the FHIR writer) with deterministic ids.
 *  - Lookup: the FHIR Device carrying the device's identifier must exist and
 *    name its Patient (Device.patient), which must exist. A payload naming
 *    another patient is refused (PatientDeviceMismatch).
 *  - LookupWithEncounter: Lookup, and the reading must name an Encounter that
 *    exists (Encounter.identifier).
 *
 * In every mode a reading naming an encounter is linked to the Encounter with
 * that identifier (EncounterNotFound when none), and a device other than the
 * authenticated one may be named only by a gateway linked to it.
 *
 * Contract: forMessage(record) → { resolve, subjects() }: `resolve` is the
 * IdentityResolver of the pure core; `subjects()` lists the Patients and
 * Devices the FHIR writer must ensure (Create mode). FHIR reads are cached
 * for `cacheMs` (found and not found alike); FhirUnavailable is thrown on a
 * transient failure, so the whole ingest job retries.
 */
import type { Bundle, Device, Encounter, Patient } from 'fhir/r4.js';
import type { GatewayLinks } from '../devices/gateways.js';
import type { DeviceRecord } from '../devices/registry.js';
import { PipelineError } from '../errors.js';
import {
  createModeIdentity,
  deviceResourceId,
  type IdentityClaim,
  type IdentityResolver,
  type ResolvedIdentity,
} from '../mapping/index.js';
import type { SubjectRef } from '../queues.js';
import { fhirError, statusError } from './errors.js';

export type IdentityMode = 'Create' | 'Lookup' | 'LookupWithEncounter';

export interface IdentityOptions {
  readonly mode: IdentityMode;
  readonly fhirUrl: string;
  readonly timeoutMs: number;
  readonly deviceIdentifierSystem: string;
  /** Registry records of other devices (gateway children). */
  readonly device: (deviceId: string) => Promise<DeviceRecord | undefined>;
  readonly gateways: Pick<GatewayLinks, 'isLinked'>;
  readonly cacheMs?: number;
}

export interface MessageIdentity {
  readonly resolve: IdentityResolver;
  /** Patients and Devices to create before the Observations (Create mode). */
  subjects(): SubjectRef[];
}

export interface IdentityService {
  forMessage(authenticated: DeviceRecord): MessageIdentity;
}

function refId(reference: string | undefined, type: string): string | undefined {
  return new RegExp(`(?:^|/)${type}/([^/]+)(?:/_history/.*)?$`).exec(reference ?? '')?.[1];
}

export function createIdentityService(options: IdentityOptions): IdentityService {
  const base = options.fhirUrl.replace(/\/+$/, '');
  const cacheMs = options.cacheMs ?? 10_000;
  const cache = new Map<string, { at: number; value: unknown }>();

  async function cached<T>(key: string, load: () => Promise<T>): Promise<T> {
    const hit = cache.get(key);
    if (hit && Date.now() - hit.at < cacheMs) return hit.value as T;
    const value = await load();
    if (cache.size > 50_000) cache.clear();
    cache.set(key, { at: Date.now(), value });
    return value;
  }

  async function get<T>(path: string): Promise<T | undefined> {
    let res: Response;
    try {
      res = await fetch(`${base}/${path}`, {
        signal: AbortSignal.timeout(options.timeoutMs),
        headers: { accept: 'application/fhir+json', 'cache-control': 'no-cache' },
      });
    } catch (err) {
      throw fhirError(err, `GET ${path.split('?')[0]}`);
    }
    if (res.status === 404 || res.status === 410) return undefined;
    const body: unknown = await res.json().catch(() => undefined);
    if (!res.ok)
      throw statusError(
        res.status,
        `GET ${path.split('?')[0]}`,
        body,
        res.headers.get('retry-after'),
      );
    return body as T;
  }

  async function first<T>(type: string, query: string): Promise<T | undefined> {
    const bundle = await get<Bundle>(`${type}?${query}&_count=2`);
    return bundle?.entry?.[0]?.resource as T | undefined;
  }

  const fhirDevice = (deviceId: string) =>
    cached(`device:${deviceId}`, () =>
      first<Device>(
        'Device',
        `identifier=${encodeURIComponent(`${options.deviceIdentifierSystem}|${deviceId}`)}`,
      ),
    );
  const patientExists = (id: string) =>
    cached(
      `patient:${id}`,
      async () => (await get<Patient>(`Patient/${encodeURIComponent(id)}`)) !== undefined,
    );
  const encounter = (identifier: string) =>
    cached(`encounter:${identifier}`, () =>
      first<Encounter>('Encounter', `identifier=${encodeURIComponent(identifier)}`),
    );

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
        {
          details: { deviceId },
        },
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
        {
          details: { deviceId },
        },
      );
    }
    return { id: d.id, patientId };
  }

  return {
    forMessage(authenticated) {
      const subjects = new Map<string, SubjectRef>();
      const resolve: IdentityResolver = async (claim): Promise<ResolvedIdentity> => {
        const viaGateway = claim.deviceId !== claim.authenticatedDeviceId;
        if (
          viaGateway &&
          !(await cached(`link:${claim.authenticatedDeviceId}:${claim.deviceId}`, () =>
            options.gateways.isLinked(claim.authenticatedDeviceId, claim.deviceId),
          ))
        ) {
          throw new PipelineError('DeviceSpoofing', 'the payload names another device', {
            details: { gateway: claim.authenticatedDeviceId },
          });
        }
        if (options.mode === 'Create') {
          const child = viaGateway ? await options.device(claim.deviceId) : authenticated;
          const identity = createModeIdentity(
            claim,
            () => child?.patientId,
            () => true, // the link was checked above
          );
          const enc = await encounterId(claim, false);
          for (const [id, patientId] of [
            [claim.deviceId, identity.patientId],
            ...(viaGateway ? [[authenticated.deviceId, authenticated.patientId]] : []),
          ] as const) {
            subjects.set(`Patient/${patientId}`, {
              resourceType: 'Patient',
              id: patientId,
              identifier: { system: 'urn:iomt:patient', value: patientId },
            });
            subjects.set(`Device/${deviceResourceId(id)}`, {
              resourceType: 'Device',
              id: deviceResourceId(id),
              identifier: { system: options.deviceIdentifierSystem, value: id },
              patientId,
            });
          }
          // The encounter is the one found by identifier, not the raw id of the payload.
          const rest: ResolvedIdentity = {
            patientId: identity.patientId,
            deviceResourceId: identity.deviceResourceId,
            ...(identity.gatewayId !== undefined
              ? { gatewayId: identity.gatewayId, gatewayResourceId: identity.gatewayResourceId! }
              : {}),
          };
          return { ...rest, ...(enc !== undefined ? { encounterResourceId: enc } : {}) };
        }
        // Lookup / LookupWithEncounter: FHIR is the source of truth.
        const device = await lookupDevice(claim.deviceId);
        if (claim.claimedPatientId !== undefined && claim.claimedPatientId !== device.patientId) {
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
      return { resolve, subjects: () => [...subjects.values()] };
    },
  };
}
