/**
 * The normalize stage (queue "ingest" → "fhir"). For each message of a batch:
 * the pure mapping core (message → readings → identity → Observations), each
 * reading attributed to the patient associated with its device at the
 * reading's own time (fhir/identity.ts, read once per job). Decides, per
 * message, and leaves the queue writes to the runner (runner.ts):
 *  - mapped → its Observations go into the batch's one "fhir" job, its outcome
 *    pending until they are written (or settled now when it produced none);
 *  - refused (its code) or an unexpected error (Internal: a bug, not retried)
 *    → a dead letter with the raw message, outcome dead_lettered;
 *  - a transient failure (a FHIR lookup, Redis) → the retry remainder.
 * Its neighbours go on in every case.
 */
import type { Config } from '../src/config.js';
import { PipelineError, toPipelineError } from '../src/errors.js';
import type { Logger } from '../src/logger.js';
import type { IdentityService } from '../src/fhir/identity.js';
import { normalizePolicy, normalizeMessage, type MappingSet } from '../src/mapping/index.js';
import type { Metrics } from '../src/metrics.js';
import {
  deadLetterKey,
  JOB_ID,
  QUEUE,
  type IngestJobData,
  type MessageOutcome,
  type ObservationEnvelope,
  type PatientRef,
  type TelemetryMessage,
} from '../src/queues.js';
import { messageSourceUri } from '../src/fhir/message-source.js';
import { messageOutcome, messagesDigest } from './analytics-handoff.js';
import type { DeadLetterInput } from './dead-letter.js';
import { hasRefusedReading } from './input-policy.js';
import { result, type Stage, type StageJob } from './stage.js';

export interface NormalizeDeps {
  readonly config: Config;
  /** Attribution: association history (Create) or the FHIR Device (Lookup modes). */
  readonly identity: IdentityService;
  readonly mappings: () => MappingSet;
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

/** A message that failed for good, as a dead letter and its outcome. */
function refused(
  job: StageJob<IngestJobData>,
  message: TelemetryMessage,
  error: PipelineError,
  templateVersion: string,
): { dead: DeadLetterInput; outcome: MessageOutcome } {
  return {
    dead: {
      traceId: job.data.traceId,
      error,
      deviceId: message.deviceId,
      message,
      key: deadLetterKey('normalize', job.id, message.id),
    },
    outcome: messageOutcome(
      message,
      {
        patientId: '',
        outcome: 'dead_lettered',
        errorCode: error.code,
        errorStage: error.stage,
        observationCount: 0,
        templateVersion,
      },
      Date.now(),
    ),
  };
}

export function createNormalizeStage(deps: NormalizeDeps): Stage<IngestJobData> {
  // Input limits, device times, plausibility, daily-window zone: the pure path's policy.
  const policy = normalizePolicy(deps.config);
  return {
    name: 'normalize',
    queue: QUEUE.ingest,

    wholeJobFailure(job, error) {
      const version = deps.mappings().version;
      const all = job.data.messages.map((m) => refused(job, m, error, version));
      return result({ deadLetters: all.map((a) => a.dead), outcomes: all.map((a) => a.outcome) });
    },

    async run(job) {
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
      const again: TelemetryMessage[] = [];
      let transient: PipelineError | undefined;
      const fate = (
        message: TelemetryMessage,
        fields: Omit<MessageOutcome, 'message' | 'decidedAt' | 'templateVersion'>,
      ) => messageOutcome(message, { ...fields, templateVersion: mappings.version }, Date.now());

      for (const message of messages) {
        let patientId = '';
        try {
          if (message.encoding !== 'utf8')
            throw new PipelineError('InvalidPayload', 'the payload is not UTF-8 text');
          const who = await identity.forMessage(message.deviceId);
          const mapped = await normalizeMessage(mappings, {
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
          patientId = patientOfMessage(mapped.observations);
          for (const f of mapped.implausible)
            deps.metrics?.readingsImplausible.inc({ type: f.type, code: f.code });
          for (const o of mapped.observations)
            if (hasRefusedReading(o.observation)) deps.metrics?.readingsAbsent.inc();
          for (const m of mapped.measurements) deps.metrics?.measurements.inc({ type: m.type });
          for (const o of mapped.observations) {
            envelopes.push({
              // FHIR R4 Meta.source: the message this version comes from (message-source.ts).
              observation: {
                ...o.observation,
                meta: {
                  ...o.observation.meta,
                  source: messageSourceUri({
                    messageId: message.id,
                    receivedAt: message.receivedAt,
                  }),
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
          for (const template of new Set(mapped.matchedTemplates))
            deps.metrics?.templateMessages.inc({
              template,
              version: mappings.version,
              outcome: 'matched',
            });
          const observationCount = mapped.observations.length;
          (observationCount > 0 ? pending : settled).push(
            fate(message, { patientId, outcome: 'processed', observationCount }),
          );
        } catch (err) {
          const e = toPipelineError(err);
          if (e.retryable) {
            // A FHIR lookup or Redis failed for this message: it alone is tried again.
            transient ??= e;
            again.push(message);
            continue;
          }
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
          const r = refused(job, message, e, mappings.version);
          dead.push(r.dead);
          settled.push({ ...r.outcome, patientId });
        }
      }

      log.debug(
        {
          event: 'normalized',
          messages: messages.length,
          observations: envelopes.length,
          dead: dead.length,
          retrying: again.length,
        },
        'batch normalized',
      );
      return result({
        next:
          envelopes.length > 0
            ? [
                {
                  queue: 'fhir',
                  name: 'batch',
                  // Named by the messages it carries: the same job, retried, adds it once.
                  jobId: JOB_ID.fhirOf(job.id, messagesDigest(pending).slice(2) || 'none'),
                  data: {
                    traceId,
                    patients: [...patients.values()],
                    devices: [...devices],
                    observations: envelopes,
                    messages: pending,
                  },
                },
              ]
            : [],
        deadLetters: dead,
        outcomes: settled,
        ...(transient
          ? { retry: { data: { ...job.data, messages: again }, error: transient } }
          : {}),
      });
    },
  };
}
