/**
 * One configuration for every role. Each setting has one environment key, a
 * default with its unit, and a parser; `loadConfig` reads them all, reports every
 * problem at once (each naming its key), and returns a frozen object that is
 * passed down — no module reads `process.env` on its own.
 *
 * docs/configuration.md documents every key (a test keeps the two in step).
 */
import { isIP } from 'node:net';
import { CLUSTER_NAME } from './clickhouse/schema-cluster.js';
import { PipelineError } from './errors.js';
import { DEFAULT_LIMITS, parseLimits } from './mapping/plausibility.js';
import { NO_ENVELOPE, parseEnvelopePolicy } from './mapping/envelope.js';
import { parseRedisUrl } from './redis.js';

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

const bool: Parser<boolean> = (raw) => {
  const v = raw.trim().toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(v)) return true;
  if (['false', '0', 'no', 'off'].includes(v)) return false;
  throw new Error(`expected true or false, got "${raw}"`);
};

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

/** REDIS_URL: one server, a cluster or a Sentinel-watched master (src/redis.ts). */
const redisUrl: Parser<string> = (raw) => {
  const target = parseRedisUrl(raw);
  return target.kind === 'single' ? target.url : raw;
};

/** An IANA time zone name the runtime knows (Intl), e.g. Europe/Berlin. */
const timeZone: Parser<string> = (raw) => {
  try {
    return new Intl.DateTimeFormat('en-US', { timeZone: raw }).resolvedOptions().timeZone;
  } catch {
    throw new Error(`expected an IANA time zone such as Europe/Berlin, got "${raw}"`);
  }
};

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

/** Comma-separated IP addresses or CIDR ranges (MQTT_PROXY_TRUSTED). */
const addressList: Parser<readonly string[]> = (raw) => {
  const items = raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const bad = items.filter((item) => {
    const [address = '', bits, extra] = item.split('/');
    const family = isIP(address);
    if (family === 0 || extra !== undefined) return true;
    if (bits === undefined) return false;
    const n = Number(bits);
    return !/^\d+$/.test(bits) || n > (family === 4 ? 32 : 128);
  });
  if (bad.length > 0)
    throw new Error(`expected IP addresses or CIDR ranges, got "${bad.join('", "')}"`);
  return items;
};

const optionalUrl =
  (...protocols: readonly string[]): Parser<string | undefined> =>
  (raw) =>
    raw === '' ? undefined : url(...protocols)(raw);

const optionalInt =
  (min: number, max: number): Parser<number | undefined> =>
  (raw) =>
    raw.trim() === '' ? undefined : int(min, max)(raw);

/** A ClickHouse cluster name: it is interpolated into DDL, so letters, digits, _ and - only. */
const optionalClusterName: Parser<string | undefined> = (raw) => {
  if (raw === '') return undefined;
  if (!CLUSTER_NAME.test(raw))
    throw new Error(
      `expected a cluster name of letters, digits, _ and - (not starting with a digit or -), got "${raw}"`,
    );
  return raw;
};

function setting<T>(env: string, def: T, parse: Parser<T>, doc: string): Setting<T> {
  return { env, default: def, parse, doc };
}

