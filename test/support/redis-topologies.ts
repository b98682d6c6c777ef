/**
 * Real Redis topologies for tests, made of Debian's redis-server on loopback:
 * a Redis Cluster of N masters (redis-cli --cluster create), and a Sentinel
 * group (one master, replicas, three Sentinels). Each process is owned by the
 * test, in its own directory, on free ports; stop() kills them all.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { freePort } from './free-port.js';

const run = promisify(execFile);

/** Polls `check` every 200 ms until it holds, or throws naming `what` after `timeoutMs`. */
export async function until(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs = 60_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  const why = last instanceof Error ? ` (${last.message})` : '';
  throw new Error(`${what}: not within ${timeoutMs} ms${why}`);
}

/** One command to one node, on a short-lived connection. */
export async function nodeCall(port: number, ...args: (string | number)[]): Promise<unknown> {
  const r = new Redis({
    host: '127.0.0.1',
    port,
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  r.on('error', () => undefined);
  try {
    await r.connect();
    return await r.call(String(args[0]), ...args.slice(1).map(String));
  } finally {
    r.disconnect();
  }
}

interface Owned {
  readonly dir: string;
  readonly children: Set<ChildProcess>;
}

function serve(o: Owned, args: readonly string[], name: string): ChildProcess {
  const child = spawn('redis-server', [...args, '--logfile', path.join(o.dir, `${name}.log`)], {
    stdio: 'ignore',
  });
  o.children.add(child);
  child.once('exit', () => o.children.delete(child));
  return child;
}

async function stopAll(o: Owned): Promise<void> {
  await Promise.all(
    [...o.children].map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.exitCode !== null) return resolve();
          c.once('exit', () => resolve());
          c.kill('SIGKILL');
        }),
    ),
  );
  await rm(o.dir, { recursive: true, force: true });
}

export interface TestCluster {
  /** REDIS_URL for the pipeline: redis+cluster://… */
  readonly url: string;
  readonly ports: readonly number[];
  stop(): Promise<void>;
}

/** A Redis Cluster of `masters` masters (no replicas), ready (cluster_state:ok) on return. */
export async function startRedisCluster(masters = 3): Promise<TestCluster> {
  const o: Owned = {
    dir: await mkdtemp(path.join(tmpdir(), 'iomt-rcluster-')),
    children: new Set(),
  };
  const ports: number[] = [];
  for (let i = 0; i < masters; i++) ports.push(await freePort());
  try {
    for (const port of ports) {
      serve(
        o,
        [
          '--port',
          String(port),
          '--bind',
          '127.0.0.1',
          '--dir',
          o.dir,
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          `nodes-${port}.conf`,
          '--appendonly',
          'no',
          '--save',
          '',
        ],
        `node-${port}`,
      );
    }
    for (const port of ports)
      await until(
        `cluster node ${port} answers`,
        async () => (await nodeCall(port, 'PING')) === 'PONG',
      );
    await run('redis-cli', [
      '--cluster',
      'create',
      ...ports.map((p) => `127.0.0.1:${p}`),
      '--cluster-replicas',
      '0',
      '--cluster-yes',
    ]);
    for (const port of ports)
      await until(`cluster_state:ok on ${port}`, async () =>
        String(await nodeCall(port, 'CLUSTER', 'INFO')).includes('cluster_state:ok'),
      );
  } catch (err) {
    await stopAll(o);
    throw err;
  }
  return {
    url: `redis+cluster://${ports.map((p) => `127.0.0.1:${p}`).join(',')}`,
    ports,
    stop: () => stopAll(o),
  };
}

export interface TestSentinel {
  /** REDIS_URL for the pipeline: redis+sentinel://…/master */
  readonly url: string;
  readonly masterName: string;
  /** The port of the current master, as the Sentinels see it. */
  master(): Promise<number>;
  /** Kills the current master with SIGKILL; returns its port. */
  killMaster(): Promise<number>;
  /** Starts a killed data node again on its port (the Sentinels make it a replica). */
  restart(port: number): Promise<void>;
  /** The Sentinels' event lines (+sdown, +tilt, +convert-to-slave, …), for a failure message. */
  events(): Promise<string>;
  stop(): Promise<void>;
}

