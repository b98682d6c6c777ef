/**
 * Reading what the pipeline attributed, straight from the systems of record:
 * the Observations of a device in HAPI and its rows in ClickHouse, each with
 * the patient it names and the device time it was taken at. Tests compare
 * these, reading by reading, with the patient the test itself expects.
 */
import type { AnalyticsStore } from '../../src/clickhouse/index.js';
import { fhirSearch } from './harness.js';

export interface Charted {
  readonly id: string;
  /** The Patient id the Observation names. */
  readonly patientId: string;
  /** The device time, epoch ms. */
  readonly at: number;
}

interface ObservationJson {
  id: string;
  subject?: { reference?: string };
  effectiveDateTime?: string;
}

/** Every Observation that names the device's FHIR Device (dev-<id>). */
export async function chartedInFhir(fhirUrl: string, deviceId: string): Promise<Charted[]> {
  const out: Charted[] = [];
  let url: string | undefined;
  let bundle = await fhirSearch(fhirUrl, 'Observation', {
    device: `Device/dev-${deviceId}`,
    _count: '500',
  });
  for (;;) {
    for (const e of bundle.entry ?? []) {
      const o = e.resource as unknown as ObservationJson;
      out.push({
        id: o.id,
        patientId: (o.subject?.reference ?? '').replace(/^Patient\//, ''),
        at: Date.parse(o.effectiveDateTime ?? ''),
      });
    }
    url = (bundle as { link?: { relation: string; url: string }[] }).link?.find(
      (l) => l.relation === 'next',
    )?.url;
    if (!url) return out;
    const res = await fetch(url, { headers: { 'cache-control': 'no-cache' } });
    bundle = (await res.json()) as typeof bundle;
  }
}

/** The device's rows in ClickHouse (exact: FINAL). */
export async function chartedInClickHouse(
  store: AnalyticsStore,
  deviceId: string,
): Promise<Charted[]> {
  const rows = await store.queryRows<{ id: string; patient_id: string; t: string }>(
    `SELECT id, patient_id, toString(toUnixTimestamp64Milli(effective_start)) AS t
     FROM observations FINAL WHERE device_id = 'dev-${deviceId.replace(/'/g, '')}'`,
  );
  return rows.map((r) => ({ id: r.id, patientId: r.patient_id, at: Number(r.t) }));
}

/**
 * Compares what is charted with what is expected, reading by reading: one line
 * per reading that is missing, doubled or on another patient; [] when right.
 */
export function misattributed(
  expected: ReadonlyMap<number, string>,
  charted: readonly Charted[],
): string[] {
  const problems: string[] = [];
  const byTime = new Map<number, Charted[]>();
  for (const c of charted) byTime.set(c.at, [...(byTime.get(c.at) ?? []), c]);
  for (const [at, patient] of expected) {
    const found = byTime.get(at) ?? [];
    const when = new Date(at).toISOString();
    if (found.length === 0) problems.push(`${when}: missing (expected on ${patient})`);
    else if (found.length > 1)
      problems.push(`${when}: ${found.length} times (${found.map((f) => f.patientId).join(', ')})`);
    else if (found[0]!.patientId !== patient)
      problems.push(`${when}: on ${found[0]!.patientId}, expected on ${patient}`);
  }
  for (const c of charted)
    if (!expected.has(c.at))
      problems.push(`${new Date(c.at).toISOString()}: unexpected, on ${c.patientId}`);
  return problems;
}
