/**
 * Static checks of the Docker deployment (docker-compose.yml, the Dockerfiles,
 * deploy/). No Docker engine runs where the tests run, and `docker compose
 * config` may be missing, so these tests read the files and check that the
 * pieces agree with each other and with the code: every environment key is one
 * src/config.ts reads, every URL names a service and a port that service
 * listens on, Grafana logs in as the read-only user that analyst.xml defines,
 * only MQTT over TLS is published beyond loopback, no secret has a default.
 *
 * What runs for real with these settings: the HAPI launcher with compose's
 * environment on a fresh PostgreSQL database (integration/hapi-compose-settings),
 * every role's /metrics scraped by Prometheus with prometheus.yml's jobs, and
 * the pipeline-health dashboard's queries (integration/observability-roles).
 */
import { describe, it, expect } from 'vitest';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parse, parseDocument } from 'yaml';
import { settingKeys } from '../../src/config.js';
import {
  bindMounts,
  buildOf,
  dependsOn,
  dockerfile,
  dockerfileEnv,
  env,
  execForm,
  finalStage,
  imageRepo,
  interpolate,
  loadCompose,
  namedVolumes,
  portMapping,
  read,
  ROOT,
  tokens,
} from '../support/compose.js';

const ROLES = ['broker', 'worker', 'admin', 'all'];
const PIPELINE_SERVICES = ['pipeline-broker', 'pipeline-worker', 'pipeline-admin'];
/** Every secret the stack needs; none may have a default. */
const SECRETS = [
  'ADMIN_TOKEN',
  'ANALYST_TOKEN',
  'CLICKHOUSE_PASSWORD',
  'CLICKHOUSE_ANALYST_PASSWORD',
  'POSTGRES_PASSWORD',
  'REDIS_PASSWORD',
  'GRAFANA_ADMIN_PASSWORD',
];
/** Secrets filled in for the checks that need values (compose reads them from .env). */
const FAKE_ENV: Record<string, string> = Object.fromEntries(
  SECRETS.map((k) => [k, `${k.toLowerCase()}-0123456789abcdef`]),
);

/**
 * Ports the images listen on by default, per their documentation (Docker Hub
 * pages / the images' Dockerfiles): a service's `expose` and `ports` add to
 * these; a service built here listens on its Dockerfile's EXPOSE.
 */
const IMAGE_PORTS: Record<string, number[]> = {
  redis: [6379],
  postgres: [5432],
  'clickhouse/clickhouse-server': [8123, 9000],
  'grafana/grafana': [3000],
  'prom/prometheus': [9090],
};

const { text: composeText, compose } = loadCompose();
const services = compose.services;

