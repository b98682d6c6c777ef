/**
 * JSON logs without patient data, secrets or unbounded network strings. All of
 * it is configured here, once, so a careless call anywhere is still safe:
 *  - redaction: `log.info({ payload })` prints "[redacted]" (REDACTED_KEYS);
 *  - strings a client chose (device ids, client ids, usernames, topics) are cut
 *    to LOG_NETWORK_STRING_MAX characters (NETWORK_STRING_KEYS), so a 65 kB
 *    username makes a short line;
 *  - URLs lose their user and password in every string field and error
 *    message (`redis://user:secret@host` → `redis://[redacted]@host`).
 * Child loggers bind device, job and trace ids (never patient ids).
 */
import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

/** Keys whose values may hold PHI or secrets, at the top level and one level down. */
export const REDACTED_KEYS = [
  'payload',
  'body',
  'values',
  'observation',
  'observations',
  'patient',
  'patientId',
  'patientRef',
  'secret',
  'password',
  'token',
  'authorization',
] as const;

export const REDACT_PATHS = REDACTED_KEYS.flatMap((k) => [k, `*.${k}`]);

/** Longest string from the network written to a log, in characters (device ids are at most 128). */
export const LOG_NETWORK_STRING_MAX = 128;

/** Fields that carry strings a client chose; they are cut to LOG_NETWORK_STRING_MAX. */
export const NETWORK_STRING_KEYS = [
  'deviceId',
  'clientId',
  'username',
  'topic',
  'address',
  'gatewayId',
] as const;

/** `value` cut to `max` characters, saying how long it was. */
export function clip(value: string, max = LOG_NETWORK_STRING_MAX): string {
  return value.length <= max ? value : `${value.slice(0, max)}…[${value.length} chars]`;
}

// RFC 3986 §3.2.1: userinfo is everything between "//" and "@" in the authority.
const URL_USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)[^/?#@\s]*@/gi;

/** `text` with the user and password of every URL in it replaced. */
export function withoutCredentials(text: string): string {
  return text.includes('@') ? text.replace(URL_USERINFO, '$1[redacted]@') : text;
}

/** pino serializers, which (unlike formatters) also apply to child logger bindings. */
const NETWORK_SERIALIZERS = Object.fromEntries(
  NETWORK_STRING_KEYS.map((k) => [
    k,
    (v: unknown) => (typeof v === 'string' ? clip(withoutCredentials(v)) : v),
  ]),
);

function safeValue(value: unknown): unknown {
  if (typeof value === 'string') return withoutCredentials(value);
  if (value instanceof Error) {
    const e = pino.stdSerializers.err(value) as unknown as Record<string, unknown>;
    for (const k of ['message', 'stack'])
      if (typeof e[k] === 'string') e[k] = withoutCredentials(e[k]);
    return e;
  }
  return value;
}

/** pino `formatters.log`: every string field and error message of a line without URL credentials. */
export function safeFields(fields: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields)) out[k] = safeValue(v);
  return out;
}

export function createLogger(
  level: string,
  options: { name?: string; destination?: DestinationStream } = {},
): Logger {
  const opts = {
    level,
    base: { name: options.name ?? 'iomt' },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    formatters: { log: safeFields },
    serializers: { ...NETWORK_SERIALIZERS, err: pino.stdSerializers.err },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return options.destination ? pino(opts, options.destination) : pino(opts);
}
