/**
 * The template lifecycle on the admin API (the operator console drives it; the
 * CLI's --admin-url too). Authentication is the admin API's (server.ts: bearer
 * token); errors answer in its one shape.
 *
 *   POST /api/mappings/validate    { files } | { version }        → ValidationReport
 *   POST /api/mappings/test        { files, fixtures } | { version } → FixtureReport
 *   POST /api/mappings/shadow-run  { files, fixtures } | { version }, acceptChanges? → GateReport
 *                                  with `lines` (the report as the CLI prints it)
 *   GET  /api/mappings/diff?a=&b=                                  → VersionDiff
 *   POST /api/mappings/propose     { files, fixtures?, actor, note? } → 201 { version, created, record }
 *   POST /api/mappings/activate    { version, actor, note?, acceptChanges?, withoutShadowRun? }
 *                                  → ActivationResult; 422 GateRefused with { result } when refused
 *   POST /api/mappings/rollback    { actor, note? }                 → ActivationResult
 *   GET  /api/mappings/versions                                    → { active, versions }
 *   GET  /api/mappings/versions/:version                           → the files and fixtures
 *   GET  /api/mappings/audit?limit=                                → { entries }
 *   POST /api/mappings/prune       { keep?, dryRun?, actor }        → { removed }
 *   POST /api/mappings/debug       { files | version, message: {payload, deviceId, receivedAt?},
 *                                    patientId?, validate? }        → `iomt mappings debug --json`,
 *                                  each Observation with the FHIR server's $validate outcome,
 *                                  and `fixture`: the input with this output (or refusal) as a
 *                                  fixture of `iomt mappings test`, for the candidate to keep
 *
 * `files` are `[{ "file": "device/vitals.json", "text": "…" }]` (device/ or
 * fhir/, .json / .yaml); `fixtures` as `iomt mappings test` reads them
 * (`{ name, settings, message, expectedMeasurements?, expectedObservations?, expectedError? }`).
 * `actor` names who acts (the token is shared; the audit records the name given,
 * or the header X-Iomt-Actor, with via "admin-api").
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { httpAnswer, PipelineError } from '../errors.js';
import { VERSION_PLACEHOLDER, type Fixture } from '../mapping/fixtures.js';
import {
  gateLines,
  type Actor,
  type Candidate,
  type MappingLifecycle,
} from '../mapping/lifecycle/index.js';
import { compileSources, formatProblem, type SourceFile } from '../mapping/load.js';
import type { Config } from '../config.js';
import type { FhirGateway } from '../fhir/gateway.js';
import type { Resource } from 'fhir/r4.js';
import { debugJson, type DebugJson } from '../mapping/index.js';
import { normalizePolicy } from '../mapping/index.js';

export interface MappingRoutesDeps {
  readonly mappingLifecycle?: MappingLifecycle;
  /** For the debugger: the worker's input policy and identifier system. */
  readonly config?: Config;
  /** For the debugger's $validate. */
  readonly fhir?: FhirGateway;
}

/** Templates and fixtures of a whole mappings folder fit easily; a console may send them all. */
const BODY_LIMIT = 16 * 1024 * 1024;
const TEMPLATE_PATH = /^(device|fhir)\/[A-Za-z0-9][A-Za-z0-9._-]*\.(json|ya?ml)$/;

type Body = Record<string, unknown> | undefined;

function invalid(message: string): PipelineError {
  return new PipelineError('InvalidArgument', message, { stage: 'admin' });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function parseFiles(raw: unknown): SourceFile[] {
  if (!Array.isArray(raw) || raw.length === 0)
    throw invalid('files: expected a non-empty array of { file, text }');
  const seen = new Set<string>();
  return raw
    .map((f: unknown, i) => {
      if (!isObject(f) || typeof f.file !== 'string' || typeof f.text !== 'string')
        throw invalid(`files[${i}]: expected { file, text } strings`);
      const m = TEMPLATE_PATH.exec(f.file);
      if (!m)
        throw invalid(
          `files[${i}].file: expected device/<name>.json|yaml or fhir/<name>.json|yaml, got "${f.file}"`,
        );
      if (seen.has(f.file)) throw invalid(`files[${i}].file: "${f.file}" given twice`);
      seen.add(f.file);
      return { file: f.file, kind: m[1] as 'device' | 'fhir', text: f.text };
    })
    .sort((a, b) => a.file.localeCompare(b.file));
}

export function parseFixtures(raw: unknown): Fixture[] {
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) throw invalid('fixtures: expected an array');
  return raw.map((f: unknown, i) => {
    const s = isObject(f) ? f.settings : undefined;
    if (
      !isObject(f) ||
      typeof f.name !== 'string' ||
      typeof f.message !== 'string' ||
      !isObject(s) ||
      typeof s.deviceId !== 'string' ||
      typeof s.receivedAt !== 'string' ||
      (f.expectedError !== undefined && typeof f.expectedError !== 'string')
    ) {
      throw invalid(
        `fixtures[${i}]: expected { name, settings: { deviceId, receivedAt, … }, message (text), expectedMeasurements?, expectedObservations?, expectedError? }`,
      );
    }
    return f as unknown as Fixture;
  });
}

