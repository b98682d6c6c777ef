/** `iomt simulate`: simulated bedside monitors publishing vitals over MQTT. */
import { Option } from '@commander-js/extra-typings';
import { loadConfig } from '../../config.js';
import { simulate } from '../../simulator/run.js';
import { fail, withRegistry, type Program } from '../common.js';

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
        const result = await withRegistry(config, (registry) =>
          simulate({
            registry,
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
