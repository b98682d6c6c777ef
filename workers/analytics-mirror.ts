/**
 * The analytics stage (queue "analytics"): the ClickHouse mirror. Each
 * Observation is flattened on its own, so one that cannot be (a bad date, a
 * malformed SampledData) is dead-lettered alone and its message's outcome says
 * so (stage analytics); the rest are inserted in one batch. A batch the engine
 * refuses (ClickHouseRejected) is split in halves until the refused
 * Observations stand alone. ReplacingMergeTree keyed on the Observation id makes
 * a replayed job harmless. ClickHouse down → the whole job is the retry
 * remainder; FHIR writes go on meanwhile.
 *
 * Group commit (src/group-commit.ts): an insert costs ClickHouse about the
 * same for 100 rows as for 1,000 (a new part per table, the rollups of the
 * touched buckets recomputed; bench/analytics-mirror.ts), so the jobs the
 * stage holds share inserts: one insert at a time, whose rows and message
 * outcomes are those of every job that arrived within `lingerMs` (or as soon
 * as `lingerJobs` jobs or `lingerRows` rows wait). A shared insert the engine
 * refuses is tried again per job, and a job's own refusal is isolated by
 * halving, as above.
 */
import {
  flattenObservation,
  type AnalyticsStore,
  type FlattenedObservation,
} from '../src/clickhouse/index.js';
import { toPipelineError, type PipelineError } from '../src/errors.js';
import { createGroupCommit, fixedLimit } from '../src/group-commit.js';
import type { Logger } from '../src/logger.js';
import type { Metrics } from '../src/metrics.js';
import {
  QUEUE,
  type AnalyticsJobData,
  type MessageOutcome,
  type ObservationEnvelope,
} from '../src/queues.js';
import { deadObservation, type DeadLetterInput } from './dead-letter.js';
import { result, type Stage } from './stage.js';

export interface AnalyticsMirrorDeps {
  readonly store: AnalyticsStore;
  readonly log: Logger;
  readonly metrics?: Metrics;
  /** Group commit of inserts (default: each job's rows go at once, one insert at a time). */
  readonly insert?: {
    /** Longest wait of a job's rows for other jobs' (CLICKHOUSE_INSERT_WAIT_MS). */
    readonly lingerMs: number;
    /** Insert at once when this many jobs wait (the jobs the stage holds). */
    readonly lingerJobs: number;
    /** Insert at once when this many rows and outcomes wait (CLICKHOUSE_INSERT_ROWS). */
    readonly lingerRows?: number;
    /** Most rows and message outcomes in one insert. */
    readonly maxRows?: number;
  };
}

interface Flat {
  readonly env: ObservationEnvelope;
  readonly flat: FlattenedObservation;
}

/** What one shared insert carries: Observation rows, then message outcomes. */
type MirrorItem = { readonly row: FlattenedObservation } | { readonly outcome: MessageOutcome };

