/**
 * What the device commands share: the device service wired to Redis, the
 * queues (FHIR and ClickHouse follow through jobs) and the FHIR server (a
 * Patient named by an association must exist), and the actor of a change.
 */
import { userInfo } from 'node:os';
import type { Config } from '../config.js';
import { createDeviceService, type DeviceService } from '../devices/index.js';
import { createConfiguredFhirGateway } from '../fhir/gateway.js';
import { createFhirStore } from '../fhir/store.js';
import { createQueues, queuePrefix } from '../queue-runtime.js';
import { withRedis } from './common.js';

export function withDeviceService<T>(
  config: Config,
  fn: (devices: DeviceService) => Promise<T>,
): Promise<T> {
  return withRedis(config, async (redis) => {
    const queues = createQueues(redis, queuePrefix(config.redis.url, config.redis.prefix));
    try {
      const fhir = createFhirStore(createConfiguredFhirGateway(config));
      return await fn(createDeviceService(config, redis, queues, fhir));
    } finally {
      await queues.close();
    }
  });
}

/** --actor, else the operating-system user running the command. */
export function cliActor(given: string | undefined): { actor: string; source: 'cli' } {
  let actor = given;
  if (!actor) {
    try {
      actor = userInfo().username;
    } catch {
      actor = 'unknown';
    }
  }
  return { actor, source: 'cli' };
}
