/**
 * The operator console: the page at /console (built by `npm run build` into
 * dist/console, every asset in the package) and its sessions. The page calls
 * the admin API's own endpoints; what is here is only what a browser needs on
 * top of a bearer token:
 *
 *   POST   /console/api/session   {token, name}  → sign in: an httpOnly, SameSite=Strict
 *                                                   cookie, and the session's CSRF token
 *   GET    /console/api/session                  → who is signed in, the CSRF token
 *   DELETE /console/api/session                  → sign out
 *   POST   /console/api/reveal    {subject, what} → records that a masked patient id was shown
 *   GET    /console/api/audit?limit=             → the console's audit trail, newest first
 *
 * Sign-in is rate limited per client address, like the broker's connect
 * budgets (rate-limiter-flexible in Redis, so every admin process counts
 * together): ADMIN_CONSOLE_SIGNIN_FAILURES wrong tokens per
 * ADMIN_CONSOLE_SIGNIN_WINDOW_S, then 429 RateLimited with Retry-After until
 * the window ends — the right token too, so guessing gains nothing.
 *
 * A session lives in Redis (any admin process answers it) and ends after
 * ADMIN_CONSOLE_IDLE_MS without a request. Every change made with a session
 * (any method but GET/HEAD) must carry the session's token in X-CSRF-Token
 * (CsrfRefused otherwise) and is audited: who, what (method and route), when,
 * and the answer's status — never a body: bodies carry patient ids and values.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fastifyCookie from '@fastify/cookie';
import fastifyHelmet from '@fastify/helmet';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import type { RedisConnection } from '../redis.js';
import type { Config } from '../config.js';
import { PipelineError } from '../errors.js';
import type { Logger } from '../logger.js';
import { principalOf } from './principal.js';

export const SESSION_COOKIE = 'iomt_console';
export const CSRF_HEADER = 'x-csrf-token';
const AUDIT_KEEP = 10_000;
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);
/** POSTs that change nothing (a query, a check, a dry run): CSRF-checked, not audited as changes. */
const READ_ONLY_POSTS = new Set([
  '/api/analytics/query',
  '/api/mappings/validate',
  '/api/mappings/test',
  '/api/mappings/shadow-run',
  '/api/mappings/debug',
  '/console/api/reveal', // audited by its own entry
]);

export interface ConsoleSession {
  readonly actor: string;
  readonly csrf: string;
  readonly since: number;
}

export interface AuditEntry {
  readonly at: string;
  readonly actor: string;
  readonly action: string;
  readonly status: number;
  readonly detail?: string;
}

export interface ConsoleDeps {
  readonly config: Config;
  readonly log: Logger;
  readonly redis: RedisConnection;
  /** The built page (default: dist/console of this package). */
  readonly consoleDir?: string;
}

declare module 'fastify' {
  interface FastifyRequest {
    consoleSession?: ConsoleSession;
  }
}

/** dist/console beside the package.json this module belongs to (source or compiled). */
export function defaultConsoleDir(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return path.join(dir, 'dist', 'console');
}

/** The console's Content-Security-Policy: nothing but this origin, no inline code. */
export const CONSOLE_CSP = {
  defaultSrc: ["'none'"],
  scriptSrc: ["'self'"],
  styleSrc: ["'self'"],
  imgSrc: ["'self'", 'data:'],
  fontSrc: ["'self'"],
  connectSrc: ["'self'"],
  manifestSrc: ["'self'"],
  baseUri: ["'none'"],
  formAction: ["'self'"],
  frameAncestors: ["'none'"],
  objectSrc: ["'none'"],
};

export class ConsoleSessions {
  readonly #redis: RedisConnection;
  readonly #prefix: string;
  readonly #idleMs: number;

  constructor(redis: RedisConnection, prefix: string, idleMs: number) {
    this.#redis = redis;
    this.#prefix = prefix;
    this.#idleMs = idleMs;
  }

  get idleMs(): number {
    return this.#idleMs;
  }

