/**
 * Time values for ClickHouse rows. PURE. Rows carry timestamps as
 * 'YYYY-MM-DD hh:mm:ss.SSS' in UTC, which both the embedded engine and a server
 * parse into DateTime64(3, 'UTC') under the default `date_time_input_format =
 * basic` (epoch millis are read differently by versions and settings).
 */
import { PipelineError } from '../errors.js';

// DateTime64 holds 1900-01-01 .. 2299-12-31; outside that the engine would clamp silently.
const MIN_MS = Date.UTC(1900, 0, 1);
const MAX_MS = Date.UTC(2300, 0, 1) - 1;

/** Epoch milliseconds → 'YYYY-MM-DD hh:mm:ss.SSS' (UTC), the DateTime64(3) text form. */
export function toClickHouseDateTime(ms: number): string {
  if (!Number.isFinite(ms) || ms < MIN_MS || ms > MAX_MS) {
    throw new PipelineError('InvalidTimestamp', `timestamp ${ms} is outside DateTime64 range`, {
      stage: 'analytics',
    });
  }
  return new Date(ms).toISOString().slice(0, 23).replace('T', ' ');
}

/**
 * FHIR dateTime / instant → epoch ms. Partial dates ("2024", "2024-05") are read
 * as their first instant in UTC; a time without offset (invalid FHIR) as UTC,
 * never as the host's zone.
 */
export function parseFhirDateTime(value: string): number {
  const withZone = /T[^Z+-]*$/.test(value) ? `${value}Z` : value;
  const ms = Date.parse(withZone);
  if (Number.isNaN(ms)) {
    throw new PipelineError('InvalidTimestamp', 'an Observation date does not parse', {
      stage: 'analytics',
      details: { value: value.slice(0, 40) },
    });
  }
  return ms;
}
