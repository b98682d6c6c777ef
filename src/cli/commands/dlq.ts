/**
 * `iomt dlq list|show|replay|purge`: the dead-letter queue.
 *   list   [filters] [--limit N] [--json]      what failed, oldest first
 *   show   <id> [--json]                       one entry with its raw payload
 *   replay [<id>...] [filters] [--all]         back into the stage that failed
 *   purge  [<id>...] [filters] [--all]         remove for good
 * Filters: --code, --device, --stage, --since, --until (ISO 8601 or 15m/2h/7d).
 * replay and purge refuse to act on everything unless --all says so.
 */
import type { Command, OptionValues } from '@commander-js/extra-typings';
import { loadConfig, type Config } from '../../config.js';
import { AssociationStore } from '../../devices/index.js';
import { DeadLetterStore, parseTime, type DeadLetterFilter } from '../../dlq/index.js';
import { PipelineError } from '../../errors.js';
import { createQueues, queuePrefix } from '../../queue-runtime.js';
import { fail, withRedis, type Program } from '../common.js';

interface FilterOptions {
  code?: string;
  device?: string;
  stage?: string;
  since?: string;
  until?: string;
}

function withFilters<A extends unknown[], O extends OptionValues>(cmd: Command<A, O>) {
  return cmd
    .option('--code <code>', 'error code, e.g. TemplateNotMatched')
    .option('--device <id>', 'device id')
    .option('--stage <stage>', 'stage that failed: normalize, fhir, analytics')
    .option('--since <time>', 'failed at or after (ISO 8601, or 15m / 2h / 7d ago)')
    .option('--until <time>', 'failed before (ISO 8601, or 15m / 2h / 7d ago)');
}

function filterOf(o: FilterOptions, ids: readonly string[] = []): DeadLetterFilter {
  return {
    ...(o.code ? { code: o.code } : {}),
    ...(o.device ? { deviceId: o.device } : {}),
    ...(o.stage ? { stage: o.stage } : {}),
    ...(o.since ? { since: parseTime(o.since, '--since') } : {}),
    ...(o.until ? { until: parseTime(o.until, '--until') } : {}),
    ...(ids.length > 0 ? { ids } : {}),
  };
}

/** replay and purge act on everything only when told so. */
function guard(filter: DeadLetterFilter, all: boolean | undefined, verb: string): void {
  if (Object.keys(filter).length === 0 && !all) {
    throw new PipelineError(
      'ConfigInvalid',
      `${verb}: name dead letters by id or filter (--code, --device, --stage, --since, --until), or pass --all`,
      { stage: 'cli' },
    );
  }
}

async function withStore<T>(config: Config, fn: (store: DeadLetterStore) => Promise<T>) {
  return withRedis(config, async (redis) => {
    const queues = createQueues(redis, queuePrefix(config.redis.url, config.redis.prefix));
    try {
      return await fn(
        new DeadLetterStore(queues, {
          // Create mode: replays are checked against the association history.
          ...(config.fhir.identityResolution === 'Create'
            ? {
                associations: {
                  reader: new AssociationStore(redis, config.redis.prefix),
                  createPatients: config.fhir.createPatients,
                },
              }
            : {}),
        }),
      );
    } finally {
      await queues.close();
    }
  });
}

function oneLine(s: string, max: number): string {
  const flat = s.replace(/\s+/g, ' ');
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

export function register(program: Program): void {
  const dlq = program
    .command('dlq')
    .description('the dead-letter queue: list, show, replay, purge');

  withFilters(dlq.command('list').description('list dead letters, oldest first'))
    .option('--limit <n>', 'show at most n', (v) => Number.parseInt(v, 10))
    .option('--json', 'one JSON object per line')
    .action(async (opts) => {
      try {
        const filter = filterOf(opts);
        const { rows, total } = await withStore(loadConfig(), async (s) => {
          const all = await s.list(filter);
          return { rows: all.slice(0, opts.limit ?? all.length), total: all.length };
        });
        for (const r of rows) {
          process.stdout.write(
            opts.json
              ? `${JSON.stringify(r)}\n`
              : `${r.id}\t${new Date(r.failedAt).toISOString()}\t${r.stage}\t${r.code}\t${r.deviceId}\t${oneLine(r.reason, 100)}\n`,
          );
        }
        if (!opts.json) process.stdout.write(`${rows.length} of ${total} dead letter(s)\n`);
      } catch (err) {
        fail(err);
      }
    });

  dlq
    .command('show')
    .argument('<id>', 'dead-letter id (from list)')
    .option('--json', 'print the whole entry as one JSON object')
    .description('show one dead letter, with its raw payload or Observation')
    .action(async (id, opts) => {
      try {
        const entry = await withStore(loadConfig(), (s) => s.show(id));
        const failedAtIso = new Date(entry.failedAt).toISOString();
        const payload =
          entry.message?.encoding === 'base64'
            ? { payloadBase64: entry.message.payload }
            : entry.message
              ? { payloadText: entry.message.payload }
              : {};
        if (opts.json) {
          process.stdout.write(
            `${JSON.stringify({ ...entry, failedAtIso, ...payload }, null, 2)}\n`,
          );
          return;
        }
        const m = entry.message;
        const lines = [
          `dead letter ${entry.id}`,
          `  failed at  ${failedAtIso} (stage ${entry.stage})`,
          `  code       ${entry.code}`,
          `  reason     ${entry.reason}`,
          `  device     ${entry.deviceId}`,
          `  trace      ${entry.traceId}`,
          ...(m
            ? [
                `  message    ${m.id} on ${m.topic}, QoS ${m.qos}, received ${new Date(m.receivedAt).toISOString()}`,
                `  payload (${m.encoding}):`,
                m.payload,
              ]
            : []),
          ...(entry.observation
            ? ['  observation:', JSON.stringify(entry.observation.observation, null, 2)]
            : []),
        ];
        process.stdout.write(`${lines.join('\n')}\n`);
      } catch (err) {
        fail(err);
      }
    });

  withFilters(
    dlq
      .command('replay')
      .argument('[ids...]', 'dead-letter ids')
      .description('send dead letters back into the stage that failed'),
  )
    .option('--all', 'replay every dead letter')
    .action(async (ids, opts) => {
      try {
        const filter = filterOf(opts, ids);
        guard(filter, opts.all, 'replay');
        const r = await withStore(loadConfig(), (s) => s.replay(filter));
        process.stdout.write(
          `replayed ${r.replayed} (normalize ${r.byStage.normalize}, fhir ${r.byStage.fhir}, analytics ${r.byStage.analytics})\n`,
        );
        for (const s of r.skipped) process.stdout.write(`skipped ${s.id}: ${s.why}\n`);
      } catch (err) {
        fail(err);
      }
    });

  withFilters(
    dlq
      .command('purge')
      .argument('[ids...]', 'dead-letter ids')
      .description('remove dead letters for good'),
  )
    .option('--all', 'purge every dead letter')
    .action(async (ids, opts) => {
      try {
        const filter = filterOf(opts, ids);
        guard(filter, opts.all, 'purge');
        const n = await withStore(loadConfig(), (s) => s.purge(filter));
        process.stdout.write(`purged ${n}\n`);
      } catch (err) {
        fail(err);
      }
    });
}
