/**
 * One configuration for every role. Each setting has one environment key, a
 * default with its unit, and a parser; `loadConfig` reads them all, reports every
 * problem at once (each naming its key), and returns a frozen object that is
 * passed down — no module reads `process.env` on its own.
 *
 * docs/configuration.md documents every key (a test keeps the two in step).
 */
import { PipelineError } from './errors.js';

type Parser<T> = (raw: string) => T;

interface Setting<T> {
  readonly env: string;
  readonly default: T;
  readonly parse: Parser<T>;
  readonly doc: string;
}

const str: Parser<string> = (raw) => raw;
const optionalStr: Parser<string | undefined> = (raw) => (raw === '' ? undefined : raw);

function int(min: number, max: number): Parser<number> {
  return (raw) => {
    if (!/^-?\d+$/.test(raw.trim())) throw new Error(`expected an integer, got "${raw}"`);
    const n = Number(raw);
    if (n < min || n > max) throw new Error(`expected an integer in [${min}, ${max}], got ${n}`);
    return n;
  };
}

function oneOf<T extends string>(...values: readonly T[]): Parser<T> {
  return (raw) => {
    if (!(values as readonly string[]).includes(raw)) {
      throw new Error(`expected one of ${values.join(', ')}, got "${raw}"`);
    }
    return raw as T;
  };
}

function url(...protocols: readonly string[]): Parser<string> {
  return (raw) => {
    let parsed: URL;
    try {
      parsed = new URL(raw);
    } catch {
      throw new Error(`expected a URL, got "${raw}"`);
    }
    if (!protocols.includes(parsed.protocol)) {
      throw new Error(`expected a ${protocols.join(' or ')} URL, got "${parsed.protocol}"`);
    }
    return raw.replace(/\/+$/, '');
  };
}

const STAGES = ['normalize', 'fhir', 'analytics'] as const;
export type WorkerStage = (typeof STAGES)[number];

const stageList: Parser<readonly WorkerStage[]> = (raw) => {
  const items = raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const bad = items.filter((s) => !(STAGES as readonly string[]).includes(s));
  if (bad.length > 0 || items.length === 0)
    throw new Error(`expected a comma-separated subset of ${STAGES.join(',')}, got "${raw}"`);
  return items as WorkerStage[];
};

const optionalUrl =
  (...protocols: readonly string[]): Parser<string | undefined> =>
  (raw) =>
    raw === '' ? undefined : url(...protocols)(raw);

function setting<T>(env: string, def: T, parse: Parser<T>, doc: string): Setting<T> {
  return { env, default: def, parse, doc };
}

