/**
 * Grouped Observations (MedTech periodInterval): hourly windows aligned to UTC
 * and daily windows to the local day of WINDOW_TIME_ZONE, for SampledData values, and one Observation per correlation
 * id. Pure: grouping, building, and merging a late or duplicate batch into the
 * Observation already stored (the FHIR writer reads, merges with this, and
 * writes back with If-Match).
 *
 * Merge rule: readings are laid on the grid by their own device time, so late
 * and out-of-order batches land where they belong and the end state does not
 * depend on arrival order. A duplicate (or replayed) reading changes nothing.
 * When two different readings fall into one slot (a device sampling faster
 * than defaultPeriod), MedTech's rule applies: the later in time wins; a
 * stored slot counts as taken at the slot's start (SampledData keeps no finer
 * time), so only a reading taken after that start replaces it. Non-SampledData
 * values keep the first value stored (MedTech: "only the first value is used").
 */
import type { Observation, ObservationComponent, Period } from 'fhir/r4.js';
import { PipelineError } from '../errors.js';
import {
  codings,
  layOutSamples,
  readSamples,
  sampledOrigin,
  samplePeriod,
  sampleToken,
  valueFields,
} from './fhir-values.js';
import { observationShell, ownedFields, type ObservationContext } from './fhir-mapping.js';
import type { ObservationGroup, ResolvedIdentity } from './identity.js';
import { MAX_SAMPLED_SLOTS } from './templates.js';
import type { CodeValueFhirSpec, FhirValueSpec, Measurement } from './types.js';

const MINUTE_MS = 60_000;

function hasSampledData(t: CodeValueFhirSpec): boolean {
  return [t.value, ...(t.components ?? []).map((c) => c.value)].some(
    (v) => v?.valueType === 'SampledData',
  );
}

/** Which Observation a measurement belongs to under its template's periodInterval. */
export function groupOf(
  m: Measurement,
  t: CodeValueFhirSpec,
  timeZone = 'UTC',
  /** MedTech compatibility: windows group every value type, as MedTech did. */
  everyValueType = false,
): ObservationGroup {
  if (t.periodInterval === -1) {
    if (m.correlationId === undefined) {
      throw new PipelineError(
        'RequiredValueMissing',
        `FHIR template "${t.typeName}" groups by correlation id, and the reading has none`,
        { details: { template: t.typeName } },
      );
    }
    return { kind: 'correlation', correlationId: m.correlationId };
  }
  if (
    (t.periodInterval === 60 || t.periodInterval === 1440) &&
    (everyValueType || hasSampledData(t))
  ) {
    const at = Date.parse(m.occurrenceTime);
    if (t.periodInterval === 1440) {
      // A day is the patient's local day (WINDOW_TIME_ZONE), 23 or 25 hours across DST.
      return {
        kind: 'window',
        start: new Date(localDayStart(at, timeZone)).toISOString(),
        minutes: 1440,
      };
    }
    const size = 60 * MINUTE_MS;
    // Epoch 0 is a whole UTC hour, so flooring aligns hours to UTC.
    return {
      kind: 'window',
      start: new Date(Math.floor(at / size) * size).toISOString(),
      minutes: 60,
    };
  }
  return { kind: 'point' };
}

const formatters = new Map<string, Intl.DateTimeFormat>();

/** Offset of `timeZone` from UTC at instant `ms`, in ms (Europe/Berlin in winter: +3 600 000). */
function zoneOffset(ms: number, timeZone: string): number {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
    });
    formatters.set(timeZone, f);
  }
  const p = Object.fromEntries(f.formatToParts(ms).map((x) => [x.type, x.value]));
  const local = Date.UTC(+p.year!, +p.month! - 1, +p.day!, +p.hour!, +p.minute!, +p.second!);
  return local - (ms - (((ms % 1000) + 1000) % 1000));
}

/** The instant the local day holding `ms` starts in `timeZone` (IANA name). */
export function localDayStart(ms: number, timeZone: string): number {
  if (timeZone === 'UTC') return Math.floor(ms / (1440 * MINUTE_MS)) * 1440 * MINUTE_MS;
  const local = ms + zoneOffset(ms, timeZone);
  const midnightLocal = Math.floor(local / (1440 * MINUTE_MS)) * 1440 * MINUTE_MS;
  // Local midnight as an instant: the offset there may differ from now (DST).
  let guess = midnightLocal - zoneOffset(midnightLocal, timeZone);
  guess = midnightLocal - zoneOffset(guess, timeZone);
  return guess;
}

