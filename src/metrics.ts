/**
 * Prometheus metrics, one registry per process (passed down, never global).
 * Names and labels are documented in docs/operations.md.
 */
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export function createMetrics(options: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry();
  if (options.defaultMetrics ?? true)
    collectDefaultMetrics({ register: registry, prefix: 'iomt_process_' });
  const metrics = {
    registry,
    messagesReceived: new Counter({
      name: 'iomt_messages_received_total',
      help: 'MQTT messages accepted by the broker, by QoS',
      labelNames: ['qos'] as const,
      registers: [registry],
    }),
    messagesRefused: new Counter({
      name: 'iomt_messages_refused_total',
      help: 'MQTT publishes refused by the broker, by reason',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    messagesNormalized: new Counter({
      name: 'iomt_messages_normalized_total',
      help: 'Messages turned into measurements',
      registers: [registry],
    }),
    measurements: new Counter({
      name: 'iomt_measurements_total',
      help: 'Measurements produced by device mapping, by type',
      labelNames: ['type'] as const,
      registers: [registry],
    }),
    fhirResources: new Counter({
      name: 'iomt_fhir_resources_total',
      help: 'Resources written to the FHIR server, by outcome (created / updated)',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    errors: new Counter({
      name: 'iomt_errors_total',
      help: 'Errors by code and stage',
      labelNames: ['code', 'stage'] as const,
      registers: [registry],
    }),
    analyticsRows: new Counter({
      name: 'iomt_analytics_rows_total',
      help: 'Observation rows written to ClickHouse',
      registers: [registry],
    }),
    endToEndSeconds: new Histogram({
      name: 'iomt_receipt_to_fhir_seconds',
      help: 'Broker receipt to FHIR commit, seconds',
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60],
      registers: [registry],
    }),
  };
  return metrics;
}

export type Metrics = ReturnType<typeof createMetrics>;
