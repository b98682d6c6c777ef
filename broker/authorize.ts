/**
 * What an authenticated device may do after CONNECT.
 *  - PUBLISH only to its own telemetry topic, within the size limit. Refusing a
 *    PUBLISH closes the connection (MQTT-3.3.5-2: 3.1.1 has no negative ack).
 *    A retain flag is ignored: the message is ingested like any other and never
 *    kept (session-store.ts keeps no retained messages).
 *  - SUBSCRIBE only under its own topic tree, never to telemetry (a telemetry
 *    topic is the pipeline's input, not a delivery channel: a filter that could
 *    match `devices/{id}/telemetry` is refused, wildcards in its place
 *    included), and at most MQTT_SESSION_MAX_SUBSCRIPTIONS filters per session.
 *    A refused filter is answered 0x80 in its SUBACK slot (MQTT-3.9.3); the
 *    connection stays up and the other filters of the packet are granted.
 *  - Telemetry is never forwarded to any subscriber (authorizeForward).
 */
import type { AedesOptions, Client, PublishPacket } from 'aedes';
import type { Logger } from '../src/logger.js';
import type { Metrics } from '../src/metrics.js';
import { deviceOf } from './authenticate.js';

type AuthorizeSubscribeHandler = NonNullable<AedesOptions['authorizeSubscribe']>;
type AuthorizeForwardHandler = NonNullable<AedesOptions['authorizeForward']>;

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

export type SubscribeRefusal = 'not-authenticated' | 'topic-not-allowed' | 'telemetry-topic';

/**
 * Why `deviceId` may not subscribe to `filter`, or undefined when it may: the
 * filter must be `devices/{deviceId}/{name}[/…]` where `name` is a literal other
 * than `telemetry` (`+` or `#` there could match the telemetry topic; `#` also
 * matches its parent level, so `devices/{id}/#` would too).
 */
export function subscribeRefusal(
  deviceId: string | undefined,
  filter: string,
): SubscribeRefusal | undefined {
  if (deviceId === undefined) return 'not-authenticated';
  const [root, id, name] = filter.split('/');
  if (root !== 'devices' || id !== deviceId || name === undefined) return 'topic-not-allowed';
  if (name === 'telemetry' || name === '+' || name === '#') return 'telemetry-topic';
  return undefined;
}

export interface AuthorizeSubscribeOptions {
  readonly maxSubscriptions: number;
  readonly log: Logger;
  readonly metrics?: Metrics;
}

/** Filters granted per connection, to hold MQTT_SESSION_MAX_SUBSCRIPTIONS (see `forgetSubscriptions`). */
const granted = new WeakMap<Client, Set<string>>();

/** aedes 'unsubscribe' event: those filters no longer count. */
export function forgetSubscriptions(client: Client, filters: readonly string[]): void {
  const mine = granted.get(client);
  for (const f of filters) mine?.delete(f);
}

export function createAuthorizeSubscribe(
  options: AuthorizeSubscribeOptions,
): AuthorizeSubscribeHandler {
  const { log, metrics, maxSubscriptions } = options;
  return (client, sub, done) => {
    const device = deviceOf(client);
    const mine = granted.get(client) ?? new Set<string>();
    let reason: SubscribeRefusal | 'too-many-subscriptions' | undefined = subscribeRefusal(
      device?.deviceId,
      sub.topic,
    );
    if (!reason && !mine.has(sub.topic) && mine.size >= maxSubscriptions)
      reason = 'too-many-subscriptions';
    if (!reason) {
      mine.add(sub.topic);
      granted.set(client, mine);
      done(null, sub);
      return;
    }
    metrics?.subscriptionsRefused.inc({ reason });
    log.warn(
      {
        event: 'subscribe-refused',
        code: 'TopicNotAllowed',
        deviceId: device?.deviceId ?? null,
        reason,
        topic: sub.topic,
      },
      'subscribe refused (SUBACK 0x80)',
    );
    // No error: aedes answers 0x80 for this filter (MQTT-3.9.3) and keeps the connection.
    done(null, null);
  };
}

/** Telemetry goes to Redis only, never to a subscriber (however it subscribed). */
export const authorizeForward: AuthorizeForwardHandler = (_client, packet) =>
  TELEMETRY_TOPIC.test(packet.topic) ? null : packet;
