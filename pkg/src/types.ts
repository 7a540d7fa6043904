/**
 * The query model, as docs/query-model.md defines it. The backend owns its
 * meaning; these types only describe what the editors may write.
 */
import { DataQuery, DataSourceJsonData } from '@grafana/data';

/** `plugin`: the plugin's own figures (docs/query-model.md, "Plugin mode"), no options. */
export type Mode = 'builder' | 'pipeline' | 'variable' | 'annotations' | 'plugin';
export type Granularity = 'auto' | 'minute' | 'hour' | 'day' | 'month';
export type Fill = 'null' | 'zero' | 'previous';
export type BuilderFormat = 'timeseries' | 'wide' | 'table';
export type PipelineFormat = 'timeseries' | 'table';
export type FilterOp = 'eq' | 'neq' | 'in' | 'nin' | 'prefix';
export type MeasureType = 'count' | 'rate' | 'sum' | 'avg' | 'min' | 'max' | 'distinct' | 'percentile' | 'topk';
export type VariableKind = 'eventTypes' | 'dimensions' | 'dimensionValues';
export type AlertState = 'firing' | 'resolved';

export interface Measure {
  type: MeasureType;
  /** sum, avg, min, max, percentile */
  metric?: string;
  /** distinct: userId, sessionId or another configured distinct key */
  key?: string;
  /** percentile: 0 < p < 100 */
  percentile?: number;
  /** topk */
  attribute?: string;
  /** topk: 1–100 */
  k?: number;
  alias?: string;
  /** moving window */
  window?: { minutes: number };
}

export interface Filter {
  dimension: string;
  op: FilterOp;
  values: string[];
}

export interface TopN {
  limit: number;
  /** index in `measures` */
  measure: number;
  other: boolean;
}

/**
 * One interface for every mode (Grafana's generics want a single query type);
 * `mode` says which fields apply.
 */
export interface MPQuery extends DataQuery {
  mode?: Mode;
  live?: boolean;

  // builder
  eventType?: string;
  spec?: string;
  measures?: Measure[];
  filters?: Filter[];
  groupBy?: string[];
  granularity?: Granularity;
  topN?: TopN;
  compare?: { shift: string };
  fill?: Fill;
  alias?: string;
  format?: BuilderFormat | PipelineFormat;

  // pipeline
  collection?: string;
  pipeline?: string;
  timeField?: string;

  // variable (eventType above is shared)
  variable?: VariableKind;
  dimension?: string;
  prefix?: string;

  // annotations
  rule?: string;
  states?: AlertState[];
}

/** Data-source settings stored in jsonData (plain). */
export interface MPOptions extends DataSourceJsonData {
  database?: string;
  connectTimeoutSeconds?: number;
  queryTimeoutSeconds?: number;
  defaultGranularity?: Granularity;
  tls?: boolean;
  tlsCAFile?: string;
  tlsCertificateKeyFile?: string;
  tlsAllowInvalidCertificates?: boolean;
}

/** Data-source settings stored in secureJsonData (encrypted, write-only from the browser). */
export interface MPSecureJsonData {
  uri?: string;
  tlsCertificateKeyFilePassword?: string;
}

/** `GET schema?eventType=`: what the editors offer. */
export interface Schema {
  eventTypes: string[];
  specs: string[];
  dimensions: string[];
  metrics: string[];
  quantiles: number[];
  distinct: string[];
  topK: string[];
}

/** `POST build`: the pipeline builder mode runs, or why it cannot be built. */
export type BuildResult =
  | { collection: string; pipeline: unknown[]; error?: undefined }
  | { error: string; field?: string; collection?: undefined };

export const GRANULARITIES: Granularity[] = ['auto', 'minute', 'hour', 'day', 'month'];
export const FILTER_OPS: FilterOp[] = ['eq', 'neq', 'in', 'nin', 'prefix'];
export const MEASURE_TYPES: MeasureType[] = [
  'count',
  'rate',
  'sum',
  'avg',
  'min',
  'max',
  'distinct',
  'percentile',
  'topk',
];
/** Measures whose values add up across groups (what "other" can sum). */
export const ADDITIVE_MEASURES: MeasureType[] = ['count', 'rate', 'sum'];
/** Collections a pipeline may read (docs/query-model.md, "Pipeline mode"). */
export const PIPELINE_COLLECTIONS = [
  'metrics_minutely',
  'metrics_hourly',
  'metrics_daily',
  'metrics_monthly',
  'sessions',
  'events',
  'alerts',
  'pipeline_stats',
  'dead_letters',
];
export const READ_ONLY_REFUSED_STAGES = ['$out', '$merge', '$function', '$accumulator', '$where'];
export const ALL_EVENT_TYPES = '*';

export function measureNeedsMetric(type: MeasureType): boolean {
  return type === 'sum' || type === 'avg' || type === 'min' || type === 'max' || type === 'percentile';
}

export function defaultBuilderQuery(granularity: Granularity = 'auto'): Partial<MPQuery> {
  return {
    mode: 'builder',
    measures: [{ type: 'count' }],
    filters: [],
    groupBy: [],
    granularity,
    fill: 'null',
    format: 'timeseries',
  };
}

export function defaultPipelineQuery(): Partial<MPQuery> {
  return { mode: 'pipeline', collection: 'metrics_minutely', pipeline: '', format: 'timeseries' };
}

export function defaultVariableQuery(): Partial<MPQuery> {
  return { mode: 'variable', variable: 'eventTypes' };
}

export function defaultAnnotationsQuery(): Partial<MPQuery> {
  return { mode: 'annotations', rule: '', states: ['firing', 'resolved'] };
}

/** A stored variable query (possibly from an older dashboard) in the current shape. */
export function toVariableQuery(t: Partial<MPQuery> | string | undefined): MPQuery {
  const q: Partial<MPQuery> = typeof t === 'object' && t !== null ? t : {};
  return { ...defaultVariableQuery(), ...q, mode: 'variable', refId: q.refId || 'variable' };
}
