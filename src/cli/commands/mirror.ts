/**
 * `iomt mirror backfill (--since <date> [--until <date>] | --until <date> | --all)
 * [--wipe] [--admin-url <url>]`: rebuilds or repairs the ClickHouse mirror from
 * the FHIR server (paged search by _lastUpdated; src/clickhouse/backfill.ts). The
 * range is always explicit: a bare `iomt mirror backfill` is refused rather than
 * mirroring the whole FHIR server by accident.
 *
 * Where it runs: with --admin-url, the process that owns the analytics store does
 * it as a job (POST /api/analytics/backfill) — needed in embedded mode while the
 * pipeline runs, since one process owns the engine's directory. Without, this
 * process opens FHIR and ClickHouse itself (a ClickHouse server, or the embedded
 * engine while the pipeline is stopped). Progress goes to stderr, the summary
 * (JSON) to stdout. Ctrl-C stops it after the page in flight (through the admin
 * API: the closed request cancels the job); `iomt mirror cancel <job> --admin-url`
 * stops a job from elsewhere.
 */
import { pino } from 'pino';
import {
  backfillMirror,
  createAnalyticsStore,
  type BackfillSummary,
} from '../../clickhouse/index.js';
import { loadConfig } from '../../config.js';
import { isPipelineError, PipelineError } from '../../errors.js';
import { createConfiguredFhirGateway } from '../../fhir/gateway.js';
import { observationPages } from '../../fhir/observation-pages.js';
import { createLogger } from '../../logger.js';
import { answerError, fetchAdmin } from '../admin-answer.js';
import { fail, type Program } from '../common.js';

interface BackfillFlags {
  readonly since?: string;
  readonly until?: string;
  readonly all?: boolean;
  readonly wipe?: boolean;
  readonly pageSize: string;
  readonly adminUrl?: string;
}

/** Exit status of a backfill stopped by Ctrl-C (128 + SIGINT). */
const INTERRUPTED = 130;

function authHeaders(token: string | undefined): Record<string, string> {
  return token ? { authorization: `Bearer ${token}` } : {};
}

/** The owning process does it; its NDJSON answer: the job, progress lines, then the summary or an error. */
async function viaAdmin(
  adminUrl: string,
  token: string | undefined,
  body: BackfillBody,
  signal: AbortSignal,
): Promise<BackfillSummary> {
  const res = await fetchAdmin(`${adminUrl.replace(/\/+$/, '')}/api/analytics/backfill`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...authHeaders(token) },
    body: JSON.stringify(body),
    signal,
  });
  if (!res.ok || !res.body) throw answerError(res.status, await res.text());
  let buffered = '';
  let summary: BackfillSummary | undefined;
  const handle = (raw: string) => {
    if (raw.trim() === '') return;
    const msg = JSON.parse(raw) as {
      job?: { id: string };
      progress?: BackfillSummary;
      summary?: BackfillSummary;
      error?: { code: string; message: string };
    };
    if (msg.job)
      process.stderr.write(
        `job ${msg.job.id} (Ctrl-C, or \`iomt mirror cancel ${msg.job.id} --admin-url …\`, stops it)\n`,
      );
    if (msg.progress) process.stderr.write(progressLine(msg.progress));
    if (msg.summary) summary = msg.summary;
    if (msg.error) throw answerError(500, JSON.stringify({ error: msg.error }));
  };
  const decoder = new TextDecoder();
  for await (const chunk of res.body) {
    buffered += decoder.decode(chunk as Uint8Array, { stream: true });
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    lines.forEach(handle);
  }
  handle(buffered);
  if (summary === undefined)
    throw new PipelineError('AdminUnavailable', 'the backfill answer ended without a summary');
  return summary;
}

function progressLine(p: BackfillSummary): string {
  return `page ${p.pages}: ${p.observations} Observations, up to ${p.lastUpdated ?? '?'}\n`;
}

/** What POST /api/analytics/backfill takes. */
interface BackfillBody {
  readonly all?: true;
  readonly since?: string;
  readonly until?: string;
  readonly wipe: boolean;
  readonly pageSize: number;
}

