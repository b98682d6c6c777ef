/**
 * OpenTelemetry traces, off by default (OTEL_TRACES_EXPORTER=none): then every
 * call here is a no-op on a shared object — no exporter, no network, no span.
 *
 * On (otlp): one trace per ingest job. The broker's enqueue span is its root;
 * each stage's span (normalize, fhir, analytics) is a child of the span that
 * added its job, found through the W3C `traceparent` (Trace Context Level 1)
 * carried in the job data; a FHIR request is a client span of the stage that
 * sends it, and carries `traceparent` to the server (FHIR_SEND_TRACEPARENT).
 * The trace id then replaces the job's random traceId, so logs and traces join.
 *
 * Nothing global: the provider is this object's own (never registered with the
 * OpenTelemetry API), and the running span is kept in an AsyncLocalStorage of
 * its own, so two pipelines in one process (tests) do not see each other.
 *
 * The SDK (about a second to import on a loaded machine) is loaded only when
 * tracing is on: tracing-otlp.ts.
 *
 * What a span may hold is fixed by SpanAttributes below: counts, stage, queue,
 * job ids, HTTP method, status and server, stable error codes. Never a patient
 * id, a payload value, a URL with a query, an error message or a secret (the
 * same policy as the logs, src/logger.ts; a test checks the exported spans).
 */
import type { Config } from '../config.js';

/** Every attribute a span of ours may carry: nothing else can be set (a type, not an interface, so it is an OpenTelemetry Attributes). */
export type SpanAttributes = {
  readonly 'iomt.stage'?: string;
  readonly 'iomt.job.id'?: string;
  readonly 'iomt.observations'?: number;
  readonly 'iomt.dead_letters'?: number;
  readonly 'iomt.next_jobs'?: number;
  readonly 'iomt.retried'?: boolean;
  /** A stable code of src/errors.ts, never the error's message. */
  readonly 'iomt.error.code'?: string;
  readonly 'messaging.system'?: 'bullmq';
  readonly 'messaging.operation.type'?: 'send' | 'process';
  readonly 'messaging.destination.name'?: string;
  readonly 'messaging.batch.message_count'?: number;
  readonly 'http.request.method'?: string;
  readonly 'http.response.status_code'?: number;
  readonly 'server.address'?: string;
  readonly 'server.port'?: number;
  /** What a FHIR request does: "transaction", "read Patient", "search Device"… (no ids). */
  readonly 'fhir.interaction'?: string;
  readonly 'error.type'?: string;
};

export interface SpanOptions {
  readonly kind?: 'internal' | 'producer' | 'consumer' | 'client';
  /** Parent as a W3C traceparent (from a job); absent: the running span, else a new trace. */
  readonly parent?: string | undefined;
  readonly attributes?: SpanAttributes;
  /** Start time, epoch ms (default now): the broker's span starts at the oldest message. */
  readonly startTime?: number;
}

export interface TraceSpan {
  /** The trace id (32 hex); undefined when tracing is off. */
  readonly traceId: string | undefined;
  /** This span as a W3C traceparent, for the jobs it adds; undefined when off. */
  readonly traceparent: string | undefined;
  set(attributes: SpanAttributes): void;
  /** A point in time on the span (e.g. a dead letter, with its code). */
  event(name: string, attributes?: SpanAttributes): void;
  /** Marks the span failed with a stable error code (no message: it may quote data). */
  fail(code: string): void;
  end(): void;
}

export interface Tracing {
  readonly enabled: boolean;
  start(name: string, options?: SpanOptions): TraceSpan;
  /** Runs `fn` with `span` as the running span (it follows awaits). */
  within<T>(span: TraceSpan, fn: () => Promise<T>): Promise<T>;
  /** Whether a span is running here (inside `within`). */
  inSpan(): boolean;
  /** Exports what is buffered, then stops. */
  close(): Promise<void>;
}

const NO_SPAN: TraceSpan = {
  traceId: undefined,
  traceparent: undefined,
  set: () => undefined,
  event: () => undefined,
  fail: () => undefined,
  end: () => undefined,
};

/** Tracing off: shared no-ops, nothing allocated per call. */
export const TRACING_OFF: Tracing = {
  enabled: false,
  start: () => NO_SPAN,
  within: (_span, fn) => fn(),
  inSpan: () => false,
  close: () => Promise.resolve(),
};

/** OTEL_SERVICE_NAME, or iomt-<role> (iomt-all for broker, worker and admin together). */
export function serviceName(
  configured: string | undefined,
  roles: readonly ('broker' | 'worker' | 'admin')[],
): string {
  if (configured !== undefined) return configured;
  if (roles.length === 3) return 'iomt-all';
  return `iomt-${roles.join('-') || 'cli'}`;
}

export interface TracingOptions {
  readonly settings: Config['tracing'];
  readonly serviceName: string;
}

/** The process's tracing: TRACING_OFF unless OTEL_TRACES_EXPORTER=otlp. */
export async function createTracing(options: TracingOptions): Promise<Tracing> {
  if (options.settings.exporter === 'none') return TRACING_OFF;
  const { createOtlpTracing } = await import('./tracing-otlp.js');
  return createOtlpTracing(options);
}
