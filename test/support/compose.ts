/**
 * Readers of the Docker deployment files (docker-compose.yml, Dockerfiles), for
 * the tests that check them statically (test/unit/docker-compose.test.ts) and
 * for the ones that run what they describe with the same settings
 * (test/integration/hapi-compose-settings.test.ts,
 * test/integration/observability-roles.test.ts). No Docker engine runs where
 * the tests run, so nothing here calls docker.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const read = (path: string): string => readFileSync(join(ROOT, path), 'utf8');

export type PortEntry =
  string | number | { target: number; published?: string | number; host_ip?: string };

export interface Service {
  image?: string;
  build?: string | { context?: string; dockerfile?: string; args?: Record<string, unknown> };
  command?: string | string[];
  environment?: Record<string, unknown> | string[];
  depends_on?: string[] | Record<string, { condition?: string }>;
  ports?: PortEntry[];
  expose?: (string | number)[];
  volumes?: (string | { type?: string; source?: string; target: string; read_only?: boolean })[];
  secrets?: (string | { source: string; target?: string })[];
  healthcheck?: { test?: string | string[] };
  ulimits?: Record<string, unknown>;
}

export interface Compose {
  services: Record<string, Service>;
  volumes?: Record<string, unknown>;
  secrets?: Record<string, { file?: string; environment?: string }>;
}

/** A compose file, parsed with YAML merge keys (`<<: *anchor`) as compose does. */
export function loadCompose(file = 'docker-compose.yml'): { text: string; compose: Compose } {
  const text = read(file);
  return { text, compose: parse(text, { merge: true }) as Compose };
}

export function env(service: Service): Record<string, string> {
  const raw = service.environment ?? {};
  if (Array.isArray(raw)) {
    return Object.fromEntries(
      raw.map((entry) => {
        const i = entry.indexOf('=');
        return i < 0 ? [entry, ''] : [entry.slice(0, i), entry.slice(i + 1)];
      }),
    );
  }
  return Object.fromEntries(
    Object.entries(raw).map(([k, v]) => [
      k,
      typeof v === 'string' ? v : v === null ? '' : JSON.stringify(v),
    ]),
  );
}

export function tokens(command: string | string[] | undefined): string[] {
  if (command === undefined) return [];
  return Array.isArray(command) ? command.map(String) : command.trim().split(/\s+/);
}

export function imageRepo(image: string | undefined): string {
  if (!image) return '';
  return image.replace(/@sha256:.*$/, '').replace(/:[^/:]+$/, '');
}

/**
 * "127.0.0.1:8090:8080", "8088:8080", "1883:1883/tcp", "9000", or the long form
 * → container port, published host port, and the host address it binds
 * (undefined = every interface, Docker's default).
 */
export function portMapping(entry: PortEntry): {
  container: number;
  published?: string;
  hostIp?: string;
} {
  if (typeof entry === 'object') {
    return {
      container: entry.target,
      ...(entry.published === undefined ? {} : { published: String(entry.published) }),
      ...(entry.host_ip ? { hostIp: entry.host_ip } : {}),
    };
  }
  const parts = String(entry)
    .replace(/\/(tcp|udp)$/, '')
    .split(':');
  const container = Number(parts[parts.length - 1]);
  if (parts.length === 1) return { container };
  if (parts.length === 2) return { container, published: parts[0]! };
  return { container, published: parts[parts.length - 2]!, hostIp: parts.slice(0, -2).join(':') };
}

export function dependsOn(service: Service): Record<string, string | undefined> {
  const d = service.depends_on ?? [];
  if (Array.isArray(d)) return Object.fromEntries(d.map((n) => [n, undefined]));
  return Object.fromEntries(Object.entries(d).map(([n, v]) => [n, v?.condition]));
}

/** Bind mounts of a service: source (repo-relative), target, read-only. */
export function bindMounts(
  service: Service,
): { source: string; target: string; readOnly: boolean }[] {
  const out: { source: string; target: string; readOnly: boolean }[] = [];
  for (const v of service.volumes ?? []) {
    if (typeof v === 'string') {
      const [source = '', target = '', opts = ''] = v.split(':');
      if (source.startsWith('.') || source.startsWith('/')) {
        out.push({ source, target, readOnly: opts.split(',').includes('ro') });
      }
    } else if (v.type === 'bind' && v.source) {
      out.push({ source: v.source, target: v.target, readOnly: v.read_only === true });
    }
  }
  return out;
}

