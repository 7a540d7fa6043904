import React from 'react';
import { QueryEditorProps, SelectableValue } from '@grafana/data';
import { InlineField, InlineFieldRow, Input, RadioButtonGroup, Select, Stack } from '@grafana/ui';

import type { DataSource } from '../datasource';
import { ALL_EVENT_TYPES, MPOptions, MPQuery, toVariableQuery, VariableKind } from '../types';
import { validateVariable } from '../validate';
import { toOptions, useList, variableOptions, withCurrent } from './hooks';
import { Problems } from './Problems';

export type VariableEditorProps = QueryEditorProps<DataSource, MPQuery, MPOptions, MPQuery>;

const KIND_OPTIONS: Array<SelectableValue<VariableKind>> = [
  { label: 'Event types', value: 'eventTypes', description: 'Every event type in the rollups' },
  { label: 'Dimensions', value: 'dimensions', description: 'Dimension names of one event type' },
  { label: 'Dimension values', value: 'dimensionValues', description: 'Values of one dimension in the time range' },
];

/**
 * Template variable queries: `{mode: "variable", variable, eventType?, dimension?, prefix?}`.
 * Values come from the rollups in the dashboard's time range, at most 1,000.
 */
export function VariableQueryEditor({ query: raw, onChange, datasource }: VariableEditorProps) {
  const query = toVariableQuery(raw);
  const kind = query.variable ?? 'eventTypes';
  const eventTypes = useList(() => datasource.eventTypes(), 'event-types');
  const concreteEventType = query.eventType && !query.eventType.startsWith('$') ? query.eventType : undefined;
  const dimensions = useList(
    () => datasource.dimensions(concreteEventType),
    `dimensions:${concreteEventType ?? ''}`
  );
  const vars = variableOptions();

  const setKind = (variable: VariableKind) => {
    const base: MPQuery = { refId: query.refId, mode: 'variable', variable };
    if (variable === 'dimensions') {
      base.eventType = query.eventType;
    } else if (variable === 'dimensionValues') {
      if (query.dimension !== undefined) {
        base.dimension = query.dimension;
      }
      if (query.eventType !== undefined) {
        base.eventType = query.eventType;
      }
      base.prefix = query.prefix ?? '';
    }
    if (base.eventType === undefined) {
      delete base.eventType;
    }
    onChange(base);
  };
  const set = (patch: Partial<MPQuery>) => {
    const next: MPQuery = { ...query, ...patch };
    for (const k of Object.keys(patch) as Array<keyof MPQuery>) {
      if (next[k] === undefined) {
        delete next[k];
      }
    }
    onChange(next);
  };

  const eventTypeOptions = withCurrent([...toOptions(eventTypes.value), ...vars], query.eventType);

  return (
    <Stack direction="column" gap={1}>
      <InlineFieldRow>
        <InlineField label="Values" labelWidth={16}>
          <RadioButtonGroup<VariableKind> options={KIND_OPTIONS} value={kind} onChange={setKind} />
        </InlineField>
      </InlineFieldRow>
      {kind !== 'eventTypes' && (
        <InlineFieldRow>
          <InlineField
            label="Event type"
            labelWidth={16}
            htmlFor="mp-variable-event-type"
            tooltip={kind === 'dimensionValues' ? 'Optional: only values seen with this event type' : undefined}
          >
            <Select<string>
              inputId="mp-variable-event-type"
              width={28}
              isClearable={kind === 'dimensionValues'}
              isLoading={eventTypes.loading}
              placeholder={kind === 'dimensionValues' ? 'any' : 'Choose an event type'}
              options={eventTypeOptions.filter((o) => o.value !== ALL_EVENT_TYPES)}
              allowCustomValue
              value={query.eventType ?? null}
              onChange={(v) => set({ eventType: v?.value })}
            />
          </InlineField>
        </InlineFieldRow>
      )}
      {kind === 'dimensionValues' && (
        <InlineFieldRow>
          <InlineField label="Dimension" labelWidth={16} htmlFor="mp-variable-dimension">
            <Select<string>
              inputId="mp-variable-dimension"
              width={28}
              isLoading={dimensions.loading}
              placeholder="Choose a dimension"
              options={withCurrent([...toOptions(dimensions.value), ...vars], query.dimension)}
              allowCustomValue
              value={query.dimension ?? null}
              onChange={(v) => set({ dimension: v?.value })}
            />
          </InlineField>
          <InlineField label="Prefix" tooltip="Only values starting with this text" htmlFor="mp-variable-prefix">
            <Input
              id="mp-variable-prefix"
              width={20}
              placeholder="any"
              value={query.prefix ?? ''}
              onChange={(e) => set({ prefix: e.currentTarget.value })}
            />
          </InlineField>
        </InlineFieldRow>
      )}
      <Problems problems={validateVariable(query)} />
    </Stack>
  );
}
