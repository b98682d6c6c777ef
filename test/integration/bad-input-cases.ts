/**
 * Malformed and hostile inputs, each with the one outcome the pipeline owes it:
 * refused at the broker (connection closed, nothing queued, a log line and a
 * counter with the reason) or dead-lettered at the normalize stage with its
 * code and the raw payload kept. Used by bad-input.test.ts.
 */

export type Outcome =
  | { readonly refused: string }
  | { readonly deadLetter: string; readonly reason?: RegExp }
  /** Recorded, not lost: an Observation whose value is replaced by dataAbsentReason with this code. */
  | { readonly recordedAbsent: string; readonly reason: RegExp }
  | { readonly processed: true }
  /** The broker ends the session at once: nothing more from it is accepted. */
  | { readonly sessionEnded: true };

export interface BadInput {
  readonly name: string;
  /** The payload, or a function of the device (to name it or another one). */
  readonly payload: string | Buffer | ((ctx: CaseContext) => string | Buffer);
  /** Topic under which it is published; the device's own telemetry topic by default. */
  readonly topic?: (ctx: CaseContext) => string;
  readonly qos?: 0 | 1;
  readonly outcome: Outcome;
  /** Done after connecting and before publishing (e.g. remove the device). */
  readonly before?: 'remove-device';
}

export interface CaseContext {
  readonly deviceId: string;
  readonly patientId: string;
  readonly otherDeviceId: string;
  readonly otherPatientId: string;
  /** A device timestamp a minute before now, ISO 8601 UTC. */
  readonly now: string;
}

const KiB = 1024;
const reading = (ctx: CaseContext, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ timestamp: ctx.now, heartRate: 71, ...extra });

