/**
 * Template fixtures: a sample message with the measurements and Observations
 * it must produce (or the error code it must be refused with). Pure: the
 * fixture comes in as data, the differences go out as readable lines. The
 * template version (a content hash) is written "<version>" in expectations.
 */
import { isPipelineError } from '../errors.js';
import type { MappingSet } from './compile.js';
import { jsonDiff } from './diff.js';
import { bindingResolver } from './identity.js';
import type { NormalizePolicy } from './input-policy.js';
import { normalizeMessage } from './normalize.js';

/** fixture.json: who sent the message, and when. */
export interface FixtureSettings {
  /** The authenticated device. */
  readonly deviceId: string;
  /** Its patient binding. */
  readonly patientId?: string;
  /** Broker receipt time, ISO 8601. */
  readonly receivedAt: string;
  readonly topic?: string;
  /** For a gateway: the devices it may speak for, with their patients. */
  readonly children?: Readonly<Record<string, string>>;
  readonly identifierSystem?: string;
}

export interface Fixture {
  readonly name: string;
  readonly settings: FixtureSettings;
  /** The payload as the device publishes it. */
  readonly message: string;
  readonly expectedMeasurements?: unknown;
  readonly expectedObservations?: unknown;
  /** Instead of outputs: the error code the message is refused with. */
  readonly expectedError?: string;
}

export interface FixtureOutcome {
  readonly name: string;
  readonly ok: boolean;
  /** One readable line per difference. */
  readonly differences: readonly string[];
  /** What the templates produced (for `--update`-style inspection). */
  readonly actual?: { readonly measurements: unknown; readonly observations: unknown };
}

export const VERSION_PLACEHOLDER = '<version>';

function withPlaceholder(v: unknown, version: string): unknown {
  return JSON.parse(JSON.stringify(v).replaceAll(version, VERSION_PLACEHOLDER)) as unknown;
}

export async function runFixture(
  mappings: MappingSet,
  f: Fixture,
  policy?: NormalizePolicy,
): Promise<FixtureOutcome> {
  const s = f.settings;
  const children = new Map(Object.entries(s.children ?? {}));
  let result;
  try {
    result = await normalizeMessage(mappings, {
      payload: f.message,
      meta: {
        deviceId: s.deviceId,
        topic: s.topic ?? `devices/${s.deviceId}/telemetry`,
        receivedAt: Date.parse(s.receivedAt),
      },
      patientId: s.patientId,
      identifierSystem: s.identifierSystem ?? 'urn:iomt:observation',
      resolveIdentity: bindingResolver({ patientId: s.patientId, children }),
      ...(policy ? { policy } : {}),
    });
  } catch (err) {
    const code = isPipelineError(err) ? err.code : 'Internal';
    if (f.expectedError === code) return { name: f.name, ok: true, differences: [] };
    const message = err instanceof Error ? err.message : String(err);
    return {
      name: f.name,
      ok: false,
      differences: [
        f.expectedError
          ? `error: expected ${f.expectedError}, got ${code} (${message})`
          : `refused with ${code}: ${message}`,
      ],
    };
  }
  if (f.expectedError) {
    return {
      name: f.name,
      ok: false,
      differences: [`error: expected ${f.expectedError}, but the message was accepted`],
    };
  }
  const actual = {
    measurements: withPlaceholder(result.measurements, mappings.version),
    observations: withPlaceholder(
      result.observations.map((o) => o.observation),
      mappings.version,
    ),
  };
  const differences = [
    ...(f.expectedMeasurements !== undefined
      ? jsonDiff(f.expectedMeasurements, actual.measurements, 'measurements')
      : []),
    ...(f.expectedObservations !== undefined
      ? jsonDiff(f.expectedObservations, actual.observations, 'observations')
      : []),
  ];
  if (f.expectedMeasurements === undefined && f.expectedObservations === undefined) {
    differences.push('the fixture has no expected-measurements.json or expected-observations.json');
  }
  return { name: f.name, ok: differences.length === 0, differences, actual };
}
