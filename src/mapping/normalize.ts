/**
 * The whole pure path for one message: payload text → JSON → readings →
 * identity → measurements → Observations. The normalize worker, the CLI
 * (debug, test) and the fixtures run exactly this function on the same input;
 * only the identity resolver differs (registry / FHIR lookup in the worker,
 * given bindings elsewhere).
 */
import type { Observation } from 'fhir/r4.js';
import { PipelineError } from '../errors.js';
import { describeJsonProblem, scanJson } from '../json-text.js';
import type { MappingSet } from './compile.js';
import { mapMessage, type Reading, type TraceEvent } from './device-mapping.js';
import type { Bindings } from './expressions.js';
import { messageEnvelope } from './envelope.js';
import { buildExpressionObservation, buildObservation } from './fhir-mapping.js';
import {
  bindingResolver,
  type IdentityResolver,
  type ObservationGroup,
  type ResolvedIdentity,
} from './identity.js';
import {
  checkJsonShape,
  checkObservationValues,
  checkOccurrenceTimes,
  DEFAULT_POLICY,
  type NormalizePolicy,
} from './input-policy.js';
import { flagImplausible, type ImplausibleValue } from './plausibility.js';
import type { Measurement, MessageMeta } from './types.js';
import { medtechShape } from './medtech-compat.js';
import { buildGroupedObservation, groupKey, groupOf, windowEnd } from './windowing.js';

export interface NormalizeInput {
  readonly payload: string;
  readonly meta: MessageMeta;
  /**
   * The authenticated device's patient, fixed (the default resolver, for the
   * debugger and fixtures; the worker attributes by association history).
   */
  readonly patientId: string | undefined;
  readonly identifierSystem: string;
  /** Default: MedTech "Create" with `patientId` as the only binding. */
  readonly resolveIdentity?: IdentityResolver;
  /**
   * Checks the readings before anyone is attributed (the worker's input policy:
   * a reading dated 1990 is TimestampOutOfRange, not "no patient then").
   */
  readonly checkReadings?: (readings: readonly Reading[]) => void;
  readonly trace?: (event: TraceEvent) => void;
  /**
   * Input limits, plausibility limits and the daily-window zone, from the
   * configuration (normalizePolicy); default: the documented defaults.
   */
  readonly policy?: NormalizePolicy;
}

/** A value kept but flagged as physiologically implausible (plausibility.ts). */
export interface ImplausibleReading extends ImplausibleValue {
  /** The measurement type. */
  readonly type: string;
  readonly observationId: string;
}

export interface NormalizedObservation {
  readonly observation: Observation;
  readonly templateName: string;
  /** A window or correlation group: the writer merges it into the stored Observation. */
  readonly merge: boolean;
  /** The device that took the readings (a gateway's child, or the authenticated device). */
  readonly deviceId: string;
  readonly gatewayId?: string;
}

export interface NormalizeResult {
  readonly matchedTemplates: readonly string[];
  readonly measurements: readonly Measurement[];
  readonly observations: readonly NormalizedObservation[];
  /** Values outside their plausibility limits: kept, flagged, to be counted by the caller. */
  readonly implausible: readonly ImplausibleReading[];
}

/**
 * The payload as a JSON object or array, or InvalidPayload. JSON.parse's own
 * message quotes the payload, so it is neither passed on nor kept as `cause`
 * (a logged cause would print it): the reason names the kind of problem and its
 * line and column (src/json-text.ts), never the text.
 */
export function parsePayload(payload: string): unknown {
  let body: unknown;
  try {
    body = JSON.parse(payload);
  } catch {
    const p = scanJson(payload, { uniqueNames: false });
    throw new PipelineError(
      'InvalidPayload',
      p ? describeJsonProblem(p) : 'the payload is not valid JSON',
      p ? { details: { kind: p.kind, line: p.line, column: p.column } } : {},
    );
  }
  if (typeof body !== 'object' || body === null) {
    throw new PipelineError('InvalidPayload', 'the payload must be a JSON object or array');
  }
  return body;
}

