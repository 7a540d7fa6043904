/**
 * The production bundle (rollup.config.mjs) loaded the way Grafana loads it: an
 * AMD `define` whose dependencies are Grafana's shared modules, handed over as
 * ES module namespaces (`__esModule` with a `default`), as SystemJS does.
 */
import * as React from 'react';
import * as emotionCss from '@emotion/css';
import * as grafanaData from '@grafana/data';
import * as grafanaRuntime from '@grafana/runtime';
import * as grafanaUi from '@grafana/ui';
import { render, screen } from '@testing-library/react';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const PKG = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const EXTERNALS = ['react', 'react-dom', '@grafana/data', '@grafana/ui', '@grafana/runtime', '@emotion/css', '@emotion/react', 'rxjs', 'rxjs/operators', 'lodash'];

/** Runs the production build (in its own process: esbuild wants Node's realm, not jsdom's). */
function buildBundle(): string {
  const dir = mkdtempSync(join(tmpdir(), 'mongopulse-bundle-'));
  try {
    const out = join(dir, 'module.js');
    execFileSync(process.execPath, [join(PKG, 'node_modules/rollup/dist/bin/rollup'), '-c', 'rollup.config.mjs', '--silent', '-o', out], {
      cwd: PKG,
      stdio: 'pipe',
    });
    return readFileSync(out, 'utf8');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function asNamespace(mod: object) {
  return { __esModule: true, default: mod, ...mod };
}

const SHARED: Record<string, unknown> = {
  react: asNamespace(React),
  '@emotion/css': asNamespace(emotionCss),
  '@grafana/data': grafanaData,
  '@grafana/runtime': grafanaRuntime,
  '@grafana/ui': grafanaUi,
};

describe('dist/module.js', () => {
  let code = '';
  beforeAll(() => {
    code = buildBundle();
  }, 60000);

  it('is one AMD module that imports only what Grafana shares', () => {
    const deps: string[] = JSON.parse(code.slice('define('.length, code.indexOf(']') + 1));
    expect(code.startsWith('define([')).toBe(true);
    expect(deps[0]).toBe('exports');
    for (const dep of deps.slice(1)) {
      expect(EXTERNALS).toContain(dep);
    }
    expect(code).not.toContain('jsx-runtime');
    expect(code.length).toBeLessThan(150_000);
  });

  it('exports a DataSourcePlugin with its editors when Grafana loads it', () => {
    let exported: Record<string, any> = {};
    const define = (deps: string[], factory: (...args: unknown[]) => void) => {
      exported = {};
      factory(...deps.map((d) => (d === 'exports' ? exported : SHARED[d])));
    };
    new Function('define', code)(define);
    const plugin = exported.plugin;
    expect(plugin).toBeInstanceOf(grafanaData.DataSourcePlugin);
    expect(plugin.components.ConfigEditor).toBeInstanceOf(Function);
    expect(plugin.components.QueryEditor).toBeInstanceOf(Function);
    const ds = new plugin.DataSourceClass({ id: 1, uid: 'u', type: 't', name: 'n', jsonData: {}, meta: {} });
    expect(ds).toBeInstanceOf(grafanaRuntime.DataSourceWithBackend);
    expect(ds.variables.editor).toBeInstanceOf(Function);
    expect(ds.annotations.QueryEditor).toBeInstanceOf(Function);
    // It renders with Grafana's React (classic runtime: no bundled jsx-runtime).
    render(
      React.createElement(plugin.components.ConfigEditor, {
        options: { jsonData: {}, secureJsonFields: {} },
        onOptionsChange: () => {},
      })
    );
    expect(screen.getByLabelText(/Connection URI/)).toBeInTheDocument();
  });
});
