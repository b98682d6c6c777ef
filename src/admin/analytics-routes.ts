/**
 * The admin API's analytics endpoints, served by a process that has an
 * analytics store (in embedded mode: the one that owns the engine).
 *  - POST /api/analytics/query { sql, format? } → the result as text. One
 *    reading statement, checked and run as the analyst (clickhouse/analyst-query.ts,
 *    security.md "Analyst SQL"). The admin token or ANALYST_TOKEN.
 *  - POST /api/analytics/backfill { since?, until?, all?, wipe?, pageSize? }
 *    starts a backfill job (clickhouse/backfill.ts) over an explicit range —
 *    since and/or until, or all: true — and answers NDJSON as it goes: a {"job"}
 *    line with its id, a {"progress"} line per page, then {"summary"} (with
 *    "cancelled": true when stopped) or {"error"}. A client that disconnects
 *    cancels its job.
 *  - GET /api/analytics/backfill/:id → {"job": state, range, progress, …}.
 *  - DELETE /api/analytics/backfill/:id → cancels the job, answers once it stopped.
 * Authentication is the admin API's (server.ts: bearer tokens).
 */
import { PassThrough } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { backfillMirror, type AnalyticsStore, type QueryFormat } from '../clickhouse/index.js';
import type { Config } from '../config.js';
import { PipelineError } from '../errors.js';
import type { FhirGateway } from '../fhir/gateway.js';
import { observationPages } from '../fhir/observation-pages.js';
import type { Logger } from '../logger.js';
import { principalOf } from './principal.js';
import { backfillJobs, type BackfillJobView, type BackfillRange } from './backfill-jobs.js';
import { stripUrlCredentials } from './url-credentials.js';

export interface AnalyticsRoutesDeps {
  /** The FHIR server the backfill reads. */
  readonly fhir: FhirGateway;
  readonly config: Config;
  readonly log: Logger;
  readonly analyticsStore: AnalyticsStore | undefined;
}

export const QUERY_FORMATS: readonly QueryFormat[] = [
  'JSONEachRow',
  'JSON',
  'CSV',
  'TSV',
  'PrettyCompact',
];

/** FHIR instant or date (search.html#date): what `since` and `until` may be. */
const FHIR_DATE = /^\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/;

function storeOf(deps: AnalyticsRoutesDeps): AnalyticsStore {
  if (!deps.analyticsStore) {
    throw new PipelineError(
      'NotServedHere',
      'this process does not own the analytics store (run the worker role with the analytics stage)',
    );
  }
  return deps.analyticsStore;
}

function invalid(message: string): PipelineError {
  return new PipelineError('InvalidArgument', message, { stage: 'admin' });
}

interface BackfillBody {
  readonly since?: unknown;
  readonly until?: unknown;
  readonly all?: unknown;
  readonly wipe?: unknown;
  readonly pageSize?: unknown;
}

/** The explicit range and options of a backfill request; InvalidArgument otherwise. */
export function backfillRequest(body: BackfillBody | undefined): {
  range: BackfillRange;
  wipe: boolean;
  pageSize: number;
} {
  const { since, until, all, wipe, pageSize = 500 } = body ?? {};
  for (const [name, value] of [
    ['since', since],
    ['until', until],
  ] as const) {
    if (value !== undefined && (typeof value !== 'string' || !FHIR_DATE.test(value)))
      throw invalid(`${name} must be a FHIR date or instant`);
  }
  if (all !== undefined && all !== true) throw invalid('all must be true when given');
  if (all === true && (since !== undefined || until !== undefined))
    throw invalid('all: true or since/until, not both');
  if (all !== true && since === undefined && until === undefined)
    throw invalid(
      'name the range to backfill: since (and/or until), FHIR dates or instants, or all: true',
    );
  if (
    typeof since === 'string' &&
    typeof until === 'string' &&
    Date.parse(since) >= Date.parse(until)
  )
    throw invalid('since must be before until');
  if (wipe !== undefined && typeof wipe !== 'boolean') throw invalid('wipe must be a boolean');
  if (
    typeof pageSize !== 'number' ||
    !Number.isInteger(pageSize) ||
    pageSize < 1 ||
    pageSize > 1000
  )
    throw invalid('pageSize must be an integer in [1, 1000]');
  const range: BackfillRange =
    all === true
      ? { all: true }
      : {
          ...(typeof since === 'string' ? { since } : {}),
          ...(typeof until === 'string' ? { until } : {}),
        };
  return { range, wipe: wipe === true, pageSize };
}