/** Every setting, grouped as the config object is. Defaults carry their unit in the doc. */
export const SETTINGS = {
  redis: {
    url: setting(
      'REDIS_URL',
      'redis://127.0.0.1:6379',
      url('redis:', 'rediss:'),
      'Redis holding the queues and the device registry.',
    ),
    prefix: setting(
      'QUEUE_PREFIX',
      'iomt',
      str,
      'Key prefix for queues and registry; separate pipelines may share one Redis.',
    ),
  },
  mqtt: {
    host: setting('MQTT_HOST', '0.0.0.0', str, 'Address the MQTT listener binds.'),
    port: setting('MQTT_PORT', 1883, int(0, 65535), 'MQTT TCP port (0 picks a free port).'),
    maxPayloadBytes: setting(
      'MQTT_MAX_PAYLOAD_BYTES',
      262144,
      int(1, 268435455),
      'Largest accepted PUBLISH payload, bytes (256 KiB).',
    ),
    batchMaxMessages: setting(
      'BROKER_BATCH_MAX_MESSAGES',
      500,
      int(1, 100000),
      'Most messages in one ingest job.',
    ),
  },
  fhir: {
    url: setting(
      'FHIR_URL',
      'http://127.0.0.1:8090/fhir',
      url('http:', 'https:'),
      'FHIR R4 base URL.',
    ),
    batchSize: setting(
      'FHIR_BATCH_SIZE',
      200,
      int(1, 5000),
      'Most Observations in one batch Bundle.',
    ),
    timeoutMs: setting(
      'FHIR_TIMEOUT_MS',
      30000,
      int(100, 600000),
      'Timeout of one FHIR request, milliseconds.',
    ),
    identifierSystem: setting(
      'FHIR_IDENTIFIER_SYSTEM',
      'urn:iomt:observation',
      str,
      'Observation.identifier.system the pipeline owns.',
    ),
    deviceIdentifierSystem: setting(
      'FHIR_DEVICE_IDENTIFIER_SYSTEM',
      'urn:iomt:device',
      str,
      'Device.identifier.system for the MQTT device id.',
    ),
  },
  clickhouse: {
    url: setting(
      'CLICKHOUSE_URL',
      undefined as string | undefined,
      optionalUrl('http:', 'https:'),
      'ClickHouse server; unset = embedded engine (chdb).',
    ),
    user: setting('CLICKHOUSE_USER', 'default', str, 'ClickHouse server user.'),
    password: setting('CLICKHOUSE_PASSWORD', '', str, 'ClickHouse server password (never logged).'),
    database: setting('CLICKHOUSE_DATABASE', 'iomt', str, 'Database holding the analytics tables.'),
    dataPath: setting(
      'CHDB_PATH',
      './data/chdb',
      str,
      'Data directory of the embedded engine (one owning process).',
    ),
  },
  mappings: {
    dir: setting('MAPPINGS_DIR', './mappings', str, 'Folder with device/ and fhir/ templates.'),
  },
  worker: {
    concurrency: setting(
      'WORKER_CONCURRENCY',
      4,
      int(1, 256),
      'Jobs processed at once per queue per worker process.',
    ),
    stages: setting(
      'WORKER_STAGES',
      STAGES as readonly WorkerStage[],
      stageList,
      'Stages a worker process runs (embedded ClickHouse: one process may run analytics).',
    ),
  },
  admin: {
    host: setting('ADMIN_HOST', '127.0.0.1', str, 'Address of the admin HTTP API.'),
    port: setting('ADMIN_PORT', 8080, int(0, 65535), 'Admin HTTP API port (0 picks a free port).'),
    token: setting(
      'ADMIN_TOKEN',
      undefined as string | undefined,
      optionalStr,
      'Bearer token for the admin API (never logged).',
    ),
  },
  log: {
    level: setting(
      'LOG_LEVEL',
      'info',
      oneOf('fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'),
      'Log level.',
    ),
  },
} as const;

type SettingsTree = typeof SETTINGS;
type ValueOf<S> = S extends Setting<infer T> ? T : never;

export type Config = {
  readonly [G in keyof SettingsTree]: {
    readonly [K in keyof SettingsTree[G]]: ValueOf<SettingsTree[G][K]>;
  };
};

/** Programmatic overrides (tests, CLI flags): same shape, every key optional. */
export type ConfigOverrides = {
  readonly [G in keyof Config]?: Partial<Config[G]>;
};

/** Every environment key the pipeline reads. */
export function settingKeys(): string[] {
  return Object.values(SETTINGS).flatMap((group) =>
    Object.values(group as Record<string, Setting<unknown>>).map((s) => s.env),
  );
}

/**
 * Reads settings from `env`, then applies `overrides`. Throws one ConfigInvalid
 * error listing every problem; unknown override keys are refused.
 */
export function loadConfig(
  env: Readonly<Record<string, string | undefined>> = process.env,
  overrides: ConfigOverrides = {},
): Config {
  const problems: string[] = [];
  const out: Record<string, Record<string, unknown>> = {};
  for (const [groupName, group] of Object.entries(SETTINGS)) {
    const values: Record<string, unknown> = {};
    for (const [key, s] of Object.entries(group as Record<string, Setting<unknown>>)) {
      const raw = env[s.env];
      if (raw === undefined) {
        values[key] = s.default;
        continue;
      }
      try {
        values[key] = s.parse(raw);
      } catch (err) {
        problems.push(`${s.env}: ${(err as Error).message}`);
      }
    }
    out[groupName] = values;
  }
  for (const [groupName, group] of Object.entries(
    overrides as Record<string, Record<string, unknown> | undefined>,
  )) {
    const target = out[groupName];
    if (target === undefined) {
      problems.push(`override "${groupName}": unknown setting group`);
      continue;
    }
    for (const [key, value] of Object.entries(group ?? {})) {
      if (!(key in target)) problems.push(`override "${groupName}.${key}": unknown setting`);
      else target[key] = value;
    }
  }
  if (problems.length > 0) {
    throw new PipelineError('ConfigInvalid', `invalid configuration:\n  ${problems.join('\n  ')}`, {
      details: { problems },
    });
  }
  for (const group of Object.values(out)) Object.freeze(group);
  return Object.freeze(out) as unknown as Config;
}
