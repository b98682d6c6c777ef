/**
 * The admin API's analytics endpoints, served by a process that has an
 * analytics store (in embedded mode: the one that owns the engine).
 *  - POST /api/analytics/query  { sql, format? } → the result as text. One
 *    reading statement, checked and run read-only (clickhouse/analyst-query.ts).
 *  - POST /api/analytics/backfill { since?, wipe?, pageSize? } → rebuilds or
 *    repairs the mirror from FHIR (clickhouse/backfill.ts); answers NDJSON: one
 *    {"progress"} line per page, then {"summary"} or {"error"}.
 * Authentication is the admin API's (server.ts: bearer token).
 */
import { PassThrough } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { backfillMirror, type AnalyticsStore, type QueryFormat } from '../clickhouse/index.js';
import type { Config } from '../config.js';
import { httpAnswer, PipelineError } from '../errors.js';
import type { FhirGateway } from '../fhir/gateway.js';
import { observationPages } from '../fhir/observation-pages.js';
import type { Logger } from '../logger.js';

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

/** FHIR instant or date (search.html#date): what `since` may be. */
const FHIR_DATE = /^\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/;

function storeOf(deps: AnalyticsRoutesDeps): AnalyticsStore {
  if (!deps.analyticsStore) {
    throw new PipelineError(
      'QueryRefused',
      'this process does not own the analytics store (run the worker role with the analytics stage)',
      { stage: 'admin' },
    );
  }
  return deps.analyticsStore;
}

export function registerAnalyticsRoutes(app: FastifyInstance, deps: AnalyticsRoutesDeps): void {
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
      const text = await store.analystQuery(sql, format as QueryFormat);
      await reply
        .type(format === 'JSON' || format === 'JSONEachRow' ? 'application/json' : 'text/plain')
        .send(text);
    },
  );

  app.post<{ Body: { since?: unknown; wipe?: unknown; pageSize?: unknown } | undefined }>(
    '/api/analytics/backfill',
    async (req, reply) => {
      const store = storeOf(deps);
      const since = req.body?.since;
      if (since !== undefined && (typeof since !== 'string' || !FHIR_DATE.test(since))) {
        throw new PipelineError('QueryRefused', 'since must be a FHIR date or instant', {
          stage: 'admin',
        });
      }
      const pageSize = req.body?.pageSize ?? 500;
      if (
        typeof pageSize !== 'number' ||
        !Number.isInteger(pageSize) ||
        pageSize < 1 ||
        pageSize > 1000
      ) {
        throw new PipelineError('QueryRefused', 'pageSize must be an integer in [1, 1000]', {
          stage: 'admin',
        });
      }
      deps.log.info(
        { event: 'backfill-started', since, wipe: req.body?.wipe === true },
        'mirror backfill',
      );
      // NDJSON as it goes: a progress line per page, then the summary (or an error
      // line). A large backfill outlasts an HTTP client's wait for a silent answer.
      const out = new PassThrough();
      const line = (value: object) => `${JSON.stringify(value)}\n`;
      void backfillMirror(
        observationPages(deps.fhir, {
          identifierSystem: deps.config.fhir.identifierSystem,
          pageSize,
          ...(since !== undefined ? { since } : {}),
        }),
        store,
        { wipe: req.body?.wipe === true, onPage: (progress) => out.write(line({ progress })) },
      ).then(
        (summary) => {
          deps.log.info({ event: 'backfill-done', ...summary }, 'mirror backfill done');
          out.end(line({ summary }));
        },
        (err: unknown) => {
          deps.log.error({ event: 'backfill-failed', err }, 'mirror backfill failed');
          out.end(line(httpAnswer(err).body));
        },
      );
      return reply.type('application/x-ndjson').send(out);
    },
  );
}
