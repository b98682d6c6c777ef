/**
 * The shadow run: recent real messages mapped with the active version and with
 * a candidate, side by side, before the candidate may become active. PURE:
 * samples in (read by shadow-source.ts), a report out.
 *
 * For each device template file the candidate affects (changed, added, removed,
 * or producing a type whose FHIR template changed), the samples it selects —
 * under either version — are mapped by both versions through the worker's own
 * path (normalizeMessage and the worker's input policy). Each message ends
 * matched, unmatched or dead-lettered under each version; messages mapped by
 * both are compared Observation by Observation (by id, the version stamp set
 * aside), and the first few differences are kept as a readable diff.
 *
 * Identity is not what is on trial: both versions resolve it the same way, from
 * what the message's row recorded (the device's patient then) or what the
 * payload claims. Registry and FHIR lookups are not consulted.
 */
import type { Observation } from 'fhir/r4.js';
import {
  checkJsonShape,
  checkObservationValues,
  checkOccurrenceTimes,
  DEFAULT_POLICY,
} from '../input-policy.js';
import type { Config } from '../../config.js';
import { toPipelineError } from '../../errors.js';
import type { MappingSet } from '../compile.js';
import { medtechEnvelope } from '../device-mapping.js';
import {
  messageEnvelope,
  NO_ENVELOPE,
  type EnvelopePolicy,
  type MessageEnvelope,
} from '../envelope.js';
import { resolvedIdentity, type IdentityResolver } from '../identity.js';
import type { SourceFile } from '../load.js';
import { normalizeMessage } from '../normalize.js';
import type {
  FateCounts,
  ShadowExample,
  ShadowFate,
  ShadowReport,
  TemplateShadow,
} from './types.js';

/** One recorded message, as the shadow run reads it. */
export interface ShadowSample {
  readonly id: string;
  /** The authenticated MQTT device. */
  readonly deviceId: string;
  /** The device's patient when the message arrived ('' when unknown). */
  readonly patientId: string;
  readonly topic: string;
  /** Broker receipt time, epoch ms. */
  readonly receivedAt: number;
  /** UTF-8 payload text. */
  readonly payload: string;
  readonly source: 'device_messages' | 'dead-letter';
}

export interface ShadowSettings {
  readonly identifierSystem: string;
  readonly input: Config['input'];
  /** MEDTECH_ENVELOPE, as the worker applies it (default: none). */
  readonly envelope?: EnvelopePolicy;
  /** device_messages samples per affected file (dead letters come on top). */
  readonly perTemplate: number;
  /** Differing messages kept per file (default 5). */
  readonly maxExamples?: number;
  /** Diff lines kept per example (default 20). */
  readonly maxDiffLines?: number;
}

interface Outcome {
  readonly fate: ShadowFate;
  readonly observations: readonly Observation[];
}

const PLACEHOLDER = '<version>';

/** Device template files a candidate affects, with the reason. */
export function affectedFiles(
  active: { readonly mappings: MappingSet; readonly files: readonly SourceFile[] },
  candidate: { readonly mappings: MappingSet; readonly files: readonly SourceFile[] },
): Map<string, string> {
  const text = (files: readonly SourceFile[]) => new Map(files.map((f) => [f.file, f.text]));
  const a = text(active.files);
  const c = text(candidate.files);
  const out = new Map<string, string>();
  for (const file of new Set([...a.keys(), ...c.keys()])) {
    if (!file.startsWith('device/')) continue;
    if (!a.has(file)) out.set(file, 'added');
    else if (!c.has(file)) out.set(file, 'removed');
    else if (a.get(file) !== c.get(file)) out.set(file, 'changed');
  }
  // FHIR templates are compared by type: one file often holds several.
  const spec = (m: MappingSet, type: string) => {
    const t = m.fhirTemplates.get(type);
    return t ? JSON.stringify(t.spec) : undefined;
  };
  const types = new Set([
    ...active.mappings.fhirTemplates.keys(),
    ...candidate.mappings.fhirTemplates.keys(),
  ]);
  const changedTypes = new Set(
    [...types].filter((type) => spec(active.mappings, type) !== spec(candidate.mappings, type)),
  );
  const byFile = new Map<string, Set<string>>();
  for (const m of [active.mappings, candidate.mappings]) {
    for (const t of m.deviceTemplates) {
      if (!changedTypes.has(t.spec.typeName) || out.has(t.file)) continue;
      byFile.set(t.file, (byFile.get(t.file) ?? new Set<string>()).add(t.spec.typeName));
    }
  }
  for (const [file, changed] of byFile) {
    const names = [...changed].map((n) => `"${n}"`).join(', ');
    out.set(file, `FHIR template${changed.size > 1 ? 's' : ''} ${names} changed`);
  }
  return out;
}

