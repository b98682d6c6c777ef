/**
 * The one FHIR gateway: every request this pipeline sends to the FHIR server
 * goes through here (workers, CLI, admin API, backfill), built once per process
 * and passed down. One policy for all of them:
 *  - the platform's fetch, `Accept: application/fhir+json`, `Cache-Control:
 *    no-cache` (HAPI would otherwise answer searches from its cache);
 *  - a timeout per request (FHIR_TIMEOUT_MS);
 *  - errors mapped once (errors.ts): network failures, timeouts, 408/409/412/429
 *    and 5xx → FhirUnavailable with the server's Retry-After; other 4xx →
 *    FhirRejected with the OperationOutcome text; a read of a missing resource
 *    (404/410) → undefined; an If-Match / version conflict on an update → a
 *    `conflict` answer the caller resolves;
 *  - versions from the ETag (W/"3" → "3", FHIR R4 http.html#versioning);
 *  - a bound on the requests in flight (`maxRequests`, FHIR_CONCURRENCY_MAX):
 *    reads, searches, Patient and Device writes and association syncs wait
 *    for a slot, FIFO, so that a burst of them (jobs held through an outage
 *    and released at once) cannot exhaust the server's database connections.
 *    The Observation write Bundles are sent `paced`: the store's adaptive
 *    limit bounds them (adaptive-limit.ts), so a slow read never holds one up;
 *  - credentials from an authorizer (FHIR_AUTH, auth.ts), never logged:
 *    messages name the method and the resource type, never the URL. A 401 asks
 *    the authorizer for a new token and sends the request once more; a second
 *    401 is FhirUnavailable (retried: credentials are fixed by an operator, a
 *    reading is not dead-lettered by them).
 *
 * Contract: in — resources, ids, search parameters; out — resources and
 * Bundles as the server answers them, or a PipelineError.
 */
import type { Bundle, BundleEntry, OperationOutcome, Resource } from 'fhir/r4.js';
import type { Config } from '../config.js';
import { PipelineError, toPipelineError } from '../errors.js';
import { TRACING_OFF, type Tracing } from '../observability/tracing.js';
import { createAdaptiveLimit } from './adaptive-limit.js';
import { createFhirAuthorizer, type FhirAuthorizer } from './auth.js';
import { fhirError, statusError } from './errors.js';

export interface FhirGatewayOptions {
  /** FHIR R4 base URL (FHIR_URL). */
  readonly baseUrl: string;
  readonly timeoutMs: number;
  /** Authenticates each request (FHIR_AUTH); none when unset. */
  readonly auth?: FhirAuthorizer;
  /** A client span per request (tracing on); absent: none. */
  readonly tracing?: Tracing;
  /** Send that span as the W3C `traceparent` header (FHIR_SEND_TRACEPARENT). */
  readonly sendTraceparent?: boolean;
  /**
   * Most requests in flight at once, `paced` Bundles not counted (they have a
   * limit of their own); the rest wait, FIFO. Unset: no bound.
   */
  readonly maxRequests?: number;
}

/** A Bundle whose caller bounds the Bundles in flight itself (the store's adaptive limit). */
export interface BundleOptions {
  readonly representation?: boolean;
  readonly paced?: boolean;
}

export interface UpdateAnswer<T> {
  readonly status: number;
  /** The stored version's id (ETag), when the server says. */
  readonly versionId: string | undefined;
  /** The server's representation, when it sends one. */
  readonly resource: T | undefined;
}

export type UpdateResult<T> =
  | ({ readonly conflict: false } & UpdateAnswer<T>)
  /** 409/412: the If-Match version is not the stored one, or a concurrent write won. */
  | { readonly conflict: true; readonly status: number };

