import {
  AdHocVariableFilter,
  CoreApp,
  DataQueryRequest,
  DataSourceGetTagKeysOptions,
  DataSourceGetTagValuesOptions,
  DataSourceInstanceSettings,
  MetricFindValue,
  ScopedVars,
  TestDataSourceResponse,
} from '@grafana/data';
import { DataSourceWithBackend, getTemplateSrv, HealthCheckError, HealthCheckResult } from '@grafana/runtime';

import { AnnotationsQueryEditor } from './components/AnnotationsQueryEditor';
import { healthDetails } from './health';
import { expandValues } from './interpolate';
import { BuildResult, defaultAnnotationsQuery, defaultBuilderQuery, Filter, MPOptions, MPQuery, Schema } from './types';
import { MongoPulseVariableSupport } from './variables';

/**
 * The browser half of the data source. Queries run in the backend
 * (`DataSourceWithBackend.query` posts them to /api/ds/query); this class adds
 * Grafana's dashboard variables and ad-hoc filters to a panel query, the
 * editors' metadata calls (CallResource) and the health check's details.
 */
export class DataSource extends DataSourceWithBackend<MPQuery, MPOptions> {
  readonly defaultGranularity: MPQuery['granularity'];

  constructor(instanceSettings: DataSourceInstanceSettings<MPOptions>) {
    super(instanceSettings);
    this.defaultGranularity = instanceSettings.jsonData?.defaultGranularity ?? 'auto';
    this.variables = new MongoPulseVariableSupport(this);
    this.annotations = {
      QueryEditor: AnnotationsQueryEditor,
      getDefaultQuery: () => defaultAnnotationsQuery(),
    };
  }

  getDefaultQuery(_app: CoreApp): Partial<MPQuery> {
    return defaultBuilderQuery(this.defaultGranularity);
  }

  /** Queries that cannot run yet (no event type, empty pipeline) are not sent. */
  filterQuery(q: MPQuery): boolean {
    if (q.hide) {
      return false;
    }
    switch (q.mode ?? 'builder') {
      case 'builder':
        return !!q.eventType;
      case 'pipeline':
        return !!q.pipeline?.trim();
      default:
        return true;
    }
  }

  /**
   * Dashboard variables are a browser notion, so they are replaced here; the
   * backend's macros ($__timeFilter, $__timeGroup, …) are left alone. A filter
   * value that is a multi-value variable becomes all its values (`eq` → `in`,
   * `neq` → `nin`); ad-hoc filters become `eq`/`neq`/`in`/`nin` filters.
   */
  applyTemplateVariables(query: MPQuery, scopedVars: ScopedVars, adhoc?: AdHocVariableFilter[]): MPQuery {
    const srv = getTemplateSrv();
    const text = (s: string | undefined) => (s === undefined ? s : srv.replace(s, scopedVars));
    const mode = query.mode ?? 'builder';
    const out: MPQuery = { ...query };

    if (mode === 'builder') {
      out.eventType = text(query.eventType);
      if (query.alias !== undefined) {
        out.alias = text(query.alias);
      }
      if (query.compare) {
        out.compare = { shift: text(query.compare.shift) ?? '' };
      }
      if (query.groupBy) {
        out.groupBy = query.groupBy.flatMap((g) => expandValues(srv, [g], scopedVars));
      }
      if (query.filters) {
        out.filters = query.filters.map((f) => interpolateFilter(f, srv, scopedVars));
      }
      const extra = adHocToFilters(adhoc ?? []);
      if (extra.length) {
        out.filters = [...(out.filters ?? []), ...extra];
      }
    } else if (mode === 'pipeline') {
      out.pipeline = text(query.pipeline);
      out.collection = text(query.collection);
      if (query.timeField !== undefined) {
        out.timeField = text(query.timeField);
      }
    } else if (mode === 'variable') {
      if (query.eventType !== undefined) {
        out.eventType = text(query.eventType);
      }
      if (query.dimension !== undefined) {
        out.dimension = text(query.dimension);
      }
      if (query.prefix !== undefined) {
        out.prefix = text(query.prefix);
      }
    } else if (mode === 'annotations') {
      if (query.rule !== undefined) {
        out.rule = text(query.rule);
      }
    }
    return out;
  }

