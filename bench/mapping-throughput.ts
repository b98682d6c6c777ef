/**
 * Mapping throughput on one core, against raw `jsonata(...).evaluate` on the
 * same messages in the same run (a benchmark script that prints figures, not
 * a timed test). For each message shape:
 *
 *   raw JSONata     every expression of the matching templates, compiled once
 *                   with jsonata() and run with .evaluate() — the interpreter alone
 *   device mapping  our mapMessage: the same expressions, plain paths read directly
 *   full path       normalizeMessage: JSON parse, device mapping, identity, Observations
 *
 *   npx tsx bench/mapping-throughput.ts [--seconds 3]
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import jsonata from 'jsonata';
import {
  loadMappings,
  mapMessage,
  normalizeMessage,
  type MappingSet,
} from '../src/mapping/index.js';

const { values: args } = parseArgs({ options: { seconds: { type: 'string', default: '3' } } });
const SECONDS = Number(args.seconds);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const meta = { deviceId: 'bench-1', topic: 'devices/bench-1/telemetry', receivedAt: Date.now() };

/** Message shapes: plain paths (vitals monitor) and computed expressions (library devices). */
function messages(kind: string, n: number): unknown[] {
  const at = (i: number) => new Date(Date.now() - (n - i) * 1000).toISOString();
  return Array.from({ length: n }, (_, i) => {
    if (kind === 'vitals monitor') {
      return {
        timestamp: at(i),
        heartRate: 60 + (i % 40),
        spo2: 94 + (i % 6),
        respiratoryRate: 12 + (i % 8),
        temperature: 36.5 + (i % 10) / 10,
        bloodPressure: { systolic: 110 + (i % 30), diastolic: 70 + (i % 15) },
      };
    }
    if (kind === 'pulse oximeter batch') {
      return {
        kind: 'pulse-oximeter',
        readings: [0, 1, 2, 3].map((k) => ({ at: at(i + k), spo2: 95 + k, pulse: 60 + k })),
      };
    }
    return {
      kind: 'bp-cuff',
      measuredAt: at(i),
      systolic: 16 + (i % 3),
      diastolic: 10.5,
      unit: 'kPa',
      pulse: 70,
    };
  });
}

interface Raw {
  match: ReturnType<typeof jsonata>;
  rest: ReturnType<typeof jsonata>[];
}

/** The same expressions, compiled with jsonata() once, evaluated by the interpreter only. */
function rawTemplates(m: MappingSet): Raw[] {
  return m.deviceTemplates
    .filter((t) => t.spec.kind === 'JsonataContent')
    .map((t) => ({
      match: jsonata(t.spec.typeMatchExpression.value),
      rest: [t.spec.timestampExpression, ...t.spec.values.map((v) => v.valueExpression)]
        .filter((e) => e !== undefined)
        .map((e) => jsonata(e.value)),
    }));
}

async function rawEvaluate(raw: Raw[], body: unknown): Promise<number> {
  const bindings = { msg: body, meta };
  let results = 0;
  for (const t of raw) {
    const selected = (await t.match.evaluate(body, bindings)) as unknown;
    if (selected === undefined || selected === null || selected === false) continue;
    const contexts = selected === true ? [body] : Array.isArray(selected) ? selected : [selected];
    for (const ctx of contexts) {
      for (const e of t.rest) {
        await e.evaluate(ctx, bindings);
        results++;
      }
    }
  }
  return results;
}

async function rate(
  label: string,
  bodies: readonly unknown[],
  run: (body: unknown, i: number) => Promise<unknown>,
): Promise<number> {
  for (let i = 0; i < 2000; i++) await run(bodies[i % bodies.length], i); // warm up the JIT
  let n = 0;
  const started = process.hrtime.bigint();
  const deadline = Date.now() + SECONDS * 1000;
  while (Date.now() < deadline) {
    for (let k = 0; k < 200; k++, n++) await run(bodies[n % bodies.length], n);
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const perSecond = n / seconds;
  process.stdout.write(
    `  ${label.padEnd(16)} ${Math.round(perSecond).toLocaleString('en-US').padStart(9)} msg/s\n`,
  );
  return perSecond;
}

const loaded = await loadMappings(path.join(root, 'mappings'));
if (!loaded.ok) throw new Error('the mappings folder does not validate');
const mappings = loaded.mappings;
const raw = rawTemplates(mappings);
const fast = mappings.deviceTemplates.reduce(
  (n, t) =>
    n + [t.match, t.timestamp, ...t.values.map((v) => v.expression)].filter((e) => e?.fast).length,
  0,
);
const total = mappings.deviceTemplates.reduce(
  (n, t) => n + [t.match, t.timestamp, ...t.values.map((v) => v.expression)].filter(Boolean).length,
  0,
);

process.stdout.write(
  `mapping throughput, one core (Node ${process.version}), ${SECONDS} s per figure; templates ${mappings.version}: ` +
    `${mappings.deviceTemplates.length} device templates, ${fast} of ${total} expressions read directly\n`,
);
for (const kind of ['vitals monitor', 'pulse oximeter batch', 'bp cuff (unit conversion)']) {
  const bodies = messages(kind, 500);
  const payloads = bodies.map((b) => JSON.stringify(b));
  process.stdout.write(`${kind}:\n`);
  const baseline = await rate('raw JSONata', bodies, (b) => rawEvaluate(raw, b));
  const mapped = await rate('device mapping', bodies, (b) => mapMessage(mappings, b, meta));
  const full = await rate('full path', bodies, (_b, i) =>
    normalizeMessage(mappings, {
      payload: payloads[i % payloads.length]!,
      meta,
      patientId: 'bench-patient',
      identifierSystem: 'urn:iomt:observation',
    }),
  );
  process.stdout.write(
    `  device mapping / raw JSONata = ${(mapped / baseline).toFixed(2)}x; full path / raw JSONata = ${(full / baseline).toFixed(2)}x\n`,
  );
}
