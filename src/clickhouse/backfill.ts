/**
 * Rebuilds or repairs the mirror from the system of record: every page of the
 * pipeline's Observations read from FHIR (oldest change first) goes through the
 * same flattening and insert as the live mirror, rollups included. Rows derive
 * from the stored resource alone (flatten.ts), so a backfill of an Observation
 * the mirror already holds inserts an identical row, which ReplacingMergeTree
 * dedupes, and a backfill after a wipe restores the same rows.
 *
 * device_messages is not restored: raw MQTT messages are not in FHIR.
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
}

export interface BackfillSummary {
  readonly pages: number;
  readonly observations: number;
  /** meta.lastUpdated of the first and last Observation read (resume with --since last). */
  readonly firstUpdated?: string;
  readonly lastUpdated?: string;
  readonly seconds: number;
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
  for await (const page of pages) {
    // committedAt stands in only for a resource without meta.lastUpdated.
    await store.insertObservations(page.map(envelopeOf), now());
    const first = page[0]?.meta?.lastUpdated;
    const last = page[page.length - 1]?.meta?.lastUpdated;
    summary = {
      pages: summary.pages + 1,
      observations: summary.observations + page.length,
      ...((summary.firstUpdated ?? first) !== undefined
        ? { firstUpdated: summary.firstUpdated ?? first }
        : {}),
      ...((last ?? summary.lastUpdated) !== undefined
        ? { lastUpdated: last ?? summary.lastUpdated }
        : {}),
      seconds: (now() - started) / 1000,
    };
    options.onPage?.(summary);
  }
  return { ...summary, seconds: (now() - started) / 1000 };
}
