/**
 * The MQTT shape of the test HAProxy (test/support/haproxy.ts): one TCP
 * frontend on a free loopback port, round robin over our brokers, each sent a
 * PROXY v2 header (`send-proxy-v2`), connect health checks every 500 ms, and a
 * failed connect re-dispatched to another broker (a killed broker's port
 * refuses before its check marks it down). It is the config
 * deploy/haproxy/mqtt.cfg documents, with test ports and timings.
 */
import { startHaproxy } from './haproxy.js';

export interface BrokerBackend {
  readonly name: string;
  readonly port: number;
}

export interface BrokerBalancer {
  readonly port: number;
  readonly url: string;
  /** HAProxy's own output, for failure messages. */
  readonly output: string[];
  close(): Promise<void>;
}

export async function startBrokerBalancer(
  port: number,
  brokers: readonly BrokerBackend[],
): Promise<BrokerBalancer> {
  const haproxy = await startHaproxy({
    frontends: [{ name: 'mqtt', mode: 'tcp', port, backend: 'brokers' }],
    backends: [
      {
        name: 'brokers',
        mode: 'tcp',
        options: ['retries 3', 'option redispatch'],
        servers: brokers.map((b) => ({
          name: b.name,
          host: '127.0.0.1',
          port: b.port,
          params: 'send-proxy-v2',
        })),
      },
    ],
    // Longer than the devices' keepalive (MQTT 1.5 × keepalive, 30 s in the tests).
    timeouts: { clientMs: 120_000, serverMs: 120_000 },
  });
  return {
    port,
    url: `mqtt://127.0.0.1:${port}`,
    output: haproxy.output,
    close: () => haproxy.stop(),
  };
}
