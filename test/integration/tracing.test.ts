/**
 * OpenTelemetry traces through the real pipeline: a real mqtt.js device
 * publishes, the real broker, workers, HAPI (behind a recording proxy) and
 * embedded ClickHouse process it, and a real OTLP/HTTP receiver in this test
 * takes the exported spans. One trace spans broker → normalize → FHIR → mirror,
 * HAPI receives the FHIR span's traceparent, no span holds the patient id or a
 * payload value, and with tracing off nothing is exported or sent.
 */
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createConfiguredFhirGateway } from '../../src/fhir/gateway.js';
import { createTracing } from '../../src/observability/tracing.js';
import {
  connectDevice,
  enrol,
  fhirSearch,
  publish,
  startHarness,
  uniqueId,
  waitFor,
  type Harness,
} from '../support/harness.js';
import {
  startOtlpReceiver,
  type OtlpReceiver,
  type ReceivedSpan,
} from '../support/otlp-receiver.js';
import { startRecordingProxy, type RecordingProxy } from '../support/recording-http-proxy.js';

const fhirUrl = inject('fhirUrl');
// A reading from the last hour, on a whole minute (the input policy refuses far-off clocks).
const at = new Date(Math.floor(Date.now() / 60_000) * 60_000 - 30 * 60_000).toISOString();
// Values no span attribute could hold by chance.
const HEART_RATE = 73;
const SPO2 = 96.25;

async function observationCount(patientId: string): Promise<number> {
  const bundle = await fhirSearch(fhirUrl, 'Observation', { subject: `Patient/${patientId}` });
  return bundle.entry?.length ?? 0;
}

function only(spans: readonly ReceivedSpan[], what: string): ReceivedSpan {
  expect(spans, what).toHaveLength(1);
  return spans[0]!;
}

