/**
 * Normalize worker (queue "ingest" → "fhir"). For each message of a batch: the
 * pure mapping core (message → readings → identity → Observations), each
 * reading attributed to the patient associated with its device at the
 * reading's own time (fhir/identity.ts, read once per job), then one "fhir" job
 * for the whole batch. A message that cannot be mapped or attributed is
 * dead-lettered with its code; its neighbours go on.
 */
import type { Job, Queue } from 'bullmq';
import type { Config } from '../src/config.js';
import { PipelineError, toPipelineError } from '../src/errors.js';
import type { Logger } from '../src/logger.js';
import type { IdentityService } from '../src/fhir/identity.js';
import { normalizeMessage, normalizePolicy, type MappingSet } from '../src/mapping/index.js';
import type { Metrics } from '../src/metrics.js';
import type {
  AnalyticsJobData,
  DeadLetterJobData,
  FhirJobData,
  IngestJobData,
  MessageOutcome,
  ObservationEnvelope,
  PatientRef,
} from '../src/queues.js';
import { messageSourceUri } from '../src/fhir/message-source.js';
import { messageOutcome } from './analytics-handoff.js';
import { deadLetter, type DeadLetterInput } from './dead-letter.js';
import { hasRefusedReading } from './input-policy.js';

export interface NormalizeDeps {
  readonly config: Config;
  /** Attribution: association history (Create) or the FHIR Device (Lookup modes). */
  readonly identity: IdentityService;
  readonly mappings: () => MappingSet;
  readonly fhirQueue: Queue<FhirJobData>;
  readonly deadLetterQueue: Queue<DeadLetterJobData>;
  /** device_messages: the fates of messages settled here (absent: not recorded). */
  readonly analyticsQueue?: Queue<AnalyticsJobData>;
  readonly log: Logger;
  readonly metrics?: Metrics;
}

/** The one patient of a message's Observations ('' when none, or several). */
function patientOfMessage(
  observations: readonly { observation: { subject?: { reference?: string } } }[],
): string {
  const ids = new Set(observations.map((o) => o.observation.subject?.reference ?? ''));
  const [only] = ids;
  return ids.size === 1 && only ? only.replace(/^Patient\//, '') : '';
}

export function createNormalizeProcessor(
  deps: NormalizeDeps,
): (job: Job<IngestJobData>) => Promise<void> {
  // Input limits, device times, plausibility, daily-window zone: the pure path's policy.
  const policy = normalizePolicy(deps.config);
  return async function process(job) {
    const { traceId, messages } = job.data;
    const log = deps.log.child({ traceId, jobId: job.id });
    const mappings = deps.mappings();
    // The association histories as they are now, once for the whole job.
    const identity = await deps.identity.forJob(messages.map((m) => m.deviceId));
    const envelopes: ObservationEnvelope[] = [];
    const patients = new Map<string, PatientRef>();
    const devices = new Set<string>();
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
        const who = await identity.forMessage(message.deviceId);
        const result = await normalizeMessage(mappings, {
          payload: message.payload,
          meta: {
            deviceId: message.deviceId,
            topic: message.topic,
            receivedAt: message.receivedAt,
          },
          patientId: undefined,
          identifierSystem: deps.config.fhir.identifierSystem,
          resolveIdentity: who.resolve,
          // JSON shape, device times (before attribution) and values: input-policy.ts.
          policy,
        });
        patientId = patientOfMessage(result.observations);
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
              ...(o.deviceId !== message.deviceId ? { readingDeviceId: o.deviceId } : {}),
              ...(o.gatewayId !== undefined ? { gatewayId: o.gatewayId } : {}),
            },
            ...(o.merge ? { merge: true } : {}),
          });
        }
        for (const p of who.patients()) patients.set(p.id, p);
        for (const d of who.devices()) devices.add(d);
        deps.metrics?.messagesNormalized.inc();
        for (const template of new Set(result.matchedTemplates))
          deps.metrics?.templateMessages.inc({
            template,
            version: mappings.version,
            outcome: 'matched',
          });
        const observationCount = result.observations.length;
        (observationCount > 0 ? pending : settled).push(
          fate(message, { patientId, outcome: 'processed', observationCount }),
        );
      } catch (err) {
        const e = toPipelineError(err);
        if (e.retryable) throw e; // e.g. Redis unreachable: the whole batch retries
        const unmatched = e.code === 'TemplateNotMatched';
        deps.metrics?.templateMessages.inc({
          template: typeof e.details.template === 'string' ? e.details.template : '(none)',
          version: mappings.version,
          outcome: unmatched ? 'unmatched' : 'dead_lettered',
        });
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
        {
          traceId,
          patients: [...patients.values()],
          devices: [...devices],
          observations: envelopes,
          messages: pending,
        },
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
