/**
 * `iomt query`: analysts' read-only SQL through the admin API, with ANALYST_TOKEN
 * when set (it opens this endpoint only), else ADMIN_TOKEN.
 */
import { Option } from '@commander-js/extra-typings';
import { loadConfig } from '../../config.js';
import { answerError, fetchAdmin } from '../admin-answer.js';
import { fail, type Program } from '../common.js';

export function register(program: Program): void {
  program
    .command('query')
    .argument('<sql>', 'one read-only statement')
    .addOption(
      new Option('--format <f>', 'output format')
        .choices(['table', 'csv', 'json'] as const)
        .default('table' as const),
    )
    .option(
      '--admin-url <url>',
      'admin API of the process owning the analytics store (default: http://127.0.0.1:$ADMIN_PORT)',
    )
    .description('query the ClickHouse mirror through the admin API')
    .action(async (sql, opts) => {
      try {
        const config = loadConfig();
        const base = opts.adminUrl ?? `http://127.0.0.1:${config.admin.port}`;
        const format = { table: 'PrettyCompact', csv: 'CSV', json: 'JSONEachRow' }[opts.format];
        const token = config.admin.analystToken ?? config.admin.token;
        const res = await fetchAdmin(`${base}/api/analytics/query`, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            ...(token ? { authorization: `Bearer ${token}` } : {}),
          },
          body: JSON.stringify({ sql, format }),
        });
        const text = await res.text();
        if (!res.ok) throw answerError(res.status, text);
        process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
      } catch (err) {
        fail(err);
      }
    });
}
