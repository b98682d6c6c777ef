/**
 * The HAProxy configurations we ship or generate are accepted by the real
 * haproxy (`haproxy -c`, Debian's 2.6): the sample for HAPI nodes under
 * deploy/haproxy/ and what test/support/haproxy.ts writes for the chaos tests.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { haproxyConfig, parseStatsCsv } from '../support/haproxy.js';

const run = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
let dir: string | undefined;

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function check(text: string): Promise<string> {
  dir ??= await mkdtemp(path.join(tmpdir(), 'iomt-haproxy-check-'));
  const file = path.join(dir, `${Math.random().toString(36).slice(2)}.cfg`);
  await writeFile(file, text);
  const { stdout, stderr } = await run('haproxy', ['-c', '-f', file]);
  return stdout + stderr;
}

describe('HAProxy configurations', () => {
  it('the HAPI-nodes sample is valid (node names replaced by loopback addresses)', async () => {
    const sample = await readFile(path.join(ROOT, 'deploy/haproxy/hapi-fhir.cfg'), 'utf8');
    expect(sample).toMatch(/option redispatch/);
    expect(sample).toMatch(/option httpchk GET \/actuator\/health\/readiness/);
    const local = sample
      .replace('hapi1:8080', '127.0.0.1:18081')
      .replace('hapi2:8080', '127.0.0.1:18082');
    expect(await check(local)).toMatch(/Configuration file is valid/);
  });

  it('the generated HTTP-mode configuration is valid', async () => {
    const text = haproxyConfig({
      statsPort: 18090,
      frontends: [
        { name: 'fhir', mode: 'http', port: 18080, backend: 'hapi', options: ['option httplog'] },
      ],
      backends: [
        {
          name: 'hapi',
          mode: 'http',
          httpCheck: '/actuator/health/readiness',
          options: ['option redispatch', 'retries 3'],
          servers: [
            { name: 'n1', host: '127.0.0.1', port: 18081 },
            { name: 'n2', host: '127.0.0.1', port: 18082 },
          ],
        },
      ],
    });
    expect(text).toContain('server n2 127.0.0.1:18082 check inter 500 fall 2 rise 2');
    expect(await check(text)).toMatch(/Configuration file is valid/);
  });

  it('reads per-server sessions, responses and state from the stats CSV', () => {
    const csv = [
      '# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,status,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other',
      'hapi,n1,0,0,1,3,,42,0,0,DOWN,0,40,0,0,2,0',
      'hapi,n2,0,0,0,2,,17,0,0,UP,0,17,0,0,0,0',
    ].join('\n');
    expect(parseStatsCsv(csv)).toEqual([
      { proxy: 'hapi', server: 'n1', sessions: 42, responses: 42, status: 'DOWN' },
      { proxy: 'hapi', server: 'n2', sessions: 17, responses: 17, status: 'UP' },
    ]);
  });
});
