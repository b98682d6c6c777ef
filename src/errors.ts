/**
 * One error taxonomy for the whole pipeline. Every code has a stage, a default
 * message and whether retrying can help; `queueDecision` turns any error into
 * what a queue stage does next, `httpAnswer` into what the admin API answers.
 * docs/errors.md documents every code (a test keeps the two in step).
 */

export type Stage = 'config' | 'broker' | 'normalize' | 'fhir' | 'analytics' | 'admin' | 'cli';

interface CodeSpec {
  readonly stage: Stage;
  readonly retryable: boolean;
  readonly http: number;
  readonly message: string;
}

export const ERROR_CODES = {
  ConfigInvalid: {
    stage: 'config',
    retryable: false,
    http: 500,
    message: 'The configuration is invalid',
  },
  PortInUse: {
    stage: 'config',
    retryable: false,
    http: 500,
    message: 'A listening port is already taken',
  },
  NotAuthorized: {
    stage: 'broker',
    retryable: false,
    http: 401,
    message: 'Device credentials refused',
  },
  TopicNotAllowed: {
    stage: 'broker',
    retryable: false,
    http: 403,
    message: 'A device may publish only under its own topic',
  },
  PayloadTooLarge: {
    stage: 'broker',
    retryable: false,
    http: 413,
    message: 'The payload exceeds the size limit',
  },
  RateLimited: {
    stage: 'broker',
    retryable: true,
    http: 429,
    message: 'Too many messages or failed connection attempts',
  },
  InvalidPayload: {
    stage: 'normalize',
    retryable: false,
    http: 400,
    message: 'The payload is not a JSON object or array',
  },
  TemplateNotMatched: {
    stage: 'normalize',
    retryable: false,
    http: 422,
    message: 'No device template matched the message',
  },
  TemplateExpression: {
    stage: 'normalize',
    retryable: false,
    http: 422,
    message: 'A template expression failed',
  },
  TemplateInvalid: {
    stage: 'normalize',
    retryable: false,
    http: 422,
    message: 'A mapping template is invalid',
  },
  RequiredValueMissing: {
    stage: 'normalize',
    retryable: false,
    http: 422,
    message: 'A required value is missing',
  },
  InvalidTimestamp: {
    stage: 'normalize',
    retryable: false,
    http: 422,
    message: 'The timestamp is missing or does not parse',
  },
  TimestampOutOfRange: {
    stage: 'normalize',
    retryable: false,
    http: 422,
    message: 'The timestamp is too far in the future or the past',
  },
  InvalidValue: {
    stage: 'normalize',
    retryable: false,
    http: 422,
    message: 'A value is not a finite number where the template expects a quantity',
  },
  UnitNotConvertible: {
    stage: 'normalize',
    retryable: false,
    http: 422,
    message: "The device's unit cannot be read or converted to the template's UCUM unit",
  },
  FhirTemplateMissing: {
    stage: 'normalize',
    retryable: false,
    http: 422,
    message: 'No FHIR template for the measurement type',
  },
  DeviceNotFound: {
    stage: 'normalize',
    retryable: false,
    http: 404,
    message: 'The device is not registered',
  },
  PatientNotFound: {
    stage: 'normalize',
    retryable: false,
    http: 404,
    message: 'The Patient does not exist on the FHIR server',
  },
  NoPatientAssociated: {
    stage: 'normalize',
    retryable: false,
    http: 422,
    message: 'No patient was associated with the device at the time of the reading',
  },
  GatewayChildMissing: {
    stage: 'normalize',
    retryable: false,
    http: 422,
    message: 'A gateway reading names no device it was taken by',
  },
  DeviceIdMissing: {
    stage: 'normalize',
    retryable: false,
    http: 422,
    message: "The template's device expression yielded nothing",
  },
  PatientIdMissing: {
    stage: 'normalize',
    retryable: false,
    http: 422,
    message: "The template's patient expression yielded nothing",
  },
  EncounterIdMissing: {
    stage: 'normalize',
    retryable: false,
    http: 422,
    message: "The template's encounter expression yielded nothing",
  },
  MessagePropertyMissing: {
    stage: 'normalize',
    retryable: false,
    http: 422,
    message:
      'A template reads a message property (Properties / SystemProperties) for the device, patient or encounter, and the message does not carry it',
  },
  AssociationChanged: {
    stage: 'fhir',
    retryable: false,
    http: 409,
    message: 'The association at the reading time changed since the Observation was made',
  },
  AssociationConflict: {
    stage: 'admin',
    retryable: false,
    http: 409,
    message: 'The change would move time already associated with a patient',
  },
  DeviceExists: {
    stage: 'admin',
    retryable: false,
    http: 409,
    message: 'A device with that id is already registered',
  },
  InvalidArgument: {
    stage: 'cli',
    retryable: false,
    http: 400,
    message: 'An argument or request field is invalid',
  },
  PatientDeviceMismatch: {
    stage: 'normalize',
    retryable: false,
    http: 409,
    message: 'The payload names a patient other than the one the FHIR Device names',
  },
  EncounterNotFound: {
    stage: 'normalize',
    retryable: false,
    http: 404,
    message: 'No Encounter with the identifier the reading names',
  },
  DeviceSpoofing: {
    stage: 'normalize',
    retryable: false,
    http: 403,
    message: 'The payload names another device or patient',
  },
  FhirRejected: {
    stage: 'fhir',
    retryable: false,
    http: 422,
    message: 'The FHIR server rejected the resource',
  },
  FhirUnavailable: {
    stage: 'fhir',
    retryable: true,
    http: 503,
    message: 'The FHIR server is unreachable or overloaded',
  },
  ClickHouseUnavailable: {
    stage: 'analytics',
    retryable: true,
    http: 503,
    message: 'ClickHouse is unreachable',
  },
  QueueUnavailable: {
    stage: 'broker',
    retryable: true,
    http: 503,
    message: 'Redis is unreachable',
  },
  QueryRefused: { stage: 'admin', retryable: false, http: 400, message: 'The query was refused' },
  QueryTimeout: {
    stage: 'admin',
    retryable: false,
    http: 504,
    message: 'The query ran longer than its time limit',
  },
  BackfillNotFound: {
    stage: 'admin',
    retryable: false,
    http: 404,
    message: 'No backfill job with that id',
  },
  DeadLetterNotFound: {
    stage: 'cli',
    retryable: false,
    http: 404,
    message: 'No dead letter with that id',
  },
  MappingVersionNotFound: {
    stage: 'admin',
    retryable: false,
    http: 404,
    message: 'No stored template version matches',
  },
  GateRefused: {
    stage: 'admin',
    retryable: false,
    http: 422,
    message: 'The candidate templates did not pass the activation gates',
  },
  ActivationConflict: {
    stage: 'admin',
    retryable: false,
    http: 409,
    message: 'The active template version changed meanwhile',
  },
  AdminUnavailable: {
    stage: 'cli',
    retryable: true,
    http: 503,
    message: 'The admin API did not answer',
  },
  ClickHouseRejected: {
    stage: 'analytics',
    retryable: false,
    http: 500,
    message: 'ClickHouse refused a write',
  },
  NotServedHere: {
    stage: 'admin',
    retryable: false,
    http: 404,
    message: 'This process does not serve that endpoint',
  },
  CsrfRefused: {
    stage: 'admin',
    retryable: false,
    http: 403,
    message: 'A change from a console session without its CSRF token',
  },
  // Not retried: an unexpected error is a bug in one item, not a passing fault. The
  // item is dead-lettered on its own and can be replayed once the bug is fixed;
  // faults of the infrastructure map to their own, retryable codes.
  Internal: { stage: 'admin', retryable: false, http: 500, message: 'Unexpected internal error' },
} as const satisfies Record<string, CodeSpec>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface PipelineErrorOptions {
  readonly cause?: unknown;
  /** Structured facts safe to log: never payload values or patient data. */
  readonly details?: Readonly<Record<string, unknown>>;
  /** Overrides the code's stage when the same code arises elsewhere. */
  readonly stage?: Stage;
  /** Milliseconds the server asked us to wait (Retry-After). */
  readonly retryAfterMs?: number;
}