describe('traces on (OTEL_TRACES_EXPORTER=otlp)', () => {
  let receiver: OtlpReceiver;
  let proxy: RecordingProxy;
  let h: Harness;
  let client: MqttClient | undefined;
  const deviceId = uniqueId('traced');
  const patientId = uniqueId('patient');
  let secret: string;

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    proxy = await startRecordingProxy(new URL(fhirUrl), ['traceparent']);
    h = await startHarness({
      fhirUrl: proxy.url,
      overrides: { tracing: { exporter: 'otlp', endpoint: receiver.url } },
    });
    secret = await enrol(h.pipeline, deviceId, `Patient/${patientId}`);
    client = await connectDevice(h.mqttUrl, deviceId, secret);
  });

  afterAll(async () => {
    client?.end(true);
    await h?.close();
    await proxy?.close();
    await receiver?.close();
  });

  it('follows one message from the broker through normalize, FHIR and the mirror in one trace', async () => {
    expect(h.pipeline.tracing.enabled).toBe(true);
    // 1. A device publishes one QoS 1 message; its two Observations reach HAPI.
    await publish(client!, `devices/${deviceId}/telemetry`, {
      timestamp: at,
      heartRate: HEART_RATE,
      spo2: SPO2,
    });
    await waitFor(
      () => observationCount(patientId),
      (n) => n >= 2,
      60_000,
      'Observations',
    );

    // 2. The spans arrive at the receiver (the SDK exports in batches, every 5 s).
    const spans = receiver.spans;
    const byName = (name: string, parent?: ReceivedSpan) =>
      spans.filter((s) => s.name === name && (!parent || s.parentSpanId === parent.spanId));
    const traceDone = () => {
      const root = spans.find((s) => s.name === 'ingest enqueue');
      return byName('fhir').some(
        (f) => f.traceId === root?.traceId && byName('analytics', f).length > 0,
      );
    };
    // (On a timeout, the spans received so far are in the message.)
    await waitFor(
      () =>
        Promise.resolve(
          spans.map((s) => `${s.name} ${s.traceId.slice(0, 6)} ${s.spanId}<-${s.parentSpanId}`),
        ),
      () => traceDone(),
      60_000,
      'the analytics span of the message trace',
    );

    // 3. One trace: broker enqueue (root) → normalize → fhir → analytics.
    const root = only(byName('ingest enqueue'), 'one ingest job, one root span');
    expect(root.parentSpanId).toBe('');
    expect(root.service).toBe('iomt-all');
    expect(root.attributes['messaging.batch.message_count']).toBe(1);
    const normalize = only(byName('normalize', root), 'normalize span, child of the enqueue span');
    // The FHIR job may run more than once (its Patient is being created by the
    // association sync meanwhile): one span per run, each a child of normalize,
    // the earlier ones marked retried.
    const fhirRuns = byName('fhir', normalize);
    const fhir = only(
      fhirRuns.filter((f) => byName('analytics', f).length > 0),
      'one fhir run, child of the normalize span, hands over to the mirror',
    );
    for (const run of fhirRuns)
      if (run !== fhir) expect(run.attributes['iomt.retried'], 'an earlier run retried').toBe(true);
    const mirror = byName('analytics', fhir)[0]!;
    for (const s of [normalize, fhir, mirror]) {
      expect(s.traceId).toBe(root.traceId);
      expect(s.attributes['iomt.stage']).toBe(s.name);
      expect(s.status.code ?? 0).not.toBe(2); // STATUS_CODE_ERROR
    }
    expect(mirror.attributes['messaging.destination.name']).toBe('analytics');

    // 4. The Bundles are client spans of the fhir stage, and HAPI got their traceparent.
    const transactions = byName('FHIR transaction', fhir);
    expect(transactions.length).toBeGreaterThanOrEqual(1);
    const sent = proxy.requests.filter((r) => r.method === 'POST' && r.path.startsWith('/fhir'));
    for (const t of transactions) {
      expect(t.attributes['http.request.method']).toBe('POST');
      expect(t.attributes['http.response.status_code']).toBe(200);
      expect(sent.map((r) => r.headers.traceparent)).toContain(`00-${root.traceId}-${t.spanId}-01`);
    }
    // Every FHIR request of this trace carried the traceparent of its own span.
    const ofTrace = spans.filter((s) => s.traceId === root.traceId && s.name.startsWith('FHIR '));
    const carried = new Set(proxy.requests.map((r) => r.headers.traceparent));
    for (const s of ofTrace) expect(carried).toContain(`00-${root.traceId}-${s.spanId}-01`);

    // 5. The worker's log lines for the job carry the OpenTelemetry trace id.
    expect(
      h.logs.some((l) => l.event === 'normalized' && l.traceId === root.traceId),
      'the normalize log line carries the trace id',
    ).toBe(true);

    // 6. No span anywhere holds the patient id, the device id, its secret or a payload value.
    const exported = receiver.bodies.join('\n');
    for (const secretValue of [patientId, deviceId, secret, String(SPO2)])
      expect(exported.includes(secretValue), `an export holds ${secretValue}`).toBe(false);
    for (const s of spans)
      for (const v of [
        ...Object.values(s.attributes),
        ...s.events.flatMap((e) => Object.values(e.attributes)),
      ])
        expect([HEART_RATE, SPO2]).not.toContain(v);
  });

  it('records the trace on a dead letter: its trace id, the span that dead-lettered it, an event with the code', async () => {
    // 1. A message that is not JSON is dead-lettered by the normalize stage.
    await publish(client!, `devices/${deviceId}/telemetry`, 'not json {');
    const dead = await waitFor(
      async () =>
        (await h.pipeline.queues.deadLetter.getWaiting()).filter(
          (j) => j.data.deviceId === deviceId,
        ),
      (l) => l.length === 1,
      60_000,
      'the dead letter',
    );
    const letter = dead[0]!.data;
    expect(letter.stage).toBe('normalize');

    // 2. Its traceId is the trace of its ingest job; its traceparent the normalize span.
    const spans = receiver.spans;
    const normalize = () =>
      spans.find((s) => s.name === 'normalize' && s.traceId === letter.traceId);
    await waitFor(
      () => Promise.resolve(normalize() !== undefined),
      (found) => found,
      60_000,
      'the normalize span of the dead letter',
    );
    const span = normalize()!;
    const root = spans.find((s) => s.spanId === span.parentSpanId);
    expect(root?.name).toBe('ingest enqueue');
    expect(letter.traceparent).toBe(`00-${letter.traceId}-${span.spanId}-01`);
    expect(span.attributes['iomt.dead_letters']).toBe(1);
    expect(span.events).toContainEqual({
      name: 'dead-letter',
      attributes: { 'iomt.error.code': letter.code, 'iomt.stage': 'normalize' },
    });
  });
});

