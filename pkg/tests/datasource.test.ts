import { dateTime, ScopedVars } from '@grafana/data';
import { HealthCheckError } from '@grafana/runtime';
import { firstValueFrom, of } from 'rxjs';

import { adHocToFilters } from '../src/datasource';
import { healthDetails } from '../src/health';
import { MPQuery } from '../src/types';
import { fixtureNames, loadFixture, makeDataSource } from './helpers';

const noVars: ScopedVars = {};

describe('applyTemplateVariables', () => {
  it('leaves every fixture unchanged (no variables in them, macros are the backend’s)', () => {
    const { ds } = makeDataSource();
    for (const name of fixtureNames()) {
      const q = loadFixture(name);
      expect(ds.applyTemplateVariables(q, noVars)).toEqual(q);
    }
  });

  it('expands a multi-value variable in a filter into all its values, eq → in, neq → nin', () => {
    const { ds } = makeDataSource();
    const q: MPQuery = {
      refId: 'A',
      mode: 'builder',
      eventType: '$eventType',
      measures: [{ type: 'count' }],
      filters: [
        { dimension: 'country', op: 'eq', values: ['$country'] },
        { dimension: 'country', op: 'neq', values: ['${country}'] },
        { dimension: 'deviceType', op: 'eq', values: ['$device'] },
        { dimension: 'browser', op: 'in', values: ['Edge', '$country'] },
      ],
      groupBy: ['$dims'],
      alias: '$device {{country}}',
    };
    const out = ds.applyTemplateVariables(q, noVars);
    expect(out.eventType).toBe('page_view');
    expect(out.filters).toEqual([
      { dimension: 'country', op: 'in', values: ['FR', 'DE'] },
      { dimension: 'country', op: 'nin', values: ['FR', 'DE'] },
      { dimension: 'deviceType', op: 'eq', values: ['mobile'] },
      { dimension: 'browser', op: 'in', values: ['Edge', 'FR', 'DE'] },
    ]);
    expect(out.groupBy).toEqual(['country', 'deviceType']);
    expect(out.alias).toBe('mobile {{country}}');
    // The original is not modified.
    expect(q.filters![0].values).toEqual(['$country']);
  });

  it('uses scoped variables (repeated panels) before dashboard ones', () => {
    const { ds } = makeDataSource();
    const q: MPQuery = {
      refId: 'A',
      mode: 'builder',
      eventType: 'page_view',
      filters: [{ dimension: 'country', op: 'eq', values: ['$country'] }],
    };
    const out = ds.applyTemplateVariables(q, { country: { text: 'US', value: 'US' } });
    expect(out.filters).toEqual([{ dimension: 'country', op: 'eq', values: ['US'] }]);
  });

  it('replaces dashboard variables in a pipeline but leaves the backend macros', () => {
    const { ds } = makeDataSource();
    const q: MPQuery = {
      refId: 'B',
      mode: 'pipeline',
      collection: 'metrics_minutely',
      pipeline: '[{"$match": $__timeFilter(timestamp)}, {"$match": {"dimensions.deviceType": "$device"}}]',
      format: 'table',
    };
    expect(ds.applyTemplateVariables(q, noVars).pipeline).toBe(
      '[{"$match": $__timeFilter(timestamp)}, {"$match": {"dimensions.deviceType": "mobile"}}]'
    );
  });

  it('replaces variables in variable queries (chained variables)', () => {
    const { ds } = makeDataSource();
    const q: MPQuery = { refId: 'variable', mode: 'variable', variable: 'dimensions', eventType: '$eventType' };
    expect(ds.applyTemplateVariables(q, noVars).eventType).toBe('page_view');
  });

  it('adds ad-hoc filters as filters the model knows', () => {
    const { ds } = makeDataSource();
    const q = loadFixture('builder_count.json');
    const out = ds.applyTemplateVariables(q, noVars, [
      { key: 'country', operator: '=', value: 'FR' },
      { key: 'browser', operator: '!=', value: 'Edge' },
      { key: 'deviceType', operator: '=~', value: 'mob.*' },
    ]);
    expect(out.filters).toEqual([
      { dimension: 'country', op: 'eq', values: ['FR'] },
      { dimension: 'browser', op: 'neq', values: ['Edge'] },
    ]);
  });

  it('maps multi-value ad-hoc operators to in / nin', () => {
    expect(
      adHocToFilters([
        { key: 'country', operator: '=|', value: 'FR', values: ['FR', 'DE'] },
        { key: 'country', operator: '!=|', value: 'US', values: ['US'] },
      ])
    ).toEqual([
      { dimension: 'country', op: 'in', values: ['FR', 'DE'] },
      { dimension: 'country', op: 'nin', values: ['US'] },
    ]);
  });
});

