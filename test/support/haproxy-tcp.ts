/**
 * A real HAProxy (Debian's haproxy 2.6) in TCP mode in front of our brokers,
 * started by the test on a free loopback port: round robin over the backends,
 * each sent a PROXY v2 header (`send-proxy-v2`), TCP connect health checks
 * every 500 ms, and a failed connect re-dispatched to another backend (a killed
 * broker's port refuses before its check marks it down). The config it writes
 * is the one deploy/haproxy/mqtt.cfg documents, with test ports and timings.
 * `close()` stops the process (by its pid) and removes its directory.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

export interface HaproxyBackend {
  readonly name: string;
  readonly port: number;
}

export interface RunningHaproxy {
  readonly port: number;
  readonly url: string;
  /** stderr and stdout of the process, for failure messages. */
  readonly output: string[];
  close(): Promise<void>;
}

export function haproxyConfig(port: number, backends: readonly HaproxyBackend[]): string {
  return [
    'global',
    '  maxconn 2000',
    'defaults',
    '  mode tcp',
    '  timeout connect 2s',
    // Longer than the devices' keepalive (MQTT 1.5 x keepalive, 30 s in the tests).
    '  timeout client 120s',
    '  timeout server 120s',
    '  retries 3',
    '  option redispatch',
    'frontend mqtt',
    `  bind 127.0.0.1:${port}`,
    '  default_backend brokers',
    'backend brokers',
    '  balance roundrobin',
    '  default-server inter 500ms fall 2 rise 2 send-proxy-v2 check',
    ...backends.map((b) => `  server ${b.name} 127.0.0.1:${b.port}`),
    '',
  ].join('\n');
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ port, host: '127.0.0.1' });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export async function startHaproxy(
  port: number,
  backends: readonly HaproxyBackend[],
): Promise<RunningHaproxy> {
  const dir = await mkdtemp(path.join(tmpdir(), 'iomt-haproxy-'));
  const cfg = path.join(dir, 'haproxy.cfg');
  await writeFile(cfg, haproxyConfig(port, backends));
  const output: string[] = [];
  // -db: stay in the foreground, no daemon; the child's pid is HAProxy's.
  const child: ChildProcess = spawn('haproxy', ['-f', cfg, '-db'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout?.on('data', (b: Buffer) => output.push(b.toString('utf8')));
  child.stderr?.on('data', (b: Buffer) => output.push(b.toString('utf8')));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const close = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    await rm(dir, { recursive: true, force: true });
  };
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) break;
    if (await accepts(port)) return { port, url: `mqtt://127.0.0.1:${port}`, output, close };
    await new Promise((r) => setTimeout(r, 100));
  }
  await close();
  throw new Error(`haproxy did not listen on ${port}: ${output.join('').slice(-2000)}`);
}
