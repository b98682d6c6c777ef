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
import type { GatewayLinks } from '../src/devices/gateways.js';
import { createIdentityService } from '../src/fhir/identity.js';
import { normalizeMessage, normalizePolicy, type MappingSet } from '../src/mapping/index.js';
import type { Metrics } from '../src/metrics.js';
import type {
  AnalyticsJobData,
  DeadLetterJobData,
  FhirJobData,
  IngestJobData,
  MessageOutcome,
  ObservationEnvelope,
  SubjectRef,
} from '../src/queues.js';
import { messageSourceUri } from '../src/fhir/message-source.js';
import { messageOutcome } from './analytics-handoff.js';
import { deadLetter, type DeadLetterInput } from './dead-letter.js';
import { hasRefusedReading } from './input-policy.js';

export interface NormalizeDeps {
  readonly config: Config;
  readonly registry: DeviceRegistry;
  readonly mappings: () => MappingSet;
  readonly fhirQueue: Queue<FhirJobData>;
  readonly deadLetterQueue: Queue<DeadLetterJobData>;
  /** device_messages: the fates of messages settled here (absent: not recorded). */
  readonly analyticsQueue?: Queue<AnalyticsJobData>;
  readonly log: Logger;
  readonly metrics?: Metrics;
  /** Which devices a gateway may publish for; absent: no device speaks for another. */
  readonly gateways?: Pick<GatewayLinks, 'isLinked'>;
}

/** Registry lookups cached briefly: a re-bound device is seen within this time. */
const DEVICE_CACHE_MS = 10_000;

export function createNormalizeProcessor(
  deps: NormalizeDeps,
): (job: Job<IngestJobData>) => Promise<void> {
  const cache = new Map<string, { record: DeviceRecord | undefined; at: number }>();
  const policy = normalizePolicy(deps.config);

  async function device(deviceId: string): Promise<DeviceRecord | undefined> {
    const hit = cache.get(deviceId);
    if (hit && Date.now() - hit.at < DEVICE_CACHE_MS) return hit.record;
    const record = await deps.registry.get(deviceId);
    if (cache.size > 50_000) cache.clear();
    // Misses are not cached: a device registered again is seen at once (and an
    // unknown device cannot connect, so misses are rare).
    if (record) cache.set(deviceId, { record, at: Date.now() });
    return record;
  }
  // MedTech's identity modes (IDENTITY_RESOLUTION): registry + Create, or FHIR Lookup.
  const identity = createIdentityService({
    mode: deps.config.fhir.identityResolution,
    fhirUrl: deps.config.fhir.url,
    timeoutMs: deps.config.fhir.timeoutMs,
    deviceIdentifierSystem: deps.config.fhir.deviceIdentifierSystem,
    device,
    gateways: deps.gateways ?? { isLinked: () => Promise.resolve(false) },
  });

  return async function process(job) {
    const { traceId, messages } = job.data;
    const log = deps.log.child({ traceId, jobId: job.id });
    const mappings = deps.mappings();
    const envelopes: ObservationEnvelope[] = [];
    const subjects = new Map<string, SubjectRef>();
    const dead: DeadLetterInput[] = [];
    const pending: MessageOutcome[] = []; // settled by the FHIR writer
    const settled: MessageOutcome[] = []; // settled here: to the mirror now
    const fate = (
      message: (typeof messages)[number],
      fields: Omit<MessageOutcome, 'message' | 'decidedAt' | 'templateVersion'>,
    ) => messageOutcome(message, { ...fields, templateVersion: mappings.version }, Date.now());

    for (const message of messages) {
      let patientId = '';
      try {
        if (message.encoding !== 'utf8')
          throw new PipelineError('InvalidPayload', 'the payload is not UTF-8 text');
        const record = await device(message.deviceId);
        if (!record)
          throw new PipelineError(
            'DeviceNotFound',
            `device "${message.deviceId}" is not registered`,
          );
        patientId = record.patientId;
        const who = identity.forMessage(record);
        const result = await normalizeMessage(mappings, {
          payload: message.payload,
          meta: {
            deviceId: message.deviceId,
            topic: message.topic,
            receivedAt: message.receivedAt,
          },
          patientId: record.patientId,
          identifierSystem: deps.config.fhir.identifierSystem,
          resolveIdentity: who.resolve,
          // Input limits, device times, plausibility: the pure path's policy (input-policy.ts).
          policy,
        });
        for (const f of result.implausible)
          deps.metrics?.readingsImplausible.inc({ type: f.type, code: f.code });
        for (const o of result.observations)
          if (hasRefusedReading(o.observation)) deps.metrics?.readingsAbsent.inc();
        for (const m of result.measurements) deps.metrics?.measurements.inc({ type: m.type });
        for (const o of result.observations) {
          envelopes.push({
            // FHIR R4 Meta.source: the message this version comes from (message-source.ts).
            observation: {
              ...o.observation,
              meta: {
                ...o.observation.meta,
                source: messageSourceUri({ messageId: message.id, receivedAt: message.receivedAt }),
              },
            },
            provenance: {
              messageId: message.id,
              deviceId: message.deviceId,
              receivedAt: message.receivedAt,
              templateName: o.templateName,
              templateVersion: mappings.version,
              ...(o.gatewayId !== undefined ? { gatewayId: o.gatewayId } : {}),
            },
            ...(o.merge ? { merge: true } : {}),
          });
        }
        for (const s of who.subjects()) subjects.set(`${s.resourceType}/${s.id}`, s);
        deps.metrics?.messagesNormalized.inc();
        const observationCount = result.observations.length;
        (observationCount > 0 ? pending : settled).push(
          fate(message, { patientId, outcome: 'processed', observationCount }),
        );
      } catch (err) {
        const e = toPipelineError(err);
        if (e.retryable) throw e; // e.g. Redis unreachable: the whole batch retries
        if (e.code === 'TemplateNotMatched') {
          deps.metrics?.messagesUnmatched.inc();
          if (deps.config.mappings.unmatched === 'count') {
            // MAPPINGS_UNMATCHED=count: processed, nothing produced
            settled.push(
              fate(message, {
                patientId,
                outcome: 'processed',
                errorCode: e.code,
                observationCount: 0,
              }),
            );
            continue;
          }
        }
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
        settled.push(
          fate(message, {
            patientId,
            outcome: 'dead_lettered',
            errorCode: e.code,
            errorStage: e.stage,
            observationCount: 0,
          }),
        );
      }
    }

    if (envelopes.length > 0) {
      // jobId = ingest job id: a retried ingest job does not enqueue its batch twice.
      await deps.fhirQueue.add(
        'batch',
        { traceId, subjects: [...subjects.values()], observations: envelopes, messages: pending },
        { jobId: `n-${job.id ?? traceId}` },
      );
    }
    await deadLetter(deps.deadLetterQueue, dead, deps.metrics);
    if (settled.length > 0) {
      await deps.analyticsQueue?.add(
        'messages',
        { traceId, committedAt: Date.now(), observations: [], messages: settled },
        { jobId: `m-${job.id ?? traceId}` },
      );
    }
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
