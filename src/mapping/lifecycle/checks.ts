/**
 * The first two gates on their own, as `iomt mappings validate|test` and the
 * admin API run them on a candidate: do the files compile, do the fixtures
 * pass. PURE.
 */
import { runFixture } from '../fixtures.js';
import { compileSources, formatProblem } from '../load.js';
import type { Candidate, FixtureResult } from './types.js';

export interface ValidationReport {
  readonly ok: boolean;
  readonly version?: string;
  readonly deviceTemplates: number;
  readonly fhirTemplates: number;
  readonly problems: readonly string[];
  readonly notes: readonly string[];
}

export interface FixtureReport {
  readonly ok: boolean;
  readonly version?: string;
  readonly passed: number;
  readonly failed: number;
  readonly results: readonly FixtureResult[];
  /** Set when the templates do not validate (no fixture ran). */
  readonly problems?: readonly string[];
}

export function validateCandidate(candidate: Candidate): ValidationReport {
  const r = compileSources(candidate.files, 'candidate');
  return r.ok
    ? {
        ok: true,
        version: r.mappings.version,
        deviceTemplates: r.mappings.deviceTemplates.length,
        fhirTemplates: r.mappings.fhirTemplates.size,
        problems: [],
        notes: r.notes.map(formatProblem),
      }
    : {
        ok: false,
        deviceTemplates: 0,
        fhirTemplates: 0,
        problems: r.problems.map(formatProblem),
        notes: r.notes.map(formatProblem),
      };
}

export async function testCandidate(candidate: Candidate): Promise<FixtureReport> {
  const r = compileSources(candidate.files, 'candidate');
  if (!r.ok)
    return {
      ok: false,
      passed: 0,
      failed: 0,
      results: [],
      problems: r.problems.map(formatProblem),
    };
  const results: FixtureResult[] = [];
  for (const f of candidate.fixtures) {
    const o = await runFixture(r.mappings, f);
    results.push({ name: o.name, ok: o.ok, differences: o.differences });
  }
  const failed = results.filter((x) => !x.ok).length;
  return {
    ok: failed === 0,
    version: r.mappings.version,
    passed: results.length - failed,
    failed,
    results,
  };
}
