/**
 * The MQTT broker role: aedes with our hooks. Every connection first passes the
 * frame guard (no packet over the size limit is buffered), then a PUBLISH
 * meets, in order:
 *   1. authenticate      — address limit, client certificate, or username/secret
 *   2. checkPublish      — authenticated, own telemetry topic only, size limit
 *   3. throttle          — per-device token bucket: over the rate, the PUBACK waits
 *   4. backpressure      — backlog over the high-water mark: the PUBACK waits
 *   5. durable enqueue   — group commit into "ingest"; aedes sends the QoS 1
 *                          PUBACK only after this callback (MQTT-4.3.2-2 allows
 *                          us to hold it until the message is ours)
 *   and authorizeSubscribe — own topic tree only.
 * Stateless beside Redis: run more copies behind a TCP load balancer.
 */
import { isUtf8 } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { Aedes, type AedesOptions, type Client } from 'aedes';
import type { Redis } from 'ioredis';
import type { Config } from '../src/config.js';
import type { DeviceRegistry } from '../src/devices/registry.js';
import type { ErrorCode } from '../src/errors.js';
import type { Logger } from '../src/logger.js';
import type { Metrics } from '../src/metrics.js';
import type { TelemetryMessage } from '../src/queues.js';
import { createAuthenticate, deviceOf } from './authenticate.js';
import { checkPublish, createAuthorizeSubscribe } from './authorize.js';
import { Backpressure } from './backpressure.js';
import { guardFrames } from './frame-guard.js';
import { IngestBatcher, type JobSink } from './ingest-batcher.js';
import { startListeners, type Listener } from './listeners.js';
import { startRevocation, type RunningRevocation } from './revocation.js';
import { DeviceThrottle, FailedAuthLimiter } from './rate-limits.js';

export { IngestBatcher } from './ingest-batcher.js';
export { telemetryTopic } from './authorize.js';

export interface BrokerOptions {
  readonly config: Config;
  readonly registry: DeviceRegistry;
  /** The "ingest" queue (or anything that stores a job durably). */
  readonly ingest: JobSink;
  /** Reads the backlog for backpressure (jobs); without it the broker never pauses. */
  readonly backlog?: () => Promise<number>;
  readonly log: Logger;
  readonly metrics?: Metrics;
  /**
   * A Redis connection for SUBSCRIBE: re-keyed, unassigned or removed devices'
   * sessions end at once (revocation.ts). Absent: only at their next CONNECT.
   */
  readonly revocationSubscriber?: Redis;
}

export interface RunningBroker {
  /** The MQTT TCP port. */
  readonly port: number;
  readonly tlsPort: number | undefined;
  readonly wsPort: number | undefined;
  readonly aedes: Aedes;
  readonly backpressure: Backpressure | undefined;
  close(): Promise<void>;
}

/** The taxonomy code of each PUBLISH refusal (docs/errors.md), by reason. */
const REFUSAL_CODE: Readonly<Record<string, ErrorCode>> = {
  'payload-too-large': 'PayloadTooLarge',
  'not-authenticated': 'NotAuthorized',
  'other-device-topic': 'TopicNotAllowed',
  'topic-not-allowed': 'TopicNotAllowed',
};

/** Room in a PUBLISH for the fixed header's rest: topic, packet id (MQTT 3.1.1 §3.3.2). */
const FRAME_OVERHEAD_BYTES = 1024;

