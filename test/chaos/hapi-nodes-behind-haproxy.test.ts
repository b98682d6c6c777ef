/**
 * Scale-out of the FHIR side: two HAPI nodes (our launcher, scripts/hapi.sh) on
 * ONE fresh PostgreSQL database behind a real HAProxy in HTTP mode (round
 * robin, health check on the launcher's readiness endpoint, `option
 * redispatch`, `retries`). The pipeline (two brokers, two workers) knows only
 * HAProxy's URL. Both nodes take transactions; then one node is SIGKILLed
 * while a request is in flight on it, devices keep publishing, and the
 * pipeline keeps writing through the survivor. End state: every acknowledged
 * message is in FHIR exactly once (counted on the survivor and through
 * HAProxy) and in ClickHouse exactly once; queues drained, nothing
 * dead-lettered.
 *
 * Why exactly once holds: a transaction whose node dies never answers; HAProxy
 * does not resend it (it was sent) but answers 502, or closes the client's
 * connection when the request went over a kept-alive one; the FHIR writer
 * takes either as transient and sends the same Bundle again, now to the
 * survivor. Every entry is a PUT on an id derived from the identifier, so a
 * transaction the dead node had committed before dying is rewritten as the
 * same resource, not a second one; one it had not committed was rolled back by
 * PostgreSQL when its connection closed.
 *
 * Needs: haproxy (Debian), PostgreSQL at PGHOST:PGPORT as PGUSER (default
 * 127.0.0.1:5432, postgres, trust auth), Java for the launcher.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startHaproxy, type Haproxy } from '../support/haproxy.js';
import { createDatabase, dropDatabase, jdbcUrl, PG, psql } from '../support/postgres.js';
import { uniqueId, waitFor } from '../support/harness.js';
import { Fleet } from './support/fleet.js';
import {
  dropPrefix,
  freePort,
  hapi,
  startTwoByTwo,
  stopAll,
  transientFailure,
} from './support/processes.js';
import {
  expectOnceInClickHouse,
  expectOnceInFhirAndDrained,
  fhirIdentifierCounts,
  fhirProblems,
} from './support/verify.js';

const database = `iomt_hapi_nodes_${randomBytes(4).toString('hex')}`;
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = uniqueId('chaos-hapi-lb');

let dir: string | undefined;
let fleet: Fleet | undefined;
let proxy: Haproxy | undefined;
let dbCreated = false;
const nodePorts: number[] = [];

/** One HAProxy access log line (`option httplog`), the fields this test reads. */
interface Access {
  readonly server: string;
  readonly status: number;
  readonly method: string;
  readonly path: string;
}

/**
 * HAProxy's HTTP log format: `client [date] frontend backend/server
 * Tq/Tw/Tc/Tr/Ta status bytes cookie cookie termination conns queues "METHOD path HTTP/x"`.
 */
function accessLog(output: readonly string[]): Access[] {
  const re =
    / \S+\/(\S+) -?\d+\/-?\d+\/-?\d+\/-?\d+\/\+?-?\d+ (-?\d+) \+?\d+ \S+ \S+ \S{4} \S+ \S+ "(\S+) (\S+)/;
  return output
    .join('')
    .split('\n')
    .flatMap((line) => {
      const m = re.exec(line);
      return m
        ? [
            {
              server: m[1]!,
              status: Number(m[2]),
              method: m[3]!,
              path: m[4]!,
            },
          ]
        : [];
    });
}

/** A transaction or batch Bundle: POST to the FHIR base. */
const isBundlePost = (a: Access) => a.method === 'POST' && /^\/fhir\/?(\?|$)/.test(a.path);

afterAll(async () => {
  const keep = process.env.CHAOS_LOG_DIR;
  if (keep && proxy) await writeFile(path.join(keep, 'haproxy.log'), proxy.output.join(''));
  await fleet?.close();
  await stopAll();
  await proxy?.stop();
  const runDir = dir;
  if (runDir)
    await Promise.all(
      nodePorts.map((p) => hapi('stop', p, { HAPI_RUN_DIR: runDir }).catch(() => undefined)),
    );
  if (dbCreated) await dropDatabase(database);
  await dropPrefix(redisUrl, prefix);
  if (dir) await rm(dir, { recursive: true, force: true });
}, 120_000);

