/**
 * The gates a candidate passes before it may become active. PURE: files,
 * fixtures and recorded messages in, a report out.
 *
 *  1. validate — the files load and compile (every problem with file:line:column);
 *  2. fixtures — every fixture proposed with the candidate passes;
 *  3. shadow run — recent real messages mapped with the active version and the
 *     candidate (shadow-run.ts), with two thresholds per affected template file:
 *       - messages the active version maps and the candidate would refuse
 *         (dead-letter, or leave unmatched): at most MAPPINGS_GATE_MAX_NEW_DEAD_LETTERS (0);
 *       - changed Observations: none, unless the operator accepts them.
 * Every gate runs (a failing fixture does not hide the shadow run's counts),
 * except after a failed validation, which leaves nothing to run.
 */
import { runFixture } from '../fixtures.js';
import { compileSources, formatProblem, type SourceFile } from '../load.js';
import { shadowRun, type ShadowSample, type ShadowSettings } from './shadow-run.js';
import type {
  Acceptance,
  Candidate,
  FixtureResult,
  GateReport,
  GateSummary,
  ShadowReport,
  TemplateShadow,
} from './types.js';

export interface GateSettings extends ShadowSettings {
  readonly maxNewDeadLetters: number;
}

export interface GateInput {
  readonly candidate: Candidate;
  /** The active version's files; absent when nothing is active yet. */
  readonly active?: readonly SourceFile[];
  /** Recorded messages, or why there are none (ClickHouse unavailable, …). */
  readonly samples: readonly ShadowSample[] | { readonly unavailable: string };
  readonly settings: GateSettings;
  readonly accept: Acceptance;
}

function refusalsOf(t: TemplateShadow, s: GateSettings, accept: Acceptance): string[] {
  const out: string[] = [];
  if (t.newlyRefused > s.maxNewDeadLetters) {
    const refused = t.candidate.deadLettered + t.candidate.unmatched;
    const before = t.active.deadLettered + t.active.unmatched;
    const what = t.candidate.unmatched > 0 ? 'dead-lettered or left unmatched' : 'dead-lettered';
    const codes = Object.entries(t.candidateCodes)
      .sort((a, b) => b[1] - a[1])
      .map(([code, n]) => `${code} ${n}`)
      .join(', ');
    out.push(
      `${t.file}: ${refused} of ${t.messages} recent messages would be ${what} (${before} with the active version)${codes ? `: ${codes}` : ''}`,
    );
  }
  if (t.changedObservations > 0 && !accept.changes) {
    out.push(
      `${t.file}: ${t.changedObservations} Observation(s) from ${t.changedMessages} of ${t.messages} recent messages would change (review the diff; accept with --accept-changes)`,
    );
  }
  return out;
}

export async function runGates(input: GateInput): Promise<GateReport> {
  const { candidate, settings, accept } = input;
  const loaded = compileSources(candidate.files, 'candidate');
  const validate = {
    ok: loaded.ok,
    problems: loaded.ok ? [] : loaded.problems.map(formatProblem),
    notes: loaded.notes.map(formatProblem),
  };
  const active = input.active ? compileSources(input.active, 'active') : undefined;
  const activeVersion = active?.ok ? active.mappings.version : undefined;
  if (!loaded.ok) {
    return {
      candidate: undefined,
      active: activeVersion,
      passed: false,
      validate,
      fixtures: { passed: 0, failed: 0, results: [] },
      shadow: undefined,
      accepted: accept,
      refusals: [`the templates do not validate: ${validate.problems.length} problem(s)`],
    };
  }
  const mappings = loaded.mappings;
  const refusals: string[] = [];

  const results: FixtureResult[] = [];
  for (const f of candidate.fixtures) {
    const r = await runFixture(mappings, f);
    results.push({ name: r.name, ok: r.ok, differences: r.differences });
    if (!r.ok) refusals.push(`fixture ${r.name} fails: ${r.differences[0] ?? ''}`);
  }

  let shadow: ShadowReport;
  if (!active?.ok) {
    shadow = {
      status: 'skipped',
      candidate: mappings.version,
      reason: 'no active version to compare with',
    };
  } else if (accept.skipShadowRun) {
    shadow = {
      status: 'skipped',
      active: active.mappings.version,
      candidate: mappings.version,
      reason: 'skipped by the operator',
    };
  } else if (!Array.isArray(input.samples)) {
    const reason = (input.samples as { unavailable: string }).unavailable;
    shadow = {
      status: 'skipped',
      active: active.mappings.version,
      candidate: mappings.version,
      reason,
    };
    refusals.push(
      `the shadow run could not run (${reason}); retry, or activate with --without-shadow-run`,
    );
  } else {
    shadow = await shadowRun(
      { mappings: active.mappings, files: input.active! },
      { mappings, files: candidate.files },
      input.samples as readonly ShadowSample[],
      settings,
    );
    for (const t of shadow.templates) refusals.push(...refusalsOf(t, settings, accept));
  }

  const failed = results.filter((r) => !r.ok).length;
  return {
    candidate: mappings.version,
    active: activeVersion,
    passed: refusals.length === 0,
    validate,
    fixtures: { passed: results.length - failed, failed, results },
    shadow,
    accepted: accept,
    refusals,
  };
}

/** What the audit keeps of a report: counts and names, no message contents. */
export function summarizeGates(r: GateReport): GateSummary {
  const shadow = r.shadow;
  return {
    passed: r.passed,
    validate: r.validate.ok ? 'ok' : 'failed',
    fixtures: {
      passed: r.fixtures.passed,
      failed: r.fixtures.results.filter((f) => !f.ok).map((f) => f.name),
    },
    shadow:
      shadow?.status === 'ran'
        ? {
            messages: shadow.templates.reduce((n, t) => n + t.messages, 0),
            newlyRefused: shadow.templates.reduce((n, t) => n + t.newlyRefused, 0),
            newlyMapped: shadow.templates.reduce((n, t) => n + t.newlyMapped, 0),
            changedObservations: shadow.templates.reduce((n, t) => n + t.changedObservations, 0),
          }
        : 'skipped',
    accepted: r.accepted,
    refusals: r.refusals,
  };
}
