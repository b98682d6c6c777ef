/**
 * Deterministic identity. An Observation's identifier follows the HL7 PHD rule
 * (device, patient, type, the device's own timestamp — and later window or
 * correlation id when grouped); its id is a hash of that identifier, so writing
 * the same reading twice yields one resource, in FHIR and in ClickHouse.
 */
import { createHash } from 'node:crypto';
import { FHIR_ID_PATTERN } from '../devices/registry.js';

/**
 * Escapes the separator so that ("a/b","c") and ("a","b/c") never collide. The
 * PHD IG joins with "-"; device ids, FHIR ids and LOINC codes all contain "-",
 * so we join with "/", which none of them may contain, and keep values readable.
 */
function part(s: string): string {
  return s.replace(/%/g, '%25').replace(/\//g, '%2F');
}

export interface ObservationKey {
  readonly deviceId: string;
  readonly patientId: string;
  /** The measurement type's primary code (the first coding of the FHIR template), e.g. LOINC "8867-4". */
  readonly code: string;
  /** UTC ISO 8601 with milliseconds: fixed width, so it closes the value unambiguously. */
  readonly occurrenceTime: string;
}

export function observationIdentifierValue(k: ObservationKey): string {
  return [part(k.deviceId), part(k.patientId), part(k.code), k.occurrenceTime].join('/');
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