describe('traces off (the default)', () => {
  let receiver: OtlpReceiver;
  let proxy: RecordingProxy;
  let h: Harness | undefined;
  let client: MqttClient | undefined;

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    proxy = await startRecordingProxy(new URL(fhirUrl), ['traceparent']);
  });

  afterAll(async () => {
    client?.end(true);
    await h?.close();
    await proxy?.close();
    await receiver?.close();
  });

  it('exports nothing and sends no traceparent, even with an endpoint set', async () => {
    const deviceId = uniqueId('untraced');
    const patientId = uniqueId('patient');
    // 1. The endpoint is set, the exporter left at its default (none).
    h = await startHarness({
      fhirUrl: proxy.url,
      roles: ['broker', 'worker'],
      overrides: {
        tracing: { endpoint: receiver.url },
        worker: { stages: ['normalize', 'fhir'] },
      },
    });
    expect(h.pipeline.config.tracing.exporter).toBe('none');
    expect(h.pipeline.tracing.enabled).toBe(false);
    const secret = await enrol(h.pipeline, deviceId, `Patient/${patientId}`);
    client = await connectDevice(h.mqttUrl, deviceId, secret);

    // 2. A message goes all the way to HAPI.
    await publish(client, `devices/${deviceId}/telemetry`, { timestamp: at, heartRate: 64 });
    await waitFor(
      () => observationCount(patientId),
      (n) => n >= 1,
      60_000,
      'Observation',
    );

    // 3. Closing would flush any buffered span: still nothing reached the receiver.
    client.end(true);
    client = undefined;
    await h.close();
    h = undefined;
    expect(receiver.requests()).toBe(0);
    expect(proxy.requests.length).toBeGreaterThan(0);
    expect(proxy.requests.filter((r) => r.headers.traceparent !== undefined)).toEqual([]);
  });
});

describe('FHIR_SEND_TRACEPARENT', () => {
  it('false keeps the FHIR client span but sends no traceparent header; true sends it', async () => {
    const receiver = await startOtlpReceiver();
    const proxy = await startRecordingProxy(new URL(fhirUrl), ['traceparent']);
    try {
      for (const send of [false, true]) {
        // 1. A gateway built as the pipeline builds it, tracing on.
        const config = loadConfig(
          {},
          {
            fhir: { url: proxy.url },
            tracing: { exporter: 'otlp', endpoint: receiver.url, fhirTraceparent: send },
          },
        );
        const tracing = await createTracing({ settings: config.tracing, serviceName: 'test' });
        const gateway = createConfiguredFhirGateway(config, tracing);
        // 2. One request inside a stage-like span.
        const stage = tracing.start('fhir');
        await tracing.within(stage, () => gateway.capabilities());
        stage.end();
        await tracing.close();
        const request = proxy.requests.at(-1)!;
        expect(request.path).toBe('/fhir/metadata');
        const client = receiver.spans.find(
          (s) => s.name === 'FHIR metadata' && s.traceId === stage.traceId,
        );
        expect(client?.parentSpanId).toBeTruthy();
        expect(request.headers.traceparent).toBe(
          send ? `00-${stage.traceId}-${client!.spanId}-01` : undefined,
        );
      }
    } finally {
      await proxy.close();
      await receiver.close();
    }
  });
});
