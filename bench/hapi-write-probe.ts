/**
 * Why is one Observation shape slower than another on HAPI? Writes the same
 * Observations as batch or transaction Bundles, with or without a Device
 * reference, a meta.tag, Prefer: return=representation (variants such as
 * `transaction+device+minimal+notag`), and prints Observations/s beside what PostgreSQL did for each
 * Observation (statements by table, from pg_stat_user_tables deltas, and
 * commits from pg_stat_database) — the SQL-level view of HAPI's write path
 * without restarting it with SQL logging — and the CPU the server's process
 * spent per Observation (/proc, when it runs on this machine). `--rounds N`
 * runs the variants N times, interleaved, so that a drift of the server's speed
 * over the run does not favour one. Findings: docs/performance.md.
 *
 *   npx tsx bench/hapi-write-probe.ts --fhir http://127.0.0.1:8095/fhir --db hapi [--count 1000] [--size 200] [--inflight 4] [--rounds 1]
 */
import { execFileSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import type { BundleEntry, Observation } from 'fhir/r4.js';
import { createFhirGateway } from '../src/fhir/gateway.js';
import { pidListening } from './cpu-partition.js';
import { procCpuSeconds } from './proc-stat.js';

const { values: args } = parseArgs({
  options: {
    fhir: { type: 'string', default: 'http://127.0.0.1:8095/fhir' },
    db: { type: 'string', default: 'hapi' },
    count: { type: 'string', default: '1000' },
    size: { type: 'string', default: '200' },
    inflight: { type: 'string', default: '4' },
    rounds: { type: 'string', default: '1' },
    // type[+device][+minimal: return=minimal][+notag: no meta.tag], comma-separated
    variants: { type: 'string', default: 'batch,batch+device,transaction,transaction+device' },
  },
});
const COUNT = Number(args.count);
const SIZE = Number(args.size);
const INFLIGHT = Number(args.inflight);
const ROUNDS = Number(args.rounds);
const run = Date.now().toString(36);
const serverPid = pidListening(new URL(args.fhir).port);
const gateway = createFhirGateway({ baseUrl: args.fhir, timeoutMs: 300_000 });

function sql(q: string): string {
  return execFileSync('psql', ['-h', '127.0.0.1', '-U', 'postgres', '-d', args.db, '-Atc', q], {
    encoding: 'utf8',
  });
}

/** Index and sequential scans, inserts, updates, deletes per table; commits. */
function counters(): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of sql(
    `SELECT relname, coalesce(seq_scan,0)+coalesce(idx_scan,0), n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables
     UNION ALL SELECT '(commits)', xact_commit, 0, 0, 0 FROM pg_stat_database WHERE datname = current_database()`,
  )
    .trim()
    .split('\n')) {
    const [t, scans, ins, upd, del] = line.split('|');
    m.set(`${t} scans`, Number(scans));
    m.set(`${t} ins`, Number(ins));
    m.set(`${t} upd`, Number(upd));
    m.set(`${t} del`, Number(del));
  }
  return m;
}

function observation(i: number, variant: string, patient: string, device: string): Observation {
  const has = (flag: string) => variant.split('+').includes(flag);
  return {
    resourceType: 'Observation',
    id: `probe-${run}-${variant.replaceAll('+', '-')}-${i}`,
    meta: {
      source: 'urn:iomt:probe',
      ...(has('notag') ? {} : { tag: [{ system: 'urn:iomt:template', code: 'probe-v1' }] }),
    },
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
    subject: { reference: `Patient/${patient}` },
    ...(has('device') ? { device: { reference: `Device/${device}` } } : {}),
    effectiveDateTime: new Date(Date.now() - i * 1000).toISOString(),
    valueQuantity: {
      value: 60 + (i % 40),
      unit: '/min',
      system: 'http://unitsofmeasure.org',
      code: '/min',
    },
  };
}

async function main(): Promise<void> {
  const patient = `probe-${run}-p`;
  const device = `probe-${run}-d`;
  await gateway.update({ resourceType: 'Patient', id: patient });
  await gateway.update({
    resourceType: 'Device',
    id: device,
    patient: { reference: `Patient/${patient}` },
  });
  // Warm-up: the JIT and the connection pool.
  await gateway.transaction(
    Array.from({ length: 50 }, (_, i): BundleEntry => {
      const o = observation(i, 'warm', patient, device);
      return { resource: o, request: { method: 'PUT', url: `Observation/${o.id}` } };
    }),
  );
  const variants = args.variants.split(',');
  for (let round = 1; round <= ROUNDS; round++)
    for (const variant of variants) await probe(variant, round, patient, device);
}

async function probe(variant: string, round: number, patient: string, device: string) {
  const type = variant.startsWith('batch') ? 'batch' : 'transaction';
  const bundles: BundleEntry[][] = [];
  for (let i = 0; i < COUNT; i += SIZE)
    bundles.push(
      Array.from({ length: Math.min(SIZE, COUNT - i) }, (_, k) => {
        const o = observation(i + k, `${variant}+r${round}`, patient, device);
        return { resource: o, request: { method: 'PUT', url: `Observation/${o.id}` } };
      }),
    );
  const before = counters();
  const cpu0 = serverPid ? procCpuSeconds(serverPid) : NaN;
  const started = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: INFLIGHT }, async () => {
      while (next < bundles.length) {
        const b = bundles[next++]!;
        const r = await gateway[type](b, {
          representation: !variant.split('+').includes('minimal'),
        });
        const bad = (r.entry ?? []).filter((e) => !e.response?.status?.startsWith('20'));
        if (bad.length > 0) throw new Error(`${variant}: ${bad.length} entries refused`);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const serverMs = serverPid ? ((procCpuSeconds(serverPid) - cpu0) / COUNT) * 1000 : NaN;
  const after = counters();
  const per = [...after]
    .map(([k, v]) => [k, (v - (before.get(k) ?? 0)) / COUNT] as const)
    .filter(([, v]) => v >= 0.05)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ${v.toFixed(2)}`);
  console.log(
    `${variant.padEnd(20)} ${(COUNT / seconds).toFixed(0).padStart(5)} Observations/s, server CPU ${
      Number.isFinite(serverMs) ? `${serverMs.toFixed(2)} ms` : 'n/a'
    } per Observation${ROUNDS > 1 ? ` (round ${round})` : ''}`,
  );
  console.log(`  per Observation: ${per.join(', ')}`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