function actorOf(req: FastifyRequest, body: Body): Actor {
  const given = body?.actor ?? req.headers['x-iomt-actor'];
  const actor =
    typeof given === 'string' && given.trim() !== '' ? given.trim().slice(0, 200) : 'admin-api';
  const note = typeof body?.note === 'string' ? body.note.slice(0, 2000) : undefined;
  return { actor, via: 'admin-api', ...(note ? { note } : {}) };
}

function lifecycleOf(deps: MappingRoutesDeps): MappingLifecycle {
  if (!deps.mappingLifecycle)
    throw new PipelineError(
      'NotServedHere',
      'the template lifecycle is not available in this process',
    );
  return deps.mappingLifecycle;
}

async function candidateOf(lc: MappingLifecycle, body: Body): Promise<Candidate> {
  if (typeof body?.version === 'string') return lc.get(body.version);
  return { files: parseFiles(body?.files), fixtures: parseFixtures(body?.fixtures) };
}

function flag(body: Body, key: string): boolean {
  const v = body?.[key];
  if (v === undefined) return false;
  if (typeof v !== 'boolean') throw invalid(`${key}: expected true or false`);
  return v;
}

/**
 * The debugged input with what the templates made of it, as a fixture of
 * `iomt mappings test` (fixtures.ts): the version written "<version>", so the
 * fixture holds for the next version that maps the message the same way.
 */
export function fixtureOf(
  report: DebugJson,
  input: {
    deviceId: string;
    patientId: string;
    receivedAt: string;
    identifierSystem: string;
    message: string;
  },
): Fixture {
  const { message, ...settings } = input;
  const placeholder = (v: unknown): unknown =>
    JSON.parse(
      JSON.stringify(v ?? null).replaceAll(report.version, VERSION_PLACEHOLDER),
    ) as unknown;
  const name = `${input.deviceId}-${input.receivedAt}`
    .replace(/[^A-Za-z0-9._-]/g, '-')
    .slice(0, 100);
  return {
    name,
    settings,
    message,
    ...(report.ok
      ? {
          expectedMeasurements: placeholder(report.measurements),
          expectedObservations: placeholder(report.observations),
        }
      : { expectedError: report.error?.code ?? 'Internal' }),
  };
}

