import React, { useCallback } from 'react';
import { css } from '@emotion/css';
import { GrafanaTheme2, SelectableValue, TimeRange } from '@grafana/data';
import {
  Button,
  InlineField,
  InlineFieldRow,
  InlineSwitch,
  Input,
  MultiSelect,
  RadioButtonGroup,
  Select,
  Stack,
  useStyles2,
} from '@grafana/ui';

import type { DataSource } from '../datasource';
import { nonAdditiveMeasures } from '../validate';
import {
  ALL_EVENT_TYPES,
  BuilderFormat,
  Fill,
  Filter,
  Granularity,
  GRANULARITIES,
  Measure,
  MPQuery,
  TopN,
} from '../types';
import { FilterRow } from './FilterRow';
import { toOptions, useSchema, variableOptions, withCurrent } from './hooks';
import { describeMeasure, MeasureRow } from './MeasureRow';
import { PipelinePreview } from './PipelinePreview';

const GRANULARITY_OPTIONS: Array<SelectableValue<Granularity>> = GRANULARITIES.map((g) => ({
  label: g === 'auto' ? 'Auto' : g[0].toUpperCase() + g.slice(1),
  value: g,
  description:
    g === 'auto' ? "Coarsest rollup level that fits the panel's interval" : `metrics_${g === 'day' ? 'dai' : g}ly`,
}));
const FILL_OPTIONS: Array<SelectableValue<Fill>> = [
  { label: 'Null', value: 'null', description: 'Gaps stay empty' },
  { label: 'Zero', value: 'zero', description: 'Empty buckets are 0' },
  { label: 'Previous', value: 'previous', description: 'Repeat the last value' },
];
const FORMAT_OPTIONS: Array<SelectableValue<BuilderFormat>> = [
  { label: 'Time series', value: 'timeseries', description: 'One frame per series: what alerting needs' },
  { label: 'Wide', value: 'wide', description: 'One frame, one column per series' },
  { label: 'Table', value: 'table', description: 'One table' },
];
const COMPARE_OPTIONS: Array<SelectableValue<string>> = [
  { label: 'Off', value: '' },
  { label: '1 hour before', value: '1h' },
  { label: '1 day before', value: '1d' },
  { label: '1 week before', value: '7d' },
  { label: '4 weeks before', value: '4w' },
];
export const DEFAULT_TOP_N: TopN = { limit: 10, measure: 0, other: false };

interface Props {
  query: MPQuery;
  datasource: DataSource;
  range?: TimeRange;
  invalid: (field: string) => boolean;
  /** Writes the query; `run` asks for a refresh when the result is valid. */
  change: (q: MPQuery, run?: boolean) => void;
  onBlur: () => void;
}