function containerPorts(name: string): number[] {
  const service = services[name];
  if (!service) return [];
  const ports = new Set<number>(IMAGE_PORTS[imageRepo(service.image)] ?? []);
  const build = buildOf(service);
  if (build)
    for (const i of finalStage(dockerfile(build.dockerfile)).filter((x) => x.op === 'EXPOSE'))
      for (const p of i.args.split(/\s+/)) ports.add(Number(p.replace(/\/(tcp|udp)$/, '')));
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

/** A value of the compose file with the secrets filled in, as compose would. */
const resolved = (value: string): string => interpolate(value, FAKE_ENV).value;

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
interface Datasource {
  name: string;
  uid: string;
  type: string;
  url?: string;
  jsonData: Record<string, unknown>;
  secureJsonData?: Record<string, string>;
}
const datasources = readdirSync(join(ROOT, 'deploy/grafana/provisioning/datasources')).flatMap(
  (f) =>
    (parse(read(`deploy/grafana/provisioning/datasources/${f}`)) as { datasources: Datasource[] })
      .datasources,
);
const chDatasource = datasources.find((d) => d.type === 'grafana-clickhouse-datasource');
const promDatasource = datasources.find((d) => d.type === 'prometheus');
const clickhouseService = Object.keys(services).find(
  (n) => imageRepo(services[n]!.image) === 'clickhouse/clickhouse-server',
);
const pipelineEnv = env(services['pipeline-worker'] ?? {});
const hapiScript = read('scripts/hapi.sh');

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
      expect(buildOf(s!)?.dockerfile, `${name} builds the Dockerfile`).toBe('Dockerfile');
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

  it('builds the server-mode image: ClickHouse is a server, the embedded engine is left out', () => {
    expect(pipelineEnv['CLICKHOUSE_URL']).toBeTruthy();
    for (const name of PIPELINE_SERVICES) {
      const build = services[name]!.build as { args?: Record<string, string> };
      expect(build.args?.['CLICKHOUSE_EMBEDDED'], name).toBe('false');
    }
    const args = dockerfile('Dockerfile').filter((i) => i.op === 'ARG');
    expect(args.map((a) => a.args.split('=')[0])).toContain('CLICKHOUSE_EMBEDDED');
  });

  it('points REDIS_URL, FHIR_URL and CLICKHOUSE_URL at services and ports of this file', () => {
    for (const key of ['REDIS_URL', 'FHIR_URL', 'CLICKHOUSE_URL']) {
      const value = pipelineEnv[key];
      expect(value, key).toBeDefined();
      const url = new URL(resolved(value!));
      expect(Object.keys(services), `${key} host`).toContain(url.hostname);
      expect(containerPorts(url.hostname), `${key} port`).toContain(urlPort(url));
    }
    expect(new URL(pipelineEnv['FHIR_URL']!).pathname).toBe('/fhir');
    expect(imageRepo(services[new URL(resolved(pipelineEnv['REDIS_URL']!)).hostname]!.image)).toBe(
      'redis',
    );
    // FHIR is our HAPI launcher, built from services/hapi-fhir.
    expect(buildOf(services[new URL(pipelineEnv['FHIR_URL']!).hostname]!)?.context).toBe(
      './services/hapi-fhir',
    );
    expect(new URL(pipelineEnv['CLICKHOUSE_URL']!).hostname).toBe(clickhouseService);
  });

  it('listens in containers on the ports the compose file maps', () => {
    // MQTT_PORT / MQTT_TLS_PORT / ADMIN_PORT inside the container must be the mapped container ports.
    expect(pipelineEnv['MQTT_PORT']).toBe('1883');
    expect(pipelineEnv['MQTT_TLS_PORT']).toBe('8883');
    expect(pipelineEnv['ADMIN_PORT']).toBe('8080');
    expect(pipelineEnv['ADMIN_HOST']).toBe('0.0.0.0');
    expect(pipelineEnv['METRICS_HOST']).toBe('0.0.0.0');
    const broker = (services['pipeline-broker']!.ports ?? []).map(portMapping);
    expect(broker.map((p) => p.container).sort()).toEqual([1883, 8883]);
    const admin = (services['pipeline-admin']!.ports ?? []).map(portMapping);
    expect(admin.map((p) => p.container)).toEqual([8080]);
  });

  it('gives every pipeline role a health check on its own METRICS_PORT /healthz', () => {
    const port = pipelineEnv['METRICS_PORT'];
    expect(port).toMatch(/^\d+$/);
    for (const name of PIPELINE_SERVICES) {
      const test = tokens(services[name]!.healthcheck?.test).join(' ');
      expect(test, name).toContain(`http://127.0.0.1:${port}/healthz`);
    }
  });

  it('publishes no host port twice', () => {
    const seen = new Map<string, string>();
    for (const [name, s] of Object.entries(services)) {
      for (const p of (s.ports ?? []).map(portMapping)) {
        if (p.published === undefined) continue;
        expect(seen.get(p.published), `host port ${p.published} of ${name}`).toBeUndefined();
        seen.set(p.published, name);
      }
    }
    expect(seen.get('8090')).toBe('hapi');
    expect(seen.get('8088')).toBe('pipeline-admin');
    expect(seen.get('1883')).toBe('pipeline-broker');
    expect(seen.get('8883')).toBe('pipeline-broker');
  });

  it('runs Redis with a password, maxmemory, noeviction and the append-only file on a volume', () => {
    const redisName = new URL(resolved(pipelineEnv['REDIS_URL']!)).hostname;
    const redis = services[redisName]!;
    const cmd = tokens(redis.command);
    const flag = (name: string): string | undefined =>
      cmd.includes(name) ? cmd[cmd.indexOf(name) + 1] : undefined;
    expect(flag('--appendonly')).toBe('yes');
    expect(flag('--appendfsync')).toBe('everysec');
    expect(flag('--maxmemory-policy')).toBe('noeviction');
    expect(resolved(flag('--maxmemory') ?? '')).toMatch(/^\d+(kb|mb|gb)?$/i);
    // The password the server requires is the one the pipeline's URL carries.
    const required = resolved(flag('--requirepass') ?? '');
    expect(required).toBe(FAKE_ENV['REDIS_PASSWORD']);
    expect(decodeURIComponent(new URL(resolved(pipelineEnv['REDIS_URL']!)).password)).toBe(
      required,
    );
    // redis-cli (the health check) authenticates from REDISCLI_AUTH.
    expect(resolved(env(redis)['REDISCLI_AUTH'] ?? '')).toBe(required);
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

  it('declares every named volume and secret it uses, and mounts only paths that exist, read-only', () => {
    const declared = Object.keys(compose.volumes ?? {});
    const secrets = Object.keys(compose.secrets ?? {});
    for (const [name, s] of Object.entries(services)) {
      for (const v of namedVolumes(s)) expect(declared, `${name} uses volume ${v}`).toContain(v);
      for (const m of bindMounts(s)) {
        expect(existsSync(join(ROOT, m.source)), `${name} mounts ${m.source}`).toBe(true);
        expect(m.readOnly, `${name} mounts ${m.source} read-only`).toBe(true);
      }
      for (const sec of s.secrets ?? [])
        expect(secrets, `${name} uses secret`).toContain(
          typeof sec === 'string' ? sec : sec.source,
        );
    }
  });

  it('runs HAPI from our launcher (services/hapi-fhir) on PostgreSQL, probed by its health endpoint', () => {
    const hapi = services['hapi']!;
    const build = buildOf(hapi)!;
    expect(build.dockerfile).toBe('services/hapi-fhir/Dockerfile');
    const e = env(hapi);
    expect(e['HAPI_DB']).toBe('postgres');
    const jdbc = new URL(e['HAPI_JDBC_URL']!.replace(/^jdbc:/, ''));
    expect(jdbc.protocol).toBe('postgresql:');
    expect(Object.keys(services)).toContain(jdbc.hostname);
    expect(containerPorts(jdbc.hostname)).toContain(urlPort(jdbc) || 5432);
    const pg = env(services[jdbc.hostname]!);
    expect(jdbc.pathname.slice(1)).toBe(pg['POSTGRES_DB']);
    expect(e['HAPI_JDBC_USER']).toBe(pg['POSTGRES_USER']);
    expect(e['HAPI_JDBC_PASSWORD']).toBe(pg['POSTGRES_PASSWORD']);
    // Every key is a setting the launcher documents (or the JVM's own variable).
    const readme = read('services/hapi-fhir/README.md');
    for (const key of Object.keys(e))
      if (key !== 'JAVA_TOOL_OPTIONS') expect(readme, `${key} documented`).toContain(key);
    // The JVM flags scripts/hapi.sh uses, so tests and compose run the same JVM.
    const scriptOpts = /DEFAULT_JAVA_OPTS="([^"]+)"/.exec(hapiScript)?.[1];
    expect(e['JAVA_TOOL_OPTIONS']).toBe(scriptOpts);
    // The health check: the actuator readiness endpoint on the port the image
    // listens on, with curl, which the runtime stage installs; no source-file probe.
    const image = finalStage(dockerfile(build.dockerfile));
    const port = dockerfileEnv(image)['HAPI_PORT'];
    const test = tokens(hapi.healthcheck?.test);
    expect(test.slice(0, 2)).toEqual(['CMD', 'curl']);
    expect(test).toContain(`http://127.0.0.1:${port}/actuator/health/readiness`);
    expect(JSON.stringify(hapi)).not.toMatch(/\.java\b/);
    expect(image.some((i) => i.op === 'RUN' && /apt-get install .*\bcurl\b/.test(i.args))).toBe(
      true,
    );
    expect(containerPorts('hapi')).toContain(Number(port));
  });

  it('runs ClickHouse with raised nofile limits, a writer without access management and the analyst users.d file', () => {
    const ch = services[clickhouseService!]!;
    expect(ch.image).toMatch(/^clickhouse\/clickhouse-server:2[45]\.\d+/);
    expect(ch.ulimits?.['nofile']).toBeDefined();
    const e = env(ch);
    expect(resolved(e['CLICKHOUSE_PASSWORD']!)).not.toBe('');
    // The pipeline writes with the account the server creates ...
    expect(pipelineEnv['CLICKHOUSE_USER']).toBe(e['CLICKHOUSE_USER'] ?? 'default');
    expect(pipelineEnv['CLICKHOUSE_PASSWORD']).toBe(e['CLICKHOUSE_PASSWORD']);
    expect(pipelineEnv['CLICKHOUSE_DATABASE']).toBe(e['CLICKHOUSE_DB']);
    // ... which cannot create users, roles or grants.
    expect(e['CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT']).toBe('0');
    // One file, not the users.d folder (the entrypoint writes default-user.xml there).
    const mount = bindMounts(ch).find((m) => m.source.endsWith('analyst.xml'));
    expect(mount?.target).toBe('/etc/clickhouse-server/users.d/analyst.xml');
    expect(statSync(join(ROOT, mount!.source)).isFile()).toBe(true);
  });

  it("runs analysts' SQL as the read-only analyst account, with the password the server reads", () => {
    const users = child(chConfig, 'users')?.children.map((u) => u.name) ?? [];
    expect(users).toContain(pipelineEnv['CLICKHOUSE_ANALYST_USER']);
    expect(pipelineEnv['CLICKHOUSE_ANALYST_USER']).not.toBe(pipelineEnv['CLICKHOUSE_USER']);
    const fromEnv =
      child(child(child(chConfig, 'users'), 'analyst'), 'password')?.attrs['from_env'] ?? '';
    expect(pipelineEnv['CLICKHOUSE_ANALYST_PASSWORD']).toBe(
      env(services[clickhouseService!]!)[fromEnv],
    );
  });
});

