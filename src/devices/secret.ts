/**
 * Device secrets: generated with 192 bits of randomness, stored only as scrypt
 * hashes (N=2^14, r=8, p=1 — OWASP's minimum for scrypt), compared in constant time.
 * Format: `scrypt$N$r$p$salt(base64)$hash(base64)`.
 *
 * An unknown device id costs the same as a wrong secret: `verifyUnknown` runs
 * the same scrypt against a dummy hash of the same parameters, so the time of a
 * refusal does not tell whether the id exists (no id probing by timing).
 */
import { randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto';

const N = 16384;
const R = 8;
const P = 1;
const KEY_LENGTH = 32;
/** scrypt needs 128·N·r bytes; pass maxmem explicitly so Node never refuses. */
const MAXMEM = 256 * N * R;

function scrypt(password: string, salt: Buffer, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scryptCb(password, salt, KEY_LENGTH, opts, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

export function generateSecret(): string {
  return randomBytes(24).toString('base64url');
}

export async function hashSecret(secret: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scrypt(secret, salt, { N, r: R, p: P, maxmem: MAXMEM });
  return ['scrypt', N, R, P, salt.toString('base64'), key.toString('base64')].join('$');
}

export async function verifySecret(secret: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [, n, r, p, salt, hash] = parts as [string, string, string, string, string, string];
  const expected = Buffer.from(hash, 'base64');
  const opts = { N: Number(n), r: Number(r), p: Number(p), maxmem: 256 * Number(n) * Number(r) };
  const actual = await scrypt(secret, Buffer.from(salt, 'base64'), opts);
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}

/**
 * A stored hash no secret matches: random salt and random key bytes (not the
 * hash of anything), with the current parameters, so checking it costs exactly
 * what checking a real one does.
 */
const UNMATCHABLE = [
  'scrypt',
  N,
  R,
  P,
  randomBytes(16).toString('base64'),
  randomBytes(KEY_LENGTH).toString('base64'),
].join('$');

/** For an unknown device id: the same scrypt work as `verifySecret` with a real hash; always false. */
export async function verifyUnknown(secret: string): Promise<false> {
  await verifySecret(secret, UNMATCHABLE);
  return false;
}