/** The device template files whose match expression selects something in `body` (an error counts). */
async function selectingFiles(
  m: MappingSet,
  body: unknown,
  s: ShadowSample,
  policy: EnvelopePolicy = NO_ENVELOPE,
): Promise<Set<string>> {
  const meta = { deviceId: s.deviceId, topic: s.topic, receivedAt: s.receivedAt };
  let parts: MessageEnvelope;
  try {
    parts = messageEnvelope(body, meta, policy);
  } catch {
    parts = messageEnvelope(body, meta); // not the shape the setting names: the worker refuses it anyway
  }
  const bindings = { msg: parts.body, meta };
  const out = new Set<string>();
  let envelope: Record<string, unknown> | undefined;
  for (const t of m.deviceTemplates) {
    if (out.has(t.file)) continue;
    const root =
      t.spec.kind === 'JsonataContent'
        ? parts.body
        : (envelope ??= medtechEnvelope(body, meta, parts));
    try {
      const selected = (await t.match.select(root, bindings)) as unknown[];
      if (selected.length > 0) out.add(t.file);
    } catch {
      out.add(t.file); // the template would refuse it: it is this template's message
    }
  }
  return out;
}

function shadowIdentity(s: ShadowSample): IdentityResolver {
  return (claim) => {
    const viaGateway = claim.deviceId !== claim.authenticatedDeviceId;
    const recorded = viaGateway ? `(patient of ${claim.deviceId})` : s.patientId || '(unknown)';
    return resolvedIdentity(claim, claim.claimedPatientId ?? recorded);
  };
}

/** The worker's path for one message (workers/normalize.ts), without the queues. */
async function outcomeOf(
  m: MappingSet,
  s: ShadowSample,
  settings: ShadowSettings,
): Promise<Outcome> {
  try {
    checkJsonShape(s.payload, settings.input);
    const r = await normalizeMessage(m, {
      payload: s.payload,
      meta: { deviceId: s.deviceId, topic: s.topic, receivedAt: s.receivedAt },
      patientId: s.patientId || undefined,
      identifierSystem: settings.identifierSystem,
      resolveIdentity: shadowIdentity(s),
      // The worker's input limits (normalizeMessage applies them itself since issue 10).
      policy: {
        ...DEFAULT_POLICY,
        input: settings.input,
        envelope: settings.envelope ?? DEFAULT_POLICY.envelope,
      },
    });
    checkOccurrenceTimes(
      r.measurements.map((x) => x.occurrenceTime),
      s.receivedAt,
      settings.input,
    );
    const observations = r.observations.map((o) => o.observation);
    checkObservationValues(observations);
    const neutral = JSON.parse(
      JSON.stringify(observations).replaceAll(m.version, PLACEHOLDER),
    ) as Observation[];
    return { fate: { kind: 'matched', observations: neutral.length }, observations: neutral };
  } catch (err) {
    const e = toPipelineError(err);
    if (e.code === 'TemplateNotMatched') return { fate: { kind: 'unmatched' }, observations: [] };
    return {
      fate: { kind: 'dead-lettered', code: e.code, reason: e.message },
      observations: [],
    };
  }
}

function show(v: unknown): string {
  if (v === undefined) return '(absent)';
  const s = JSON.stringify(v);
  return s.length > 100 ? `${s.slice(0, 97)}...` : s;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `path: active → candidate`, one line per differing leaf. */
function valueDiff(a: unknown, b: unknown, path: string, out: string[]): void {
  if (Array.isArray(a) && Array.isArray(b)) {
    for (let i = 0; i < Math.max(a.length, b.length); i++)
      valueDiff(a[i], b[i], `${path}[${i}]`, out);
    return;
  }
  if (isObject(a) && isObject(b)) {
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)]))
      valueDiff(a[k], b[k], path ? `${path}.${k}` : k, out);
    return;
  }
  if (JSON.stringify(a) !== JSON.stringify(b)) out.push(`${path}: ${show(a)} → ${show(b)}`);
}

function codeOf(o: Observation): string {
  return o.code?.coding?.[0]?.code ?? '?';
}

/** Observations compared by id: changed fields, and those only one version produces. */
export function observationDiff(
  active: readonly Observation[],
  candidate: readonly Observation[],
): { lines: string[]; changed: number } {
  const byId = (list: readonly Observation[]) => new Map(list.map((o) => [o.id ?? '', o]));
  const a = byId(active);
  const c = byId(candidate);
  const lines: string[] = [];
  let changed = 0;
  for (const [id, o] of a) {
    const other = c.get(id);
    if (!other) {
      changed++;
      lines.push(`- observation ${id} (${codeOf(o)}): no longer produced`);
      continue;
    }
    const diff: string[] = [];
    valueDiff(o, other, '', diff);
    if (diff.length > 0) {
      changed++;
      for (const d of diff) lines.push(`observation ${id} ${d}`);
    }
  }
  for (const [id, o] of c) {
    if (!a.has(id)) {
      changed++;
      lines.push(`+ observation ${id} (${codeOf(o)}): new`);
    }
  }
  return { lines, changed };
}

function refused(f: ShadowFate): boolean {
  return f.kind !== 'matched';
}

function count(fates: readonly ShadowFate[]): FateCounts {
  return {
    matched: fates.filter((f) => f.kind === 'matched').length,
    unmatched: fates.filter((f) => f.kind === 'unmatched').length,
    deadLettered: fates.filter((f) => f.kind === 'dead-lettered').length,
  };
}

