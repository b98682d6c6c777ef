/**
 * The tracing settings: off by default, the standard OpenTelemetry names,
 * each refusal naming its key, and the per-role service name.
 */
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { PipelineError } from '../../src/errors.js';
import { createTracing, serviceName, TRACING_OFF } from '../../src/observability/tracing.js';

function problems(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(PipelineError);
    return (err as PipelineError).details.problems as string[];
  }
  return [];
}

describe('tracing settings', () => {
  it('are off by default, with the standard OTLP/HTTP endpoint and traceparent on FHIR requests', () => {
    expect(loadConfig({}).tracing).toEqual({
      exporter: 'none',
      endpoint: 'http://localhost:4318',
      serviceName: undefined,
      fhirTraceparent: true,
    });
  });

  it('read OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME and FHIR_SEND_TRACEPARENT', () => {
    const t = loadConfig({
      OTEL_TRACES_EXPORTER: 'otlp',
      OTEL_EXPORTER_OTLP_ENDPOINT: 'https://collector.example:4318/',
      OTEL_SERVICE_NAME: 'ward-7-broker',
      FHIR_SEND_TRACEPARENT: 'false',
    }).tracing;
    expect(t).toEqual({
      exporter: 'otlp',
      // A trailing slash is dropped: spans go to <endpoint>/v1/traces.
      endpoint: 'https://collector.example:4318',
      serviceName: 'ward-7-broker',
      fhirTraceparent: false,
    });
    expect(Object.isFrozen(t)).toBe(true);
  });

  it('refuses unknown exporters, non-HTTP endpoints and non-boolean switches, naming each key', () => {
    const found = problems({
      OTEL_TRACES_EXPORTER: 'jaeger',
      OTEL_EXPORTER_OTLP_ENDPOINT: 'grpc://collector:4317',
      FHIR_SEND_TRACEPARENT: 'sometimes',
    });
    expect(found).toEqual([
      expect.stringMatching(/^OTEL_TRACES_EXPORTER: expected one of none, otlp, got "jaeger"/),
      expect.stringMatching(/^OTEL_EXPORTER_OTLP_ENDPOINT: expected a http: or https: URL/),
      expect.stringMatching(/^FHIR_SEND_TRACEPARENT: expected true or false/),
    ]);
  });

  it('names the service after the roles unless OTEL_SERVICE_NAME says', () => {
    expect(serviceName(undefined, ['broker'])).toBe('iomt-broker');
    expect(serviceName(undefined, ['worker'])).toBe('iomt-worker');
    expect(serviceName(undefined, ['admin'])).toBe('iomt-admin');
    expect(serviceName(undefined, ['broker', 'worker'])).toBe('iomt-broker-worker');
    expect(serviceName(undefined, ['broker', 'worker', 'admin'])).toBe('iomt-all');
    expect(serviceName('ward-7', ['broker'])).toBe('ward-7');
  });

  it('off: the shared no-op, whose spans have no ids', async () => {
    const tracing = await createTracing({ settings: loadConfig({}).tracing, serviceName: 'x' });
    expect(tracing).toBe(TRACING_OFF);
    const span = tracing.start('normalize', {
      parent: '00-' + '1'.repeat(32) + '-' + '2'.repeat(16) + '-01',
    });
    expect(span.traceId).toBeUndefined();
    expect(span.traceparent).toBeUndefined();
    await expect(tracing.within(span, () => Promise.resolve(7))).resolves.toBe(7);
  });
});
