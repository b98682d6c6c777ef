/**
 * Times on the command line: ISO 8601 (`2026-11-26T08:00:00Z`, `2026-11-26`) or
 * a span back from now (`90s`, `15m`, `2h`, `7d`).
 */
import { PipelineError } from '../errors.js';

const UNIT_MS: Readonly<Record<string, number>> = {
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/** Epoch ms for `text`, relative spans counted back from `now`. */
export function parseTime(text: string, option: string, now = Date.now()): number {
  const span = /^(\d+)([smhd])$/.exec(text.trim());
  if (span) return now - Number(span[1]) * (UNIT_MS[span[2]!] ?? 0);
  const at = Date.parse(text);
  if (Number.isNaN(at)) {
    throw new PipelineError(
      'ConfigInvalid',
      `${option}: expected an ISO 8601 time or a span like 15m, 2h, 7d; got "${text}"`,
      { stage: 'cli' },
    );
  }
  return at;
}
