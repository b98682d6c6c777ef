/**
 * The operator console's first load on loopback, beside a baseline measured in
 * the same run and the same browser: a fresh browser profile (empty cache)
 * opens /console/ until the sign-in form is on the screen, against the same
 * profile opening /healthz (one small JSON answer from the same server: the
 * floor of a page load here). Also prints the bundle's size, raw and gzipped.
 *
 *   npx tsx bench/console-load.ts [--runs 10]
 *
 * Needs Redis (REDIS_URL), Debian's Chromium (/usr/bin/chromium) and the built
 * console (`npm run build`, or `npx vite build console`).
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { gzipSync } from 'node:zlib';
import { defaultConsoleDir } from '../src/admin/console.js';
import { launchChromium } from '../test/support/browser.js';
import { startHarness } from '../test/support/harness.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '10' } } });
const runs = Number(values.runs);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function bundleSize(): Promise<{ raw: number; gzip: number; files: number }> {
  const dir = defaultConsoleDir();
  const files = [
    path.join(dir, 'index.html'),
    ...(await readdir(path.join(dir, 'assets'))).map((f) => path.join(dir, 'assets', f)),
  ];
  let raw = 0;
  let gzip = 0;
  for (const f of files) {
    const b = await readFile(f);
    raw += b.length;
    gzip += gzipSync(b, { level: 9 }).length;
  }
  return { raw, gzip, files: files.length };
}

const h = await startHarness({
  fhirUrl: process.env.FHIR_URL ?? 'http://127.0.0.1:8091/fhir',
  roles: ['admin'],
});
const browser = await launchChromium();
try {
  const base = `http://127.0.0.1:${h.pipeline.admin!.port}`;
  const page: number[] = [];
  const floor: number[] = [];
  for (let i = 0; i < runs; i++) {
    for (const [what, out] of [
      ['console', page],
      ['healthz', floor],
    ] as const) {
      const context = await browser.newContext();
      const p = await context.newPage();
      const started = performance.now();
      if (what === 'console') {
        await p.goto(`${base}/console/`);
        await p.getByLabel('Admin token').waitFor();
      } else {
        await p.goto(`${base}/healthz`);
      }
      out.push(performance.now() - started);
      await context.close();
    }
  }
  const size = await bundleSize();
  console.log(`runs: ${runs} (fresh browser profile each, loopback)`);
  console.log(
    `first load of /console/ to the sign-in form: median ${median(page).toFixed(0)} ms (min ${Math.min(...page).toFixed(0)}, max ${Math.max(...page).toFixed(0)})`,
  );
  console.log(
    `baseline, /healthz in the same browser:      median ${median(floor).toFixed(0)} ms (min ${Math.min(...floor).toFixed(0)}, max ${Math.max(...floor).toFixed(0)})`,
  );
  console.log(
    `bundle: ${size.files} files, ${(size.raw / 1024).toFixed(1)} KiB raw, ${(size.gzip / 1024).toFixed(1)} KiB gzipped`,
  );
} finally {
  await browser.close();
  await h.close();
}
