/** `iomt gateways link|unlink|list`: which devices a gateway may publish readings for. */
import { loadConfig } from '../../config.js';
import { GatewayLinks } from '../../devices/gateways.js';
import { createRedis } from '../../queue-runtime.js';
import { DeviceRegistry } from '../../devices/registry.js';
import { fail, type Program } from '../common.js';

export function register(program: Program): void {
  const gateways = program
    .command('gateways')
    .description('link devices to the gateway that publishes for them');
  gateways
    .command('link')
    .argument('<gatewayId>', 'the gateway (a registered device)')
    .argument('<deviceId>', 'a registered device the gateway may publish readings for')
    .action(async (gatewayId, deviceId) => {
      try {
        const config = loadConfig();
        const redis = createRedis(config.redis.url);
        try {
          await new GatewayLinks(redis, config.redis.prefix).link(
            new DeviceRegistry(redis, config.redis.prefix),
            gatewayId,
            deviceId,
          );
        } finally {
          redis.disconnect();
        }
        process.stdout.write(`${gatewayId} may now publish readings for ${deviceId}\n`);
      } catch (err) {
        fail(err);
      }
    });
  gateways
    .command('unlink')
    .argument('<gatewayId>')
    .argument('<deviceId>')
    .action(async (gatewayId, deviceId) => {
      try {
        const config = loadConfig();
        const redis = createRedis(config.redis.url);
        try {
          const removed = await new GatewayLinks(redis, config.redis.prefix).unlink(
            gatewayId,
            deviceId,
          );
          process.stdout.write(
            removed ? `unlinked ${deviceId} from ${gatewayId}\n` : `no such link\n`,
          );
          if (!removed) process.exitCode = 1;
        } finally {
          redis.disconnect();
        }
      } catch (err) {
        fail(err);
      }
    });
  gateways
    .command('list')
    .argument('<gatewayId>')
    .action(async (gatewayId) => {
      try {
        const config = loadConfig();
        const redis = createRedis(config.redis.url);
        try {
          const children = await new GatewayLinks(redis, config.redis.prefix).children(gatewayId);
          for (const c of children) process.stdout.write(`${c}\n`);
          process.stdout.write(`${children.length} device(s)\n`);
        } finally {
          redis.disconnect();
        }
      } catch (err) {
        fail(err);
      }
    });
}
