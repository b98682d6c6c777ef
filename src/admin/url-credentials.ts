/**
 * URLs in text we answer or log, without their credentials: the userinfo of
 * every `scheme://user:password@host` is replaced by `***` (RFC 3986 §3.2.1
 * deprecates passwords in URLs; FHIR_URL or CLICKHOUSE_URL may still carry one,
 * and an error message may quote them). The authority ends at the first "/",
 * "?" or "#", and its userinfo at the last "@" before that.
 */
const URL_USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)[^\s/?#@]*(?:@[^\s/?#@]*)*@/gi;

export function stripUrlCredentials(text: string): string {
  return text.replace(URL_USERINFO, '$1***@');
}
