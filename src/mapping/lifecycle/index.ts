/** The template lifecycle: versions, gates, shadow run, activation, rollback, audit. */
export { MappingLifecycle, lifecycleSettings } from './service.js';
export type { LifecycleOptions, LifecycleSettings, StoredVersion } from './service.js';
export { testCandidate, validateCandidate } from './checks.js';
export type { FixtureReport, ValidationReport } from './checks.js';
export { createShadowSource } from './shadow-source.js';
export type { ShadowSource, ShadowSourceOptions } from './shadow-source.js';
export { affectedFiles, observationDiff, shadowRun } from './shadow-run.js';
export type { ShadowSample, ShadowSettings } from './shadow-run.js';
export { runGates, summarizeGates } from './gates.js';
export type { GateInput, GateSettings } from './gates.js';
export { diffVersions, unifiedDiff } from './version-diff.js';
export type { FileChange, TemplateChange, VersionDiff } from './version-diff.js';
export { LifecycleStore, lifecycleKeys, HISTORY_CAP } from './store.js';
export {
  activationLines,
  auditLines,
  diffLines,
  gateLines,
  shadowLines,
  versionLines,
} from './report-text.js';
export type * from './types.js';
