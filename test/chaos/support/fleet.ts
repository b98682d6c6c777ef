/**
 * A fleet of simulated devices for fault tests: registered in the Redis under
 * test, connected with mqtt.js (reconnecting, and resending unacknowledged QoS 1
 * messages after a reconnect, as MQTT-4.4.0-1 asks), each publishing heart-rate
 * readings with distinct device timestamps. Every message knows the Observation
 * identifier it must become, so a test can count it in HAPI and ClickHouse.
 */
import mqtt, { type MqttClient } from 'mqtt';
import { observationId, observationIdentifierValue } from '../../../src/mapping/identity.js';
import { enrol, uniqueId, withDevices } from '../../support/harness.js';
import { sleep } from './processes.js';

export const IDENTIFIER_SYSTEM = 'urn:iomt:observation';
export const HEART_RATE_LOINC = '8867-4';

export interface Device {
  readonly deviceId: string;
  readonly patientId: string;
  readonly secret: string;
}

export interface Sent {
  readonly device: Device;
  readonly occurrenceTime: string;
  readonly identifier: string;
  readonly id: string;
  acked: boolean;
}

export class Fleet {
  readonly devices: Device[] = [];
  readonly sent: Sent[] = [];
  readonly clients: MqttClient[] = [];
  /** Device timestamps start two hours back, one second apart per device. */
  readonly #base = Math.floor(Date.now() / 1000) * 1000 - 2 * 3600_000;
  #counter = 0;

  static async register(redisUrl: string, prefix: string, count: number): Promise<Fleet> {
    const fleet = new Fleet();
    await withDevices(redisUrl, prefix, async (pipeline) => {
      for (let i = 0; i < count; i++) {
        const deviceId = uniqueId(`chaos-dev${i}`);
        const patientId = uniqueId(`chaos-pat${i}`);
        const secret = await enrol(pipeline, deviceId, patientId);
        fleet.devices.push({ deviceId, patientId, secret });
      }
    });
    return fleet;
  }

  /** Connects every device; `urls[i % urls.length]` spreads devices over brokers. */
  async connect(urls: readonly string[]): Promise<void> {
    await Promise.all(
      this.devices.map(
        (d, i) =>
          new Promise<void>((resolve, reject) => {
            const client = mqtt.connect(urls[i % urls.length]!, {
              username: d.deviceId,
              password: d.secret,
              clientId: uniqueId(d.deviceId),
              reconnectPeriod: 500,
              connectTimeout: 5000,
              keepalive: 30,
            });
            this.clients.push(client);
            const timer = setTimeout(() => reject(new Error(`${d.deviceId}: no CONNACK`)), 30_000);
            client.once('connect', () => {
              clearTimeout(timer);
              resolve();
            });
            // Errors while a broker or Redis is down are expected: mqtt.js reconnects.
            client.on('error', () => undefined);
          }),
      ),
    );
  }

  /**
   * Publishes `count` QoS 1 readings round-robin over the devices, `intervalMs`
   * apart, without waiting for acks (they arrive whenever the pipeline can
   * store the message). Returns when all are handed to the clients.
   */
  async publish(count: number, intervalMs: number): Promise<void> {
    for (let n = 0; n < count; n++) {
      const k = this.#counter++;
      const idx = k % this.devices.length;
      const device = this.devices[idx]!;
      const client = this.clients[idx]!;
      const occurrenceTime = new Date(
        this.#base + Math.floor(k / this.devices.length) * 1000,
      ).toISOString();
      const heartRate = 60 + (k % 40);
      // The vitals template's heart rate: type name, LOINC code, value and UCUM unit (PHD STU 1.1 rule).
      const identifier = observationIdentifierValue({
        deviceId: device.deviceId,
        patientId: device.patientId,
        type: 'heartrate',
        code: HEART_RATE_LOINC,
        occurrenceTime,
        value: `${heartRate} /min`,
      });
      const sent: Sent = {
        device,
        occurrenceTime,
        identifier,
        id: observationId(IDENTIFIER_SYSTEM, identifier),
        acked: false,
      };
      this.sent.push(sent);
      client.publish(
        `devices/${device.deviceId}/telemetry`,
        JSON.stringify({ timestamp: occurrenceTime, heartRate }),
        { qos: 1 },
        (err) => {
          if (!err) sent.acked = true;
        },
      );
      if (intervalMs > 0) await sleep(intervalMs);
    }
  }

  get acked(): Sent[] {
    return this.sent.filter((s) => s.acked);
  }

  /** Waits until every published message is acknowledged (clients resend after reconnects). */
  async allAcked(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.sent.every((s) => s.acked)) return;
      await sleep(200);
    }
    const missing = this.sent.filter((s) => !s.acked).length;
    throw new Error(`${missing} of ${this.sent.length} messages never acknowledged`);
  }

  async close(): Promise<void> {
    await Promise.all(
      this.clients.map((c) => new Promise<void>((resolve) => c.end(true, {}, () => resolve()))),
    );
  }
}
