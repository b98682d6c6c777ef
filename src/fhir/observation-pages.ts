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
import type { Observation } from 'fhir/r4.js';
import type { FhirGateway } from './gateway.js';

export interface ObservationPagesOptions {
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

export function observationPages(
  gateway: Pick<FhirGateway, 'searchPages'>,
  o: ObservationPagesOptions,
): AsyncGenerator<Observation[]> {
  const lastUpdated = [...(o.since ? [`ge${o.since}`] : []), ...(o.until ? [`lt${o.until}`] : [])];
  return gateway.searchPages<Observation>(
    'Observation',
    {
      identifier: `${o.identifierSystem}|`,
      _sort: '_lastUpdated',
      _count: String(o.pageSize),
      ...(lastUpdated.length > 0 ? { _lastUpdated: lastUpdated } : {}),
    },
    o.signal ? { signal: o.signal } : {},
  );
}
