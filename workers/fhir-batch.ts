/**
 * Per-entry outcomes even when the server refuses a whole transaction. A FHIR
 * transaction is all or nothing (http://hl7.org/fhir/R4/http.html#trules): one
 * entry the server refuses (a reference to a missing resource, a value that
 * does not parse: HAPI-0450, HAPI-1094…) fails the Bundle with one 4xx. Then the
 * Bundle is split in halves until the refused entries stand alone, so the good
 * entries commit and only the bad ones are dead-lettered with their code: k bad
 * entries among n cost about 2·k·log2(n) requests, and an all-good Bundle (the
 * usual case) costs one. (A batch retry of the Bundle would cost one request
 * but HAPI writes batches several times slower, docs/performance.md, and a
 * Bundle that does not parse is refused whole as a batch too.)
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
  halving = false,
): Promise<EntryOutcome[]> {
  if (observations.length === 0) return [];
  try {
    // The first try may share a Bundle with other jobs (src/group-commit.ts); the halves go alone.
    return await store.writeObservations(observations, { alone: halving });
  } catch (err) {
    const e = toPipelineError(err);
    if (e.retryable) throw e;
    if (observations.length === 1) return [{ ok: false, error: e }];
    const half = Math.ceil(observations.length / 2);
    const left = await writeIsolated(store, observations.slice(0, half), true);
    const right = await writeIsolated(store, observations.slice(half), true);
    return [...left, ...right];
  }
}