export interface FhirGateway {
  readonly baseUrl: string;
  /** A resource by id; undefined when the server has none (404, 410). */
  read<T extends Resource>(type: string, id: string): Promise<T | undefined>;
  /** The same, with the stored version's id. */
  readVersioned<T extends Resource>(
    type: string,
    id: string,
  ): Promise<{ readonly resource: T; readonly versionId: string | undefined } | undefined>;
  /** One version of a resource (FHIR R4 vread); undefined when it does not exist. */
  vread<T extends Resource>(type: string, id: string, versionId: string): Promise<T | undefined>;
  /** A resource's versions, newest first (first page). */
  history<T extends Resource>(type: string, id: string, count?: number): Promise<T[]>;
  /** One page of a search: the resources of that type in it. */
  search<T extends Resource>(type: string, params: SearchParams): Promise<T[]>;
  /**
   * Every page of a search, following the server's `next` links
   * (search.html#paging); with `signal`, an abort ends the request in flight.
   */
  searchPages<T extends Resource>(
    type: string,
    params: SearchParams,
    options?: { readonly signal?: AbortSignal },
  ): AsyncGenerator<T[]>;
  /** PUT {type}/{id}: create or update, optionally only if the stored version is `ifMatch`. */
  update<T extends Resource>(
    resource: T,
    options?: { readonly ifMatch?: string; readonly representation?: boolean },
  ): Promise<UpdateResult<T>>;
  /** A batch Bundle: each entry succeeds or fails on its own (http.html#brules). */
  batch(entries: readonly BundleEntry[], options?: BundleOptions): Promise<Bundle>;
  /** A transaction Bundle: all entries or none. */
  transaction(entries: readonly BundleEntry[], options?: BundleOptions): Promise<Bundle>;
  /** Resolves when the server answers its CapabilityStatement. */
  capabilities(): Promise<void>;
  /**
   * With FHIR_AUTH: obtains a token once; credentials the authorization server
   * refuses are ConfigInvalid naming the settings (a process checks at start).
   */
  checkAuth(): Promise<void>;
  /** POST {type}/$validate: the server's OperationOutcome for a resource, valid or not. */
  validate(resource: Resource): Promise<OperationOutcome>;
}

/** The process's gateway as the configuration says: FHIR_URL, FHIR_TIMEOUT_MS, FHIR_AUTH. */
export function createConfiguredFhirGateway(
  config: Pick<Config, 'fhir' | 'fhirAuth'> & Partial<Pick<Config, 'tracing'>>,
  tracing: Tracing = TRACING_OFF,
): FhirGateway {
  const auth = createFhirAuthorizer(config.fhirAuth, config.fhir.url, {
    timeoutMs: config.fhir.timeoutMs,
  });
  return createFhirGateway({
    baseUrl: config.fhir.url,
    timeoutMs: config.fhir.timeoutMs,
    ...(auth !== undefined ? { auth } : {}),
    tracing,
    sendTraceparent: config.tracing?.fhirTraceparent ?? true,
    maxRequests: config.fhir.concurrencyMax,
  });
}

/** Search parameters; a repeated parameter ANDs its values (search.html#combining). */
export type SearchParams = Readonly<Record<string, string | readonly string[]>>;

/** W/"3" → "3" */
export function versionFromEtag(etag: string | null | undefined): string | undefined {
  return etag?.match(/"([^"]+)"/)?.[1];
}

interface Init {
  readonly body?: unknown;
  readonly headers?: Record<string, string>;
  readonly signal?: AbortSignal;
}

interface Answer {
  readonly status: number;
  readonly headers: Headers;
  readonly body: unknown;
}