export function registerAnalyticsRoutes(app: FastifyInstance, deps: AnalyticsRoutesDeps): void {
  const log = deps.log.child({ component: 'admin-analytics' });
  app.post<{ Body: { sql?: unknown; format?: unknown } }>(
    '/api/analytics/query',
    async (req, reply) => {
      const store = storeOf(deps);
      const sql = typeof req.body?.sql === 'string' ? req.body.sql : '';
      const format = req.body?.format ?? 'JSONEachRow';
      if (!QUERY_FORMATS.includes(format as QueryFormat)) {
        throw new PipelineError(
          'QueryRefused',
          `format must be one of ${QUERY_FORMATS.join(', ')}`,
          {
            stage: 'admin',
          },
        );
      }
      const started = Date.now();
      try {
        const text = await store.analystQuery(sql, format as QueryFormat);
        await reply
          .type(format === 'JSON' || format === 'JSONEachRow' ? 'application/json' : 'text/plain')
          .send(text);
      } finally {
        // Who asked, how long, how it ended: never the SQL (it may hold patient ids).
        log.info(
          {
            event: 'analyst-query',
            principal: principalOf(deps.config, req.headers.authorization),
            sqlLength: sql.length,
            ms: Date.now() - started,
            status: reply.statusCode,
          },
          'analyst query',
        );
      }
    },
  );

  const jobs = backfillJobs();
  // Shutdown: no backfill keeps writing into a store that is closing.
  app.addHook('onClose', () => jobs.cancelAll('admin API closing'));

  app.post<{ Body: BackfillBody | undefined }>('/api/analytics/backfill', async (req, reply) => {
    const store = storeOf(deps);
    const { range, wipe, pageSize } = backfillRequest(req.body);
    // NDJSON as it goes: the job, a progress line per page, then the summary (or an
    // error line). A large backfill outlasts an HTTP client's wait for a silent answer.
    const out = new PassThrough();
    const line = (value: object) => {
      if (!out.writableEnded) out.write(`${JSON.stringify(value)}\n`);
    };
    const job = jobs.start(
      range,
      wipe,
      (signal, onPage) =>
        backfillMirror(
          observationPages(deps.fhir, {
            identifierSystem: deps.config.fhir.identifierSystem,
            pageSize,
            signal,
            ...(range.since !== undefined ? { since: range.since } : {}),
            ...(range.until !== undefined ? { until: range.until } : {}),
          }),
          store,
          { wipe, onPage, signal },
        ),
      {
        onPage: (progress) => line({ progress }),
        onEnd: (view) => {
          logEnd(log, view);
          if (view.state === 'failed') line({ error: view.error });
          else line({ summary: view.progress });
          out.end();
        },
      },
    );
    log.info({ event: 'backfill-started', job: job.id, ...range, wipe }, 'mirror backfill');
    line({ job: { id: job.id, range, wipe } });
    // The client went away before the end: nobody is waiting for this job, stop it.
    reply.raw.on('close', () => {
      if (!reply.raw.writableFinished) void jobs.cancel(job.id, 'client disconnected');
    });
    return reply.type('application/x-ndjson').send(out);
  });

  app.get<{ Params: { id: string } }>('/api/analytics/backfill/:id', (req) => {
    const view = jobs.get(req.params.id);
    if (!view) throw new PipelineError('BackfillNotFound', undefined, { stage: 'admin' });
    return Promise.resolve({ job: view });
  });

  app.delete<{ Params: { id: string } }>('/api/analytics/backfill/:id', async (req) => {
    const view = await jobs.cancel(req.params.id, 'cancelled');
    if (!view) throw new PipelineError('BackfillNotFound', undefined, { stage: 'admin' });
    return { job: view };
  });
}

function logEnd(log: Logger, view: BackfillJobView): void {
  const fields = {
    event: `backfill-${view.state}`,
    job: view.id,
    pages: view.progress.pages,
    observations: view.progress.observations,
    seconds: view.progress.seconds,
    ...(view.stopReason ? { reason: view.stopReason } : {}),
  };
  if (view.state === 'failed')
    log.error(
      { ...fields, code: view.error?.code, reason: stripUrlCredentials(view.error?.message ?? '') },
      'mirror backfill failed',
    );
  else log.info(fields, `mirror backfill ${view.state}`);
}
