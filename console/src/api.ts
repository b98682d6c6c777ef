/** The admin API from the page: same origin, the session cookie, the CSRF token on changes. */
let csrfToken = '';
let onSignedOut: () => void = () => undefined;

export function setCsrfToken(token: string): void {
  csrfToken = token;
}

export function currentCsrfToken(): string {
  return csrfToken;
}

export function whenSignedOut(fn: () => void): void {
  onSignedOut = fn;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly body: unknown,
  ) {
    super(message);
  }
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET') headers['x-csrf-token'] = csrfToken;
  const res = await fetch(path, {
    method,
    headers,
    credentials: 'same-origin',
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const data: unknown = await res.json().catch(() => ({}));
  if (!res.ok) {
    const err = (data as { error?: { code?: string; message?: string } }).error;
    if (res.status === 401 && path !== '/console/api/session') onSignedOut();
    throw new ApiError(
      res.status,
      err?.code ?? 'Error',
      err?.message ?? `HTTP ${res.status}`,
      data,
    );
  }
  return data as T;
}

export function errorText(err: unknown): string {
  if (err instanceof ApiError) return `${err.code}: ${err.message}`;
  return err instanceof Error ? err.message : String(err);
}

/** A patient id as lists show it: enough to tell two apart, not enough to identify. */
export function mask(id: string | undefined): string {
  if (!id) return '—';
  return id.length <= 4 ? '••••' : `${id.slice(0, 2)}•••${id.slice(-2)}`;
}

export function when(ms: number | string): string {
  return new Date(ms)
    .toISOString()
    .replace('T', ' ')
    .replace(/\.\d+Z$/, 'Z');
}
