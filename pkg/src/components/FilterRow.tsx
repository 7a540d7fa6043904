import React, { useCallback } from 'react';
import { SelectableValue } from '@grafana/data';
import { AsyncMultiSelect, AsyncSelect, IconButton, InlineField, Input, Select, Stack } from '@grafana/ui';

import { Filter, FilterOp } from '../types';
import { toOptions, variableOptions, withCurrent } from './hooks';

const OP_OPTIONS: Array<SelectableValue<FilterOp>> = [
  { label: '=', value: 'eq', description: 'equals' },
  { label: '!=', value: 'neq', description: 'does not equal' },
  { label: 'in', value: 'in', description: 'any of' },
  { label: 'not in', value: 'nin', description: 'none of' },
  { label: 'starts with', value: 'prefix', description: 'prefix' },
];

interface Props {
  index: number;
  filter: Filter;
  dimensions: string[];
  invalid: (field: string) => boolean;
  /** `GET dimension-values` for this filter's dimension, searched by prefix. */
  searchValues: (dimension: string, prefix: string) => Promise<string[]>;
  onChange: (f: Filter, run?: boolean) => void;
  onRemove: () => void;
  onBlur: () => void;
}

function single(op: FilterOp): boolean {
  return op === 'eq' || op === 'neq' || op === 'prefix';
}

export function FilterRow({ index, filter, dimensions, invalid, searchValues, onChange, onRemove, onBlur }: Props) {
  const n = index + 1;
  const at = `filters.${index}`;
  const loadOptions = useCallback(
    async (prefix: string) => {
      if (!filter.dimension) {
        return variableOptions();
      }
      try {
        const values = await searchValues(filter.dimension, prefix ?? '');
        return [...toOptions(values), ...variableOptions()];
      } catch {
        return variableOptions();
      }
    },
    [filter.dimension, searchValues]
  );

  const setOp = (op: FilterOp) => {
    const values = single(op) ? filter.values.slice(0, 1) : filter.values;
    onChange({ ...filter, op, values });
  };

  let valuesEditor: React.ReactNode;
  if (filter.op === 'prefix') {
    valuesEditor = (
      <Input
        aria-label={`Filter ${n} value`}
        width={24}
        placeholder="prefix"
        value={filter.values[0] ?? ''}
        onChange={(e) => onChange({ ...filter, values: e.currentTarget.value === '' ? [] : [e.currentTarget.value] }, false)}
        onBlur={onBlur}
      />
    );
  } else if (single(filter.op)) {
    const current = filter.values[0];
    valuesEditor = (
      <AsyncSelect<string>
        key={`${filter.dimension}-single`}
        aria-label={`Filter ${n} value`}
        width={24}
        placeholder="value"
        loadOptions={loadOptions}
        defaultOptions
        cacheOptions
        allowCustomValue
        value={current ? { label: current, value: current } : null}
        onChange={(v: SelectableValue<string>) => onChange({ ...filter, values: v?.value ? [v.value] : [] })}
      />
    );
  } else {
    valuesEditor = (
      <AsyncMultiSelect<string>
        key={`${filter.dimension}-multi`}
        aria-label={`Filter ${n} values`}
        width={36}
        placeholder="values"
        loadOptions={loadOptions}
        defaultOptions
        cacheOptions
        allowCustomValue
        value={filter.values.map((v) => ({ label: v, value: v }))}
        onChange={(vs: Array<SelectableValue<string>>) =>
          onChange({ ...filter, values: vs.map((v) => v.value).filter((v): v is string => !!v) })
        }
      />
    );
  }

  return (
    <Stack direction="row" gap={1} alignItems="flex-start" wrap="wrap" data-testid={`filter-${n}`}>
      <InlineField label={`${n}`} labelWidth={4} invalid={invalid(`${at}.dimension`)}>
        <Select<string>
          aria-label={`Filter ${n} dimension`}
          width={20}
          placeholder="dimension"
          options={withCurrent([...toOptions(dimensions), ...variableOptions()], filter.dimension)}
          allowCustomValue
          value={filter.dimension || null}
          onChange={(v) => onChange({ ...filter, dimension: v?.value ?? '', values: [] }, false)}
        />
      </InlineField>
      <Select<FilterOp>
        aria-label={`Filter ${n} operator`}
        width={14}
        options={OP_OPTIONS}
        value={filter.op}
        onChange={(v) => v.value && setOp(v.value)}
      />
      <InlineField invalid={invalid(`${at}.values`)}>{valuesEditor as React.ReactElement}</InlineField>
      <IconButton name="trash-alt" aria-label={`Remove filter ${n}`} onClick={onRemove} />
    </Stack>
  );
}