describe('filterQuery and defaults', () => {
  it('hides queries that cannot run yet', () => {
    const { ds } = makeDataSource();
    expect(ds.filterQuery({ refId: 'A', mode: 'builder' })).toBe(false);
    expect(ds.filterQuery({ refId: 'A', mode: 'builder', eventType: 'click', hide: true })).toBe(false);
    expect(ds.filterQuery({ refId: 'B', mode: 'pipeline', pipeline: '  ' })).toBe(false);
    for (const name of fixtureNames()) {
      expect(ds.filterQuery(loadFixture(name))).toBe(true);
    }
  });

  it('defaults to a builder count in the configured granularity', () => {
    expect(makeDataSource().ds.getDefaultQuery('dashboard' as any)).toEqual({
      mode: 'builder',
      measures: [{ type: 'count' }],
      filters: [],
      groupBy: [],
      granularity: 'auto',
      fill: 'null',
      format: 'timeseries',
    });
    expect(makeDataSource({ defaultGranularity: 'hour' }).ds.getDefaultQuery('dashboard' as any).granularity).toBe(
      'hour'
    );
  });

  it('offers annotations with the alerts defaults', () => {
    const { ds } = makeDataSource();
    expect(ds.annotations?.getDefaultQuery?.()).toEqual({ mode: 'annotations', rule: '', states: ['firing', 'resolved'] });
    expect(ds.annotations?.QueryEditor).toBeDefined();
  });
});

describe('variable support', () => {
  it('runs variable queries through QueryData in variable mode', async () => {
    const { ds } = makeDataSource();
    const run = vi.spyOn(ds, 'runVariableQuery').mockReturnValue(of({ data: [] }));
    const support = ds.variables as any;
    await firstValueFrom(
      support.query({
        targets: [{ refId: '', variable: 'dimensionValues', dimension: 'country' }],
        range: { from: dateTime(0), to: dateTime(1000) },
      })
    );
    expect(run.mock.calls[0][0].targets).toEqual([
      { refId: 'variable', mode: 'variable', variable: 'dimensionValues', dimension: 'country' },
    ]);
  });
});

describe('ad-hoc filter keys and values', () => {
  it('come from the dimensions and dimension-values endpoints', async () => {
    const { ds, getResource } = makeDataSource();
    expect(await ds.getTagKeys()).toEqual([{ text: 'browser' }, { text: 'country' }, { text: 'deviceType' }]);
    const values = await ds.getTagValues({
      key: 'country',
      filters: [],
      timeRange: { from: dateTime(1000), to: dateTime(2000), raw: { from: 'now-1h', to: 'now' } },
    });
    expect(values).toEqual([{ text: 'DE' }, { text: 'FR' }, { text: 'GB' }, { text: 'US' }]);
    expect(getResource).toHaveBeenLastCalledWith('dimension-values', { dim: 'country', prefix: '', from: 1000, to: 2000 });
  });
});

describe('Save & test', () => {
  const facts = {
    serverVersion: '7.0.14',
    replicaSet: 'rs0',
    changeStreams: true,
    database: 'analytics',
    rollupCollections: { present: ['metrics_minutely'], missing: ['metrics_hourly', 'metrics_daily', 'metrics_monthly'] },
    warnings: [],
  };

  it('shows the backend details under the message', async () => {
    const { ds } = makeDataSource();
    vi.spyOn(ds, 'callHealthCheck').mockResolvedValue({
      status: 'OK' as any,
      message: 'Connected to MongoDB 7.0.14; database analytics has metrics_minutely',
      details: facts,
    });
    const r = await ds.testDatasource();
    expect(r.status).toBe('success');
    expect(r.message).toContain('Connected');
    expect(r.details?.message).toBe('MongoDB 7.0.14, replica set rs0, database analytics.');
    expect(r.details?.verboseMessage).toContain('Rollup collections present: metrics_minutely');
    expect(r.details?.verboseMessage).toContain('Rollup collections missing: metrics_hourly, metrics_daily, metrics_monthly');
    expect(r.details?.verboseMessage).toContain('Change streams (live panels): available');
  });

  it('turns warnings (a standalone server) into a warning status', async () => {
    const { ds } = makeDataSource();
    vi.spyOn(ds, 'callHealthCheck').mockResolvedValue({
      status: 'OK' as any,
      message: 'Connected',
      details: { ...facts, replicaSet: null, changeStreams: false, warnings: ['standalone server: live panels need a replica set'] },
    });
    const r = await ds.testDatasource();
    expect(r.status).toBe('warning');
    expect(r.details?.message).toContain('standalone server');
    expect(r.details?.verboseMessage).toContain('Warning: standalone server: live panels need a replica set');
  });

  it('rejects failures the way Grafana expects (a HealthCheckError)', async () => {
    const { ds } = makeDataSource();
    vi.spyOn(ds, 'callHealthCheck').mockResolvedValue({
      status: 'ERROR' as any,
      message: 'Could not reach MongoDB at 127.0.0.1:1 within 5 s',
      details: undefined as any,
    });
    const err: any = await ds.testDatasource().catch((e) => e);
    expect(err.status).toBe('error');
    expect(err.message).toContain('Could not reach MongoDB');
    expect(err.error).toBeInstanceOf(HealthCheckError);
  });

  it('formats details defensively', () => {
    expect(healthDetails(undefined)).toBeUndefined();
    expect(healthDetails({})).toBeUndefined();
    expect(healthDetails({ database: 'x' })?.message).toBe('database x.');
  });
});
