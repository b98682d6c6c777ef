/**
 * The dead-letter queue on the admin API: the same operations as `iomt dlq`
 * (src/dlq/store.ts does the work), for the operator console.
 *
 *   GET  /api/dlq?code=&device=&stage=&since=&until=&limit=
 *        → { total, byCode: {code: n}, entries: [summary…] } (oldest first;
 *          byCode counts the filter's matches without its code, so every code shows)
 *   GET  /api/dlq/:id                       → the entry with its raw payload
 *   POST /api/dlq/replay  {ids?, code?, device?, stage?, since?, until?, all?} → ReplayResult
 *   POST /api/dlq/purge   (the same)        → { purged }
 * Times: ISO 8601 or 15m / 2h / 7d ago. replay and purge refuse to act on every
 * dead letter unless `all: true` says so.
 */
import type { FastifyInstance } from 'fastify';
import { parseTime, type DeadLetterFilter, type DeadLetterStore } from '../dlq/index.js';
import { PipelineError } from '../errors.js';

export interface DlqRoutesDeps {
  readonly deadLetters: DeadLetterStore;
}

type Fields = Record<string, unknown> | undefined;

function invalid(message: string): PipelineError {
  return new PipelineError('InvalidArgument', message, { stage: 'admin' });
}

function field(f: Fields, key: string): string | undefined {
  const v = f?.[key];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string' || v.length > 200) throw invalid(`${key}: a string`);
  return v;
}

export function filterOf(f: Fields): DeadLetterFilter {
  const code = field(f, 'code');
  const device = field(f, 'device');
  const stage = field(f, 'stage');
  const since = field(f, 'since');
  const until = field(f, 'until');
  const ids = f?.ids;
  if (ids !== undefined && (!Array.isArray(ids) || !ids.every((i) => typeof i === 'string')))
    throw invalid('ids: an array of dead-letter ids');
  return {
    ...(code ? { code } : {}),
    ...(device ? { deviceId: device } : {}),
    ...(stage ? { stage } : {}),
    ...(since ? { since: parseTime(since, 'since') } : {}),
    ...(until ? { until: parseTime(until, 'until') } : {}),
    ...(Array.isArray(ids) && ids.length > 0 ? { ids } : {}),
  };
}

function guarded(body: Fields, verb: string): DeadLetterFilter {
  const filter = filterOf(body);
  if (Object.keys(filter).length === 0 && body?.all !== true)
    throw invalid(`${verb}: name dead letters by ids or a filter, or say all: true`);
  return filter;
}

export function registerDlqRoutes(app: FastifyInstance, deps: DlqRoutesDeps): void {
  const { deadLetters } = deps;

  app.get<{ Querystring: Record<string, string> }>('/api/dlq', async (req) => {
    const limit = req.query.limit === undefined ? 500 : Number(req.query.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 10_000)
      throw invalid('limit: an integer in [1, 10000]');
    const filter = filterOf(req.query);
    const all = await deadLetters.list({ ...filter, code: undefined });
    const byCode: Record<string, number> = {};
    for (const d of all) byCode[d.code] = (byCode[d.code] ?? 0) + 1;
    const matching = filter.code === undefined ? all : all.filter((d) => d.code === filter.code);
    return { total: matching.length, byCode, entries: matching.slice(0, limit) };
  });

  app.get<{ Params: { id: string } }>('/api/dlq/:id', (req) => deadLetters.show(req.params.id));

  app.post<{ Body: Fields }>('/api/dlq/replay', (req) =>
    deadLetters.replay(guarded(req.body, 'replay')),
  );

  app.post<{ Body: Fields }>('/api/dlq/purge', async (req) => ({
    purged: await deadLetters.purge(guarded(req.body, 'purge')),
  }));
}
