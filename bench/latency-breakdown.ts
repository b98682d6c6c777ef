/**
 * Where the time between receipt and FHIR commit goes, from the timestamps the
 * queues keep anyway (BullMQ job records: created, processing started,
 * finished; the messages' receivedAt). For every FHIR job whose Observations
 * were received since `since`:
 *   receipt → ingest job stored (the broker's group commit),
 *   ingest job waiting, normalize, fhir job waiting, the FHIR write (the stage:
 *   the wait for a Bundle slot and the transaction itself).
 * p50 / p99 per hop, over messages (each Observation's receipt → its job's
 * finish is the same figure the ClickHouse timestamps give, plus the runner's
 * follow-up writes).
 */
import type { Job, Queue } from 'bullmq';
import type { FhirJobData, IngestJobData } from '../src/queues.js';

export interface Hop {
  readonly name: string;
  readonly p50: number;
  readonly p99: number;
}

const pct = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};

export async function latencyBreakdown(
  ingest: Queue<IngestJobData>,
  fhir: Queue<FhirJobData>,
  since: number,
): Promise<Hop[]> {
  const done = (q: Queue<IngestJobData> | Queue<FhirJobData>) =>
    q.getJobs(['completed'], 0, -1) as Promise<(Job | undefined)[]>;
  const ingestJobs = (await done(ingest)).filter((j): j is Job<IngestJobData> => !!j);
  const fhirJobs = (await done(fhir)).filter((j): j is Job<FhirJobData> => !!j);
  // Which ingest job carried each message.
  const ingestOf = new Map<string, Job<IngestJobData>>();
  for (const j of ingestJobs) for (const m of j.data.messages) ingestOf.set(m.id, j);
  const hops: Record<string, number[]> = {
    'receipt → ingest job stored': [],
    'ingest job waiting': [],
    normalize: [],
    'fhir job waiting': [],
    'FHIR write (slot + transaction)': [],
    'receipt → fhir job finished': [],
  };
  for (const f of fhirJobs) {
    const seen = new Set<string>();
    for (const env of f.data.observations) {
      const id = env.provenance.messageId;
      if (seen.has(id) || env.provenance.receivedAt < since) continue;
      seen.add(id);
      const i = ingestOf.get(id);
      if (!i || !i.processedOn || !i.finishedOn || !f.processedOn || !f.finishedOn) continue;
      const r = env.provenance.receivedAt;
      hops['receipt → ingest job stored']!.push(i.timestamp - r);
      hops['ingest job waiting']!.push(i.processedOn - i.timestamp);
      hops.normalize!.push(i.finishedOn - i.processedOn);
      hops['fhir job waiting']!.push(f.processedOn - f.timestamp);
      hops['FHIR write (slot + transaction)']!.push(f.finishedOn - f.processedOn);
      hops['receipt → fhir job finished']!.push(f.finishedOn - r);
    }
  }
  return Object.entries(hops).map(([name, xs]) => ({
    name,
    p50: pct(xs, 0.5),
    p99: pct(xs, 0.99),
  }));
}
