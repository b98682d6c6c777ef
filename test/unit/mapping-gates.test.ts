/**
 * The activation gates on the library's own templates, without services: the
 * heartRate → heartrate edit, a display change, a fix that rescues dead
 * letters, and the version diff. Samples stand for device_messages rows.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { readCandidate, type SourceFile } from '../../src/mapping/index.js';
import {
  diffVersions,
  gateLines,
  runGates,
  summarizeGates,
  unifiedDiff,
  type Candidate,
  type GateSettings,
  type ShadowSample,
} from '../../src/mapping/lifecycle/index.js';

const library = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../mappings');
const config = loadConfig({});
const settings: GateSettings = {
  identifierSystem: 'urn:iomt:observation',
  input: config.input,
  perTemplate: 500,
  maxNewDeadLetters: 0,
};

let v1: Candidate;

function edit(c: Candidate, file: string, from: string, to: string): Candidate {
  return {
    ...c,
    files: c.files.map((f): SourceFile => {
      if (f.file !== file) return f;
      expect(f.text).toContain(from);
      return { ...f, text: f.text.replace(from, to) };
    }),
  };
}

const T0 = Date.UTC(2026, 10, 26, 9, 0, 0);

function vitals(n: number): ShadowSample[] {
  return Array.from({ length: n }, (_, i) => ({
    id: `m-${i}`,
    deviceId: 'monitor-7',
    patientId: 'p-1',
    topic: 'devices/monitor-7/telemetry',
    receivedAt: T0 + i * 1000 + 500,
    payload: JSON.stringify({
      timestamp: new Date(T0 + i * 1000).toISOString(),
      heartRate: 60 + (i % 20),
      spo2: 97,
    }),
    source: 'device_messages' as const,
  }));
}

const scale: ShadowSample = {
  id: 'w-1',
  deviceId: 'scale-1',
  patientId: 'p-2',
  topic: 'devices/scale-1/telemetry',
  receivedAt: T0 + 500,
  payload: JSON.stringify({
    kind: 'weight-scale',
    measuredAt: new Date(T0).toISOString(),
    weight: 70,
    unit: 'kg',
  }),
  source: 'device_messages',
};

beforeAll(async () => {
  v1 = await readCandidate(library);
});

describe('activation gates', () => {
  it('refuse the heartRate → heartrate edit: the vitals fixture with its diff, and N of N recent vitals messages dead-lettered', async () => {
    const broken = edit(
      v1,
      'device/vitals.json',
      '"valueExpression": "heartRate"',
      '"valueExpression": "heartrate"',
    );
    const report = await runGates({
      candidate: broken,
      active: v1.files,
      samples: [...vitals(312), scale],
      settings,
      accept: {},
    });
    expect(report.passed).toBe(false);
    expect(report.validate.ok).toBe(true);
    const failing = report.fixtures.results.filter((f) => !f.ok);
    expect(failing.map((f) => f.name)).toEqual(['vitals']);
    expect(failing[0]!.differences.join('\n')).toMatch(/RequiredValueMissing/);
    if (report.shadow?.status !== 'ran') throw new Error('the shadow run did not run');
    // Only the changed file is on trial; the scale's message is not attributed to it.
    expect(report.shadow.templates.map((t) => t.file)).toEqual(['device/vitals.json']);
    const t = report.shadow.templates[0]!;
    expect(t).toMatchObject({
      messages: 312,
      active: { matched: 312, unmatched: 0, deadLettered: 0 },
      candidate: { matched: 0, unmatched: 0, deadLettered: 312 },
      newlyRefused: 312,
      candidateCodes: { RequiredValueMissing: 312 },
    });
    expect(report.refusals).toContain(
      'device/vitals.json: 312 of 312 recent messages would be dead-lettered (0 with the active version): RequiredValueMissing 312',
    );
    expect(report.refusals.some((r) => r.startsWith('fixture vitals fails'))).toBe(true);
    const text = gateLines(report).join('\n');
    expect(text).toContain('FAIL  vitals');
    expect(text).toMatch(/312 of 312 recent messages would be dead-lettered/);
    // The audit keeps counts and names, no message contents.
    const summary = summarizeGates(report);
    expect(summary).toMatchObject({
      passed: false,
      fixtures: { failed: ['vitals'] },
      shadow: { messages: 312, newlyRefused: 312 },
    });
    expect(JSON.stringify(summary)).not.toContain('"heartRate":');
  });

  it('show changed Observations as a readable diff, refused unless the operator accepts them', async () => {
    const display = edit(
      v1,
      'fhir/vitals.json',
      '"display": "Heart rate"',
      '"display": "Heart rate (monitor)"',
    );
    const report = await runGates({
      candidate: display,
      active: v1.files,
      samples: vitals(3),
      settings,
      accept: {},
    });
    if (report.shadow?.status !== 'ran') throw new Error('the shadow run did not run');
    const t = report.shadow.templates[0]!;
    expect(t.reason).toBe('FHIR template "heartrate" changed');
    expect(t).toMatchObject({
      messages: 3,
      newlyRefused: 0,
      changedMessages: 3,
      changedObservations: 3,
    });
    expect(t.examples[0]!.diff).toContainEqual(
      expect.stringMatching(
        /^observation obs-[0-9a-f]+ code\.coding\[0\]\.display: "Heart rate" → "Heart rate \(monitor\)"$/,
      ),
    );
    expect(report.refusals).toEqual([
      expect.stringMatching(/^fixture vitals fails/),
      'device/vitals.json: 3 Observation(s) from 3 of 3 recent messages would change (review the diff; accept with --accept-changes)',
    ]);
    const accepted = await runGates({
      candidate: display,
      active: v1.files,
      samples: vitals(3),
      settings,
      accept: { changes: true },
    });
    expect(accepted.refusals).toEqual([expect.stringMatching(/^fixture vitals fails/)]);
  });

  it('count dead letters a fix would rescue, and pass a change that touches no recent message', async () => {
    const withPump = edit(
      v1,
      'device/vitals.json',
      '"typeMatchExpression": "$exists(heartRate)"',
      '"typeMatchExpression": "$exists(heartRate) or $exists(hrBpm)"',
    );
    const fixed = edit(
      withPump,
      'device/vitals.json',
      '"valueExpression": "heartRate"',
      '"valueExpression": "heartRate ? heartRate : hrBpm"',
    );
    const dead: ShadowSample = {
      ...vitals(1)[0]!,
      id: 'd-1',
      payload: JSON.stringify({ timestamp: new Date(T0).toISOString(), hrBpm: 80 }),
      source: 'dead-letter',
    };
    const report = await runGates({
      candidate: fixed,
      active: v1.files,
      samples: [dead, ...vitals(5)],
      settings,
      accept: {},
    });
    if (report.shadow?.status !== 'ran') throw new Error('the shadow run did not run');
    expect(report.shadow.templates[0]).toMatchObject({
      messages: 6,
      fromDeadLetters: 1,
      active: { matched: 5, unmatched: 1 },
      candidate: { matched: 6 },
      newlyMapped: 1,
      newlyRefused: 0,
      changedObservations: 0,
    });
    expect(report.refusals).toEqual([]);
    expect(report.passed).toBe(true);
  });

  it('refuse when the shadow run cannot run, unless the operator waives it', async () => {
    const display = edit(
      v1,
      'fhir/weight-scale.json',
      '"display": "Body weight"',
      '"display": "Body weight"',
    );
    const down = await runGates({
      candidate: display,
      active: v1.files,
      samples: { unavailable: 'ClickHouseUnavailable: no answer' },
      settings,
      accept: {},
    });
    expect(down.refusals).toEqual([
      'the shadow run could not run (ClickHouseUnavailable: no answer); retry, or activate with --without-shadow-run',
    ]);
    const waived = await runGates({
      candidate: display,
      active: v1.files,
      samples: { unavailable: 'ClickHouseUnavailable: no answer' },
      settings,
      accept: { skipShadowRun: true },
    });
    expect(waived.passed).toBe(true);
    expect(waived.shadow).toMatchObject({ status: 'skipped', reason: 'skipped by the operator' });
  });

  it('refuse templates that do not validate before anything runs', async () => {
    const broken = edit(
      v1,
      'device/vitals.json',
      '"valueExpression": "heartRate"',
      '"valueExpression": "heartRate +"',
    );
    const report = await runGates({
      candidate: broken,
      active: v1.files,
      samples: vitals(2),
      settings,
      accept: {},
    });
    expect(report.passed).toBe(false);
    expect(report.validate.problems[0]).toMatch(
      /^device\/vitals\.json:\d+:\d+: JSONata syntax error/,
    );
    expect(report.shadow).toBeUndefined();
  });
});

describe('version diff', () => {
  it('names the changed template and shows the file as a unified diff', () => {
    const b = edit(
      v1,
      'device/vitals.json',
      '"valueExpression": "heartRate"',
      '"valueExpression": "heartrate"',
    );
    const d = diffVersions({ version: 'a', files: v1.files }, { version: 'b', files: b.files });
    expect(d.templates).toEqual([
      { kind: 'device', typeName: 'heartrate', file: 'device/vitals.json', change: 'changed' },
    ]);
    expect(d.files).toHaveLength(1);
    const lines = d.files[0]!.diff;
    expect(lines[0]).toMatch(/^@@ -\d+,7 \+\d+,7 @@$/);
    expect(lines).toContain('-            "valueExpression": "heartRate",');
    expect(lines).toContain('+            "valueExpression": "heartrate",');
  });

  it('unifiedDiff: hunks with context, additions and removals', () => {
    expect(unifiedDiff('a\nb\nc\n', 'a\nB\nc\nd\n')).toEqual([
      '@@ -1,3 +1,4 @@',
      ' a',
      '-b',
      '+B',
      ' c',
      '+d',
    ]);
    expect(unifiedDiff('same\n', 'same\n')).toEqual([]);
  });
});
