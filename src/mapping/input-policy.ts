/**
 * The input policy, part of the pure mapping path (normalizeMessage), so that
 * the worker, `iomt mappings debug` and `iomt mappings test` refuse the same
 * messages for the same reasons: what a payload may look like before it is
 * parsed, and what the readings it yields may say. Each violation is a
 * PipelineError with its own code, so the message is dead-lettered with a
 * reason an operator can act on — naming the setting, never a payload value.
 *
 *  - shape: nesting deeper than INPUT_MAX_JSON_DEPTH or an array longer than
 *    INPUT_MAX_ARRAY_LENGTH → InvalidPayload, found by one linear scan of the
 *    text before JSON.parse (so a 256 KiB "[[[[…" never reaches a recursive
 *    evaluator);
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
import type { PlausibilityLimit } from './plausibility.js';

export type InputLimits = Config['input'];

interface Level {
  readonly array: boolean;
  elements: number;
}

/** Throws InvalidPayload when `text` nests too deep or holds too long an array. */
export function checkJsonShape(text: string, limits: InputLimits): void {
  const stack: Level[] = [];
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c /* \ */) i++;
      else if (c === 0x22 /* " */) inString = false;
      continue;
    }
    if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) continue;
    const top = stack[stack.length - 1];
    // The first value inside an array counts as its first element.
    if (top?.array && top.elements === 0 && c !== 0x5d /* ] */) top.elements = 1;
    if (c === 0x22) {
      inString = true;
    } else if (c === 0x5b /* [ */ || c === 0x7b /* { */) {
      stack.push({ array: c === 0x5b, elements: 0 });
      if (stack.length > limits.maxJsonDepth) {
        throw new PipelineError(
          'InvalidPayload',
          `the payload nests deeper than ${limits.maxJsonDepth} levels (INPUT_MAX_JSON_DEPTH)`,
        );
      }
    } else if (c === 0x5d || c === 0x7d /* } */) {
      stack.pop();
    } else if (c === 0x2c /* , */ && top?.array) {
      top.elements++;
      if (top.elements > limits.maxArrayLength) {
        throw new PipelineError(
          'InvalidPayload',
          `the payload has an array of more than ${limits.maxArrayLength} elements (INPUT_MAX_ARRAY_LENGTH)`,
        );
      }
    }
  }
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
}

export function normalizePolicy(config: Pick<Config, 'input' | 'values'>): NormalizePolicy {
  return {
    input: config.input,
    plausibilityLimits: config.values.plausibilityLimits,
    windowTimeZone: config.values.windowTimeZone,
  };
}

/** The documented defaults (docs/configuration.md), for callers without a configuration. */
export const DEFAULT_POLICY: NormalizePolicy = normalizePolicy(loadConfig({}));
