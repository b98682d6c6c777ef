/**
 * The normalize worker's input policy now lives in the pure mapping path
 * (src/mapping/input-policy.ts), where the worker, `iomt mappings debug` and
 * `iomt mappings test` run it alike. Re-exported here for the worker's callers.
 */
export {
  checkJsonShape,
  checkObservationValues,
  checkOccurrenceTimes,
  hasRefusedReading,
  type InputLimits,
} from '../src/mapping/input-policy.js';
