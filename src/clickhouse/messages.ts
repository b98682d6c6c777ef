/**
 * Message outcome → `device_messages` row (the raw message's audit trail). PURE.
 * Field names are the column names (JSONEachRow).
 */
import { deviceResourceId } from '../mapping/identity.js';
import type { MessageOutcome } from '../queues.js';
import { toClickHouseDateTime } from './time.js';

export interface DeviceMessageRow {
  readonly message_id: string;
  /** The FHIR Device id, as in observations.device_id (the join key). */
  readonly device_id: string;
  /** The authenticated MQTT username. */
  readonly mqtt_device_id: string;
  readonly patient_id: string;
  readonly topic: string;
  readonly qos: number;
  readonly received_at: string;
  readonly size_bytes: number;
  readonly encoding: string;
  /** As received: UTF-8 text, or base64 when encoding is 'base64'. */
  readonly payload: string;
  readonly outcome: string;
  readonly error_code: string;
  readonly error_stage: string;
  readonly observation_count: number;
  readonly template_version: string;
  readonly outcome_at: string;
}

export function deviceMessageRow(o: MessageOutcome): DeviceMessageRow {
  const m = o.message;
  return {
    message_id: m.id,
    device_id: deviceResourceId(m.deviceId),
    mqtt_device_id: m.deviceId,
    patient_id: o.patientId,
    topic: m.topic,
    qos: m.qos,
    received_at: toClickHouseDateTime(m.receivedAt),
    size_bytes: Buffer.byteLength(m.payload, m.encoding === 'base64' ? 'base64' : 'utf8'),
    encoding: m.encoding,
    payload: m.payload,
    outcome: o.outcome,
    error_code: o.errorCode ?? '',
    error_stage: o.errorStage ?? '',
    observation_count: o.observationCount,
    template_version: o.templateVersion,
    outcome_at: toClickHouseDateTime(o.decidedAt),
  };
}
