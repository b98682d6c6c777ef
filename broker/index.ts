/**
 * The MQTT broker role: aedes with our hooks, in the order a PUBLISH meets them:
 *   1. authenticate   — CONNECT username/password against the device registry
 *   2. authorizePublish — own telemetry topic only, size limit, then durable
 *      enqueue; aedes sends the QoS 1 PUBACK only after this callback
 *   3. authorizeSubscribe — own topic tree only
 * Stateless beside Redis: run more copies behind a TCP load balancer.
 */
import { createServer, type Server } from 'node:net';
import { isUtf8 } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { Aedes, type AedesOptions } from 'aedes';
import type { Config } from '../src/config.js';
import type { DeviceRegistry } from '../src/devices/registry.js';
import type { Logger } from '../src/logger.js';
import type { TelemetryMessage } from '../src/queues.js';
import type { Metrics } from '../src/metrics.js';
import { createAuthenticate } from './authenticate.js';
import { checkPublish, createAuthorizeSubscribe } from './authorize.js';
import { IngestBatcher, type JobSink } from './ingest-batcher.js';
import { listen } from './listen.js';

export { IngestBatcher } from './ingest-batcher.js';
export { telemetryTopic } from './authorize.js';

export interface BrokerOptions {
  readonly config: Config;
  readonly registry: DeviceRegistry;
  /** The "ingest" queue (or anything that stores a job durably). */
  readonly ingest: JobSink;
  readonly log: Logger;
  readonly metrics?: Metrics;
}

export interface RunningBroker {
  readonly port: number;
  readonly aedes: Aedes;
  close(): Promise<void>;
}

export async function startBroker(options: BrokerOptions): Promise<RunningBroker> {
  const { config, registry, log, metrics } = options;
  const brokerId = randomBytes(4).toString('hex');
  let seq = 0;
  const batcher = new IngestBatcher({
    sink: options.ingest,
    maxMessages: config.mqtt.batchMaxMessages,
  });

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
          deviceId: verdict.deviceId,
          reason: verdict.reason,
          topic: packet.topic,
        },
        'publish refused',
      );
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
    metrics?.messagesReceived.inc({ qos: String(packet.qos) });
    batcher.enqueue(message).then(
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

  const aedes = await Aedes.createBroker({
    id: `iomt-${brokerId}`,
    authenticate: createAuthenticate(registry, log),
    authorizePublish,
    authorizeSubscribe: createAuthorizeSubscribe(log),
  });
  aedes.on('clientDisconnect', (client) =>
    log.debug({ event: 'disconnected', clientId: client.id }, 'client disconnected'),
  );

  const server: Server = createServer(aedes.handle);
  let port: number;
  try {
    port = await listen(server, config.mqtt.port, config.mqtt.host, 'MQTT_PORT');
  } catch (err) {
    await new Promise<void>((resolve) => aedes.close(() => resolve()));
    throw err;
  }
  log.info({ event: 'broker-listening', port, host: config.mqtt.host }, 'MQTT broker listening');

  return {
    port,
    aedes,
    async close() {
      // Stop accepting connections first, then let enqueued messages reach Redis,
      // then close client sessions.
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      await batcher.drain();
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
      await closed;
    },
  };
}
