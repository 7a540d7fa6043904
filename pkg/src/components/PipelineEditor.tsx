import React, { useState } from 'react';
import { css } from '@emotion/css';
import { GrafanaTheme2, SelectableValue } from '@grafana/data';
import {
  Button,
  CodeEditor,
  Collapse,
  InlineField,
  InlineFieldRow,
  Input,
  RadioButtonGroup,
  Select,
  useStyles2,
} from '@grafana/ui';

import { MPQuery, PIPELINE_COLLECTIONS, PipelineFormat } from '../types';
import { toOptions, withCurrent } from './hooks';
import { macroSuggestions, PIPELINE_LANGUAGE, registerPipelineLanguage } from './pipelineLanguage';

const FORMAT_OPTIONS: Array<SelectableValue<PipelineFormat>> = [
  { label: 'Time series', value: 'timeseries' },
  { label: 'Table', value: 'table' },
];

export const MACROS: Array<{ macro: string; meaning: string }> = [
  { macro: '$__timeFilter(field)', meaning: '{"field": {"$gte": from, "$lt": to}}: a $match body for the dashboard range' },
  { macro: '$__timeGroup(field)', meaning: "the field truncated to the panel's interval: use as a $group _id" },
  { macro: '$__timeFrom', meaning: 'start of the range (a date)' },
  { macro: '$__timeTo', meaning: 'end of the range (a date)' },
  { macro: '$__interval_ms', meaning: "the panel's interval in milliseconds (a number)" },
];

export const EXAMPLE_PIPELINE = `[
  { "$match": $__timeFilter(timestamp) },
  { "$group": {
      "_id": $__timeGroup(timestamp),
      "events": { "$sum": "$metrics.count" }
  } },
  { "$sort": { "_id": 1 } }
]`;

interface Props {
  query: MPQuery;
  invalid: (field: string) => boolean;
  change: (q: MPQuery, run?: boolean) => void;
}

export function PipelineEditor({ query, invalid, change }: Props) {
  const styles = useStyles2(getStyles);
  const [helpOpen, setHelpOpen] = useState(!query.pipeline);
  const set = (patch: Partial<MPQuery>, run = true) => change({ ...query, ...patch }, run);

  return (
    <div className={styles.root}>
      <InlineFieldRow>
        <InlineField label="Collection" labelWidth={14} invalid={invalid('collection')} htmlFor={`mp-collection-${query.refId}`}>
          <Select<string>
            inputId={`mp-collection-${query.refId}`}
            width={24}
            options={withCurrent(toOptions(PIPELINE_COLLECTIONS), query.collection)}
            value={query.collection ?? null}
            onChange={(v) => set({ collection: v?.value })}
          />
        </InlineField>
        <InlineField
          label="Time field"
          tooltip="Result column holding the time (time series format). Empty: the first date column."
          htmlFor={`mp-time-field-${query.refId}`}
        >
          <Input
            id={`mp-time-field-${query.refId}`}
            width={16}
            placeholder="auto"
            value={query.timeField ?? ''}
            onChange={(e) => {
              const v = e.currentTarget.value;
              if (v === '') {
                const next = { ...query };
                delete next.timeField;
                change(next, false);
              } else {
                set({ timeField: v }, false);
              }
            }}
            onBlur={() => change(query, true)}
          />
        </InlineField>
        <InlineField label="Format">
          <RadioButtonGroup<PipelineFormat>
            options={FORMAT_OPTIONS}
            value={(query.format as PipelineFormat) ?? 'timeseries'}
            onChange={(v) => set({ format: v })}
          />
        </InlineField>
      </InlineFieldRow>

      <div className={invalid('pipeline') ? styles.invalid : undefined} data-testid="pipeline-code">
        <CodeEditor
          language={PIPELINE_LANGUAGE}
          onBeforeEditorMount={registerPipelineLanguage}
          getSuggestions={macroSuggestions}
          height={220}
          showLineNumbers
          showMiniMap={false}
          value={query.pipeline ?? ''}
          onChange={(v) => set({ pipeline: v }, false)}
          onBlur={(v) => set({ pipeline: v }, true)}
          onSave={(v) => set({ pipeline: v }, true)}
        />
      </div>

      <Collapse label="Macros" collapsible isOpen={helpOpen} onToggle={() => setHelpOpen(!helpOpen)}>
        <table className={styles.table}>
          <tbody>
            {MACROS.map((m) => (
              <tr key={m.macro}>
                <td>
                  <code>{m.macro}</code>
                </td>
                <td>{m.meaning}</td>
              </tr>
            ))}
          </tbody>
        </table>
        <p className={styles.muted}>
          Dashboard variables ($name) are replaced before the query runs. Read-only: $out, $merge, $function, $accumulator
          and $where are refused. The builder's &quot;Generated pipeline&quot; shows what a builder query runs.
        </p>
        <Button variant="secondary" size="sm" icon="document-info" onClick={() => set({ pipeline: EXAMPLE_PIPELINE }, true)}>
          Use the example: events per interval
        </Button>
      </Collapse>
    </div>
  );
}

const getStyles = (theme: GrafanaTheme2) => ({
  root: css({ display: 'flex', flexDirection: 'column', gap: theme.spacing(1) }),
  invalid: css({ outline: `1px solid ${theme.colors.error.border}` }),
  table: css({
    fontSize: theme.typography.bodySmall.fontSize,
    marginBottom: theme.spacing(1),
    td: { padding: theme.spacing(0.25, 2, 0.25, 0), verticalAlign: 'top' },
  }),
  muted: css({ color: theme.colors.text.secondary, fontSize: theme.typography.bodySmall.fontSize }),
});
