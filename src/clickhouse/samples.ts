/**
 * SampledData → one `samples` row per point, with its own timestamp, for
 * waveform and high-rate analytics. PURE.
 *
 * FHIR R4 SampledData (http://hl7.org/fhir/R4/datatypes.html#SampledData):
 *  - data: decimals separated by spaces, or "E" (error), "L" (below the
 *    detection limit), "U" (above it);
 *  - value = origin.value + factor × data point (factor defaults to 1);
 *  - dimensions: points per sampling time, interleaved — point i belongs to
 *    time index floor(i / dimensions) and dimension i mod dimensions;
 *  - period: milliseconds between sampling times, from effective[x] start.
 */
import type { SampledData } from 'fhir/r4.js';
import { PipelineError } from '../errors.js';
import { toClickHouseDateTime } from './time.js';

export interface SampleRow {
  readonly observation_id: string;
  /** -1 for Observation.valueSampledData, else the index of the component holding it. */
  readonly component_index: number;
  readonly sample_index: number;
  readonly dimension: number;
  readonly patient_id: string;
  readonly device_id: string;
  readonly code: string;
  readonly ts: string;
  readonly value: number | null;
  /** '' for a number, else the SampledData code: E, L or U. */
  readonly flag: string;
  readonly unit: string;
  readonly template_version: string;
  readonly fhir_committed_at: string;
}

/** What every point of one SampledData shares. */
export interface SampleContext {
  readonly observationId: string;
  readonly componentIndex: number;
  readonly patientId: string;
  readonly deviceId: string;
  readonly code: string;
  readonly unit: string;
  readonly startMs: number;
  readonly templateVersion: string;
  readonly committedAt: string;
}

/** Most points expanded from one SampledData: bounds memory for a hostile resource. */
export const MAX_SAMPLES = 1_000_000;

function sampleError(message: string): PipelineError {
  return new PipelineError('InvalidValue', `SampledData: ${message}`, { stage: 'analytics' });
}

export function expandSampledData(sd: SampledData, ctx: SampleContext): SampleRow[] {
  const tokens = (sd.data ?? '').trim().split(/\s+/).filter(Boolean);
  if (tokens.length > MAX_SAMPLES)
    throw sampleError(`${tokens.length} points exceed ${MAX_SAMPLES}`);
  const dims = sd.dimensions ?? 1;
  if (!Number.isInteger(dims) || dims < 1) throw sampleError(`dimensions ${dims} is not >= 1`);
  const period = sd.period;
  if (!Number.isFinite(period) || period < 0) throw sampleError(`period ${period} is not >= 0`);
  const origin = sd.origin?.value ?? 0;
  const factor = sd.factor ?? 1;
  return tokens.map((token, i): SampleRow => {
    const coded = token === 'E' || token === 'L' || token === 'U';
    const x = coded ? NaN : Number(token);
    if (!coded && !Number.isFinite(x)) throw sampleError(`point ${i} "${token.slice(0, 20)}"`);
    const timeIndex = Math.floor(i / dims);
    return {
      observation_id: ctx.observationId,
      component_index: ctx.componentIndex,
      sample_index: i,
      dimension: i % dims,
      patient_id: ctx.patientId,
      device_id: ctx.deviceId,
      code: ctx.code,
      ts: toClickHouseDateTime(ctx.startMs + Math.round(timeIndex * period)),
      value: coded ? null : origin + factor * x,
      flag: coded ? token : '',
      unit: ctx.unit,
      template_version: ctx.templateVersion,
      fhir_committed_at: ctx.committedAt,
    };
  });
}