  /**
   * Save & test: Grafana shows the message; the backend's details (server
   * version, replica set, rollup collections, warnings) are turned into the
   * `message` / `verboseMessage` pair Grafana renders under it.
   */
  async testDatasource(): Promise<TestDataSourceResponse> {
    const res: HealthCheckResult = await this.callHealthCheck();
    const details = healthDetails(res?.details);
    if (res?.status === 'OK') {
      const warnings = Array.isArray(res.details?.warnings) && res.details.warnings.length > 0;
      return { status: warnings ? 'warning' : 'success', message: res.message, details };
    }
    const message = res?.message || 'The health check failed without a message.';
    return Promise.reject({ status: 'error', message, error: new HealthCheckError(message, details ?? {}) });
  }

  // ---- ad-hoc filters -------------------------------------------------------

  async getTagKeys(_options?: DataSourceGetTagKeysOptions<MPQuery>): Promise<MetricFindValue[]> {
    const dims = await this.dimensions();
    return dims.map((text) => ({ text }));
  }

  async getTagValues(options: DataSourceGetTagValuesOptions<MPQuery>): Promise<MetricFindValue[]> {
    const range = options.timeRange;
    const values = await this.dimensionValues(options.key, '', undefined, range?.from.valueOf(), range?.to.valueOf());
    return values.map((text) => ({ text }));
  }

  // ---- resource endpoints the editors use (docs/query-model.md) -----------

  schema(eventType?: string): Promise<Schema> {
    return this.getResource('schema', eventType ? { eventType } : {});
  }

  eventTypes(): Promise<string[]> {
    return this.getResource('event-types');
  }

  dimensions(eventType?: string): Promise<string[]> {
    return this.getResource('dimensions', eventType ? { eventType } : {});
  }

  dimensionValues(dim: string, prefix = '', eventType?: string, from?: number, to?: number): Promise<string[]> {
    const params: Record<string, string | number> = { dim, prefix };
    if (eventType) {
      params.eventType = eventType;
    }
    if (from !== undefined && to !== undefined) {
      params.from = from;
      params.to = to;
    }
    return this.getResource('dimension-values', params);
  }

  build(query: MPQuery): Promise<BuildResult> {
    return this.postResource('build', query);
  }

  /** Used by the variable support to run variable queries through QueryData. */
  runVariableQuery(request: DataQueryRequest<MPQuery>) {
    return this.query(request);
  }
}

function interpolateFilter(f: Filter, srv: ReturnType<typeof getTemplateSrv>, scopedVars: ScopedVars): Filter {
  const values = expandValues(srv, f.values ?? [], scopedVars);
  let op = f.op;
  if (values.length > 1 && op === 'eq') {
    op = 'in';
  } else if (values.length > 1 && op === 'neq') {
    op = 'nin';
  }
  return { dimension: srv.replace(f.dimension, scopedVars), op, values };
}

/** Grafana's ad-hoc filter operators the model can express. */
export function adHocToFilters(filters: AdHocVariableFilter[]): Filter[] {
  const out: Filter[] = [];
  for (const f of filters) {
    const many = f.values && f.values.length ? f.values : [f.value];
    switch (f.operator) {
      case '=':
        out.push({ dimension: f.key, op: 'eq', values: [f.value] });
        break;
      case '!=':
        out.push({ dimension: f.key, op: 'neq', values: [f.value] });
        break;
      case '=|':
        out.push({ dimension: f.key, op: 'in', values: many });
        break;
      case '!=|':
        out.push({ dimension: f.key, op: 'nin', values: many });
        break;
      default:
        // Regex and comparison operators have no equivalent on rollup dimensions.
        break;
    }
  }
  return out;
}