export function createAnalyticsStage(deps: AnalyticsMirrorDeps): Stage<AnalyticsJobData> {
  // ClickHouse may be down when the process starts: the schema is applied before
  // the first insert that finds it up (migrations are idempotent).
  let schema: Promise<void> | undefined;
  const ensureSchema = () =>
    (schema ??= deps.store.migrate().catch((err: unknown) => {
      schema = undefined;
      throw err;
    }));

  // One insert in flight: the embedded engine's connection runs one statement at a
  // time, and a server takes few large inserts best.
  const slot = fixedLimit(1);
  const shared = createGroupCommit<MirrorItem, undefined>({
    limit: slot,
    maxEntries: deps.insert?.maxRows ?? 10_000,
    lingerMs: deps.insert?.lingerMs ?? 0,
    lingerParts: deps.insert?.lingerJobs ?? 1,
    ...(deps.insert?.lingerRows !== undefined ? { lingerEntries: deps.insert.lingerRows } : {}),
    onBundle: (jobs) => deps.metrics?.analyticsInsertJobs.observe(jobs),
    send: (items) =>
      slot.run(async () => {
        const rows: FlattenedObservation[] = [];
        const outcomes: MessageOutcome[] = [];
        for (const item of items) {
          if ('row' in item) rows.push(item.row);
          else outcomes.push(item.outcome);
        }
        // Rows first: an outcome never names rows that are not there yet.
        await deps.store.insertFlattened(rows);
        await deps.store.insertMessages(outcomes);
        return items.map(() => undefined);
      }),
  });

  /** The messages of refused Observations: dead-lettered at this stage, the later verdict. */
  function settle(
    messages: readonly MessageOutcome[],
    dead: readonly DeadLetterInput[],
    at: number,
  ): MessageOutcome[] {
    const refused = new Map<string, PipelineError>();
    for (const d of dead) {
      const id = d.observation?.provenance.messageId;
      if (id !== undefined && !refused.has(id)) refused.set(id, d.error);
    }
    const out = messages.map((m) => {
      const e = refused.get(m.message.id);
      return e
        ? {
            ...m,
            outcome: 'dead_lettered' as const,
            errorCode: e.code,
            errorStage: e.stage,
            decidedAt: at,
          }
        : m;
    });
    // A refused Observation whose message this job does not carry still gets its verdict.
    for (const d of dead) {
      const o = d.outcome;
      if (o && !messages.some((m) => m.message.id === o.message.id))
        out.push({
          ...o,
          outcome: 'dead_lettered',
          errorCode: d.error.code,
          errorStage: d.error.stage,
          decidedAt: at,
        });
    }
    return out;
  }

  /**
   * `flats` were refused together with `error`: inserts each half again, halving
   * what is refused, and returns the Observations the engine refuses alone.
   */
  async function isolate(
    flats: readonly Flat[],
    error: PipelineError,
  ): Promise<{ flat: Flat; error: PipelineError }[]> {
    if (flats.length <= 1) return flats.map((flat) => ({ flat, error }));
    const half = Math.ceil(flats.length / 2);
    const refused: { flat: Flat; error: PipelineError }[] = [];
    for (const part of [flats.slice(0, half), flats.slice(half)]) {
      try {
        await deps.store.insertFlattened(part.map((f) => f.flat));
      } catch (err) {
        const e = toPipelineError(err);
        if (e.retryable) throw e;
        refused.push(...(await isolate(part, e)));
      }
    }
    return refused;
  }

  return {
    name: 'analytics',
    queue: QUEUE.analytics,

    wholeJobFailure(job, error) {
      const dead = job.data.observations.map((env) =>
        deadObservation('analytics', job, env, error),
      );
      return result({
        deadLetters: dead,
        outcomes: settle(job.data.messages ?? [], dead, Date.now()),
      });
    },

    async run(job) {
      const { observations, committedAt, traceId } = job.data;
      const dead: DeadLetterInput[] = [];
      const flats: Flat[] = [];
      let inserted: number;
      for (const env of observations) {
        try {
          flats.push({ env, flat: flattenObservation(env, committedAt) });
        } catch (err) {
          dead.push(deadObservation('analytics', job, env, toPipelineError(err)));
        }
      }
      try {
        await ensureSchema();
        inserted = flats.length;
        // device_messages: the fates of the messages (a later verdict replaces an earlier one).
        const outcomes = settle(job.data.messages ?? [], dead, Date.now());
        try {
          await shared.write([
            ...flats.map((f): MirrorItem => ({ row: f.flat })),
            ...outcomes.map((outcome): MirrorItem => ({ outcome })),
          ]);
        } catch (err) {
          const e = toPipelineError(err);
          if (e.retryable) throw e;
          // This job's own insert was refused: which Observations? Then their messages' fates.
          const refused = await isolate(flats, e);
          for (const r of refused)
            dead.push(deadObservation('analytics', job, r.flat.env, r.error));
          inserted -= refused.length;
          await deps.store.insertMessages(settle(job.data.messages ?? [], dead, Date.now()));
        }
        // device_associations: a device's whole history, versioned (the latest wins).
        await deps.store.insertAssociations(job.data.associations ?? []);
      } catch (err) {
        const e = toPipelineError(err);
        if (!e.retryable) throw e;
        // ClickHouse cannot be reached: the whole job, later (inserts are idempotent).
        return result({ retry: { data: job.data, error: e } });
      }
      deps.metrics?.analyticsRows.inc(inserted);
      deps.log.debug(
        { event: 'mirrored', traceId, jobId: job.id, rows: flats.length, refused: dead.length },
        'batch mirrored',
      );
      return result({ deadLetters: dead });
    },
  };
}
