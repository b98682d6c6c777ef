/**
 * Integration tests need a real FHIR server. FHIR_TEST_URL points at one that is
 * already running; otherwise this starts our HAPI launcher (H2 in memory) on
 * HAPI_TEST_PORT (default 8091) and stops it afterwards. A HAPI already answering
 * on that port is reused and left running.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { TestProject } from 'vitest/node';

const run = promisify(execFile);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

declare module 'vitest' {
  export interface ProvidedContext {
    fhirUrl: string;
  }
}

async function answers(url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/metadata`, { signal: AbortSignal.timeout(5000) });
    return res.ok;
  } catch {
    return false;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const given = process.env.FHIR_TEST_URL;
  if (given) {
    project.provide('fhirUrl', given.replace(/\/+$/, ''));
    return () => Promise.resolve();
  }
  const port = process.env.HAPI_TEST_PORT ?? '8091';
  const url = `http://127.0.0.1:${port}/fhir`;
  project.provide('fhirUrl', url);
  if (await answers(url)) return () => Promise.resolve();
  const started = Date.now();
  process.stdout.write(`[global-setup] starting HAPI FHIR on port ${port} (H2)…\n`);
  await run('bash', [path.join(root, 'scripts/hapi.sh'), 'start', '--db', 'h2', '--port', port], {
    cwd: root,
    maxBuffer: 64 * 1024 * 1024,
  });
  process.stdout.write(
    `[global-setup] HAPI FHIR ready in ${((Date.now() - started) / 1000).toFixed(1)} s\n`,
  );
  return async () => {
    await run('bash', [path.join(root, 'scripts/hapi.sh'), 'stop', '--port', port], { cwd: root });
  };
}
