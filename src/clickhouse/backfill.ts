/**
 * Rebuilds or repairs the mirror from the system of record: every page of the
 * pipeline's Observations read from FHIR (oldest change first) goes through the
 * same flattening and insert as the live mirror, rollups included. Rows derive
 * from the stored resource alone (flatten.ts), so a backfill of an Observation
 * the mirror already holds inserts an identical row, which ReplacingMergeTree
 * dedupes, and a backfill after a wipe restores the same rows.
 *
 * device_messages is not restored: raw MQTT messages are not in FHIR.
 *
 * Cancellation: `signal` is checked before every page and should also end the
 * page source's request in flight (observation-pages.ts takes it); a cancelled
 * backfill returns its summary so far with `cancelled: true`. Pages already
 * written stay (they are the same rows a full backfill writes).
 */
import type { Observation } from 'fhir/r4.js';
import type { ObservationEnvelope } from '../queues.js';
import type { AnalyticsStore } from './store.js';
import { parseFhirDateTime } from './time.js';

export interface BackfillOptions {
  /** Empty the FHIR-derived tables first (a rebuild rather than a repair). */
  readonly wipe?: boolean;
  /** Called after each page, for progress output. */
  readonly onPage?: (progress: BackfillSummary) => void;
  /** The clock for the summary's duration (tests pass a fixed one). */
  readonly now?: () => number;
  /** Stops the backfill between pages (and, passed to the page source, within one). */
  readonly signal?: AbortSignal;
}

export interface BackfillSummary {
  readonly pages: number;
  readonly observations: number;
  /** meta.lastUpdated of the first and last Observation read (resume with --since last). */
  readonly firstUpdated?: string;
  readonly lastUpdated?: string;
  readonly seconds: number;
  /** Set when the backfill stopped because it was asked to (signal). */
  readonly cancelled?: true;
}

/** A stored resource as the mirror's input; its own meta says everything flatten needs. */
function envelopeOf(obs: Observation): ObservationEnvelope {
  const updated = obs.meta?.lastUpdated;
  return {
    observation: obs,
    // Fallbacks only: flatten reads delivery and template from meta.source / meta.tag.
    provenance: {
      messageId: '',
      deviceId: '',
      receivedAt: updated === undefined ? 0 : parseFhirDateTime(updated),
      templateName: '',
      templateVersion: '',
    },
  };
}

export async function backfillMirror(
  pages: AsyncIterable<readonly Observation[]>,
  store: AnalyticsStore,
  options: BackfillOptions = {},
): Promise<BackfillSummary> {
  const now = options.now ?? Date.now;
  const started = now();
  await store.migrate();
  if (options.wipe) await store.wipeObservations();
  let summary: BackfillSummary = { pages: 0, observations: 0, seconds: 0 };
  const stopped = () => ({
    ...summary,
    seconds: (now() - started) / 1000,
    cancelled: true as const,
  });
  if (options.signal?.aborted) return stopped();
  try {
    for await (const page of pages) {
      if (options.signal?.aborted) return stopped();
      summary = await writePage(page, store, summary, now, started);
      options.onPage?.(summary);
    }
  } catch (err) {
    // The page source ends its request with the signal: that is the cancellation, not a failure.
    if (options.signal?.aborted) return stopped();
    throw err;
  }
  return { ...summary, seconds: (now() - started) / 1000 };
}

/** Writes one page like the live mirror; the summary after it. */
async function writePage(
  page: readonly Observation[],
  store: AnalyticsStore,
  summary: BackfillSummary,
  now: () => number,
  started: number,
): Promise<BackfillSummary> {
  // committedAt stands in only for a resource without meta.lastUpdated.
  await store.insertObservations(page.map(envelopeOf), now());
  const first = page[0]?.meta?.lastUpdated;
  const last = page[page.length - 1]?.meta?.lastUpdated;
  const firstUpdated = summary.firstUpdated ?? first;
  const lastUpdated = last ?? summary.lastUpdated;
  return {
    pages: summary.pages + 1,
    observations: summary.observations + page.length,
    ...(firstUpdated !== undefined ? { firstUpdated } : {}),
    ...(lastUpdated !== undefined ? { lastUpdated } : {}),
    seconds: (now() - started) / 1000,
  };
}
