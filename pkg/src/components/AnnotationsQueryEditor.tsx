import React, { useEffect } from 'react';
import { QueryEditorProps } from '@grafana/data';
import { Checkbox, InlineField, InlineFieldRow, Input, Stack } from '@grafana/ui';

import type { DataSource } from '../datasource';
import { AlertState, defaultAnnotationsQuery, MPOptions, MPQuery } from '../types';
import { validateAnnotations } from '../validate';
import { Problems } from './Problems';

export type AnnotationsEditorProps = QueryEditorProps<DataSource, MPQuery, MPOptions>;

const STATES: Array<{ value: AlertState; label: string; description: string }> = [
  { value: 'firing', label: 'Fired', description: 'Start of an alert episode' },
  { value: 'resolved', label: 'Resolved', description: 'End of an alert episode' },
];

/**
 * Alert episodes from the `alerts` collection as annotations: one region from
 * firing to resolved, text = the rule's summary, tags = its labels.
 */
export function AnnotationsQueryEditor({ query: given, onChange }: AnnotationsEditorProps) {
  const raw: Partial<MPQuery> = given ?? { refId: 'Anno' };
  const query = { ...defaultAnnotationsQuery(), ...raw, refId: raw.refId || 'Anno', mode: 'annotations' } as MPQuery;
  const states = query.states ?? [];

  // A new annotation query: store the defaults so what runs is what is shown.
  useEffect(() => {
    if (raw.mode !== 'annotations' || raw.states === undefined || raw.rule === undefined) {
      onChange(query);
    }
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);

  const toggle = (state: AlertState, on: boolean) => {
    const set = new Set(states);
    if (on) {
      set.add(state);
    } else {
      set.delete(state);
    }
    // Always in the same order, whatever the clicking order.
    onChange({ ...query, states: STATES.map((s) => s.value).filter((s) => set.has(s)) });
  };

  return (
    <Stack direction="column" gap={1}>
      <InlineFieldRow>
        <InlineField
          label="Alert rule"
          labelWidth={16}
          tooltip="Name of an alert rule in mongopulsed; empty for every rule"
          htmlFor="mp-annotations-rule"
        >
          <Input
            id="mp-annotations-rule"
            width={36}
            placeholder="all rules"
            value={query.rule ?? ''}
            onChange={(e) => onChange({ ...query, rule: e.currentTarget.value })}
          />
        </InlineField>
      </InlineFieldRow>
      <InlineFieldRow>
        <InlineField label="Show" labelWidth={16}>
          <Stack direction="row" gap={2} alignItems="center">
            {STATES.map((s) => (
              <Checkbox
                key={s.value}
                aria-label={s.label}
                label={s.label}
                description={s.description}
                value={states.includes(s.value)}
                onChange={(e) => toggle(s.value, e.currentTarget.checked)}
              />
            ))}
          </Stack>
        </InlineField>
      </InlineFieldRow>
      <Problems problems={validateAnnotations(query)} />
    </Stack>
  );
}
