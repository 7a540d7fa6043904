#!/usr/bin/env node
// Browser test: builds the harness page (browser/index.html), serves it on
// 127.0.0.1, drives the editors in headless Chromium (Debian's `chromium`,
// through playwright-core), checks the queries they write against the shared
// fixtures, and saves the screenshots the README shows (docs/img/*.png).
//
//   node browser/screenshots.mjs            build and test; screenshots in pkg/dist/screenshots/
//   node browser/screenshots.mjs --update   the same, and refresh the README's docs/img/*.png
//   CHROMIUM=/path/to/chrome node ...       another Chromium binary
//
// The test run does not touch docs/img: pixels vary a little between runs and
// Chromium versions, and a test should not dirty the work tree.
import { createServer } from 'node:http';
import { mkdtempSync, readFileSync, rmSync, mkdirSync, existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, extname, join, normalize, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';

import { chromium } from 'playwright-core';
import { build } from 'vite';

const pkg = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const repo = resolve(pkg, '..');
const outDir = join(pkg, 'dist', 'harness');
const update = process.argv.includes('--update');
const imgDir = update ? join(repo, 'docs', 'img') : join(pkg, 'dist', 'screenshots');
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';

const fixture = (name) => JSON.parse(readFileSync(join(repo, 'tests', 'fixtures', 'queries', name), 'utf8'));

// ---- 1. build the harness --------------------------------------------------
await build({
  root: join(pkg, 'browser'),
  base: './',
  logLevel: 'warn',
  oxc: { jsx: { runtime: 'classic' } },
  resolve: {
    // @grafana/ui's ESM build default-imports these CommonJS files; with Node's
    // rules for .mjs (which Rolldown follows) that yields module.exports, not
    // its `default`. Their ES module builds have the same content.
    alias: [
      { find: /^react-use\/lib\/(.*)$/, replacement: 'react-use/esm/$1' },
      { find: /^rc-picker\/lib\/(.*)$/, replacement: 'rc-picker/es/$1' },
    ],
  },
  build: {
    outDir,
    emptyOutDir: true,
    chunkSizeWarningLimit: 20000,
    reportCompressedSize: false,
    minify: false,
    rolldownOptions: {
      onwarn(warning, warn) {
        // "use client" directives in dependencies mean nothing in a bundle.
        if (warning.code !== 'MODULE_LEVEL_DIRECTIVE') {
          warn(warning);
        }
      },
    },
  },
});

// ---- 2. serve it -----------------------------------------------------------
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml', '.ttf': 'font/ttf', '.woff2': 'font/woff2' };
// What Grafana serves under public/: @grafana/ui's icons, and the Inter and Roboto Mono fonts.
const modules = join(pkg, 'node_modules');
// Grafana's own spinner icon is not in the npm package: a stand-in arc.
const SPINNER = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><path d="M12 2a10 10 0 1 0 10 10h-2a8 8 0 1 1-8-8z"/></svg>';
const PUBLIC = [
  [/^\/public\/img\/icons\/(.+)$/, (m) => join(modules, '@grafana/ui/dist/public/img/icons', m[1])],
  [/^\/public\/fonts\/inter\/Inter-Regular\.woff2$/, () => join(modules, '@fontsource/inter/files/inter-latin-400-normal.woff2')],
  [/^\/public\/fonts\/inter\/Inter-Medium\.woff2$/, () => join(modules, '@fontsource/inter/files/inter-latin-500-normal.woff2')],
  [/^\/public\/fonts\/roboto\/.+\.woff2$/, () => join(modules, '@fontsource/roboto-mono/files/roboto-mono-latin-400-normal.woff2')],
];
const server = createServer(async (req, res) => {
  const path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname));
  if (path === '/public/img/icons/unicons/spinner.svg') {
    res.writeHead(200, { 'content-type': 'image/svg+xml' });
    res.end(SPINNER);
    return;
  }
  const mapped = PUBLIC.map(([re, to]) => [path.match(re), to]).find(([m]) => m);
  const file = path.includes('..') ? '' : mapped ? mapped[1](mapped[0]) : join(outDir, path === '/' ? 'index.html' : path);
  try {
    const body = await readFile(file);
    res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' });
    res.end(body);
  } catch {
    res.writeHead(404);
    res.end();
    notFound.push(path);
  }
});
const notFound = [];
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const base = `http://127.0.0.1:${server.address().port}/`;