/** The end (last millisecond) of a window starting at `startMs`. */
export function windowEnd(startMs: number, minutes: 60 | 1440, timeZone = 'UTC'): number {
  if (minutes === 60) return startMs + 60 * MINUTE_MS - 1;
  // The next local midnight: 24 h later, give or take a DST shift.
  return localDayStart(startMs + 26 * 60 * MINUTE_MS, timeZone) - 1;
}

/** A stable key for grouping measurements into one Observation. */
export function groupKey(g: ObservationGroup): string {
  if (g.kind === 'window') return `w:${g.start}:${g.minutes}`;
  if (g.kind === 'correlation') return `c:${g.correlationId}`;
  return 'p';
}

function checkSlots(startMs: number, endMs: number, periodMs: number, type: string): void {
  const slots = Math.floor((endMs - startMs) / periodMs) + 1;
  if (slots > MAX_SAMPLED_SLOTS) {
    throw new PipelineError(
      'TemplateInvalid',
      `FHIR template "${type}": ${slots} SampledData slots exceed ${MAX_SAMPLED_SLOTS}`,
      { details: { template: type } },
    );
  }
}

function groupedValue(
  spec: FhirValueSpec,
  ms: readonly Measurement[],
  startMs: number,
  endMs: number,
  type: string,
): Partial<Observation> | undefined {
  if (spec.valueType === 'SampledData') {
    const samples = ms
      .filter((m) => m.values[spec.valueName] !== undefined)
      .map((m) => ({
        timeMs: Date.parse(m.occurrenceTime),
        token: sampleToken(m.values[spec.valueName]),
      }));
    if (samples.length === 0) return undefined;
    // The device's own sampling interval when it sends one (periodName), else the template's.
    const first = ms.find((m) => m.values[spec.valueName] !== undefined)!;
    const period = samplePeriod(spec, first.values);
    checkSlots(startMs, endMs, period, type);
    return {
      valueSampledData: {
        origin: sampledOrigin(spec),
        period,
        dimensions: 1,
        data: layOutSamples(samples, startMs, endMs, period),
      },
    };
  }
  if (spec.valueType === 'CodeableConcept') return valueFields(spec, {});
  const first = ms.find(
    (m) => m.values[spec.valueName] !== undefined || m.absent?.[spec.valueName] !== undefined,
  );
  return first ? valueFields(spec, first.values, first.absent) : undefined;
}

/** One Observation for measurements of one device, patient, type and group. */
export function buildGroupedObservation(
  ms: readonly Measurement[],
  t: CodeValueFhirSpec,
  ctx: ObservationContext,
  identity: ResolvedIdentity,
  group: Exclude<ObservationGroup, { kind: 'point' }>,
  timeZone = 'UTC',
): Observation {
  const first = ms[0];
  if (!first) throw new Error('buildGroupedObservation needs at least one measurement');
  const times = ms.map((m) => Date.parse(m.occurrenceTime));
  const startMs = group.kind === 'window' ? Date.parse(group.start) : Math.min(...times);
  const endMs =
    group.kind === 'window' ? windowEnd(startMs, group.minutes, timeZone) : Math.max(...times);
  const owned = ownedFields(first, identity, t.codes[0]?.code ?? '', ctx, group);
  // FHIR R4 Observation.effectivePeriod: the window, or the span of the correlated readings.
  const obs = observationShell(owned, t, {
    effectivePeriod: { start: new Date(startMs).toISOString(), end: new Date(endMs).toISOString() },
  });
  if (t.value) Object.assign(obs, groupedValue(t.value, ms, startMs, endMs, t.typeName) ?? {});
  const components = (t.components ?? []).flatMap((c): ObservationComponent[] => {
    const v = groupedValue(c.value, ms, startMs, endMs, t.typeName);
    return v ? [{ code: { coding: codings(c.codes) }, ...v }] : [];
  });
  if (components.length > 0) obs.component = components;
  return obs;
}

