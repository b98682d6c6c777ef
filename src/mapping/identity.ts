/**
 * Deterministic identity. An Observation's identifier follows the HL7 PHD IG
 * STU 1.1 rule (device, patient, type, value and units, the device's own
 * timestamp — or, when readings are grouped, the window or the correlation
 * id), with our measurement type name beside the code; its id is a hash of
 * that identifier, so writing the same reading twice yields one resource, in
 * FHIR and in ClickHouse, and two different readings never share one.
 *
 * Also the identity of a reading: which device took it, whose it is. The
 * default resolver here is MedTech's "Create" mode with the bindings known up
 * front (the CLI and tests use it); the pipeline's resolvers (registry, FHIR
 * lookup) live beside the adapters and return the same shape.
 */
import { createHash } from 'node:crypto';
import type { Observation } from 'fhir/r4.js';
import { FHIR_ID_PATTERN } from '../devices/registry.js';
import { PipelineError } from '../errors.js';

/**
 * Escapes the separator so that ("a/b","c") and ("a","b/c") never collide. The
 * PHD IG joins with "-"; device ids, FHIR ids and LOINC codes all contain "-",
 * so we join with "/", which none of them may contain, and keep values readable.
 * The characters FHIR token search treats specially ("," "|" "$" "\") are
 * escaped too, so `identifier=system|value` finds every identifier as written.
 */