  /** Redis keeps a hash of the session id, never the id that opens it. */
  #key(id: string): string {
    return `${this.#prefix}:console:session:${createHash('sha256').update(id).digest('hex')}`;
  }

  async open(actor: string): Promise<{ id: string; session: ConsoleSession }> {
    const id = randomBytes(32).toString('base64url');
    const session = { actor, csrf: randomBytes(32).toString('base64url'), since: Date.now() };
    await this.#redis.set(this.#key(id), JSON.stringify(session), 'PX', this.#idleMs);
    return { id, session };
  }

  /** The session, its idle clock restarted; undefined once it has expired. */
  async touch(id: string): Promise<ConsoleSession | undefined> {
    const raw = await this.#redis.getex(this.#key(id), 'PX', this.#idleMs);
    return raw ? (JSON.parse(raw) as ConsoleSession) : undefined;
  }

  async close(id: string): Promise<void> {
    await this.#redis.del(this.#key(id));
  }

  async audit(entry: AuditEntry): Promise<void> {
    const key = `${this.#prefix}:console:audit`;
    await this.#redis
      .multi()
      .lpush(key, JSON.stringify(entry))
      .ltrim(key, 0, AUDIT_KEEP - 1)
      .exec();
  }

  async auditTrail(limit: number): Promise<AuditEntry[]> {
    const raw = await this.#redis.lrange(`${this.#prefix}:console:audit`, 0, limit - 1);
    return raw.map((r) => JSON.parse(r) as AuditEntry);
  }
}

function sameToken(given: string, want: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(want);
  return a.length === b.length && timingSafeEqual(a, b);
}

function sessionIdOf(req: FastifyRequest): string | undefined {
  // Parsed here: this runs in the admin API's first hook, before the cookie plugin's.
  const raw = req.server.parseCookie(req.headers.cookie ?? '')[SESSION_COOKIE];
  return raw && /^[A-Za-z0-9_-]{43}$/.test(raw) ? raw : undefined;
}

/** The route as declared (`/api/devices/:id`), with its id: what an audit entry names. */
function actionOf(req: FastifyRequest): string {
  return `${req.method} ${req.url.split('?')[0] ?? ''}`;
}

/** Public console paths: the page and its assets, and signing in. */
export function isPublicConsolePath(pathname: string, method: string): boolean {
  if (pathname === '/console' || pathname === '/console/') return true;
  if (pathname === '/console/api/session') return true; // answers 401 itself without a session
  return (
    pathname.startsWith('/console/') && !pathname.startsWith('/console/api/') && method === 'GET'
  );
}

/**
 * Authenticates a request by its console session (no Authorization header):
 * true when a session admits it (and, for a change, its CSRF token matches),
 * false when there is no session. Throws CsrfRefused.
 */
export async function admitBySession(
  sessions: ConsoleSessions,
  req: FastifyRequest,
): Promise<boolean> {
  const id = sessionIdOf(req);
  if (!id) return false;
  const session = await sessions.touch(id);
  if (!session) return false;
  if (!SAFE_METHODS.has(req.method)) {
    const given = req.headers[CSRF_HEADER];
    if (typeof given !== 'string' || !sameToken(given, session.csrf))
      throw new PipelineError(
        'CsrfRefused',
        'a change from a console session needs the X-CSRF-Token header of that session',
        { stage: 'admin' },
      );
  }
  req.consoleSession = session;
  return true;
}

function cookieOptions(req: FastifyRequest) {
  return {
    path: '/',
    httpOnly: true,
    sameSite: 'strict' as const,
    // Over TLS (directly or behind a proxy that says so) the cookie never travels in clear.
    secure: req.protocol === 'https',
  };
}