describe('docker-compose.yml: exposure and secrets', () => {
  /** Every published port: service, container port, host port, bound address. */
  const published = Object.entries(services).flatMap(([name, s]) =>
    (s.ports ?? []).map(portMapping).map((p) => ({ name, ...p })),
  );

  it('publishes beyond loopback only MQTT over TLS', () => {
    const open = published.filter((p) => p.hostIp !== '127.0.0.1');
    expect(open.map((p) => `${p.name}:${p.published}->${p.container}`)).toEqual([
      'pipeline-broker:8883->8883',
    ]);
    // That port is the broker's TLS listener, which starts because both files are set.
    expect(String(open[0]!.container)).toBe(pipelineEnv['MQTT_TLS_PORT']);
    expect(pipelineEnv['MQTT_TLS_CERT_FILE']).toBeTruthy();
    expect(pipelineEnv['MQTT_TLS_KEY_FILE']).toBeTruthy();
    // The certificate and key come from deploy/mqtt-tls, mounted read-only; never in the image.
    const tlsMount = bindMounts(services['pipeline-broker']!).find(
      (m) => m.target === '/etc/iomt/tls',
    );
    expect(tlsMount).toEqual({
      source: './deploy/mqtt-tls',
      target: '/etc/iomt/tls',
      readOnly: true,
    });
    expect(pipelineEnv['MQTT_TLS_CERT_FILE']!.startsWith(`${tlsMount!.target}/`)).toBe(true);
    expect(pipelineEnv['MQTT_TLS_KEY_FILE']!.startsWith(`${tlsMount!.target}/`)).toBe(true);
    expect(read('.dockerignore').split('\n')).toContain('deploy/mqtt-tls');
  });

  it('binds every other published port to 127.0.0.1: plaintext MQTT, admin API, Grafana, Prometheus, HAPI, ClickHouse', () => {
    const local = published
      .filter((p) => p.hostIp === '127.0.0.1')
      .map((p) => `${p.name}:${p.published}->${p.container}`)
      .sort();
    expect(local).toEqual(
      [
        'pipeline-broker:1883->1883',
        'pipeline-admin:8088->8080',
        'grafana:3000->3000',
        'prometheus:9090->9090',
        'hapi:8090->8080',
        'clickhouse:8123->8123',
      ].sort(),
    );
    // Redis, PostgreSQL and the worker publish nothing.
    for (const name of ['redis', 'postgres', 'pipeline-worker'])
      expect(services[name]!.ports ?? [], name).toEqual([]);
  });

  it('has no default password: compose refuses to start until every secret is set', () => {
    // 1. With an empty environment, every secret is reported missing (compose's error).
    const { missing } = interpolate(composeText.replace(/^\s*#.*$/gm, ''), {});
    const names = new Set(missing.map((m) => m.name));
    expect([...names].sort()).toEqual([...SECRETS].sort());
    for (const m of missing)
      expect(m.message, m.name).toMatch(new RegExp(`set ${m.name} in \\.env`));
    // 2. No secret-looking variable has a default anywhere.
    const defaults = [...composeText.matchAll(/\$\{([A-Za-z_]\w*)(:?-)[^}]*\}/g)].map((m) => m[1]!);
    expect(defaults.filter((n) => /PASSWORD|TOKEN|SECRET|KEY/.test(n))).toEqual([]);
    // 3. Every environment value that is a secret comes from one of those variables.
    for (const [name, s] of Object.entries(services))
      for (const [key, value] of Object.entries(env(s)))
        if (/PASSWORD|TOKEN|SECRET|REDISCLI_AUTH/.test(key) && !key.endsWith('_USER'))
          expect(value, `${name}.${key}`).toMatch(/^\$\{[A-Z_]+:\?[^}]+\}$/);
    expect(composeText).not.toMatch(/change-me/i);
  });

  it("requires Grafana's admin password from the user and turns sign-up and anonymous access off", () => {
    const e = env(services['grafana']!);
    expect(e['GF_SECURITY_ADMIN_PASSWORD']).toMatch(/^\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}$/);
    expect(e['GF_USERS_ALLOW_SIGN_UP']).toBe('false');
    expect(e['GF_AUTH_ANONYMOUS_ENABLED']).toBe('false');
  });

  it('shares one admin token between the roles and Prometheus (a compose secret from ADMIN_TOKEN)', () => {
    expect(pipelineEnv['ADMIN_TOKEN']).toMatch(/^\$\{ADMIN_TOKEN:\?[^}]+\}$/);
    expect(compose.secrets?.['admin-token']).toEqual({ environment: 'ADMIN_TOKEN' });
    expect(services['prometheus']!.secrets).toContain('admin-token');
  });
});

