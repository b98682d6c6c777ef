/**
 * Browser tests of the operator console: Debian's Chromium driven by
 * playwright-core (`apt-get install -y chromium`; .ci/run installs it), the
 * page built from source first, a screenshot per test under .run/screenshots/,
 * and axe-core's accessibility check run in the page.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { build } from 'vite';

const require = createRequire(import.meta.url);
export const SCREENSHOTS = path.resolve('.run/screenshots');

/** Builds the console from console/ into dist/console (what the admin role serves). */
export async function buildConsole(): Promise<void> {
  await build({ configFile: path.resolve('console/vite.config.ts'), logLevel: 'warn' });
}

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    args: [
      '--no-sandbox',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
}

export async function screenshot(page: Page, name: string): Promise<void> {
  await mkdir(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

export interface AxeViolation {
  id: string;
  impact: string | null;
  help: string;
  nodes: { target: unknown }[];
}

/**
 * axe-core's violations of impact serious or critical on the page as it is.
 * The engine is evaluated through the DevTools protocol, not as a <script>:
 * the console's CSP would (rightly) refuse an injected script.
 */
export async function seriousA11yViolations(page: Page): Promise<AxeViolation[]> {
  const source = await readFile(require.resolve('axe-core/axe.min.js'), 'utf8');
  await page.evaluate(source);
  const violations = await page.evaluate(async () => {
    const axe = (
      globalThis as unknown as { axe: { run(): Promise<{ violations: AxeViolation[] }> } }
    ).axe;
    return (await axe.run()).violations;
  });
  return violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
}