export const BAD_INPUTS: readonly BadInput[] = [
  // Refused at the broker.
  {
    name: 'a payload just over the 256 KiB default limit',
    payload: (ctx) => reading(ctx, { pad: 'x'.repeat(256 * KiB) }),
    outcome: { refused: 'payload-too-large' },
  },
  {
    name: 'a 5 MiB packet, closed before it is buffered',
    payload: (ctx) => reading(ctx, { pad: 'x'.repeat(5 * 1024 * KiB) }),
    outcome: { refused: 'packet-too-large' },
  },
  {
    name: "another device's telemetry topic",
    topic: (ctx) => `devices/${ctx.otherDeviceId}/telemetry`,
    payload: (ctx) => reading(ctx),
    outcome: { refused: 'other-device-topic' },
  },
  {
    name: 'an unknown topic under the device',
    topic: (ctx) => `devices/${ctx.deviceId}/firmware`,
    payload: (ctx) => reading(ctx),
    outcome: { refused: 'topic-not-allowed' },
  },
  {
    name: 'a topic outside devices/',
    topic: () => 'hospital/ward-3/alarms',
    payload: (ctx) => reading(ctx),
    outcome: { refused: 'topic-not-allowed' },
  },
  {
    name: 'a wildcard in a PUBLISH topic (MQTT-3.3.2-2)',
    topic: (ctx) => `devices/${ctx.deviceId}/+`,
    payload: (ctx) => reading(ctx),
    outcome: { refused: '+ is not allowed in PUBLISH' },
  },

  // Dead-lettered: not JSON, not text, not an object.
  {
    name: 'malformed JSON (truncated)',
    payload: (ctx) => reading(ctx).slice(0, -1),
    outcome: { deadLetter: 'InvalidPayload', reason: /not valid JSON/ },
  },
  {
    name: 'NaN as a JSON literal',
    payload: (ctx) => `{"timestamp":"${ctx.now}","heartRate":NaN}`,
    outcome: { deadLetter: 'InvalidPayload', reason: /not valid JSON/ },
  },
  {
    name: 'Infinity as a JSON literal',
    payload: (ctx) => `{"timestamp":"${ctx.now}","heartRate":Infinity}`,
    outcome: { deadLetter: 'InvalidPayload', reason: /not valid JSON/ },
  },
  {
    name: 'an empty payload',
    payload: '',
    outcome: { deadLetter: 'InvalidPayload', reason: /not valid JSON/ },
  },
  {
    name: 'a bare JSON number',
    payload: '42',
    outcome: { deadLetter: 'InvalidPayload', reason: /object or array/ },
  },
  {
    name: 'a bare JSON string',
    payload: '"heartRate 72"',
    outcome: { deadLetter: 'InvalidPayload', reason: /object or array/ },
  },
  {
    name: 'JSON null',
    payload: 'null',
    outcome: { deadLetter: 'InvalidPayload', reason: /object or array/ },
  },
  {
    name: 'binary bytes',
    payload: Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x81, 0xc3, 0x28, 0x9f, 0x00, 0x10]),
    outcome: { deadLetter: 'InvalidPayload', reason: /not UTF-8/ },
  },
  {
    name: 'Latin-1 text that is not UTF-8',
    payload: (ctx) => Buffer.from(reading(ctx, { note: 'caf\u00e9' }), 'latin1'),
    outcome: { deadLetter: 'InvalidPayload', reason: /not UTF-8/ },
  },
  {
    name: 'a UTF-8 byte order mark before the JSON (RFC 8259 §8.1)',
    payload: (ctx) => `\ufeff${reading(ctx)}`,
    outcome: { deadLetter: 'InvalidPayload', reason: /not valid JSON/ },
  },
  {
    name: 'a member named twice (JSON.parse would keep the last one silently)',
    payload: (ctx) => `{"timestamp":"${ctx.now}","heartRate":71,"heartRate":171}`,
    outcome: { deadLetter: 'InvalidPayload', reason: /names the same object member twice/ },
  },
  {
    name: 'arrays nested 20 000 deep',
    payload: `${'['.repeat(20_000)}${']'.repeat(20_000)}`,
    outcome: { deadLetter: 'InvalidPayload', reason: /deeper than 32 levels/ },
  },
  {
    name: 'objects nested 40 deep beside a valid reading',
    payload: (ctx) => reading(ctx, { x: JSON.parse(`${'{"a":'.repeat(40)}1${'}'.repeat(40)}`) }),
    outcome: { deadLetter: 'InvalidPayload', reason: /deeper than 32 levels/ },
  },
  {
    name: 'an array of 20 000 readings',
    payload: (ctx) => reading(ctx, { samples: Array.from({ length: 20_000 }, () => 7) }),
    outcome: { deadLetter: 'InvalidPayload', reason: /more than 10000 elements/ },
  },

  // Recorded with dataAbsentReason "error" (FHIR R4 Observation.dataAbsentReason):
  // an unusable reading is kept and marked, as a meter's "HI" would be.
  {
    name: '1e999, which JSON parses as Infinity',
    payload: (ctx) => `{"timestamp":"${ctx.now}","heartRate":1e999}`,
    outcome: { recordedAbsent: 'error', reason: /not a finite number/ },
  },
  {
    name: 'a word where a number belongs',
    payload: (ctx) => reading(ctx, { heartRate: 'fast' }),
    outcome: { recordedAbsent: 'error', reason: /not a finite number/ },
  },
  {
    name: 'a boolean where a number belongs',
    payload: (ctx) => reading(ctx, { heartRate: true }),
    outcome: { recordedAbsent: 'error', reason: /not a finite number/ },
  },
  // Dead-lettered: values.
  {
    name: 'null for a required value',
    payload: (ctx) => reading(ctx, { heartRate: null }),
    outcome: { deadLetter: 'RequiredValueMissing', reason: /required value "hr"/ },
  },
  {
    name: 'two numbers for one value',
    payload: (ctx) => reading(ctx, { heartRate: [70, 71] }),
    outcome: { deadLetter: 'RequiredValueMissing', reason: /required value "hr"/ },
  },
  {
    name: 'an object for a value',
    payload: (ctx) => reading(ctx, { heartRate: { bpm: 70 } }),
    outcome: { deadLetter: 'RequiredValueMissing', reason: /required value "hr"/ },
  },

  // Dead-lettered: time.
  {
    name: 'no timestamp',
    payload: JSON.stringify({ heartRate: 70 }),
    outcome: { deadLetter: 'InvalidTimestamp' },
  },
  {
    name: 'an unparseable timestamp',
    payload: JSON.stringify({ timestamp: 'yesterday at noon', heartRate: 70 }),
    outcome: { deadLetter: 'InvalidTimestamp' },
  },
  {
    name: 'a timestamp without a time zone',
    payload: JSON.stringify({ timestamp: '2026-11-26T08:30:00', heartRate: 70 }),
    outcome: { deadLetter: 'InvalidTimestamp' },
  },
  {
    name: 'a timestamp in the year 2100',
    payload: JSON.stringify({ timestamp: '2100-01-01T00:00:00Z', heartRate: 70 }),
    outcome: { deadLetter: 'TimestampOutOfRange', reason: /after receipt/ },
  },
  {
    name: 'a timestamp in 1990',
    payload: JSON.stringify({ timestamp: '1990-01-01T00:00:00Z', heartRate: 70 }),
    outcome: { deadLetter: 'TimestampOutOfRange', reason: /before receipt/ },
  },
  {
    name: 'epoch seconds where epoch milliseconds belong',
    payload: () => JSON.stringify({ timestamp: Math.floor(Date.now() / 1000), heartRate: 70 }),
    outcome: { deadLetter: 'TimestampOutOfRange', reason: /before receipt/ },
  },

  // Dead-lettered: meaning and identity.
  {
    name: 'no field any template knows',
    payload: (ctx) => JSON.stringify({ timestamp: ctx.now, glucose: 5.4 }),
    outcome: { deadLetter: 'TemplateNotMatched' },
  },
  {
    name: 'a payload naming another device',
    payload: (ctx) => reading(ctx, { deviceId: ctx.otherDeviceId }),
    outcome: { deadLetter: 'DeviceSpoofing', reason: /another device/ },
  },
  {
    name: 'a payload naming another patient',
    payload: (ctx) => reading(ctx, { patientId: ctx.otherPatientId }),
    outcome: { deadLetter: 'DeviceSpoofing', reason: /not associated with/ },
  },
  {
    name: 'a device removed from the registry while connected',
    before: 'remove-device',
    payload: (ctx) => reading(ctx),
    outcome: { sessionEnded: true },
  },
  {
    name: 'malformed JSON at QoS 0 (best effort, still dead-lettered)',
    qos: 0,
    payload: '{"heartRate": 72,,}',
    outcome: { deadLetter: 'InvalidPayload', reason: /not valid JSON/ },
  },

  // Hostile but valid: processed normally.
  {
    name: 'a __proto__ key beside a valid reading (no prototype pollution)',
    payload: (ctx) =>
      `{"timestamp":"${ctx.now}","heartRate":71,"__proto__":{"polluted":true,"heartRate":1}}`,
    outcome: { processed: true },
  },
  {
    name: 'a 200 KiB string beside a valid reading (under the limit)',
    payload: (ctx) => reading(ctx, { note: 'y'.repeat(200 * KiB) }),
    outcome: { processed: true },
  },
];
