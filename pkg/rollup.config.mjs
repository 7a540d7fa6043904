// Builds dist/module.js: one AMD module exporting `plugin`, the format Grafana's
// plugin loader (SystemJS with its AMD extra) expects. Everything Grafana shares
// with plugins is external; the bundle holds only this plugin's code.
import esbuild from 'rollup-plugin-esbuild';

// Modules Grafana supplies at runtime (public/app/features/plugins/loader/sharedDependencies.ts).
export const EXTERNALS = [
  'react',
  'react-dom',
  '@grafana/data',
  '@grafana/ui',
  '@grafana/runtime',
  '@emotion/css',
  '@emotion/react',
  'rxjs',
  'rxjs/operators',
  'lodash',
];

export default {
  input: 'src/module.ts',
  external: (id) => EXTERNALS.includes(id),
  plugins: [
    esbuild({
      target: 'es2020',
      // Classic runtime (React.createElement): Grafana 11.6.0–11.6.10 does not
      // share react/jsx-runtime with plugins, and bundling React 18's runtime
      // breaks on Grafana 13's React 19. See docs/frontend.md.
      jsx: 'transform',
      jsxFactory: 'React.createElement',
      jsxFragment: 'React.Fragment',
      minify: true,
      sourceMap: true,
      tsconfig: 'tsconfig.json',
    }),
  ],
  output: {
    file: 'dist/module.js',
    format: 'amd',
    // Same as webpack's interop for AMD externals: `default` when __esModule, else the module itself.
    interop: 'auto',
    sourcemap: true,
  },
  onwarn(warning, warn) {
    // Any unresolved import means a dependency would be missing at runtime: fail the build.
    if (warning.code === 'UNRESOLVED_IMPORT') {
      throw new Error(`unresolved import ${warning.exporter ?? ''} from ${warning.id ?? ''}`);
    }
    warn(warning);
  },
};