async function identify(
  readings: readonly Reading[],
  meta: MessageMeta,
  resolve: IdentityResolver,
): Promise<{ measurement: Measurement; identity: ResolvedIdentity }[]> {
  const cache = new Map<string, ResolvedIdentity>();
  const out: { measurement: Measurement; identity: ResolvedIdentity }[] = [];
  for (const r of readings) {
    // Each reading is attributed at its own time: two readings of one message
    // may fall on either side of an association change.
    const key = JSON.stringify([
      r.deviceId,
      r.deviceFrom,
      r.claimedPatientId,
      r.patientClaimMissing,
      r.encounterId,
      r.occurrenceTime,
    ]);
    let identity = cache.get(key);
    if (!identity) {
      identity = await resolve({
        authenticatedDeviceId: meta.deviceId,
        deviceId: r.deviceId,
        deviceFrom: r.deviceFrom,
        occurrenceTime: r.occurrenceTime,
        ...(r.claimedPatientId !== undefined ? { claimedPatientId: r.claimedPatientId } : {}),
        ...(r.patientClaimMissing ? { patientClaimMissing: true as const } : {}),
        ...(r.encounterId !== undefined ? { encounterId: r.encounterId } : {}),
      });
      cache.set(key, identity);
    }
    out.push({
      identity,
      measurement: {
        type: r.type,
        deviceId: r.deviceId,
        ...(identity.gatewayId !== undefined ? { gatewayId: identity.gatewayId } : {}),
        patientId: identity.patientId,
        ...(r.encounterId !== undefined ? { encounterId: r.encounterId } : {}),
        ...(r.correlationId !== undefined ? { correlationId: r.correlationId } : {}),
        occurrenceTime: r.occurrenceTime,
        values: r.values,
        ...(r.absent !== undefined ? { absent: r.absent } : {}),
        ...(r.original !== undefined ? { original: r.original } : {}),
      },
    });
  }
  return out;
}

