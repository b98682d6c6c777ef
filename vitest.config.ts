import { defineConfig } from 'vitest/config';

// Two projects: `unit` needs no services; `integration` (integration/ and e2e/)
// talks to the real Redis, a real HAPI FHIR server (started by the global setup
// unless FHIR_TEST_URL points at one) and the real ClickHouse engine.
export default defineConfig({
  test: {
    pool: 'forks',
    projects: [
      {
        extends: true,
        // Generous: some unit tests start the CLI (a cold tsx start takes seconds on
        // a loaded 2-core machine); a pure test finishes in milliseconds anyway.
        test: { name: 'unit', include: ['test/unit/**/*.test.ts'], testTimeout: 120_000 },
      },
      {
        extends: true,
        test: {
          name: 'integration',
          include: [
            'test/integration/**/*.test.ts',
            'test/e2e/**/*.test.ts',
            'test/chaos/**/*.test.ts',
          ],
          globalSetup: ['test/support/global-setup.ts'],
          testTimeout: 120_000,
          hookTimeout: 300_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
