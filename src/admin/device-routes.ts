/**
 * Devices and their patient associations on the admin API (bearer token, as
 * every route but /healthz). The same operations as `iomt devices` and
 * `iomt gateways`, for the operator console and for an ADT / IHE PCIM feed
 * (a Device–Patient Association Manager reporting associations: source "feed").
 *
 *   GET    /api/devices?reveal=true          devices and their patient now, the patient id
 *                                            masked (`pa•••cf`) unless reveal=true (audited)
 *   GET    /api/devices/:id/messages?limit=  its most recent messages in ClickHouse's
 *                                            device_messages (raw payload, outcome), newest first
 *   POST   /api/devices                      {deviceId, kind?, patient?, at?, newPatient?} → 201 {secret}
 *   GET    /api/devices/:id?reveal=true      the history and its periods, patient ids masked
 *                                            unless reveal=true (audited)
 *   POST   /api/devices/:id/assign           {patient, at?, newPatient?, correction?, note?}
 *   POST   /api/devices/:id/unassign         {at?, correction?, note?}
 *   POST   /api/devices/:id/rotate-secret    → {secret}
 *   DELETE /api/devices/:id                  credentials removed, association ended
 *   GET    /api/gateways/:id/devices         devices the gateway relays for now
 *   POST   /api/gateways/:id/devices         {deviceId, at?}
 *   DELETE /api/gateways/:id/devices/:device
 * The answers to add, assign and unassign carry the history too, with every
 * patient id masked but the one the request named (reveal=true: none, audited).
 * Every change body may carry `actor` (who; default "admin-api") and `source`
 * ("api", default, or "feed"). `at`: ISO 8601 with its zone, or epoch ms.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import {
  assertDatabaseName,
  DEVICE_MESSAGES_TABLE,
  type AnalyticsStore,
} from '../clickhouse/index.js';
import {
  assertDeviceId,
  parsePatientRef,
  type Actor,
  type DeviceHistory,
  type DeviceService,
} from '../devices/index.js';
import { parseInstant } from '../dlq/index.js';
import { PipelineError } from '../errors.js';

export interface DeviceRoutesDeps {
  readonly devices: DeviceService;
  /** Records that patient ids were shown unmasked (who, whose): the console's audit trail. */
  readonly auditReveal: (req: FastifyRequest, detail: string) => Promise<void>;
  /** For a device's recent messages (absent: this process has no ClickHouse). */
  readonly analyticsStore?: AnalyticsStore | undefined;
  readonly database: string;
}

/** A patient id as lists show it: enough to tell two apart, not enough to identify. */
export function maskPatientId(id: string): string {
  return id.length <= 4 ? '••••' : `${id.slice(0, 2)}•••${id.slice(-2)}`;
}

/**
 * A device's history with every patient id in it masked (records, periods, now),
 * but `named`: the patient the request itself named, which its caller knows.
 */
export function maskHistory(
  h: DeviceHistory,
  named?: string,
): DeviceHistory & { readonly patientMasked: true } {
  const mask = (id: string) => (id === named ? id : maskPatientId(id));
  return {
    ...h,
    records: h.records.map((r) => ('patientId' in r ? { ...r, patientId: mask(r.patientId) } : r)),
    periods: h.periods.map((p) => ({ ...p, patientId: mask(p.patientId) })),
    currentPatient: h.currentPatient === undefined ? undefined : mask(h.currentPatient),
    patientMasked: true,
  };
}

interface MessageRow {
  readonly message_id: string;
  readonly topic: string;
  readonly received_ms: string | number;
  readonly encoding: string;
  readonly payload: string;
  readonly outcome: string;
  readonly error_code: string;
  readonly template_version: string;
}

type Body = Record<string, unknown> | undefined;

function text(body: Body, key: string, required: true): string;
function text(body: Body, key: string, required?: false): string | undefined;
function text(body: Body, key: string, required = false): string | undefined {
  const v = body?.[key];
  if (v === undefined || v === null) {
    if (required) throw new PipelineError('InvalidArgument', `"${key}" is required`);
    return undefined;
  }
  if (typeof v !== 'string' || v.length > 500)
    throw new PipelineError(
      'InvalidArgument',
      `"${key}" must be a string (at most 500 characters)`,
    );
  return v;
}

function flag(body: Body, key: string): boolean {
  const v = body?.[key];
  if (v === undefined || v === null) return false;
  if (typeof v !== 'boolean')
    throw new PipelineError('InvalidArgument', `"${key}" must be true or false`);
  return v;
}

function at(body: Body): { at?: number } {
  const v = body?.at;
  if (v === undefined || v === null) return {};
  if (typeof v === 'number' && Number.isInteger(v)) return { at: v };
  if (typeof v === 'string') return { at: parseInstant(v, '"at"') };
  throw new PipelineError(
    'InvalidArgument',
    '"at" must be an ISO 8601 time with its zone, or epoch ms',
  );
}

function who(body: Body): Actor {
  const source = text(body, 'source') ?? 'api';
  if (source !== 'api' && source !== 'feed')
    throw new PipelineError('InvalidArgument', '"source" must be "api" or "feed"');
  return { actor: text(body, 'actor') ?? 'admin-api', source };
}