function part(s: string): string {
  return s.replace(
    /[%/,|$\\]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`,
  );
}

/** How readings are grouped into one Observation (MedTech periodInterval). */
export type ObservationGroup =
  | { readonly kind: 'point' }
  | { readonly kind: 'window'; readonly start: string; readonly minutes: 60 | 1440 }
  | { readonly kind: 'correlation'; readonly correlationId: string };

export interface ObservationKey {
  readonly deviceId: string;
  readonly patientId: string;
  /**
   * The measurement type name (the templates' typeName): two types that share
   * a code (a monitor's body temperature and a thermometer's, both LOINC
   * 8310-5) never share an identity.
   */
  readonly type: string;
  /** The measurement type's primary code (the first coding of the FHIR template), e.g. LOINC "8867-4". */
  readonly code: string;
  /**
   * UTC ISO 8601 with at least milliseconds and every finer digit the device
   * sent: two readings a microsecond apart are two readings.
   */
  readonly occurrenceTime: string;
  /**
   * One reading: its value and units (valuePart), per the HL7 PHD IG STU 1.1
   * identifier rule. Absent for a window or correlation group, whose content
   * grows as readings arrive.
   */
  readonly value?: string;
  /** Absent: one reading (the PHD rule as written). */
  readonly group?: ObservationGroup;
}

/**
 * The identifier value. One reading:
 *   device/patient/type/code/time/value
 * a window or correlation group:
 *   device/patient/type/code/<window start>/PT1H|P1D
 *   device/patient/type/code/correlation/<id>
 * (Each part escaped, so every identifier has exactly six parts; the scheme
 * before issue 10 had no type and no value: see docs/mappings.md, "Upgrading".)
 */
export function observationIdentifierValue(k: ObservationKey): string {
  const head = [part(k.deviceId), part(k.patientId), part(k.type), part(k.code)];
  const g = k.group;
  if (g?.kind === 'window') return [...head, g.start, g.minutes === 60 ? 'PT1H' : 'P1D'].join('/');
  if (g?.kind === 'correlation') return [...head, 'correlation', part(g.correlationId)].join('/');
  return [...head, k.occurrenceTime, part(k.value ?? '')].join('/');
}

/** Longest value part kept readable; longer values are hashed. */
const MAX_VALUE_PART = 64;

type Valued = Pick<
  Observation,
  | 'valueQuantity'
  | 'valueCodeableConcept'
  | 'valueString'
  | 'valueBoolean'
  | 'valueInteger'
  | 'valueRange'
  | 'valueRatio'
  | 'valueSampledData'
  | 'valueTime'
  | 'valueDateTime'
  | 'valuePeriod'
  | 'dataAbsentReason'
>;

function oneValue(v: Valued): string {
  const q = v.valueQuantity;
  if (q) return `${q.comparator ?? ''}${q.value ?? ''} ${q.code ?? q.unit ?? ''}`.trimEnd();
  if (v.valueCodeableConcept) {
    const c = v.valueCodeableConcept.coding?.[0];
    return c?.code ?? `text:${digest(v.valueCodeableConcept.text ?? '')}`;
  }
  // Free text may be long, and says more than an identifier should: hashed.
  if (v.valueString !== undefined) return `text:${digest(v.valueString)}`;
  if (v.valueBoolean !== undefined) return String(v.valueBoolean);
  if (v.valueInteger !== undefined) return String(v.valueInteger);
  if (v.valueSampledData) return `sampled:${digest(v.valueSampledData.data ?? '')}`;
  if (v.dataAbsentReason) return `absent:${v.dataAbsentReason.coding?.[0]?.code ?? 'unknown'}`;
  const other = v.valueRange ?? v.valueRatio ?? v.valueTime ?? v.valueDateTime ?? v.valuePeriod;
  return other === undefined ? '' : `json:${digest(JSON.stringify(other))}`;
}

/**
 * The value part of a reading's identity, per the HL7 PHD IG STU 1.1 rule
 * ("device-patient-type-value-units-timestamp" for numerics; the value code
 * for enumerations): "72 /min", "absent:not-a-number", the component values in
 * order for a panel ("121 mm[Hg];79 mm[Hg]"). Two readings of one type at one
 * time are one Observation only when they say the same thing.
 */
export function valuePart(o: Valued & Pick<Observation, 'component'>): string {
  const parts = [oneValue(o), ...(o.component ?? []).map(oneValue)].filter((p) => p !== '');
  const text = parts.join(';');
  return text.length <= MAX_VALUE_PART ? text : `sha256:${digest(text)}`;
}

function digest(s: string): string {
  return createHash('sha256').update(s).digest('hex').slice(0, 24);
}

/** FHIR id charset, 44 chars, never all digits (HAPI refuses all-digit client ids). */
export function observationId(system: string, identifierValue: string): string {
  return (
    'obs-' +
    createHash('sha256')
      .update(system)
      .update('|')
      .update(identifierValue)
      .digest('hex')
      .slice(0, 40)
  );
}

/**
 * Device resource id: readable when the device id is already a safe FHIR id,
 * else a hash. Prefixed so that an all-digit serial number still gives a valid id.
 */
export function deviceResourceId(deviceId: string): string {
  const readable = `dev-${deviceId}`;
  if (FHIR_ID_PATTERN.test(readable)) return readable;
  return 'dev-' + createHash('sha256').update(deviceId).digest('hex').slice(0, 40);
}

/** What a reading says about who it belongs to. */
export interface IdentityClaim {
  /** The device that authenticated (MQTT CONNECT). */
  readonly authenticatedDeviceId: string;
  /** The device the reading names (the authenticated one unless a gateway speaks). */
  readonly deviceId: string;
  /**
   * Where `deviceId` comes from: the template's device expression (the payload
   * named it) or the connection (the template has no device expression).
   */
  readonly deviceFrom: 'payload' | 'connection';
  readonly claimedPatientId?: string;
  /** The template's patient expression yielded nothing (Create mode refuses: PatientIdMissing). */
  readonly patientClaimMissing?: true;
  readonly encounterId?: string;
  /**
   * The reading's own time (UTC ISO 8601): the patient is the one associated
   * with the device at this time, not when the job runs.
   */
  readonly occurrenceTime: string;
}

export interface ResolvedIdentity {
  readonly patientId: string;
  /** FHIR id of the Device for Observation.device. */
  readonly deviceResourceId: string;
  /** Set when a gateway published for another device. */
  readonly gatewayId?: string;
  readonly gatewayResourceId?: string;
  /** FHIR id of the Encounter for Observation.encounter. */
  readonly encounterResourceId?: string;
}

export type IdentityResolver = (
  claim: IdentityClaim,
) => ResolvedIdentity | Promise<ResolvedIdentity>;

export interface CreateModeBindings {
  /** The authenticated device's patient (fixed: the debugger and fixtures have no history). */
  readonly patientId: string | undefined;
  /**
   * Devices the authenticated device relays for (a gateway), with their
   * patients. A device with children is a gateway: it has no patient of its own.
   */
  readonly children?: ReadonlyMap<string, string | undefined>;
}

/** Who the reading's device is and whom it belongs to, as the caller found out (at the reading's time). */
export interface AttributionFacts {
  /** The authenticated device relays for others and has no patient of its own. */
  readonly authenticatedIsGateway: boolean;
  /** Whether the authenticated gateway could relay for `deviceId` at the reading's time. */
  readonly linked: (deviceId: string) => boolean;
  /** The patient associated with `deviceId` at the reading's time, if any. */
  readonly patientOf: (deviceId: string) => string | undefined;
}

/**
 * MedTech "Create" with our associations as the source of truth: a device
 * speaks for itself, a gateway for the devices linked to it; the patient is the
 * one associated with the reading's device at the reading's time; a payload
 * naming anyone else is refused, and nothing is ever guessed.
 */
export function createModeIdentity(
  claim: IdentityClaim,
  facts: AttributionFacts,
): ResolvedIdentity {
  if (claim.patientClaimMissing) {
    throw new PipelineError(
      'PatientIdMissing',
      'the template names the patient in the payload, and the payload names none',
      { details: { deviceId: claim.deviceId } },
    );
  }
  const viaGateway = claim.deviceId !== claim.authenticatedDeviceId;
  if (facts.authenticatedIsGateway && !viaGateway) {
    throw new PipelineError(
      'GatewayChildMissing',
      claim.deviceFrom === 'connection'
        ? 'a gateway published a reading whose template names no device'
        : 'a gateway reading names the gateway itself, which has no patient',
      { details: { gateway: claim.authenticatedDeviceId } },
    );
  }
  if (viaGateway && !facts.linked(claim.deviceId)) {
    throw new PipelineError(
      'DeviceSpoofing',
      'the payload names another device, one the authenticated device does not relay for at the reading time',
      { details: { gateway: claim.authenticatedDeviceId } },
    );
  }
  const patientId = facts.patientOf(claim.deviceId);
  if (patientId === undefined) {
    throw new PipelineError(
      'NoPatientAssociated',
      'no patient was associated with the device at the time of the reading',
      { details: { deviceId: claim.deviceId } },
    );
  }
  if (claim.claimedPatientId !== undefined && claim.claimedPatientId !== patientId) {
    throw new PipelineError(
      'DeviceSpoofing',
      'the payload names a patient the device was not associated with at the reading time',
      { details: { deviceId: claim.deviceId } },
    );
  }
  return resolvedIdentity(claim, patientId);
}

/** The identity of a reading once its patient is known: our Device ids, the gateway's, the encounter. */
export function resolvedIdentity(claim: IdentityClaim, patientId: string): ResolvedIdentity {
  const viaGateway = claim.deviceId !== claim.authenticatedDeviceId;
  return {
    patientId,
    deviceResourceId: deviceResourceId(claim.deviceId),
    ...(viaGateway
      ? {
          gatewayId: claim.authenticatedDeviceId,
          gatewayResourceId: deviceResourceId(claim.authenticatedDeviceId),
        }
      : {}),
    ...(claim.encounterId !== undefined ? { encounterResourceId: claim.encounterId } : {}),
  };
}

/** The resolver for bindings known up front (CLI debugger, fixtures, tests): no history, no clock. */
export function bindingResolver(bindings: CreateModeBindings): IdentityResolver {
  const children = bindings.children ?? new Map<string, string | undefined>();
  return (claim) =>
    createModeIdentity(claim, {
      authenticatedIsGateway: children.size > 0,
      linked: (id) => children.has(id),
      patientOf: (id) =>
        id === claim.authenticatedDeviceId ? bindings.patientId : children.get(id),
    });
}