describe('Prometheus (deploy/prometheus)', () => {
  interface ScrapeConfig {
    job_name: string;
    metrics_path?: string;
    authorization?: { type?: string; credentials_file?: string };
    dns_sd_configs?: { names: string[]; type: string; port: number }[];
  }
  const config = parse(read('deploy/prometheus/prometheus.yml')) as {
    rule_files: string[];
    scrape_configs: ScrapeConfig[];
  };
  const prometheus = services['prometheus']!;

  it('scrapes /metrics of every pipeline service on METRICS_PORT with the admin token', () => {
    const mount = bindMounts(prometheus).find((m) => m.target === '/etc/prometheus');
    expect(mount?.source).toBe('./deploy/prometheus');
    const byService = new Map(
      config.scrape_configs.map((j) => [j.dns_sd_configs?.[0]?.names[0] ?? '', j]),
    );
    expect([...byService.keys()].sort()).toEqual([...PIPELINE_SERVICES].sort());
    for (const name of PIPELINE_SERVICES) {
      const job = byService.get(name)!;
      expect(job.job_name).toBe(`iomt-${tokens(services[name]!.command)[0]}`);
      expect(job.metrics_path ?? '/metrics').toBe('/metrics');
      expect(String(job.dns_sd_configs![0]!.port)).toBe(pipelineEnv['METRICS_PORT']);
      expect(job.authorization).toEqual({
        type: 'Bearer',
        credentials_file: '/run/secrets/admin-token',
      });
    }
  });

  it('loads alert rules that exist next to it', () => {
    for (const f of config.rule_files)
      expect(existsSync(join(ROOT, 'deploy/prometheus', f)), f).toBe(true);
    const alerts = (
      parse(read('deploy/prometheus/alerts.yml')) as {
        groups: { rules: { alert: string }[] }[];
      }
    ).groups.flatMap((g) => g.rules.map((r) => r.alert));
    expect(alerts).toEqual(
      expect.arrayContaining(['IomtStageStalled', 'IomtDeadLettersRising', 'IomtBackpressureHeld']),
    );
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
    // No access management for the analyst either.
    expect(child(analyst, 'access_management')?.text ?? '0').toBe('0');
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

  it('installs the ClickHouse plugin at a pinned version, never auto-updated', () => {
    const e = env(grafana);
    expect(e['GF_PLUGINS_PREINSTALL_SYNC']).toMatch(
      /^grafana-clickhouse-datasource@\d+\.\d+\.\d+$/,
    );
    expect(e['GF_PLUGINS_PREINSTALL_AUTO_UPDATE']).toBe('false');
    expect(e['GF_INSTALL_PLUGINS']).toBeUndefined();
    const targets = bindMounts(grafana).map((m) => m.target);
    expect(targets).toContain('/etc/grafana/provisioning');
  });

  it('documents an offline install of the same plugin version (docker-compose.offline.yml)', () => {
    const version = env(grafana)['GF_PLUGINS_PREINSTALL_SYNC']!.split('@')[1]!;
    const offline = loadCompose('docker-compose.offline.yml');
    const g = offline.compose.services['grafana']!;
    const e = env(g);
    expect(e['GF_PLUGINS_PREINSTALL_SYNC']).toBe('');
    expect(e['GF_PLUGINS_PREINSTALL_DISABLED']).toBe('true');
    const mount = bindMounts(g).find((m) => m.target === e['GF_PATHS_PLUGINS']);
    expect(mount?.readOnly).toBe(true);
    expect(existsSync(join(ROOT, mount!.source))).toBe(true);
    // The download command names the pinned version, in the file and in the docs.
    const url = `grafana-clickhouse-datasource/versions/${version}/download`;
    expect(offline.text).toContain(url);
    expect(read('docs/deployment.md')).toContain(url);
  });

  it('points the ClickHouse data source at the ClickHouse service as the analyst user', () => {
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

  it('points the Prometheus data source at the Prometheus service', () => {
    expect(promDatasource).toBeDefined();
    const url = new URL(promDatasource!.url!);
    expect(url.hostname).toBe('prometheus');
    expect(containerPorts('prometheus')).toContain(urlPort(url));
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

  it('loads dashboards from the mounted folder, each using a provisioned data source', () => {
    const providers = (
      parse(read('deploy/grafana/provisioning/dashboards/dashboards.yml')) as {
        providers: { options: { path: string } }[];
      }
    ).providers;
    const mount = bindMounts(grafana).find((m) => m.target === providers[0]!.options.path);
    expect(mount, 'dashboards folder mounted at the provider path').toBeDefined();
    const files = readdirSync(join(ROOT, mount!.source)).filter((f) => f.endsWith('.json'));
    expect(files.sort()).toEqual(['iomt.json', 'pipeline-health.json']);
    const uids = new Set(datasources.map((d) => d.uid));
    for (const file of files) {
      const dashboard = JSON.parse(read(join(mount!.source, file))) as {
        panels: { title: string; type: string; datasource?: { uid: string } }[];
      };
      for (const panel of dashboard.panels.filter((p) => p.type !== 'row'))
        expect(uids, `${file}: ${panel.title}`).toContain(panel.datasource?.uid);
    }
  });

  it('shows the clinical tables from ClickHouse (iomt.json)', () => {
    const dashboard = JSON.parse(read('deploy/grafana/dashboards/iomt.json')) as {
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

  it('shows pipeline health from Prometheus (pipeline-health.json)', () => {
    const dashboard = JSON.parse(read('deploy/grafana/dashboards/pipeline-health.json')) as {
      panels: {
        title: string;
        type: string;
        targets?: { expr: string; datasource: { uid: string } }[];
      }[];
    };
    const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr)).join('\n');
    // Rates, queue depth, backpressure, latency, errors by code, dead letters.
    for (const metric of [
      'iomt_messages_received_total',
      'iomt_queue_jobs',
      'iomt_broker_paused',
      'iomt_receipt_to_fhir_seconds_bucket',
      'iomt_errors_total',
      'iomt_dead_letter_jobs',
    ])
      expect(exprs, metric).toContain(metric);
    expect(exprs).toMatch(/sum by \(code, stage\)/);
    for (const p of dashboard.panels)
      for (const t of p.targets ?? []) expect(t.datasource.uid, p.title).toBe(promDatasource!.uid);
  });
});

describe('Dockerfile (the pipeline image)', () => {
  const instructions = dockerfile('Dockerfile');
  const runtime = finalStage(instructions);

  it('runs bin/iomt.mjs with node, defaulting to a valid role', () => {
    expect(execForm(instructions, 'ENTRYPOINT')).toEqual(['node', 'bin/iomt.mjs']);
    const cmd = execForm(instructions, 'CMD');
    expect(cmd).toHaveLength(1);
    expect(ROLES).toContain(cmd[0]);
  });

  it('builds on a Node LTS Debian slim image in stages and runs as a non-root user', () => {
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
    for (const f of froms) expect(f.split(/\s+/)[0]).toMatch(/^node:(20|22)-bookworm-slim$/);
    // The major the image runs is one `engines` allows.
    const major = /^node:(\d+)/.exec(froms[0]!)![1]!;
    const engines = (JSON.parse(read('package.json')) as { engines: { node: string } }).engines
      .node;
    expect(engines).toMatch(new RegExp(`\\^${major}\\.`));
    const user = runtime.filter((i) => i.op === 'USER').pop()?.args;
    expect(user).toBeDefined();
    expect(['root', '0']).not.toContain(user);
    const exposed = runtime.filter((i) => i.op === 'EXPOSE').flatMap((i) => i.args.split(/\s+/));
    expect(exposed).toEqual(expect.arrayContaining(['1883', '8883', '8080', '9464']));
    const runs = instructions.filter((i) => i.op === 'RUN').map((i) => i.args);
    expect(runs.some((r) => r.includes('npm run build'))).toBe(true);
    expect(runtime.some((i) => i.op === 'RUN' && /npm ci .*--omit=dev/.test(i.args))).toBe(true);
  });

  it('leaves the embedded engine (an optional dependency) out when CLICKHOUSE_EMBEDDED is not true', () => {
    const pkg = JSON.parse(read('package.json')) as {
      dependencies: Record<string, string>;
      optionalDependencies?: Record<string, string>;
    };
    expect(pkg.optionalDependencies?.['chdb']).toBeDefined();
    expect(pkg.dependencies['chdb']).toBeUndefined();
    const install = runtime.find((i) => i.op === 'RUN' && i.args.includes('npm ci'))!.args;
    expect(install).toMatch(/CLICKHOUSE_EMBEDDED.*--omit=optional/);
    expect(
      runtime.find((i) => i.op === 'ARG' && i.args.startsWith('CLICKHOUSE_EMBEDDED='))?.args,
    ).toBe('CLICKHOUSE_EMBEDDED=true');
  });

  it('sets only environment keys that src/config.ts reads (besides NODE_ENV and glibc malloc)', () => {
    const known = new Set([...settingKeys(), 'NODE_ENV', 'MALLOC_MMAP_THRESHOLD_']);
    const keys = Object.keys(dockerfileEnv(instructions));
    expect(keys.length).toBeGreaterThan(0);
    expect(keys.filter((k) => !known.has(k))).toEqual([]);
  });

  it('keeps local state and secrets out of the build context', () => {
    const ignored = read('.dockerignore')
      .split(/\r?\n/)
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
    expect(ignored).toEqual(
      expect.arrayContaining([
        'node_modules',
        'dist',
        'data',
        '.run',
        '.git',
        '.env',
        'deploy/mqtt-tls',
      ]),
    );
  });
});

describe('services/hapi-fhir/Dockerfile (the FHIR server image)', () => {
  const instructions = dockerfile('services/hapi-fhir/Dockerfile');
  const runtime = finalStage(instructions);

  it('builds the jar with the Maven command scripts/hapi.sh runs, and runs it with a JRE', () => {
    const mvn = instructions.find((i) => i.op === 'RUN' && /\bmvn\b/.test(i.args))!.args;
    expect(mvn).toMatch(/mvn -q -B package -DskipTests$/);
    expect(hapiScript).toContain('mvn -q -B package -DskipTests');
    const entry = execForm(runtime, 'ENTRYPOINT');
    expect(entry.slice(0, 2)).toEqual(['java', '-jar']);
    // The jar copied from the build stage's target/ is the one the entrypoint runs.
    const copy = runtime.find((i) => i.op === 'COPY' && i.args.startsWith('--from=build'))!.args;
    expect(copy).toMatch(/target\/hapi-fhir-launcher\.jar\s+(\S+)$/);
    expect(copy.split(/\s+/).pop()).toBe(entry[2]);
    const args = instructions.filter((i) => i.op === 'ARG').map((i) => i.args);
    expect(args).toContain('JRE_IMAGE=eclipse-temurin:17-jre');
    const user = runtime.filter((i) => i.op === 'USER').pop()?.args;
    expect(['root', '0', undefined]).not.toContain(user);
  });
});
