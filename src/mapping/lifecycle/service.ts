/**
 * The template lifecycle: propose → (diff, shadow-run) → activate → rollback,
 * with versions, pruning and an audit trail. The one implementation behind the
 * CLI (`iomt mappings …`), the admin API (/api/mappings/…) and a watching
 * worker (MAPPINGS_RELOAD=watch).
 *
 *  - propose stores a candidate under its version (the content hash of its
 *    templates) with its fixtures, author and note; nothing runs it yet.
 *  - activate runs the gates (gates.ts) against the active version; only a
 *    candidate that passes becomes active, by one compare-and-set in Redis that
 *    also records the audit entry and announces the version (store.ts). Workers
 *    follow the announcement (hot-reload.ts). A refusal is recorded too.
 *  - rollback restores the version active before, without gates (it passed them
 *    once, and the way back must work while ClickHouse is down); it must still
 *    compile here.
 *  - bootstrap: when nothing is active (a new deployment), the first worker's
 *    folder becomes active after validation and fixtures.
 */
import type { RedisConnection } from '../../redis.js';
import type { Config } from '../../config.js';
import { PipelineError, toPipelineError } from '../../errors.js';
import type { Logger } from '../../logger.js';
import { compileSources, formatProblem } from '../load.js';
import {
  testCandidate,
  validateCandidate,
  type FixtureReport,
  type ValidationReport,
} from './checks.js';
import { runGates, summarizeGates, type GateSettings } from './gates.js';
import type { ShadowSample } from './shadow-run.js';
import type { ShadowSource } from './shadow-source.js';
import { LifecycleStore, type SwitchMode } from './store.js';
import type {
  Acceptance,
  ActivationResult,
  Actor,
  AuditEntry,
  Candidate,
  GateReport,
  VersionInfo,
  VersionRecord,
} from './types.js';
import { diffVersions, type VersionDiff } from './version-diff.js';

export interface LifecycleSettings extends GateSettings {
  /** device_messages rows read per shadow run. */
  readonly scanMessages: number;
  /** Dead letters read per shadow run. */
  readonly deadLetters: number;
}

export function lifecycleSettings(config: Config): LifecycleSettings {
  return {
    identifierSystem: config.fhir.identifierSystem,
    input: config.input,
    envelope: config.values.medtechEnvelope,
    perTemplate: config.mappings.shadowMessages,
    scanMessages: config.mappings.shadowScanMessages,
    deadLetters: config.mappings.shadowDeadLetters,
    maxNewDeadLetters: config.mappings.gateMaxNewDeadLetters,
  };
}

export interface LifecycleOptions {
  readonly redis: RedisConnection;
  readonly prefix: string;
  readonly settings: LifecycleSettings;
  /** Recent messages for the shadow run; absent: it cannot run in this process. */
  readonly source?: ShadowSource;
  readonly log?: Logger;
  readonly now?: () => Date;
}

export interface StoredVersion extends Candidate {
  readonly version: string;
  readonly record: VersionRecord | undefined;
}

/** Accepted version references besides an id or a unique prefix of one. */
const MIN_PREFIX = 4;

export class MappingLifecycle {
  readonly store: LifecycleStore;
  readonly #o: LifecycleOptions;

  constructor(o: LifecycleOptions) {
    this.#o = o;
    this.store = new LifecycleStore(o.redis, o.prefix);
  }

  #now(): string {
    return (this.#o.now?.() ?? new Date()).toISOString();
  }

  /** "active", "previous" (the rollback target), a version, or a unique prefix of one. */
  async resolve(ref: string): Promise<string> {
    const wanted = ref.trim();
    if (wanted === 'active' || wanted === 'previous') {
      const v = wanted === 'active' ? await this.store.active() : (await this.store.history())[0];
      if (!v) throw new PipelineError('MappingVersionNotFound', `there is no ${wanted} version`);
      return v;
    }
    if (!/^[0-9a-f]+$/.test(wanted) || wanted.length < MIN_PREFIX) {
      throw new PipelineError(
        'InvalidArgument',
        `"${ref}" is not a version: give at least ${MIN_PREFIX} hex characters of one, "active" or "previous"`,
      );
    }
    const known = new Set((await this.store.records()).map((r) => r.version));
    const active = await this.store.active();
    if (active) known.add(active);
    const hits = [...known].filter((v) => v.startsWith(wanted));
    if (hits.length === 1) return hits[0]!;
    throw new PipelineError(
      'MappingVersionNotFound',
      hits.length === 0
        ? `no stored template version starts with "${ref}" (iomt mappings versions lists them)`
        : `"${ref}" matches ${hits.length} versions: ${hits.join(', ')}`,
    );
  }

