/** ClickHouse mirror: schema, pure flattening, and the store over the embedded engine or a server. */
export {
  createAnalyticsStore,
  storeOverDriver,
  engineError,
  parseJsonEachRow,
  type AnalyticsStore,
  type AnalyticsStoreOptions,
  type ClickHouseConfig,
  type ClickHouseDriver,
  type EngineOperation,
  type QueryFormat,
  type ServerClientFactory,
} from './store.js';
export {
  flattenObservation,
  parseFhirDateTime,
  referenceId,
  toClickHouseDateTime,
  LOINC_SYSTEM,
  MDC_SYSTEM,
  UCUM_SYSTEM,
  type CodeColumns,
  type ComponentRow,
  type FlattenedObservation,
  type ObservationRow,
  type ValueColumns,
} from './flatten.js';
export {
  applyMigrations,
  assertDatabaseName,
  migrations,
  applyRetention,
  COMPONENTS_TABLE,
  MIGRATIONS_TABLE,
  OBSERVATIONS_TABLE,
  type Migration,
  type MigrationExecutor,
  type RetentionOptions,
} from './schema.js';
export { backfillMirror, type BackfillOptions, type BackfillSummary } from './backfill.js';
export { deviceMessageRow, type DeviceMessageRow } from './messages.js';
export {
  deviceAssociationRows,
  DEVICE_ASSOCIATIONS_TABLE,
  type DeviceAssociationRow,
} from './associations.js';
export { provenanceOf, type SampleRow } from './flatten.js';
export { ROLLUP_HOUR_VIEW, ROLLUP_MINUTE_VIEW, ROLLUP_TOUCH_TABLE } from './schema-rollups.js';
export {
  DEFAULT_REFERENCE_RANGES,
  DEVICE_MESSAGES_TABLE,
  DEVICE_UNITS_TABLE,
  REFERENCE_RANGES_TABLE,
  SAMPLES_TABLE,
} from './schema-tables.js';
