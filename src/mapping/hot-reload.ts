/**
 * How a running worker gets its templates — an adapter (files, Redis), like
 * load.ts; the pure engine never imports it.
 *
 *  1. The fleet's active version lives in Redis (lifecycle/store.ts). Every
 *     worker follows it: at once on the announcement (channel
 *     `{prefix}:mappings`), and by polling every `pollMs` should one be missed.
 *     It compiles the stored files itself and swaps its MappingSet in one
 *     assignment, so a job sees one version from start to end.
 *  2. A worker's start never changes the active version. Its own folder is
 *     only compared with it: a difference is reported (log
 *     `mappings-folder-differs`, metric iomt_mapping_folder_differs, readiness
 *     detail `templates.folder`), never applied. Only when nothing is active
 *     yet (a new deployment) does the first worker's folder become active —
 *     after validation and its fixtures (lifecycle bootstrap, audited).
 *  3. Activation is explicit (`iomt mappings activate`, the admin API). With
 *     MAPPINGS_RELOAD=watch (development) a worker also proposes its folder
 *     when it changes and activates it through the same gates — validation,
 *     fixtures, shadow run without new dead letters (changed Observations are
 *     what an edit is for, so watch accepts them). A change that does not pass
 *     is never activated and is reported (log `mappings-rejected` /
 *     `mappings-refused`, metrics, readiness detail `templates.rejected`).
 */
