/**
 * A busy MQTT port gives a one-line error naming the setting that changes it
 * (on this machine Mosquitto holds 1883). The port is taken by the test itself
 * so the outcome does not depend on what else runs here.
 */
import { execFile } from 'node:child_process';
import { createServer } from 'node:net';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);

describe('iomt broker on a busy port', () => {
  it('exits with one line naming MQTT_PORT', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', () => resolve()));
    const port = (blocker.address() as { port: number }).port;
    try {
      const result = await run('node', ['bin/iomt.mjs', 'broker'], {
        env: {
          ...process.env,
          MQTT_HOST: '127.0.0.1',
          MQTT_PORT: String(port),
          LOG_LEVEL: 'silent',
          QUEUE_PREFIX: 'busy-port-test',
        },
        timeout: 60_000,
      }).then(
        () => ({ code: 0, stderr: '' }),
        (err: { code: number; stderr: string }) => ({ code: err.code, stderr: err.stderr }),
      );
      // Exit code 2: the configuration is what must change (docs/cli.md).
      expect(result.code).toBe(2);
      const lines = result.stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toBe(
        `iomt: PortInUse: port ${port} on 127.0.0.1 is already in use: set MQTT_PORT to a free port`,
      );
    } finally {
      blocker.close();
    }
  });
});