export function registerMappingRoutes(app: FastifyInstance, deps: MappingRoutesDeps): void {
  const big = { bodyLimit: BODY_LIMIT };

  app.post<{ Body: Body }>('/api/mappings/validate', big, async (req) =>
    lifecycleOf(deps).validate(await candidateOf(lifecycleOf(deps), req.body)),
  );

  app.post<{ Body: Body }>('/api/mappings/test', big, async (req) => {
    const lc = lifecycleOf(deps);
    return lc.test(await candidateOf(lc, req.body));
  });

  app.post<{ Body: Body }>('/api/mappings/shadow-run', big, async (req) => {
    const lc = lifecycleOf(deps);
    const report = await lc.gates(await candidateOf(lc, req.body), {
      changes: flag(req.body, 'acceptChanges'),
    });
    // `lines`: the report as `iomt mappings shadow-run` prints it (the console shows them).
    return { ...report, lines: gateLines(report) };
  });

  app.get<{ Querystring: { a?: string; b?: string } }>('/api/mappings/diff', async (req) => {
    const { a, b } = req.query;
    if (!a || !b) throw invalid('a and b: two versions (or "active", "previous") are required');
    return lifecycleOf(deps).diff(a, b);
  });

  app.post<{ Body: Body }>('/api/mappings/propose', big, async (req, reply) => {
    const lc = lifecycleOf(deps);
    const candidate = {
      files: parseFiles(req.body?.files),
      fixtures: parseFixtures(req.body?.fixtures),
    };
    const r = await lc.propose(candidate, actorOf(req, req.body));
    return reply.code(r.created ? 201 : 200).send(r);
  });

  app.post<{ Body: Body }>('/api/mappings/activate', async (req, reply) => {
    const version = req.body?.version;
    if (typeof version !== 'string') throw invalid('version: required');
    const result = await lifecycleOf(deps).activate(version, actorOf(req, req.body), {
      changes: flag(req.body, 'acceptChanges'),
      skipShadowRun: flag(req.body, 'withoutShadowRun'),
    });
    if (result.outcome !== 'refused') return result;
    const { status, body } = httpAnswer(
      new PipelineError(
        'GateRefused',
        `version ${result.to} refused: ${result.report.refusals.join('; ')}`,
        { stage: 'admin' },
      ),
    );
    return reply.code(status).send({ ...body, result });
  });

  app.post<{ Body: Body }>('/api/mappings/rollback', async (req) =>
    lifecycleOf(deps).rollback(actorOf(req, req.body)),
  );

  app.get('/api/mappings/versions', async () => {
    const lc = lifecycleOf(deps);
    return { active: (await lc.store.active()) ?? null, versions: await lc.versions() };
  });

  app.get<{ Params: { version: string } }>('/api/mappings/versions/:version', async (req) =>
    lifecycleOf(deps).get(req.params.version),
  );

  app.get<{ Querystring: { limit?: string } }>('/api/mappings/audit', async (req) => {
    const limit = req.query.limit === undefined ? 50 : Number(req.query.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 10_000)
      throw invalid('limit: an integer in [1, 10000]');
    return { entries: await lifecycleOf(deps).audit(limit) };
  });

  // The debugger on a candidate (or a stored version) and one message: every stage,
  // and the FHIR server's $validate for each Observation. Changes nothing.
  app.post<{ Body: Body }>('/api/mappings/debug', big, async (req) => {
    const lc = lifecycleOf(deps);
    const candidate = await candidateOf(lc, req.body);
    const m = req.body?.message;
    if (!isObject(m) || typeof m.payload !== 'string' || typeof m.deviceId !== 'string')
      throw invalid('message: expected { payload (text), deviceId, receivedAt? }');
    const receivedAt =
      typeof m.receivedAt === 'number'
        ? m.receivedAt
        : typeof m.receivedAt === 'string'
          ? Date.parse(m.receivedAt)
          : Number.NaN;
    const compiled = compileSources(candidate.files, 'candidate');
    if (!compiled.ok) return { ok: false, problems: compiled.problems.map(formatProblem) };
    const given = req.body?.patientId;
    const patientId = typeof given === 'string' && given !== '' ? given : 'debug-patient';
    const identifierSystem = deps.config?.fhir.identifierSystem ?? 'urn:ietf:rfc:3986';
    const at = Number.isNaN(receivedAt) ? Date.now() : receivedAt;
    const raw = await debugJson(compiled.mappings, {
      payload: m.payload,
      meta: { deviceId: m.deviceId, topic: `devices/${m.deviceId}/telemetry`, receivedAt: at },
      patientId,
      identifierSystem,
      ...(deps.config ? { policy: normalizePolicy(deps.config) } : {}),
    });
    const report = {
      ...raw,
      fixture: fixtureOf(raw, {
        deviceId: m.deviceId,
        patientId,
        receivedAt: new Date(at).toISOString(),
        identifierSystem,
        message: m.payload,
      }),
    };
    const observations = Array.isArray(report.observations)
      ? (report.observations as Resource[])
      : [];
    if (req.body?.validate !== true || !deps.fhir || observations.length === 0) return report;
    const fhir = deps.fhir;
    const validations = await Promise.all(
      observations.map(async (o) => {
        try {
          return await fhir.validate(o);
        } catch (err) {
          const { body } = httpAnswer(err);
          return { unavailable: body.error };
        }
      }),
    );
    return { ...report, validations };
  });

  app.post<{ Body: Body }>('/api/mappings/prune', async (req) => {
    const keep = req.body?.keep ?? 10;
    if (typeof keep !== 'number' || !Number.isInteger(keep) || keep < 0)
      throw invalid('keep: a non-negative integer');
    const removed = await lifecycleOf(deps).prune(
      keep,
      actorOf(req, req.body),
      flag(req.body, 'dryRun'),
    );
    return { removed };
  });
}