/** One master, `replicas` replicas and three Sentinels (quorum 2), with fast failover. */
export async function startRedisSentinel(replicas = 1): Promise<TestSentinel> {
  const o: Owned = {
    dir: await mkdtemp(path.join(tmpdir(), 'iomt-rsentinel-')),
    children: new Set(),
  };
  const masterName = 'iomt-master';
  const dataPorts: number[] = [];
  for (let i = 0; i <= replicas; i++) dataPorts.push(await freePort());
  const sentinelPorts: number[] = [];
  for (let i = 0; i < 3; i++) sentinelPorts.push(await freePort());
  const byPort = new Map<number, ChildProcess>();
  const argsOf = new Map<number, string[]>();
  try {
    const [masterPort, ...replicaPorts] = dataPorts as [number, ...number[]];
    // Each data node keeps an AOF in a directory of its own, as a node that a
    // supervisor restarts must: a master that came back empty could be elected
    // by a second failover and wipe the replica that holds every acknowledged
    // job (Redis's replication docs warn against exactly that).
    const data = async (port: number, extra: string[]) => {
      const dir = path.join(o.dir, `data-${port}`);
      await mkdir(dir);
      const args = [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--dir',
        dir,
        '--save',
        '',
        '--appendonly',
        'yes',
        '--appendfsync',
        'everysec',
        ...extra,
      ];
      argsOf.set(port, args);
      byPort.set(port, serve(o, args, `data-${port}`));
    };
    await data(masterPort, []);
    for (const port of replicaPorts)
      await data(port, ['--replicaof', '127.0.0.1', String(masterPort)]);
    for (const port of dataPorts)
      await until(`redis ${port} answers`, async () => (await nodeCall(port, 'PING')) === 'PONG');
    for (const port of replicaPorts)
      await until(`replica ${port} in sync`, async () =>
        String(await nodeCall(port, 'INFO', 'replication')).includes('master_link_status:up'),
      );
    for (const port of sentinelPorts) {
      const conf = path.join(o.dir, `sentinel-${port}.conf`);
      await writeFile(
        conf,
        [
          `port ${port}`,
          'bind 127.0.0.1',
          `dir ${o.dir}`,
          `sentinel monitor ${masterName} 127.0.0.1 ${masterPort} 2`,
          `sentinel down-after-milliseconds ${masterName} 3000`,
          `sentinel failover-timeout ${masterName} 5000`,
          `sentinel parallel-syncs ${masterName} 1`,
          '',
        ].join('\n'),
      );
      serve(o, [conf, '--sentinel'], `sentinel-${port}`);
    }
    for (const port of sentinelPorts)
      await until(`sentinel ${port} sees the replicas`, async () => {
        const info = String(await nodeCall(port, 'INFO', 'sentinel'));
        return info.includes(`slaves=${replicas}`) && info.includes('sentinels=3');
      });
  } catch (err) {
    await stopAll(o);
    throw err;
  }
  const master = async () => {
    const [, port] = (await nodeCall(
      sentinelPorts[0]!,
      'SENTINEL',
      'GET-MASTER-ADDR-BY-NAME',
      masterName,
    )) as [string, string];
    return Number(port);
  };
  return {
    url: `redis+sentinel://${sentinelPorts.map((p) => `127.0.0.1:${p}`).join(',')}/${masterName}`,
    masterName,
    master,
    async killMaster() {
      const port = await master();
      const child = byPort.get(port);
      if (!child) throw new Error(`no process of ours serves port ${port}`);
      await new Promise<void>((resolve) => {
        child.once('exit', () => resolve());
        child.kill('SIGKILL');
      });
      return port;
    },
    async restart(port) {
      const args = argsOf.get(port);
      if (!args) throw new Error(`no data node of ours on port ${port}`);
      byPort.set(port, serve(o, args, `data-${port}-again`));
      await until(
        `redis ${port} answers again`,
        async () => (await nodeCall(port, 'PING')) === 'PONG',
      );
    },
    async events() {
      const lines: string[] = [];
      for (const port of sentinelPorts) {
        const log = await readFile(path.join(o.dir, `sentinel-${port}.log`), 'utf8').catch(
          () => '',
        );
        for (const line of log.split('\n'))
          if (/ [+-][a-z-]+ /.test(line)) lines.push(`${port} ${line}`);
      }
      return lines.slice(-60).join('\n');
    },
    stop: () => stopAll(o),
  };
}
