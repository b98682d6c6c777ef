/**
 * ClickHouse mirror (queue "analytics"). Inserts the committed Observations in
 * one batch; ReplacingMergeTree keyed on the Observation id makes a replayed
 * job harmless. ClickHouse down → the job retries; FHIR writes go on meanwhile.
 */
import type { Job } from 'bullmq';
import type { AnalyticsStore } from '../src/clickhouse/index.js';
import type { Logger } from '../src/logger.js';
import type { Metrics } from '../src/metrics.js';
import type { AnalyticsJobData } from '../src/queues.js';

export interface AnalyticsMirrorDeps {
  readonly store: AnalyticsStore;
  readonly log: Logger;
  readonly metrics?: Metrics;
}

export function createAnalyticsProcessor(
  deps: AnalyticsMirrorDeps,
): (job: Job<AnalyticsJobData>) => Promise<void> {
  // ClickHouse may be down when the process starts: the schema is applied before
  // the first insert that finds it up (migrations are idempotent).
  let schema: Promise<void> | undefined;
  const ensureSchema = () =>
    (schema ??= deps.store.migrate().catch((err: unknown) => {
      schema = undefined;
      throw err;
    }));
  return async function process(job) {
    const { observations, committedAt, traceId } = job.data;
    await ensureSchema();
    await deps.store.insertObservations(observations, committedAt);
    // device_messages: the fates of the messages (a later verdict replaces an earlier one).
    await deps.store.insertMessages(job.data.messages ?? []);
    // device_associations: a device's whole history, versioned (the latest wins).
    await deps.store.insertAssociations(job.data.associations ?? []);
    deps.metrics?.analyticsRows.inc(observations.length);
    deps.log.debug(
      { event: 'mirrored', traceId, jobId: job.id, rows: observations.length },
      'batch mirrored',
    );
  };
}
