/**
 * The token rule of every HTTP endpoint the pipeline serves (admin API and the
 * observability server of each role): everything but `/healthz` needs
 * `Authorization: Bearer <ADMIN_TOKEN>`, unless ADMIN_AUTH=none (development).
 * Liveness stays public so an orchestrator can probe it without the secret;
 * readiness detail and metrics describe the system, so they do not.
 */
import { timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../config.js';
import { httpAnswer, PipelineError } from '../errors.js';

/** Paths answered without a token. */
export const PUBLIC_PATHS: readonly string[] = ['/healthz'];

/** Constant-time comparison of an `Authorization` header with the expected token. */
export function bearerMatches(header: string | undefined, token: string): boolean {
  const given = Buffer.from(header?.replace(/^Bearer\s+/i, '') ?? '');
  const want = Buffer.from(token);
  return given.length === want.length && timingSafeEqual(given, want);
}

/** A fastify `onRequest` hook enforcing the rule; answers 401 NotAuthorized otherwise. */
export function requireAdminToken(
  admin: Config['admin'],
): (req: FastifyRequest, reply: FastifyReply) => Promise<void> {
  const open = admin.auth === 'none';
  const token = admin.token;
  return async (req, reply) => {
    if (open || PUBLIC_PATHS.includes(req.url.split('?')[0] ?? '')) return;
    if (token === undefined || !bearerMatches(req.headers.authorization, token)) {
      const { status, body } = httpAnswer(
        new PipelineError('NotAuthorized', 'a valid bearer token is required', { stage: 'admin' }),
      );
      await reply.code(status).send(body);
    }
  };
}
