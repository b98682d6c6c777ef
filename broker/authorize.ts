/**
 * PUBLISH and SUBSCRIBE authorization: a device may publish only to its own
 * telemetry topic and subscribe only under its own topic tree. Refusing a
 * PUBLISH closes the connection (MQTT-3.3.5-2: 3.1.1 has no negative ack).
 */
import type { AedesOptions, Client, PublishPacket } from 'aedes';
import type { Logger } from '../src/logger.js';
import { deviceOf } from './authenticate.js';

type AuthorizeSubscribeHandler = NonNullable<AedesOptions['authorizeSubscribe']>;

export const TELEMETRY_TOPIC = /^devices\/([^/]+)\/telemetry$/;

export function telemetryTopic(deviceId: string): string {
  return `devices/${deviceId}/telemetry`;
}

export type PublishVerdict =
  | { readonly ok: true; readonly deviceId: string }
  | { readonly ok: false; readonly reason: string; readonly deviceId: string | null };

export function checkPublish(
  client: Client | null,
  packet: PublishPacket,
  maxPayloadBytes: number,
): PublishVerdict {
  const device = deviceOf(client);
  if (!device) return { ok: false, reason: 'not-authenticated', deviceId: null };
  if (packet.topic !== telemetryTopic(device.deviceId)) {
    return {
      ok: false,
      reason: TELEMETRY_TOPIC.test(packet.topic) ? 'other-device-topic' : 'topic-not-allowed',
      deviceId: device.deviceId,
    };
  }
  const size =
    typeof packet.payload === 'string' ? Buffer.byteLength(packet.payload) : packet.payload.length;
  if (size > maxPayloadBytes)
    return { ok: false, reason: 'payload-too-large', deviceId: device.deviceId };
  return { ok: true, deviceId: device.deviceId };
}

export function createAuthorizeSubscribe(log: Logger): AuthorizeSubscribeHandler {
  return (client, sub, done) => {
    const device = deviceOf(client);
    if (
      device &&
      (sub.topic === `devices/${device.deviceId}` ||
        sub.topic.startsWith(`devices/${device.deviceId}/`))
    ) {
      done(null, sub);
      return;
    }
    log.warn(
      {
        event: 'subscribe-refused',
        deviceId: device?.deviceId ?? null,
        reason: 'topic-not-allowed',
      },
      'subscribe refused',
    );
    done(new Error('subscription not allowed'), null);
  };
}