  async get(ref: string): Promise<StoredVersion> {
    const version = await this.resolve(ref);
    const files = await this.store.files(version);
    if (!files)
      throw new PipelineError('MappingVersionNotFound', `version ${version} has no stored files`);
    return {
      version,
      files,
      fixtures: await this.store.fixtures(version),
      record: await this.store.record(version),
    };
  }

  validate(candidate: Candidate): ValidationReport {
    return validateCandidate(candidate);
  }

  test(candidate: Candidate): Promise<FixtureReport> {
    return testCandidate(candidate);
  }

  async #samples(): Promise<readonly ShadowSample[] | { unavailable: string }> {
    if (!this.#o.source) return { unavailable: 'no ClickHouse in this process' };
    try {
      return (
        await this.#o.source.samples({
          deviceMessages: this.#o.settings.scanMessages,
          deadLetters: this.#o.settings.deadLetters,
        })
      ).samples;
    } catch (err) {
      const e = toPipelineError(err);
      if (!e.retryable) throw e;
      return { unavailable: `${e.code}: ${e.message}` };
    }
  }

  /** Every gate for `candidate` against the active version; changes nothing. */
  async gates(candidate: Candidate, accept: Acceptance = {}): Promise<GateReport> {
    const activeVersion = await this.store.active();
    const active = activeVersion ? await this.store.files(activeVersion) : undefined;
    const needSamples = active !== undefined && !accept.skipShadowRun;
    return runGates({
      candidate,
      ...(active ? { active } : {}),
      samples: needSamples ? await this.#samples() : [],
      settings: this.#o.settings,
      accept,
    });
  }

  async diff(a: string, b: string): Promise<VersionDiff> {
    const [x, y] = await Promise.all([this.get(a), this.get(b)]);
    return diffVersions(x, y);
  }

  /** Stores a candidate that validates; the same templates proposed again keep their first record. */
  async propose(
    candidate: Candidate,
    who: Actor,
  ): Promise<{ version: string; created: boolean; record: VersionRecord }> {
    const r = compileSources(candidate.files, 'candidate');
    if (!r.ok) {
      throw new PipelineError(
        'TemplateInvalid',
        `the templates do not validate:\n  ${r.problems.map(formatProblem).join('\n  ')}`,
      );
    }
    const version = r.mappings.version;
    const record: VersionRecord = {
      version,
      author: who.actor,
      note: who.note ?? '',
      via: who.via,
      proposedAt: this.#now(),
      files: candidate.files.map((f) => f.file),
      deviceTemplates: r.mappings.deviceTemplates.length,
      fhirTemplates: r.mappings.fhirTemplates.size,
      fixtures: candidate.fixtures.length,
    };
    const created = await this.store.put(record, candidate.files, candidate.fixtures, {
      at: record.proposedAt,
      action: 'propose',
      actor: who.actor,
      via: who.via,
      ...(who.note ? { note: who.note } : {}),
      to: version,
    });
    return { version, created, record: (await this.store.record(version)) ?? record };
  }

  async #switch(
    from: string | undefined,
    to: string,
    mode: SwitchMode,
    who: Actor,
    report: GateReport | undefined,
  ): Promise<void> {
    const entry: AuditEntry = {
      at: this.#now(),
      action: mode === 'rollback' ? 'rollback' : mode === 'bootstrap' ? 'bootstrap' : 'activate',
      actor: who.actor,
      via: who.via,
      ...(who.note ? { note: who.note } : {}),
      ...(from ? { from } : {}),
      to,
      ...(report ? { gates: summarizeGates(report) } : {}),
    };
    const r = await this.store.switchTo(from, to, mode, entry);
    if (!r.ok) {
      throw new PipelineError(
        r.why === 'missing' ? 'MappingVersionNotFound' : 'ActivationConflict',
        r.why === 'missing'
          ? `version ${to} has no stored files`
          : `the active version is now ${r.active || '(none)'}, not ${from ?? '(none)'}: another activation or rollback happened meanwhile; run it again`,
      );
    }
    this.#o.log?.info(
      {
        event: 'mappings-switched',
        action: entry.action,
        from,
        to,
        actor: who.actor,
        via: who.via,
      },
      `template version ${to} is now active`,
    );
  }

  /** Runs the gates and, when they pass, makes `ref` the fleet's active version. */
  activate(ref: string, who: Actor, accept: Acceptance = {}): Promise<ActivationResult> {
    return this.#activate(ref, who, accept, 'activate');
  }

  async #activate(
    ref: string,
    who: Actor,
    accept: Acceptance,
    mode: 'activate' | 'bootstrap',
  ): Promise<ActivationResult> {
    const stored = await this.get(ref);
    const from = await this.store.active();
    if (from === stored.version) return { outcome: 'unchanged', to: stored.version };
    const report = await this.gates(stored, accept);
    if (report.active !== from) {
      throw new PipelineError(
        'ActivationConflict',
        `the active version changed to ${report.active ?? '(none)'} while the gates ran; run it again`,
      );
    }
    if (!report.passed) {
      await this.store.appendAudit({
        at: this.#now(),
        action: 'refused',
        actor: who.actor,
        via: who.via,
        ...(who.note ? { note: who.note } : {}),
        ...(from ? { from } : {}),
        to: stored.version,
        gates: summarizeGates(report),
      });
      this.#o.log?.warn(
        {
          event: 'mappings-refused',
          from,
          to: stored.version,
          actor: who.actor,
          via: who.via,
          refusals: report.refusals.length,
          failedFixtures: report.fixtures.results.filter((f) => !f.ok).map((f) => f.name),
        },
        'template version refused by the activation gates; the active version stays',
      );
      return { outcome: 'refused', from, to: stored.version, report };
    }
    await this.#switch(from, stored.version, mode, who, report);
    return { outcome: 'activated', from, to: stored.version, report };
  }

  /** Restores the version active before the current one. */
  async rollback(who: Actor): Promise<ActivationResult> {
    const from = await this.store.active();
    const to = (await this.store.history())[0];
    if (!from || !to) {
      throw new PipelineError(
        'MappingVersionNotFound',
        'there is no previous version to roll back to (iomt mappings versions)',
      );
    }
    const files = await this.store.files(to);
    const compiled = files ? compileSources(files, to) : undefined;
    if (!compiled?.ok) {
      throw new PipelineError(
        'TemplateInvalid',
        `the previous version ${to} ${files ? 'does not compile with this release' : 'has no stored files'}; activate another version`,
      );
    }
    await this.#switch(from, to, 'rollback', who, undefined);
    return { outcome: 'rolled-back', from, to, report: undefined };
  }

  /**
   * When nothing is active yet: `candidate` becomes active if it validates and
   * its fixtures pass. ActivationConflict when another process was first.
   */
  async bootstrap(candidate: Candidate, who: Actor): Promise<ActivationResult> {
    const { version } = await this.propose(candidate, who);
    if (await this.store.active()) {
      throw new PipelineError('ActivationConflict', 'a version is already active');
    }
    return this.#activate(version, who, {}, 'bootstrap');
  }

  async versions(): Promise<VersionInfo[]> {
    const [records, active, history, activations] = await Promise.all([
      this.store.records(),
      this.store.active(),
      this.store.history(),
      this.store.activations(),
    ]);
    return records
      .map((r): VersionInfo => {
        const at = history.indexOf(r.version);
        const state =
          r.version === active
            ? 'active'
            : at === 0
              ? 'rollback-target'
              : at > 0
                ? 'previous'
                : activations[r.version]
                  ? 'retired'
                  : 'proposed';
        const activatedAt = activations[r.version];
        return { ...r, state, ...(activatedAt ? { activatedAt } : {}) };
      })
      .sort((a, b) => b.proposedAt.localeCompare(a.proposedAt));
  }

  audit(limit = 50): Promise<AuditEntry[]> {
    return this.store.audit(limit);
  }

  /**
   * Removes stored versions that are neither active nor in the rollback
   * history, keeping the `keep` most recently proposed of them.
   */
  async prune(keep: number, who: Actor, dryRun = false): Promise<string[]> {
    const removable = (await this.versions())
      .filter((v) => v.state === 'proposed' || v.state === 'retired')
      .slice(Math.max(0, keep))
      .map((v) => v.version);
    if (dryRun || removable.length === 0) return removable;
    return this.store.prune(removable, {
      at: this.#now(),
      action: 'prune',
      actor: who.actor,
      via: who.via,
      ...(who.note ? { note: who.note } : {}),
    });
  }
}
