/**
 * Who an admin API request comes from, by its bearer token (compared in
 * constant time): the admin (ADMIN_TOKEN, or anyone with ADMIN_AUTH=none), an
 * analyst (ANALYST_TOKEN), or nobody we know.
 */
import { timingSafeEqual } from 'node:crypto';
import type { Config } from '../config.js';

export type Principal = 'admin' | 'analyst' | 'anonymous';

/** The routes an analyst token opens (path without query string). */
export const ANALYST_ROUTES: ReadonlySet<string> = new Set(['/api/analytics/query']);

function tokenMatches(header: string | undefined, token: string | undefined): boolean {
  if (token === undefined) return false;
  const given = Buffer.from(header?.replace(/^Bearer\s+/i, '') ?? '');
  const want = Buffer.from(token);
  return given.length === want.length && timingSafeEqual(given, want);
}

export function principalOf(config: Config, authorization: string | undefined): Principal {
  if (config.admin.auth === 'none') return 'admin';
  if (tokenMatches(authorization, config.admin.token)) return 'admin';
  if (tokenMatches(authorization, config.admin.analystToken)) return 'analyst';
  return 'anonymous';
}
