/**
 * The input policy the normalize worker applies around the pure mapping core:
 * what a payload may look like before it is parsed, and what the readings it
 * yields may say. Pure functions; each violation is a PipelineError with its own
 * code, so the message is dead-lettered with a reason an operator can act on.
 *
 *  - text: not one JSON value (JSON.parse would refuse it), nesting deeper
 *    than INPUT_MAX_JSON_DEPTH, an array longer than INPUT_MAX_ARRAY_LENGTH, or
 *    an object naming a member twice (JSON.parse would keep the last one and
 *    drop a reading without a word) → InvalidPayload, found by one linear scan
 *    of the text before JSON.parse (src/json-text.ts; so a 256 KiB "[[[[…"
 *    never reaches a recursive evaluator);
 *  - time: a device timestamp more than INPUT_MAX_FUTURE_MS after the broker's
 *    receipt, or more than INPUT_MAX_AGE_MS before it → TimestampOutOfRange;
 *  - values: a reading the FHIR mapping could not turn into a quantity (a
 *    string, a boolean, 1e999 which JSON parses as Infinity) is RECORDED, not
 *    dropped: the mapping gives it dataAbsentReason "error" with the reason as
 *    text (FHIR R4 Observation.dataAbsentReason), which is what a glucose meter's
 *    "HI" or a thermometer's "LO" means clinically. Only a quantity that still
 *    holds a non-finite number (a template bug) → InvalidValue.
 * Reasons name a position or a reading and the rule, never a value from the
 * payload (docs/security.md); the raw payload stays in the dead letter.
 */
import type { Observation } from 'fhir/r4.js';
import type { Config } from '../src/config.js';
import { PipelineError } from '../src/errors.js';
import { describeJsonProblem, positionOf, scanJson } from '../src/json-text.js';

export type InputLimits = Config['input'];

/**
 * Throws InvalidPayload when `text` is not one JSON value, nests too deep, holds
 * too long an array, or names an object member twice. The reason gives the kind
 * and the line and column, never the text.
 */
export function checkJsonShape(text: string, limits: InputLimits): void {
  const p = scanJson(text, {
    maxDepth: limits.maxJsonDepth,
    maxArrayLength: limits.maxArrayLength,
    uniqueNames: true,
  });
  if (!p) return;
  const where = positionOf(p);
  const reason =
    p.kind === 'too-deep'
      ? `the payload nests deeper than ${limits.maxJsonDepth} levels (INPUT_MAX_JSON_DEPTH) at ${where}`
      : p.kind === 'array-too-long'
        ? `the payload has an array of more than ${limits.maxArrayLength} elements (INPUT_MAX_ARRAY_LENGTH) at ${where}`
        : p.kind === 'duplicate-name'
          ? `the payload names the same object member twice (the second at ${where}); each name must be unique, or a reading would be dropped`
          : describeJsonProblem(p);
  throw new PipelineError('InvalidPayload', reason, {
    details: { kind: p.kind, line: p.line, column: p.column },
  });
}

/**
 * Throws TimestampOutOfRange for a device time outside the accepted window
 * around receipt. The reason names the reading (its place among `times`) and the
 * rule, not the time itself.
 */
export function checkOccurrenceTimes(
  times: readonly string[],
  receivedAt: number,
  limits: InputLimits,
): void {
  const which = (i: number) =>
    times.length === 1
      ? 'the device timestamp'
      : `the device timestamp of reading ${i + 1} of ${times.length}`;
  times.forEach((t, i) => {
    const at = Date.parse(t);
    if (Number.isNaN(at)) return; // the mapping core refuses unparseable times itself
    if (at > receivedAt + limits.maxFutureMs) {
      throw new PipelineError(
        'TimestampOutOfRange',
        `${which(i)} is more than ${limits.maxFutureMs / 1000} s after receipt (INPUT_MAX_FUTURE_MS)`,
      );
    }
    if (at < receivedAt - limits.maxAgeMs) {
      throw new PipelineError(
        'TimestampOutOfRange',
        `${which(i)} is more than ${Math.round(limits.maxAgeMs / 3_600_000)} h before receipt (INPUT_MAX_AGE_MS)`,
      );
    }
  });
}

const DATA_ABSENT_SYSTEM = 'http://terminology.hl7.org/CodeSystem/data-absent-reason';

/** Throws InvalidValue when an Observation (or a component) holds a quantity that is not a finite number. */
export function checkObservationValues(observations: readonly Observation[]): void {
  for (const o of observations) {
    for (const part of [o, ...(o.component ?? [])]) {
      const q = part.valueQuantity?.value;
      if (q !== undefined && !Number.isFinite(q)) {
        throw new PipelineError('InvalidValue', 'a quantity value is not a finite number');
      }
    }
  }
}

/** True when the mapping recorded a reading as unusable (dataAbsentReason "error"): counted, not refused. */
export function hasRefusedReading(o: Observation): boolean {
  return [o, ...(o.component ?? [])].some((part) =>
    part.dataAbsentReason?.coding?.some(
      (c) => c.system === DATA_ABSENT_SYSTEM && c.code === 'error',
    ),
  );
}
