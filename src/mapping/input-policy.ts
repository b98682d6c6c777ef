/**
 * The input policy, part of the pure mapping path (normalizeMessage), so that
 * the worker, `iomt mappings debug` and `iomt mappings test` refuse the same
 * messages for the same reasons: what a payload may look like before it is
 * parsed, and what the readings it yields may say. Each violation is a
 * PipelineError with its own code, so the message is dead-lettered with a
 * reason an operator can act on — naming the setting, never a payload value.
 *
 *  - text: not one JSON value (JSON.parse would refuse it), nesting deeper
 *    than INPUT_MAX_JSON_DEPTH, an array longer than INPUT_MAX_ARRAY_LENGTH, or
 *    an object naming a member twice → InvalidPayload, found by one linear scan
 *    of the text before JSON.parse (src/json-text.ts; so a 256 KiB "[[[[…"
 *    never reaches a recursive evaluator, and the reason names a line and
 *    column, never the text);
 *  - time: a device timestamp more than INPUT_MAX_FUTURE_MS after the broker's
 *    receipt, or more than INPUT_MAX_AGE_MS before it → TimestampOutOfRange;
 *  - values: a reading the FHIR mapping could not turn into a quantity (a
 *    string, a boolean, 1e999 which JSON parses as Infinity) is RECORDED, not
 *    dropped: the mapping gives it dataAbsentReason "error" with the reason as
 *    text (FHIR R4 Observation.dataAbsentReason), which is what a glucose meter's
 *    "HI" or a thermometer's "LO" means clinically. Only a quantity that still
 *    holds a non-finite number (a template bug) → InvalidValue.
 */
import type { Observation } from 'fhir/r4.js';
import { loadConfig, type Config } from '../config.js';
import { PipelineError } from '../errors.js';
import { describeJsonProblem, positionOf, scanJson } from '../json-text.js';
import type { EnvelopePolicy } from './envelope.js';
import type { PlausibilityLimit } from './plausibility.js';

export type InputLimits = Config['input'];

/**
 * Throws InvalidPayload when `text` is not one JSON value (what JSON.parse
 * would refuse), nests too deep, holds too long an array, or names an object
 * member twice (JSON.parse would keep the last one and drop a reading without
 * a word). One linear scan (src/json-text.ts); the reason gives the kind and
 * the line and column, never the text.
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

/** How far apart two instants are, in words an operator reads at a glance. */
function span(ms: number): string {
  const s = Math.abs(ms) / 1000;
  if (s < 120) return `${Math.round(s)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172_800) return `${Math.round(s / 3600)} h`;
  if (s < 63_072_000) return `${Math.round(s / 86_400)} days`;
  return `${Math.round(s / 31_557_600)} years`;
}

/**
 * Throws TimestampOutOfRange for a device time outside the accepted window
 * around receipt. The message says how far off it is, not the time itself;
 * a time in January 1970 is named for what it usually is: epoch seconds where
 * the template reads epoch milliseconds.
 */
export function checkOccurrenceTimes(
  times: readonly string[],
  receivedAt: number,
  limits: InputLimits,
): void {
  for (const t of times) {
    const at = Date.parse(t);
    if (Number.isNaN(at)) continue; // the mapping core refuses unparseable times itself
    if (at > receivedAt + limits.maxFutureMs) {
      throw new PipelineError(
        'TimestampOutOfRange',
        `a device timestamp is ${span(at - receivedAt)} after receipt; at most ${limits.maxFutureMs / 1000} s are accepted (INPUT_MAX_FUTURE_MS)`,
      );
    }
    if (at < receivedAt - limits.maxAgeMs) {
      const epochSeconds = at >= 0 && at < 86_400_000 * 31 && receivedAt > 1e12;
      throw new PipelineError(
        'TimestampOutOfRange',
        `a device timestamp is ${span(receivedAt - at)} before receipt; at most ${Math.round(limits.maxAgeMs / 3_600_000)} h are accepted (INPUT_MAX_AGE_MS)` +
          (epochSeconds
            ? '; it falls in January 1970: epoch seconds where the template reads epoch milliseconds (multiply by 1000 in timestampExpression)'
            : ''),
      );
    }
  }
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

/** Everything the pure path needs from the configuration, in one value. */
export interface NormalizePolicy {
  readonly input: InputLimits;
  /** Physiological plausibility limits (PLAUSIBILITY_LIMITS). */
  readonly plausibilityLimits: readonly PlausibilityLimit[];
  /** IANA zone of daily windows (WINDOW_TIME_ZONE). */
  readonly windowTimeZone: string;
  /** Where MedTech templates' Properties come from (MEDTECH_ENVELOPE, envelope.ts). */
  readonly envelope: EnvelopePolicy;
}

export function normalizePolicy(config: Pick<Config, 'input' | 'values'>): NormalizePolicy {
  return {
    input: config.input,
    plausibilityLimits: config.values.plausibilityLimits,
    windowTimeZone: config.values.windowTimeZone,
    envelope: config.values.medtechEnvelope,
  };
}

/** The documented defaults (docs/configuration.md), for callers without a configuration. */
export const DEFAULT_POLICY: NormalizePolicy = normalizePolicy(loadConfig({}));
