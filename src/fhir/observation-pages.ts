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
import type { Observation } from 'fhir/r4.js';
import type { FhirGateway } from './gateway.js';

export interface ObservationPagesOptions {
  /** Observation.identifier.system the pipeline owns (FHIR_IDENTIFIER_SYSTEM). */
  readonly identifierSystem: string;
  /** FHIR instant or date: only Observations changed at or after it. */
  readonly since?: string;
  /** Resources per page (the server may cap it). */
  readonly pageSize: number;
}

export function observationPages(
  gateway: Pick<FhirGateway, 'searchPages'>,
  o: ObservationPagesOptions,
): AsyncGenerator<Observation[]> {
  return gateway.searchPages<Observation>('Observation', {
    identifier: `${o.identifierSystem}|`,
    _sort: '_lastUpdated',
    _count: String(o.pageSize),
    ...(o.since ? { _lastUpdated: `ge${o.since}` } : {}),
  });
}
