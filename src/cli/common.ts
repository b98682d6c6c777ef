/** Shared by the CLI commands: one-line failures, registry access. */
import type { Command } from '@commander-js/extra-typings';
import type { Config } from '../config.js';
import { DeviceRegistry } from '../devices/registry.js';
import { isPipelineError } from '../errors.js';
import { createRedis } from '../queue-runtime.js';

export type Program = Command;

/** Prints one line (`iomt: Code: message`) and exits 1. */
export function fail(err: unknown): never {
  const message = isPipelineError(err)
    ? `${err.code}: ${err.message}`
    : err instanceof Error
      ? err.message
      : String(err);
  process.stderr.write(`iomt: ${message}\n`);
  process.exit(1);
}

export async function withRegistry<T>(
  config: Config,
  fn: (registry: DeviceRegistry) => Promise<T>,
): Promise<T> {
  const redis = createRedis(config.redis.url);
  try {
    return await fn(new DeviceRegistry(redis, config.redis.prefix));
  } finally {
    redis.disconnect();
  }
}
