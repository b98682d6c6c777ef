/** `iomt simulate`: simulated bedside monitors publishing vitals over MQTT. */
import { Option } from '@commander-js/extra-typings';
import { loadConfig } from '../../config.js';
import { isPipelineError } from '../../errors.js';
import type { DeviceService } from '../../devices/index.js';
import { simulate } from '../../simulator/run.js';
import { fail, type Program } from '../common.js';
import { withDeviceService } from '../device-context.js';

const SIMULATOR = { actor: 'simulator', source: 'cli' } as const;

/**
 * A simulated device, ready: registered (or re-keyed, when an earlier run
 * registered it: its secret was not kept) and associated with its simulated
 * patient, which the pipeline may create (it is new).
 */
export async function enrolSimulated(
  devices: DeviceService,
  deviceId: string,
  patientId: string,
): Promise<string> {
  try {
    const { secret } = await devices.add(deviceId, {
      ...SIMULATOR,
      patient: patientId,
      newPatient: true,
    });
    return secret;
  } catch (err) {
    if (!isPipelineError(err) || err.code !== 'DeviceExists') throw err;
  }
  const { secret } = await devices.rotateSecret(deviceId, SIMULATOR);
  if ((await devices.history(deviceId)).currentPatient !== patientId)
    await devices.assign(deviceId, patientId, { ...SIMULATOR, newPatient: true });
  return secret;
}

export function register(program: Program): void {
  program
    .command('simulate')
    .description('register simulated bedside monitors and publish vitals over MQTT (QoS 1)')
    .addOption(
      new Option('--devices <n>', 'number of devices')
        .argParser((v) => Number.parseInt(v, 10))
        .default(5),
    )
    .addOption(
      new Option('--rate <r>', 'messages per second per device')
        .argParser(Number.parseFloat)
        .default(1),
    )
    .addOption(
      new Option('--duration <s>', 'stop after this many seconds').argParser(Number.parseFloat),
    )
    .option('--mqtt-url <url>', 'broker URL (default: mqtt://127.0.0.1:$MQTT_PORT)')
    .option('--prefix <p>', 'device and patient id prefix', 'sim')
    .action(async (opts) => {
      try {
        const config = loadConfig();
        const mqttUrl = opts.mqttUrl ?? `mqtt://127.0.0.1:${config.mqtt.port}`;
        const controller = new AbortController();
        process.once('SIGINT', () => controller.abort());
        process.once('SIGTERM', () => controller.abort());
        const result = await withDeviceService(config, (devices) =>
          simulate({
            enrol: (id, patient) => enrolSimulated(devices, id, patient),
            mqttUrl,
            devices: opts.devices,
            rate: opts.rate,
            prefix: opts.prefix,
            signal: controller.signal,
            progress: (line) => process.stdout.write(`${line}\n`),
            ...(opts.duration !== undefined ? { durationSec: opts.duration } : {}),
          }),
        );
        if (result.failed > 0) process.exitCode = 1;
      } catch (err) {
        fail(err);
      }
    });
}