/** Every setting, grouped as the config object is. Defaults carry their unit in the doc. */
export const SETTINGS = {
  redis: {
    url: setting(
      'REDIS_URL',
      'redis://127.0.0.1:6379',
      redisUrl,
      'Redis holding the queues and the device registry: redis://host:port (one server), redis+cluster://host:port,host:port (a Redis Cluster) or redis+sentinel://host:port,host:port/master (Sentinel); a password goes before the hosts (redis+cluster://:secret@h1:7000,h2:7001).',
    ),
    waitReplicas: setting(
      'REDIS_WAIT_REPLICAS',
      0,
      int(0, 16),
      'Replicas that must hold an ingest job (Redis WAIT) before the broker sends its PUBACK; 0 = the master alone (docs/deployment.md, scale-out).',
    ),
    waitAof: setting(
      'REDIS_WAIT_AOF',
      false,
      bool,
      'Before a PUBACK, wait until the master has fsynced the job to its append-only file (Redis WAITAOF; needs appendonly yes).',
    ),
    waitTimeoutMs: setting(
      'REDIS_WAIT_TIMEOUT_MS',
      2000,
      int(1, 60_000),
      'Longest wait for REDIS_WAIT_REPLICAS / REDIS_WAIT_AOF, ms; past it the PUBACK is withheld and the device resends.',
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
    tlsPort: setting(
      'MQTT_TLS_PORT',
      8883,
      int(0, 65535),
      'MQTT over TLS port; the listener starts when MQTT_TLS_CERT_FILE and MQTT_TLS_KEY_FILE are set.',
    ),
    tlsCertFile: setting(
      'MQTT_TLS_CERT_FILE',
      undefined as string | undefined,
      optionalStr,
      'PEM server certificate (chain) of the TLS listener.',
    ),
    tlsKeyFile: setting(
      'MQTT_TLS_KEY_FILE',
      undefined as string | undefined,
      optionalStr,
      'PEM private key of the TLS listener (never logged).',
    ),
    tlsCaFile: setting(
      'MQTT_TLS_CA_FILE',
      undefined as string | undefined,
      optionalStr,
      'PEM CA bundle that signs device client certificates (needed unless MQTT_TLS_CLIENT_CERT=none).',
    ),
    tlsClientCert: setting(
      'MQTT_TLS_CLIENT_CERT',
      'none',
      oneOf('none', 'optional', 'required'),
      'Client certificates on the TLS listener: none, optional (certificate or password), required.',
    ),
    wsPort: setting(
      'MQTT_WS_PORT',
      undefined as number | undefined,
      optionalInt(0, 65535),
      'MQTT over WebSocket port (unset = no WebSocket listener; 0 picks a free port).',
    ),
    proxyProtocol: setting(
      'MQTT_PROXY_PROTOCOL',
      'off',
      oneOf('off', 'v1', 'v2', 'any'),
      'PROXY protocol header required on the TCP and TLS listeners (off, v1, v2, any): behind a TCP load balancer, the client address it names is the one limits and logs use. When on, the port must be reachable from the load balancer only.',
    ),
    proxyTrusted: setting(
      'MQTT_PROXY_TRUSTED',
      [] as readonly string[],
      addressList,
      'Comma-separated addresses or CIDR ranges of the load balancers allowed to connect when MQTT_PROXY_PROTOCOL is on (empty = any).',
    ),
    connectTimeoutMs: setting(
      'MQTT_CONNECT_TIMEOUT_MS',
      10000,
      int(1000, 600000),
      'Time a new connection has to finish its TLS handshake and send CONNECT, milliseconds.',
    ),
    maxIdleSocketsPerAddress: setting(
      'MQTT_MAX_IDLE_SOCKETS_PER_ADDRESS',
      64,
      int(1, 1000000),
      'Connections from one client address that have not yet authenticated; more are closed at once.',
    ),
    authMaxFailures: setting(
      'MQTT_AUTH_MAX_FAILURES',
      10,
      int(1, 1000000),
      'Failed CONNECTs from one client address within the window, reserved before the secret check; then the address is refused outright.',
    ),
    authFailureWindowMs: setting(
      'MQTT_AUTH_FAILURE_WINDOW_MS',
      60000,
      int(1000, 86400000),
      'Window of the failed-CONNECT limit, milliseconds.',
    ),
    authKnownDeviceMs: setting(
      'MQTT_AUTH_KNOWN_DEVICE_MS',
      86400000,
      int(0, 31536000000),
      "A device that authenticated from an address within this time is not held to that address's failure budget (NAT), milliseconds; 0 turns this off.",
    ),
    deviceConnectRate: setting(
      'MQTT_DEVICE_CONNECT_RATE',
      12,
      int(1, 1000000),
      'Credential checks per device id per minute, whatever their outcome, taken just before the check; more are refused (CONNACK 3).',
    ),
    authConcurrency: setting(
      'MQTT_AUTH_CONCURRENCY',
      2,
      int(1, 64),
      'Secret checks (scrypt) running at once per broker; the others wait their turn, one address after another.',
    ),
    authMaxPendingPerAddress: setting(
      'MQTT_AUTH_MAX_PENDING_PER_ADDRESS',
      64,
      int(1, 100000),
      'CONNECTs from one client address waiting for or in a secret check; more are refused (CONNACK 3).',
    ),
    authMaxPending: setting(
      'MQTT_AUTH_MAX_PENDING',
      1000,
      int(1, 1000000),
      'CONNECTs waiting for or in a secret check, all addresses together; more are refused (CONNACK 3).',
    ),
    authMaxWaitMs: setting(
      'MQTT_AUTH_MAX_WAIT_MS',
      5000,
      int(100, 600000),
      'Longest a CONNECT waits for a secret check to start, milliseconds; then it is refused (CONNACK 3).',
    ),
    maxSessionsPerDevice: setting(
      'MQTT_MAX_SESSIONS_PER_DEVICE',
      4,
      int(1, 10000),
      'Client ids one device holds at once, connected or persistent; the oldest offline persistent session gives way to a new one.',
    ),
    sessionExpiryMs: setting(
      'MQTT_SESSION_EXPIRY_MS',
      86400000,
      int(1000, 31536000000),
      'An offline persistent session (CleanSession=0) is deleted after this long, milliseconds.',
    ),
    sessionMaxSubscriptions: setting(
      'MQTT_SESSION_MAX_SUBSCRIPTIONS',
      16,
      int(0, 10000),
      'Subscriptions one session may hold; more are refused (SUBACK 0x80).',
    ),
    sessionMaxQueued: setting(
      'MQTT_SESSION_MAX_QUEUED',
      100,
      int(0, 1000000),
      'Messages queued for one offline persistent session; more are not queued.',
    ),
    sessionMaxQueuedBytes: setting(
      'MQTT_SESSION_MAX_QUEUED_BYTES',
      1048576,
      int(0, 1073741824),
      'Payload bytes queued for one offline persistent session (1 MiB); more are not queued.',
    ),
    deviceMaxRate: setting(
      'MQTT_DEVICE_MAX_RATE',
      50,
      int(1, 1000000),
      'Sustained PUBLISH rate allowed per device, messages per second.',
    ),
    deviceBurst: setting(
      'MQTT_DEVICE_BURST',
      200,
      int(1, 10000000),
      'PUBLISH burst allowed per device above the sustained rate, messages.',
    ),
    backlogHigh: setting(
      'BROKER_BACKLOG_HIGH',
      2000,
      int(1, 100000000),
      'High-water mark: jobs waiting in the ingest and fhir queues above which brokers admit PUBLISHes at the measured drain rate.',
    ),
    backlogLow: setting(
      'BROKER_BACKLOG_LOW',
      1000,
      int(0, 100000000),
      'Low-water mark: jobs waiting at which brokers admit PUBLISHes freely again (below BROKER_BACKLOG_HIGH).',
    ),
    sessionRecheckMs: setting(
      'MQTT_SESSION_RECHECK_MS',
      15000,
      int(1000, 3600000),
      "How often a broker checks its open connections' credentials against the registry, milliseconds (a re-keyed or removed device is disconnected at once through Redis pub/sub; this catches a missed message).",
    ),
    backlogPollMs: setting(
      'BROKER_BACKLOG_POLL_MS',
      500,
      int(50, 60000),
      'How often a broker reads the backlog, milliseconds.',
    ),
    backlogMaxWaitMs: setting(
      'BROKER_BACKPRESSURE_MAX_WAIT_MS',
      5000,
      int(100, 600000),
      'Longest a PUBLISH waits for admission over the high-water mark, milliseconds: acknowledgements slow down, never stop for longer.',
    ),
  },
  input: {
    maxJsonDepth: setting(
      'INPUT_MAX_JSON_DEPTH',
      32,
      int(1, 10000),
      'Deepest nesting of objects and arrays accepted in a payload.',
    ),
    maxArrayLength: setting(
      'INPUT_MAX_ARRAY_LENGTH',
      10000,
      int(1, 10000000),
      'Most elements in one JSON array of a payload.',
    ),
    maxFutureMs: setting(
      'INPUT_MAX_FUTURE_MS',
      300000,
      int(0, 31536000000),
      'Latest accepted device timestamp after broker receipt, milliseconds (5 min: clock skew).',
    ),
    maxAgeMs: setting(
      'INPUT_MAX_AGE_MS',
      2592000000,
      int(0, 3153600000000),
      'Oldest accepted device timestamp before broker receipt, milliseconds (30 days: store-and-forward).',
    ),
  },
  values: {
    plausibilityLimits: setting(
      'PLAUSIBILITY_LIMITS',
      DEFAULT_LIMITS,
      (raw) => parseLimits(raw),
      'Physiological plausibility limits by LOINC or MDC code, changing the sourced defaults (docs/mappings.md#plausibility): `CODE=(low,high) UCUM` or `CODE=off`, separated by `;` — e.g. `8867-4=(0,250] /min;29463-7=off`. A value outside is kept, flagged (status preliminary, interpretation HX/LX) and counted.',
    ),
    windowTimeZone: setting(
      'WINDOW_TIME_ZONE',
      'UTC',
      timeZone,
      "IANA time zone whose local days bound daily windows (periodInterval 1440), e.g. `Europe/Berlin`: a day of steps is the patient's day.",
    ),
    medtechEnvelope: setting(
      'MEDTECH_ENVELOPE',
      NO_ENVELOPE,
      parseEnvelopePolicy,
      "Where MedTech templates' `Properties` come from over MQTT 3.1.1 (docs/mappings.md#the-envelope): `none`; `topic:<pattern>` — named topic levels, e.g. `topic:devices/+/telemetry/{patientId}`; `field:<member>` — a member of the payload object holding the properties, removed from `Body`; `eventhub` — the payload is a bridged Event Hubs / IoT Hub event `{Body, Properties, SystemProperties}` (its `iothub-connection-device-id` is a claim checked like a gateway's, its `iothub-creation-time-utc` the IotJsonPathContent time).",
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
      'Most Observations in one transaction Bundle (measured best on HAPI: docs/performance.md).',
    ),
    concurrencyMax: setting(
      'FHIR_CONCURRENCY_MAX',
      8,
      int(1, 256),
      'Most write Bundles a worker process keeps in flight; the number in flight adapts below it to the server latency (AIMD, docs/performance.md). Every other request to the FHIR server (reads, searches, Patient and Device writes) is bounded by it too, separately: at most twice this many requests per process in all.',
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
    identityResolution: setting(
      'IDENTITY_RESOLUTION',
      'Create',
      oneOf('Create', 'Lookup', 'LookupWithEncounter'),
      'Create: the patient is the one associated with the device at the reading time (iomt devices assign; docs/associations.md), Device and DeviceUseStatements written from that history; Lookup: the FHIR Device must exist and name its Patient; LookupWithEncounter: also the Encounter.',
    ),
    createPatients: setting(
      'FHIR_CREATE_PATIENTS',
      false,
      bool,
      'Create mode: true lets the pipeline create any Patient an association names; false (default) needs the Patient to exist on the FHIR server, or the association to mark it new (--new-patient), so a mistyped id never becomes a phantom Patient.',
    ),
    subjectCacheTtlS: setting(
      'FHIR_SUBJECT_CACHE_TTL_S',
      600,
      int(0, 86400),
      'How long a FHIR writer remembers that a Patient or Device exists, seconds (10 min); after it, or at once when the server refuses an Observation because its Patient or Device is missing or deleted, the subject is ensured again (re-created only where the pipeline may create it). 0 checks on every job.',
    ),
  },
  fhirAuth: {
    mode: setting(
      'FHIR_AUTH',
      'none',
      oneOf('none', 'bearer', 'basic', 'client-secret', 'smart-backend'),
      'How the pipeline authenticates to the FHIR server (docs/deployment.md#fhir-authentication): none; bearer (a static token); basic (HTTP basic); client-secret (OAuth 2.0 client credentials with a client secret); smart-backend (SMART Backend Services: client credentials with a signed JWT assertion, private_key_jwt).',
    ),
    bearerTokenFile: setting(
      'FHIR_BEARER_TOKEN_FILE',
      undefined as string | undefined,
      optionalStr,
      'FHIR_AUTH=bearer: file holding the static bearer token (read at start, never logged).',
    ),
    username: setting(
      'FHIR_USERNAME',
      undefined as string | undefined,
      optionalStr,
      'FHIR_AUTH=basic: user name.',
    ),
    passwordFile: setting(
      'FHIR_PASSWORD_FILE',
      undefined as string | undefined,
      optionalStr,
      'FHIR_AUTH=basic: file holding the password (read at start, never logged).',
    ),
    clientId: setting(
      'FHIR_CLIENT_ID',
      undefined as string | undefined,
      optionalStr,
      'FHIR_AUTH=client-secret or smart-backend: the client id registered at the authorization server.',
    ),
    clientSecret: setting(
      'FHIR_CLIENT_SECRET',
      undefined as string | undefined,
      optionalStr,
      'FHIR_AUTH=client-secret: the client secret (never logged; prefer FHIR_CLIENT_SECRET_FILE).',
    ),
    clientSecretFile: setting(
      'FHIR_CLIENT_SECRET_FILE',
      undefined as string | undefined,
      optionalStr,
      'FHIR_AUTH=client-secret: file holding the client secret (read at start, never logged).',
    ),
    clientSecretMethod: setting(
      'FHIR_CLIENT_SECRET_METHOD',
      'basic',
      oneOf('basic', 'post'),
      'FHIR_AUTH=client-secret: how the secret goes to the token endpoint: basic (client_secret_basic, an Authorization header) or post (client_secret_post, in the form body).',
    ),
    privateKeyFile: setting(
      'FHIR_PRIVATE_KEY_FILE',
      undefined as string | undefined,
      optionalStr,
      'FHIR_AUTH=smart-backend: file holding the private key that signs the client assertion: PEM (PKCS#8, PKCS#1 or SEC1) or a private JWK; RSA of at least 2048 bits for RS384, EC P-384 for ES384 (never logged). `iomt fhir-auth jwks` prints its public key set.',
    ),
    keyAlg: setting(
      'FHIR_KEY_ALG',
      'RS384',
      oneOf('RS384', 'ES384'),
      'FHIR_AUTH=smart-backend: signature algorithm of the client assertion (SMART Backend Services allows RS384 and ES384).',
    ),
    keyId: setting(
      'FHIR_KEY_ID',
      undefined as string | undefined,
      optionalStr,
      "FHIR_AUTH=smart-backend: the `kid` of the key as registered (unset = the key's RFC 7638 JWK thumbprint, which `iomt fhir-auth jwks` also prints).",
    ),
    jwksUrl: setting(
      'FHIR_JWKS_URL',
      undefined as string | undefined,
      optionalUrl('https:', 'http:'),
      "FHIR_AUTH=smart-backend: the URL where the client's public key set is published, sent as the assertion's `jku` header (only if it was registered with the authorization server).",
    ),
    tokenUrl: setting(
      'FHIR_TOKEN_URL',
      undefined as string | undefined,
      optionalUrl('https:', 'http:'),
      "OAuth token endpoint (unset = the token_endpoint of FHIR_URL's /.well-known/smart-configuration).",
    ),
    scope: setting(
      'FHIR_SCOPE',
      undefined as string | undefined,
      optionalStr,
      'OAuth scope asked for, space-separated (e.g. `system/Observation.cu system/Patient.rs system/Device.cru`; Azure: `https://<fhir-host>/.default`); unset = none sent, the registration decides.',
    ),
    tokenRefreshSkewS: setting(
      'FHIR_TOKEN_REFRESH_SKEW_S',
      60,
      int(0, 3600),
      'An access token is renewed this long before it expires, seconds (at most a quarter of its lifetime before).',
    ),
  },
  clickhouse: {
    url: setting(
      'CLICKHOUSE_URL',
      undefined as string | undefined,
      optionalUrl('http:', 'https:'),
      'ClickHouse server; unset = embedded engine (chdb).',
    ),
    cluster: setting(
      'CLICKHOUSE_CLUSTER',
      undefined as string | undefined,
      optionalClusterName,
      'A ClickHouse cluster (its remote_servers name) to lay the schema out on: DDL ON CLUSTER, Replicated tables sharded by patient, Distributed tables under the plain names (docs/deployment.md "Scale out"); needs CLICKHOUSE_URL. Unset = one server.',
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
    insertWaitMs: setting(
      'CLICKHOUSE_INSERT_WAIT_MS',
      1000,
      int(0, 60000),
      "Longest time the mirror holds a job's rows so that the jobs arriving meanwhile share one insert, milliseconds (an insert costs the engine about the same for 100 rows as for 1,000): analysts see a reading at most this much after its FHIR commit; 2500 takes about half the engine's CPU per Observation. 0 inserts at once. FHIR writes never wait on it.",
    ),
    insertRows: setting(
      'CLICKHOUSE_INSERT_ROWS',
      10000,
      int(1, 10000),
      'Rows (Observations and message outcomes) whose waiting sends the insert at once, without waiting out CLICKHOUSE_INSERT_WAIT_MS (at most 10,000, what one insert carries).',
    ),
    retentionDays: setting(
      'CLICKHOUSE_RETENTION_DAYS',
      0,
      int(0, 36500),
      'Days raw analytics rows (observations, components, samples, device_messages) are kept after their time; 0 keeps them forever.',
    ),
    rollupRetentionDays: setting(
      'CLICKHOUSE_ROLLUP_RETENTION_DAYS',
      0,
      int(0, 36500),
      'Days the per-minute and per-hour rollups are kept; 0 keeps them forever.',
    ),
    queryTimeoutS: setting(
      'CLICKHOUSE_QUERY_TIMEOUT_S',
      30,
      int(1, 3600),
      'Longest analyst query, seconds (max_execution_time; a server also ends the request 10 s later): QueryTimeout after it.',
    ),
    analystUser: setting(
      'CLICKHOUSE_ANALYST_USER',
      'analyst',
      str,
      'Server mode: the read-only ClickHouse user that runs analyst SQL (deploy/clickhouse/users.d/analyst.xml).',
    ),
    analystPassword: setting(
      'CLICKHOUSE_ANALYST_PASSWORD',
      '',
      str,
      'Server mode: password of CLICKHOUSE_ANALYST_USER (never logged).',
    ),
    analystMaxMemoryBytes: setting(
      'CLICKHOUSE_ANALYST_MAX_MEMORY_BYTES',
      1073741824,
      int(1048576, 1099511627776),
      'Embedded engine: memory one analyst query may use, bytes (1 GiB); more is refused (server mode: the analyst profile).',
    ),
    analystMaxResultRows: setting(
      'CLICKHOUSE_ANALYST_MAX_RESULT_ROWS',
      1000000,
      int(1, 1000000000),
      'Embedded engine: rows an analyst result may hold; a larger result is refused, not truncated.',
    ),
    analystMaxResultBytes: setting(
      'CLICKHOUSE_ANALYST_MAX_RESULT_BYTES',
      104857600,
      int(1024, 1099511627776),
      'Embedded engine: uncompressed bytes an analyst result may hold (100 MiB); a larger result is refused.',
    ),
  },
  mappings: {
    dir: setting('MAPPINGS_DIR', './mappings', str, 'Folder with device/ and fhir/ templates.'),
    unmatched: setting(
      'MAPPINGS_UNMATCHED',
      'dead-letter',
      oneOf('dead-letter', 'count'),
      'A message no device template matches: dead-letter it (TemplateNotMatched) or only count it.',
    ),
    reload: setting(
      'MAPPINGS_RELOAD',
      'explicit',
      oneOf('explicit', 'watch', 'off'),
      'explicit: workers run the version activated through Redis (iomt mappings activate); watch: also propose a changed folder and activate it when it passes the gates (development); off: load the folder once, without Redis.',
    ),
    reloadPollMs: setting(
      'MAPPINGS_RELOAD_POLL_MS',
      2000,
      int(200, 600000),
      'How often a worker checks the folder and the active version in Redis, milliseconds.',
    ),
    shadowMessages: setting(
      'MAPPINGS_SHADOW_MESSAGES',
      500,
      int(0, 1000000),
      'Recent messages per affected device template file that the shadow run maps with both versions.',
    ),
    shadowScanMessages: setting(
      'MAPPINGS_SHADOW_SCAN_MESSAGES',
      20000,
      int(0, 10000000),
      'Most recent device_messages rows the shadow run reads to find them.',
    ),
    shadowDeadLetters: setting(
      'MAPPINGS_SHADOW_DEAD_LETTERS',
      1000,
      int(0, 1000000),
      'Most recent dead letters holding a raw message that the shadow run also maps.',
    ),
    gateMaxNewDeadLetters: setting(
      'MAPPINGS_GATE_MAX_NEW_DEAD_LETTERS',
      0,
      int(0, 1000000),
      'Shadow-run messages the active version maps and a candidate would dead-letter (or leave unmatched) above which activation is refused.',
    ),
  },
  worker: {
    concurrency: setting(
      'WORKER_CONCURRENCY',
      4,
      int(1, 256),
      'Jobs processed at once per queue per worker process (the FHIR stage: WORKER_FHIR_CONCURRENCY).',
    ),
    fhirConcurrency: setting(
      'WORKER_FHIR_CONCURRENCY',
      32,
      int(1, 1024),
      'Jobs the FHIR stage holds at once per worker process. Jobs that wait for a Bundle slot share the next Bundle (group commit), so many small jobs cost one transaction; the Bundles in flight stay under FHIR_CONCURRENCY_MAX.',
    ),
    analyticsConcurrency: setting(
      'WORKER_ANALYTICS_CONCURRENCY',
      32,
      int(1, 1024),
      'Jobs the analytics stage holds at once per worker process; the jobs that arrive within CLICKHOUSE_INSERT_WAIT_MS share one insert.',
    ),
    lockMs: setting(
      'WORKER_LOCK_MS',
      30000,
      int(1000, 600000),
      "Job lock of a worker, milliseconds; a crashed worker's jobs are retried after about this long.",
    ),
    retryCapMs: setting(
      'WORKER_RETRY_MAX_DELAY_MS',
      60000,
      int(100, 3600000),
      'Longest wait between two retries of a job, milliseconds (backoff doubles from 0.5 s).',
    ),
    maxTransientRetries: setting(
      'WORKER_MAX_TRANSIENT_RETRIES',
      200,
      int(1, 100000),
      'Rounds a job reschedules what failed transiently (FHIR or ClickHouse down) before dead-lettering it with the transient code for replay; with the backoff capped at WORKER_RETRY_MAX_DELAY_MS, 200 rounds last about 3 hours.',
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
      'Bearer token for the admin API, at least 16 characters (never logged).',
    ),
    analystToken: setting(
      'ANALYST_TOKEN',
      undefined as string | undefined,
      optionalStr,
      'Bearer token that may only run analyst SQL (POST /api/analytics/query), at least 16 characters (never logged).',
    ),
    maxBodyBytes: setting(
      'ADMIN_MAX_BODY_BYTES',
      1048576,
      int(1024, 104857600),
      'Largest admin API request body, bytes (1 MiB); a larger one is answered 413 PayloadTooLarge.',
    ),
    readyTimeoutMs: setting(
      'ADMIN_READY_TIMEOUT_MS',
      2000,
      int(100, 60000),
      'Longest wait for one /readyz check, milliseconds; a check still pending then reports a timeout.',
    ),
    consoleIdleMs: setting(
      'ADMIN_CONSOLE_IDLE_MS',
      900000,
      int(10000, 86400000),
      'Idle timeout of an operator console session, milliseconds (15 min): a session unused this long is signed out.',
    ),
    consoleSignInFailures: setting(
      'ADMIN_CONSOLE_SIGNIN_FAILURES',
      10,
      int(1, 1000000),
      'Wrong admin tokens one client address may give the console sign-in per ADMIN_CONSOLE_SIGNIN_WINDOW_S; more are answered 429 RateLimited (shared by every admin process through Redis).',
    ),
    consoleSignInWindowS: setting(
      'ADMIN_CONSOLE_SIGNIN_WINDOW_S',
      900,
      int(1, 86400),
      'Window of ADMIN_CONSOLE_SIGNIN_FAILURES, seconds (15 min); an address over the budget waits until its window ends.',
    ),
    auth: setting(
      'ADMIN_AUTH',
      'token',
      oneOf('token', 'none'),
      'token: the admin role needs ADMIN_TOKEN; none: no token at all (development only).',
    ),
  },
  metrics: {
    host: setting(
      'METRICS_HOST',
      '127.0.0.1',
      str,
      'Address of the observability server (METRICS_PORT).',
    ),
    port: setting(
      'METRICS_PORT',
      undefined as number | undefined,
      optionalInt(0, 65535),
      "Observability server of this process, whatever its roles: /metrics, /healthz and /readyz, with the admin API's token rule (unset = none; the admin role serves them on ADMIN_PORT too; 0 picks a free port).",
    ),
  },
  tracing: {
    exporter: setting(
      'OTEL_TRACES_EXPORTER',
      'none',
      oneOf('none', 'otlp'),
      'OpenTelemetry traces: none (the default: no exporter, no network, nothing recorded) or otlp (OTLP/HTTP JSON to OTEL_EXPORTER_OTLP_ENDPOINT; docs/operations.md, traces).',
    ),
    endpoint: setting(
      'OTEL_EXPORTER_OTLP_ENDPOINT',
      'http://localhost:4318',
      url('http:', 'https:'),
      'OTLP/HTTP collector base URL; spans go to its /v1/traces. Used only when OTEL_TRACES_EXPORTER=otlp.',
    ),
    serviceName: setting(
      'OTEL_SERVICE_NAME',
      undefined as string | undefined,
      optionalStr,
      "service.name of this process's spans (unset = iomt-<role>: iomt-broker, iomt-worker, iomt-admin, or iomt-all for every role).",
    ),
    fhirTraceparent: setting(
      'FHIR_SEND_TRACEPARENT',
      true,
      bool,
      'With traces on, send the W3C traceparent header on each FHIR request so the FHIR server can join the trace; false when the server or a gateway in front refuses unknown headers.',
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

/** Rules that involve more than one setting, each naming its keys. */
function crossCheck(c: Record<string, Record<string, unknown>>): string[] {
  const problems: string[] = [];
  const mqtt = c.mqtt ?? {};
  if (Number(mqtt.backlogLow) >= Number(mqtt.backlogHigh))
    problems.push('BROKER_BACKLOG_LOW: must be below BROKER_BACKLOG_HIGH');
  if ((mqtt.tlsCertFile === undefined) !== (mqtt.tlsKeyFile === undefined))
    problems.push('MQTT_TLS_CERT_FILE, MQTT_TLS_KEY_FILE: set both or neither');
  if (mqtt.tlsClientCert !== 'none' && mqtt.tlsCaFile === undefined)
    problems.push('MQTT_TLS_CA_FILE: required when MQTT_TLS_CLIENT_CERT is optional or required');
  if (c.clickhouse?.cluster !== undefined && c.clickhouse.url === undefined)
    problems.push('CLICKHOUSE_CLUSTER: needs CLICKHOUSE_URL (the embedded engine is one node)');
  const token = c.admin?.token;
  if (typeof token === 'string' && token.length < 16)
    problems.push('ADMIN_TOKEN: must be at least 16 characters (e.g. openssl rand -hex 32)');
  const analystToken = c.admin?.analystToken;
  if (typeof analystToken === 'string' && analystToken.length < 16)
    problems.push('ANALYST_TOKEN: must be at least 16 characters (e.g. openssl rand -hex 32)');
  if (typeof analystToken === 'string' && analystToken === token)
    problems.push('ANALYST_TOKEN: must differ from ADMIN_TOKEN (it grants less)');
  problems.push(...fhirAuthProblems(c.fhirAuth ?? {}));
  return problems;
}

/** The settings FHIR_AUTH needs, each named. Files are read (and keys checked) by src/fhir/auth.ts. */
function fhirAuthProblems(a: Record<string, unknown>): string[] {
  const problems: string[] = [];
  const need = (key: string, value: unknown, why: string) => {
    if (value === undefined) problems.push(`${key}: required when ${why}`);
  };
  switch (a.mode) {
    case 'bearer':
      need('FHIR_BEARER_TOKEN_FILE', a.bearerTokenFile, 'FHIR_AUTH=bearer');
      break;
    case 'basic':
      need('FHIR_USERNAME', a.username, 'FHIR_AUTH=basic');
      need('FHIR_PASSWORD_FILE', a.passwordFile, 'FHIR_AUTH=basic');
      break;
    case 'client-secret':
      need('FHIR_CLIENT_ID', a.clientId, 'FHIR_AUTH=client-secret');
      if ((a.clientSecret === undefined) === (a.clientSecretFile === undefined))
        problems.push(
          'FHIR_CLIENT_SECRET, FHIR_CLIENT_SECRET_FILE: set one of them when FHIR_AUTH=client-secret',
        );
      break;
    case 'smart-backend':
      need('FHIR_CLIENT_ID', a.clientId, 'FHIR_AUTH=smart-backend');
      need('FHIR_PRIVATE_KEY_FILE', a.privateKeyFile, 'FHIR_AUTH=smart-backend');
      break;
  }
  return problems;
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
  problems.push(...crossCheck(out));
  if (problems.length > 0) {
    throw new PipelineError('ConfigInvalid', `invalid configuration:\n  ${problems.join('\n  ')}`, {
      details: { problems },
    });
  }
  for (const group of Object.values(out)) Object.freeze(group);
  return Object.freeze(out) as unknown as Config;
}
