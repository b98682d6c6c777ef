/**
 * Mirror backfills as jobs of the admin process: each has an id, a state, its
 * progress, and can be cancelled (by DELETE, by its client disconnecting, or by
 * the admin API closing). Jobs live in this process's memory: the process that
 * owns the analytics store runs them; the last FINISHED_KEPT finished ones stay
 * readable.
 *
 * Contract: start() takes the range and a runner (backfillMirror over FHIR
 * pages) and returns at once; the runner gets an AbortSignal and reports pages
 * through onPage. cancel() aborts and waits until the runner has stopped.
 */
import { randomUUID } from 'node:crypto';
import type { BackfillSummary } from '../clickhouse/index.js';
import { httpAnswer, type HttpErrorBody } from '../errors.js';

/** The explicit range a backfill needs: since and/or until, or all. */
export interface BackfillRange {
  readonly since?: string;
  readonly until?: string;
  readonly all?: true;
}

export type BackfillState = 'running' | 'done' | 'failed' | 'cancelled';

/** What GET /api/analytics/backfill/:id answers. */
export interface BackfillJobView {
  readonly id: string;
  readonly state: BackfillState;
  readonly range: BackfillRange;
  readonly wipe: boolean;
  readonly startedAt: string;
  readonly progress: BackfillSummary;
  /** Why it stopped early: "cancelled", "client disconnected", "admin API closing". */
  readonly stopReason?: string;
  readonly error?: HttpErrorBody['error'];
}

export interface BackfillRunner {
  (signal: AbortSignal, onPage: (progress: BackfillSummary) => void): Promise<BackfillSummary>;
}

interface Job {
  view: BackfillJobView;
  readonly controller: AbortController;
  readonly finished: Promise<void>;
}

/** Finished jobs kept for GET (the oldest is forgotten first). */
const FINISHED_KEPT = 20;

export interface BackfillJobs {
  /** Starts a job; `events` hears every page and the end. */
  start(
    range: BackfillRange,
    wipe: boolean,
    run: BackfillRunner,
    events?: {
      onPage?: (progress: BackfillSummary) => void;
      onEnd?: (view: BackfillJobView) => void;
    },
  ): BackfillJobView;
  get(id: string): BackfillJobView | undefined;
  /** Aborts a running job and waits until it stopped; undefined for an unknown id. */
  cancel(id: string, reason: string): Promise<BackfillJobView | undefined>;
  /** Cancels every running job (admin API closing). */
  cancelAll(reason: string): Promise<void>;
}

export function backfillJobs(now: () => number = Date.now): BackfillJobs {
  const jobs = new Map<string, Job>();

  const forgetOld = () => {
    const finished = [...jobs.values()].filter((j) => j.view.state !== 'running');
    for (const j of finished.slice(0, Math.max(0, finished.length - FINISHED_KEPT)))
      jobs.delete(j.view.id);
  };

  const cancel = async (id: string, reason: string) => {
    const job = jobs.get(id);
    if (!job) return undefined;
    if (job.view.state === 'running' && !job.controller.signal.aborted)
      job.controller.abort(new Error(reason));
    await job.finished;
    return job.view;
  };

  return {
    start(range, wipe, run, events = {}) {
      const id = randomUUID();
      const controller = new AbortController();
      const view: BackfillJobView = {
        id,
        state: 'running',
        range,
        wipe,
        startedAt: new Date(now()).toISOString(),
        progress: { pages: 0, observations: 0, seconds: 0 },
      };
      const update = (patch: Partial<BackfillJobView>) => {
        const job = jobs.get(id);
        if (job) job.view = { ...job.view, ...patch };
        return job?.view ?? { ...view, ...patch };
      };
      const reason = () =>
        controller.signal.reason instanceof Error ? controller.signal.reason.message : 'cancelled';
      const finished = run(controller.signal, (progress) => {
        update({ progress });
        events.onPage?.(progress);
      }).then(
        (summary) => {
          const end = update({
            progress: summary,
            state: summary.cancelled ? 'cancelled' : 'done',
            ...(summary.cancelled ? { stopReason: reason() } : {}),
          });
          events.onEnd?.(end);
        },
        (err: unknown) => {
          const end = update({ state: 'failed', error: httpAnswer(err).body.error });
          events.onEnd?.(end);
        },
      );
      jobs.set(id, { view, controller, finished: finished.finally(forgetOld) });
      return view;
    },
    get: (id) => jobs.get(id)?.view,
    cancel,
    async cancelAll(reason) {
      await Promise.all([...jobs.keys()].map((id) => cancel(id, reason)));
    },
  };
}
