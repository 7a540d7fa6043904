import { defineConfig } from 'vitest/config';

export default defineConfig({
  // Same JSX transform as the production build (classic React.createElement).
  oxc: { jsx: { runtime: 'classic' } },
  test: {
    environment: 'jsdom',
    globals: true,
    setupFiles: ['./tests/polyfills.ts', './tests/setup.ts'],
    include: ['tests/**/*.test.{ts,tsx}'],
    css: false,
    // A test ends when its conditions are met; this bound only ends a hang. Driving a
    // whole editor (fixtures.test.tsx > builder_full.json: ~60 clicks through
    // @grafana/ui Selects) took over 30 s with the other core busy, so the bound is
    // far beyond any healthy run rather than near a typical one.
    testTimeout: 600_000,
    hookTimeout: 600_000,
    // @grafana/* ship ESM that imports CSS and browser-only modules: let Vite transform them.
    server: { deps: { inline: [/@grafana\//] } },
  },
});
