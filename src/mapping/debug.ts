/**
 * The mapping debugger: runs one message through the same pure path as the
 * worker (normalizeMessage) and tells every stage — which templates matched,
 * each expression's value, the measurements, the identity, the Observations —
 * and, when the message is refused, the code and why. Pure: text out.
 */
import { isPipelineError } from '../errors.js';
import type { MappingSet } from './compile.js';
import type { TraceEvent } from './device-mapping.js';
import type { IdentityClaim, IdentityResolver, ResolvedIdentity } from './identity.js';
import { bindingResolver } from './identity.js';
import type { NormalizePolicy } from './input-policy.js';
import { normalizeMessage, type NormalizeResult } from './normalize.js';
import type { MessageMeta } from './types.js';

export interface DebugInput {
  readonly payload: string;
  readonly meta: MessageMeta;
  readonly patientId: string | undefined;
  readonly children?: ReadonlyMap<string, string | undefined>;
  readonly identifierSystem: string;
  /** The worker's policy (input limits, plausibility, daily-window zone); default: the documented defaults. */
  readonly policy?: NormalizePolicy;
}

export interface DebugReport {
  readonly ok: boolean;
  readonly text: string;
  readonly result?: NormalizeResult;
}

function show(v: unknown): string {
  if (v === undefined) return '(nothing)';
  const s = JSON.stringify(v);
  return s.length > 160 ? `${s.slice(0, 157)}...` : s;
}

/**
 * One message through the worker's path (normalizeMessage) with the debug
 * input's bindings, every trace event to `trace` and every identity resolved
 * into `identities`: what the text and the JSON debugger both show.
 */
export async function traceMessage(
  mappings: MappingSet,
  input: DebugInput,
  trace: (e: TraceEvent) => void,
  identities: (readonly [IdentityClaim, ResolvedIdentity])[],
): Promise<NormalizeResult> {
  const base = bindingResolver({
    patientId: input.patientId,
    ...(input.children ? { children: input.children } : {}),
  });
  const resolveIdentity: IdentityResolver = async (claim) => {
    const r = await base(claim);
    identities.push([claim, r]);
    return r;
  };
  return normalizeMessage(mappings, {
    payload: input.payload,
    meta: input.meta,
    patientId: input.patientId,
    identifierSystem: input.identifierSystem,
    resolveIdentity,
    trace,
    ...(input.policy ? { policy: input.policy } : {}),
  });
}

export async function debugMessage(mappings: MappingSet, input: DebugInput): Promise<DebugReport> {
  const lines: string[] = [];
  const out = (s = '') => lines.push(s);
  out(
    `message from device "${input.meta.deviceId}" on ${input.meta.topic}, received ${new Date(input.meta.receivedAt).toISOString()} (${Buffer.byteLength(input.payload)} bytes)`,
  );
  out(`templates: version ${mappings.version}`);
  out();
  out('1. device templates');
  const trace = (e: TraceEvent) => {
    if (e.kind === 'match') {
      out(
        e.contexts === 0
          ? `   - ${e.template} (${e.file}): no match`
          : `   + ${e.template} (${e.file}): matched ${e.contexts} time(s)`,
      );
    } else if (e.kind === 'expression') {
      out(`       ${e.field} [${e.language}${e.fast ? ', direct read' : ''}] = ${show(e.value)}`);
    } else if (e.kind === 'value') {
      const o = e.outcome;
      if (o.kind === 'absent') {
        out(`       value "${e.valueName}": no measurement → dataAbsentReason ${o.reason}`);
      } else if (o.kind === 'converted') {
        out(
          `       value "${e.valueName}": ${o.original.value} ${o.original.unit} → ${o.value} ${e.unit ?? ''} (UCUM)`,
        );
      }
    } else {
      out(`       → reading at ${e.reading.occurrenceTime}: ${show(e.reading.values)}`);
    }
  };
  const identities: (readonly [IdentityClaim, ResolvedIdentity])[] = [];
  let result: NormalizeResult;
  try {
    result = await traceMessage(mappings, input, trace, identities);
  } catch (err) {
    out();
    if (isPipelineError(err)) {
      out(`REJECTED ${err.code} (stage ${err.stage}): ${err.message}`);
      const d = err.details;
      if (Object.keys(d).length > 0) out(`   details: ${show(d)}`);
      out('   the worker dead-letters this message with that code; its neighbours go on.');
    } else {
      out(`REJECTED: ${err instanceof Error ? err.message : String(err)}`);
    }
    return { ok: false, text: lines.join('\n') };
  }
  out();
  out('2. identity');
  for (const [claim, r] of identities) {
    const via = r.gatewayId ? ` (via gateway ${r.gatewayId})` : '';
    out(`   device ${claim.deviceId}${via} → Patient/${r.patientId}, Device/${r.deviceResourceId}`);
  }
  out();
  out(`3. measurements (${result.measurements.length})`);
  out(JSON.stringify(result.measurements, null, 2));
  out();
  out(`4. observations (${result.observations.length})`);
  for (const f of result.implausible) {
    out(
      `   ${f.observationId}: ${f.type} code ${f.code} is implausible (${f.side === 'high' ? 'above' : 'below'} its limit) — kept, status preliminary, interpretation questionable + ${f.side === 'high' ? 'HX' : 'LX'}`,
    );
  }
  for (const o of result.observations) {
    if (o.merge) out(`   ${o.observation.id}: grouped — the writer merges it into the stored one`);
  }
  out(
    JSON.stringify(
      result.observations.map((o) => o.observation),
      null,
      2,
    ),
  );
  return { ok: true, text: lines.join('\n'), result };
}
