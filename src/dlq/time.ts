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
      'InvalidArgument',
      `${option}: expected an ISO 8601 time or a span like 15m, 2h, 7d; got "${text.slice(0, 40)}"`,
    );
  }
  return at;
}

/**
 * An instant that decides something (an association's start): ISO 8601 with
 * its zone (`Z` or `+01:00`), epoch milliseconds, or a span back from now. A
 * time without a zone is refused: read in the host's zone it could move a
 * reading to another patient.
 */
export function parseInstant(text: string, option: string, now = Date.now()): number {
  const t = text.trim();
  if (/^\d{12,14}$/.test(t)) return Number(t);
  if (/^\d+[smhd]$/.test(t)) return parseTime(t, option, now);
  if (!/T.*(Z|[+-]\d{2}:?\d{2})$/i.test(t)) {
    throw new PipelineError(
      'InvalidArgument',
      `${option}: give a full ISO 8601 time with its zone (e.g. 2026-11-26T08:00:00Z or +01:00), epoch ms, or a span like 15m; got "${t.slice(0, 40)}"`,
    );
  }
  return parseTime(t, option, now);
}