export async function startBroker(options: BrokerOptions): Promise<RunningBroker> {
  const { config, registry, log, metrics } = options;
  const brokerId = randomBytes(4).toString('hex');
  let seq = 0;
  const batcher = new IngestBatcher({
    // Each stored job also counts toward the backlog until the next poll.
    sink: {
      add: async (name, data) => {
        const job = await options.ingest.add(name, data);
        backpressure?.noteJobAdded();
        return job;
      },
    },
    maxMessages: config.mqtt.batchMaxMessages,
  });
  const throttle = new DeviceThrottle({
    ratePerSecond: config.mqtt.deviceMaxRate,
    burst: config.mqtt.deviceBurst,
  });
  const pruneTimer = setInterval(() => throttle.prune(Date.now()), 60_000).unref();
  const limiter = new FailedAuthLimiter({
    maxFailures: config.mqtt.authMaxFailures,
    windowMs: config.mqtt.authFailureWindowMs,
  });
  const backpressure = options.backlog
    ? new Backpressure({
        high: config.mqtt.backlogHigh,
        low: config.mqtt.backlogLow,
        pollMs: config.mqtt.backlogPollMs,
        backlog: options.backlog,
        log,
        ...(metrics ? { metrics } : {}),
      })
    : undefined;

  const authorizePublish: NonNullable<AedesOptions['authorizePublish']> = (
    client,
    packet,
    done,
  ) => {
    const verdict = checkPublish(client, packet, config.mqtt.maxPayloadBytes);
    if (!verdict.ok) {
      metrics?.messagesRefused.inc({ reason: verdict.reason });
      log.warn(
        {
          event: 'publish-refused',
          code: REFUSAL_CODE[verdict.reason] ?? 'TopicNotAllowed',
          deviceId: verdict.deviceId,
          reason: verdict.reason,
          topic: packet.topic,
        },
        'publish refused',
      );
      // MQTT 3.1.1 has no negative PUBACK: refusing closes the connection (MQTT-3.3.5-2).
      done(new Error(`publish refused: ${verdict.reason}`));
      return;
    }
    const payload =
      typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
    const utf8 = isUtf8(payload);
    const message: TelemetryMessage = {
      id: `${brokerId}-${(seq++).toString(36)}`,
      deviceId: verdict.deviceId,
      topic: packet.topic,
      qos: packet.qos,
      receivedAt: Date.now(),
      payload: payload.toString(utf8 ? 'utf8' : 'base64'),
      encoding: utf8 ? 'utf8' : 'base64',
    };
    // QoS 0 is best effort (no PUBACK to withhold) but counted like the rest.
    metrics?.messagesReceived.inc({ qos: String(packet.qos) });
    // The message id is the correlation id: dead letters, Observation.meta.source
    // and ClickHouse rows carry it too.
    log.debug(
      { event: 'received', messageId: message.id, deviceId: message.deviceId, qos: packet.qos },
      'message received',
    );
    admit(verdict.deviceId)
      .then(() => batcher.enqueue(message))
      .then(
        () => done(null),
        (err: unknown) => {
          // Not durable: no PUBACK; closing makes the device resend (QoS 1).
          log.error(
            { event: 'enqueue-failed', deviceId: verdict.deviceId, err },
            'could not enqueue message',
          );
          done(err as Error);
        },
      );
  };

  /** Steps 3 and 4: wait for the device's rate, then for the backlog. */
  async function admit(deviceId: string): Promise<void> {
    const wait = throttle.take(deviceId, Date.now());
    if (wait > 0) {
      metrics?.messagesThrottled.inc();
      await sleep(wait);
    }
    if (backpressure) await backpressure.admit();
  }

  const aedes = await Aedes.createBroker({
    id: `iomt-${brokerId}`,
    authenticate: createAuthenticate({ registry, limiter, log, ...(metrics ? { metrics } : {}) }),
    authorizePublish,
    authorizeSubscribe: createAuthorizeSubscribe(log),
  });
  aedes.on('clientDisconnect', (client) =>
    log.debug({ event: 'disconnected', clientId: client.id }, 'client disconnected'),
  );
  // Protocol violations aedes itself refuses (wildcards in a PUBLISH topic,
  // malformed packets, keepalive timeouts): the connection is closed.
  aedes.on('clientError', (client, err) =>
    log.warn(
      { event: 'client-error', deviceId: deviceOf(client)?.deviceId ?? null, reason: err.message },
      'connection closed on a protocol error',
    ),
  );

  const maxFrame = config.mqtt.maxPayloadBytes + FRAME_OVERHEAD_BYTES;
  const handle = (stream: Duplex, req?: IncomingMessage) => {
    guardFrames(stream, maxFrame, (violation) => {
      metrics?.messagesRefused.inc({ reason: violation });
      // aedes hangs its Client on the stream (lib/client.js: conn.client = this).
      const client = (stream as { client?: Client }).client ?? null;
      log.warn(
        {
          event: 'packet-refused',
          code: 'PayloadTooLarge',
          deviceId: deviceOf(client)?.deviceId ?? null,
          reason: violation,
          address:
            (stream as { remoteAddress?: string }).remoteAddress ?? req?.socket.remoteAddress,
          limit: maxFrame,
        },
        'packet refused before buffering',
      );
    });
    aedes.handle(stream, req);
  };
  let listeners: Listener[];
  try {
    listeners = await startListeners(config, handle, maxFrame, log, (reason, address) => {
      metrics?.connectionsRefused.inc({ reason: 'tls-handshake-failed' });
      log.warn(
        { event: 'connect-refused', reason: 'tls-handshake-failed', detail: reason, address },
        'TLS handshake refused',
      );
    });
  } catch (err) {
    clearInterval(pruneTimer);
    await new Promise<void>((resolve) => aedes.close(() => resolve()));
    throw err;
  }
  backpressure?.start();
  let revocation: RunningRevocation | undefined;
  if (options.revocationSubscriber) {
    revocation = await startRevocation({
      aedes,
      subscriber: options.revocationSubscriber,
      registry,
      prefix: config.redis.prefix,
      recheckMs: config.mqtt.sessionRecheckMs,
      log,
      ...(metrics ? { metrics } : {}),
    });
  }
  const portOf = (kind: Listener['kind']) => listeners.find((l) => l.kind === kind)?.port;

  return {
    port: portOf('tcp') ?? 0,
    tlsPort: portOf('tls'),
    wsPort: portOf('ws'),
    aedes,
    backpressure,
    async close() {
      // Stop accepting connections first, then let held and enqueued messages
      // reach Redis (their PUBACKs go out), then close client sessions.
      const closed = Promise.all(listeners.map((l) => l.close()));
      clearInterval(pruneTimer);
      await revocation?.close();
      backpressure?.stop();
      await batcher.drain();
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
      await closed;
    },
  };
}
