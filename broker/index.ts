/**
 * The MQTT broker role: aedes with our hooks. Every connection first passes
 * the PROXY header check when MQTT_PROXY_PROTOCOL asks for one (the client's
 * address behind a load balancer, proxy-protocol.ts), the socket gate (idle
 * sockets per address) and the frame guard (no packet over the size limit is
 * buffered); then
 *   CONNECT meets   preConnect    — protocol level (MQTT 5 refusals logged and counted)
 *                   authenticate  — budgets reserved first, then certificate or
 *                                   secret (bounded pool), then the client id
 *   PUBLISH meets   1. checkPublish  — authenticated, own telemetry topic only, size limit
 *                   2. throttle      — per-device token bucket: over the rate, the PUBACK waits
 *                   3. durable enqueue — group commit into "ingest", paced by
 *                      backpressure over the high-water mark; aedes sends the
 *                      QoS 1 PUBACK (QoS 2 PUBREC) only after this callback
 *                      (MQTT-4.3.2-2 lets us hold it until the message is ours)
 *   SUBSCRIBE meets authorizeSubscribe — own topic tree, never telemetry (SUBACK 0x80)
 * Sessions live in a bounded store (session-store.ts, client-ids.ts).
 * Stateless beside Redis: run more copies behind a TCP load balancer.
 */
import { isUtf8 } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { Aedes, type AedesOptions, type Client } from 'aedes';
import type { RedisConnection } from '../src/redis.js';
import {
  RateLimiterMemory,
  RateLimiterRedis,
  type RateLimiterAbstract,
} from 'rate-limiter-flexible';
import type { Config } from '../src/config.js';
import type { DeviceRegistry } from '../src/devices/registry.js';
import type { ErrorCode } from '../src/errors.js';
import type { Logger } from '../src/logger.js';
import type { Metrics } from '../src/metrics.js';
import type { Tracing } from '../src/observability/tracing.js';
import type { TelemetryMessage } from '../src/queues.js';
import { createAuthenticate, deviceOf, refusedAtConnect } from './authenticate.js';
import {
  authorizeForward,
  checkPublish,
  createAuthorizeSubscribe,
  forgetSubscriptions,
  subscribeRefusal,
} from './authorize.js';
import { Backpressure } from './backpressure.js';
import { ClientIds } from './client-ids.js';
import { ConnectBudgets } from './connect-budgets.js';
import { guardFrames } from './frame-guard.js';
import { IngestBatcher, type JobSink } from './ingest-batcher.js';
import { startListeners, type Listener } from './listeners.js';
import { FLOOD_LOG_INTERVAL_MS, LogOnce } from './log-once.js';
import { alreadyReported, createPreConnect, peerOf } from './pre-connect.js';
import { DeviceThrottle } from './rate-limits.js';
import { SecretCheckPool } from './secret-check-pool.js';
import { SessionStore } from './session-store.js';
import { startRevocation, type RunningRevocation } from './revocation.js';
import { peerOfSocket } from './proxy-protocol.js';
import { normalizeAddress, SocketGate } from './socket-gate.js';

export { IngestBatcher } from './ingest-batcher.js';
export { telemetryTopic } from './authorize.js';

export interface BrokerOptions {
  readonly config: Config;
  readonly registry: DeviceRegistry;
  /** The "ingest" queue (or anything that stores a job durably). */
  readonly ingest: JobSink;
  /** Reads the backlog for backpressure (jobs); without it the broker never meters. */
  readonly backlog?: () => Promise<number>;
  /**
   * Redis for the CONNECT budgets, shared by every broker; without it each
   * broker counts on its own (in memory).
   */
  readonly redis?: RedisConnection;
  readonly log: Logger;
  readonly metrics?: Metrics;
  /** A root span per ingest job (tracing on: src/observability/tracing.ts). */
  readonly tracing?: Tracing;
  /**
   * A Redis connection for SUBSCRIBE: re-keyed, unassigned or removed devices'
   * sessions end at once (revocation.ts). Absent: only at their next CONNECT.
   */
  readonly revocationSubscriber?: RedisConnection;
}

