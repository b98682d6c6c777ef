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
  retentionStatements,
  COMPONENTS_TABLE,
  MIGRATIONS_TABLE,
  OBSERVATIONS_TABLE,
  type Migration,
  type MigrationExecutor,
} from './schema.js';
