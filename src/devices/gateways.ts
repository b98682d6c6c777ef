/**
 * Gateway links: which devices a gateway may publish readings for. A device
 * speaks only for itself; a gateway (a bedside hub relaying a scale and an
 * oximeter, say) speaks for the devices linked to it here, and for no others.
 * One Redis set per gateway: `{prefix}:gateway:{gatewayId}` of device ids.
 * Both ends must be registered devices (the children's patient bindings come
 * from the registry, as for any device).
 */
import type { Redis } from 'ioredis';
import { PipelineError } from '../errors.js';
import type { DeviceRegistry } from './registry.js';

export class GatewayLinks {
  readonly #redis: Redis;
  readonly #prefix: string;

  constructor(redis: Redis, prefix: string) {
    this.#redis = redis;
    this.#prefix = prefix;
  }

  #key(gatewayId: string): string {
    return `${this.#prefix}:gateway:${gatewayId}`;
  }

  /** Links a registered device to a registered gateway. */
  async link(registry: DeviceRegistry, gatewayId: string, deviceId: string): Promise<void> {
    if (gatewayId === deviceId) {
      throw new PipelineError('DeviceSpoofing', 'a device cannot be its own gateway');
    }
    for (const id of [gatewayId, deviceId]) {
      if (!(await registry.get(id))) {
        throw new PipelineError('DeviceNotFound', `device "${id}" is not registered`);
      }
    }
    await this.#redis.sadd(this.#key(gatewayId), deviceId);
  }

  async unlink(gatewayId: string, deviceId: string): Promise<boolean> {
    return (await this.#redis.srem(this.#key(gatewayId), deviceId)) === 1;
  }

  async isLinked(gatewayId: string, deviceId: string): Promise<boolean> {
    return (await this.#redis.sismember(this.#key(gatewayId), deviceId)) === 1;
  }

  async children(gatewayId: string): Promise<string[]> {
    return (await this.#redis.smembers(this.#key(gatewayId))).sort();
  }
}
