/**
 * Reading a device's time. Pure.
 *
 * Our templates (JsonataContent) take ISO 8601 with an explicit zone, or epoch
 * milliseconds: a time without a zone is ambiguous and refused. MedTech's
 * templates keep MedTech's (Json.NET DateTime) reading: a time without a zone
 * is UTC, offsets may be written "+0", and fractions may have 7 digits
 * ("2023-03-13T22:46:01.8750000" → 2023-03-13T22:46:01.875Z).
 */

const ISO =
  /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?(Z|z|[+-]\d{1,2}(?::?\d{2})?)?$/;

function daysIn(year: number, month: number): number {
  return new Date(Date.UTC(year, month, 0)).getUTCDate();
}

function offsetMinutes(zone: string): number {
  if (zone === 'Z' || zone === 'z') return 0;
  const sign = zone.startsWith('-') ? -1 : 1;
  const digits = zone.slice(1).replace(':', '');
  const hours = Number(digits.length <= 2 ? digits : digits.slice(0, digits.length - 2));
  const minutes = digits.length <= 2 ? 0 : Number(digits.slice(-2));
  if (hours > 18 || minutes > 59) return NaN;
  return sign * (hours * 60 + minutes);
}

interface Instant {
  /** Epoch milliseconds (whole). */
  readonly ms: number;
  /** Digits finer than a millisecond, as the device wrote them ("456" of .123456). */
  readonly finer: string;
}

/** An ISO 8601 date-time as an instant, or undefined when it does not parse. */
function parseIso(s: string, zoneRequired: boolean): Instant | undefined {
  const m = ISO.exec(s.trim());
  if (!m) return undefined;
  const [, y, mo, d, h, mi, sec, frac, zone] = m;
  if (zone === undefined && zoneRequired) return undefined;
  const year = Number(y);
  const month = Number(mo);
  const day = Number(d);
  const hour = Number(h);
  const minute = Number(mi);
  const second = sec === undefined ? 0 : Number(sec);
  if (month < 1 || month > 12 || day < 1 || day > daysIn(year, month)) return undefined;
  if (hour > 23 || minute > 59 || second > 59) return undefined;
  const ms = frac === undefined ? 0 : Number(frac.slice(0, 3).padEnd(3, '0'));
  const offset = zone === undefined ? 0 : offsetMinutes(zone);
  if (Number.isNaN(offset)) return undefined;
  return {
    ms: Date.UTC(year, month - 1, day, hour, minute, second, ms) - offset * 60_000,
    // Zone offsets are whole minutes: sub-millisecond digits carry over unchanged.
    finer: (frac ?? '').slice(3).replace(/0+$/, ''),
  };
}

/** Epoch milliseconds as a number → an instant; a fraction of a millisecond is kept. */
function fromEpochMs(n: number): Instant {
  const ms = Math.floor(n);
  if (ms === n || n < 0) return { ms: Math.round(n), finer: '' };
  // The shortest decimal form of the number holds the digits the device sent.
  const fraction = String(n).split('.')[1] ?? '';
  return { ms, finer: /^\d+$/.test(fraction) ? fraction.replace(/0+$/, '') : '' };
}

export interface TimestampOptions {
  /** MedTech semantics: a time without a zone is UTC. */
  readonly zoneOptional?: boolean;
}

/**
 * A device time → UTC ISO 8601, or undefined. Accepts one value (a one-element
 * array is unwrapped): an ISO 8601 string, or epoch milliseconds as a number.
 * Milliseconds are always written; finer digits the device sent are kept
 * (FHIR R4 dateTime allows any number of fraction digits), so two readings a
 * fraction of a millisecond apart stay two readings.
 */
export function parseTimestamp(v: unknown, options: TimestampOptions = {}): string | undefined {
  const s = Array.isArray(v) && v.length === 1 ? (v[0] as unknown) : v;
  let at: Instant | undefined;
  if (typeof s === 'number' && Number.isFinite(s)) at = fromEpochMs(s);
  else if (typeof s === 'string') at = parseIso(s, !options.zoneOptional);
  if (at === undefined || !Number.isFinite(at.ms)) return undefined;
  const d = new Date(at.ms);
  if (Number.isNaN(d.getTime())) return undefined;
  const iso = d.toISOString(); // …T09:00:00.123Z
  return at.finer === '' ? iso : `${iso.slice(0, -1)}${at.finer}Z`;
}
