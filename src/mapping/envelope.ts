/**
 * MedTech's event envelope {Body, Properties, SystemProperties} for an MQTT
 * message. Pure. MQTT 3.1.1 carries no application properties, so where they
 * come from is a setting (MEDTECH_ENVELOPE, docs/configuration.md):
 *
 *  - `none` (default): Body is the payload, Properties is empty;
 *  - `topic:<pattern>`: Properties from named topic segments — the pattern's
 *    levels are `+` (any), `{name}` (that level is Properties.name) or literal
 *    text, e.g. `topic:devices/+/telemetry/{patientId}`;
 *  - `field:<name>`: the payload is an object whose member `<name>` holds the
 *    properties (an object of strings); Body is the payload without it;
 *  - `eventhub`: the payload is an Event Hubs / IoT Hub event as a bridge
 *    forwards it, {Body, Properties, SystemProperties}: all three are read from
 *    it, so a template sees `iothub-creation-time-utc` and
 *    `iothub-connection-device-id` as MedTech did.
 *
 * SystemProperties always hold the broker's own facts under IoT Hub's names:
 * `iothub-connection-device-id` (the authenticated device), `iothub-enqueuedtime`
 * (the receipt time) and `mqtt-topic`. A bridged event's SystemProperties replace
 * the first two — the device it names is then a claim of the payload, checked as
 * any other (a gateway link), never trusted.
 */
import { PipelineError } from '../errors.js';
import type { MessageMeta } from './types.js';

export type EnvelopePolicy =
  | { readonly source: 'none' }
  | { readonly source: 'topic'; readonly pattern: readonly string[] }
  | { readonly source: 'field'; readonly field: string }
  | { readonly source: 'eventhub' };

export const NO_ENVELOPE: EnvelopePolicy = { source: 'none' };

/** The MEDTECH_ENVELOPE setting → a policy; throws with what was expected. */
export function parseEnvelopePolicy(raw: string): EnvelopePolicy {
  const v = raw.trim();
  if (v === '' || v === 'none') return NO_ENVELOPE;
  if (v === 'eventhub') return { source: 'eventhub' };
  if (v.startsWith('field:') && v.length > 'field:'.length) {
    return { source: 'field', field: v.slice('field:'.length) };
  }
  if (v.startsWith('topic:')) {
    const pattern = v.slice('topic:'.length).split('/');
    const names = pattern.filter((l) => /^\{[^{}/]+\}$/.test(l));
    const bad = pattern.filter(
      (l) => l === '' || l === '#' || (/[{}+]/.test(l) && l !== '+' && !/^\{[^{}/]+\}$/.test(l)),
    );
    if (names.length > 0 && bad.length === 0) return { source: 'topic', pattern };
  }
  throw new Error(
    `expected none, eventhub, field:<member> or topic:<pattern> with at least one {name} level (e.g. topic:devices/+/telemetry/{patientId}), got "${raw}"`,
  );
}

export interface MessageEnvelope {
  /** What the templates call Body (and JsonataContent reads as the message). */
  readonly body: unknown;
  readonly properties: Readonly<Record<string, unknown>>;
  readonly systemProperties: Readonly<Record<string, unknown>>;
  /** The event came from a bridge: its device id is a claim, not the connection. */
  readonly bridged: boolean;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function ownSystemProperties(meta: MessageMeta): Record<string, unknown> {
  return {
    'iothub-connection-device-id': meta.deviceId,
    'iothub-enqueuedtime': new Date(meta.receivedAt).toISOString(),
    'mqtt-topic': meta.topic,
  };
}

function topicProperties(pattern: readonly string[], topic: string): Record<string, string> {
  const levels = topic.split('/');
  if (levels.length !== pattern.length) return {};
  const out: Record<string, string> = {};
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i]!;
    const l = levels[i]!;
    if (p.startsWith('{')) out[p.slice(1, -1)] = l;
    else if (p !== '+' && p !== l) return {};
  }
  return out;
}

/** The parsed payload and the message's metadata → the envelope, per the policy. */
export function messageEnvelope(
  payload: unknown,
  meta: MessageMeta,
  policy: EnvelopePolicy = NO_ENVELOPE,
): MessageEnvelope {
  const own = ownSystemProperties(meta);
  switch (policy.source) {
    case 'none':
      return { body: payload, properties: {}, systemProperties: own, bridged: false };
    case 'topic':
      return {
        body: payload,
        properties: topicProperties(policy.pattern, meta.topic),
        systemProperties: own,
        bridged: false,
      };
    case 'field': {
      if (!isObject(payload)) {
        throw new PipelineError(
          'InvalidPayload',
          `the payload must be an object carrying its properties in "${policy.field}" (MEDTECH_ENVELOPE)`,
        );
      }
      const { [policy.field]: props, ...body } = payload;
      if (props !== undefined && !isObject(props)) {
        throw new PipelineError(
          'InvalidPayload',
          `the payload's "${policy.field}" must be an object of properties (MEDTECH_ENVELOPE)`,
        );
      }
      return { body, properties: props ?? {}, systemProperties: own, bridged: false };
    }
    case 'eventhub': {
      const props = isObject(payload) ? payload.Properties : undefined;
      const system = isObject(payload) ? payload.SystemProperties : undefined;
      if (
        !isObject(payload) ||
        !('Body' in payload) ||
        (props !== undefined && !isObject(props)) ||
        (system !== undefined && !isObject(system))
      ) {
        throw new PipelineError(
          'InvalidPayload',
          'the payload must be an Event Hubs event {Body, Properties, SystemProperties} (MEDTECH_ENVELOPE=eventhub)',
        );
      }
      // The bridged device id replaces ours; when the event names none there is none
      // (the bridge's own identity is not the device's).
      const { 'iothub-connection-device-id': _ours, ...rest } = own;
      void _ours;
      return {
        body: payload.Body,
        properties: props ?? {},
        systemProperties: { ...rest, ...(system ?? {}), 'mqtt-topic': meta.topic },
        bridged: true,
      };
    }
  }
}
