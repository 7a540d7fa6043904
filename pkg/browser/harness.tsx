/**
 * A page that renders the plugin's editors with the real @grafana/ui
 * components, outside Grafana: the data source's resource calls and the
 * health check are answered with canned data in the contract's shapes
 * (docs/query-model.md). browser/screenshots.mjs drives it in headless
 * Chromium. `?view=query|pipeline|variable|annotations|config`.
 */
/// <reference types="vite/client" />
import React, { useMemo, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { css } from '@emotion/css';
import { createTheme, DataSourceSettings, dateTime, GrafanaTheme2, TestDataSourceResponse } from '@grafana/data';
import { setTemplateSrv, TemplateSrv } from '@grafana/runtime';
import { Alert, Button, GlobalStyles, ThemeContext, useStyles2 } from '@grafana/ui';

import { AnnotationsQueryEditor } from '../src/components/AnnotationsQueryEditor';
import { ConfigEditor } from '../src/components/ConfigEditor';
import { QueryEditor } from '../src/components/QueryEditor';
import { VariableQueryEditor } from '../src/components/VariableQueryEditor';
import { DataSource } from '../src/datasource';
import { MPOptions, MPQuery, MPSecureJsonData, Schema } from '../src/types';

// Grafana gives Monaco its web worker; so does the harness.
import EditorWorker from 'monaco-editor/esm/vs/editor/editor.worker?worker';

(self as any).MonacoEnvironment = { getWorker: () => new EditorWorker() };

const SCHEMA: Schema = {
  eventTypes: ['add_to_cart', 'click', 'page_view', 'purchase', 'search', 'signup'],
  specs: ['default'],
  dimensions: ['browser', 'country', 'deviceType', 'source'],
  metrics: ['pageLoadTime', 'revenue', 'scrollDepth'],
  quantiles: [50, 90, 95, 99, 99.9],
  distinct: ['userId', 'sessionId'],
  topK: ['landingPage', 'referrer', 'searchTerm'],
};
const VALUES: Record<string, string[]> = {
  browser: ['Chrome', 'Edge', 'Firefox', 'Safari'],
  country: ['BR', 'DE', 'ES', 'FR', 'GB', 'IN', 'JP', 'US'],
  deviceType: ['desktop', 'mobile', 'tablet'],
  source: ['android', 'ios', 'web'],
};
const VARIABLES: Record<string, string[]> = { country: ['FR', 'DE'], device: ['mobile'] };

setTemplateSrv({
  getVariables: () => Object.keys(VARIABLES).map((name) => ({ name, type: 'custom' })),
  containsTemplate: (t?: string) => !!t && /\$\w+/.test(t),
  replace: (t?: string) => t ?? '',
  updateTimeRange: () => {},
} as unknown as TemplateSrv);

function buildPipeline(q: MPQuery) {
  const match: Record<string, unknown> = {
    metricType: q.eventType,
    timestamp: { $gte: { $date: '2026-11-25T18:00:00Z' }, $lt: { $date: '2026-11-25T21:00:00Z' } },
  };
  for (const f of q.filters ?? []) {
    const field = `dimensions.${f.dimension}`;
    match[field] =
      f.op === 'eq' ? f.values[0] : f.op === 'in' ? { $in: f.values } : f.op === 'neq' ? { $ne: f.values[0] } : f.values;
  }
  const id: Record<string, unknown> = { t: { $subtract: ['$timestamp', { $mod: [{ $toLong: '$timestamp' }, 60000] }] } };
  for (const g of q.groupBy ?? []) {
    id[g] = `$dimensions.${g}`;
  }
  return {
    collection: 'metrics_minutely',
    pipeline: [
      { $match: match },
      { $group: { _id: id, docs: { $push: '$sketches.pageLoadTime' } } },
      { $sort: { '_id.t': 1 } },
    ],
  };
}

function makeDataSource(): DataSource {
  const ds = new DataSource({
    id: 1,
    uid: 'mongopulse',
    type: 'mongopulse-analytics-datasource',
    name: 'Mongo Pulse',
    access: 'proxy',
    readOnly: false,
    jsonData: {},
    meta: { id: 'mongopulse-analytics-datasource', name: 'Mongo Pulse' } as any,
  });
  (ds as any).getResource = async (path: string, params: any = {}) => {
    switch (path) {
      case 'schema':
        return SCHEMA;
      case 'event-types':
        return SCHEMA.eventTypes;
      case 'dimensions':
        return SCHEMA.dimensions;
      case 'dimension-values':
        return (VALUES[params.dim] ?? []).filter((v) => v.toLowerCase().startsWith(String(params.prefix ?? '').toLowerCase()));
      default:
        throw new Error(`no resource ${path}`);
    }
  };
  (ds as any).postResource = async (path: string, body: MPQuery) => {
    if (path !== 'build') {
      throw new Error(`no resource ${path}`);
    }
    return buildPipeline(body);
  };
  (ds as any).callHealthCheck = async () => ({
    status: 'OK',
    message: 'Connected to MongoDB 7.0.14: replica set rs0, database analytics has metrics_minutely, metrics_hourly',
    details: {
      serverVersion: '7.0.14',
      replicaSet: 'rs0',
      changeStreams: true,
      database: 'analytics',
      rollupCollections: {
        present: ['metrics_minutely', 'metrics_hourly'],
        missing: ['metrics_daily', 'metrics_monthly'],
      },
      warnings: [],
    },
  });
  return ds;
}

const RANGE = {
  from: dateTime('2026-11-25T18:00:00Z'),
  to: dateTime('2026-11-25T21:00:00Z'),
  raw: { from: 'now-3h', to: 'now' },
};

function Frame({ title, children }: { title: string; children: React.ReactNode }) {
  const styles = useStyles2(getStyles);
  return (
    <div className={styles.frame} data-testid="frame">
      <div className={styles.title}>{title}</div>
      <div className={styles.body}>{children}</div>
    </div>
  );
}

function QueryView({ initial, title }: { initial: MPQuery; title: string }) {
  const ds = useMemo(makeDataSource, []);
  const [query, setQuery] = useState<MPQuery>(initial);
  const [runs, setRuns] = useState(0);
  return (
    <>
      <Frame title={title}>
        <QueryEditor
          datasource={ds}
          query={query}
          range={RANGE}
          onChange={setQuery}
          onRunQuery={() => setRuns((r) => r + 1)}
        />
      </Frame>
      <pre id="query-json" hidden data-runs={runs}>
        {JSON.stringify(query)}
      </pre>
    </>
  );
}

function VariableView() {
  const ds = useMemo(makeDataSource, []);
  const [query, setQuery] = useState<any>('');
  return (
    <>
      <Frame title="Variable — Query options · Data source: Mongo Pulse">
        <VariableQueryEditor datasource={ds} query={query} onChange={setQuery} onRunQuery={() => {}} />
      </Frame>
      <pre id="query-json" hidden>
        {JSON.stringify(query)}
      </pre>
    </>
  );
}

function AnnotationsView() {
  const ds = useMemo(makeDataSource, []);
  const [query, setQuery] = useState<MPQuery>({ refId: 'Anno' });
  return (
    <>
      <Frame title="Annotation — Mongo Pulse alerts">
        <AnnotationsQueryEditor datasource={ds} query={query} onChange={setQuery} onRunQuery={() => {}} />
      </Frame>
      <pre id="query-json" hidden>
        {JSON.stringify(query)}
      </pre>
    </>
  );
}

/** The settings page: the plugin's ConfigEditor, then Grafana's "Save & test" result, as Grafana lays it out. */
function ConfigView() {
  const ds = useMemo(makeDataSource, []);
  const [options, setOptions] = useState<DataSourceSettings<MPOptions, MPSecureJsonData>>({
    id: 1,
    uid: 'mongopulse',
    orgId: 1,
    name: 'Mongo Pulse',
    type: 'mongopulse-analytics-datasource',
    typeName: 'Mongo Pulse',
    typeLogoUrl: '',
    access: 'proxy',
    url: '',
    user: '',
    database: '',
    basicAuth: false,
    basicAuthUser: '',
    isDefault: true,
    withCredentials: false,
    readOnly: false,
    jsonData: { database: 'analytics', connectTimeoutSeconds: 5, queryTimeoutSeconds: 10 },
    secureJsonFields: { uri: true },
  });
  const [status, setStatus] = useState<TestDataSourceResponse | undefined>();
  const styles = useStyles2(getStyles);
  return (
    <>
      <Frame title="Settings — Mongo Pulse">
        <ConfigEditor options={options} onOptionsChange={setOptions} />
        <div className={styles.actions}>
          <Button variant="primary" onClick={() => ds.testDatasource().then(setStatus, setStatus)}>
            Save &amp; test
          </Button>
        </div>
        {status && (
          // What Grafana's DataSourceTestingStatus renders from testDatasource()'s result.
          <Alert severity={status.status as any} title={status.message} data-testid="testing-status">
            {status.details?.message}
            {status.details?.verboseMessage && (
              <details open style={{ whiteSpace: 'pre-wrap' }}>
                {status.details.verboseMessage}
              </details>
            )}
          </Alert>
        )}
      </Frame>
      <pre id="query-json" hidden>
        {JSON.stringify({ jsonData: options.jsonData, secureJsonData: options.secureJsonData ?? {} })}
      </pre>
    </>
  );
}

function App() {
  const view = new URLSearchParams(window.location.search).get('view') ?? 'query';
  const builder: MPQuery = {
    refId: 'A',
    mode: 'builder',
    measures: [{ type: 'count' }],
    filters: [],
    groupBy: [],
    granularity: 'auto',
    fill: 'null',
    format: 'timeseries',
  };
  switch (view) {
    case 'pipeline':
      return <QueryView title="B  (Mongo Pulse)" initial={{ ...builder, refId: 'B' }} />;
    case 'variable':
      return <VariableView />;
    case 'annotations':
      return <AnnotationsView />;
    case 'config':
      return <ConfigView />;
    default:
      return <QueryView title="A  (Mongo Pulse)" initial={builder} />;
  }
}

const getStyles = (theme: GrafanaTheme2) => ({
  frame: css({
    width: 1100,
    margin: theme.spacing(2),
    border: `1px solid ${theme.colors.border.weak}`,
    borderRadius: theme.shape.radius.default,
    background: theme.colors.background.primary,
  }),
  title: css({
    padding: theme.spacing(1, 2),
    background: theme.colors.background.secondary,
    color: theme.colors.primary.text,
    fontWeight: theme.typography.fontWeightMedium,
    borderBottom: `1px solid ${theme.colors.border.weak}`,
  }),
  body: css({ padding: theme.spacing(2) }),
  actions: css({ margin: theme.spacing(0, 0, 2, 0) }),
});

const theme = createTheme({ colors: { mode: 'dark' } });
createRoot(document.getElementById('root')!).render(
  <ThemeContext.Provider value={theme}>
    <GlobalStyles />
    <App />
  </ThemeContext.Provider>
);