export function namedVolumes(service: Service): string[] {
  return (service.volumes ?? [])
    .map((v) =>
      typeof v === 'string' ? (v.split(':')[0] ?? '') : v.type === 'volume' ? (v.source ?? '') : '',
    )
    .filter((s) => s !== '' && !s.startsWith('.') && !s.startsWith('/'));
}

/** The build context and Dockerfile path (repo-relative) of a service built here. */
export function buildOf(service: Service): { context: string; dockerfile: string } | undefined {
  const b = service.build;
  if (b === undefined) return undefined;
  const context = (typeof b === 'string' ? b : (b.context ?? '.')).replace(/\/+$/, '');
  const dockerfile = typeof b === 'string' ? 'Dockerfile' : (b.dockerfile ?? 'Dockerfile');
  return { context, dockerfile: join(context, dockerfile) };
}

// ---- Dockerfiles ----------------------------------------------------------------

export interface Instruction {
  readonly op: string;
  readonly args: string;
}

/** Instructions with line continuations joined and comments dropped. */
export function dockerfile(path: string): Instruction[] {
  return read(path)
    .replace(/\\\r?\n/g, ' ')
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => {
      const i = l.search(/\s/);
      return { op: l.slice(0, i).toUpperCase(), args: l.slice(i + 1).trim() };
    });
}

/** The instructions of the last stage (what the image runs). */
export function finalStage(instructions: Instruction[]): Instruction[] {
  const from = instructions.map((i) => i.op).lastIndexOf('FROM');
  return instructions.slice(from);
}

/** `ENV A=1 B=2` (and the legacy `ENV A 1`) → { A: '1', B: '2' }. */
export function dockerfileEnv(instructions: Instruction[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const i of instructions.filter((x) => x.op === 'ENV')) {
    if (!i.args.includes('=')) {
      const [k = '', ...rest] = i.args.split(/\s+/);
      out[k] = rest.join(' ');
      continue;
    }
    for (const m of i.args.matchAll(/([A-Za-z_]\w*)=("([^"]*)"|\S*)/g)) out[m[1]!] = m[3] ?? m[2]!;
  }
  return out;
}

/** The JSON (exec) form of the last `op` instruction, e.g. ENTRYPOINT. */
export function execForm(instructions: Instruction[], op: string): string[] {
  const last = instructions.filter((i) => i.op === op).pop();
  return JSON.parse(last?.args ?? 'null') as string[];
}

// ---- interpolation ---------------------------------------------------------------

/**
 * Compose's variable interpolation of one string, with `environment` standing in
 * for the shell and .env: `$$`, `$NAME`, `${NAME}`, `${NAME:-default}`,
 * `${NAME-default}`, `${NAME:?message}`, `${NAME?message}`, `${NAME:+alt}`.
 * A required variable that is missing is reported, as compose refuses to start.
 */
export function interpolate(
  text: string,
  environment: Readonly<Record<string, string | undefined>>,
): { value: string; missing: { name: string; message: string }[] } {
  const missing: { name: string; message: string }[] = [];
  const value = text.replace(
    /\$(\$|\{([A-Za-z_]\w*)(?:(:?[-?+])([^}]*))?\}|([A-Za-z_]\w*))/g,
    (_m, all: string, name?: string, op?: string, arg?: string, bare?: string) => {
      if (all === '$') return '$';
      if (bare) return environment[bare] ?? '';
      const v = environment[name!];
      const unsetOrEmpty = v === undefined || v === '';
      switch (op) {
        case undefined:
          return v ?? '';
        case ':-':
          return unsetOrEmpty ? (arg ?? '') : v;
        case '-':
          return v === undefined ? (arg ?? '') : v;
        case ':?':
        case '?':
          if (op === ':?' ? unsetOrEmpty : v === undefined) {
            missing.push({ name: name!, message: arg ?? '' });
            return '';
          }
          return v!;
        case ':+':
          return unsetOrEmpty ? '' : (arg ?? '');
        default:
          return v ?? '';
      }
    },
  );
  return { value, missing };
}
