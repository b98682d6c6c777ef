/**
 * The FHIR writer's split between plain and grouped Observations. Plain ones
 * go in transaction Bundles of idempotent PUTs; grouped ones (windows, correlation
 * groups: envelope.merge) are merged into the stored Observation one by one
 * (src/fhir/merge.ts), in order, so two envelopes for one window in the same
 * job both land.
 *
 * Contract: in — the chunk's envelopes; out — one outcome per envelope, in
 * order; a merged outcome carries `written`, the Observation as stored.
 */
import type { EntryOutcome } from '../src/fhir/store.js';
import type { MergeOutcome, ObservationMerger } from '../src/fhir/merge.js';
import type { Observation } from 'fhir/r4.js';
import type { ObservationEnvelope } from '../src/queues.js';

export async function writeChunk(
  chunk: readonly ObservationEnvelope[],
  writePlain: (observations: Observation[]) => Promise<EntryOutcome[]>,
  merger: ObservationMerger,
): Promise<MergeOutcome[]> {
  const plainAt: number[] = [];
  chunk.forEach((e, i) => {
    if (!e.merge) plainAt.push(i);
  });
  const out: MergeOutcome[] = new Array<MergeOutcome>(chunk.length);
  const plain = await writePlain(plainAt.map((i) => chunk[i]!.observation));
  plainAt.forEach((at, j) => {
    out[at] = plain[j]!;
  });
  for (let i = 0; i < chunk.length; i++) {
    if (chunk[i]!.merge) out[i] = await merger.write(chunk[i]!.observation);
  }
  return out;
}
