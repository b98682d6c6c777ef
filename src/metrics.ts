/**
 * Prometheus metrics, one registry per process (passed down, never global).
 * Names and labels are documented in docs/operations.md. Node.js process
 * metrics keep prom-client's standard names (`process_*`, `nodejs_*`), which
 * stock dashboards and alerts expect.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { readBuildInfo, type BuildInfo } from './build-info.js';

/** Job counts by queue and state, read from Redis when /metrics is scraped. */
export type QueueDepthSource = () => Promise<Record<string, Record<string, number>>>;

/** The FHIR writer's adaptive limit (adaptive-limit.ts), read when /metrics is scraped. */
export type BundleSlotSource = () => { readonly limit: number; readonly inFlight: number };

export function createMetrics(options: { defaultMetrics?: boolean; buildInfo?: BuildInfo } = {}) {
  const registry = new Registry();
  let queueDepths: QueueDepthSource | undefined;
  let bundleSlots: BundleSlotSource | undefined;
  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry });
  const build = options.buildInfo ?? readBuildInfo();
  const metrics = {
    registry,
    buildInfo: new Gauge({
      name: 'iomt_build_info',
      help: 'Always 1; the labels say what this process runs: package version, git commit ("unknown" when not known), Node.js version',
      labelNames: ['version', 'commit', 'node_version'] as const,
      registers: [registry],
    }),
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
    messagesThrottled: new Counter({
      name: 'iomt_messages_throttled_total',
      help: 'PUBLISHes whose PUBACK was delayed because the device exceeded MQTT_DEVICE_MAX_RATE',
      registers: [registry],
    }),
    messagesNormalized: new Counter({
      name: 'iomt_messages_normalized_total',
      help: 'Messages turned into measurements',
      registers: [registry],
    }),
    messagesUnmatched: new Counter({
      name: 'iomt_messages_unmatched_total',
      help: 'Messages no device template matched (dead-lettered unless MAPPINGS_UNMATCHED=count)',
      registers: [registry],
    }),
    readingsAbsent: new Counter({
      name: 'iomt_readings_absent_total',
      help: 'Observations recorded with dataAbsentReason "error" (an unusable reading, e.g. a word or 1e999 where a number belongs)',
      registers: [registry],
    }),
    readingsImplausible: new Counter({
      name: 'iomt_readings_implausible_total',
      help: 'Values outside their physiological plausibility limits (PLAUSIBILITY_LIMITS): kept, flagged preliminary with interpretation HX/LX, by measurement type and code',
      labelNames: ['type', 'code'] as const,
      registers: [registry],
    }),
    mappingReloads: new Counter({
      name: 'iomt_mapping_reloads_total',
      help: 'Template changes seen by this process, by outcome (activated / rejected: does not validate / refused: failed a gate)',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    mappingActive: new Gauge({
      name: 'iomt_mapping_active_version',
      help: 'The template version this process runs: 1 for that version',
      labelNames: ['version'] as const,
      registers: [registry],
    }),
    mappingFolderDiffers: new Gauge({
      name: 'iomt_mapping_folder_differs',
      help: "1 while this worker's mappings folder differs from the fleet's active version (reported, never applied), else 0",
      registers: [registry],
    }),
    templateMessages: new Counter({
      name: 'iomt_template_messages_total',
      help: 'Messages at the normalize stage by device template (typeName; "(none)" when none applies), template version and outcome (matched / unmatched / dead_lettered)',
      labelNames: ['template', 'version', 'outcome'] as const,
      registers: [registry],
    }),
    mappingsInvalid: new Gauge({
      name: 'iomt_mapping_templates_invalid',
      help: '1 while the templates on disk do not validate (the active version keeps running), else 0',
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
      help: 'Observations saved on the FHIR server, by outcome (created / updated / unchanged)',
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
    analyticsInsertJobs: new Histogram({
      name: 'iomt_analytics_insert_jobs',
      help: 'Jobs sharing one ClickHouse insert (group commit, CLICKHOUSE_INSERT_WAIT_MS)',
      buckets: [1, 2, 4, 8, 16, 32, 64],
      registers: [registry],
    }),
    endToEndSeconds: new Histogram({
      name: 'iomt_receipt_to_fhir_seconds',
      help: 'Broker receipt to FHIR commit, seconds',
      buckets: [0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10, 30, 60],
      registers: [registry],
    }),
    fhirBundleEntries: new Histogram({
      name: 'iomt_fhir_bundle_entries',
      help: 'Observations per transaction Bundle sent to the FHIR server (group commit fills them under load)',
      buckets: [1, 3, 10, 25, 50, 100, 150, 200, 400, 800],
      registers: [registry],
    }),
    fhirBundleParts: new Histogram({
      name: 'iomt_fhir_bundle_parts',
      help: 'Jobs sharing one transaction Bundle (group commit)',
      buckets: [1, 2, 4, 8, 16, 32, 64],
      registers: [registry],
    }),
    fhirBundleSlots: new Gauge({
      name: 'iomt_fhir_bundle_slots',
      help: 'Write Bundles this worker process may keep in flight now (state "limit": the adaptive limit, at most FHIR_CONCURRENCY_MAX) and has in flight ("in_flight"), read at scrape time',
      labelNames: ['state'] as const,
      registers: [registry],
      collect() {
        if (!bundleSlots) return;
        const { limit, inFlight } = bundleSlots();
        this.set({ state: 'limit' }, limit);
        this.set({ state: 'in_flight' }, inFlight);
      },
    }),
    deviceToFhirSeconds: new Histogram({
      name: 'iomt_device_to_fhir_seconds',
      help: "Device timestamp (Observation.effective) to FHIR commit, seconds (includes the device's clock skew)",
      buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600],
      registers: [registry],
    }),
    stageSeconds: new Histogram({
      name: 'iomt_stage_seconds',
      help: 'Time to process one job, by stage (normalize / fhir / analytics), seconds',
      labelNames: ['stage'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30],
      registers: [registry],
    }),
    jobsStalled: new Counter({
      name: 'iomt_jobs_stalled_total',
      help: 'Jobs taken back from a worker that stopped renewing its lock (crashed), by queue',
      labelNames: ['queue'] as const,
      registers: [registry],
    }),
    connectionsRefused: new Counter({
      name: 'iomt_connections_refused_total',
      help: 'MQTT CONNECTs refused by the broker, by reason',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    secretChecks: new Counter({
      name: 'iomt_secret_checks_total',
      help: 'Device secret checks (scrypt) the broker ran; refused CONNECTs over a budget cost none',
      registers: [registry],
    }),
    subscriptionsRefused: new Counter({
      name: 'iomt_subscriptions_refused_total',
      help: 'SUBSCRIBE filters answered 0x80, by reason',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    sessionsDropped: new Counter({
      name: 'iomt_sessions_dropped_total',
      help: 'Persistent sessions deleted by the broker, by reason (evicted by a newer one of the same device, expired)',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    sessionMessagesNotQueued: new Counter({
      name: 'iomt_session_messages_not_queued_total',
      help: 'Messages not queued for an offline persistent session because its queue was full',
      registers: [registry],
    }),
    brokerAdmitRate: new Gauge({
      name: 'iomt_broker_admit_jobs_per_second',
      help: 'Jobs per second this broker writes while over the high-water mark (the measured drain rate, at least one per BROKER_BACKPRESSURE_MAX_WAIT_MS); 0 when not metering',
      registers: [registry],
    }),
    brokerBacklog: new Gauge({
      name: 'iomt_broker_backlog_jobs',
      help: 'Jobs waiting in the ingest and fhir queues, as last read by this broker',
      registers: [registry],
    }),
    brokerPaused: new Gauge({
      name: 'iomt_broker_paused',
      help: '1 while this broker meters PUBLISHes at the drain rate (backlog over the high-water mark)',
      registers: [registry],
    }),
    brokerPauses: new Counter({
      name: 'iomt_broker_pauses_total',
      help: 'Times the backlog passed the high-water mark and this broker began metering PUBLISHes',
      registers: [registry],
    }),
    queueJobs: new Gauge({
      name: 'iomt_queue_jobs',
      help: 'Jobs per queue and state (waiting, active, delayed, failed), read at scrape time',
      labelNames: ['queue', 'state'] as const,
      registers: [registry],
      async collect() {
        if (!queueDepths) return;
        this.reset();
        for (const [queue, states] of Object.entries(await queueDepths()))
          for (const [state, n] of Object.entries(states)) this.set({ queue, state }, n);
      },
    }),
    deadLetters: new Gauge({
      name: 'iomt_dead_letter_jobs',
      help: 'Dead letters waiting for an operator (iomt dlq list)',
      registers: [registry],
      async collect() {
        if (!queueDepths) return;
        const states = (await queueDepths())['dead-letter'] ?? {};
        this.set(Object.values(states).reduce((a, b) => a + b, 0));
      },
    }),
    /** Lets the process that owns the queues report their depths at scrape time. */
    setQueueDepthSource(source: QueueDepthSource): void {
      queueDepths = source;
    },
    /** Lets the process that writes to FHIR report its Bundle slots at scrape time. */
    setBundleSlotSource(source: BundleSlotSource): void {
      bundleSlots = source;
    },
  };
  metrics.buildInfo.set(
    { version: build.version, commit: build.commit, node_version: build.node },
    1,
  );
  return metrics;
}

export type Metrics = ReturnType<typeof createMetrics>;
