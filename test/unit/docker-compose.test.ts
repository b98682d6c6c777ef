/**
 * Static checks of the Docker deployment (docker-compose.yml, Dockerfile,
 * deploy/). No Docker engine runs where the tests run, and `docker compose
 * config` may be missing, so these tests read the files and check that the
 * pieces agree with each other and with the code: every environment key is one
 * src/config.ts reads, every URL names a service and a port that service
 * listens on, Grafana logs in as the read-only user that analyst.xml defines.
 */
import { describe, it, expect } from 'vitest';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { parse, parseDocument } from 'yaml';
import { settingKeys } from '../../src/config.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const read = (path: string): string => readFileSync(join(ROOT, path), 'utf8');

const ROLES = ['broker', 'worker', 'admin', 'all'];
const PIPELINE_SERVICES = ['pipeline-broker', 'pipeline-worker', 'pipeline-admin'];

/**
 * Ports the images listen on by default, per their documentation (Docker Hub
 * pages / the images' Dockerfiles): a service's `expose` and `ports` add to these.
 */
const IMAGE_PORTS: Record<string, number[]> = {
  redis: [6379],
  postgres: [5432],
  'hapiproject/hapi': [8080],
  'clickhouse/clickhouse-server': [8123, 9000],
  'grafana/grafana': [3000],
};

// ---- small readers ----------------------------------------------------------

interface Service {
  image?: string;
  build?: unknown;
  command?: string | string[];
  environment?: Record<string, unknown> | string[];
  depends_on?: string[] | Record<string, { condition?: string }>;
  ports?: (string | number | { target: number; published?: string | number })[];
  expose?: (string | number)[];
  volumes?: (string | { type?: string; source?: string; target: string })[];
  healthcheck?: { test?: string | string[] };
  ulimits?: Record<string, unknown>;
}

interface Compose {
  services: Record<string, Service>;
  volumes?: Record<string, unknown>;
}

const composeText = read('docker-compose.yml');
// Compose files use YAML merge keys (`<<: *anchor`): the yaml package needs `merge`.
const compose = parse(composeText, { merge: true }) as Compose;
const services = compose.services;