function fateLine(f: ShadowFate): string {
  if (f.kind === 'matched') return `mapped (${f.observations} Observation(s))`;
  if (f.kind === 'unmatched') return 'unmatched (TemplateNotMatched)';
  return `dead-lettered ${f.code}: ${f.reason}`;
}

/**
 * Maps the samples attributed to each affected file with both versions.
 * `samples` come newest first; dead letters are all taken, device_messages up
 * to `perTemplate` per file.
 */
export async function shadowRun(
  active: { readonly mappings: MappingSet; readonly files: readonly SourceFile[] },
  candidate: { readonly mappings: MappingSet; readonly files: readonly SourceFile[] },
  samples: readonly ShadowSample[],
  settings: ShadowSettings,
): Promise<Extract<ShadowReport, { status: 'ran' }>> {
  const affected = affectedFiles(active, candidate);
  const maxExamples = settings.maxExamples ?? 5;
  const maxLines = settings.maxDiffLines ?? 20;
  const perFile = new Map<string, ShadowSample[]>([...affected.keys()].map((f) => [f, []]));
  const taken = new Map<string, number>();
  for (const s of samples) {
    if (affected.size === 0) break;
    let body: unknown;
    try {
      body = JSON.parse(s.payload);
    } catch {
      continue; // no template change makes invalid JSON mappable
    }
    if (typeof body !== 'object' || body === null) continue;
    const open = [...affected.keys()].filter(
      (f) => s.source === 'dead-letter' || (taken.get(f) ?? 0) < settings.perTemplate,
    );
    if (open.length === 0) continue;
    const selecting = new Set([
      ...(await selectingFiles(active.mappings, body, s, settings.envelope)),
      ...(await selectingFiles(candidate.mappings, body, s, settings.envelope)),
    ]);
    for (const f of open) {
      if (!selecting.has(f)) continue;
      perFile.get(f)!.push(s);
      if (s.source === 'device_messages') taken.set(f, (taken.get(f) ?? 0) + 1);
    }
  }

  const cache = new Map<string, { a: Outcome; c: Outcome }>();
  const templates: TemplateShadow[] = [];
  for (const [file, reason] of affected) {
    const list = perFile.get(file)!;
    const fatesA: ShadowFate[] = [];
    const fatesC: ShadowFate[] = [];
    const codes: Record<string, number> = {};
    const examples: ShadowExample[] = [];
    let newlyRefused = 0;
    let newlyMapped = 0;
    let changedMessages = 0;
    let changedObservations = 0;
    for (const s of list) {
      let pair = cache.get(s.id);
      if (!pair) {
        pair = {
          a: await outcomeOf(active.mappings, s, settings),
          c: await outcomeOf(candidate.mappings, s, settings),
        };
        cache.set(s.id, pair);
      }
      const { a, c } = pair;
      fatesA.push(a.fate);
      fatesC.push(c.fate);
      if (c.fate.kind === 'dead-lettered') codes[c.fate.code] = (codes[c.fate.code] ?? 0) + 1;
      if (c.fate.kind === 'unmatched')
        codes.TemplateNotMatched = (codes.TemplateNotMatched ?? 0) + 1;
      let diff: string[] = [];
      if (!refused(a.fate) && refused(c.fate)) newlyRefused++;
      else if (refused(a.fate) && !refused(c.fate)) newlyMapped++;
      if (!refused(a.fate) && !refused(c.fate)) {
        const d = observationDiff(a.observations, c.observations);
        if (d.changed > 0) {
          changedMessages++;
          changedObservations += d.changed;
          diff = d.lines;
        }
      }
      const differs =
        diff.length > 0 ||
        a.fate.kind !== c.fate.kind ||
        (a.fate.kind === 'dead-lettered' &&
          c.fate.kind === 'dead-lettered' &&
          a.fate.code !== c.fate.code);
      if (differs && examples.length < maxExamples) {
        examples.push({
          messageId: s.id,
          deviceId: s.deviceId,
          receivedAt: new Date(s.receivedAt).toISOString(),
          source: s.source,
          active: a.fate,
          candidate: c.fate,
          diff:
            diff.length > 0
              ? diff
                  .slice(0, maxLines)
                  .concat(
                    diff.length > maxLines ? [`… ${diff.length - maxLines} more line(s)`] : [],
                  )
              : [`active: ${fateLine(a.fate)}`, `candidate: ${fateLine(c.fate)}`],
        });
      }
    }
    templates.push({
      file,
      reason,
      messages: list.length,
      fromDeviceMessages: list.filter((s) => s.source === 'device_messages').length,
      fromDeadLetters: list.filter((s) => s.source === 'dead-letter').length,
      active: count(fatesA),
      candidate: count(fatesC),
      newlyRefused,
      newlyMapped,
      changedMessages,
      changedObservations,
      candidateCodes: codes,
      examples,
    });
  }
  return {
    status: 'ran',
    active: active.mappings.version,
    candidate: candidate.mappings.version,
    scanned: {
      deviceMessages: samples.filter((s) => s.source === 'device_messages').length,
      deadLetters: samples.filter((s) => s.source === 'dead-letter').length,
    },
    templates,
  };
}
