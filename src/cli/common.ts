/** Shared by the CLI commands: one-line failures. */
import type { Command } from '@commander-js/extra-typings';
import { isPipelineError } from '../errors.js';

export type Program = Command;

/** Prints one line (`iomt: Code: message`) and exits 1. */
export function fail(err: unknown): never {
  const message = isPipelineError(err)
    ? `${err.code}: ${err.message}`
    : err instanceof Error
      ? err.message
      : String(err);
  process.stderr.write(`iomt: ${message}\n`);
  process.exit(1);
}
