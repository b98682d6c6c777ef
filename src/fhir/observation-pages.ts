/**
 * Paged reading of the pipeline's Observations from the FHIR server, oldest
 * change first: `GET Observation?identifier=<system>|&_lastUpdated=ge<since>
 * &_sort=_lastUpdated&_count=<n>`, then the server's `next` links (FHIR R4
 * search.html#paging). The identifier system selects what this pipeline wrote
 * (a token "system|" matches any code in the system, search.html#token).
 *
 * Contract: yields pages of stored Observations (meta.versionId, lastUpdated and
 * source as the server keeps them); throws FhirUnavailable / FhirRejected.
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
  /** Resources per page (the server may cap it). */
  readonly pageSize: number;
}

export async function* observationPages(o: ObservationPagesOptions): AsyncGenerator<Observation[]> {
  const client = new Client({ baseUrl: o.baseUrl });
  const options = () => ({
    signal: AbortSignal.timeout(o.timeoutMs),
    headers: { 'Cache-Control': 'no-cache' },
  });
  let bundle: Bundle | undefined;
  try {
    bundle = (await client.search({
      resourceType: 'Observation',
      searchParams: {
        identifier: `${o.identifierSystem}|`,
        _sort: '_lastUpdated',
        _count: String(o.pageSize),
        ...(o.since ? { _lastUpdated: `ge${o.since}` } : {}),
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
