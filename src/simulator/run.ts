/**
 * `iomt simulate`: enrols N devices (each associated with its own simulated
 * patient), connects them over MQTT and publishes vitals at R messages per
 * second per device, QoS 1. Prints progress every few seconds.
 */
import mqtt, { type MqttClient } from 'mqtt';
import {
  initialVitals,
  nextVitals,
  seededRandom,
  vitalsMessage,
  type VitalsState,
} from './vitals.js';

export interface SimulateOptions {
  /** Makes the device ready to publish for the patient (registered, associated); returns its secret. */
  readonly enrol: (deviceId: string, patientId: string) => Promise<string>;
  readonly mqttUrl: string;
  readonly devices: number;
  /** Messages per second per device. */
  readonly rate: number;
  /** Stop after this many seconds (default: until stopped). */
  readonly durationSec?: number;
  readonly prefix?: string;
  readonly seed?: number;
  readonly progress?: (line: string) => void;
  readonly signal?: AbortSignal;
}

export interface SimulateResult {
  readonly published: number;
  readonly acknowledged: number;
  readonly failed: number;
}

function connect(url: string, username: string, password: string): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(url, {
      username,
      password,
      clientId: username,
      reconnectPeriod: 1000,
      connectTimeout: 10_000,
    });
    client.once('connect', () => resolve(client));
    client.once('error', (err) => {
      client.end(true);
      reject(err);
    });
  });
}

export async function simulate(opts: SimulateOptions): Promise<SimulateResult> {
  const prefix = opts.prefix ?? 'sim';
  const log = opts.progress ?? (() => undefined);
  const random = seededRandom(opts.seed ?? 42);
  const devices: { id: string; client: MqttClient; state: VitalsState }[] = [];
  for (let i = 1; i <= opts.devices; i++) {
    const id = `${prefix}-monitor-${String(i).padStart(3, '0')}`;
    const secret = await opts.enrol(id, `${prefix}-patient-${String(i).padStart(3, '0')}`);
    devices.push({
      id,
      client: await connect(opts.mqttUrl, id, secret),
      state: initialVitals(random),
    });
  }
  log(`simulator: ${devices.length} devices connected to ${opts.mqttUrl}, ${opts.rate} msg/s each`);

  let published = 0;
  let acknowledged = 0;
  let failed = 0;
  const started = Date.now();
  const intervalMs = 1000 / opts.rate;
  const timers: NodeJS.Timeout[] = [];
  const report = setInterval(
    () => log(`simulator: ${published} published, ${acknowledged} acknowledged, ${failed} failed`),
    5000,
  );

  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    opts.signal?.addEventListener('abort', stop, { once: true });
    if (opts.durationSec !== undefined) timers.push(setTimeout(stop, opts.durationSec * 1000));
    devices.forEach((d, i) => {
      // Spread devices across the interval so the load is even.
      const start = setTimeout(
        () => {
          const tick = () => {
            d.state = nextVitals(d.state, random);
            published++;
            d.client.publish(
              `devices/${d.id}/telemetry`,
              JSON.stringify(vitalsMessage(d.state, new Date())),
              { qos: 1 },
              (err) => {
                if (err) failed++;
                else acknowledged++;
              },
            );
          };
          tick();
          timers.push(setInterval(tick, intervalMs));
        },
        (intervalMs * i) / devices.length,
      );
      timers.push(start);
    });
  });
  for (const t of timers) clearTimeout(t);
  clearInterval(report);
  await Promise.all(
    devices.map((d) => new Promise<void>((resolve) => d.client.end(false, {}, () => resolve()))),
  );
  log(
    `simulator: done after ${((Date.now() - started) / 1000).toFixed(1)} s — ${published} published, ${acknowledged} acknowledged, ${failed} failed`,
  );
  return { published, acknowledged, failed };
}
