/**
 * The mapping engine's public surface. Everything here is pure (data in, data
 * out) except load.ts, which reads the mappings folder, hot-reload.ts, the
 * adapter that follows the active version in a running pipeline, and the
 * lifecycle's adapters (lifecycle/store.ts, lifecycle/shadow-source.ts;
 * exported from lifecycle/index.ts).
 */
export { compileMappings } from './compile.js';
export type {
  MappingSet,
  MappingProblem,
  TemplateDocument,
  CompiledDeviceTemplate,
  CompiledFhirTemplate,
  CompileResult,
  CompileOptions,
} from './compile.js';
export { mapMessage, medtechEnvelope } from './device-mapping.js';
export { messageEnvelope, parseEnvelopePolicy, NO_ENVELOPE } from './envelope.js';
export type { EnvelopePolicy, MessageEnvelope } from './envelope.js';
export type { DeviceMappingResult, Reading, TraceEvent } from './device-mapping.js';
export { parseTimestamp } from './timestamp.js';
export {
  buildObservation,
  GATEWAY_EXTENSION_URL,
  TEMPLATE_TAG_SYSTEM,
  DATA_ABSENT_SYSTEM,
} from './fhir-mapping.js';
export type { ObservationContext } from './fhir-mapping.js';
export {
  bindingResolver,
  createModeIdentity,
  resolvedIdentity,
  deviceResourceId,
  observationId,
  observationIdentifierValue,
  valuePart,
} from './identity.js';
export type { IdentityClaim, IdentityResolver, ResolvedIdentity } from './identity.js';
export { coalesceObservations, mergeObservations } from './windowing.js';
export {
  compileSources,
  formatProblem,
  loadMappings,
  readFixtures,
  readCandidate,
  readMappingDocuments,
} from './load.js';
export { runFixture, VERSION_PLACEHOLDER } from './fixtures.js';
export type { Fixture, FixtureOutcome, FixtureSettings } from './fixtures.js';
export { jsonDiff } from './diff.js';
export type { LoadResult, LocatedProblem, SourceFile } from './load.js';
export { normalizeMessage, parsePayload } from './normalize.js';
export type { ImplausibleReading, NormalizeResult, NormalizedObservation } from './normalize.js';
export {
  checkJsonShape,
  checkObservationValues,
  checkOccurrenceTimes,
  DEFAULT_POLICY,
  hasRefusedReading,
  normalizePolicy,
} from './input-policy.js';
export type { InputLimits, NormalizePolicy } from './input-policy.js';
export { DEFAULT_LIMITS, flagImplausible, formatLimit, parseLimits } from './plausibility.js';
export type { PlausibilityLimit } from './plausibility.js';
export { convertValue, readDeviceUnit } from './units.js';
export { specialValue } from './special-values.js';
export type { AbsentCode, SpecialEncoding } from './special-values.js';
export type { DeviceTemplateSpec, FhirTemplateSpec, Measurement, MessageMeta } from './types.js';
export { checkMedTechTemplates } from './medtech-import.js';
export type { ImportReport } from './medtech-import.js';
export { debugMessage, traceMessage } from './debug.js';
export { debugJson, type DebugJson } from './debug-json.js';
export type { DebugInput, DebugReport } from './debug.js';
export { startTemplateActivation } from './hot-reload.js';
export type { ReloadMetrics, TemplateActivation, TemplateStatus } from './hot-reload.js';