export function registerDeviceRoutes(app: FastifyInstance, deps: DeviceRoutesDeps): void {
  const { devices } = deps;
  type Reveal = { Querystring: { reveal?: string } };
  type WithId = { Params: { id: string }; Body: Body } & Reveal;

  /** A history as answered: masked but `named`, or whole with reveal=true, audited first. */
  async function answer(req: FastifyRequest<Reveal>, history: DeviceHistory, named?: string) {
    if (req.query.reveal !== 'true') return maskHistory(history, named);
    await deps.auditReveal(req, `patient ids of device ${history.device.deviceId}`);
    return history;
  }

  app.get<Reveal>('/api/devices', async (req) => {
    const list = await devices.list();
    if (req.query.reveal === 'true') {
      // Recorded before the ids leave the process.
      await deps.auditReveal(req, 'patient ids of the device list');
      return { devices: list };
    }
    return {
      devices: list.map((d) =>
        d.currentPatient === undefined
          ? d
          : { ...d, currentPatient: maskPatientId(d.currentPatient), patientMasked: true },
      ),
    };
  });

  // A device's recent traffic, as the pipeline stored it (the workbench takes one as input).
  app.get<{ Params: { id: string }; Querystring: { limit?: string } }>(
    '/api/devices/:id/messages',
    async (req) => {
      const deviceId = assertDeviceId(req.params.id);
      const limit = req.query.limit === undefined ? 10 : Number(req.query.limit);
      if (!Number.isInteger(limit) || limit < 1 || limit > 100)
        throw new PipelineError('InvalidArgument', 'limit: an integer in [1, 100]');
      const store = deps.analyticsStore;
      if (!store)
        throw new PipelineError(
          'NotServedHere',
          'this process has no ClickHouse to read device_messages from',
        );
      const db = assertDatabaseName(deps.database);
      // The id matched DEVICE_ID_PATTERN ([A-Za-z0-9._:-]): safe inside quotes.
      const rows = await store.queryRows<MessageRow>(
        `SELECT message_id, topic, toUnixTimestamp64Milli(received_at) AS received_ms,
                encoding, payload, outcome, error_code, template_version
         FROM ${db}.${DEVICE_MESSAGES_TABLE} FINAL
         WHERE mqtt_device_id = '${deviceId}'
         ORDER BY received_at DESC, message_id DESC
         LIMIT ${limit}`,
      );
      return {
        deviceId,
        messages: rows.map((r) => ({
          id: r.message_id,
          topic: r.topic,
          receivedAt: Number(r.received_ms),
          encoding: r.encoding,
          payload: r.payload,
          outcome: r.outcome,
          ...(r.error_code ? { errorCode: r.error_code } : {}),
          templateVersion: r.template_version,
        })),
      };
    },
  );

  app.post<{ Body: Body } & Reveal>('/api/devices', async (req, reply) => {
    const b = req.body;
    const kind = text(b, 'kind') ?? 'device';
    if (kind !== 'device' && kind !== 'gateway')
      throw new PipelineError('InvalidArgument', '"kind" must be "device" or "gateway"');
    const patient = text(b, 'patient');
    const result = await devices.add(text(b, 'deviceId', true), {
      ...who(b),
      kind,
      ...(patient !== undefined ? { patient } : {}),
      ...at(b),
      newPatient: flag(b, 'newPatient'),
    });
    // The secret is shown once: it is stored only as a hash.
    await reply.code(201).send({
      deviceId: result.device.deviceId,
      secret: result.secret,
      // A removed device added again keeps its earlier patients: masked.
      history: await answer(
        req,
        result.history,
        patient === undefined ? undefined : parsePatientRef(patient),
      ),
    });
  });

  // Masked like the list (the console's Reveal asks with reveal=true), the ids
  // recorded as revealed before they leave the process.
  app.get<WithId>('/api/devices/:id', async (req) =>
    answer(req, await devices.history(req.params.id)),
  );

  // The answers to changes show the patient the request named (an ADT feed reads
  // its change back), and no other: the device's earlier patients stay masked.
  app.post<WithId>('/api/devices/:id/assign', async (req) => {
    const b = req.body;
    const note = text(b, 'note');
    const patient = text(b, 'patient', true);
    const history = await devices.assign(req.params.id, patient, {
      ...who(b),
      ...at(b),
      newPatient: flag(b, 'newPatient'),
      correction: flag(b, 'correction'),
      ...(note !== undefined ? { note } : {}),
    });
    return answer(req, history, parsePatientRef(patient));
  });

  app.post<WithId>('/api/devices/:id/unassign', async (req) => {
    const b = req.body;
    const note = text(b, 'note');
    const history = await devices.unassign(req.params.id, {
      ...who(b),
      ...at(b),
      correction: flag(b, 'correction'),
      ...(note !== undefined ? { note } : {}),
    });
    return answer(req, history);
  });

  app.post<WithId>('/api/devices/:id/rotate-secret', async (req) => {
    const { secret, device } = await devices.rotateSecret(req.params.id, who(req.body));
    return { deviceId: device.deviceId, secret };
  });

  app.delete<WithId>('/api/devices/:id', async (req) => {
    const removed = await devices.remove(req.params.id, who(req.body));
    if (!removed) throw new PipelineError('DeviceNotFound', `no active device "${req.params.id}"`);
    return { removed: req.params.id };
  });

  app.get<WithId>('/api/gateways/:id/devices', async (req) => ({
    gatewayId: req.params.id,
    devices: await devices.children(req.params.id),
  }));

  app.post<WithId>('/api/gateways/:id/devices', async (req, reply) => {
    const b = req.body;
    const deviceId = text(b, 'deviceId', true);
    await devices.link(req.params.id, deviceId, { ...who(b), ...at(b) });
    await reply.code(201).send({ gatewayId: req.params.id, deviceId });
  });

  app.delete<{ Params: { id: string; device: string }; Body: Body }>(
    '/api/gateways/:id/devices/:device',
    async (req) => {
      const b = req.body;
      const unlinked = await devices.unlink(req.params.id, req.params.device, {
        ...who(b),
        ...at(b),
      });
      if (!unlinked)
        throw new PipelineError('DeviceNotFound', 'the gateway does not relay for that device now');
      return { gatewayId: req.params.id, unlinked: req.params.device };
    },
  );
}
