export { compileMappings } from './compile.js';
export type {
  MappingSet,
  MappingProblem,
  TemplateDocument,
  CompiledDeviceTemplate,
} from './compile.js';
export { mapMessage, parseTimestamp } from './device-mapping.js';
export type { DeviceMappingResult } from './device-mapping.js';
export { buildObservation, TEMPLATE_TAG_SYSTEM } from './fhir-mapping.js';
export type { ObservationContext } from './fhir-mapping.js';
export { observationId, observationIdentifierValue, deviceResourceId } from './identity.js';
export { loadMappings, formatProblem } from './load.js';
export type { LoadResult, LocatedProblem } from './load.js';
export { normalizeMessage } from './normalize.js';
export type { NormalizeResult } from './normalize.js';
export type { Measurement, MessageMeta, FhirTemplateSpec, DeviceTemplateSpec } from './types.js';
