/**
 * `iomt gateways link|unlink|list`: which devices a gateway may relay readings
 * for. Links are part of the device's history (with time, source and actor),
 * so a gateway reading is accepted for the links in force at the reading's time.
 */
import { loadConfig } from '../../config.js';
import { parseInstant } from '../../dlq/index.js';
import { fail, type Program } from '../common.js';
import { cliActor, withDeviceService } from '../device-context.js';

export function register(program: Program): void {
  const gateways = program
    .command('gateways')
    .description('link devices to the gateway that publishes for them');
  gateways
    .command('link')
    .argument('<gatewayId>', 'the gateway (a registered device without a patient)')
    .argument('<deviceId>', 'a registered device the gateway may publish readings for')
    .option('--at <time>', 'from when (ISO 8601 with zone, epoch ms, or 15m/2h ago); default now')
    .option('--actor <name>', 'who makes the change (default: the OS user)')
    .action(async (gatewayId, deviceId, opts) => {
      try {
        await withDeviceService(loadConfig(), (d) =>
          d.link(gatewayId, deviceId, {
            ...cliActor(opts.actor),
            ...(opts.at !== undefined ? { at: parseInstant(opts.at, '--at') } : {}),
          }),
        );
        process.stdout.write(`${gatewayId} may now publish readings for ${deviceId}\n`);
      } catch (err) {
        fail(err);
      }
    });
  gateways
    .command('unlink')
    .argument('<gatewayId>')
    .argument('<deviceId>')
    .option('--at <time>', 'from when (ISO 8601 with zone, epoch ms, or 15m/2h ago); default now')
    .option('--actor <name>', 'who makes the change (default: the OS user)')
    .action(async (gatewayId, deviceId, opts) => {
      try {
        const removed = await withDeviceService(loadConfig(), (d) =>
          d.unlink(gatewayId, deviceId, {
            ...cliActor(opts.actor),
            ...(opts.at !== undefined ? { at: parseInstant(opts.at, '--at') } : {}),
          }),
        );
        process.stdout.write(
          removed ? `unlinked ${deviceId} from ${gatewayId}\n` : `no such link\n`,
        );
        if (!removed) process.exitCode = 1;
      } catch (err) {
        fail(err);
      }
    });
  gateways
    .command('list')
    .argument('<gatewayId>')
    .option('--json', 'print JSON')
    .action(async (gatewayId, opts) => {
      try {
        const children = await withDeviceService(loadConfig(), (d) => d.children(gatewayId));
        if (opts.json) {
          process.stdout.write(`${JSON.stringify({ gatewayId, devices: children }, null, 2)}\n`);
          return;
        }
        for (const c of children) process.stdout.write(`${c}\n`);
        process.stdout.write(`${children.length} device(s)\n`);
      } catch (err) {
        fail(err);
      }
    });
}