export function BuilderEditor({ query, datasource, range, invalid, change, onBlur }: Props) {
  const styles = useStyles2(getStyles);
  const schema = useSchema(datasource, query.eventType);
  const s = schema.value;
  const measures = query.measures ?? [];
  const filters = query.filters ?? [];
  const groupBy = query.groupBy ?? [];
  const vars = variableOptions();

  const set = (patch: Partial<MPQuery>, run = true) => change({ ...query, ...patch }, run);
  const unset = (key: keyof MPQuery, run = true) => {
    const next = { ...query };
    delete next[key];
    change(next, run);
  };

  const from = range?.from.valueOf();
  const to = range?.to.valueOf();
  const searchValues = useCallback(
    (dimension: string, prefix: string) =>
      datasource.dimensionValues(
        dimension,
        prefix,
        query.eventType && query.eventType !== ALL_EVENT_TYPES ? query.eventType : undefined,
        from,
        to
      ),
    [datasource, query.eventType, from, to]
  );

  const eventTypeOptions = withCurrent(
    [{ label: 'All event types', value: ALL_EVENT_TYPES }, ...toOptions(s.eventTypes), ...vars],
    query.eventType
  );

  const setMeasure = (i: number, m: Measure, run = true) => {
    const next = measures.slice();
    next[i] = m;
    set({ measures: next }, run);
  };
  const removeMeasure = (i: number) => {
    const next = measures.filter((_, j) => j !== i);
    const patch: Partial<MPQuery> = { measures: next };
    if (query.topN) {
      const m = query.topN.measure;
      patch.topN = { ...query.topN, measure: m === i ? 0 : m > i ? m - 1 : m };
    }
    set(patch);
  };
  const setFilter = (i: number, f: Filter, run = true) => {
    const next = filters.slice();
    next[i] = f;
    set({ filters: next }, run);
  };

  const topN = query.topN;
  const notAdditive = nonAdditiveMeasures(query);

  return (
    <div className={styles.root}>
      <InlineFieldRow>
        <InlineField label="Event type" labelWidth={14} invalid={invalid('eventType')} htmlFor={`mp-event-type-${query.refId}`}>
          <Select<string>
            inputId={`mp-event-type-${query.refId}`}
            width={28}
            placeholder={schema.loading ? 'Loading…' : 'Choose an event type'}
            isLoading={schema.loading}
            options={eventTypeOptions}
            allowCustomValue
            value={query.eventType ?? null}
            onChange={(v) => set({ eventType: v?.value })}
          />
        </InlineField>
        {(s.specs.length > 1 || (query.spec !== undefined && query.spec !== 'default')) && (
          <InlineField label="Rollup spec" tooltip="Rollup spec configured in the daemon">
            <Select<string>
              aria-label="Rollup spec"
              width={18}
              options={withCurrent(toOptions(s.specs.length ? s.specs : ['default']), query.spec ?? 'default')}
              value={query.spec ?? 'default'}
              onChange={(v) => (v.value && v.value !== 'default' ? set({ spec: v.value }) : unset('spec'))}
            />
          </InlineField>
        )}
        <InlineField label="Granularity" htmlFor={`mp-granularity-${query.refId}`}>
          <Select<Granularity>
            inputId={`mp-granularity-${query.refId}`}
            width={14}
            options={GRANULARITY_OPTIONS}
            value={query.granularity ?? 'auto'}
            onChange={(v) => v.value && set({ granularity: v.value })}
          />
        </InlineField>
      </InlineFieldRow>
      {schema.error && <div className={styles.note}>Could not load the schema ({schema.error}); you can still type names.</div>}

      <div className={styles.block}>
        <div className={styles.heading}>Measures</div>
        <Stack direction="column" gap={0.5}>
          {measures.map((m, i) => (
            <MeasureRow
              key={i}
              index={i}
              measure={m}
              schema={s}
              invalid={invalid}
              canRemove={measures.length > 1}
              onChange={(next, run) => setMeasure(i, next, run)}
              onRemove={() => removeMeasure(i)}
              onBlur={onBlur}
            />
          ))}
        </Stack>
        <Button
          variant="secondary"
          size="sm"
          icon="plus"
          fill="text"
          onClick={() => set({ measures: [...measures, { type: 'count' }] }, false)}
        >
          Add measure
        </Button>
      </div>

      <div className={styles.block}>
        <div className={styles.heading}>Filters</div>
        <Stack direction="column" gap={0.5}>
          {filters.map((f, i) => (
            <FilterRow
              key={i}
              index={i}
              filter={f}
              dimensions={s.dimensions}
              invalid={invalid}
              searchValues={searchValues}
              onChange={(next, run) => setFilter(i, next, run)}
              onRemove={() => set({ filters: filters.filter((_, j) => j !== i) })}
              onBlur={onBlur}
            />
          ))}
        </Stack>
        <Button
          variant="secondary"
          size="sm"
          icon="plus"
          fill="text"
          onClick={() => set({ filters: [...filters, { dimension: '', op: 'eq', values: [] }] }, false)}
        >
          Add filter
        </Button>
      </div>

      <InlineFieldRow>
        <InlineField label="Group by" labelWidth={14} invalid={invalid('groupBy')} htmlFor={`mp-group-by-${query.refId}`}>
          <MultiSelect<string>
            inputId={`mp-group-by-${query.refId}`}
            width={40}
            placeholder="one series per value of…"
            options={withCurrent([...toOptions(s.dimensions), ...vars], groupBy)}
            allowCustomValue
            value={groupBy}
            onChange={(vs) => set({ groupBy: vs.map((v) => v.value!).filter(Boolean) })}
          />
        </InlineField>
        <InlineField label="Top N" tooltip="Keep the groups with the largest total of one measure">
          <InlineSwitch
            aria-label="Top N"
            value={!!topN}
            onChange={(e) => (e.currentTarget.checked ? set({ topN: { ...DEFAULT_TOP_N } }, false) : unset('topN'))}
          />
        </InlineField>
        {topN && (
          <>
            <InlineField label="Limit" invalid={invalid('topN.limit')}>
              <Input
                aria-label="Top N limit"
                type="number"
                min={1}
                width={8}
                value={Number.isNaN(topN.limit) ? '' : topN.limit}
                onChange={(e) => set({ topN: { ...topN, limit: Number(e.currentTarget.value || NaN) } }, false)}
                onBlur={onBlur}
              />
            </InlineField>
            <InlineField label="by" invalid={invalid('topN.measure')}>
              <Select<number>
                aria-label="Top N measure"
                width={22}
                options={measures.map((m, i) => ({ label: `${i + 1}: ${m.alias || describeMeasure(m)}`, value: i }))}
                value={topN.measure}
                onChange={(v) => v.value !== undefined && set({ topN: { ...topN, measure: v.value } })}
              />
            </InlineField>
            <InlineField
              label="Other"
              tooltip={
                'Sum the remaining groups into a series labelled "other"' +
                (notAdditive.length ? ` (not for measures ${notAdditive.map((i) => i + 1).join(', ')}: they do not add up)` : '')
              }
            >
              <InlineSwitch
                aria-label="Top N other"
                value={topN.other}
                onChange={(e) => set({ topN: { ...topN, other: e.currentTarget.checked } })}
              />
            </InlineField>
          </>
        )}
      </InlineFieldRow>

      <InlineFieldRow>
        <InlineField label="Compare" labelWidth={14} invalid={invalid('compare.shift')} htmlFor={`mp-compare-${query.refId}`} tooltip="Also return each series shifted back in time (e.g. 1h, 1d, 7d, 2w)">
          <Select<string>
            inputId={`mp-compare-${query.refId}`}
            width={18}
            options={withCurrent(COMPARE_OPTIONS, query.compare?.shift)}
            allowCustomValue
            value={query.compare?.shift ?? ''}
            onChange={(v) => (v?.value ? set({ compare: { shift: v.value } }) : unset('compare'))}
          />
        </InlineField>
        <InlineField label="Fill">
          <RadioButtonGroup<Fill>
            options={FILL_OPTIONS}
            value={query.fill ?? 'null'}
            onChange={(v) => set({ fill: v })}
          />
        </InlineField>
      </InlineFieldRow>

      <InlineFieldRow>
        <InlineField label="Format" labelWidth={14}>
          <RadioButtonGroup<BuilderFormat>
            options={FORMAT_OPTIONS}
            value={(query.format as BuilderFormat) ?? 'timeseries'}
            onChange={(v) => set({ format: v })}
          />
        </InlineField>
        <InlineField label="Alias" tooltip="Series name: {{dimension}}, {{measure}}, {{eventType}}" htmlFor={`mp-alias-${query.refId}`}>
          <Input
            id={`mp-alias-${query.refId}`}
            width={32}
            placeholder="{{country}} {{measure}}"
            value={query.alias ?? ''}
            onChange={(e) => (e.currentTarget.value === '' ? unset('alias', false) : set({ alias: e.currentTarget.value }, false))}
            onBlur={onBlur}
          />
        </InlineField>
      </InlineFieldRow>

      <PipelinePreview query={query} datasource={datasource} />
    </div>
  );
}

const getStyles = (theme: GrafanaTheme2) => ({
  root: css({ display: 'flex', flexDirection: 'column', gap: theme.spacing(1) }),
  block: css({
    display: 'flex',
    flexDirection: 'column',
    alignItems: 'flex-start',
    gap: theme.spacing(0.5),
  }),
  heading: css({
    fontSize: theme.typography.bodySmall.fontSize,
    fontWeight: theme.typography.fontWeightMedium,
    color: theme.colors.text.secondary,
    textTransform: 'uppercase',
    letterSpacing: '0.04em',
  }),
  note: css({ color: theme.colors.warning.text, fontSize: theme.typography.bodySmall.fontSize }),
});
