/**
 * The alert rules (deploy/prometheus/alerts.yml) under Prometheus' own unit
 * tests (alerts.test.yml, run by Debian's promtool): a stalled stage, dead
 * letters rising, backpressure held and a role down each fire when they should
 * and stay quiet when they should. And every metric the rules and the
 * pipeline-health dashboard name is one the pipeline exposes (src/metrics.ts,
 * with prom-client's standard process and Node.js metrics). The integration
 * test observability-roles runs both against real processes.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { createMetrics } from '../../src/metrics.js';
import { read, ROOT } from '../support/compose.js';

const run = promisify(execFile);

/** Series names a registry exposes: histograms add _bucket, _sum, _count. */
async function exposedNames(): Promise<Set<string>> {
  const metrics = createMetrics();
  const names = new Set<string>();
  for (const m of await metrics.registry.getMetricsAsJSON()) {
    names.add(m.name);
    if (String(m.type) === 'histogram')
      for (const suffix of ['_bucket', '_sum', '_count']) names.add(`${m.name}${suffix}`);
  }
  return names;
}

/** Metric names in a PromQL expression: identifiers that are not functions, keywords or labels. */
function metricNames(expr: string): string[] {
  const withoutStrings = expr
    .replace(/"[^"]*"/g, '""')
    .replace(/\{[^}]*\}/g, '{}')
    .replace(/\[[^\]]*\]/g, '[]');
  const withoutGrouping = withoutStrings.replace(/\b(by|without|on|ignoring)\s*\([^)]*\)/g, '');
  const keywords = new Set(['and', 'or', 'unless', 'offset', 'bool', 'group_left', 'group_right']);
  return [...withoutGrouping.matchAll(/\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()/g)]
    .map((m) => m[1]!)
    .filter((n) => !keywords.has(n) && !/^\d/.test(n))
    .filter((n) => n.includes('_') || n === 'up');
}

const alerts = (
  parse(read('deploy/prometheus/alerts.yml')) as {
    groups: { rules: { alert: string; expr: string }[] }[];
  }
).groups.flatMap((g) => g.rules);
const dashboard = JSON.parse(read('deploy/grafana/dashboards/pipeline-health.json')) as {
  panels: { title: string; targets?: { expr: string }[] }[];
};

describe('deploy/prometheus/alerts.yml', () => {
  it('passes its promtool unit tests (alerts.test.yml)', async () => {
    const { stdout } = await run('promtool', ['test', 'rules', 'alerts.test.yml'], {
      cwd: `${ROOT}deploy/prometheus`,
    }).catch((err: Error & { stdout?: string; stderr?: string; code?: string }) => {
      if (err.code === 'ENOENT')
        throw new Error(
          "promtool not found: install Debian's prometheus package (apt-get install prometheus)",
        );
      throw new Error(`${err.message}\n${err.stdout ?? ''}${err.stderr ?? ''}`);
    });
    expect(stdout).toContain('SUCCESS');
  });

  it('has a rule for a stalled stage (each of the three), dead letters rising and backpressure held', () => {
    const stalled = alerts.filter((r) => r.alert === 'IomtStageStalled');
    expect(stalled).toHaveLength(3);
    expect(alerts.map((r) => r.alert)).toEqual(
      expect.arrayContaining(['IomtDeadLettersRising', 'IomtBackpressureHeld', 'IomtTargetDown']),
    );
  });
});

describe('metric names in the rules and the pipeline-health dashboard', () => {
  it('are all exposed by the pipeline (or by Prometheus itself: up)', async () => {
    const exposed = await exposedNames();
    exposed.add('up');
    const used = [
      ...alerts.map((r) => ({ where: `alert ${r.alert}`, expr: r.expr })),
      ...dashboard.panels.flatMap((p) =>
        (p.targets ?? []).map((t) => ({ where: `panel ${p.title}`, expr: t.expr })),
      ),
    ];
    expect(used.length).toBeGreaterThan(10);
    for (const { where, expr } of used) {
      const names = metricNames(expr);
      expect(names.length, `${where}: ${expr}`).toBeGreaterThan(0);
      for (const n of names) expect(exposed.has(n), `${where}: ${n}`).toBe(true);
    }
  });

  it('use the standard process_* and nodejs_* names', async () => {
    const exposed = await exposedNames();
    expect(exposed.has('process_resident_memory_bytes')).toBe(true);
    expect(exposed.has('nodejs_eventloop_lag_p99_seconds')).toBe(true);
    expect([...exposed].filter((n) => n.startsWith('iomt_process_'))).toEqual([]);
    expect(exposed.has('iomt_build_info')).toBe(true);
  });
});
