/**
 * Tracing on (OTEL_TRACES_EXPORTER=otlp): the OpenTelemetry SDK with a batch
 * span processor and the OTLP/HTTP (JSON) exporter to
 * OTEL_EXPORTER_OTLP_ENDPOINT/v1/traces. Loaded by tracing.ts only then.
 * The SDK also reads its own standard variables (OTEL_TRACES_SAMPLER[_ARG],
 * OTEL_BSP_*, OTEL_EXPORTER_OTLP_HEADERS / _TIMEOUT): docs/operations.md.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  defaultTextMapGetter,
  defaultTextMapSetter,
  trace,
  type Context,
  type Span,
  type Tracer,
} from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { packageVersion } from '../build-info.js';
import type { TraceSpan, Tracing, TracingOptions } from './tracing.js';

const KIND = {
  internal: SpanKind.INTERNAL,
  producer: SpanKind.PRODUCER,
  consumer: SpanKind.CONSUMER,
  client: SpanKind.CLIENT,
} as const;

export function createOtlpTracing(options: TracingOptions): Tracing {
  const { settings } = options;

  const version = packageVersion();
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({
      'service.name': options.serviceName,
      'service.version': version,
    }),
    spanProcessors: [
      new BatchSpanProcessor(new OTLPTraceExporter({ url: `${settings.endpoint}/v1/traces` })),
    ],
  });
  const tracer: Tracer = provider.getTracer('iomt-pipeline', version);
  const propagator = new W3CTraceContextPropagator();
  const running = new AsyncLocalStorage<Context>();

  const headersOf = (ctx: Context): Record<string, string> => {
    const carrier: Record<string, string> = {};
    propagator.inject(ctx, carrier, defaultTextMapSetter);
    return carrier;
  };

  function wrap(span: Span, ctx: Context): TraceSpan & { readonly ctx: Context } {
    const sc = span.spanContext();
    return {
      ctx,
      traceId: sc.traceId,
      traceparent: headersOf(ctx).traceparent,
      set: (a) => span.setAttributes(a),
      event: (name, a) => span.addEvent(name, a),
      fail(code) {
        span.setAttributes({ 'error.type': code, 'iomt.error.code': code });
        span.setStatus({ code: SpanStatusCode.ERROR, message: code });
      },
      end: () => span.end(),
    };
  }

  return {
    enabled: true,
    start(name, o = {}) {
      const parent =
        o.parent !== undefined
          ? propagator.extract(ROOT_CONTEXT, { traceparent: o.parent }, defaultTextMapGetter)
          : (running.getStore() ?? ROOT_CONTEXT);
      const span = tracer.startSpan(
        name,
        {
          kind: KIND[o.kind ?? 'internal'],
          ...(o.attributes ? { attributes: o.attributes } : {}),
          ...(o.startTime !== undefined ? { startTime: o.startTime } : {}),
        },
        parent,
      );
      return wrap(span, trace.setSpan(parent, span));
    },
    within(span, fn) {
      const ctx = (span as { ctx?: Context }).ctx;
      return ctx ? running.run(ctx, fn) : fn();
    },
    inSpan: () => running.getStore() !== undefined,
    async close() {
      await provider.shutdown();
    },
  };
}
