/**
 * `iomt mirror backfill [--since <date>] [--wipe] [--admin-url <url>]`: rebuilds
 * or repairs the ClickHouse mirror from the FHIR server (paged search by
 * _lastUpdated; src/clickhouse/backfill.ts).
 *
 * Where it runs: with --admin-url, the process that owns the analytics store does
 * it (POST /api/analytics/backfill) — needed in embedded mode while the pipeline
 * runs, since one process owns the engine's directory. Without, this process
 * opens FHIR and ClickHouse itself (a ClickHouse server, or the embedded engine
 * while the pipeline is stopped). Progress goes to stderr, the summary (JSON) to stdout.
 */
import { pino } from 'pino';
import {
  backfillMirror,
  createAnalyticsStore,
  type BackfillSummary,
} from '../../clickhouse/index.js';
import { loadConfig } from '../../config.js';
import { isPipelineError, PipelineError } from '../../errors.js';
import { createFhirGateway } from '../../fhir/gateway.js';
import { observationPages } from '../../fhir/observation-pages.js';
import { createLogger } from '../../logger.js';
import { fail, type Program } from '../common.js';

interface BackfillFlags {
  readonly since?: string;
  readonly wipe?: boolean;
  readonly pageSize: string;
  readonly adminUrl?: string;
}

/** The owning process does it; its NDJSON answer: progress lines, then the summary or an error. */
async function viaAdmin(
  adminUrl: string,
  token: string | undefined,
  body: object,
): Promise<string> {
  const res = await fetch(`${adminUrl.replace(/\/+$/, '')}/api/analytics/backfill`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: JSON.stringify(body),
  });
  if (!res.ok || !res.body) throw new Error(errorText(await res.text(), res.status));
  let buffered = '';
  let summary: string | undefined;
  const handle = (raw: string) => {
    if (raw.trim() === '') return;
    const msg = JSON.parse(raw) as {
      progress?: BackfillSummary;
      summary?: BackfillSummary;
      error?: { code: string; message: string };
    };
    if (msg.progress) process.stderr.write(progressLine(msg.progress));
    if (msg.summary) summary = JSON.stringify(msg.summary);
    if (msg.error) throw new Error(`${msg.error.code}: ${msg.error.message}`);
  };
  const decoder = new TextDecoder();
  for await (const chunk of res.body) {
    buffered += decoder.decode(chunk as Uint8Array, { stream: true });
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    lines.forEach(handle);
  }
  handle(buffered);
  if (summary === undefined) throw new Error('the backfill ended without a summary');
  return summary;
}

function errorText(text: string, status: number): string {
  try {
    const err = (JSON.parse(text) as { error?: { code: string; message: string } }).error;
    if (err) return `${err.code}: ${err.message}`;
  } catch {
    // not JSON: the status says enough
  }
  return `HTTP ${status}`;
}

function progressLine(p: BackfillSummary): string {
  return `page ${p.pages}: ${p.observations} Observations, up to ${p.lastUpdated ?? '?'}\n`;
}

async function backfill(flags: BackfillFlags): Promise<void> {
  const config = loadConfig();
  const pageSize = Number(flags.pageSize);
  if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > 1000)
    throw new PipelineError('ConfigInvalid', '--page-size must be an integer in [1, 1000]');
  const body = {
    ...(flags.since !== undefined ? { since: flags.since } : {}),
    wipe: flags.wipe === true,
    pageSize,
  };
  if (flags.adminUrl !== undefined) {
    process.stdout.write(`${await viaAdmin(flags.adminUrl, config.admin.token, body)}\n`);
    return;
  }
  // Logs to stderr: stdout carries the summary only.
  const log = createLogger(config.log.level, { destination: pino.destination(2) });
  const store = createAnalyticsStore(config.clickhouse, log);
  try {
    await store.ping().catch((err: unknown) => {
      if (config.clickhouse.url === undefined && isPipelineError(err))
        err.message += ' To backfill while the pipeline runs, pass --admin-url.';
      throw err;
    });
    const summary = await backfillMirror(
      observationPages(
        createFhirGateway({ baseUrl: config.fhir.url, timeoutMs: config.fhir.timeoutMs }),
        {
          identifierSystem: config.fhir.identifierSystem,
          pageSize,
          ...(flags.since !== undefined ? { since: flags.since } : {}),
        },
      ),
      store,
      {
        wipe: flags.wipe === true,
        onPage: (p) => process.stderr.write(progressLine(p)),
      },
    );
    process.stdout.write(`${JSON.stringify(summary)}\n`);
  } finally {
    await store.close();
  }
}

export function register(program: Program): void {
  const mirror = program
    .command('mirror')
    .description('the ClickHouse mirror of the FHIR Observations');
  mirror
    .command('backfill')
    .description('rebuild or repair the mirror from the FHIR server (paged by _lastUpdated)')
    .option('--since <date>', 'only Observations changed at or after this FHIR date or instant')
    .option('--wipe', 'empty the FHIR-derived tables first (a rebuild)')
    .option('--page-size <n>', 'Observations per FHIR page', '500')
    .option(
      '--admin-url <url>',
      'let the process owning the analytics store do it (embedded engine while the pipeline runs)',
    )
    .action((opts) => backfill(opts).catch(fail));
}
