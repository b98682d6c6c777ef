/** The dead-letter queue for operators: list, show, replay into the failed stage, purge. */
export {
  DeadLetterStore,
  matches,
  type DeadLetterFilter,
  type DeadLetterStoreOptions,
  type DeadLetterSummary,
  type ReplayResult,
} from './store.js';
export { parseInstant, parseTime } from './time.js';
