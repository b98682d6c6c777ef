/**
 * Paged reading of the pipeline's Observations from the FHIR server, oldest
 * change first: `GET Observation?identifier=<system>|&_lastUpdated=ge<since>
 * &_lastUpdated=lt<until>&_sort=_lastUpdated&_count=<n>`, then the server's
 * `next` links (FHIR R4 search.html#paging). The identifier system selects what
 * this pipeline wrote (a token "system|" matches any code in the system,
 * search.html#token); two _lastUpdated parameters AND into a range
 * (search.html#date).
 *
 * Contract: yields pages of stored Observations (meta.versionId, lastUpdated and
 * source as the server keeps them); throws FhirUnavailable / FhirRejected. With
 * `signal`, an abort ends the request in flight (it then throws).
 */
import { Client, type FhirResource } from 'fhir-kit-client';
import type { Bundle, Observation } from 'fhir/r4.js';
import { fhirError } from './errors.js';

export interface ObservationPagesOptions {
  readonly baseUrl: string;
  readonly timeoutMs: number;
  /** Observation.identifier.system the pipeline owns (FHIR_IDENTIFIER_SYSTEM). */
  readonly identifierSystem: string;
  /** FHIR instant or date: only Observations changed at or after it. */
  readonly since?: string;
  /** FHIR instant or date: only Observations changed before it. */
  readonly until?: string;
  /** Ends the request in flight when aborted (a cancelled backfill). */
  readonly signal?: AbortSignal;
  /** Resources per page (the server may cap it). */
  readonly pageSize: number;
}

export async function* observationPages(o: ObservationPagesOptions): AsyncGenerator<Observation[]> {
  const client = new Client({ baseUrl: o.baseUrl });
  const options = () => ({
    signal:
      o.signal === undefined
        ? AbortSignal.timeout(o.timeoutMs)
        : AbortSignal.any([o.signal, AbortSignal.timeout(o.timeoutMs)]),
    headers: { 'Cache-Control': 'no-cache' },
  });
  const lastUpdated = [...(o.since ? [`ge${o.since}`] : []), ...(o.until ? [`lt${o.until}`] : [])];
  let bundle: Bundle | undefined;
  try {
    bundle = (await client.search({
      resourceType: 'Observation',
      searchParams: {
        identifier: `${o.identifierSystem}|`,
        _sort: '_lastUpdated',
        _count: String(o.pageSize),
        ...(lastUpdated.length > 0 ? { _lastUpdated: lastUpdated } : {}),
      },
      options: options(),
    })) as unknown as Bundle;
  } catch (err) {
    throw fhirError(err, 'search Observations');
  }
  while (bundle) {
    const page = (bundle.entry ?? [])
      .map((e) => e.resource)
      .filter((r): r is Observation => r?.resourceType === 'Observation');
    if (page.length > 0) yield page;
    // No `next` link (the last page): nextPage answers undefined.
    const next: Promise<FhirResource> | undefined = client.nextPage({
      bundle: { ...bundle, link: bundle.link ?? [] },
      options: options(),
    });
    if (!next) return;
    try {
      bundle = (await next) as unknown as Bundle;
    } catch (err) {
      throw fhirError(err, 'next page of Observations');
    }
  }
}