type Valued = Pick<
  ObservationComponent,
  'valueQuantity' | 'valueSampledData' | 'valueString' | 'valueCodeableConcept' | 'dataAbsentReason'
>;
const VALUE_KEYS = [
  'valueQuantity',
  'valueSampledData',
  'valueString',
  'valueCodeableConcept',
  'dataAbsentReason',
] as const;

function valueOf(x: Valued): Valued {
  const out: Record<string, unknown> = {};
  for (const k of VALUE_KEYS) if (x[k] !== undefined) out[k] = x[k];
  return out;
}

function period(o: Observation): [number, number] {
  const p: Period | undefined = o.effectivePeriod;
  const point = o.effectiveDateTime ?? o.effectiveInstant;
  const start = Date.parse(p?.start ?? point ?? '');
  const end = Date.parse(p?.end ?? p?.start ?? point ?? '');
  return [start, Number.isNaN(end) ? start : end];
}

function mergeValue(
  existing: Valued,
  incoming: Valued,
  existingStart: number,
  incomingStart: number,
  start: number,
  end: number,
): Valued {
  const a = existing.valueSampledData;
  const b = incoming.valueSampledData;
  if (a?.data !== undefined && b?.data !== undefined) {
    // Stored samples first: on equal times they win (a replay never overwrites).
    const samples = [
      ...readSamples(a.data, existingStart, a.period),
      ...readSamples(b.data, incomingStart, b.period),
    ];
    return {
      valueSampledData: { ...b, data: layOutSamples(samples, start, end, b.period) },
    };
  }
  const kept = valueOf(existing);
  const hasValue = VALUE_KEYS.some((k) => k !== 'dataAbsentReason' && kept[k] !== undefined);
  return hasValue ? kept : valueOf(incoming);
}

function componentKey(c: ObservationComponent): string {
  const coding = c.code.coding?.[0];
  return `${coding?.system ?? ''}|${coding?.code ?? ''}`;
}

function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    x && typeof x === 'object' && !Array.isArray(x)
      ? Object.fromEntries(Object.entries(x).sort(([p], [q]) => p.localeCompare(q)))
      : x,
  );
}

function content(o: Observation): string {
  return canonical({
    effectivePeriod: o.effectivePeriod,
    value: valueOf(o),
    component: (o.component ?? []).map((c) => ({ key: componentKey(c), ...valueOf(c) })),
  });
}

/**
 * Merges a newly built grouped Observation into the stored one (same id).
 * `changed` is false when the stored one already holds everything: a
 * duplicate batch then writes nothing.
 */
export function mergeObservations(
  existing: Observation,
  incoming: Observation,
): { observation: Observation; changed: boolean } {
  const [es, ee] = period(existing);
  const [is, ie] = period(incoming);
  const start = Math.min(es, is);
  const end = Math.max(ee, ie);
  const merged: Observation = {
    ...incoming,
    meta: {
      ...(incoming.meta?.profile ? { profile: incoming.meta.profile } : {}),
      ...(incoming.meta?.tag ? { tag: incoming.meta.tag } : {}),
    },
    effectivePeriod: { start: new Date(start).toISOString(), end: new Date(end).toISOString() },
  };
  for (const k of VALUE_KEYS) delete merged[k];
  Object.assign(merged, mergeValue(existing, incoming, es, is, start, end));
  const stored = new Map((existing.component ?? []).map((c) => [componentKey(c), c]));
  const components: ObservationComponent[] = [];
  for (const c of incoming.component ?? []) {
    const old = stored.get(componentKey(c));
    stored.delete(componentKey(c));
    components.push(old ? { code: old.code, ...mergeValue(old, c, es, is, start, end) } : c);
  }
  components.push(...stored.values());
  if (components.length > 0) merged.component = components;
  else delete merged.component;
  return { observation: merged, changed: content(merged) !== content(existing) };
}

/** Folds Observations with the same id (one batch) into one each, in first-seen order. */
export function coalesceObservations(list: readonly Observation[]): Observation[] {
  const byId = new Map<string, Observation>();
  for (const o of list) {
    const id = o.id ?? '';
    const prior = byId.get(id);
    byId.set(id, prior ? mergeObservations(prior, o).observation : o);
  }
  return [...byId.values()];
}
