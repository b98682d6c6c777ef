/**
 * Safe activation of mapping templates in a running pipeline — an adapter
 * (files, Redis), like load.ts; the pure engine never imports it.
 *
 *  1. Every `pollMs` a worker re-reads the mappings folder. Changed files are
 *     validated; an invalid change is never activated — the running version
 *     keeps processing — and is reported (log `mappings-rejected`, metric
 *     iomt_mapping_templates_invalid / iomt_mapping_reloads_total{outcome=
 *     "rejected"}, readiness detail).
 *  2. A valid change is stored in Redis under its version (the content hash)
 *     — `{prefix}:mappings:set:{version}` holds the files, `{prefix}:mappings:
 *     active` the version — and announced on the channel `{prefix}:mappings`.
 *  3. Every worker, on this machine or another, follows the active version in
 *     Redis: on the announcement at once, and by polling should one be missed.
 *     It compiles the stored files itself and swaps its MappingSet in one
 *     assignment, so a job sees one version from start to end.
 *
 * At start a worker publishes its own folder when it validates (the last
 * deployment started wins), else follows the version already active in Redis,
 * else refuses to start (TemplateInvalid).
 */
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { PipelineError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { MappingSet } from './compile.js';
import {
  compileSources,
  formatProblem,
  readMappingDocuments,
  type LoadResult,
  type SourceFile,
} from './load.js';

export interface ReloadMetrics {
  readonly mappingReloads: { inc(labels: { outcome: 'activated' | 'rejected' }): void };
  readonly mappingsInvalid: { set(value: number): void };
}

export interface TemplateStatus {
  readonly active: string;
  readonly activatedAt: string;
  /** The last change on disk that did not validate, while it stays invalid. */
  readonly rejected?: { readonly at: string; readonly problems: readonly string[] };
}

export interface TemplateActivation {
  /** The active templates (one reference, swapped atomically). */
  current(): MappingSet;
  status(): TemplateStatus;
  /** Checks the folder and Redis now (the poll does this on its own). */
  check(): Promise<void>;
  close(): Promise<void>;
}

export interface ActivationOptions {
  readonly dir: string;
  readonly prefix: string;
  /** Commands (GET/SET/PUBLISH). */
  readonly redis: Redis;
  /** A connection of its own for SUBSCRIBE (it cannot issue commands meanwhile). */
  readonly subscriber: Redis;
  readonly pollMs: number;
  readonly log: Logger;
  readonly metrics?: ReloadMetrics;
}

function contentHash(files: readonly SourceFile[]): string {
  const h = createHash('sha256');
  for (const f of files) h.update(f.file).update('\0').update(f.text).update('\0');
  return h.digest('hex');
}

function problemsOf(r: LoadResult): string[] {
  return r.ok ? [] : r.problems.map(formatProblem);
}

export async function startTemplateActivation(o: ActivationOptions): Promise<TemplateActivation> {
  const keys = {
    active: `${o.prefix}:mappings:active`,
    set: (v: string) => `${o.prefix}:mappings:set:${v}`,
    channel: `${o.prefix}:mappings`,
  };
  let active: MappingSet | undefined;
  let activatedAt = new Date().toISOString();
  let rejected: TemplateStatus['rejected'];
  let lastLocal = '';
  let closed = false;

  function activate(m: MappingSet, source: 'folder' | 'redis'): void {
    if (active?.version === m.version) return;
    const previous = active?.version;
    active = m; // the swap: jobs that already took the old set finish with it
    activatedAt = new Date().toISOString();
    o.metrics?.mappingReloads.inc({ outcome: 'activated' });
    o.log.info(
      { event: 'mappings-activated', version: m.version, previous, source },
      'mapping templates activated',
    );
  }

  async function follow(version: string | null): Promise<void> {
    if (!version || version === active?.version) return;
    const stored = await o.redis.get(keys.set(version));
    if (!stored) {
      o.log.warn(
        { event: 'mappings-missing', version },
        'active template version not found in Redis',
      );
      return;
    }
    const r = compileSources(JSON.parse(stored) as SourceFile[], `redis ${version}`);
    if (!r.ok) {
      o.log.error(
        { event: 'mappings-rejected', version, problems: problemsOf(r), source: 'redis' },
        'the active template version does not compile here; keeping the running one',
      );
      return;
    }
    activate(r.mappings, 'redis');
  }

  async function publish(files: readonly SourceFile[], m: MappingSet): Promise<void> {
    await o.redis
      .multi()
      .set(keys.set(m.version), JSON.stringify(files))
      .set(keys.active, m.version)
      .publish(keys.channel, m.version)
      .exec();
  }

  /** Reads the folder; a changed, valid folder is published and activated. */
  async function checkFolder(): Promise<void> {
    const files = await readMappingDocuments(o.dir);
    const hash = contentHash(files);
    if (hash === lastLocal) return;
    lastLocal = hash;
    const r = compileSources(files, o.dir);
    if (!r.ok) {
      rejected = { at: new Date().toISOString(), problems: problemsOf(r) };
      o.metrics?.mappingsInvalid.set(1);
      o.metrics?.mappingReloads.inc({ outcome: 'rejected' });
      o.log.error(
        { event: 'mappings-rejected', problems: rejected.problems, active: active?.version },
        'changed templates do not validate; the running version keeps processing',
      );
      return;
    }
    rejected = undefined;
    o.metrics?.mappingsInvalid.set(0);
    if (r.mappings.version !== active?.version) await publish(files, r.mappings);
    activate(r.mappings, 'folder');
  }

  async function check(): Promise<void> {
    await checkFolder();
    await follow(await o.redis.get(keys.active));
  }

  // Start: our folder when it validates, else what Redis has, else refuse.
  await checkFolder();
  if (!active) await follow(await o.redis.get(keys.active));
  if (!active) {
    throw new PipelineError(
      'TemplateInvalid',
      `mapping templates in ${o.dir} are invalid and no active version is in Redis:\n  ${(rejected?.problems ?? []).join('\n  ')}`,
    );
  }

  await o.subscriber.subscribe(keys.channel);
  o.subscriber.on('message', (channel: string, version: string) => {
    if (channel !== keys.channel || closed) return;
    follow(version).catch((err: unknown) =>
      o.log.error({ event: 'mappings-follow-failed', err }, 'could not follow the active version'),
    );
  });

  let running = false;
  const timer = setInterval(() => {
    if (running || closed) return;
    running = true;
    check()
      .catch((err: unknown) =>
        o.log.warn({ event: 'mappings-check-failed', err }, 'template check failed; will retry'),
      )
      .finally(() => {
        running = false;
      });
  }, o.pollMs);
  timer.unref();

  return {
    current: () => active!,
    status: () => ({ active: active!.version, activatedAt, ...(rejected ? { rejected } : {}) }),
    check,
    async close() {
      closed = true;
      clearInterval(timer);
      await o.subscriber.unsubscribe(keys.channel).catch(() => undefined);
    },
  };
}