export function registerConsole(
  app: FastifyInstance,
  deps: ConsoleDeps,
  sessions: ConsoleSessions,
): void {
  const { config, log } = deps;
  const dir = deps.consoleDir ?? defaultConsoleDir();
  const signInFailures = new RateLimiterRedis({
    storeClient: deps.redis,
    keyPrefix: `${config.redis.prefix}:console:sign-in-failures`,
    points: config.admin.consoleSignInFailures,
    duration: config.admin.consoleSignInWindowS,
  });
  const tooMany = (waitMs: number) =>
    new PipelineError(
      'RateLimited',
      `too many wrong admin tokens from this address: sign-in is refused for ${Math.ceil(waitMs / 1000)} s`,
      { stage: 'admin', retryAfterMs: waitMs },
    );
  void app.register(fastifyCookie);
  // Strict CSP and the usual hardening headers on every answer (the API's too).
  void app.register(fastifyHelmet, {
    contentSecurityPolicy: { useDefaults: false, directives: CONSOLE_CSP },
    crossOriginEmbedderPolicy: true,
    referrerPolicy: { policy: 'no-referrer' },
  });

  // Changes made with a session are audited once answered (who, what, when, status).
  app.addHook('onResponse', async (req, reply) => {
    const s = req.consoleSession;
    if (!s || SAFE_METHODS.has(req.method)) return;
    if (req.method === 'POST' && READ_ONLY_POSTS.has(req.url.split('?')[0] ?? '')) return;
    const entry: AuditEntry = {
      at: new Date().toISOString(),
      actor: s.actor,
      action: actionOf(req),
      status: reply.statusCode,
    };
    await sessions
      .audit(entry)
      .catch((err: unknown) =>
        log.error(
          { event: 'console-audit-failed', reason: (err as Error).message },
          'console audit not written',
        ),
      );
    log.info({ event: 'console-change', ...entry }, 'console change');
  });

  app.post<{ Body: Record<string, unknown> | undefined }>(
    '/console/api/session',
    async (req, reply) => {
      const token = req.body?.token;
      const name = req.body?.name;
      const actor =
        typeof name === 'string' && name.trim() !== '' ? name.trim().slice(0, 100) : 'operator';
      const refuse = async (status: number) => {
        await sessions.audit({ at: new Date().toISOString(), actor, action: 'sign-in', status });
        log.warn({ event: 'console-sign-in-refused', status }, 'console sign-in refused');
      };
      // An address over its budget is refused before its token is looked at.
      const spent = await signInFailures.get(req.ip);
      if (spent && spent.consumedPoints > config.admin.consoleSignInFailures) {
        await refuse(429);
        throw tooMany(Math.max(1000, spent.msBeforeNext));
      }
      if (typeof token !== 'string' || principalOf(config, `Bearer ${token}`) !== 'admin') {
        try {
          await signInFailures.consume(req.ip);
        } catch (err) {
          if (!(err instanceof RateLimiterRes)) throw err;
          await refuse(429);
          throw tooMany(Math.max(1000, err.msBeforeNext));
        }
        await refuse(401);
        throw new PipelineError('NotAuthorized', 'the admin token is not right', {
          stage: 'admin',
        });
      }
      const { id, session } = await sessions.open(actor);
      await sessions.audit({ at: new Date().toISOString(), actor, action: 'sign-in', status: 200 });
      return reply
        .setCookie(SESSION_COOKIE, id, cookieOptions(req))
        .send({ actor, csrfToken: session.csrf, idleMs: sessions.idleMs });
    },
  );

  app.get('/console/api/session', async (req) => {
    const id = sessionIdOf(req);
    const session = id ? await sessions.touch(id) : undefined;
    if (!session)
      throw new PipelineError('NotAuthorized', 'not signed in (or the session expired)', {
        stage: 'admin',
      });
    return { actor: session.actor, csrfToken: session.csrf, idleMs: sessions.idleMs };
  });

  app.delete('/console/api/session', async (req, reply) => {
    const id = sessionIdOf(req);
    if (id && (await admitBySession(sessions, req))) await sessions.close(id);
    return reply.clearCookie(SESSION_COOKIE, cookieOptions(req)).send({ signedOut: true });
  });

  app.post<{ Body: Record<string, unknown> | undefined }>('/console/api/reveal', async (req) => {
    const subject = req.body?.subject;
    const what = req.body?.what;
    if (typeof subject !== 'string' || typeof what !== 'string' || subject.length > 200)
      throw new PipelineError('InvalidArgument', 'subject and what: strings', { stage: 'admin' });
    // The audit entry (onResponse) names the route; this names whose id was shown.
    await sessions.audit({
      at: new Date().toISOString(),
      actor: req.consoleSession?.actor ?? 'admin-api',
      action: 'reveal',
      status: 200,
      detail: `${what.slice(0, 50)} of ${subject}`,
    });
    return { revealed: true };
  });

  app.get<{ Querystring: { limit?: string } }>('/console/api/audit', async (req) => {
    const limit = req.query.limit === undefined ? 100 : Number(req.query.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > AUDIT_KEEP)
      throw new PipelineError('InvalidArgument', `limit: an integer in [1, ${AUDIT_KEEP}]`, {
        stage: 'admin',
      });
    return { entries: await sessions.auditTrail(limit) };
  });

  const built = existsSync(path.join(dir, 'index.html'));
  app.get('/console', (_req, reply: FastifyReply) => reply.redirect('/console/'));
  if (built) {
    void app.register(fastifyStatic, {
      root: dir,
      prefix: '/console/',
      index: ['index.html'],
      // Hashed asset names: cache them; the page itself is always asked again.
      setHeaders: (res, file) => {
        res.setHeader(
          'cache-control',
          file.endsWith('index.html') ? 'no-cache' : 'public, max-age=31536000, immutable',
        );
      },
    });
  } else {
    app.get('/console/', async (_req, reply) =>
      reply
        .code(503)
        .type('text/plain')
        .send('The operator console is not built: run `npm run build`.\n'),
    );
  }
}