// ---- 3. drive Chromium -----------------------------------------------------
if (!existsSync(executablePath)) {
  console.error(`${executablePath} is missing: apt-get install -y chromium (scripts/test.sh does it)`);
  process.exit(1);
}
const profile = mkdtempSync(join(tmpdir(), 'mongopulse-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  viewport: { width: 1140, height: 900 },
  deviceScaleFactor: 1,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
// Every wait below is for a condition (an element, a load state); this bound only ends a
// hang, so it is far above what a slow, busy machine needs.
context.setDefaultTimeout(180_000);
mkdirSync(imgDir, { recursive: true });

let passed = 0;
let failed = 0;
const problems = [];

function strip(q) {
  const { datasource, key, ...rest } = q;
  return rest;
}

async function openView(view) {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    // Missing files are reported by the server (see `notFound`).
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) {
      errors.push(`console error: ${m.text()}`);
    }
  });
  await page.goto(`${base}?view=${view}`);
  await page.getByTestId('frame').waitFor();
  return { page, errors };
}

async function currentJson(page) {
  return JSON.parse(await page.locator('#query-json').textContent());
}

/** Opens a Select (by its label) and clicks an option of its menu. */
async function choose(page, label, option) {
  await page.getByLabel(label, { exact: true }).click();
  const menu = page.getByLabel('Select options menu');
  await menu.getByText(option, { exact: true }).click();
}

/** Screenshot of the editor frame, with nothing focused or animating. */
async function shoot(page, file) {
  await page.waitForLoadState('networkidle');
  await page.evaluate(async () => {
    document.activeElement?.blur();
    await document.fonts.ready;
  });
  await page.mouse.move(0, 0);
  await page.getByTestId('frame').screenshot({ path: join(imgDir, file), animations: 'disabled', caret: 'hide' });
}