export async function normalizeMessage(
  mappings: MappingSet,
  input: NormalizeInput,
): Promise<NormalizeResult> {
  const policy = input.policy ?? DEFAULT_POLICY;
  // Input policy, the same for the worker and the CLI: shape before parsing…
  checkJsonShape(input.payload, policy.input);
  const payload = parsePayload(input.payload);
  // MedTech's envelope: Body, and Properties from where MEDTECH_ENVELOPE says.
  const envelope = messageEnvelope(payload, input.meta, policy.envelope);
  const body = envelope.body;
  const { readings, matchedTemplates } = await mapMessage(mappings, payload, input.meta, {
    ...(input.trace ? { trace: input.trace } : {}),
    envelope,
  });
  if (matchedTemplates.length === 0) {
    throw new PipelineError('TemplateNotMatched', 'no device template matched the message');
  }
  // …and the device times against the broker's receipt time (no clock of ours).
  checkOccurrenceTimes(
    readings.map((r) => r.occurrenceTime),
    input.meta.receivedAt,
    policy.input,
  );
  input.checkReadings?.(readings);
  const resolve = input.resolveIdentity ?? bindingResolver({ patientId: input.patientId });
  const identified = await identify(readings, input.meta, resolve);
  const bindings: Bindings = { msg: body, meta: input.meta };

  const observations: NormalizedObservation[] = [];
  const groups = new Map<
    string,
    {
      measurements: Measurement[];
      identity: ResolvedIdentity;
      group: Exclude<ObservationGroup, { kind: 'point' }>;
      at: number;
    }
  >();
  for (const { measurement: m, identity } of identified) {
    const t = mappings.fhirTemplates.get(m.type);
    if (!t) throw new PipelineError('FhirTemplateMissing', `no FHIR template for type "${m.type}"`);
    const ctx = {
      identifierSystem: input.identifierSystem,
      templateName: m.type,
      templateVersion: mappings.version,
    };
    const provenance = {
      templateName: m.type,
      deviceId: m.deviceId,
      ...(m.gatewayId !== undefined ? { gatewayId: m.gatewayId } : {}),
    };
    if (t.spec.kind === 'JsonataFhir') {
      const observation = await buildExpressionObservation(m, t, ctx, identity, bindings);
      observations.push({ ...provenance, observation, merge: false });
      continue;
    }
    // MedTech compatibility: its windows are UTC hours and days, for every value type.
    const compat = mappings.compatibility === 'medtech';
    const zone = compat ? 'UTC' : policy.windowTimeZone;
    const group = groupOf(m, t.spec, zone, compat);
    if (group.kind === 'point') {
      const built = buildObservation(m, t.spec, ctx, identity);
      const at = Date.parse(m.occurrenceTime);
      observations.push({
        ...provenance,
        observation: compat
          ? medtechShape(built, t.spec, identity, { startMs: at, endMs: at }, input.meta.receivedAt)
          : built,
        // Same id as MedTech's: the write replaces the stored single reading.
        merge: false,
      });
      continue;
    }
    const key = JSON.stringify([m.type, m.deviceId, identity.patientId, groupKey(group)]);
    const entry = groups.get(key);
    if (entry) entry.measurements.push(m);
    else {
      groups.set(key, { measurements: [m], identity, group, at: observations.length });
      observations.push(undefined as unknown as NormalizedObservation); // placeholder keeps order
    }
  }
  for (const g of groups.values()) {
    const m = g.measurements[0]!;
    const t = mappings.fhirTemplates.get(m.type)!.spec;
    if (t.kind !== 'CodeValueFhir') continue;
    const compat = mappings.compatibility === 'medtech';
    const zone = compat ? 'UTC' : policy.windowTimeZone;
    const built = buildGroupedObservation(
      g.measurements,
      t,
      {
        identifierSystem: input.identifierSystem,
        templateName: m.type,
        templateVersion: mappings.version,
      },
      g.identity,
      g.group,
      zone,
    );
    let observation = built;
    if (compat) {
      // MedTech: a Quantity or String takes exactly one value per Observation
      // ("Expected 1 value. Received n."); SampledData lays out many.
      for (const v of [t.value, ...(t.components ?? []).map((c) => c.value)]) {
        if (v === undefined || (v.valueType !== 'Quantity' && v.valueType !== 'String')) continue;
        const n = g.measurements.filter((x) => x.values[v.valueName] !== undefined).length;
        if (n > 1) {
          throw new PipelineError(
            'InvalidValue',
            `FHIR template "${t.typeName}": expected 1 value of "${v.valueName}" in the group, received ${n} (MedTech compatibility)`,
            { details: { template: t.typeName } },
          );
        }
      }
      const times = g.measurements.map((x) => Date.parse(x.occurrenceTime));
      const startMs = g.group.kind === 'window' ? Date.parse(g.group.start) : Math.min(...times);
      const endMs =
        g.group.kind === 'window' ? windowEnd(startMs, g.group.minutes, zone) : Math.max(...times);
      observation = medtechShape(
        built,
        t,
        g.identity,
        {
          startMs,
          endMs,
          ...(g.group.kind === 'correlation' ? { correlationId: g.group.correlationId } : {}),
        },
        input.meta.receivedAt,
      );
    }
    observations[g.at] = {
      templateName: m.type,
      deviceId: m.deviceId,
      ...(m.gatewayId !== undefined ? { gatewayId: m.gatewayId } : {}),
      merge: true,
      observation,
    };
  }
  // Plausibility: flagged in place, never dropped (plausibility.ts).
  const implausible: ImplausibleReading[] = [];
  for (const o of observations) {
    for (const f of flagImplausible(o.observation, policy.plausibilityLimits)) {
      implausible.push({ ...f, type: o.templateName, observationId: o.observation.id ?? '' });
    }
  }
  checkObservationValues(observations.map((o) => o.observation));
  return {
    matchedTemplates,
    measurements: identified.map((i) => i.measurement),
    observations,
    implausible,
  };
}