describe('two HAPI nodes on one PostgreSQL behind HAProxy', () => {
  it('a node killed mid-stream loses nothing and doubles nothing', async () => {
    const t0 = Date.now();
    const runDir = await mkdtemp(path.join(tmpdir(), 'iomt-chaos-hapi-lb-'));
    dir = runDir;

    // 0. A fresh database of this test's own.
    await createDatabase(database);
    dbCreated = true;

    // 1. Node 1 first: its boot creates the schema (hbm2ddl=update, in one burst:
    //    tables, indexes, then foreign keys); node 2 starts once the foreign
    //    keys stopped growing, so two nodes never create the schema at once, and
    //    the rest of the two boots (mostly JVM CPU) overlaps. A modest heap each
    //    (two JVMs on one machine), 10 database connections each.
    const nodeEnv: Record<string, string> = {
      HAPI_DB: 'postgres',
      HAPI_JDBC_URL: jdbcUrl(database),
      HAPI_JDBC_USER: PG.user,
      HAPI_RUN_DIR: runDir,
      HAPI_DB_POOL: '10',
      HAPI_START_TIMEOUT: '420',
      HAPI_JAVA_OPTS:
        '-Xms256m -Xmx768m -XX:+UseParallelGC -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true -Dfile.encoding=UTF-8',
    };
    nodePorts.push(await freePort(), await freePort());
    let node1Failed: Error | undefined;
    const node1 = hapi('start', nodePorts[0]!, nodeEnv).catch((err: Error) => {
      node1Failed = err;
    });
    let fks = 0;
    let changedAt = Date.now();
    await waitFor(
      async () => {
        if (node1Failed) throw node1Failed;
        const now = Number(
          await psql(`SELECT count(*) FROM pg_constraint WHERE contype = 'f'`, database),
        );
        if (now !== fks) [fks, changedAt] = [now, Date.now()];
        return fks > 0 && Date.now() - changedAt >= 5000;
      },
      (settled) => settled || node1Failed !== undefined,
      420_000,
      'the schema created by node 1',
    );
    await Promise.all([node1, hapi('start', nodePorts[1]!, nodeEnv)]);
    if (node1Failed) throw node1Failed;
    const [port1, port2] = nodePorts as [number, number];
    const bootedMs = Date.now() - t0;

    // 2. HAProxy: round robin over both, a node is out after 2 failed readiness
    //    checks 500 ms apart; a connection refused by a dead node is sent to the
    //    other one (redispatch) instead of failing the request.
    const [lbPort, statsPort] = [await freePort(), await freePort()];
    proxy = await startHaproxy({
      statsPort,
      frontends: [
        {
          name: 'fhir',
          mode: 'http',
          port: lbPort,
          backend: 'hapi',
          options: ['option httplog'],
        },
      ],
      backends: [
        {
          name: 'hapi',
          mode: 'http',
          httpCheck: '/actuator/health/readiness',
          options: ['option redispatch', 'retries 3'],
          servers: [
            { name: 'n1', host: '127.0.0.1', port: port1 },
            { name: 'n2', host: '127.0.0.1', port: port2 },
          ],
        },
      ],
    });
    const lb = proxy;
    await waitFor(
      () => lb.stats(),
      (rows) =>
        ['n1', 'n2'].every((n) =>
          rows.some((r) => r.proxy === 'hapi' && r.server === n && r.status === 'UP'),
        ),
      30_000,
      'both HAPI nodes UP in HAProxy',
    );
    const fhirUrl = `http://127.0.0.1:${lbPort}/fhir`;

    // 3. The pipeline knows only HAProxy: W1 normalize+FHIR, W2 every stage.
    const base = {
      redisUrl,
      prefix,
      fhirUrl,
      chdbPath: path.join(runDir, 'chdb'),
    };
    const { workers, brokers, urls } = await startTwoByTwo(base);
    fleet = await Fleet.register(redisUrl, prefix, 8);
    await fleet.connect(urls);
    const f = fleet;

    // 4. Load until both nodes have committed transactions.
    await f.publish(150, 5);
    await waitFor(
      () => Promise.resolve(accessLog(lb.output)),
      (log) =>
        ['n1', 'n2'].every((n) =>
          log.some((a) => a.server === n && isBundlePost(a) && a.status === 200),
        ),
      180_000,
      'transactions answered 200 by both nodes',
    );

    // 5. Keep publishing; kill node 1 the moment HAProxy has a request in flight on it.
    const publishing = f.publish(250, 10);
    const victimPid = Number(
      (await readFile(path.join(runDir, `hapi-${port1}.pid`), 'utf8')).trim(),
    );
    const cmdline = await readFile(`/proc/${victimPid}/cmdline`, 'utf8');
    expect(cmdline).toContain('hapi-fhir-launcher.jar'); // ours, by its pid file
    const inFlight = await waitFor(
      async () => {
        const csv = await fetch(`http://127.0.0.1:${statsPort}/stats;csv`).then((r) => r.text());
        const row = csv.split('\n').find((l) => l.startsWith('hapi,n1,'));
        return Number(row?.split(',')[4] ?? 0); // scur: requests on n1 now
      },
      (scur) => scur > 0,
      120_000,
      'a request in flight on node 1',
    );
    process.kill(victimPid, 'SIGKILL');
    const logAtKill = accessLog(lb.output).length;
    await waitFor(
      () =>
        Promise.resolve(
          (() => {
            try {
              process.kill(victimPid, 0);
              return false;
            } catch {
              return true;
            }
          })(),
        ),
      (gone) => gone,
      10_000,
      'node 1 gone',
    );
    const ackedAtKill = f.acked.length;
    await publishing;
    await f.publish(100, 10);
    await f.allAcked(120_000);
    expect(f.acked).toHaveLength(500);

    // 6. Both nodes took transactions before the kill: real load balancing.
    const before = accessLog(lb.output).slice(0, logAtKill).filter(isBundlePost);
    const byNode = (n: string) => before.filter((a) => a.server === n && a.status === 200).length;
    expect(byNode('n1')).toBeGreaterThan(0);
    expect(byNode('n2')).toBeGreaterThan(0);
    expect(inFlight).toBeGreaterThan(0);

    // 7. End state, on the survivor directly: every acknowledged message once,
    //    queues drained, nothing failed or dead-lettered.
    const survivorUrl = `http://127.0.0.1:${port2}/fhir`;
    await expectOnceInFhirAndDrained(survivorUrl, redisUrl, prefix, f);
    // ...and the same through HAProxy (only node 2 is left behind it).
    const viaLb = await fhirIdentifierCounts(fhirUrl, f.devices);
    expect(fhirProblems(viaLb, f.acked, f.sent)).toEqual([]);

    // 8. What happened on the way. The requests in flight on node 1 were cut
    //    off: HAProxy had sent them on a kept-alive connection, so it closes the
    //    client's connection as the server did (the pipeline sees a socket
    //    error; a 502 when the connection was new), and never resends them
    //    itself. The writers retried them as transient; node 1 went DOWN; node
    //    2 took the rest.
    const cutOff = workers.flatMap((w) =>
      w.logs.filter(transientFailure('FhirUnavailable')).map((l) => String(l.reason)),
    );
    expect(cutOff.length).toBeGreaterThan(0);
    expect(cutOff.some((r) => /UND_ERR_SOCKET|ECONNRESET|HTTP 50[234]/.test(r))).toBe(true);
    const stats = await lb.stats();
    expect(stats.find((r) => r.proxy === 'hapi' && r.server === 'n1')?.status).toMatch(/^DOWN/);
    const after = accessLog(lb.output).slice(logAtKill);
    expect(
      after.filter((a) => a.server === 'n2' && isBundlePost(a) && a.status === 200).length,
    ).toBeGreaterThan(0);

    // 9. ClickHouse: once per acknowledged message (the mirror's owner, W2, stopped first).
    await Promise.all([...brokers, ...workers].map((p) => p.stop()));
    await expectOnceInClickHouse(base.chdbPath, f.acked, 500);

    console.info(
      `hapi-nodes-behind-haproxy: boots ${Math.round(bootedMs / 1000)} s, ` +
        `total ${Math.round((Date.now() - t0) / 1000)} s; transactions before the kill: ` +
        `n1 ${byNode('n1')}, n2 ${byNode('n2')}; acked at kill ${ackedAtKill}; ` +
        `transient retries: ${cutOff.length} (${[...new Set(cutOff)].join('; ')}); ` +
        `n2 marked DOWN ${lb.output.join('').match(/^Server hapi\/n2 is DOWN/gm)?.length ?? 0} times`,
    );
  }, 900_000);
});
