/**
 * The admin API's error answers as the PipelineError they carry, for commands
 * that read the answer themselves (`iomt query` prints text, `iomt mirror
 * backfill` reads NDJSON): the same code, so the same exit code as a local run
 * (cli/common.ts exitCodeOf, docs/cli.md). The rule of common.ts adminRequest.
 */
import { ERROR_CODES, PipelineError, type ErrorCode } from '../errors.js';

/** An error answer (or an error line of a stream) as a PipelineError. */
export function answerError(status: number, text: string): PipelineError {
  let e: { code?: string; message?: string } | undefined;
  try {
    e = (JSON.parse(text) as { error?: { code?: string; message?: string } }).error;
  } catch {
    e = undefined;
  }
  if (e?.code && e.code in ERROR_CODES)
    return new PipelineError(e.code as ErrorCode, e.message ?? '');
  return new PipelineError(
    status >= 500 ? 'AdminUnavailable' : 'InvalidArgument',
    `the admin API answered HTTP ${status}`,
  );
}

/** fetch() to the admin API, an unreachable API being AdminUnavailable. */
export async function fetchAdmin(url: string, init: RequestInit): Promise<Response> {
  try {
    return await fetch(url, init);
  } catch (err) {
    if ((init.signal as AbortSignal | undefined)?.aborted) throw err;
    throw new PipelineError(
      'AdminUnavailable',
      `the admin API at ${new URL(url).origin} does not answer`,
      {
        cause: err,
      },
    );
  }
}
