/**
 * A real HAProxy (Debian's `haproxy` package) for tests: writes a haproxy.cfg
 * from frontends and backends given as data, runs `haproxy -f cfg -db` as a
 * child process (foreground, no daemon), waits until every frontend port
 * accepts connections, and stops it by its own pid. HTTP mode (HAPI nodes)
 * and TCP mode (MQTT brokers) share the same writer: a mode per section, and
 * free-form `options` lines for what a test needs beyond the defaults.
 * The stats page (`statsPort`) answers `GET /stats;csv`, parsed by `stats()`,
 * so a test can see how many requests/sessions each server took.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

export interface HaproxyServer {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  /** Extra words on the `server` line, after the defaults (e.g. `send-proxy-v2`). */
  readonly params?: string;
}

export interface HaproxyBackend {
  readonly name: string;
  readonly mode: 'http' | 'tcp';
  readonly servers: readonly HaproxyServer[];
  /** `balance` algorithm; roundrobin unless said. */
  readonly balance?: string;
  /** HTTP mode: the path of the health check (`option httpchk GET <path>`, 2xx = up). */
  readonly httpCheck?: string;
  /** Health check interval, ms (`inter`); 500 unless said. */
  readonly checkIntervalMs?: number;
  /** Consecutive failed checks before a server is marked down (`fall`); 2 unless said. */
  readonly fall?: number;
  /** Consecutive passed checks before a server is marked up again (`rise`); 2 unless said. */
  readonly rise?: number;
  /** More lines for the section, verbatim (e.g. `option redispatch`, `retries 3`). */
  readonly options?: readonly string[];
}

export interface HaproxyFrontend {
  readonly name: string;
  readonly mode: 'http' | 'tcp';
  readonly port: number;
  readonly backend: string;
  /** More lines for the section, verbatim. */
  readonly options?: readonly string[];
}

export interface HaproxyConfig {
  readonly frontends: readonly HaproxyFrontend[];
  readonly backends: readonly HaproxyBackend[];
  /** A stats listener on 127.0.0.1 (`/stats`, `/stats;csv`). */
  readonly statsPort?: number;
  /** timeouts in ms; client/server apply to both modes. */
  readonly timeouts?: {
    readonly connectMs?: number;
    readonly clientMs?: number;
    readonly serverMs?: number;
    /**
     * How long a health check may take (`timeout check`; 5000 unless said).
     * Without it HAProxy allows `inter`, and a node slow to answer on a loaded
     * machine is taken out although it works. A dead node is still seen at
     * once: its port refuses the connection.
     */
    readonly checkMs?: number;
  };
}

/** One row of the stats CSV: a frontend, a backend or one server of a backend. */
export interface HaproxyStatRow {
  readonly proxy: string;
  readonly server: string;
  /** Cumulated sessions (`stot`): each HTTP request is one in http mode with no keep-alive reuse. */
  readonly sessions: number;
  /** HTTP responses by class, summed: hrsp_1xx … hrsp_5xx (0 in tcp mode). */
  readonly responses: number;
  /** `UP`, `DOWN`, `OPEN`, `no check`… */
  readonly status: string;
}

export interface Haproxy {
  readonly configFile: string;
  readonly pid: number | undefined;
  /** Output of haproxy (its alerts and warnings), for failure messages. */
  readonly output: string[];
  stats(): Promise<HaproxyStatRow[]>;
  stop(): Promise<void>;
}