export interface RunningBroker {
  /** The MQTT TCP port. */
  readonly port: number;
  readonly tlsPort: number | undefined;
  readonly wsPort: number | undefined;
  readonly aedes: Aedes;
  readonly backpressure: Backpressure | undefined;
  /** The bounded session store (tests read what it holds). */
  readonly sessions: SessionStore;
  /** Sockets of `address` accepted and not yet authenticated. */
  idleSockets(address: string): number;
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

/** The CONNECT budgets' counters: in Redis when given, else in this process. */
function budgetLimiters(config: Config, redis: RedisConnection | undefined) {
  const m = config.mqtt;
  const make = (name: string, points: number, durationS: number): RateLimiterAbstract =>
    redis
      ? new RateLimiterRedis({
          storeClient: redis,
          keyPrefix: `${config.redis.prefix}:mqtt:${name}`,
          points,
          duration: durationS,
          // Redis down: the reads wait and retry like the registry's (ioredis
          // maxRetriesPerRequest), then the CONNECT is refused with CONNACK 3.
        })
      : new RateLimiterMemory({ keyPrefix: name, points, duration: durationS });
  return {
    addressFailures: make(
      'auth-failures',
      m.authMaxFailures,
      Math.max(1, Math.ceil(m.authFailureWindowMs / 1000)),
    ),
    deviceAttempts: make('device-connects', m.deviceConnectRate, 60),
  };
}

export async function startBroker(options: BrokerOptions): Promise<RunningBroker> {
  const { config, registry, log, metrics } = options;
  const m = config.mqtt;
  const brokerId = randomBytes(4).toString('hex');
  let seq = 0;

  const backpressure = options.backlog
    ? new Backpressure({
        high: m.backlogHigh,
        low: m.backlogLow,
        pollMs: m.backlogPollMs,
        maxWaitMs: m.backlogMaxWaitMs,
        backlog: options.backlog,
        log,
        ...(metrics ? { metrics } : {}),
        onOpen: () => batcher.kick(),
      })
    : undefined;
  const batcher: IngestBatcher = new IngestBatcher({
    // Each stored job also counts toward the backlog until the next poll.
    sink: {
      add: async (name, data) => {
        const job = await options.ingest.add(name, data);
        backpressure?.noteJobAdded();
        return job;
      },
    },
    maxMessages: m.batchMaxMessages,
    ...(backpressure ? { gate: backpressure } : {}),
    ...(options.tracing ? { tracing: options.tracing } : {}),
  });
  const throttle = new DeviceThrottle({ ratePerSecond: m.deviceMaxRate, burst: m.deviceBurst });

  const sessions = new SessionStore({
    maxQueued: m.sessionMaxQueued,
    maxQueuedBytes: m.sessionMaxQueuedBytes,
    allowSubscription: (client, topic) =>
      subscribeRefusal(deviceOf(client)?.deviceId, topic) === undefined,
    onNotQueued: () => metrics?.sessionMessagesNotQueued.inc(),
  });
  const clientIds = new ClientIds({
    maxPerDevice: m.maxSessionsPerDevice,
    expiryMs: m.sessionExpiryMs,
  });
  const dropSessions = (ids: readonly string[], why: 'evicted' | 'expired') => {
    for (const id of ids) {
      metrics?.sessionsDropped.inc({ reason: why });
      log.info(
        { event: 'session-dropped', clientId: id, reason: why },
        'persistent session deleted',
      );
      sessions
        .dropSession(id)
        .catch((err: unknown) =>
          log.warn(
            { event: 'session-drop-failed', clientId: id, err },
            'could not delete a session',
          ),
        );
    }
  };
  const timers = [
    setInterval(() => throttle.prune(Date.now()), 60_000).unref(),
    setInterval(
      () => dropSessions(clientIds.expire(Date.now()), 'expired'),
      Math.min(60_000, m.sessionExpiryMs),
    ).unref(),
  ];

  const socketLogged = new LogOnce();
  const gate = new SocketGate({
    maxIdlePerAddress: m.maxIdleSocketsPerAddress,
    onRefused: (address) => {
      metrics?.connectionsRefused.inc({ reason: 'too-many-idle-sockets' });
      if (!socketLogged.first(address)) return;
      log.warn(
        {
          event: 'connect-refused',
          code: 'RateLimited',
          reason: 'too-many-idle-sockets',
          address,
          limit: m.maxIdleSocketsPerAddress,
        },
        `socket closed: too many unauthenticated sockets from one address (logged once per ${FLOOD_LOG_INTERVAL_MS / 1000} s, counted always)`,
      );
    },
  });

  const authorizePublish: NonNullable<AedesOptions['authorizePublish']> = (
    client,
    packet,
    done,
  ) => {
    const verdict = checkPublish(client, packet, m.maxPayloadBytes);
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
    // Retained telemetry is ignored, not kept: the message is ingested like any other.
    if (packet.retain) packet.retain = false;
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
    throttled(verdict.deviceId)
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

  /** Step 2: wait for the device's rate. */
  async function throttled(deviceId: string): Promise<void> {
    const wait = throttle.take(deviceId, Date.now());
    if (wait > 0) {
      metrics?.messagesThrottled.inc();
      await sleep(wait);
    }
  }

  const aedes = await Aedes.createBroker({
    id: `iomt-${brokerId}`,
    persistence: sessions,
    connectTimeout: m.connectTimeoutMs,
    preConnect: createPreConnect(log, metrics),
    authenticate: createAuthenticate({
      registry,
      budgets: new ConnectBudgets({
        ...budgetLimiters(config, options.redis),
        knownDeviceMs: m.authKnownDeviceMs,
      }),
      pool: new SecretCheckPool({
        concurrency: m.authConcurrency,
        maxPendingPerAddress: m.authMaxPendingPerAddress,
        maxPending: m.authMaxPending,
        maxWaitMs: m.authMaxWaitMs,
      }),
      clientIds,
      onAccepted: (client) => {
        const { address, port } = peerOf(client);
        gate.authenticated(address, port);
      },
      dropSessions: (ids) => dropSessions(ids, 'evicted'),
      log,
      ...(metrics ? { metrics } : {}),
    }),
    authorizePublish,
    authorizeSubscribe: createAuthorizeSubscribe({
      maxSubscriptions: m.sessionMaxSubscriptions,
      log,
      ...(metrics ? { metrics } : {}),
    }),
    authorizeForward,
  });
  aedes.on('unsubscribe', (topics: string[], client: Client) =>
    forgetSubscriptions(client, topics),
  );
  aedes.on('clientDisconnect', (client) =>
    log.debug({ event: 'disconnected', clientId: client.id }, 'client disconnected'),
  );
  // Protocol violations aedes itself refuses (wildcards in a PUBLISH topic,
  // malformed packets, keepalive timeouts): the connection is closed. A refused
  // CONNECT was logged already, by authenticate or preConnect.
  aedes.on('clientError', (client, err) => {
    if (refusedAtConnect(client) || alreadyReported(client)) return;
    log.warn(
      { event: 'client-error', deviceId: deviceOf(client)?.deviceId ?? null, reason: err.message },
      'connection closed on a protocol error',
    );
  });
  // Errors before a client id is known: an unparseable CONNECT, no CONNECT in
  // time. Counted always, logged once per address and 10 s (slowloris floods).
  const protocolErrorsLogged = new LogOnce();
  aedes.on('connectionError', (client, err) => {
    if (alreadyReported(client)) return;
    metrics?.connectionsRefused.inc({ reason: 'protocol-error' });
    if (!protocolErrorsLogged.first(peerOf(client).address)) return;
    log.warn(
      {
        event: 'connect-refused',
        code: 'NotAuthorized',
        reason: 'protocol-error',
        detail: err.message,
        address: peerOf(client).address,
      },
      'connection closed before CONNECT completed',
    );
  });

  const maxFrame = m.maxPayloadBytes + FRAME_OVERHEAD_BYTES;
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
          address: peerOfSocket(req?.socket ?? (stream as { remoteAddress?: string })).address,
          limit: maxFrame,
        },
        'packet refused before buffering',
      );
    });
    aedes.handle(stream, req);
  };
  let listeners: Listener[];
  try {
    listeners = await startListeners(config, handle, maxFrame, log, {
      admitSocket: (socket, peer) => gate.admit(socket, peer),
      onProxyRefused: (reason, address) => {
        metrics?.connectionsRefused.inc({ reason });
        if (!socketLogged.first(`${reason}|${address}`)) return;
        log.warn(
          {
            event: 'connect-refused',
            code: 'NotAuthorized',
            reason,
            address,
            mode: m.proxyProtocol,
          },
          `connection closed: no valid PROXY header from a trusted load balancer (MQTT_PROXY_PROTOCOL, MQTT_PROXY_TRUSTED; logged once per ${FLOOD_LOG_INTERVAL_MS / 1000} s, counted always)`,
        );
      },
      onTlsError: (reason, address) => {
        metrics?.connectionsRefused.inc({ reason: 'tls-handshake-failed' });
        log.warn(
          {
            event: 'connect-refused',
            reason: 'tls-handshake-failed',
            detail: reason,
            address: normalizeAddress(address),
          },
          'TLS handshake refused',
        );
      },
    });
  } catch (err) {
    for (const t of timers) clearInterval(t);
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
    sessions,
    idleSockets: (address) => gate.idle(address),
    async close() {
      // Stop accepting connections first, then let waiting and enqueued
      // messages reach Redis (their PUBACKs go out), then close client sessions.
      const closed = Promise.all(listeners.map((l) => l.close()));
      for (const t of timers) clearInterval(t);
      await revocation?.close();
      backpressure?.stop();
      await batcher.drain();
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
      await closed;
    },
  };
}
