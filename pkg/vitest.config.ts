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
    testTimeout: 30000,
    // @grafana/* ship ESM that imports CSS and browser-only modules: let Vite transform them.
    server: { deps: { inline: [/@grafana\//] } },
  },
});
