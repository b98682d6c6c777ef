/**
 * Readiness: named probes of the dependencies a process needs, run together.
 * `/readyz` answers 200 when every probe resolves and 503 otherwise, with each
 * probe's result (`ok` or the reason), in the admin API and in the
 * observability server of every role. A process that is not ready keeps
 * working: its jobs retry until the dependency answers.
 */
import type { RedisConnection } from '../redis.js';
import { stripUrlCredentials } from '../admin/url-credentials.js';
import type { AnalyticsStore } from '../clickhouse/index.js';
import type { FhirGateway } from '../fhir/gateway.js';

export type ReadinessProbes = Readonly<Record<string, () => Promise<unknown>>>;

export interface Readiness {
  readonly ready: boolean;
  /** Probe name → "ok" or why not. */
  readonly checks: Readonly<Record<string, string>>;
}

/** The dependencies a process may have; a probe exists for each one given. */
export interface ReadinessDeps {
  readonly redis: Pick<RedisConnection, 'ping'>;
  readonly fhir?: Pick<FhirGateway, 'capabilities'> | undefined;
  readonly analyticsStore?: Pick<AnalyticsStore, 'ping'> | undefined;
  /** The active mapping templates' version, in a process that runs workers. */
  readonly templatesVersion?: (() => string | undefined) | undefined;
}

export function readinessProbes(deps: ReadinessDeps): ReadinessProbes {
  const probes: Record<string, () => Promise<unknown>> = {
    redis: () => deps.redis.ping(),
  };
  const { fhir, analyticsStore, templatesVersion } = deps;
  if (fhir) probes.fhir = () => fhir.capabilities();
  if (analyticsStore) probes.clickhouse = () => analyticsStore.ping();
  if (templatesVersion)
    probes.templates = () => {
      const version = templatesVersion();
      return version === undefined
        ? Promise.reject(new Error('no valid mapping templates loaded'))
        : Promise.resolve(version);
    };
  return probes;
}

/**
 * Runs every probe at once, each bounded by `timeoutMs`: a slow dependency
 * reports a timeout, it never holds the answer. A reason never carries URL
 * credentials.
 */
export async function checkReadiness(
  probes: ReadinessProbes,
  timeoutMs: number,
): Promise<Readiness> {
  const results = await Promise.all(
    Object.entries(probes).map(async ([name, probe]): Promise<[string, string]> => {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      });
      try {
        await Promise.race([probe(), timeout]);
        return [name, 'ok'];
      } catch (err) {
        return [name, stripUrlCredentials(err instanceof Error ? err.message : String(err))];
      } finally {
        clearTimeout(timer);
      }
    }),
  );
  const checks = Object.fromEntries(results);
  return { ready: results.every(([, v]) => v === 'ok'), checks };
}
