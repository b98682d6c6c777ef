/**
 * What the pipeline hands to the ClickHouse mirror besides rows: each message's
 * fate (device_messages) and, for Observations, the version the FHIR server
 * stored — the mirror copies the system of record, so that `iomt mirror
 * backfill`, which reads only FHIR, restores the same rows (flatten.ts).
 *
 * Contract: messageOutcome / settleMessages are pure; storedVersions reads from
 * FHIR only the Observations whose stored version the writer does not have: a
 * "no change" answer echoes the request rather than the stored resource (HAPI 8:
 * the echo carries the new delivery's meta.source, the stored one keeps the
 * first's), and a merged window or a server without Prefer: return=representation
 * gives no meta.lastUpdated.
 */
import { createHash } from 'node:crypto';
import type { PipelineError } from '../src/errors.js';
import type { FhirStore } from '../src/fhir/store.js';
import type { MessageOutcome, ObservationEnvelope, TelemetryMessage } from '../src/queues.js';

export function messageOutcome(
  message: TelemetryMessage,
  fields: Omit<MessageOutcome, 'message' | 'decidedAt'>,
  decidedAt: number,
): MessageOutcome {
  return { message, ...fields, decidedAt };
}

export interface WriteResults {
  readonly committed: readonly ObservationEnvelope[];
  readonly dead: readonly {
    readonly observation?: ObservationEnvelope;
    readonly error: PipelineError;
  }[];
  readonly retry: readonly ObservationEnvelope[];
}

/**
 * The messages whose Observations are all settled, with their final outcome: a
 * refused Observation makes its message dead-lettered (first code, stage fhir);
 * those with Observations still to retry stay pending.
 */
export function settleMessages(
  messages: readonly MessageOutcome[],
  results: WriteResults,
  now: number,
): { settled: MessageOutcome[]; pending: MessageOutcome[] } {
  const retrying = new Set(results.retry.map((e) => e.provenance.messageId));
  const refused = new Map<string, PipelineError>();
  for (const d of results.dead) {
    const id = d.observation?.provenance.messageId;
    if (id !== undefined && !refused.has(id)) refused.set(id, d.error);
  }
  const settled: MessageOutcome[] = [];
  const pending: MessageOutcome[] = [];
  for (const m of messages) {
    if (retrying.has(m.message.id)) {
      pending.push(m);
      continue;
    }
    const error = refused.get(m.message.id);
    settled.push(
      error
        ? {
            ...m,
            outcome: 'dead_lettered',
            errorCode: error.code,
            errorStage: error.stage,
            decidedAt: now,
          }
        : { ...m, decidedAt: now },
    );
  }
  return { settled, pending };
}

/** Replaces the Observations named in `reread` by the version the server stores. */
export async function storedVersions(
  store: Pick<FhirStore, 'readObservations'>,
  committed: readonly ObservationEnvelope[],
  reread: ReadonlySet<string>,
): Promise<ObservationEnvelope[]> {
  const ids = committed.map((e) => e.observation.id ?? '').filter((id) => reread.has(id));
  if (ids.length === 0) return [...committed];
  const stored = new Map((await store.readObservations(ids)).map((o) => [o.id, o]));
  return committed.map((e) => {
    const s = stored.get(e.observation.id);
    return s ? { ...e, observation: s } : e;
  });
}

/**
 * Part of the analytics job id naming the settled messages ('' when none): two
 * attempts of one FHIR job that settle different messages must not share an id.
 */
export function messagesDigest(settled: readonly MessageOutcome[]): string {
  if (settled.length === 0) return '';
  const h = createHash('sha256');
  for (const m of settled) h.update(m.message.id).update('\n');
  return `-m${h.digest('hex').slice(0, 12)}`;
}
