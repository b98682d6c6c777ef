/** Removing a benchmark run's keys from Redis once it is done (its devices, queues, templates). */
import { Redis } from 'ioredis';

/** Unlinks every key matching `pattern` (SCAN, in batches) and says how many went. */
export async function forgetKeys(url: string, pattern: string): Promise<void> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    let n = 0;
    for await (const keys of redis.scanStream({ match: pattern, count: 1000 })) {
      const batch = keys as string[];
      if (batch.length > 0) n += await redis.unlink(...batch);
    }
    console.log(`removed this run's ${n} keys from Redis`);
  } catch (err) {
    console.error(`could not remove this run's keys from Redis: ${String(err)}`);
  } finally {
    redis.disconnect();
  }
}