/** The request body: an explicit range (the admin API checks it again), wipe, page size. */
function backfillBody(flags: BackfillFlags): BackfillBody {
  const pageSize = Number(flags.pageSize);
  if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > 1000)
    throw new PipelineError('InvalidArgument', '--page-size must be an integer in [1, 1000]');
  const ranged = flags.since !== undefined || flags.until !== undefined;
  if (flags.all === true && ranged)
    throw new PipelineError('InvalidArgument', 'pass --all or --since/--until, not both');
  if (flags.all !== true && !ranged)
    throw new PipelineError(
      'InvalidArgument',
      'name the range to backfill: --since <date> (and/or --until <date>), or --all for everything',
    );
  return {
    ...(flags.all === true ? { all: true as const } : {}),
    ...(flags.since !== undefined ? { since: flags.since } : {}),
    ...(flags.until !== undefined ? { until: flags.until } : {}),
    wipe: flags.wipe === true,
    pageSize,
  };
}

async function backfill(flags: BackfillFlags): Promise<void> {
  const config = loadConfig();
  const body = backfillBody(flags);
  // Ctrl-C: stop after the page in flight and print what was done.
  const interrupt = new AbortController();
  const onSigint = () => interrupt.abort();
  process.once('SIGINT', onSigint);
  try {
    const summary =
      flags.adminUrl !== undefined
        ? await viaAdmin(flags.adminUrl, config.admin.token, body, interrupt.signal)
        : await locally(config, body, interrupt.signal);
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    if (summary.cancelled) process.exitCode = INTERRUPTED;
  } catch (err) {
    if (interrupt.signal.aborted) {
      process.stderr.write('iomt: interrupted: the backfill job was cancelled\n');
      process.exit(INTERRUPTED);
    }
    throw err;
  } finally {
    process.off('SIGINT', onSigint);
  }
}

async function locally(
  config: ReturnType<typeof loadConfig>,
  body: BackfillBody,
  signal: AbortSignal,
): Promise<BackfillSummary> {
  // Logs to stderr: stdout carries the summary only.
  const log = createLogger(config.log.level, { destination: pino.destination(2) });
  const store = createAnalyticsStore(config.clickhouse, log);
  try {
    await store.ping().catch((err: unknown) => {
      if (config.clickhouse.url === undefined && isPipelineError(err))
        err.message += ' To backfill while the pipeline runs, pass --admin-url.';
      throw err;
    });
    return await backfillMirror(
      observationPages(createConfiguredFhirGateway(config), {
        identifierSystem: config.fhir.identifierSystem,
        pageSize: body.pageSize,
        signal,
        ...(body.since !== undefined ? { since: body.since } : {}),
        ...(body.until !== undefined ? { until: body.until } : {}),
      }),
      store,
      { wipe: body.wipe, signal, onPage: (p) => process.stderr.write(progressLine(p)) },
    );
  } finally {
    await store.close();
  }
}

async function cancel(id: string, adminUrl: string): Promise<void> {
  const config = loadConfig();
  const res = await fetchAdmin(
    `${adminUrl.replace(/\/+$/, '')}/api/analytics/backfill/${encodeURIComponent(id)}`,
    { method: 'DELETE', headers: authHeaders(config.admin.token) },
  );
  const text = await res.text();
  if (!res.ok) throw answerError(res.status, text);
  process.stdout.write(`${JSON.stringify((JSON.parse(text) as { job: unknown }).job)}\n`);
}

export function register(program: Program): void {
  const mirror = program
    .command('mirror')
    .description('the ClickHouse mirror of the FHIR Observations');
  mirror
    .command('backfill')
    .description(
      'rebuild or repair the mirror from the FHIR server (paged by _lastUpdated); name the range',
    )
    .option('--since <date>', 'Observations changed at or after this FHIR date or instant')
    .option('--until <date>', 'Observations changed before this FHIR date or instant')
    .option('--all', 'every Observation of the pipeline on the FHIR server')
    .option('--wipe', 'empty the FHIR-derived tables first (a rebuild)')
    .option('--page-size <n>', 'Observations per FHIR page', '500')
    .option(
      '--admin-url <url>',
      'let the process owning the analytics store do it (embedded engine while the pipeline runs)',
    )
    .action((opts) => backfill(opts).catch(fail));
  mirror
    .command('cancel')
    .argument('<job>', 'the job id a backfill printed')
    .requiredOption('--admin-url <url>', 'admin API of the process running the job')
    .description('stop a backfill job after its page in flight')
    .action((job, opts) => cancel(job, opts.adminUrl).catch(fail));
}
