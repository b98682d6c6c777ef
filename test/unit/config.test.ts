import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadConfig, settingKeys } from '../../src/config.js';
import type { PipelineError } from '../../src/errors.js';

describe('loadConfig', () => {
  it('gives documented defaults with an empty environment', () => {
    const c = loadConfig({});
    expect(c.mqtt.port).toBe(1883);
    expect(c.mqtt.maxPayloadBytes).toBe(256 * 1024);
    expect(c.clickhouse.url).toBeUndefined();
    expect(c.worker.stages).toEqual(['normalize', 'fhir', 'analytics']);
    expect(Object.isFrozen(c) && Object.isFrozen(c.mqtt)).toBe(true);
  });

  it('parses environment strings into typed values', () => {
    const c = loadConfig({
      MQTT_PORT: '18830',
      CLICKHOUSE_URL: 'http://ch:8123/',
      WORKER_STAGES: 'fhir, analytics',
    });
    expect(c.mqtt.port).toBe(18830);
    expect(c.clickhouse.url).toBe('http://ch:8123');
    expect(c.worker.stages).toEqual(['fhir', 'analytics']);
  });

  it('reports every problem at once, each naming its key', () => {
    let error: PipelineError | undefined;
    try {
      loadConfig({
        MQTT_PORT: 'abc',
        REDIS_URL: 'http://x',
        LOG_LEVEL: 'loud',
        WORKER_STAGES: 'bogus',
      });
    } catch (err) {
      error = err as PipelineError;
    }
    expect(error?.code).toBe('ConfigInvalid');
    const problems = error?.details.problems as string[];
    expect(problems).toHaveLength(4);
    expect(problems.map((p) => p.split(':')[0])).toEqual([
      'REDIS_URL',
      'MQTT_PORT',
      'WORKER_STAGES',
      'LOG_LEVEL',
    ]);
    expect(error?.message).toContain('MQTT_PORT: expected an integer, got "abc"');
  });

  it('reads the PROXY protocol settings: a mode, and balancer addresses or CIDR ranges', () => {
    const c = loadConfig({
      MQTT_PROXY_PROTOCOL: 'v2',
      MQTT_PROXY_TRUSTED: '10.0.1.5, 10.0.2.0/24,fd00::/8',
    });
    expect(c.mqtt.proxyProtocol).toBe('v2');
    expect(c.mqtt.proxyTrusted).toEqual(['10.0.1.5', '10.0.2.0/24', 'fd00::/8']);
    expect(loadConfig({}).mqtt.proxyProtocol).toBe('off');
    expect(() =>
      loadConfig({ MQTT_PROXY_PROTOCOL: 'yes', MQTT_PROXY_TRUSTED: 'lb.local,10.0.0.0/33' }),
    ).toThrow(
      /MQTT_PROXY_PROTOCOL: expected one of off, v1, v2, any.*MQTT_PROXY_TRUSTED: expected IP addresses or CIDR ranges, got "lb.local", "10.0.0.0\/33"/s,
    );
  });

  it('refuses unknown override keys', () => {
    expect(() => loadConfig({}, { mqtt: { prot: 1 } as never })).toThrow(
      /override "mqtt.prot": unknown setting/,
    );
  });

  it('documents every key in docs/configuration.md', () => {
    const doc = readFileSync(new URL('../../docs/configuration.md', import.meta.url), 'utf8');
    const missing = settingKeys().filter((k) => !doc.includes(`\`${k}\``));
    expect(missing).toEqual([]);
  });
});