/** haproxy.cfg text for the given sections (pure; exported for docs and checks). */
export function haproxyConfig(c: HaproxyConfig): string {
  const t = c.timeouts ?? {};
  const lines: string[] = [
    'global',
    '  maxconn 4096',
    '',
    'defaults',
    '  log stdout format raw local0 info',
    `  timeout connect ${t.connectMs ?? 2000}ms`,
    `  timeout client ${t.clientMs ?? 120_000}ms`,
    `  timeout server ${t.serverMs ?? 120_000}ms`,
    `  timeout check ${t.checkMs ?? 5000}ms`,
    '',
  ];
  for (const f of c.frontends) {
    lines.push(
      `frontend ${f.name}`,
      `  mode ${f.mode}`,
      `  bind 127.0.0.1:${f.port}`,
      `  default_backend ${f.backend}`,
      ...(f.options ?? []).map((o) => `  ${o}`),
      '',
    );
  }
  for (const b of c.backends) {
    const check = `check inter ${b.checkIntervalMs ?? 500} fall ${b.fall ?? 2} rise ${b.rise ?? 2}`;
    lines.push(
      `backend ${b.name}`,
      `  mode ${b.mode}`,
      `  balance ${b.balance ?? 'roundrobin'}`,
      ...(b.httpCheck !== undefined
        ? [`  option httpchk GET ${b.httpCheck}`, '  http-check expect status 200']
        : []),
      ...(b.options ?? []).map((o) => `  ${o}`),
      ...b.servers.map(
        (s) => `  server ${s.name} ${s.host}:${s.port} ${check}${s.params ? ` ${s.params}` : ''}`,
      ),
      '',
    );
  }
  if (c.statsPort !== undefined) {
    lines.push(
      'listen stats',
      '  mode http',
      `  bind 127.0.0.1:${c.statsPort}`,
      '  stats enable',
      '  stats uri /stats',
      '  stats refresh 0',
      '',
    );
  }
  return lines.join('\n');
}

function portAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
    socket.setTimeout(2000, () => done(false));
  });
}

/** Parses `GET /stats;csv` (the header line starts with `# `). */
export function parseStatsCsv(csv: string): HaproxyStatRow[] {
  const [header, ...rows] = csv.trim().split('\n');
  const cols = (header ?? '').replace(/^# /, '').split(',');
  const at = (name: string) => cols.indexOf(name);
  const num = (cells: string[], name: string) => Number(cells[at(name)] || 0);
  return rows.map((line) => {
    const cells = line.split(',');
    return {
      proxy: cells[at('pxname')] ?? '',
      server: cells[at('svname')] ?? '',
      sessions: num(cells, 'stot'),
      responses: ['hrsp_1xx', 'hrsp_2xx', 'hrsp_3xx', 'hrsp_4xx', 'hrsp_5xx', 'hrsp_other'].reduce(
        (sum, k) => sum + num(cells, k),
        0,
      ),
      status: cells[at('status')] ?? '',
    };
  });
}

/**
 * Starts haproxy with that configuration and resolves once every frontend
 * port (and the stats port) accepts connections; rejects with haproxy's own
 * output when the configuration is refused or it exits.
 */
export async function startHaproxy(c: HaproxyConfig, timeoutMs = 20_000): Promise<Haproxy> {
  const dir = await mkdtemp(path.join(tmpdir(), 'iomt-haproxy-'));
  const configFile = path.join(dir, 'haproxy.cfg');
  await writeFile(configFile, haproxyConfig(c));
  const output: string[] = [];
  let child: ChildProcess;
  try {
    child = spawn('haproxy', ['-f', configFile, '-db'], { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  child.stdout?.on('data', (b: Buffer) => output.push(b.toString('utf8')));
  child.stderr?.on('data', (b: Buffer) => output.push(b.toString('utf8')));
  let exitedWith: string | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exitedWith = String(code ?? signal);
      resolve();
    });
    child.once('error', (err) => {
      exitedWith = `spawn error: ${err.message} (is Debian's haproxy installed?)`;
      resolve();
    });
  });

  const stop = async () => {
    if (exitedWith === undefined) {
      child.kill('SIGTERM'); // haproxy: soft-stop; SIGKILL if it lingers
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    await rm(dir, { recursive: true, force: true });
  };

  const ports = [...c.frontends.map((f) => f.port), ...(c.statsPort ? [c.statsPort] : [])];
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (exitedWith !== undefined) {
      await stop();
      throw new Error(`haproxy exited (${exitedWith}): ${output.join('').slice(-2000)}`);
    }
    if ((await Promise.all(ports.map(portAnswers))).every(Boolean)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`haproxy: ports ${ports.join(', ')} not answering within ${timeoutMs} ms`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }

  return {
    configFile,
    get pid() {
      return child.pid;
    },
    output,
    async stats() {
      if (c.statsPort === undefined) throw new Error('haproxy: no statsPort configured');
      const res = await fetch(`http://127.0.0.1:${c.statsPort}/stats;csv`, {
        signal: AbortSignal.timeout(5000),
      });
      if (!res.ok) throw new Error(`haproxy stats: HTTP ${res.status}`);
      return parseStatsCsv(await res.text());
    },
    stop,
  };
}
