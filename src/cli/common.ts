/**
 * Shared by the CLI commands: exit codes, one-line failures, Redis and the
 * admin API.
 *
 * Exit codes (docs/cli.md), the same for every command:
 *   0  success
 *   1  a check failed: templates with problems, a fixture mismatch, a gate that
 *      refused an activation, a message the templates refuse
 *   2  invalid input: unknown command or option, a bad argument or file, an
 *      unknown version or id, an invalid configuration
 *   3  a service is unavailable: Redis, ClickHouse, the FHIR server or the
 *      admin API did not answer (retrying later may work)
 *   4  internal error (a bug: please report it with the message)
 */
import type { Command } from '@commander-js/extra-typings';
import type { Config } from '../config.js';
import { ERROR_CODES, isPipelineError, PipelineError, type ErrorCode } from '../errors.js';
import { connect, parseRedisUrl, type RedisConnection } from '../redis.js';

export type Program = Command;

export const EXIT = {
  ok: 0,
  checkFailed: 1,
  invalidInput: 2,
  unavailable: 3,
  internal: 4,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** Codes that say the input (arguments, files, configuration, ids) is wrong. */
const INPUT_CODES: ReadonlySet<ErrorCode> = new Set([
  'ConfigInvalid',
  'PortInUse',
  'InvalidArgument',
  'MappingVersionNotFound',
  'DeadLetterNotFound',
  'NotAuthorized',
  'QueryRefused',
  'InvalidPayload',
]);

/** Node and ioredis network failures: the service did not answer. */
const NETWORK = /ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENOTFOUND|EAI_AGAIN|EPIPE/;

function isNetworkError(err: unknown): boolean {
  const e = err as { code?: unknown; name?: unknown; message?: unknown; cause?: unknown };
  if (typeof e?.code === 'string' && NETWORK.test(e.code)) return true;
  if (e?.name === 'MaxRetriesPerRequestError') return true;
  if (typeof e?.message === 'string' && /Connection is closed|connect ECONNREFUSED/.test(e.message))
    return true;
  return e?.cause !== undefined && e.cause !== err && isNetworkError(e.cause);
}

/** Files the user named that cannot be read, and other argument mistakes found by Node. */
function isInputError(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  return code === 'ENOENT' || code === 'EISDIR' || code === 'EACCES' || err instanceof SyntaxError;
}

/** The one mapping from an error to an exit code. */
export function exitCodeOf(err: unknown): ExitCode {
  if (isPipelineError(err)) {
    if (err.code === 'Internal')
      return isNetworkError(err.cause) ? EXIT.unavailable : EXIT.internal;
    if (err.retryable) return EXIT.unavailable;
    if (INPUT_CODES.has(err.code) || err.stage === 'config' || err.stage === 'cli')
      return EXIT.invalidInput;
    return EXIT.checkFailed;
  }
  if (isNetworkError(err)) return EXIT.unavailable;
  if (isInputError(err)) return EXIT.invalidInput;
  return EXIT.internal;
}

function messageOf(err: unknown): string {
  if (isPipelineError(err)) return `${err.code}: ${err.message}`;
  if (isNetworkError(err))
    return `a service did not answer: ${err instanceof Error ? err.message : String(err)}`;
  return err instanceof Error ? err.message : String(err);
}

/** Prints one line (`iomt: Code: message`) and exits with the error's code (see the table above). */
export function fail(err: unknown): never {
  process.stderr.write(`iomt: ${messageOf(err)}\n`);
  process.exit(exitCodeOf(err));
}

/** A check ran and said no: exit 1 once the output is written. */
export function checkFailed(): void {
  process.exitCode = EXIT.checkFailed;
}

/** Where Redis is, without the password a URL may carry. */
export function redisWhere(url: string): string {
  try {
    const t = parseRedisUrl(url);
    if (t.kind === 'single') {
      const u = new URL(t.url);
      return `${u.protocol}//${u.host}`;
    }
    const nodes = (t.kind === 'cluster' ? t.nodes : t.sentinels).map((n) => `${n.host}:${n.port}`);
    return `redis+${t.kind}://${nodes.join(',')}${t.kind === 'sentinel' ? `/${t.master}` : ''}`;
  } catch {
    return 'REDIS_URL';
  }
}

/**
 * A Redis connection for a command: connected before it returns, or one clear
 * QueueUnavailable error (exit 3) — no reconnect loop, no ioredis stack traces.
 */
export async function connectRedis(url: string): Promise<RedisConnection> {
  const redis = connect(url, {
    lazyConnect: true,
    connectTimeout: 5_000,
    maxRetriesPerRequest: 1,
    // A command gives up after a few quick attempts instead of waiting forever.
    retryStrategy: (attempt) => (attempt > 3 ? null : 200 * attempt),
  });
  let lastError: unknown;
  // Without a listener ioredis prints every connection error with its stack.
  redis.on('error', (err) => {
    lastError = err;
  });
  try {
    await redis.connect();
  } catch (err) {
    redis.disconnect();
    const cause = lastError ?? err;
    const why = (cause as { code?: string }).code ?? (cause as Error).message;
    throw new PipelineError(
      'QueueUnavailable',
      `Redis at ${redisWhere(url)} does not answer (${why}); check REDIS_URL and that Redis runs`,
      { cause, stage: 'cli' },
    );
  }
  return redis;
}

export async function withRedis<T>(
  config: Config,
  fn: (redis: RedisConnection) => Promise<T>,
): Promise<T> {
  const redis = await connectRedis(config.redis.url);
  try {
    return await fn(redis);
  } catch (err) {
    throw isPipelineError(err) || !isNetworkError(err)
      ? err
      : new PipelineError(
          'QueueUnavailable',
          `Redis at ${redisWhere(config.redis.url)} stopped answering`,
          {
            cause: err,
            stage: 'cli',
          },
        );
  } finally {
    redis.disconnect();
  }
}

/**
 * A JSON request to the admin API. Errors come back as the PipelineError the
 * API answered (same code, so the same exit code); an unreachable API is
 * AdminUnavailable. `accept` lists error statuses whose body is returned as is.
 */
export async function adminRequest<T>(
  baseUrl: string,
  token: string | undefined,
  method: 'GET' | 'POST',
  path: string,
  body?: unknown,
  accept: readonly number[] = [],
): Promise<{ status: number; body: T }> {
  let res: Response;
  try {
    res = await fetch(`${baseUrl.replace(/\/+$/, '')}${path}`, {
      method,
      headers: {
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...(token ? { authorization: `Bearer ${token}` } : {}),
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  } catch (err) {
    throw new PipelineError('AdminUnavailable', `the admin API at ${baseUrl} does not answer`, {
      cause: err,
    });
  }
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  if (res.ok || accept.includes(res.status)) return { status: res.status, body: parsed as T };
  const e = (parsed as { error?: { code?: string; message?: string } } | undefined)?.error;
  // The API's own code, so that the exit code is the one a local run gives.
  if (e?.code && e.code in ERROR_CODES)
    throw new PipelineError(e.code as ErrorCode, e.message ?? '');
  throw new PipelineError(
    res.status >= 500 ? 'AdminUnavailable' : 'InvalidArgument',
    `the admin API answered HTTP ${res.status}`,
  );
}