export function createFhirGateway(options: FhirGatewayOptions): FhirGateway {
  const base = options.baseUrl.replace(/\/+$/, '');

  const tracing = options.tracing ?? TRACING_OFF;
  const server = new URL(base);
  const serverPort = Number(server.port) || (server.protocol === 'https:' ? 443 : 80);
  // A fixed limit (min = max): FIFO slots, no adaptation.
  const slots =
    options.maxRequests === undefined
      ? undefined
      : createAdaptiveLimit({
          min: options.maxRequests,
          max: options.maxRequests,
          initial: options.maxRequests,
        });

  /** One request, in a slot unless the caller paces it (BundleOptions.paced). */
  function send(
    method: 'GET' | 'PUT' | 'POST',
    path: string,
    what: string,
    init: Init = {},
    paced = false,
  ): Promise<Answer> {
    return slots === undefined || paced
      ? sendSpan(method, path, what, init)
      : slots.run(0, () => sendSpan(method, path, what, init));
  }

  /**
   * One request (and its one resend after a 401) as a client span: method,
   * server, status. Only inside a traced job: readiness probes and admin reads
   * would otherwise make a trace each.
   */
  async function sendSpan(
    method: 'GET' | 'PUT' | 'POST',
    path: string,
    what: string,
    init: Init,
  ): Promise<Answer> {
    if (!tracing.inSpan()) return sendTraced(method, path, what, init, undefined);
    const span = tracing.start(`FHIR ${what}`, {
      kind: 'client',
      attributes: {
        'http.request.method': method,
        'server.address': server.hostname,
        'server.port': serverPort,
        'fhir.interaction': what,
      },
    });
    try {
      const answer = await sendTraced(
        method,
        path,
        what,
        init,
        options.sendTraceparent === false ? undefined : span.traceparent,
      );
      span.set({ 'http.response.status_code': answer.status });
      if (answer.status >= 400) span.set({ 'error.type': String(answer.status) });
      return answer;
    } catch (err) {
      span.fail(toPipelineError(err).code);
      throw err;
    } finally {
      span.end();
    }
  }

  async function sendTraced(
    method: 'GET' | 'PUT' | 'POST',
    path: string,
    what: string,
    init: Init,
    traceparent: string | undefined,
  ): Promise<Answer> {
    const url = /^https?:\/\//.test(path) ? path : `${base}/${path}`;
    const payload = init.body !== undefined ? JSON.stringify(init.body) : undefined;
    const auth = options.auth;
    let res: Response;
    for (let attempt = 1; ; attempt++) {
      let credentials: Readonly<Record<string, string>> = {};
      try {
        if (auth) credentials = await auth.headers();
        res = await fetch(url, {
          method,
          signal:
            init.signal === undefined
              ? AbortSignal.timeout(options.timeoutMs)
              : AbortSignal.any([init.signal, AbortSignal.timeout(options.timeoutMs)]),
          headers: {
            accept: 'application/fhir+json',
            'cache-control': 'no-cache',
            ...(payload !== undefined ? { 'content-type': 'application/fhir+json' } : {}),
            ...credentials,
            // W3C Trace Context §3.2: lets the server join the trace (tracing on only).
            ...(traceparent !== undefined ? { traceparent } : {}),
            ...init.headers,
          },
          ...(payload !== undefined ? { body: payload } : {}),
        });
      } catch (err) {
        throw fhirError(err, what);
      }
      if (res.status !== 401) break;
      // RFC 6750 §3.1: the token expired or was revoked. Renew it once and resend.
      await res.body?.cancel().catch(() => undefined);
      if (attempt === 1 && auth?.invalidate(credentials) === true) continue;
      throw new PipelineError(
        'FhirUnavailable',
        `${what}: HTTP 401 — the FHIR server refused our credentials${
          attempt > 1 ? ' (after a new token)' : ''
        }; check FHIR_AUTH and its settings`,
        { details: { status: 401 } },
      );
    }
    let text: string;
    try {
      text = await res.text();
    } catch (err) {
      throw fhirError(err, what);
    }
    let body: unknown;
    try {
      body = text === '' ? undefined : (JSON.parse(text) as unknown);
    } catch {
      body = text;
    }
    return { status: res.status, headers: res.headers, body };
  }

  const fail = (a: Answer, what: string): never => {
    throw statusError(a.status, what, a.body, a.headers.get('retry-after'));
  };

  const query = (params: SearchParams) => {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params))
      for (const one of typeof v === 'string' ? [v] : v) q.append(k, one);
    return q.toString();
  };

  function resourcesOf<T extends Resource>(bundle: unknown, type: string): T[] {
    return ((bundle as Bundle | undefined)?.entry ?? []).flatMap((e) =>
      e.resource?.resourceType === type ? [e.resource as T] : [],
    );
  }

  async function readVersioned<T extends Resource>(type: string, id: string) {
    const what = `read ${type}`;
    const a = await send('GET', `${type}/${encodeURIComponent(id)}`, what);
    if (a.status === 404 || a.status === 410) return undefined;
    if (a.status < 200 || a.status >= 300) return fail(a, what);
    const resource = a.body as T;
    return {
      resource,
      versionId: versionFromEtag(a.headers.get('etag')) ?? resource.meta?.versionId,
    };
  }

  async function bundle(
    type: 'batch' | 'transaction',
    entries: readonly BundleEntry[],
    opts: BundleOptions,
  ): Promise<Bundle> {
    const a = await send(
      'POST',
      '',
      type,
      {
        body: { resourceType: 'Bundle', type, entry: [...entries] },
        // FHIR R4 http.html#ops: the stored version per entry.
        ...(opts.representation === true ? { headers: { prefer: 'return=representation' } } : {}),
      },
      opts.paced === true,
    );
    if (a.status < 200 || a.status >= 300) return fail(a, type);
    const b = a.body as Bundle | undefined;
    if (b?.resourceType !== 'Bundle') {
      throw new PipelineError('FhirUnavailable', `${type}: the server answered no Bundle`, {
        details: { status: a.status },
      });
    }
    return b;
  }

  return {
    baseUrl: base,

    async read<T extends Resource>(type: string, id: string) {
      return (await readVersioned<T>(type, id))?.resource;
    },

    readVersioned,

    async vread<T extends Resource>(type: string, id: string, versionId: string) {
      const what = `vread ${type}`;
      const a = await send(
        'GET',
        `${type}/${encodeURIComponent(id)}/_history/${encodeURIComponent(versionId)}`,
        what,
      );
      if (a.status === 404 || a.status === 410) return undefined;
      if (a.status < 200 || a.status >= 300) return fail(a, what);
      return a.body as T;
    },

    async history<T extends Resource>(type: string, id: string, count = 50) {
      const what = `history ${type}`;
      const a = await send(
        'GET',
        `${type}/${encodeURIComponent(id)}/_history?_count=${count}`,
        what,
      );
      if (a.status === 404 || a.status === 410) return [];
      if (a.status < 200 || a.status >= 300) return fail(a, what);
      return resourcesOf<T>(a.body, type);
    },

    async search<T extends Resource>(type: string, params: SearchParams) {
      const what = `search ${type}`;
      const a = await send('GET', `${type}?${query(params)}`, what);
      if (a.status < 200 || a.status >= 300) return fail(a, what);
      return resourcesOf<T>(a.body, type);
    },

    async *searchPages<T extends Resource>(
      type: string,
      params: SearchParams,
      opts: { signal?: AbortSignal } = {},
    ) {
      const what = `search ${type}`;
      let next: string | undefined = `${type}?${query(params)}`;
      while (next !== undefined) {
        const a = await send('GET', next, what, opts.signal ? { signal: opts.signal } : {});
        if (a.status < 200 || a.status >= 300) fail(a, what);
        const page = resourcesOf<T>(a.body, type);
        if (page.length > 0) yield page;
        next = (a.body as Bundle | undefined)?.link?.find((l) => l.relation === 'next')?.url;
      }
    },

    async update<T extends Resource>(
      resource: T,
      opts: { ifMatch?: string; representation?: boolean } = {},
    ): Promise<UpdateResult<T>> {
      const what = `update ${resource.resourceType}`;
      const a = await send(
        'PUT',
        `${resource.resourceType}/${encodeURIComponent(resource.id ?? '')}`,
        what,
        {
          body: resource,
          headers: {
            ...(opts.ifMatch !== undefined ? { 'if-match': `W/"${opts.ifMatch}"` } : {}),
            ...(opts.representation === false ? {} : { prefer: 'return=representation' }),
          },
        },
      );
      if (a.status === 409 || a.status === 412) return { conflict: true, status: a.status };
      if (a.status < 200 || a.status >= 300) return fail(a, what);
      const body =
        (a.body as T | undefined)?.resourceType === resource.resourceType
          ? (a.body as T)
          : undefined;
      return {
        conflict: false,
        status: a.status,
        versionId: versionFromEtag(a.headers.get('etag')) ?? body?.meta?.versionId,
        resource: body,
      };
    },

    batch: (entries, opts = {}) => bundle('batch', entries, opts),
    transaction: (entries, opts = {}) => bundle('transaction', entries, opts),

    async capabilities() {
      const a = await send('GET', 'metadata', 'metadata');
      if (a.status < 200 || a.status >= 300) fail(a, 'metadata');
    },

    checkAuth: () => options.auth?.check() ?? Promise.resolve(),

    async validate(resource: Resource) {
      const what = `validate ${resource.resourceType}`;
      const a = await send('POST', `${resource.resourceType}/$validate`, what, { body: resource });
      const oo = a.body as OperationOutcome | undefined;
      // An invalid resource is an answer too (HAPI: 412 or 422 with the outcome).
      if (oo?.resourceType === 'OperationOutcome' && [200, 400, 412, 422].includes(a.status))
        return oo;
      return fail(a, what);
    },
  };
}
