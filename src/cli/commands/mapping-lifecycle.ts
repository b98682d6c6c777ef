/**
 * `iomt mappings propose|diff|shadow-run|activate|rollback|versions|audit|prune`:
 * template changes operators can trust (src/mapping/lifecycle/, docs/mappings.md).
 *   propose               store the folder as a candidate version, with author and note
 *   diff <a> <b>          what differs (versions, "active", "previous", or a folder)
 *   shadow-run [version]  every gate, against recent real traffic; changes nothing
 *   activate <version>    the gates, then the fleet's active version; refused otherwise (exit 1)
 *   rollback              the version active before, on every worker
 *   versions | audit      stored versions with their state; who did what, when, with which gate results
 *   prune                 remove old versions that are neither active nor in the rollback history
 * Redis is read directly. The shadow run reads ClickHouse: a server (CLICKHOUSE_URL),
 * or with --admin-url the process owning the embedded engine does the work.
 */
import { stat } from 'node:fs/promises';
import { hostname, userInfo } from 'node:os';
import type { Command } from '@commander-js/extra-typings';
import { createAnalyticsStore } from '../../clickhouse/index.js';
import { loadConfig, type Config } from '../../config.js';
import { PipelineError } from '../../errors.js';
import {
  activationLines,
  auditLines,
  createShadowSource,
  diffLines,
  diffVersions,
  gateLines,
  lifecycleSettings,
  MappingLifecycle,
  versionLines,
  type ActivationResult,
  type Actor,
  type GateReport,
} from '../../mapping/lifecycle/index.js';
import { compileSources, readCandidate } from '../../mapping/index.js';
import { createQueues, queuePrefix } from '../../queue-runtime.js';
import { adminRequest, checkFailed, fail, withRedis } from '../common.js';

const write = (s: string): void => void process.stdout.write(`${s}\n`);
const lines = (l: readonly string[]) => write(l.join('\n'));
const json = (v: unknown) => write(JSON.stringify(v, null, 2));

function defaultActor(): string {
  try {
    return `${userInfo().username}@${hostname()}`;
  } catch {
    return `cli@${hostname()}`;
  }
}

function actorOf(opts: { author?: string; note?: string }): Actor {
  return {
    actor: opts.author ?? defaultActor(),
    via: 'cli',
    ...(opts.note ? { note: opts.note } : {}),
  };
}

/** The lifecycle over this process's own connections; `shadow` opens ClickHouse and the dead letters too. */
async function withLifecycle<T>(
  config: Config,
  shadow: boolean,
  fn: (lc: MappingLifecycle) => Promise<T>,
): Promise<T> {
  return withRedis(config, async (redis) => {
    const queues = shadow
      ? createQueues(redis, queuePrefix(config.redis.url, config.redis.prefix))
      : undefined;
    const store = shadow ? createAnalyticsStore(config.clickhouse) : undefined;
    try {
      return await fn(
        new MappingLifecycle({
          redis,
          prefix: config.redis.prefix,
          settings: lifecycleSettings(config),
          source: createShadowSource({
            store,
            database: config.clickhouse.database,
            ...(queues ? { deadLetters: queues.deadLetter } : {}),
          }),
        }),
      );
    } finally {
      await queues?.close();
      await store?.close();
    }
  });
}

async function isFolder(ref: string): Promise<boolean> {
  try {
    return (await stat(ref)).isDirectory();
  } catch {
    return false;
  }
}

function positiveInt(name: string) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0)
      throw new PipelineError('InvalidArgument', `${name}: expected a whole number, got "${v}"`);
    return n;
  };
}

function adminBase(config: Config, url: string): string {
  return url === 'default' ? `http://127.0.0.1:${config.admin.port}` : url;
}

