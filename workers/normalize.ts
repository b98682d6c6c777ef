/**
 * Normalize worker (queue "ingest" → "fhir"). For each message of a batch:
 * identity from the registry (the authenticated device's patient binding), the
 * pure mapping core (message → measurements → Observations), then one "fhir"
 * job for the whole batch. A message that cannot be mapped is dead-lettered
 * with its code; its neighbours go on.
 */
import type { Job, Queue } from 'bullmq';
import type { Config } from '../src/config.js';
import type { DeviceRecord, DeviceRegistry } from '../src/devices/registry.js';
import { PipelineError, toPipelineError } from '../src/errors.js';
import type { Logger } from '../src/logger.js';
import { deviceResourceId, normalizeMessage, type MappingSet } from '../src/mapping/index.js';
import type { Metrics } from '../src/metrics.js';
import type {
  DeadLetterJobData,
  FhirJobData,
  IngestJobData,
  ObservationEnvelope,
  SubjectRef,
} from '../src/queues.js';
import { deadLetter, type DeadLetterInput } from './dead-letter.js';

export interface NormalizeDeps {
  readonly config: Config;
  readonly registry: DeviceRegistry;
  readonly mappings: () => MappingSet;
  readonly fhirQueue: Queue<FhirJobData>;
  readonly deadLetterQueue: Queue<DeadLetterJobData>;
  readonly log: Logger;
  readonly metrics?: Metrics;
}

/** Registry lookups cached briefly: a re-bound device is seen within this time. */
const DEVICE_CACHE_MS = 10_000;

export function createNormalizeProcessor(
  deps: NormalizeDeps,
): (job: Job<IngestJobData>) => Promise<void> {
  const cache = new Map<string, { record: DeviceRecord | undefined; at: number }>();

  async function device(deviceId: string): Promise<DeviceRecord | undefined> {
    const hit = cache.get(deviceId);
    if (hit && Date.now() - hit.at < DEVICE_CACHE_MS) return hit.record;
    const record = await deps.registry.get(deviceId);
    if (cache.size > 50_000) cache.clear();
    cache.set(deviceId, { record, at: Date.now() });
    return record;
  }

  return async function process(job) {
    const { traceId, messages } = job.data;
    const log = deps.log.child({ traceId, jobId: job.id });
    const mappings = deps.mappings();
    const envelopes: ObservationEnvelope[] = [];
    const subjects = new Map<string, SubjectRef>();
    const dead: DeadLetterInput[] = [];

    for (const message of messages) {
      try {
        if (message.encoding !== 'utf8')
          throw new PipelineError('InvalidPayload', 'the payload is not UTF-8 text');
        const record = await device(message.deviceId);
        if (!record)
          throw new PipelineError(
            'DeviceNotFound',
            `device "${message.deviceId}" is not registered`,
          );
        const result = await normalizeMessage(mappings, {
          payload: message.payload,
          meta: {
            deviceId: message.deviceId,
            topic: message.topic,
            receivedAt: message.receivedAt,
          },
          patientId: record.patientId,
          identifierSystem: deps.config.fhir.identifierSystem,
        });
        for (const m of result.measurements) deps.metrics?.measurements.inc({ type: m.type });
        for (const o of result.observations) {
          envelopes.push({
            observation: o.observation,
            provenance: {
              messageId: message.id,
              deviceId: message.deviceId,
              receivedAt: message.receivedAt,
              templateName: o.templateName,
              templateVersion: mappings.version,
            },
          });
        }
        subjects.set(`Patient/${record.patientId}`, {
          resourceType: 'Patient',
          id: record.patientId,
          identifier: { system: 'urn:iomt:patient', value: record.patientId },
        });
        const deviceId = deviceResourceId(message.deviceId);
        subjects.set(`Device/${deviceId}`, {
          resourceType: 'Device',
          id: deviceId,
          identifier: { system: deps.config.fhir.deviceIdentifierSystem, value: message.deviceId },
          patientId: record.patientId,
        });
        deps.metrics?.messagesNormalized.inc();
      } catch (err) {
        const e = toPipelineError(err);
        if (e.retryable) throw e; // e.g. Redis unreachable: the whole batch retries
        log.warn(
          {
            event: 'dead-letter',
            deviceId: message.deviceId,
            messageId: message.id,
            code: e.code,
            reason: e.message,
          },
          'message dead-lettered',
        );
        dead.push({
          traceId,
          error: e,
          deviceId: message.deviceId,
          message,
          key: `${job.id ?? traceId}:${message.id}`,
        });
      }
    }

    if (envelopes.length > 0) {
      // jobId = ingest job id: a retried ingest job does not enqueue its batch twice.
      await deps.fhirQueue.add(
        'batch',
        { traceId, subjects: [...subjects.values()], observations: envelopes },
        { jobId: `n-${job.id ?? traceId}` },
      );
    }
    await deadLetter(deps.deadLetterQueue, dead, deps.metrics);
    log.debug(
      {
        event: 'normalized',
        messages: messages.length,
        observations: envelopes.length,
        dead: dead.length,
      },
      'batch normalized',
    );
  };
}