async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok   ${name}`);
  } catch (e) {
    failed++;
    problems.push(`${name}: ${e.stack ?? e}`);
    console.log(`FAIL ${name}\n${e.stack ?? e}`);
  }
}

function expectEqual(actual, expected, what) {
  if (!isDeepStrictEqual(actual, expected)) {
    throw new Error(`${what}:\n  got      ${JSON.stringify(actual)}\n  expected ${JSON.stringify(expected)}`);
  }
}

function expectNoErrors(errors) {
  if (errors.length) {
    throw new Error(errors.join('\n'));
  }
}

try {
  await check('query editor: a user builds p95 page load by country on mobile', async () => {
    const { page, errors } = await openView('query');
    await choose(page, 'Event type', 'page_view');
    await choose(page, 'Measure 1 type', 'Percentile');
    await choose(page, 'Measure 1 metric', 'pageLoadTime');
    await page.getByRole('button', { name: 'Add filter' }).click();
    await choose(page, 'Filter 1 dimension', 'deviceType');
    await choose(page, 'Filter 1 value', 'mobile');
    await choose(page, 'Group by', 'country');
    await page.getByLabel('Alias', { exact: true }).fill('{{country}} p95');
    await page.getByLabel('Alias', { exact: true }).blur();
    expectEqual(strip(await currentJson(page)), fixture('builder_p95_by_country.json'), 'query written');
    // The problems list is gone once the query is complete.
    if (await page.getByRole('status', { name: 'Query problems' }).count()) {
      throw new Error('validation messages still shown for a complete query');
    }
    // Add the comparison and top N for a richer picture, then close the menus.
    // InlineSwitch hides its checkbox under a label: click it as a user does (on the label).
    await page.getByLabel('Top N', { exact: true }).click({ force: true });
    await page.getByLabel('Top N limit').fill('5');
    await choose(page, 'Compare', '1 day before');
    await page.mouse.click(1120, 10);
    await shoot(page, 'query-editor.png');
    // The generated pipeline opens on demand.
    await page.getByText('Generated pipeline').click();
    await page.getByTestId('generated-pipeline').waitFor();
    expectNoErrors(errors);
  });

  await check('pipeline editor: Monaco renders the example with macros', async () => {
    const { page, errors } = await openView('pipeline');
    await page.getByRole('radio', { name: 'Pipeline' }).click();
    await page.getByRole('button', { name: /Use the example/ }).click();
    await page.locator('.monaco-editor .view-lines').waitFor();
    await page.getByText('$__timeGroup', { exact: false }).first().waitFor();
    const q = await currentJson(page);
    expectEqual(q.mode, 'pipeline', 'mode');
    expectEqual(q.collection, 'metrics_minutely', 'collection');
    await page.getByLabel('Time field').fill('_id');
    await page.getByLabel('Time field').blur();
    await shoot(page, 'pipeline-editor.png');
    // Typing `$` offers the macros.
    await page.locator('.monaco-editor .view-lines').click();
    await page.keyboard.press('Control+End');
    await page.keyboard.type('$');
    await page.locator('.monaco-editor .suggest-widget').getByText('$__timeFilter(timestamp)').waitFor();
    expectNoErrors(errors);
  });

  await check('variable editor: dimension values of country for page_view', async () => {
    const { page, errors } = await openView('variable');
    await page.getByRole('radio', { name: 'Dimension values' }).click();
    await choose(page, 'Event type', 'page_view');
    await choose(page, 'Dimension', 'country');
    expectEqual(strip(await currentJson(page)), fixture('variable_dimension_values.json'), 'variable query written');
    await shoot(page, 'variable-editor.png');
    expectNoErrors(errors);
  });

  await check('annotations editor: fired and resolved alerts by default', async () => {
    const { page, errors } = await openView('annotations');
    await page.getByLabel('Resolved', { exact: true }).waitFor();
    expectEqual(strip(await currentJson(page)), fixture('annotations_alerts.json'), 'annotation query written');
    expectNoErrors(errors);
  });

  await check('config editor: URI shown as configured, Save & test shows the details', async () => {
    const { page, errors } = await openView('config');
    const uri = page.locator('#config-uri');
    expectEqual(await uri.inputValue(), 'configured', 'URI field value');
    await page.getByLabel(/^Use TLS/).click({ force: true });
    await page.locator('#config-tls-ca-file').fill('/etc/ssl/mongodb/ca.pem');
    await page.getByRole('button', { name: 'Save & test' }).click();
    await page.getByTestId('testing-status').waitFor();
    const text = await page.getByTestId('testing-status').textContent();
    for (const part of ['MongoDB 7.0.14', 'replica set rs0', 'Rollup collections missing: metrics_daily, metrics_monthly']) {
      if (!text.includes(part)) {
        throw new Error(`Save & test result lacks "${part}": ${text}`);
      }
    }
    const saved = await currentJson(page);
    expectEqual(saved.jsonData.tls, true, 'jsonData.tls');
    expectEqual(saved.jsonData.tlsCAFile, '/etc/ssl/mongodb/ca.pem', 'jsonData.tlsCAFile');
    await shoot(page, 'config-editor.png');
    expectNoErrors(errors);
  });
  await check('every file the page asked for was served (icons, fonts, workers)', async () => {
    if (notFound.length) {
      throw new Error(`not found: ${[...new Set(notFound)].join(', ')}`);
    }
  });
} finally {
  await context.close();
  server.close();
  rmSync(profile, { recursive: true, force: true });
}

console.log(`screenshots in ${imgDir}`);
console.log(`browser: ${passed} passed, ${failed} failed`);
if (failed) {
  console.error(problems.join('\n\n'));
  process.exit(1);
}
