/**
 * Per-entry outcomes even when a server refuses a whole batch. FHIR R4 batch
 * entries succeed or fail on their own (http://hl7.org/fhir/R4/http.html#brules),
 * but a server may still answer 400 for the whole Bundle when one entry does not
 * parse (HAPI: "HAPI-0450: Failed to parse request body"). Then the batch is split
 * in halves until the refused entries stand alone, so one bad Observation never
 * fails its neighbours: k bad entries among n cost about 2·k·log2(n) requests.
 *
 * Contract: in — Observations; out — one EntryOutcome per input, in order.
 * Throws only what is transient for the whole request (FhirUnavailable).
 */
import type { Observation } from 'fhir/r4.js';
import { toPipelineError } from '../src/errors.js';
import type { EntryOutcome, FhirStore } from '../src/fhir/store.js';

export async function writeIsolated(
  store: Pick<FhirStore, 'writeObservations'>,
  observations: readonly Observation[],
): Promise<EntryOutcome[]> {
  if (observations.length === 0) return [];
  try {
    return await store.writeObservations(observations);
  } catch (err) {
    const e = toPipelineError(err);
    if (e.retryable) throw e;
    if (observations.length === 1) return [{ ok: false, error: e }];
    const half = Math.ceil(observations.length / 2);
    const left = await writeIsolated(store, observations.slice(0, half));
    const right = await writeIsolated(store, observations.slice(half));
    return [...left, ...right];
  }
}
