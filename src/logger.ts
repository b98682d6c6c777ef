/**
 * JSON logs without patient data or secrets. Redaction is configured here, once,
 * so a careless `log.info({ payload })` anywhere still prints "[redacted]".
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

export function createLogger(
  level: string,
  options: { name?: string; destination?: DestinationStream } = {},
): Logger {
  const opts = {
    level,
    base: { name: options.name ?? 'iomt' },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return options.destination ? pino(opts, options.destination) : pino(opts);
}
