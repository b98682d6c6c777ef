/**
 * Observation.meta.source names the MQTT message a version came from, so the
 * system of record itself says which delivery produced it and when the broker
 * received it. FHIR R4 Meta.source: "a uri that identifies the source system of
 * the resource … a message, database, etc." (http://hl7.org/fhir/R4/resource.html#Meta).
 *
 * Form: `urn:iomt:message:<receivedAt epoch ms>:<message id>`. HAPI appends its
 * own request id as a fragment (`…#Ab12Cd34`), which parse ignores. HAPI treats a
 * change of meta.source alone as no change, so a duplicate delivery of an
 * unchanged Observation keeps the source of the delivery that wrote it.
 */

const PREFIX = 'urn:iomt:message:';

export interface MessageSource {
  readonly messageId: string;
  /** Broker receipt time, epoch milliseconds. */
  readonly receivedAt: number;
}

/** The meta.source URI for a message (message ids are ours: no characters to escape but %). */
export function messageSourceUri(source: MessageSource): string {
  return `${PREFIX}${Math.trunc(source.receivedAt)}:${encodeURIComponent(source.messageId)}`;
}

/** meta.source → the message, or undefined when another system wrote the resource. */
export function parseMessageSource(uri: string | undefined): MessageSource | undefined {
  if (uri === undefined || !uri.startsWith(PREFIX)) return undefined;
  const body = uri.slice(PREFIX.length).split('#')[0] ?? '';
  const m = /^(\d{1,15}):(.+)$/.exec(body);
  if (!m) return undefined;
  try {
    return { receivedAt: Number(m[1]), messageId: decodeURIComponent(m[2]!) };
  } catch {
    return undefined; // a malformed escape: not one of ours
  }
}