export function registerLifecycle(mappings: Command): void {
  mappings
    .command('propose')
    .option('--dir <dir>', 'mappings folder (default: $MAPPINGS_DIR)')
    .option('--author <name>', 'who proposes it (default: user@host)')
    .option('--note <text>', 'why: shown in versions and the audit')
    .option('--json', 'print the result as JSON')
    .description(
      'store the folder (templates and fixtures) as a candidate version; nothing runs it yet',
    )
    .action(async (opts) => {
      try {
        const config = loadConfig();
        const candidate = await readCandidate(opts.dir ?? config.mappings.dir);
        const r = await withLifecycle(config, false, (lc) => lc.propose(candidate, actorOf(opts)));
        if (opts.json) return json(r);
        write(
          r.created
            ? `proposed ${r.version} (${r.record.files.length} file(s), ${r.record.fixtures} fixture(s)) by ${r.record.author}`
            : `${r.version} was already proposed (by ${r.record.author} at ${r.record.proposedAt}); its fixtures are updated`,
        );
        write(`next: iomt mappings diff active ${r.version}; iomt mappings activate ${r.version}`);
      } catch (err) {
        fail(err);
      }
    });

  mappings
    .command('diff')
    .argument('<a>', 'a version (or a unique prefix), "active", "previous", or a folder')
    .argument('<b>', 'the same, to compare with')
    .option('--json', 'print the difference as JSON')
    .description(
      'what differs between two template versions: templates changed, and each file as a unified diff',
    )
    .action(async (a, b, opts) => {
      try {
        const config = loadConfig();
        const d = await withLifecycle(config, false, async (lc) => {
          const side = async (ref: string) => {
            if (!(await isFolder(ref))) return lc.get(ref);
            const { files } = await readCandidate(ref);
            const r = compileSources(files, ref);
            return { version: r.ok ? r.mappings.version : ref, files };
          };
          return diffVersions(await side(a), await side(b));
        });
        if (opts.json) return json(d);
        lines(diffLines(d));
      } catch (err) {
        fail(err);
      }
    });

  mappings
    .command('shadow-run')
    .argument('[version]', 'a stored version (default: the folder)')
    .option('--dir <dir>', 'mappings folder, when no version is given (default: $MAPPINGS_DIR)')
    .option('--accept-changes', 'do not count changed Observations against it')
    .option(
      '--admin-url <url>',
      'run it in the process owning ClickHouse ("default": http://127.0.0.1:$ADMIN_PORT)',
    )
    .option('--json', 'print the report as JSON')
    .description(
      'every gate against the active version — validation, fixtures, recent real traffic mapped by both — without changing anything',
    )
    .action(async (version, opts) => {
      try {
        const config = loadConfig();
        const body = version ? { version } : await readCandidate(opts.dir ?? config.mappings.dir);
        const accept = { changes: opts.acceptChanges ?? false };
        const report = opts.adminUrl
          ? (
              await adminRequest<GateReport>(
                adminBase(config, opts.adminUrl),
                config.admin.token,
                'POST',
                '/api/mappings/shadow-run',
                { ...body, acceptChanges: accept.changes },
              )
            ).body
          : await withLifecycle(config, true, async (lc) =>
              lc.gates('version' in body ? await lc.get(body.version) : body, accept),
            );
        if (opts.json) json(report);
        else
          lines([
            ...gateLines(report),
            report.passed ? 'passed: it may be activated' : 'would be REFUSED',
          ]);
        if (!report.passed) checkFailed();
      } catch (err) {
        fail(err);
      }
    });

  mappings
    .command('activate')
    .argument('<version>', 'a stored version or a unique prefix (iomt mappings versions)')
    .option('--author <name>', 'who activates it (default: user@host)')
    .option('--note <text>', 'why: kept in the audit')
    .option('--accept-changes', 'the changed Observations the shadow run shows are intended')
    .option(
      '--without-shadow-run',
      'activate on validation and fixtures alone (ClickHouse down); recorded in the audit',
    )
    .option(
      '--admin-url <url>',
      'run it in the process owning ClickHouse ("default": http://127.0.0.1:$ADMIN_PORT)',
    )
    .option('--json', 'print the result as JSON')
    .description('run the gates and, when they pass, make the version active on every worker')
    .action(async (version, opts) => {
      try {
        const config = loadConfig();
        const who = actorOf(opts);
        const accept = {
          changes: opts.acceptChanges ?? false,
          skipShadowRun: opts.withoutShadowRun ?? false,
        };
        let result: ActivationResult;
        if (opts.adminUrl) {
          const r = await adminRequest<ActivationResult | { result: ActivationResult }>(
            adminBase(config, opts.adminUrl),
            config.admin.token,
            'POST',
            '/api/mappings/activate',
            {
              version,
              actor: who.actor,
              ...(who.note ? { note: who.note } : {}),
              acceptChanges: accept.changes,
              withoutShadowRun: accept.skipShadowRun,
            },
            [422],
          );
          result =
            r.status === 422
              ? (r.body as { result: ActivationResult }).result
              : (r.body as ActivationResult);
        } else {
          result = await withLifecycle(config, !accept.skipShadowRun, (lc) =>
            lc.activate(version, who, accept),
          );
        }
        if (opts.json) json(result);
        else lines(activationLines(result));
        if (result.outcome === 'refused') checkFailed();
      } catch (err) {
        fail(err);
      }
    });

  mappings
    .command('rollback')
    .option('--author <name>', 'who rolls back (default: user@host)')
    .option('--note <text>', 'why: kept in the audit')
    .option('--json', 'print the result as JSON')
    .description(
      'make the version active before the current one active again, on every worker (no gates)',
    )
    .action(async (opts) => {
      try {
        const result = await withLifecycle(loadConfig(), false, (lc) => lc.rollback(actorOf(opts)));
        if (opts.json) json(result);
        else lines(activationLines(result));
      } catch (err) {
        fail(err);
      }
    });

  mappings
    .command('versions')
    .option('--json', 'print the versions as JSON')
    .description('stored versions, newest first, with state, author, time and note')
    .action(async (opts) => {
      try {
        const list = await withLifecycle(loadConfig(), false, (lc) => lc.versions());
        if (opts.json) json(list);
        else lines(versionLines(list));
      } catch (err) {
        fail(err);
      }
    });

  mappings
    .command('audit')
    .option('--limit <n>', 'the last n entries', positiveInt('--limit'), 50)
    .option('--json', 'print the entries as JSON')
    .description(
      'proposals, activations, refusals, rollbacks and prunes: who, when, what, gate results',
    )
    .action(async (opts) => {
      try {
        const entries = await withLifecycle(loadConfig(), false, (lc) => lc.audit(opts.limit));
        if (opts.json) json(entries);
        else lines(entries.length ? auditLines(entries) : ['no lifecycle events yet']);
      } catch (err) {
        fail(err);
      }
    });

  mappings
    .command('prune')
    .option(
      '--keep <n>',
      'versions to keep besides the active one and the rollback history',
      positiveInt('--keep'),
      10,
    )
    .option('--dry-run', 'only list what would be removed')
    .option('--author <name>', 'who prunes (default: user@host)')
    .option('--json', 'print the removed versions as JSON')
    .description('remove stored versions that are neither active nor in the rollback history')
    .action(async (opts) => {
      try {
        const removed = await withLifecycle(loadConfig(), false, (lc) =>
          lc.prune(opts.keep, actorOf(opts), opts.dryRun ?? false),
        );
        if (opts.json) json({ removed, dryRun: opts.dryRun ?? false });
        else
          write(
            `${opts.dryRun ? 'would remove' : 'removed'} ${removed.length} version(s)${removed.length ? `: ${removed.join(' ')}` : ''}`,
          );
      } catch (err) {
        fail(err);
      }
    });
}