export class PipelineError extends Error {
  readonly code: ErrorCode;
  readonly stage: Stage;
  readonly retryable: boolean;
  readonly details: Readonly<Record<string, unknown>>;
  readonly retryAfterMs: number | undefined;

  constructor(code: ErrorCode, message?: string, options: PipelineErrorOptions = {}) {
    const spec = ERROR_CODES[code];
    super(
      message ?? spec.message,
      options.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = 'PipelineError';
    this.code = code;
    this.stage = options.stage ?? spec.stage;
    this.retryable = spec.retryable;
    this.details = options.details ?? {};
    this.retryAfterMs = options.retryAfterMs;
  }
}

export function isPipelineError(err: unknown): err is PipelineError {
  return err instanceof PipelineError;
}

/** Wraps anything thrown into a PipelineError, keeping the original as `cause`. */
/**
 * A bare error from the connection a job stands on (ioredis, a socket): the
 * infrastructure failed, not the code. Such an error is QueueUnavailable,
 * retried, never taken for a bug that would dead-letter the reading.
 */
const CONNECTION_ERROR =
  /MaxRetriesPerRequest|Connection is closed|Stream isn't writeable|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|READONLY|LOADING|CLUSTERDOWN|TRYAGAIN|MASTERDOWN/;

function isConnectionError(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const e = err as { name?: unknown; message?: unknown; code?: unknown };
  const text = [e.name, e.message, e.code].filter((x) => typeof x === 'string').join(' ');
  return CONNECTION_ERROR.test(text);
}

export function toPipelineError(err: unknown, fallback: ErrorCode = 'Internal'): PipelineError {
  if (err instanceof PipelineError) return err;
  const message = err instanceof Error ? err.message : String(err);
  const code = fallback === 'Internal' && isConnectionError(err) ? 'QueueUnavailable' : fallback;
  return new PipelineError(code, message, { cause: err });
}

/**
 * What a library error raised on payload data was, in our words: its code and
 * position when the library gives them (JSONata: "JSONata error D3030 at
 * character 8"), else its class. Never its message: library messages quote the
 * data they choked on (D3030 reads `Unable to cast value to a number:
 * "MRN-99812"`), and reasons are logged and kept in dead letters.
 */
export function foreignErrorKind(err: unknown): string {
  const e = (typeof err === 'object' && err !== null ? err : {}) as {
    code?: unknown;
    position?: unknown;
  };
  const code = typeof e.code === 'string' && /^[A-Z]\d{4}$/.test(e.code) ? e.code : undefined;
  if (code !== undefined) {
    const at = typeof e.position === 'number' ? ` at character ${e.position}` : '';
    return `JSONata error ${code}${at}`;
  }
  const name = err instanceof Error ? err.name : typeof err;
  return `the expression failed (${name})`;
}

export type QueueDecision =
  | { readonly action: 'retry'; readonly delayMs?: number }
  | { readonly action: 'dead-letter'; readonly code: ErrorCode };

/** The one place that decides what a queue stage does with a failure. */
export function queueDecision(err: unknown): QueueDecision {
  const e = toPipelineError(err);
  if (e.retryable) {
    return e.retryAfterMs === undefined
      ? { action: 'retry' }
      : { action: 'retry', delayMs: e.retryAfterMs };
  }
  return { action: 'dead-letter', code: e.code };
}

export interface HttpErrorBody {
  readonly error: { readonly code: ErrorCode; readonly message: string };
}

/** The one shape of an error answer on the admin API. */
export function httpAnswer(err: unknown): { status: number; body: HttpErrorBody } {
  const e = toPipelineError(err);
  return {
    status: ERROR_CODES[e.code].http,
    body: { error: { code: e.code, message: e.message } },
  };
}