import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import type { RedisConnection } from '../redis.js';
import { PipelineError, isPipelineError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { MappingSet } from './compile.js';
import type { Fixture } from './fixtures.js';
import type { MappingLifecycle } from './lifecycle/service.js';
import {
  compileSources,
  formatProblem,
  readCandidate,
  type LoadResult,
  type SourceFile,
} from './load.js';

export interface ReloadMetrics {
  readonly mappingReloads: {
    inc(labels: { outcome: 'activated' | 'rejected' | 'refused' }): void;
  };
  readonly mappingsInvalid: { set(value: number): void };
  readonly mappingFolderDiffers: { set(value: number): void };
  readonly mappingActive: { reset(): void; set(labels: { version: string }, value: number): void };
}

export interface TemplateStatus {
  readonly active: string;
  readonly activatedAt: string;
  readonly mode: 'explicit' | 'watch';
  /** This worker's folder, compared with the active version (reported, never applied). */
  readonly folder: {
    readonly version?: string;
    readonly differs: boolean;
    readonly invalid?: boolean;
  };
  /** The last folder change that did not validate or (watch) did not pass the gates. */
  readonly rejected?: { readonly at: string; readonly problems: readonly string[] };
}

export interface TemplateActivation {
  /** The active templates (one reference, swapped atomically). */
  current(): MappingSet;
  status(): TemplateStatus;
  /** Checks Redis and the folder now (the poll does this on its own). */
  check(): Promise<void>;
  close(): Promise<void>;
}

export interface ActivationOptions {
  readonly dir: string;
  /** A connection of its own for SUBSCRIBE (it cannot issue commands meanwhile). */
  readonly subscriber: RedisConnection;
  readonly lifecycle: MappingLifecycle;
  readonly mode: 'explicit' | 'watch';
  readonly pollMs: number;
  readonly log: Logger;
  readonly metrics?: ReloadMetrics;
  /** Who this worker is in the audit (default `<host>:<pid>`). */
  readonly actor?: string;
}

interface Folder {
  readonly hash: string;
  readonly files: readonly SourceFile[];
  readonly fixtures: readonly Fixture[];
  readonly loaded: LoadResult;
}

function folderHash(files: readonly SourceFile[], fixtures: readonly Fixture[]): string {
  const h = createHash('sha256');
  for (const f of files) h.update(f.file).update('\0').update(f.text).update('\0');
  return h.update(JSON.stringify(fixtures)).digest('hex');
}

export async function startTemplateActivation(o: ActivationOptions): Promise<TemplateActivation> {
  const store = o.lifecycle.store;
  const actor = o.actor ?? `${hostname()}:${process.pid}`;
  let active: MappingSet | undefined;
  let activatedAt = new Date().toISOString();
  let folder: Folder | undefined;
  let rejected: TemplateStatus['rejected'];
  let reportedDrift = '';
  let closed = false;

  /** The folder as it is now; compiled only when its bytes changed (the poll runs every few seconds). */
  async function readFolder(): Promise<Folder | undefined> {
    const { files, fixtures } = await readCandidate(o.dir);
    const hash = folderHash(files, fixtures);
    if (hash === folder?.hash) return undefined;
    return { hash, files, fixtures, loaded: compileSources(files, o.dir) };
  }

  function reportDrift(): void {
    if (!folder || !active) return;
    const version = folder.loaded.ok ? folder.loaded.mappings.version : undefined;
    const differs = version !== active.version;
    o.metrics?.mappingFolderDiffers.set(differs ? 1 : 0);
    const key = `${version ?? 'invalid'}/${active.version}`;
    if (!differs || key === reportedDrift) return;
    reportedDrift = key;
    o.log.warn(
      {
        event: 'mappings-folder-differs',
        folder: version ?? 'invalid',
        active: active.version,
        dir: o.dir,
      },
      "this worker's mappings folder differs from the fleet's active version; it runs the active version (propose the folder with iomt mappings propose to change it)",
    );
  }

  function swap(m: MappingSet): void {
    const previous = active?.version;
    active = m; // the swap: jobs that already took the old set finish with it
    activatedAt = new Date().toISOString();
    o.metrics?.mappingReloads.inc({ outcome: 'activated' });
    o.metrics?.mappingActive.reset();
    o.metrics?.mappingActive.set({ version: m.version }, 1);
    o.log.info(
      { event: 'mappings-activated', version: m.version, previous, source: 'redis' },
      'mapping templates activated',
    );
    reportDrift();
  }

  /** Loads `version` from Redis and swaps to it; false when it cannot be used here. */
  async function follow(version: string | undefined): Promise<boolean> {
    if (!version || version === active?.version) return true;
    const files = await store.files(version);
    if (!files) {
      o.log.warn(
        { event: 'mappings-missing', version },
        'active template version not found in Redis',
      );
      return false;
    }
    const r = compileSources(files, `redis ${version}`);
    if (!r.ok) {
      o.log.error(
        {
          event: 'mappings-rejected',
          version,
          problems: r.problems.map(formatProblem),
          source: 'redis',
        },
        'the active template version does not compile here; keeping the running one',
      );
      return false;
    }
    swap(r.mappings);
    return true;
  }

  function reject(problems: readonly string[], outcome: 'rejected' | 'refused'): void {
    rejected = { at: new Date().toISOString(), problems };
    o.metrics?.mappingReloads.inc({ outcome });
  }

  /** watch: a changed folder is proposed and activated through the gates. */
  async function proposeFolder(f: Folder): Promise<void> {
    if (!f.loaded.ok || f.loaded.mappings.version === active?.version) return;
    const who = { actor: `watch@${actor}`, via: 'watch' as const, note: `saved in ${o.dir}` };
    const { version } = await o.lifecycle.propose(f, who);
    const r = await o.lifecycle.activate(version, who, { changes: true });
    if (r.outcome === 'refused') reject(r.report.refusals, 'refused');
  }

  async function checkFolder(propose: boolean): Promise<void> {
    const f = await readFolder();
    if (!f) return;
    folder = f;
    if (!f.loaded.ok) {
      o.metrics?.mappingsInvalid.set(1);
      reject(f.loaded.problems.map(formatProblem), 'rejected');
      o.log.error(
        { event: 'mappings-rejected', problems: rejected!.problems, active: active?.version },
        'the templates in the folder do not validate; the active version keeps processing',
      );
    } else {
      o.metrics?.mappingsInvalid.set(0);
      rejected = undefined;
      if (propose && o.mode === 'watch') await proposeFolder(f);
    }
    reportDrift();
  }

  // One check at a time: the poll and the announcements share this chain.
  let chain: Promise<unknown> = Promise.resolve();
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const next = chain.then(fn, fn);
    chain = next.catch(() => undefined);
    return next;
  };

  async function check(): Promise<void> {
    await serial(async () => {
      await follow(await store.active());
      await checkFolder(true);
    });
  }

  // Start: follow the fleet; only when nothing is active does our folder bootstrap it.
  await checkFolder(false);
  let version = await store.active();
  if (!version) {
    if (!folder!.loaded.ok) {
      throw new PipelineError(
        'TemplateInvalid',
        `mapping templates in ${o.dir} are invalid and no active version is in Redis:\n  ${(rejected?.problems ?? []).join('\n  ')}`,
      );
    }
    try {
      const r = await o.lifecycle.bootstrap(folder!, {
        actor: `worker@${actor}`,
        via: 'worker',
        note: `first start, folder ${o.dir}`,
      });
      if (r.outcome === 'refused') {
        throw new PipelineError(
          'TemplateInvalid',
          `mapping templates in ${o.dir} did not pass the gates and no version is active:\n  ${r.report.refusals.join('\n  ')}`,
        );
      }
    } catch (err) {
      // Another worker bootstrapped first: follow it.
      if (!isPipelineError(err) || err.code !== 'ActivationConflict') throw err;
    }
    version = await store.active();
  }
  if (!(await follow(version)) || !active) {
    throw new PipelineError(
      'TemplateInvalid',
      `the active template version ${version ?? '(none)'} cannot be loaded by this worker (see the log); it does not start`,
    );
  }
  reportDrift();

  await o.subscriber.subscribe(store.keys.channel);
  o.subscriber.on('message', (channel: string, announced: string) => {
    if (channel !== store.keys.channel || closed) return;
    serial(() => follow(announced)).catch((err: unknown) =>
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
    status: () => {
      const fv = folder?.loaded.ok ? folder.loaded.mappings.version : undefined;
      return {
        active: active!.version,
        activatedAt,
        mode: o.mode,
        folder: {
          ...(fv ? { version: fv } : { invalid: true }),
          differs: fv !== active!.version,
        },
        ...(rejected ? { rejected } : {}),
      };
    },
    check,
    async close() {
      closed = true;
      clearInterval(timer);
      await chain;
      await o.subscriber.unsubscribe(store.keys.channel).catch(() => undefined);
    },
  };
}
