import React from 'react';
import { SelectableValue } from '@grafana/data';
import { IconButton, InlineField, Input, Select, Stack } from '@grafana/ui';

import { Measure, MEASURE_TYPES, MeasureType, measureNeedsMetric, Schema } from '../types';
import { toOptions, withCurrent } from './hooks';

export const MEASURE_LABELS: Record<MeasureType, string> = {
  count: 'Count',
  rate: 'Rate (/s)',
  sum: 'Sum',
  avg: 'Average',
  min: 'Min',
  max: 'Max',
  distinct: 'Distinct',
  percentile: 'Percentile',
  topk: 'Top-K values',
};

const DESCRIPTIONS: Record<MeasureType, string> = {
  count: 'Number of events',
  rate: 'Events per second',
  sum: 'Σ metric',
  avg: 'Σ sum ÷ Σ count',
  min: 'Smallest value of a metric',
  max: 'Largest value of a metric',
  distinct: 'Distinct users or sessions (HyperLogLog)',
  percentile: 'From merged quantile sketches',
  topk: 'Most frequent values of an attribute',
};

const TYPE_OPTIONS: Array<SelectableValue<MeasureType>> = MEASURE_TYPES.map((t) => ({
  label: MEASURE_LABELS[t],
  value: t,
  description: DESCRIPTIONS[t],
}));

const DEFAULT_PERCENTILES = [50, 90, 95, 99, 99.9];

/** A measure of another type, keeping what still applies (metric, alias, window). */
export function changeMeasureType(m: Measure, type: MeasureType, schema: Schema): Measure {
  const next: Measure = { type };
  if (measureNeedsMetric(type) && m.metric) {
    next.metric = m.metric;
  }
  if (type === 'percentile') {
    next.percentile = m.percentile ?? 95;
  }
  if (type === 'distinct') {
    next.key = m.key ?? (schema.distinct.includes('userId') ? 'userId' : schema.distinct[0] ?? 'userId');
  }
  if (type === 'topk') {
    if (m.attribute) {
      next.attribute = m.attribute;
    }
    next.k = m.k ?? 10;
  }
  if (m.alias !== undefined) {
    next.alias = m.alias;
  }
  if (m.window !== undefined) {
    next.window = m.window;
  }
  return next;
}

export function describeMeasure(m: Measure): string {
  switch (m.type) {
    case 'percentile':
      return `p${m.percentile ?? '?'}(${m.metric ?? '?'})`;
    case 'distinct':
      return `distinct ${m.key ?? '?'}`;
    case 'topk':
      return `top ${m.k ?? '?'} ${m.attribute ?? '?'}`;
    case 'count':
    case 'rate':
      return m.type;
    default:
      return `${m.type}(${m.metric ?? '?'})`;
  }
}

interface Props {
  index: number;
  measure: Measure;
  schema: Schema;
  invalid: (field: string) => boolean;
  canRemove: boolean;
  onChange: (m: Measure, run?: boolean) => void;
  onRemove: () => void;
  onBlur: () => void;
}

export function MeasureRow({ index, measure, schema, invalid, canRemove, onChange, onRemove, onBlur }: Props) {
  const n = index + 1;
  const at = `measures.${index}`;
  const set = (patch: Partial<Measure>, run = true) => onChange({ ...measure, ...patch }, run);
  const unset = (key: keyof Measure, run = false) => {
    const next = { ...measure };
    delete next[key];
    onChange(next, run);
  };
  const percentiles = Array.from(new Set([...(schema.quantiles.length ? schema.quantiles : DEFAULT_PERCENTILES)]));

  return (
    <Stack direction="row" gap={1} alignItems="flex-start" wrap="wrap" data-testid={`measure-${n}`}>
      <InlineField label={`${n}`} labelWidth={4} invalid={invalid(`${at}.type`)}>
        <Select<MeasureType>
          aria-label={`Measure ${n} type`}
          width={18}
          options={TYPE_OPTIONS}
          value={measure.type}
          onChange={(v) => v.value && onChange(changeMeasureType(measure, v.value, schema))}
        />
      </InlineField>
      {measureNeedsMetric(measure.type) && (
        <InlineField label="of" invalid={invalid(`${at}.metric`)}>
          <Select<string>
            aria-label={`Measure ${n} metric`}
            width={22}
            placeholder="metric"
            options={withCurrent(toOptions(schema.metrics), measure.metric)}
            allowCustomValue
            value={measure.metric ?? null}
            onChange={(v) => set({ metric: v?.value })}
          />
        </InlineField>
      )}
      {measure.type === 'percentile' && (
        <InlineField label="p" invalid={invalid(`${at}.percentile`)} tooltip="0 < p < 100">
          <Select<string>
            aria-label={`Measure ${n} percentile`}
            width={10}
            options={withCurrent(toOptions(percentiles), measure.percentile?.toString())}
            allowCustomValue
            value={measure.percentile?.toString() ?? null}
            onChange={(v) => set({ percentile: v?.value === undefined ? undefined : Number(v.value) })}
          />
        </InlineField>
      )}
      {measure.type === 'distinct' && (
        <InlineField label="of" invalid={invalid(`${at}.key`)}>
          <Select<string>
            aria-label={`Measure ${n} distinct key`}
            width={18}
            options={withCurrent(toOptions(schema.distinct.length ? schema.distinct : ['userId', 'sessionId']), measure.key)}
            allowCustomValue
            value={measure.key ?? null}
            onChange={(v) => set({ key: v?.value })}
          />
        </InlineField>
      )}
      {measure.type === 'topk' && (
        <>
          <InlineField label="of" invalid={invalid(`${at}.attribute`)}>
            <Select<string>
              aria-label={`Measure ${n} attribute`}
              width={20}
              placeholder="attribute"
              options={withCurrent(toOptions(schema.topK), measure.attribute)}
              allowCustomValue
              value={measure.attribute ?? null}
              onChange={(v) => set({ attribute: v?.value })}
            />
          </InlineField>
          <InlineField label="K" invalid={invalid(`${at}.k`)} tooltip="1 to 100">
            <Input
              aria-label={`Measure ${n} K`}
              type="number"
              width={8}
              min={1}
              max={100}
              value={measure.k ?? ''}
              onChange={(e) =>
                e.currentTarget.value === '' ? unset('k') : set({ k: Number(e.currentTarget.value) }, false)
              }
              onBlur={onBlur}
            />
          </InlineField>
        </>
      )}
      <InlineField label="Window" tooltip="Moving window: the measure at each bucket over the last N minutes. Empty: off." invalid={invalid(`${at}.window`)}>
        <Input
          aria-label={`Measure ${n} window`}
          type="number"
          width={9}
          min={1}
          placeholder="off"
          suffix="min"
          value={measure.window?.minutes ?? ''}
          onChange={(e) =>
            e.currentTarget.value === ''
              ? unset('window')
              : set({ window: { minutes: Number(e.currentTarget.value) } }, false)
          }
          onBlur={onBlur}
        />
      </InlineField>
      <InlineField label="Alias">
        <Input
          aria-label={`Measure ${n} alias`}
          width={16}
          placeholder={describeMeasure(measure)}
          value={measure.alias ?? ''}
          onChange={(e) => (e.currentTarget.value === '' ? unset('alias') : set({ alias: e.currentTarget.value }, false))}
          onBlur={onBlur}
        />
      </InlineField>
      {canRemove && (
        <IconButton name="trash-alt" aria-label={`Remove measure ${n}`} tooltip="Remove measure" onClick={onRemove} />
      )}
    </Stack>
  );
}