function env(service: Service): Record<string, string> {
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

function tokens(command: string | string[] | undefined): string[] {
  if (command === undefined) return [];
  return Array.isArray(command) ? command.map(String) : command.trim().split(/\s+/);
}

function imageRepo(image: string | undefined): string {
  if (!image) return '';
  return image.replace(/@sha256:.*$/, '').replace(/:[^/:]+$/, '');
}

/** "127.0.0.1:8090:8080", "8088:8080", "1883:1883/tcp", "9000" → container / host ports. */
function portMapping(entry: string | number | { target: number; published?: string | number }): {
  container: number;
  host?: string;
} {
  if (typeof entry === 'object') {
    return {
      container: entry.target,
      host: entry.published === undefined ? undefined : String(entry.published),
    };
  }
  const parts = String(entry)
    .replace(/\/(tcp|udp)$/, '')
    .split(':');
  const container = Number(parts[parts.length - 1]);
  const host = parts.length > 1 ? parts.slice(0, -1).join(':') : undefined;
  return { container, host };
}

function containerPorts(name: string): number[] {
  const service = services[name];
  if (!service) return [];
  const ports = new Set<number>(IMAGE_PORTS[imageRepo(service.image)] ?? []);
  for (const e of service.expose ?? []) ports.add(Number(String(e).replace(/\/(tcp|udp)$/, '')));
  for (const p of service.ports ?? []) ports.add(portMapping(p).container);
  return [...ports];
}

function urlPort(url: URL): number {
  if (url.port) return Number(url.port);
  const defaults: Record<string, number> = {
    'http:': 80,
    'https:': 443,
    'redis:': 6379,
    'rediss:': 6379,
  };
  return defaults[url.protocol] ?? NaN;
}

function dependsOn(service: Service): Record<string, string | undefined> {
  const d = service.depends_on ?? [];
  if (Array.isArray(d)) return Object.fromEntries(d.map((n) => [n, undefined]));
  return Object.fromEntries(Object.entries(d).map(([n, v]) => [n, v?.condition]));
}

/** Bind mounts of a service as [source (repo-relative), target, options]. */
function bindMounts(service: Service): { source: string; target: string; readOnly: boolean }[] {
  const out: { source: string; target: string; readOnly: boolean }[] = [];
  for (const v of service.volumes ?? []) {
    if (typeof v === 'string') {
      const [source = '', target = '', opts = ''] = v.split(':');
      if (source.startsWith('.') || source.startsWith('/')) {
        out.push({ source, target, readOnly: opts.split(',').includes('ro') });
      }
    } else if (v.type === 'bind' && v.source) {
      out.push({ source: v.source, target: v.target, readOnly: false });
    }
  }
  return out;
}

function namedVolumes(service: Service): string[] {
  return (service.volumes ?? [])
    .map((v) =>
      typeof v === 'string' ? (v.split(':')[0] ?? '') : v.type === 'volume' ? (v.source ?? '') : '',
    )
    .filter((s) => s !== '' && !s.startsWith('.') && !s.startsWith('/'));
}

// A minimal XML reader (elements, attributes, text; comments dropped): enough
// for a ClickHouse users.d file, without a dependency.
interface XmlNode {
  name: string;
  attrs: Record<string, string>;
  children: XmlNode[];
  text: string;
}

function parseXml(xml: string): XmlNode {
  const root: XmlNode = { name: '#root', attrs: {}, children: [], text: '' };
  const stack = [root];
  const body = xml.replace(/<!--[\s\S]*?-->/g, '').replace(/<\?[\s\S]*?\?>/g, '');
  const tag = /<(\/?)([A-Za-z_][\w.-]*)((?:\s+[\w.-]+\s*=\s*"[^"]*")*)\s*(\/?)>|([^<]+)/g;
  for (const m of body.matchAll(tag)) {
    const top = stack[stack.length - 1]!;
    if (m[5] !== undefined) {
      top.text += m[5].trim();
      continue;
    }
    const [, closing, name = '', attrText = '', selfClosing] = m;
    if (closing) {
      if (top.name !== name) throw new Error(`XML: </${name}> closes <${top.name}>`);
      stack.pop();
      continue;
    }
    const attrs = Object.fromEntries(
      [...attrText.matchAll(/([\w.-]+)\s*=\s*"([^"]*)"/g)].map((a) => [a[1] ?? '', a[2] ?? '']),
    );
    const node: XmlNode = { name, attrs, children: [], text: '' };
    top.children.push(node);
    if (!selfClosing) stack.push(node);
  }
  if (stack.length !== 1) throw new Error(`XML: <${stack[stack.length - 1]!.name}> is not closed`);
  return root;
}

const child = (node: XmlNode | undefined, name: string): XmlNode | undefined =>
  node?.children.find((c) => c.name === name);

// ---- the files --------------------------------------------------------------

const analystXml = parseXml(read('deploy/clickhouse/users.d/analyst.xml'));
const chConfig = child(analystXml, 'clickhouse');
const datasources = parse(read('deploy/grafana/provisioning/datasources/clickhouse.yml')) as {
  apiVersion: number;
  datasources: {
    name: string;
    uid: string;
    type: string;
    jsonData: Record<string, unknown>;
    secureJsonData?: Record<string, string>;
  }[];
};
const chDatasource = datasources.datasources.find(
  (d) => d.type === 'grafana-clickhouse-datasource',
);
const clickhouseService = Object.keys(services).find(
  (n) => imageRepo(services[n]!.image) === 'clickhouse/clickhouse-server',
);
const pipelineEnv = env(services['pipeline-worker'] ?? {});

// ---- tests ------------------------------------------------------------------

describe('docker-compose.yml', () => {
  it('parses as YAML without errors and has services', () => {
    const doc = parseDocument(composeText, { merge: true });
    expect(doc.errors).toEqual([]);
    expect(Object.keys(services).length).toBeGreaterThan(0);
  });

  it('uses only valid ${...} interpolation (compose fails on a stray $)', () => {
    // Valid: $$ (literal $), ${NAME}, ${NAME:-default}, ${NAME-default},
    // ${NAME:?message}, ${NAME?message}, ${NAME:+alt}, $NAME.
    const stripped = composeText.replace(/^\s*#.*$/gm, '');
    const bad: string[] = [];
    for (const m of stripped.matchAll(/\$(\$|\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*|.?)/g)) {
      const what = m[1] ?? '';
      if (what === '$' || /^[A-Za-z_]\w*$/.test(what)) continue;
      if (/^\{[A-Za-z_]\w*((:?[-?+])[^$}]*)?\}$/.test(what)) continue;
      bad.push(m[0]);
    }
    expect(bad).toEqual([]);
  });

  it('runs the three pipeline roles from the Dockerfile build', () => {
    for (const name of PIPELINE_SERVICES) {
      const s = services[name];
      expect(s, name).toBeDefined();
      expect(s!.build, `${name} builds the Dockerfile`).toBeDefined();
    }
  });

  it('gives each pipeline service a valid role as its command', () => {
    const expected: Record<string, string> = {
      'pipeline-broker': 'broker',
      'pipeline-worker': 'worker',
      'pipeline-admin': 'admin',
    };
    for (const name of PIPELINE_SERVICES) {
      const cmd = tokens(services[name]!.command);
      expect(cmd.length, `${name} command`).toBe(1);
      expect(ROLES).toContain(cmd[0]);
      expect(cmd[0]).toBe(expected[name]);
    }
  });

  it('sets on pipeline services only environment keys that src/config.ts reads', () => {
    const known = new Set(settingKeys());
    for (const name of PIPELINE_SERVICES) {
      const unknown = Object.keys(env(services[name]!)).filter((k) => !known.has(k));
      expect(unknown, `${name}: keys no setting reads`).toEqual([]);
    }
  });

  it('shares one environment between the pipeline services', () => {
    const [first, ...rest] = PIPELINE_SERVICES.map((n) => env(services[n]!));
    for (const e of rest) expect(e).toEqual(first);
  });

  it('requires ADMIN_TOKEN instead of shipping a usable default', () => {
    expect(pipelineEnv['ADMIN_TOKEN']).toMatch(/^\$\{ADMIN_TOKEN:\?[^}]+\}$/);
  });

  it('points REDIS_URL, FHIR_URL and CLICKHOUSE_URL at services and ports of this file', () => {
    for (const key of ['REDIS_URL', 'FHIR_URL', 'CLICKHOUSE_URL']) {
      const value = pipelineEnv[key];
      expect(value, key).toBeDefined();
      const url = new URL(value!);
      expect(Object.keys(services), `${key} host`).toContain(url.hostname);
      expect(containerPorts(url.hostname), `${key} port`).toContain(urlPort(url));
    }
    expect(new URL(pipelineEnv['FHIR_URL']!).pathname).toBe('/fhir');
    expect(imageRepo(services[new URL(pipelineEnv['REDIS_URL']!).hostname]!.image)).toBe('redis');
    expect(imageRepo(services[new URL(pipelineEnv['FHIR_URL']!).hostname]!.image)).toBe(
      'hapiproject/hapi',
    );
    expect(new URL(pipelineEnv['CLICKHOUSE_URL']!).hostname).toBe(clickhouseService);
  });

  it('listens in containers on the ports the compose file maps', () => {
    // MQTT_PORT / ADMIN_PORT inside the container must be the mapped container ports.
    expect(pipelineEnv['MQTT_PORT']).toBe('1883');
    expect(pipelineEnv['ADMIN_PORT']).toBe('8080');
    expect(pipelineEnv['ADMIN_HOST']).toBe('0.0.0.0');
    const broker = (services['pipeline-broker']!.ports ?? []).map(portMapping);
    expect(broker.map((p) => p.container)).toContain(1883);
    const admin = (services['pipeline-admin']!.ports ?? []).map(portMapping);
    expect(admin.map((p) => p.container)).toContain(8080);
  });

  it('publishes no host port twice', () => {
    const seen = new Map<string, string>();
    for (const [name, s] of Object.entries(services)) {
      for (const p of (s.ports ?? []).map(portMapping)) {
        if (p.host === undefined) continue;
        const hostPort = p.host.split(':').pop()!;
        expect(seen.get(hostPort), `host port ${hostPort} of ${name}`).toBeUndefined();
        seen.set(hostPort, name);
      }
    }
    expect(seen.get('8090')).toBe('hapi');
    expect(seen.get('8088')).toBe('pipeline-admin');
    expect(seen.get('1883')).toBe('pipeline-broker');
  });

  it('runs Redis with the append-only file (fsync every second) on a volume', () => {
    const redisName = new URL(pipelineEnv['REDIS_URL']!).hostname;
    const redis = services[redisName]!;
    const cmd = tokens(redis.command);
    const flag = (name: string): string | undefined => cmd[cmd.indexOf(name) + 1];
    expect(cmd).toContain('--appendonly');
    expect(flag('--appendonly')).toBe('yes');
    expect(flag('--appendfsync')).toBe('everysec');
    expect(flag('--maxmemory-policy')).toBe('noeviction');
    expect(namedVolumes(redis).length).toBeGreaterThan(0);
    expect(JSON.stringify(redis.healthcheck?.test)).toContain('ping');
  });

  it('names only existing services in depends_on, and only healthy ones for the pipeline', () => {
    const conditions = ['service_started', 'service_healthy', 'service_completed_successfully'];
    for (const [name, s] of Object.entries(services)) {
      for (const [dep, condition] of Object.entries(dependsOn(s))) {
        expect(Object.keys(services), `${name} depends on ${dep}`).toContain(dep);
        if (condition !== undefined) expect(conditions).toContain(condition);
        if (condition === 'service_healthy') {
          expect(services[dep]!.healthcheck?.test, `${dep} needs a healthcheck`).toBeDefined();
        }
      }
    }
    for (const name of PIPELINE_SERVICES) {
      const deps = dependsOn(services[name]!);
      expect(deps['redis'], `${name} waits for Redis`).toBe('service_healthy');
      for (const c of Object.values(deps)) expect(c).toBe('service_healthy');
    }
  });

  it('declares every named volume it uses, and mounts only files that exist', () => {
    const declared = Object.keys(compose.volumes ?? {});
    for (const [name, s] of Object.entries(services)) {
      for (const v of namedVolumes(s)) expect(declared, `${name} uses volume ${v}`).toContain(v);
      for (const m of bindMounts(s)) {
        expect(existsSync(join(ROOT, m.source)), `${name} mounts ${m.source}`).toBe(true);
        expect(m.readOnly, `${name} mounts ${m.source} read-only`).toBe(true);
      }
    }
  });

  it('runs HAPI 8.x on PostgreSQL with client-assigned ids and no search cache', () => {
    const hapi = services['hapi']!;
    expect(hapi.image).toMatch(/^hapiproject\/hapi:v8\.\d+\.\d+(-\d+)?$/);
    const e = env(hapi);
    const jdbc = new URL(e['SPRING_DATASOURCE_URL']!.replace(/^jdbc:/, ''));
    expect(jdbc.protocol).toBe('postgresql:');
    expect(Object.keys(services)).toContain(jdbc.hostname);
    expect(containerPorts(jdbc.hostname)).toContain(urlPort(jdbc) || 5432);
    const pg = env(services[jdbc.hostname]!);
    expect(jdbc.pathname.slice(1)).toBe(pg['POSTGRES_DB']);
    expect(e['SPRING_DATASOURCE_USERNAME']).toBe(pg['POSTGRES_USER']);
    expect(e['SPRING_DATASOURCE_PASSWORD']).toBe(pg['POSTGRES_PASSWORD']);
    expect(['ALPHANUMERIC', 'ANY']).toContain(e['hapi.fhir.client_id_strategy']);
    expect(e['hapi.fhir.allow_multiple_delete']).toBe('true');
    expect(Number(e['hapi.fhir.reuse_cached_search_results_millis'])).toBeLessThanOrEqual(1000);
    // The healthcheck probes /fhir/metadata with the mounted Java probe (no curl in the image).
    const test = tokens(hapi.healthcheck?.test);
    expect(test.join(' ')).toContain('/fhir/metadata');
    const probe = test.find((t) => t.endsWith('.java'));
    expect(bindMounts(hapi).map((m) => m.target)).toContain(probe);
  });

  it('runs ClickHouse with raised nofile limits, a password and the analyst users.d file', () => {
    const ch = services[clickhouseService!]!;
    expect(ch.image).toMatch(/^clickhouse\/clickhouse-server:2[45]\.\d+/);
    expect(ch.ulimits?.['nofile']).toBeDefined();
    const e = env(ch);
    expect(e['CLICKHOUSE_PASSWORD']).not.toBe('');
    // The pipeline writes with the account the server creates.
    expect(pipelineEnv['CLICKHOUSE_USER']).toBe(e['CLICKHOUSE_USER'] ?? 'default');
    expect(pipelineEnv['CLICKHOUSE_PASSWORD']).toBe(e['CLICKHOUSE_PASSWORD']);
    expect(pipelineEnv['CLICKHOUSE_DATABASE']).toBe(e['CLICKHOUSE_DB']);
    // One file, not the users.d folder (the entrypoint writes default-user.xml there).
    const mount = bindMounts(ch).find((m) => m.source.endsWith('analyst.xml'));
    expect(mount?.target).toBe('/etc/clickhouse-server/users.d/analyst.xml');
    expect(statSync(join(ROOT, mount!.source)).isFile()).toBe(true);
  });
});

describe('deploy/clickhouse/users.d/analyst.xml', () => {
  const users = child(chConfig, 'users');
  const analyst = child(users, 'analyst');
  const profileName = child(analyst, 'profile')?.text ?? '';
  const profile = child(child(chConfig, 'profiles'), profileName);

  it('defines the analyst user with a read-only profile', () => {
    expect(chConfig).toBeDefined();
    expect(analyst).toBeDefined();
    expect(profile, `profile ${profileName}`).toBeDefined();
    expect(child(profile, 'readonly')?.text).toBe('1');
    // Grafana's client sets max_execution_time on every query.
    const constraint = child(child(profile, 'constraints'), 'max_execution_time');
    expect(child(constraint, 'changeable_in_readonly')).toBeDefined();
  });

  it('grants SELECT on the pipeline database only, with the password from the environment', () => {
    const grants = (child(analyst, 'grants')?.children ?? []).map((q) => q.text);
    expect(grants).toEqual([`GRANT SELECT ON ${pipelineEnv['CLICKHOUSE_DATABASE']}.*`]);
    const password = child(analyst, 'password');
    const fromEnv = password?.attrs['from_env'];
    expect(fromEnv, 'password from_env').toBeTruthy();
    const chEnv = env(services[clickhouseService!]!);
    expect(chEnv[fromEnv!], `${fromEnv} set on the ClickHouse service`).toBeTruthy();
  });
});

describe('the analyst account of the pipeline (analyst SQL over the admin API)', () => {
  const users = child(chConfig, 'users');
  const analyst = child(users, 'analyst');
  const profile = child(child(chConfig, 'profiles'), child(analyst, 'profile')?.text ?? '');
  const constraints = child(profile, 'constraints');

  it('logs the pipeline in as the analyst user, with the password the server reads', () => {
    expect(pipelineEnv['CLICKHOUSE_ANALYST_USER']).toBe('analyst');
    const fromEnv = child(analyst, 'password')?.attrs['from_env'] ?? '';
    const serverValue = env(services[clickhouseService!]!)[fromEnv];
    expect(serverValue).toBeTruthy();
    expect(pipelineEnv['CLICKHOUSE_ANALYST_PASSWORD']).toBe(serverValue);
    // Never the writer account.
    expect(pipelineEnv['CLICKHOUSE_ANALYST_USER']).not.toBe(pipelineEnv['CLICKHOUSE_USER']);
  });

  it('fixes every limit of the profile: a query can raise none of them', () => {
    expect(child(profile, 'readonly')?.text).toBe('1');
    for (const limit of [
      'max_memory_usage',
      'max_result_rows',
      'max_result_bytes',
      'result_overflow_mode',
      'timeout_overflow_mode',
    ]) {
      expect(child(profile, limit)?.text, `${limit} is set`).toBeTruthy();
      expect(child(child(constraints, limit), 'const'), `${limit} is const`).toBeDefined();
    }
    expect(Number(child(profile, 'max_memory_usage')?.text)).toBeGreaterThan(0);
    const time = child(constraints, 'max_execution_time');
    expect(Number(child(time, 'max')?.text)).toBeGreaterThanOrEqual(
      Number(child(profile, 'max_execution_time')?.text),
    );
  });

  it('grants no source (FILE, URL, REMOTE, S3, …): SELECT on the pipeline database only', () => {
    const grants = (child(analyst, 'grants')?.children ?? []).map((q) => q.text);
    expect(grants.every((g) => /^GRANT SELECT ON \w+\.\*$/.test(g))).toBe(true);
  });

  it('mounts the server access control that closes system.* to users without a grant', () => {
    const ch = services[clickhouseService!]!;
    const mount = bindMounts(ch).find((m) => m.source.endsWith('access-control.xml'));
    expect(mount?.target).toBe('/etc/clickhouse-server/config.d/access-control.xml');
    const acl = child(
      child(parseXml(read(mount!.source)), 'clickhouse'),
      'access_control_improvements',
    );
    expect(child(acl, 'select_from_system_db_requires_grant')?.text).toBe('true');
    expect(child(acl, 'select_from_information_schema_requires_grant')?.text).toBe('true');
    expect(child(acl, 'settings_constraints_replace_previous')?.text).toBe('true');
  });
});

describe('Grafana provisioning', () => {
  const grafana = services['grafana']!;

  it('installs the ClickHouse plugin and mounts provisioning and dashboards', () => {
    const e = env(grafana);
    const plugins =
      e['GF_PLUGINS_PREINSTALL_SYNC'] ??
      e['GF_PLUGINS_PREINSTALL'] ??
      e['GF_INSTALL_PLUGINS'] ??
      '';
    expect(plugins).toContain('grafana-clickhouse-datasource');
    const targets = bindMounts(grafana).map((m) => m.target);
    expect(targets).toContain('/etc/grafana/provisioning');
  });

  it('points the data source at the ClickHouse service as the analyst user', () => {
    expect(chDatasource).toBeDefined();
    const j = chDatasource!.jsonData;
    expect(j['host']).toBe(clickhouseService);
    expect(containerPorts(String(j['host']))).toContain(Number(j['port']));
    expect(j['protocol'] === 'native' ? Number(j['port']) : 9000).toBe(9000);
    const users = child(chConfig, 'users')?.children.map((u) => u.name) ?? [];
    expect(users).toContain(j['username']);
    expect(j['username']).toBe('analyst');
    expect(j['defaultDatabase']).toBe(pipelineEnv['CLICKHOUSE_DATABASE']);
  });

  it('gives Grafana the same analyst password the server reads', () => {
    const ref = chDatasource!.secureJsonData?.['password'] ?? '';
    const m = /^\$\{?([A-Za-z_]\w*)\}?$/.exec(ref);
    expect(m, 'password comes from an environment variable').not.toBeNull();
    const grafanaValue = env(grafana)[m![1]!];
    const fromEnv =
      child(child(child(chConfig, 'users'), 'analyst'), 'password')?.attrs['from_env'] ?? '';
    const serverValue = env(services[clickhouseService!]!)[fromEnv];
    expect(grafanaValue).toBeTruthy();
    expect(grafanaValue).toBe(serverValue);
  });

  it('loads dashboards from the mounted folder, each using the provisioned data source', () => {
    const providers = (
      parse(read('deploy/grafana/provisioning/dashboards/dashboards.yml')) as {
        providers: { options: { path: string } }[];
      }
    ).providers;
    const mount = bindMounts(grafana).find((m) => m.target === providers[0]!.options.path);
    expect(mount, 'dashboards folder mounted at the provider path').toBeDefined();
    const dashboard = JSON.parse(read(join(mount!.source, 'iomt.json'))) as {
      panels: {
        title: string;
        datasource: { uid: string };
        targets: { rawSql: string; datasource: { uid: string } }[];
      }[];
    };
    expect(dashboard.panels.length).toBeGreaterThanOrEqual(2);
    for (const panel of dashboard.panels) {
      expect(panel.datasource.uid, panel.title).toBe(chDatasource!.uid);
      for (const t of panel.targets) {
        expect(t.datasource.uid).toBe(chDatasource!.uid);
        // Tables of the pipeline's database (docs/analytics.md), read as the analyst user.
        expect(t.rawSql).toMatch(/\biomt\.(observations|vitals_1m|vital_points|device_messages)\b/);
      }
    }
    expect(dashboard.panels.some((p) => p.targets.some((t) => t.rawSql.includes("'8867-4'")))).toBe(
      true,
    );
  });
});

describe('Dockerfile', () => {
  // Instructions with line continuations joined and comments dropped.
  const instructions = read('Dockerfile')
    .replace(/\\\r?\n/g, ' ')
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => {
      const i = l.search(/\s/);
      return { op: l.slice(0, i).toUpperCase(), args: l.slice(i + 1).trim() };
    });
  const last = (op: string): string | undefined =>
    instructions.filter((i) => i.op === op).pop()?.args;
  const jsonArgs = (op: string): string[] => JSON.parse(last(op) ?? 'null') as string[];

  it('runs bin/iomt.mjs with node, defaulting to a valid role', () => {
    expect(jsonArgs('ENTRYPOINT')).toEqual(['node', 'bin/iomt.mjs']);
    const cmd = jsonArgs('CMD');
    expect(cmd).toHaveLength(1);
    expect(ROLES).toContain(cmd[0]);
  });

  it('builds on node:20-bookworm-slim in stages and runs as a non-root user', () => {
    const args = new Map<string, string>(
      instructions
        .filter((i) => i.op === 'ARG' && i.args.includes('='))
        .map((i): [string, string] => [
          i.args.split('=')[0] ?? '',
          i.args.split('=').slice(1).join('='),
        ]),
    );
    const froms = instructions
      .filter((i) => i.op === 'FROM')
      .map((i) => i.args.replace(/\$\{(\w+)\}/g, (_, n: string) => args.get(n) ?? ''));
    expect(froms.length).toBeGreaterThanOrEqual(2);
    for (const f of froms) expect(f.split(/\s+/)[0]).toBe('node:20-bookworm-slim');
    const user = last('USER');
    expect(user).toBeDefined();
    expect(['root', '0']).not.toContain(user);
    const exposed = instructions
      .filter((i) => i.op === 'EXPOSE')
      .flatMap((i) => i.args.split(/\s+/));
    expect(exposed).toEqual(expect.arrayContaining(['1883', '8080']));
    const runs = instructions.filter((i) => i.op === 'RUN').map((i) => i.args);
    expect(runs.some((r) => r.includes('npm run build'))).toBe(true);
    expect(runs.some((r) => /npm ci .*--omit=dev/.test(r))).toBe(true);
  });

  it('sets only environment keys that src/config.ts reads (besides NODE_ENV)', () => {
    const known = new Set([...settingKeys(), 'NODE_ENV']);
    const keys = instructions
      .filter((i) => i.op === 'ENV')
      .flatMap((i) => [...i.args.matchAll(/([A-Za-z_]\w*)=/g)].map((m) => m[1]!));
    expect(keys.length).toBeGreaterThan(0);
    expect(keys.filter((k) => !known.has(k))).toEqual([]);
  });

  it('keeps local state and secrets out of the build context', () => {
    const ignored = read('.dockerignore')
      .split(/\r?\n/)
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
    expect(ignored).toEqual(
      expect.arrayContaining(['node_modules', 'dist', 'data', '.run', '.git', '.env']),
    );
  });
});
